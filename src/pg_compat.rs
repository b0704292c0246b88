//! Postgres functions that clients call and DataFusion / datafusion-pg-catalog lack.
//!
//! Database-wide functions (`version()`, `pg_cancel_backend`) are registered once on the shared
//! context. Session-dependent ones (`current_setting`, `set_config`, `pg_backend_pid`) are
//! registered on each statement's state, bound to that session's values (see
//! [`register_session_functions`]), because DataFusion functions see no session of ours.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_string_array;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

use crate::database::Database;
use crate::settings::Settings;

/// What `version()` returns. It must start with `PostgreSQL ` followed by a version: SQLAlchemy
/// and other drivers parse it.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {} (Weir {}) on {}-linux, compiled by rustc, 64-bit",
        crate::settings::SERVER_VERSION,
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

pub fn register_functions(ctx: &SessionContext, db: &Arc<Database>) {
    let version = version_string();
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(datafusion::scalar::ScalarValue::Utf8(Some(version.clone()))))
        }),
    ));

    // pg_cancel_backend(pid): cancels the statement running on that connection. Without users
    // and roles yet, any session may cancel any other, as a Postgres superuser can.
    let registry = db.cancel.clone();
    ctx.register_udf(create_udf(
        "pg_cancel_backend",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let pids = arrays[0]
                .as_any()
                .downcast_ref::<Int32Array>()
                .ok_or_else(|| DataFusionError::Plan("pg_cancel_backend expects an integer".into()))?;
            let out: BooleanArray = pids.iter().map(|p| p.map(|pid| registry.cancel(pid))).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    ));
}

/// Registers the functions whose answers depend on the session on a statement's state.
pub fn register_session_functions(
    state: &mut datafusion::execution::SessionState,
    settings: &Settings,
    backend_pid: i32,
) {
    let values = settings.clone();
    let current_setting = create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = as_string_array(&arrays[0])?;
            let mut out = Vec::with_capacity(names.len());
            for name in names.iter() {
                match name {
                    None => out.push(None),
                    Some(n) => match values.get(n) {
                        Some(v) => out.push(Some(v)),
                        None => {
                            return Err(DataFusionError::External(Box::new(
                                crate::error::WeirError::new(
                                    crate::error::SqlState::UndefinedObject,
                                    format!("unrecognized configuration parameter \"{n}\""),
                                ),
                            )));
                        }
                    },
                }
            }
            Ok(ColumnarValue::Array(Arc::new(StringArray::from(out)) as ArrayRef))
        }),
    );
    // set_config(name, value, is_local) returns the new value. Clients (asyncpg) call it to turn
    // `jit` off; the value is answered but not kept, since there is no such setting to change.
    let set_config = create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| Ok(args[1].clone())),
    );
    let pid = create_udf(
        "pg_backend_pid",
        vec![],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(datafusion::scalar::ScalarValue::Int32(Some(backend_pid))))
        }),
    );
    for udf in [current_setting, set_config, pid, pg_text_udf(settings.time_zone())] {
        if let Err(e) = state.register_udf(Arc::new(udf)) {
            tracing::warn!(error = %e, "could not register a session function");
        }
    }
}

/// Keywords that `quote_ident` quotes: every Postgres keyword that is not "unreserved"
/// (`SELECT word FROM pg_get_keywords() WHERE catcode <> 'U'` on Postgres 15).
const QUOTED_KEYWORDS: &str = "all analyse analyze and any array as asc asymmetric authorization between bigint binary bit \
boolean both case cast char character check coalesce collate collation column concurrently constraint create cross \
current_catalog current_date current_role current_schema current_time current_timestamp current_user dec decimal \
default deferrable desc distinct do else end except exists extract false fetch float for foreign freeze from full \
grant greatest group grouping having ilike in initially inner inout int integer intersect interval into is isnull \
join lateral leading least left like limit localtime localtimestamp national natural nchar none normalize not \
notnull null nullif numeric offset on only or order out outer overlaps overlay placing position precision primary \
real references returning right row select session_user setof similar smallint some substring symmetric table \
tablesample then time timestamp to trailing treat trim true union unique user using values varchar variadic verbose \
when where window with xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot \
xmlserialize xmltable";

