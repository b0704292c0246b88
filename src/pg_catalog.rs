//! Weir's additions to `pg_catalog`, over datafusion-pg-catalog's emulation.
//!
//! datafusion-pg-catalog derives `pg_class`, `pg_attribute`, ... from DataFusion's catalog, which
//! knows Arrow types only: it cannot tell `varchar(40)` from `text`, has no typmods
//! (`numeric(10,2)`) and no indexes or constraints. Clients need all three (psql `\d`, pgJDBC
//! `getColumns`, SQLAlchemy reflection). This module wraps that schema and patches four tables
//! with what the Weir catalog knows:
//!
//! * `pg_attribute`: `atttypid`/`atttypmod` of user columns from their declared types;
//! * `pg_class`: `relhasindex` for tables with a primary key, plus one row per primary-key index
//!   (`<table>_pkey`, relkind `i`);
//! * `pg_index` and `pg_constraint`: one row per primary key.
//!
//! OIDs of user tables are datafusion-pg-catalog's (read from its `pg_class`); index and
//! constraint OIDs are derived from the Weir object id, in ranges it never allocates.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use weir_catalog::{Catalog, ObjectKind};

use crate::database::DEFAULT_SCHEMA;

/// The OID of the primary-key index of the table with Weir id `id`.
pub fn index_oid(id: u64) -> i32 {
    (1_000_000 + id) as i32
}

/// The OID of the primary-key constraint of the table with Weir id `id`.
pub fn constraint_oid(id: u64) -> i32 {
    (1_500_000 + id) as i32
}

/// The Postgres type OID and typmod of a declared column type (`character varying(40)` →
/// (1043, 44); `numeric(10,2)` → (1700, 655366)).
pub fn type_oid_and_typmod(type_name: &str) -> Option<(i32, i32)> {
    let (base, args) = match type_name.split_once('(') {
        Some((b, a)) => (b.trim(), Some(a.trim_end_matches(')'))),
        None => (type_name.trim(), None),
    };
    let oid = crate::pg_compat::type_oid(base)?;
    let typmod = match (oid, args) {
        (1043 | 1042, Some(n)) => n.trim().parse::<i32>().ok()? + 4,
        (1700, Some(ps)) => {
            let mut it = ps.split(',').map(|x| x.trim().parse::<i32>());
            let p = it.next()?.ok()?;
            let s = it.next().and_then(|r| r.ok()).unwrap_or(0);
            ((p << 16) | s) + 4
        }
        _ => -1,
    };
    Some((oid, typmod))
}

/// A user table with a primary key, as the patched tables describe it.
struct KeyedTable {
    id: u64,
    name: String,
    /// 1-based column numbers of the key, in key order.
    key: Vec<i16>,
}

/// Which catalog schema a [`PatchedSchema`] wraps, and so which of its tables it patches.
#[derive(Debug, Clone, Copy)]
enum Wrapped {
    /// datafusion-pg-catalog's `pg_catalog`.
    PgCatalog,
    /// DataFusion's `information_schema`, whose `columns.data_type` is patched into Postgres's
    /// words (`integer`, `character varying`, `timestamp with time zone`) rather than Arrow's,
    /// which Grafana's column picker and other tools show and match on.
    InformationSchema,
}

/// A catalog schema with some tables patched from the Weir catalog; the others pass through.
pub struct PatchedSchema {
    inner: Arc<dyn SchemaProvider>,
    catalog: Arc<RwLock<Catalog>>,
    wrapped: Wrapped,
}

impl std::fmt::Debug for PatchedSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PatchedSchema({:?})", self.wrapped)
    }
}

impl PatchedSchema {
    pub fn pg_catalog(inner: Arc<dyn SchemaProvider>, catalog: Arc<RwLock<Catalog>>) -> Self {
        PatchedSchema { inner, catalog, wrapped: Wrapped::PgCatalog }
    }

    pub fn information_schema(inner: Arc<dyn SchemaProvider>, catalog: Arc<RwLock<Catalog>>) -> Self {
        PatchedSchema { inner, catalog, wrapped: Wrapped::InformationSchema }
    }

