//! `connector = 'clickhouse'`: a view's changes written to a ClickHouse table over HTTP (the
//! `clickhouse` crate), as `INSERT ... FORMAT JSONEachRow` of at most `sink.batch.rows` rows.
//!
//! Every row written carries its epoch in an epoch column (`clickhouse.epoch.column`, default
//! `weir_epoch`, a `UInt64` the table must have). That column is how the sink never writes an
//! epoch twice (docs/sinks.md): ClickHouse applies an insert of up to `max_insert_block_size`
//! rows as one block (all or nothing), an epoch's inserts go one after the other, so after a
//! failed attempt the rows of the epoch in the table are a prefix of its rows: the sink counts
//! them and sends the rest.
//!
//! * `type = 'append-only'`: the view's inserted rows (an append-only view: EOWC windows,
//!   sources without aggregation); a retraction fails the sink.
//! * `type = 'upsert'` with `primary_key = 'a,b'`: per key, the newest row, or a delete marker
//!   (`clickhouse.delete.column`, default `weir_deleted`, `UInt8` 1) when the key left the view;
//!   for a `ReplacingMergeTree(<epoch column>)` table ordered by the key, so that `FINAL` reads
//!   (filtering the delete column) equal the view.
//!
//! Epoch numbers restart with the server until checkpoints exist, so the sink numbers the epochs
//! it writes from the largest epoch already in the table: versions only grow.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt8Array, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::LineDelimitedWriter;

use crate::error::ConnectorError;
use crate::clickhouse_table::{TableInfo, TableSpec};
use crate::options::{check_known, invalid, parse_bool, parse_count, without_credentials};
use crate::sink::{DIFF_COLUMN, Sink, SinkMode, inserted_rows, net_inserted_rows, newest_per_key};
use crate::source::SourceOptions;

const CONNECTOR: &str = "ClickHouse";

pub struct ClickHouseSink {
    client: clickhouse::Client,
    url: String,
    /// `database`.`table`, quoted.
    table: String,
    view: SchemaRef,
    mode: SinkMode,
    epoch_column: String,
    delete_column: String,
    /// Added to the engine's epoch numbers (see the module comment).
    epoch_base: u64,
    /// An epoch whose insert failed: before sending it again, look whether it landed.
    unsure: Option<u64>,
    /// Upserts: the first epoch written is the view's whole contents (the sink just joined it),
    /// so keys the table holds that are not in it left the view meanwhile (while Weir was down,
    /// until checkpoints) and get delete markers.
    reconcile: bool,
    /// Rows per insert.
    batch_rows: usize,
    /// The rows of the epoch being written, kept for its retries: they must be the same rows in
    /// the same order for the count of those already written to say which are left.
    prepared: Option<(u64, RecordBatch)>,
}

/// ClickHouse applies an insert of up to this many rows (`max_insert_block_size`'s default) as
/// one block.
const MAX_BATCH_ROWS: usize = 1_048_576;

impl std::fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSink").field("url", &self.url).field("table", &self.table).field("mode", &self.mode).finish()
    }
}

/// Backquoted ClickHouse identifier.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// A ClickHouse string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn unavailable(url: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable { connector: CONNECTOR, reason: format!("{}: {e}", without_credentials(url)) }
}

impl ClickHouseSink {
    /// A sink of a view with columns `view` (without the diff column); `append_only` says
    /// whether the view only ever inserts. Checks the options, the server and the table.
    pub async fn new(view: SchemaRef, options: &SourceOptions, append_only: bool) -> Result<Self, ConnectorError> {
        check_known(options, "clickhouse", |k| {
            Ok(matches!(
                k,
                "clickhouse.url"
                    | "clickhouse.user"
                    | "clickhouse.password"
                    | "clickhouse.database"
                    | "clickhouse.table"
                    | "clickhouse.epoch.column"
                    | "clickhouse.delete.column"
                    | "clickhouse.create_table"
                    | "type"
                    | "primary_key"
                    | "sink.batch.rows"
                    | "sink.max_pending_rows"
            ))
        })?;
        let required = |k: &str| options.get(k).cloned().ok_or_else(|| invalid(k, "is required"));
        let url = required("clickhouse.url")?;
        let table_name = required("clickhouse.table")?;
        let database = options.get("clickhouse.database").cloned().unwrap_or_else(|| "default".into());
        let epoch_column = options.get("clickhouse.epoch.column").cloned().unwrap_or_else(|| "weir_epoch".into());
        let delete_column = options.get("clickhouse.delete.column").cloned().unwrap_or_else(|| "weir_deleted".into());
        let mode = SinkMode::from_options(&view, options, append_only)?;
        let batch_rows = parse_count(options, "sink.batch.rows", MAX_BATCH_ROWS, MAX_BATCH_ROWS)?;
        let create_table = parse_bool(options, "clickhouse.create_table", false)?;
        let mut client = clickhouse::Client::default()
            .with_url(&url)
            .with_user(options.get("clickhouse.user").cloned().unwrap_or_else(|| "default".into()))
            .with_database(&database);
        if let Some(password) = options.get("clickhouse.password") {
            client = client.with_password(password);
        }
        let mut sink = ClickHouseSink {
            client,
            url,
            table: format!("{}.{}", quote(&database), quote(&table_name)),
            view,
            mode,
            epoch_column,
            delete_column,
            epoch_base: 0,
            unsure: None,
            reconcile: false,
            batch_rows,
            prepared: None,
        };
        sink.check_table(&database, &table_name, create_table).await?;
        sink.epoch_base = sink.last_delivered_epoch().await?.unwrap_or(0);
        // A table this sink (or an earlier run of it) wrote to: the first epoch, the view's
        // whole contents, is written as its difference from what the table holds.
        sink.reconcile = sink.epoch_base > 0;
        Ok(sink)
    }