/// Postgres's `quote_ident`: quotes unless the name is a lower-case identifier that is not a
/// reserved (or type/function-name or column-name) keyword. Grafana relies on `"time"`.
pub fn quote_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain && !QUOTED_KEYWORDS.split_whitespace().any(|k| k == name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The OID of a built-in type name, for `to_regtype` (NULL when unknown, as in Postgres).
pub fn type_oid(name: &str) -> Option<i32> {
    let n = name.trim().to_ascii_lowercase();
    // A STRUCT column is an anonymous composite value: a `record`, as for `ROW(...)`.
    if n.starts_with("struct<") {
        return Some(2249);
    }
    let (base, array) = match n.strip_suffix("[]") {
        Some(b) => (b.trim().to_string(), true),
        None => match n.strip_prefix('_') {
            Some(b) => (b.to_string(), true),
            None => (n.clone(), false),
        },
    };
    let base = base.trim_start_matches("pg_catalog.");
    let base = match base.split_once('(') {
        Some((b, _)) => b.trim(),
        None => base,
    };
    let (scalar, arr) = match base {
        "bool" | "boolean" => (16, 1000),
        "bytea" => (17, 1001),
        "char" | "\"char\"" => (18, 1002),
        "name" => (19, 1003),
        "int8" | "bigint" => (20, 1016),
        "int2" | "smallint" => (21, 1005),
        "int4" | "integer" | "int" => (23, 1007),
        "text" => (25, 1009),
        "oid" => (26, 1028),
        "json" => (114, 199),
        "float4" | "real" => (700, 1021),
        "float8" | "double precision" => (701, 1022),
        "bpchar" | "character" => (1042, 1014),
        "varchar" | "character varying" => (1043, 1015),
        "date" => (1082, 1182),
        "time" | "time without time zone" => (1083, 1183),
        "timestamp" | "timestamp without time zone" => (1114, 1115),
        "timestamptz" | "timestamp with time zone" => (1184, 1185),
        "interval" => (1186, 1187),
        "numeric" | "decimal" => (1700, 1231),
        "uuid" => (2950, 2951),
        "jsonb" => (3802, 3807),
        "regtype" => (2206, 2211),
        "regclass" => (2205, 2210),
        "unknown" => (705, 0),
        _ => return None,
    };
    Some(if array { arr } else { scalar })
}

/// The body of a [`VariadicUdf`]: argument arrays and the row count in, one array out.
type ArrayFunction = Box<dyn Fn(&[ArrayRef], usize) -> datafusion::error::Result<ArrayRef> + Send + Sync>;

/// A scalar function over whole argument arrays with any arguments (Postgres functions that
/// have several arities, like `pg_get_indexdef(oid[, int, bool])`).
struct VariadicUdf {
    name: &'static str,
    signature: datafusion::logical_expr::Signature,
    return_type: DataType,
    fun: ArrayFunction,
}

impl std::fmt::Debug for VariadicUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VariadicUdf({})", self.name)
    }
}

impl PartialEq for VariadicUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for VariadicUdf {}

impl std::hash::Hash for VariadicUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for VariadicUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array((self.fun)(&arrays, args.number_rows)?))
    }
}

fn variadic(
    name: &'static str,
    return_type: DataType,
    fun: impl Fn(&[ArrayRef], usize) -> datafusion::error::Result<ArrayRef> + Send + Sync + 'static,
) -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::new_from_impl(VariadicUdf {
        name,
        signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Stable),
        return_type,
        fun: Box::new(fun),
    })
}

/// What a relation name (`t`, `public.t`, `pg_catalog.pg_class`, quoted or not) names.
enum Relation {
    /// In `pg_catalog` or `information_schema`: readable by every role.
    System,
    User(weir_catalog::CatalogObject),
    Missing,
}