    fn patch_for(&self, name: &str) -> Option<Patch> {
        Some(match (self.wrapped, name.to_ascii_lowercase().as_str()) {
            (Wrapped::PgCatalog, "pg_class") => Patch::Class,
            (Wrapped::PgCatalog, "pg_attribute") => Patch::Attribute,
            (Wrapped::PgCatalog, "pg_index") => Patch::Index,
            (Wrapped::PgCatalog, "pg_constraint") => Patch::Constraint,
            (Wrapped::PgCatalog, "pg_database") => Patch::Database,
            (Wrapped::InformationSchema, "columns") => Patch::InfoColumns,
            _ => return None,
        })
    }
}

#[async_trait]
impl SchemaProvider for PatchedSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(kind) = self.patch_for(name) else { return self.inner.table(name).await };
        let Some(table) = self.inner.table(name).await? else { return Ok(None) };
        // The OIDs of user tables come from pg_class; only the pg_catalog patches need them.
        let class = match kind {
            Patch::Class | Patch::Attribute | Patch::Index | Patch::Constraint => self.inner.table("pg_class").await?,
            Patch::Database | Patch::InfoColumns => None,
        };
        Ok(Some(Arc::new(PatchedTable { kind, table, class, catalog: self.catalog.clone() })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// The Postgres name of a type as `information_schema.columns.data_type` gives it, from the
/// Arrow type's display (what DataFusion's information_schema holds).
fn information_schema_type(arrow: &str) -> Option<&'static str> {
    Some(match arrow {
        "Int16" => "smallint",
        "Int32" => "integer",
        "Int64" => "bigint",
        "Float32" => "real",
        "Float64" => "double precision",
        "Utf8" | "LargeUtf8" | "Utf8View" => "text",
        "Boolean" => "boolean",
        "Date32" => "date",
        "Binary" | "LargeBinary" => "bytea",
        a if a.starts_with("Decimal") => "numeric",
        a if a.starts_with("Timestamp") && a.contains(',') && !a.contains("None") => "timestamp with time zone",
        a if a.starts_with("Timestamp") => "timestamp without time zone",
        a if a.starts_with("Time64") => "time without time zone",
        a if a.starts_with("Interval") => "interval",
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
enum Patch {
    Class,
    Attribute,
    Index,
    Constraint,
    InfoColumns,
    /// Only the one database Weir serves (datafusion-pg-catalog also lists `postgres`).
    Database,
}

struct PatchedTable {
    kind: Patch,
    table: Arc<dyn TableProvider>,
    /// datafusion-pg-catalog's `pg_class`, for the OIDs of user tables.
    class: Option<Arc<dyn TableProvider>>,
    catalog: Arc<RwLock<Catalog>>,
}

impl std::fmt::Debug for PatchedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PatchedTable({:?})", self.kind)
    }
}

async fn collect(table: &Arc<dyn TableProvider>, state: &dyn Session) -> Result<Vec<RecordBatch>> {
    let plan = table.scan(state, None, &[], None).await?;
    datafusion::physical_plan::collect(plan, state.task_ctx()).await
}

type Row = Vec<ScalarValue>;

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            rows.push(b.columns().iter().map(|c| ScalarValue::try_from_array(c, i)).collect::<Result<Row>>()?);
        }
    }
    Ok(rows)
}