    async fn text(&self, sql: &str) -> Result<String, ConnectorError> {
        let mut cursor = self.client.query(sql).fetch_bytes("TabSeparated").map_err(|e| unavailable(&self.url, e))?;
        let bytes = cursor.collect().await.map_err(|e| unavailable(&self.url, e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Rows of a query's JSONEachRow answer.
    async fn json_rows<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, ConnectorError> {
        let mut cursor = self.client.query(sql).fetch_bytes("JSONEachRow").map_err(|e| unavailable(&self.url, e))?;
        let bytes = cursor.collect().await.map_err(|e| unavailable(&self.url, e))?;
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(|e| unavailable(&self.url, format!("unexpected answer to {sql}: {e}"))))
            .collect()
    }

    /// The table as ClickHouse describes it, if it exists.
    async fn table_info(&self, database: &str, table: &str) -> Result<Option<TableInfo>, ConnectorError> {
        #[derive(serde::Deserialize)]
        struct Table {
            engine: String,
            engine_full: String,
            sorting_key: String,
        }
        #[derive(serde::Deserialize)]
        struct Column {
            name: String,
            r#type: String,
        }
        let filter = format!("database = {} AND name = {}", literal(database), literal(table));
        let tables: Vec<Table> = self.json_rows(&format!("SELECT engine, engine_full, sorting_key FROM system.tables WHERE {filter}")).await?;
        let Some(Table { engine, engine_full, sorting_key }) = tables.into_iter().next() else { return Ok(None) };
        let filter = format!("database = {} AND table = {}", literal(database), literal(table));
        let columns: Vec<Column> = self.json_rows(&format!("SELECT name, type FROM system.columns WHERE {filter}")).await?;
        let columns = columns.into_iter().map(|c| (c.name, c.r#type)).collect();
        Ok(Some(TableInfo { columns, engine, engine_full, sorting_key }))
    }

    /// The table must fit the view and the sink's mode (clickhouse_table); with
    /// `clickhouse.create_table = 'true'` a missing one is created.
    async fn check_table(&self, database: &str, table: &str, create: bool) -> Result<(), ConnectorError> {
        let spec = TableSpec {
            database,
            table,
            view: &self.view,
            mode: &self.mode,
            epoch_column: &self.epoch_column,
            delete_column: &self.delete_column,
        };
        let info = match self.table_info(database, table).await? {
            Some(info) => info,
            None if create => {
                // DateTime64 exists from ClickHouse 20.1 on.
                let version = self.text("SELECT version()").await?;
                let major: u32 = version.trim().split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
                let sql = spec.create_table_sql(major >= 20)?;
                self.client.query(&sql).execute().await.map_err(|e| ConnectorError::Rejected { reason: format!("{CONNECTOR}: {sql}: {e}") })?;
                self.table_info(database, table).await?.ok_or_else(|| invalid("clickhouse.table", format!("table {database}.{table} was not created")))?
            }
            None => {
                return Err(invalid(
                    "clickhouse.table",
                    format!("ClickHouse has no table {database}.{table} (create it, or set clickhouse.create_table = 'true')"),
                ));
            }
        };
        spec.check(&info)
    }

    /// The rows to write for one epoch, in the view's columns plus the epoch (and delete) column.
    fn rows(&self, epoch: u64, changes: &[RecordBatch]) -> Result<Option<RecordBatch>, ConnectorError> {
        let mut pieces = Vec::new();
        let mut deleted: Vec<u8> = Vec::new();
        match &self.mode {
            // Joining again, the first epoch starts with the table's rows as retractions.
            SinkMode::AppendOnly if self.reconcile => pieces.push(net_inserted_rows(&self.view, changes)?),
            SinkMode::AppendOnly => pieces.push(inserted_rows(&self.view, changes)?),
            SinkMode::Upsert { key } => {
                let (rows, gone) = newest_per_key(&self.view, key, changes)?;
                deleted.extend(std::iter::repeat_n(0, rows.num_rows()));
                deleted.extend(std::iter::repeat_n(1, gone.num_rows()));
                pieces.push(rows);
                pieces.push(gone);
            }
        }
        let total: usize = pieces.iter().map(|p| p.num_rows()).sum();
        if total == 0 {
            return Ok(None);
        }
        let rows = datafusion::arrow::compute::concat_batches(&self.view, &pieces)?;
        // Timestamps are sent with an explicit UTC offset (read with best_effort parsing), so
        // the server's time zone does not shift them.
        let mut fields: Vec<Field> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (field, column) in self.view.fields().iter().zip(rows.columns()) {
            let column = match field.data_type() {
                DataType::Timestamp(_, None) => cast(column, &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())))?,
                _ => column.clone(),
            };
            fields.push(Field::new(field.name(), column.data_type().clone(), true));
            columns.push(column);
        }
        fields.push(Field::new(&self.epoch_column, DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from_value(epoch, total)));
        if matches!(self.mode, SinkMode::Upsert { .. }) {
            fields.push(Field::new(&self.delete_column, DataType::UInt8, false));
            columns.push(Arc::new(UInt8Array::from(deleted)));
        }
        Ok(Some(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?))
    }

    /// The rows the table holds (for upserts its live rows: `FINAL`, without deleted keys), as
    /// retractions: prepended to the first epoch's changes, a row the view still has nets to
    /// nothing, so only what changed while the sink was away is written (for upserts a key the
    /// view lost gets a delete marker).
    async fn table_rows_as_retractions(&self) -> Result<RecordBatch, ConnectorError> {
        let columns: Vec<String> = self.view.fields().iter().map(|f| quote(f.name())).collect();
        let sql = match self.mode {
            SinkMode::Upsert { .. } => format!("SELECT {} FROM {} FINAL WHERE {} = 0", columns.join(", "), self.table, quote(&self.delete_column)),
            SinkMode::AppendOnly => format!("SELECT {} FROM {}", columns.join(", "), self.table),
        };
        let mut cursor = self.client.query(&sql).fetch_bytes("JSONEachRow").map_err(|e| unavailable(&self.url, e))?;
        let bytes = cursor.collect().await.map_err(|e| unavailable(&self.url, e))?;
        // Booleans are stored as UInt8 (0/1 in JSON); everything else reads back as written.
        let stored = |t: &DataType| if *t == DataType::Boolean { DataType::UInt8 } else { t.clone() };
        let fields: Vec<Field> = self.view.fields().iter().map(|f| Field::new(f.name(), stored(f.data_type()), true)).collect();
        let schema = Arc::new(Schema::new(fields));
        let mut decoder = datafusion::arrow::json::ReaderBuilder::new(schema.clone()).build_decoder()?;
        let mut batches = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let read = decoder.decode(&bytes[offset..])?;
            offset += read;
            if let Some(batch) = decoder.flush()? {
                batches.push(batch);
            } else if read == 0 {
                break;
            }
        }
        let rows = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
        let mut fields: Vec<Field> = self.view.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
        let mut columns = rows.columns().iter().zip(self.view.fields()).map(|(c, f)| cast(c, f.data_type())).collect::<Result<Vec<_>, _>>()?;
        fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
        columns.push(Arc::new(datafusion::arrow::array::Int64Array::from_value(-1, rows.num_rows())));
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
    }

    /// How many rows of `epoch` the table holds.
    async fn rows_written(&self, epoch: u64) -> Result<usize, ConnectorError> {
        let count = self.text(&format!("SELECT count() FROM {} WHERE {} = {epoch}", self.table, quote(&self.epoch_column))).await?;
        count.trim().parse::<usize>().map_err(|_| unavailable(&self.url, format!("count() answered {count:?}")))
    }
}

#[async_trait]
impl Sink for ClickHouseSink {
    async fn write_epoch(&mut self, epoch: u64, changes: &[RecordBatch]) -> Result<u64, ConnectorError> {
        let epoch = self.epoch_base + epoch;
        let rows = match self.prepared.take() {
            Some((e, rows)) if e == epoch => rows,
            _ => {
                let reconciled;
                let changes = if self.reconcile {
                    let mut all = vec![self.table_rows_as_retractions().await?];
                    all.extend(changes.iter().cloned());
                    reconciled = all;
                    &reconciled[..]
                } else {
                    changes
                };
                match self.rows(epoch, changes)? {
                    Some(rows) => rows,
                    None => {
                        self.reconcile = false;
                        return Ok(0);
                    }
                }
            }
        };
        // After a failed insert, the epoch's rows already in the table are a prefix of `rows`
        // (inserts are atomic and sent in order): skip them.
        let mut done = match self.unsure {
            Some(e) if e == epoch => self.rows_written(epoch).await?.min(rows.num_rows()),
            _ => 0,
        };
        let columns: Vec<String> = rows.schema().fields().iter().map(|f| quote(f.name())).collect();
        let sql = format!("INSERT INTO {} ({}) FORMAT JSONEachRow", self.table, columns.join(", "));
        // Inserts are counted once they land, those of an earlier attempt too: the rows already
        // in the table came in whole inserts of `batch_rows`.
        let mut sent = done.div_ceil(self.batch_rows.max(1)) as u64;
        while done < rows.num_rows() {
            let batch = rows.slice(done, self.batch_rows.min(rows.num_rows() - done));
            let mut body = Vec::new();
            {
                let mut writer = LineDelimitedWriter::new(&mut body);
                writer.write(&batch)?;
                writer.finish()?;
            }
            self.unsure = Some(epoch);
            self.prepared = Some((epoch, rows.clone()));
            let mut insert = self.client.insert_formatted_with(sql.clone()).with_setting("date_time_input_format", "best_effort");
            insert.send(Bytes::from(body)).await.map_err(|e| unavailable(&self.url, e))?;
            insert.end().await.map_err(|e| unavailable(&self.url, e))?;
            done += batch.num_rows();
            sent += 1;
        }
        self.unsure = None;
        self.prepared = None;
        self.reconcile = false;
        Ok(sent)
    }