fn relation(catalog: &weir_catalog::Catalog, name: &str) -> Relation {
    let parts: Vec<String> = name
        .split('.')
        .map(|p| if p.starts_with('"') { p.trim_matches('"').to_string() } else { p.to_lowercase() })
        .collect();
    let (schema, table) = match parts.as_slice() {
        // Unqualified names resolve through the search path, which ends in pg_catalog.
        [t] if t.starts_with("pg_") => ("pg_catalog".to_string(), t.clone()),
        [t] => ("public".to_string(), t.clone()),
        [s, t] => (s.clone(), t.clone()),
        _ => return Relation::Missing,
    };
    match schema.as_str() {
        // System relations: datafusion-pg-catalog's and DataFusion's own.
        "pg_catalog" | "information_schema" => Relation::System,
        _ => catalog.find(weir_catalog::ObjectKind::Table, &schema, &table).cloned().map_or(Relation::Missing, Relation::User),
    }
}

fn external(state: crate::error::SqlState, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::WeirError::new(state, message)))
}

/// A text argument as a string array; None when it is not text (an OID).
fn text_argument(array: &ArrayRef) -> datafusion::error::Result<Option<StringArray>> {
    match array.data_type() {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
            let cast = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
            Ok(Some(as_string_array(&cast)?.clone()))
        }
        _ => Ok(None),
    }
}

/// Privilege names Postgres accepts for tables.
const TABLE_PRIVILEGES: [&str; 8] = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"];

/// `has_table_privilege([user,] table, privileges)` and `has_any_column_privilege` for the
/// statement's user `session_user` (or the user the call names), as Weir's rights are: a
/// superuser and the owner hold every privilege; another role holds `SELECT` when granted it,
/// and no other. `privileges` is a comma-separated list (any one held answers true), each
/// optionally `WITH GRANT OPTION`. Relations given by OID answer true (they came from the
/// catalog the user reads). `trust`: a name that is no role counts as a superuser, as at login.
pub fn register_privilege_functions(
    state: &mut datafusion::execution::SessionState,
    catalog: Arc<std::sync::RwLock<weir_catalog::Catalog>>,
    session_user: String,
    trust: bool,
) {
    for name in ["has_table_privilege", "has_any_column_privilege"] {
        let catalog = catalog.clone();
        let session_user = session_user.clone();
        let udf = variadic(name, DataType::Boolean, move |arrays, rows| {
            let (users, object, privileges) = match arrays {
                [object, privileges] => (None, object, privileges),
                [user, object, privileges] => (text_argument(user)?, object, privileges),
                _ => return Err(DataFusionError::Plan(format!("{name} takes ([user,] table, privilege)"))),
            };
            let Some(names) = text_argument(object)? else {
                return Ok(Arc::new(BooleanArray::from(vec![true; rows])) as ArrayRef);
            };
            let privileges = text_argument(privileges)?.ok_or_else(|| DataFusionError::Plan(format!("{name}: the privilege is text")))?;
            let catalog = catalog.read().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::with_capacity(rows);
            for row in 0..rows {
                if names.is_null(row) || privileges.is_null(row) || users.as_ref().is_some_and(|u| u.is_null(row)) {
                    out.push(None);
                    continue;
                }
                let user = users.as_ref().map_or(session_user.as_str(), |u| u.value(row));
                let Some(superuser) = crate::roles::superuser_in(&catalog, user, trust) else {
                    return Err(external(crate::error::SqlState::UndefinedObject, format!("role \"{user}\" does not exist")));
                };
                let mut wanted = Vec::new();
                for privilege in privileges.value(row).split(',') {
                    let privilege = privilege.trim().to_ascii_uppercase();
                    let privilege = privilege.strip_suffix(" WITH GRANT OPTION").unwrap_or(&privilege).trim().to_string();
                    if !TABLE_PRIVILEGES.contains(&privilege.as_str()) {
                        return Err(external(crate::error::SqlState::InvalidParameterValue, format!("unrecognized privilege type: \"{privilege}\"")));
                    }
                    wanted.push(privilege);
                }
                let held = match relation(&catalog, names.value(row)) {
                    Relation::Missing => {
                        return Err(external(crate::error::SqlState::UndefinedTable, format!("relation \"{}\" does not exist", names.value(row))));
                    }
                    Relation::System => superuser || wanted.iter().any(|p| p == "SELECT"),
                    // Owners and superusers hold every privilege; others at most SELECT.
                    Relation::User(object) => {
                        superuser || object.owner == user || (wanted.iter().any(|p| p == "SELECT") && crate::roles::may_read(&catalog, false, user, &object))
                    }
                };
                out.push(Some(held));
            }
            Ok(Arc::new(BooleanArray::from(out)) as ArrayRef)
        });
        if let Err(e) = state.register_udf(Arc::new(udf)) {
            tracing::warn!(error = %e, "could not register a privilege function");
        }
    }
}