fn batch_of(schema: &SchemaRef, rows: &[Row]) -> Result<RecordBatch> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let values = rows.iter().map(|r| r[i].clone());
        columns.push(if rows.is_empty() {
            datafusion::arrow::array::new_empty_array(f.data_type())
        } else {
            ScalarValue::iter_to_array(values)?
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A row of the right shape with neutral values (NULL where allowed, else 0 / false / '').
fn default_row(schema: &SchemaRef) -> Result<Row> {
    schema.fields().iter().map(|f| default_value(f)).collect()
}

fn default_value(f: &Field) -> Result<ScalarValue> {
    if f.is_nullable() {
        return ScalarValue::try_from(f.data_type());
    }
    Ok(match f.data_type() {
        DataType::Boolean => ScalarValue::Boolean(Some(false)),
        DataType::Utf8 => ScalarValue::Utf8(Some(String::new())),
        DataType::Utf8View => ScalarValue::Utf8View(Some(String::new())),
        DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(String::new())),
        other => ScalarValue::new_zero(other).or_else(|_| ScalarValue::try_from(other))?,
    })
}

/// Sets a column by name, casting the value to the column's type; unknown columns are skipped
/// (datafusion-pg-catalog may not emulate every Postgres column).
fn set(schema: &SchemaRef, row: &mut Row, column: &str, value: ScalarValue) -> Result<()> {
    if let Ok(i) = schema.index_of(column) {
        row[i] = value.cast_to(schema.field(i).data_type())?;
    }
    Ok(())
}

fn class_extra_columns() -> Vec<Field> {
    vec![
        Field::new("reloptions", DataType::new_list(DataType::Utf8, true), true),
        Field::new("relacl", DataType::new_list(DataType::Utf8, true), true),
    ]
}

/// `pg_index` columns that are `int2vector`/`oidvector` in Postgres, and their element type.
fn vector_element(column: &str) -> Option<DataType> {
    match column {
        "indkey" | "indoption" => Some(DataType::Int16),
        "indclass" | "indcollation" => Some(DataType::Int32),
        _ => None,
    }
}

/// A vector's text (`1 2`) as a list scalar of `element`.
fn vector(text: &str, element: &DataType) -> ScalarValue {
    let values: Vec<ScalarValue> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}' || c == '[' || c == ']')
        .filter(|v| !v.is_empty())
        .filter_map(|v| ScalarValue::try_from_string(v.to_string(), element).ok())
        .collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&values, element))
}

fn get<'a>(schema: &SchemaRef, row: &'a Row, column: &str) -> Option<&'a ScalarValue> {
    schema.index_of(column).ok().map(|i| &row[i])
}

fn as_i64(v: Option<&ScalarValue>) -> Option<i64> {
    match v? {
        ScalarValue::Int16(Some(x)) => Some(*x as i64),
        ScalarValue::Int32(Some(x)) => Some(*x as i64),
        ScalarValue::Int64(Some(x)) => Some(*x),
        ScalarValue::UInt32(Some(x)) => Some(*x as i64),
        _ => None,
    }
}

fn as_str(v: Option<&ScalarValue>) -> Option<String> {
    match v? {
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
        _ => None,
    }
}

impl PatchedTable {
    /// User relations (tables, sources, views), with their catalog columns.
    fn user_relations(&self) -> Vec<weir_catalog::CatalogObject> {
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        catalog
            .objects()
            .filter(|o| o.kind.is_relation() && o.schema == DEFAULT_SCHEMA)
            .cloned()
            .collect()
    }

    fn keyed_tables(users: &[weir_catalog::CatalogObject]) -> Vec<KeyedTable> {
        users
            .iter()
            .filter(|o| !o.primary_key.is_empty())
            .map(|o| KeyedTable {
                id: o.id,
                key: o
                    .primary_key
                    .iter()
                    .filter_map(|k| o.columns.iter().position(|c| &c.name == k).map(|p| p as i16 + 1))
                    .collect(),
                name: o.name.clone(),
            })
            .collect()
    }

    /// (relname → (oid, relnamespace)) of user relations in the `public` namespace, from
    /// datafusion-pg-catalog's `pg_class` rows.
    fn table_oids(class_schema: &SchemaRef, class_rows: &[Row], names: &[String]) -> HashMap<String, (i64, i64)> {
        let mut out = HashMap::new();
        for r in class_rows {
            let (Some(name), Some(oid), Some(ns), Some(kind)) = (
                as_str(get(class_schema, r, "relname")),
                as_i64(get(class_schema, r, "oid")),
                as_i64(get(class_schema, r, "relnamespace")),
                as_str(get(class_schema, r, "relkind")),
            ) else {
                continue;
            };
            // pg_catalog's own tables live in namespace 11.
            if matches!(kind.as_str(), "r" | "v" | "m") && ns != 11 && names.contains(&name) {
                out.insert(name, (oid, ns));
            }
        }
        out
    }

