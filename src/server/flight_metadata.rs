//! What Flight SQL clients ask about the database before they query it: `GetSqlInfo`, the
//! catalogs, schemas, tables (with their Arrow schemas) and primary keys. Relations are listed
//! from the DataFusion catalog queries resolve against, so a client sees exactly the names and
//! column types a query would; the Weir catalog says which are tables, sources and views.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{CommandGetPrimaryKeys, SqlInfo, SqlSupportedCaseSensitivity, SqlSupportedTransaction};
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::TableType;
use weir_catalog::ObjectKind;

use crate::database::{DATABASE_NAME, Database};
use crate::error::Result;

/// The table types `GetTableTypes` lists and `GetTables` reports.
pub const TABLE_TYPES: [&str; 5] = ["MATERIALIZED VIEW", "SOURCE", "SYSTEM TABLE", "TABLE", "VIEW"];

/// The server's answers to `GetSqlInfo`: what ADBC, JDBC and ODBC drivers check.
pub fn sql_info() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Weir");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow format version the IPC messages follow.
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5.0");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    // Unquoted identifiers fold to lower case, as in Postgres. (Quoted ones keep their case,
    // which SqlQuotedIdentifierCase has no value for.)
    b.append(SqlInfo::SqlIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "database");
    b.append(SqlInfo::SqlKeywords, KEYWORDS);
    // The builder only fails on duplicate or mistyped entries, which the lines above are not.
    b.build().unwrap_or_else(|e| panic!("static Flight SQL info: {e}"))
}

/// Weir's words beyond SQL:2003 that a client must quote as identifiers.
const KEYWORDS: &[&str] = &["EMIT", "FLUSH", "HOP", "SESSION", "SINK", "SOURCE", "SUBSCRIBE", "TUMBLE", "WATERMARK"];

/// The schemas of the database, sorted.
pub fn schema_names(db: &Database) -> Vec<String> {
    let mut names = db.base_context().catalog(DATABASE_NAME).map(|c| c.schema_names()).unwrap_or_default();
    names.sort();
    names
}

/// A relation as `GetTables` reports it.
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub table_type: &'static str,
    pub columns: Schema,
}

/// Every relation a query can name, sorted by schema and name.
pub async fn relations(db: &Database) -> Result<Vec<Relation>> {
    let Some(catalog) = db.base_context().catalog(DATABASE_NAME) else { return Ok(vec![]) };
    let kinds: HashMap<(String, String), ObjectKind> =
        db.read_catalog().objects().map(|o| ((o.schema.clone(), o.name.clone()), o.kind)).collect();
    let mut relations = vec![];
    for schema_name in schema_names(db) {
        let Some(schema) = catalog.schema(&schema_name) else { continue };
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            let Some(table) = schema.table(&name).await? else { continue };
            let table_type = match kinds.get(&(schema_name.clone(), name.clone())) {
                Some(ObjectKind::Table) => "TABLE",
                Some(ObjectKind::Source) => "SOURCE",
                Some(ObjectKind::MaterializedView) => "MATERIALIZED VIEW",
                Some(ObjectKind::View) => "VIEW",
                _ if table.table_type() == TableType::View => "VIEW",
                _ => "SYSTEM TABLE",
            };
            relations.push(Relation { schema: schema_name.clone(), name, table_type, columns: table.schema().as_ref().clone() });
        }
    }
    Ok(relations)
}

/// The columns of a `GetPrimaryKeys` answer (Flight SQL's `CommandGetPrimaryKeys`).
pub fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

/// The primary-key columns of the table the command names (exact names, not patterns).
pub fn primary_keys(db: &Database, query: &CommandGetPrimaryKeys) -> Result<RecordBatch> {
    let (mut schemas, mut tables, mut columns, mut key_names, mut positions) = (vec![], vec![], vec![], vec![], vec![]);
    if query.catalog.as_deref().is_none_or(|c| c == DATABASE_NAME) {
        let catalog = db.read_catalog();
        let named = catalog
            .objects()
            .filter(|o| o.name == query.table && query.db_schema.as_deref().is_none_or(|s| s == o.schema));
        for object in named {
            for (i, column) in object.primary_key.iter().enumerate() {
                schemas.push(object.schema.clone());
                tables.push(object.name.clone());
                columns.push(column.clone());
                // Postgres's name for the constraint of an unnamed PRIMARY KEY.
                key_names.push(format!("{}_pkey", object.name));
                positions.push(i as i32 + 1);
            }
        }
    }
    let catalogs = vec![DATABASE_NAME; tables.len()];
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(catalogs)),
        Arc::new(StringArray::from(schemas)),
        Arc::new(StringArray::from(tables)),
        Arc::new(StringArray::from(columns)),
        Arc::new(StringArray::from(key_names)),
        Arc::new(Int32Array::from(positions)),
    ];
    let schema: SchemaRef = Arc::new(primary_keys_schema());
    Ok(RecordBatch::try_new(schema, arrays)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_info_names_the_server() {
        let info = sql_info();
        let batch = info.record_batch([SqlInfo::FlightSqlServerName as u32]).unwrap();
        assert_eq!(batch.num_rows(), 1);
    }
}
