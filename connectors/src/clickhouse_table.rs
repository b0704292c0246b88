//! The ClickHouse table a sink writes to, checked against the view at CREATE (its columns,
//! their types, its engine and sorting key) or created for it (`clickhouse.create_table`).
//!
//! The checks are what makes the sink's guarantees hold: an upsert table must be a
//! `ReplacingMergeTree(<epoch column>)` sorted by the view's key, or a re-sent epoch would not
//! replace itself and an update would not replace the key's older row.

use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use crate::error::ConnectorError;
use crate::options::invalid;
use crate::sink::SinkMode;

/// What the sink needs of its table.
pub(crate) struct TableSpec<'a> {
    pub database: &'a str,
    pub table: &'a str,
    pub view: &'a SchemaRef,
    pub mode: &'a SinkMode,
    pub epoch_column: &'a str,
    pub delete_column: &'a str,
}

/// The table as `system.tables` and `system.columns` describe it.
pub(crate) struct TableInfo {
    /// (name, type) per column.
    pub columns: Vec<(String, String)>,
    pub engine: String,
    pub engine_full: String,
    pub sorting_key: String,
}

/// `Nullable(T)` and `LowCardinality(T)` hold what `T` holds.
fn unwrap_type(ch: &str) -> &str {
    let mut t = ch.trim();
    loop {
        let inner = ["Nullable(", "LowCardinality("].iter().find_map(|p| t.strip_prefix(p).and_then(|r| r.strip_suffix(')')));
        match inner {
            Some(inner) => t = inner.trim(),
            None => return t,
        }
    }
}

fn int_width(ch: &str) -> Option<(bool, u32)> {
    let (signed, bits) = match ch.strip_prefix("UInt") {
        Some(bits) => (false, bits),
        None => (true, ch.strip_prefix("Int")?),
    };
    Some((signed, bits.parse().ok()?))
}

/// Whether a ClickHouse column of type `ch` can hold every value of the view's `arrow` type.
fn holds(arrow: &DataType, ch: &str) -> bool {
    use DataType::*;
    let ch = unwrap_type(ch);
    let is = |prefix: &str| ch == prefix || ch.starts_with(&format!("{prefix}("));
    let float_or_decimal = is("Float64") || is("Decimal") || ch.starts_with("Decimal");
    let int = |signed: bool, bits: u32| match int_width(ch) {
        // An unsigned source fits a signed column twice its width; a signed one no unsigned one.
        Some((true, b)) => b >= bits + u32::from(!signed) || (signed && b >= bits),
        Some((false, b)) => !signed && b >= bits,
        None => float_or_decimal,
    };
    match arrow {
        Utf8 | LargeUtf8 | Utf8View => is("String") || ch.starts_with("FixedString") || ch.starts_with("Enum") || ch == "UUID",
        Int8 => int(true, 8),
        Int16 => int(true, 16),
        Int32 => int(true, 32),
        Int64 => int(true, 64),
        UInt8 => int(false, 8),
        UInt16 => int(false, 16),
        UInt32 => int(false, 32),
        UInt64 => int(false, 64),
        Float16 | Float32 => is("Float32") || float_or_decimal,
        Float64 => is("Float64"),
        Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => float_or_decimal,
        Boolean => ch == "Bool" || ch == "Boolean" || int_width(ch).is_some(),
        Timestamp(..) => is("DateTime") || is("DateTime64"),
        Date32 | Date64 => is("Date") || is("Date32") || is("DateTime") || is("DateTime64"),
        _ => false,
    }
}