    /// The patched table's schema: `pg_index.indkey` becomes a `smallint` list (Postgres's
    /// int2vector is an array: clients `unnest` it and take subscripts); elsewhere unchanged.
    fn patched_schema(&self) -> SchemaRef {
        let schema = self.table.schema();
        if let Patch::Class = self.kind {
            // Postgres columns datafusion-pg-catalog does not emulate; NULL for every relation.
            let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            for extra in class_extra_columns() {
                if schema.index_of(extra.name()).is_err() {
                    fields.push(extra);
                }
            }
            return Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone()));
        }
        if !matches!(self.kind, Patch::Index) {
            return schema;
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match vector_element(f.name()) {
                Some(t) => Field::new(f.name(), DataType::new_list(t, true), f.is_nullable()),
                None => f.as_ref().clone(),
            })
            .collect();
        Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    async fn patched(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let inner_schema = self.table.schema();
        let batches = collect(&self.table, state).await?;
        let mut rows = rows_of(&batches)?;
        let schema = self.patched_schema();
        for r in rows.iter_mut() {
            for f in schema.fields().iter().skip(r.len()) {
                r.push(ScalarValue::try_from(f.data_type())?);
            }
        }
        if let Patch::Index = self.kind {
            for (k, f) in inner_schema.fields().iter().enumerate() {
                let Some(element) = vector_element(f.name()) else { continue };
                for r in rows.iter_mut() {
                    let text = as_str(Some(&r[k])).unwrap_or_default();
                    r[k] = vector(&text, &element);
                }
            }
        }
        let users = self.user_relations();
        if let Patch::Database = self.kind {
            rows.retain(|r| as_str(get(&schema, r, "datname")).is_none_or(|d| d == crate::database::DATABASE_NAME));
            return Ok(vec![batch_of(&schema, &rows)?]);
        }
        if let Patch::InfoColumns = self.kind {
            for r in rows.iter_mut() {
                let (Some(schema_name), Some(table), Some(column), Some(arrow)) = (
                    as_str(get(&schema, r, "table_schema")),
                    as_str(get(&schema, r, "table_name")),
                    as_str(get(&schema, r, "column_name")),
                    as_str(get(&schema, r, "data_type")),
                ) else {
                    continue;
                };
                let declared = users
                    .iter()
                    .find(|o| o.schema == schema_name && o.name == table)
                    .and_then(|o| o.columns.iter().find(|c| c.name == column))
                    .map(|c| c.type_name.split('(').next().unwrap_or(&c.type_name).trim().to_string());
                if let Some(name) = declared.or_else(|| information_schema_type(&arrow).map(str::to_string)) {
                    set(&schema, r, "data_type", ScalarValue::Utf8(Some(name)))?;
                }
            }
            return Ok(vec![batch_of(&schema, &rows)?]);
        }
        let Some(class) = &self.class else { return Ok(vec![batch_of(&schema, &rows)?]) };
        let class_schema = class.schema();
        let class_rows = match self.kind {
            Patch::Class => rows.clone(),
            _ => rows_of(&collect(class, state).await?)?,
        };
        let names: Vec<String> = users.iter().map(|o| o.name.clone()).collect();
        let oids = Self::table_oids(&class_schema, &class_rows, &names);
        let keyed = Self::keyed_tables(&users);
        match self.kind {
            Patch::Attribute => {
                let by_oid: HashMap<i64, &weir_catalog::CatalogObject> =
                    users.iter().filter_map(|o| oids.get(&o.name).map(|(oid, _)| (*oid, o))).collect();
                for r in rows.iter_mut() {
                    let (Some(rel), Some(num)) = (as_i64(get(&schema, r, "attrelid")), as_i64(get(&schema, r, "attnum")))
                    else {
                        continue;
                    };
                    let Some(object) = by_oid.get(&rel) else { continue };
                    let Some(column) = object.columns.get((num - 1).max(0) as usize) else { continue };
                    if let Some((typ, typmod)) = type_oid_and_typmod(&column.type_name) {
                        set(&schema, r, "atttypid", ScalarValue::Int32(Some(typ)))?;
                        set(&schema, r, "atttypmod", ScalarValue::Int32(Some(typmod)))?;
                    }
                    set(&schema, r, "attnotnull", ScalarValue::Boolean(Some(!column.nullable)))?;
                }
            }
            Patch::Class => {
                // Materialized views are relkind 'm' (psql's \dm), not DataFusion's view 'v'.
                let views: Vec<weir_catalog::CatalogObject> = {
                    let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
                    catalog.objects_of_kind(ObjectKind::MaterializedView).cloned().collect()
                };
                for o in &views {
                    for r in rows.iter_mut() {
                        let is_it = as_str(get(&schema, r, "relname")).as_deref() == Some(o.name.as_str())
                            && as_i64(get(&schema, r, "relnamespace")).is_some_and(|ns| ns != 11);
                        if is_it {
                            set(&schema, r, "relkind", ScalarValue::Utf8(Some("m".into())))?;
                        }
                    }
                }
                let mut extra = Vec::new();
                for t in &keyed {
                    let Some((oid, _)) = oids.get(&t.name) else { continue };
                    let Some(row) = rows.iter_mut().find(|r| as_i64(get(&schema, r, "oid")) == Some(*oid)) else {
                        continue;
                    };
                    set(&schema, row, "relhasindex", ScalarValue::Boolean(Some(true)))?;
                    let mut index = row.clone();
                    set(&schema, &mut index, "oid", ScalarValue::Int32(Some(index_oid(t.id))))?;
                    set(&schema, &mut index, "relname", ScalarValue::Utf8(Some(format!("{}_pkey", t.name))))?;
                    set(&schema, &mut index, "relkind", ScalarValue::Utf8(Some("i".into())))?;
                    set(&schema, &mut index, "relam", ScalarValue::Int32(Some(403)))?;
                    set(&schema, &mut index, "relhasindex", ScalarValue::Boolean(Some(false)))?;
                    set(&schema, &mut index, "reltype", ScalarValue::Int32(Some(0)))?;
                    set(&schema, &mut index, "relnatts", ScalarValue::Int16(Some(t.key.len() as i16)))?;
                    extra.push(index);
                }
                rows.extend(extra);
            }
            Patch::Index => {
                for t in &keyed {
                    let Some((oid, _)) = oids.get(&t.name) else { continue };
                    let mut r = default_row(&schema)?;
                    let n = t.key.len() as i16;
                    let key = t.key.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(" ");
                    for (col, v) in [
                        ("indexrelid", ScalarValue::Int32(Some(index_oid(t.id)))),
                        ("indrelid", ScalarValue::Int64(Some(*oid))),
                        ("indnatts", ScalarValue::Int16(Some(n))),
                        ("indnkeyatts", ScalarValue::Int16(Some(n))),
                        ("indisunique", ScalarValue::Boolean(Some(true))),
                        ("indisprimary", ScalarValue::Boolean(Some(true))),
                        ("indimmediate", ScalarValue::Boolean(Some(true))),
                        ("indisvalid", ScalarValue::Boolean(Some(true))),
                        ("indisready", ScalarValue::Boolean(Some(true))),
                        ("indislive", ScalarValue::Boolean(Some(true))),
                        ("indkey", vector(&key, &DataType::Int16)),
                        ("indclass", vector(&vec!["0"; t.key.len()].join(" "), &DataType::Int32)),
                        ("indcollation", vector(&vec!["0"; t.key.len()].join(" "), &DataType::Int32)),
                        ("indoption", vector(&vec!["0"; t.key.len()].join(" "), &DataType::Int16)),
                    ] {
                        set(&schema, &mut r, col, v)?;
                    }
                    rows.push(r);
                }
            }
            Patch::InfoColumns | Patch::Database => {}
            Patch::Constraint => {
                for t in &keyed {
                    let Some((oid, ns)) = oids.get(&t.name) else { continue };
                    let mut r = default_row(&schema)?;
                    let key = t.key.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(",");
                    for (col, v) in [
                        ("oid", ScalarValue::Int32(Some(constraint_oid(t.id)))),
                        ("conname", ScalarValue::Utf8(Some(format!("{}_pkey", t.name)))),
                        ("connamespace", ScalarValue::Int64(Some(*ns))),
                        ("contype", ScalarValue::Utf8(Some("p".into()))),
                        ("convalidated", ScalarValue::Boolean(Some(true))),
                        ("conrelid", ScalarValue::Int64(Some(*oid))),
                        ("conindid", ScalarValue::Int32(Some(index_oid(t.id)))),
                        ("conislocal", ScalarValue::Boolean(Some(true))),
                        ("connoinherit", ScalarValue::Boolean(Some(true))),
                        ("conkey", ScalarValue::Utf8(Some(format!("{{{key}}}")))),
                    ] {
                        set(&schema, &mut r, col, v)?;
                    }
                    rows.push(r);
                }
            }
        }
        Ok(vec![batch_of(&schema, &rows)?])
    }
}