    async fn last_delivered_epoch(&mut self) -> Result<Option<u64>, ConnectorError> {
        let max = self.text(&format!("SELECT max({}) FROM {}", quote(&self.epoch_column), self.table)).await?;
        Ok(max.trim().parse::<u64>().ok().filter(|e| *e > 0))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::Int64Type;

    use super::*;

    fn changes(names: &[&str], values: &[i64], diffs: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new(DIFF_COLUMN, DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(names.to_vec())),
                Arc::new(Int64Array::from(values.to_vec())),
                Arc::new(Int64Array::from(diffs.to_vec())),
            ],
        )
        .unwrap()
    }

    fn sink(mode: SinkMode) -> ClickHouseSink {
        let view = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("v", DataType::Int64, true)]));
        ClickHouseSink {
            client: clickhouse::Client::default(),
            url: String::new(),
            table: "`t`".into(),
            view,
            mode,
            epoch_column: "weir_epoch".into(),
            delete_column: "weir_deleted".into(),
            epoch_base: 0,
            unsure: None,
            reconcile: false,
            batch_rows: MAX_BATCH_ROWS,
            prepared: None,
        }
    }

    #[test]
    fn upserts_keep_the_newest_row_per_key_and_mark_keys_that_left() {
        let s = sink(SinkMode::Upsert { key: vec![0] });
        // a: 1 -> 2 -> 3 within the epoch; b: retracted; c: new; d: retracted and put back.
        let epoch = [
            changes(&["a", "a", "b", "c"], &[1, 2, 5, 7], &[-1, 1, -1, 1]),
            changes(&["a", "a", "d", "d"], &[2, 3, 4, 4], &[-1, 1, -1, 1]),
        ];
        let rows = s.rows(9, &epoch).unwrap().unwrap();
        let mut got: Vec<(String, i64, u64, u8)> = (0..rows.num_rows())
            .map(|i| {
                (
                    rows.column(0).as_string::<i32>().value(i).to_string(),
                    rows.column(1).as_primitive::<Int64Type>().value(i),
                    rows.column(2).as_primitive::<datafusion::arrow::datatypes::UInt64Type>().value(i),
                    rows.column(3).as_primitive::<datafusion::arrow::datatypes::UInt8Type>().value(i),
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, [("a".into(), 3, 9, 0), ("b".into(), 5, 9, 1), ("c".into(), 7, 9, 0)], "d did not change");
    }

    #[test]
    fn append_only_repeats_multiplicities_and_refuses_retractions() {
        let s = sink(SinkMode::AppendOnly);
        let rows = s.rows(3, &[changes(&["a", "b"], &[1, 2], &[2, 1])]).unwrap().unwrap();
        assert_eq!(rows.num_rows(), 3);
        assert_eq!(rows.num_columns(), 3, "view columns and the epoch");
        assert!(s.rows(3, &[changes(&["a"], &[1], &[-1])]).is_err());
        assert!(s.rows(3, &[changes(&[], &[], &[])]).unwrap().is_none(), "an empty epoch writes nothing");
    }
}