/// The column type `clickhouse.create_table` gives a view column.
fn column_type(arrow: &DataType, datetime64: bool) -> Option<String> {
    use DataType::*;
    Some(match arrow {
        Utf8 | LargeUtf8 | Utf8View => "String".into(),
        Int8 => "Int8".into(),
        Int16 => "Int16".into(),
        Int32 => "Int32".into(),
        Int64 => "Int64".into(),
        UInt8 => "UInt8".into(),
        UInt16 => "UInt16".into(),
        UInt32 => "UInt32".into(),
        UInt64 => "UInt64".into(),
        Float16 | Float32 => "Float32".into(),
        Float64 => "Float64".into(),
        Decimal32(p, s) | Decimal64(p, s) => format!("Decimal({p}, {s})"),
        Decimal128(p, s) | Decimal256(p, s) => format!("Decimal({}, {s})", (*p).min(76)),
        Boolean => "UInt8".into(),
        // Second resolution where the server has nothing finer (before ClickHouse 20.1).
        Timestamp(TimeUnit::Second, _) => "DateTime".into(),
        Timestamp(..) if datetime64 => "DateTime64(6)".into(),
        Timestamp(..) => "DateTime".into(),
        Date32 | Date64 => "Date".into(),
        _ => return None,
    })
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

impl TableSpec<'_> {
    fn key_names(&self) -> Vec<&str> {
        match self.mode {
            SinkMode::Upsert { key } => key.iter().map(|&i| self.view.field(i).name().as_str()).collect(),
            SinkMode::AppendOnly => vec![],
        }
    }

    fn qualified(&self) -> String {
        format!("{}.{}", quote(self.database), quote(self.table))
    }

    /// `CREATE TABLE IF NOT EXISTS` for the view: its columns (Nullable where the view's are,
    /// except the key, which ClickHouse cannot sort by when nullable), the epoch column, and
    /// for upserts the delete column; MergeTree for append-only sinks, ReplacingMergeTree(epoch)
    /// ordered by the key for upserts.
    pub fn create_table_sql(&self, datetime64: bool) -> Result<String, ConnectorError> {
        let key = self.key_names();
        let mut columns = Vec::new();
        for field in self.view.fields() {
            let t = column_type(field.data_type(), datetime64).ok_or_else(|| {
                invalid("clickhouse.create_table", format!("column \"{}\" is {}, which has no ClickHouse column type here", field.name(), field.data_type()))
            })?;
            let t = if field.is_nullable() && !key.contains(&field.name().as_str()) { format!("Nullable({t})") } else { t };
            columns.push(format!("{} {t}", quote(field.name())));
        }
        columns.push(format!("{} UInt64", quote(self.epoch_column)));
        let engine = match self.mode {
            SinkMode::AppendOnly => "MergeTree ORDER BY tuple()".to_string(),
            SinkMode::Upsert { .. } => {
                columns.push(format!("{} UInt8", quote(self.delete_column)));
                let order: Vec<String> = key.iter().map(|k| quote(k)).collect();
                format!("ReplacingMergeTree({}) ORDER BY ({})", quote(self.epoch_column), order.join(", "))
            }
        };
        Ok(format!("CREATE TABLE IF NOT EXISTS {} ({}) ENGINE = {engine}", self.qualified(), columns.join(", ")))
    }

    /// The table must have a column that can hold each view column, the epoch column and, for
    /// upserts, the delete column; an upsert table must replace rows by the key and the epoch.
    pub fn check(&self, info: &TableInfo) -> Result<(), ConnectorError> {
        let (database, table) = (self.database, self.table);
        let bad = |reason: String| invalid("clickhouse.table", format!("table {database}.{table} {reason}"));
        let column = |name: &str| info.columns.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_str());
        let upsert = matches!(self.mode, SinkMode::Upsert { .. });
        for field in self.view.fields() {
            let Some(t) = column(field.name()) else {
                return Err(bad(format!(
                    "has no column \"{}\" (it needs the view's columns, {}{})",
                    field.name(),
                    self.epoch_column,
                    if upsert { format!(" and {} for upserts", self.delete_column) } else { String::new() }
                )));
            };
            if !holds(field.data_type(), t) {
                return Err(bad(format!("column \"{}\" is {t}, which cannot hold the view's {} values", field.name(), field.data_type())));
            }
        }
        match column(self.epoch_column) {
            None => return Err(bad(format!("has no column \"{}\" (UInt64, the epoch of each row)", self.epoch_column))),
            Some(t) if !holds(&DataType::UInt64, t) => return Err(bad(format!("column \"{}\" is {t}; the epoch column must be UInt64", self.epoch_column))),
            Some(_) => {}
        }
        if !info.engine.ends_with("MergeTree") {
            return Err(bad(format!("has engine {}; the sink writes to MergeTree tables", info.engine)));
        }
        if !upsert {
            return Ok(());
        }
        match column(self.delete_column) {
            None => return Err(bad(format!("has no column \"{}\" (UInt8, 1 for a key that left the view)", self.delete_column))),
            Some(t) if !holds(&DataType::Boolean, t) => return Err(bad(format!("column \"{}\" is {t}; the delete column must be UInt8", self.delete_column))),
            Some(_) => {}
        }
        // ReplacingMergeTree(ver): re-sent epochs and updates replace rows by key and version.
        // A sign-based table (CollapsingMergeTree) cannot absorb a re-sent epoch, and merges
        // collapse away the rows that would tell whether one landed.
        let version = info.engine_full.split_once("ReplacingMergeTree(").map(|(_, rest)| rest.split([',', ')']).next().unwrap_or("").trim());
        if !info.engine.ends_with("ReplacingMergeTree") || version.is_none_or(|v| v.trim_matches('`') != self.epoch_column) {
            return Err(bad(format!(
                "has engine {}; an upsert sink needs ReplacingMergeTree({}), whose version makes an update replace the key's row and a re-sent epoch replace itself (CollapsingMergeTree tables cannot promise either)",
                info.engine_full.split(" ORDER BY").next().unwrap_or(&info.engine),
                self.epoch_column
            )));
        }
        let mut sorting: Vec<&str> = info.sorting_key.split(',').map(|k| k.trim().trim_matches('`')).filter(|k| !k.is_empty()).collect();
        let mut key = self.key_names();
        sorting.sort_unstable();
        key.sort_unstable();
        if sorting != key {
            return Err(bad(format!("is sorted by ({}); an upsert sink needs it sorted by the key ({})", info.sorting_key, key.join(", "))));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn column_types_hold_what_they_can() {
        assert!(holds(&DataType::Int64, "Int64"));
        assert!(holds(&DataType::Int64, "Nullable(Int64)"));
        assert!(!holds(&DataType::Int64, "Int32"));
        assert!(!holds(&DataType::Int64, "UInt64"), "negative values");
        assert!(holds(&DataType::UInt32, "Int64"));
        assert!(!holds(&DataType::UInt32, "Int32"));
        assert!(holds(&DataType::Int32, "Float64"));
        assert!(!holds(&DataType::Float64, "Float32"));
        assert!(holds(&DataType::Utf8, "LowCardinality(String)"));
        assert!(!holds(&DataType::Utf8, "Int64"));
        assert!(holds(&DataType::Timestamp(TimeUnit::Microsecond, None), "DateTime"));
        assert!(holds(&DataType::Timestamp(TimeUnit::Microsecond, None), "DateTime64(6)"));
        assert!(!holds(&DataType::Timestamp(TimeUnit::Microsecond, None), "String"));
        assert!(holds(&DataType::Boolean, "UInt8"));
    }

    fn spec_sql(mode: &SinkMode) -> String {
        let view = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("n", DataType::Int64, true),
        ]));
        let spec = TableSpec { database: "default", table: "t", view: &view, mode, epoch_column: "weir_epoch", delete_column: "weir_deleted" };
        spec.create_table_sql(false).unwrap()
    }

    #[test]
    fn created_tables_fit_the_sink() {
        assert_eq!(
            spec_sql(&SinkMode::Upsert { key: vec![0, 1] }),
            "CREATE TABLE IF NOT EXISTS `default`.`t` (`k` String, `ts` DateTime, `n` Nullable(Int64), `weir_epoch` UInt64, `weir_deleted` UInt8) \
             ENGINE = ReplacingMergeTree(`weir_epoch`) ORDER BY (`k`, `ts`)"
        );
        assert_eq!(
            spec_sql(&SinkMode::AppendOnly),
            "CREATE TABLE IF NOT EXISTS `default`.`t` (`k` Nullable(String), `ts` DateTime, `n` Nullable(Int64), `weir_epoch` UInt64) \
             ENGINE = MergeTree ORDER BY tuple()"
        );
    }
}