#[async_trait]
impl TableProvider for PatchedTable {
    fn schema(&self) -> SchemaRef {
        self.patched_schema()
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = self.patched(state).await?;
        let exec = MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?;
        Ok(exec)
    }
}

/// `pg_get_indexdef(index_oid)` and `pg_get_constraintdef(constraint_oid)` for Weir's
/// primary keys; other OIDs answer NULL / as datafusion-pg-catalog did (empty).
pub fn key_definitions(catalog: &Catalog) -> (HashMap<i32, String>, HashMap<i32, String>) {
    let mut indexes = HashMap::new();
    let mut constraints = HashMap::new();
    for o in catalog.objects_of_kind(ObjectKind::Table) {
        if o.primary_key.is_empty() {
            continue;
        }
        let cols = o.primary_key.iter().map(|c| crate::pg_compat::quote_ident(c)).collect::<Vec<_>>().join(", ");
        indexes.insert(
            index_oid(o.id),
            format!("CREATE UNIQUE INDEX {}_pkey ON {}.{} USING btree ({cols})", o.name, o.schema, o.name),
        );
        constraints.insert(constraint_oid(o.id), format!("PRIMARY KEY ({cols})"));
    }
    (indexes, constraints)
}


/// `weir_index_keys()`: one row per column of every primary-key index, with its position in
/// the key: `(indexrelid, attnum, n)`. Stands in for Postgres's
/// `information_schema._pg_expandarray(indkey)` in the queries that use it (pgJDBC's
/// `getPrimaryKeys`), which DataFusion cannot run as written (a set-returning function with a
/// composite result in a select list); see `pg_compat::rewrite_client_sql`.
#[derive(Debug)]
pub struct IndexKeysFunction {
    pub catalog: Arc<RwLock<Catalog>>,
}