/// The first argument as OIDs (any integer type).
fn oids(arrays: &[ArrayRef]) -> datafusion::error::Result<Vec<Option<i64>>> {
    let first = arrays.first().ok_or_else(|| DataFusionError::Plan("expected an OID argument".into()))?;
    let as_i64 = datafusion::arrow::compute::cast(first, &DataType::Int64)?;
    let a = as_i64
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("cast to Int64".into()))?;
    Ok(a.iter().collect())
}

pub fn register_catalog_functions(ctx: &SessionContext, catalog: &Arc<std::sync::RwLock<weir_catalog::Catalog>>) {
    ctx.register_udtf(
        "weir_index_keys",
        Arc::new(crate::pg_catalog::IndexKeysFunction { catalog: catalog.clone() }),
    );
    for (name, indexes) in [("pg_get_indexdef", true), ("pg_get_constraintdef", false)] {
        let catalog = catalog.clone();
        ctx.register_udf(variadic(name, DataType::Utf8, move |arrays, _rows| {
            let (idx, cons) = {
                let c = catalog.read().unwrap_or_else(|p| p.into_inner());
                crate::pg_catalog::key_definitions(&c)
            };
            let defs = if indexes { idx } else { cons };
            let out: StringArray = oids(arrays)?
                .into_iter()
                .map(|o| o.and_then(|o| defs.get(&(o as i32)).cloned()))
                .collect();
            Ok(Arc::new(out) as ArrayRef)
        }));
    }
    // generate_subscripts(array, 1) in a select list runs in step with unnest(array) there;
    // `rewrite_generate_subscripts` turns it into unnest(weir_subscripts(array)).
    ctx.register_udf(variadic("weir_subscripts", DataType::new_list(DataType::Int32, true), |arrays, rows| {
        use datafusion::arrow::array::{ListArray, ListBuilder, Int32Builder};
        let mut builder = ListBuilder::new(Int32Builder::new());
        let lists = arrays
            .first()
            .and_then(|a| a.as_any().downcast_ref::<ListArray>())
            .ok_or_else(|| DataFusionError::Plan("generate_subscripts expects an array".into()))?;
        for row in 0..rows {
            if lists.is_null(row) {
                builder.append(false);
                continue;
            }
            let n = lists.value(row).len() as i32;
            for i in 1..=n {
                builder.values().append_value(i);
            }
            builder.append(true);
        }
        Ok(Arc::new(builder.finish()) as ArrayRef)
    }));
    // has_table_privilege and has_any_column_privilege depend on the statement's user:
    // registered per statement by `register_privilege_functions`. A schema's privileges are
    // every role's (one schema, `public`, open to all): this answers whether it exists.
    ctx.register_udf(variadic("has_schema_privilege", DataType::Boolean, move |arrays, rows| {
        // (schema, privilege) or (user, schema, privilege)
        let schema = if arrays.len() >= 3 { &arrays[1] } else { &arrays[0] };
        let Some(names) = text_argument(schema)? else {
            return Ok(Arc::new(BooleanArray::from(vec![true; rows])) as ArrayRef);
        };
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            if names.is_null(row) {
                out.push(None);
                continue;
            }
            let name = names.value(row);
            if !matches!(name.trim_matches('"'), "public" | "pg_catalog" | "information_schema") {
                return Err(external(crate::error::SqlState::UndefinedObject, format!("schema \"{name}\" does not exist")));
            }
            out.push(Some(true));
        }
        Ok(Arc::new(BooleanArray::from(out)) as ArrayRef)
    }));
    // One schema on the search path, no overloading across schemas: every collation, function
    // and type Weir lists is visible.
    for name in ["pg_collation_is_visible", "pg_function_is_visible", "pg_type_is_visible"] {
        ctx.register_udf(variadic(name, DataType::Boolean, |_arrays, rows| {
            Ok(Arc::new(BooleanArray::from(vec![true; rows])) as ArrayRef)
        }));
    }
    // Weir has no user-defined functions; psql's \df asks these only about catalog rows.
    for name in ["pg_get_function_result", "pg_get_function_arguments", "pg_get_function_identity_arguments"] {
        ctx.register_udf(variadic(name, DataType::Utf8, |_arrays, rows| {
            Ok(datafusion::arrow::array::new_null_array(&DataType::Utf8, rows))
        }));
    }
    // No serial columns (sequences) exist in Weir.
    ctx.register_udf(variadic("pg_get_serial_sequence", DataType::Utf8, |_arrays, rows| {
        Ok(datafusion::arrow::array::new_null_array(&DataType::Utf8, rows))
    }));
    ctx.register_udf(variadic("json_build_object", DataType::Utf8, |arrays, rows| {
        let mut out = Vec::with_capacity(rows);
        let texts: Vec<ArrayRef> = arrays
            .iter()
            .map(|a| datafusion::arrow::compute::cast(a, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        for row in 0..rows {
            let mut obj = serde_json::Map::new();
            for pair in texts.chunks(2) {
                let key = as_string_array(&pair[0])?;
                let key = if key.is_null(row) { String::new() } else { key.value(row).to_string() };
                let value = match pair.get(1) {
                    Some(v) => {
                        let v = as_string_array(v)?;
                        if v.is_null(row) { serde_json::Value::Null } else { serde_json::Value::String(v.value(row).to_string()) }
                    }
                    None => serde_json::Value::Null,
                };
                obj.insert(key, value);
            }
            out.push(Some(serde_json::Value::Object(obj).to_string()));
        }
        Ok(Arc::new(StringArray::from(out)) as ArrayRef)
    }));

    ctx.register_udf(create_udf(
        "quote_ident",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = as_string_array(&arrays[0])?;
            let out: StringArray = names.iter().map(|n| n.map(quote_ident)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    ));
    ctx.register_udf(create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = as_string_array(&arrays[0])?;
            let out: Int32Array = names.iter().map(|n| n.and_then(type_oid)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    ));
}

/// The column names Postgres gives a query's result: an alias, a column's name, a function's
/// name (`count`, not DataFusion's `count(*)`), a cast's operand name or type name, or
/// `?column?`. `None` when the select list has a `*` (its width is not known from the text).
pub fn output_column_names(query: &sqlparser::ast::Query) -> Option<Vec<String>> {
    use sqlparser::ast::{SelectItem, SetExpr};
    fn body_names(body: &SetExpr) -> Option<Vec<String>> {
        match body {
            SetExpr::Select(select) => select
                .projection
                .iter()
                .map(|item| match item {
                    SelectItem::UnnamedExpr(e) => Some(expr_name(e)),
                    SelectItem::ExprWithAlias { alias, .. } => Some(crate::session::ident(alias)),
                    _ => None,
                })
                .collect(),
            SetExpr::Query(q) => body_names(&q.body),
            SetExpr::SetOperation { left, .. } => body_names(left),
            _ => None,
        }
    }
    body_names(&query.body)
}

fn expr_name(e: &sqlparser::ast::Expr) -> String {
    use sqlparser::ast::Expr;
    match e {
        Expr::Identifier(i) => crate::session::ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(crate::session::ident).unwrap_or_default(),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .map(|p| p.to_string().trim_matches('"').to_lowercase())
            .unwrap_or_else(|| "?column?".into()),
        Expr::Cast { expr, data_type, .. } => match expr_name(expr) {
            n if n != "?column?" => n,
            _ => cast_type_name(data_type),
        },
        Expr::Nested(inner) => expr_name(inner),
        // `(s).field` is named after the field (as Postgres does); `a[1]` after the array.
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last() {
            Some(sqlparser::ast::AccessExpr::Dot(Expr::Identifier(i))) => crate::session::ident(i),
            _ => expr_name(root),
        },
        Expr::Case { .. } => "case".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Substring { .. } => "substring".into(),
        Expr::Position { .. } => "position".into(),
        Expr::Trim { .. } => "btrim".into(),
        Expr::Ceil { .. } => "ceil".into(),
        Expr::Floor { .. } => "floor".into(),
        Expr::Array(_) => "array".into(),
        _ => "?column?".into(),
    }
}

/// The internal type name Postgres uses for a cast's result column (`SELECT 1::int` → `int4`).
fn cast_type_name(t: &sqlparser::ast::DataType) -> String {
    use sqlparser::ast::DataType as D;
    match t {
        D::SmallInt(_) | D::Int2(_) => "int2",
        D::Int(_) | D::Integer(_) | D::Int4(_) => "int4",
        D::BigInt(_) | D::Int8(_) => "int8",
        D::Real | D::Float4 => "float4",
        D::Double(_) | D::DoublePrecision | D::Float8 | D::Float64 => "float8",
        D::Numeric(_) | D::Decimal(_) | D::Dec(_) => "numeric",
        D::Text | D::String(_) => "text",
        D::Varchar(_) | D::CharacterVarying(_) | D::CharVarying(_) => "varchar",
        D::Char(_) | D::Character(_) => "bpchar",
        D::Boolean | D::Bool => "bool",
        D::Date => "date",
        D::Timestamp(_, sqlparser::ast::TimezoneInfo::WithTimeZone | sqlparser::ast::TimezoneInfo::Tz) => {
            "timestamptz"
        }
        D::Timestamp(..) => "timestamp",
        D::Interval { .. } => "interval",
        D::JSON => "json",
        D::JSONB => "jsonb",
        _ => return t.to_string().to_lowercase(),
    }
    .to_string()
}


fn pg_text_udf(time_zone: String) -> datafusion::logical_expr::ScalarUDF {
    variadic("weir_pg_text", DataType::Utf8, move |arrays, rows| {
        let Some(input) = arrays.first() else {
            return Ok(datafusion::arrow::array::new_null_array(&DataType::Utf8, rows));
        };
        match input.data_type() {
            DataType::Utf8 => Ok(input.clone()),
            DataType::Boolean => {
                let b = input.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| DataFusionError::Internal("bool".into()))?;
                let out: StringArray = b.iter().map(|v| v.map(|v| if v { "true" } else { "false" })).collect();
                Ok(Arc::new(out) as ArrayRef)
            }
            DataType::Null => Ok(datafusion::arrow::array::new_null_array(&DataType::Utf8, input.len())),
            _ => {
                let text = crate::text_format::ColumnText::new(input, &time_zone)
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let out: StringArray = (0..input.len()).map(|i| text.value(i)).collect();
                Ok(Arc::new(out) as ArrayRef)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Option<Vec<String>> {
        let parsed = weir_sql::parse(sql).unwrap();
        let weir_sql::Statement::Standard(s) = &parsed[0].statement else { panic!() };
        let sqlparser::ast::Statement::Query(q) = s.as_ref() else { panic!() };
        output_column_names(q)
    }

    #[test]
    fn result_columns_are_named_like_postgres() {
        assert_eq!(
            names("SELECT count(*), x, t.y, 1, 1::int, x::text, sum(z) AS total, CASE WHEN true THEN 1 END FROM t"),
            Some(vec!["count", "x", "y", "?column?", "int4", "x", "total", "case"].into_iter().map(String::from).collect())
        );
        assert_eq!(names("SELECT * FROM t"), None);
    }

    #[test]
    fn quote_ident_quotes_keywords_and_odd_names() {
        assert_eq!(quote_ident("time"), "\"time\"");
        assert_eq!(quote_ident("value"), "value");
        assert_eq!(quote_ident("a b"), "\"a b\"");
        assert_eq!(quote_ident("Mixed"), "\"Mixed\"");
        assert_eq!(type_oid("timestamp with time zone"), Some(1184));
        assert_eq!(type_oid("numeric[]"), Some(1231));
        assert_eq!(type_oid("hstore"), None);
    }
}