impl datafusion::catalog::TableFunctionImpl for IndexKeysFunction {
    fn call_with_args(&self, _args: datafusion::catalog::TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        use datafusion::arrow::array::{Int16Array, Int32Array};
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            Field::new("indexrelid", DataType::Int32, false),
            Field::new("attnum", DataType::Int16, false),
            Field::new("n", DataType::Int32, false),
        ]));
        let (mut idx, mut att, mut pos) = (Vec::new(), Vec::new(), Vec::new());
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        for o in catalog.objects_of_kind(ObjectKind::Table) {
            for (n, k) in o.primary_key.iter().enumerate() {
                if let Some(p) = o.columns.iter().position(|c| &c.name == k) {
                    idx.push(index_oid(o.id));
                    att.push(p as i16 + 1);
                    pos.push(n as i32 + 1);
                }
            }
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int32Array::from(idx)), Arc::new(Int16Array::from(att)), Arc::new(Int32Array::from(pos))],
        )?;
        Ok(Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typmods_follow_postgres() {
        assert_eq!(type_oid_and_typmod("character varying(40)"), Some((1043, 44)));
        assert_eq!(type_oid_and_typmod("numeric(10,2)"), Some((1700, 655366)));
        assert_eq!(type_oid_and_typmod("integer"), Some((23, -1)));
        assert_eq!(type_oid_and_typmod("timestamp with time zone"), Some((1184, -1)));
    }
}
