//! `connector = 'questdb'`: a view's changes written to a QuestDB table with the InfluxDB line
//! protocol (ILP), through the `questdb-rs` client, over HTTP (the default: every request is
//! acknowledged, and one request is one transaction) or TCP (no acknowledgement).
//!
//! * `type = 'append-only'`: each inserted row becomes one ILP row. A re-sent epoch (after a
//!   failed or unanswered request) replaces itself only when the table deduplicates
//!   (`DEDUP UPSERT KEYS(<designated timestamp>, ...)`); otherwise the one request whose answer
//!   was lost may be written twice (docs/sinks.md).
//! * `type = 'upsert'` with `primary_key`: per key whose row changed, its row now, or the key's
//!   old row with the delete column (`questdb.delete.column`, default `weir_deleted`) true. It
//!   needs a table created with `DEDUP UPSERT KEYS` on the key, which must hold the designated
//!   timestamp column: QuestDB then replaces a key's row in place.
//!
//! Columns map to ILP by type: text to STRING (or SYMBOL when named in `questdb.symbols`),
//! integers to LONG, floating point and decimals to DOUBLE, booleans to BOOLEAN, timestamps and
//! dates to TIMESTAMP; `questdb.designated_timestamp` names the column that becomes the row's
//! timestamp (else the server's clock). NULLs are left out of the row, which QuestDB reads as
//! NULL. An epoch is sent in requests of at most `sink.batch.rows` rows; after a failure the
//! sink resumes at the first request not acknowledged.

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, TimeUnit, TimestampNanosecondType};
use datafusion::arrow::util::display::FormatOptions;
use questdb::ingress::{Buffer, ColumnName, Sender, TableName, TimestampMicros, TimestampNanos};
use questdb::{Error as IlpError, ErrorCode};

use crate::error::ConnectorError;
use crate::options::{check_known, invalid, parse_count};
use crate::sink::{Sink, SinkMode, inserted_rows, newest_per_key};
use crate::source::SourceOptions;

const CONNECTOR: &str = "QuestDB";

/// Options passed to the ILP client's configuration unchanged (`questdb.<key>`): credentials,
/// TLS and timeouts, named as in QuestDB's client documentation.
const CLIENT_KEYS: &[&str] = &[
    "username",
    "password",
    "token",
    "token_x",
    "token_y",
    "auth_timeout",
    "tls_verify",
    "tls_ca",
    "tls_roots",
    "tls_roots_password",
    "request_timeout",
    "request_min_throughput",
    "retry_timeout",
    "protocol_version",
    "max_buf_size",
];

const DEFAULT_BATCH_ROWS: usize = 100_000;

/// How a view column is written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ColumnKind {
    Symbol,
    Text,
    Integer,
    Float,
    Boolean,
    Timestamp,
}

impl ColumnKind {
    fn of(data_type: &DataType, symbol: bool) -> Option<Self> {
        use DataType::*;
        Some(match data_type {
            Utf8 | LargeUtf8 | Utf8View if symbol => ColumnKind::Symbol,
            Utf8 | LargeUtf8 | Utf8View => ColumnKind::Text,
            Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => ColumnKind::Integer,
            Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => ColumnKind::Float,
            Boolean => ColumnKind::Boolean,
            Timestamp(..) | Date32 | Date64 => ColumnKind::Timestamp,
            _ => return None,
        })
    }

    /// The Arrow type a column is cast to before writing.
    fn arrow_type(self) -> DataType {
        match self {
            ColumnKind::Symbol | ColumnKind::Text => DataType::Utf8,
            ColumnKind::Integer => DataType::Int64,
            ColumnKind::Float => DataType::Float64,
            ColumnKind::Boolean => DataType::Boolean,
            ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, None),
        }
    }
}

pub struct QuestDbSink {
    /// The ILP client configuration string (holds credentials: never printed).
    conf: String,
    addr: String,
    http: bool,
    /// Connected lazily, and again after a transport error.
    sender: Option<Sender>,
    table: String,
    view: SchemaRef,
    kinds: Vec<ColumnKind>,
    designated: Option<usize>,
    mode: SinkMode,
    delete_column: String,
    batch_rows: usize,
    /// The epoch being written and how many of its rows are acknowledged: a retry resumes there.
    progress: Option<(u64, usize)>,
    /// Rows not written because their designated timestamp was NULL.
    skipped_rows: u64,
}

impl std::fmt::Debug for QuestDbSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuestDbSink").field("addr", &self.addr).field("table", &self.table).field("mode", &self.mode).finish()
    }
}

/// Escapes a value of the client's `key=value;` configuration string.
fn conf_value(value: &str) -> String {
    value.replace(';', ";;")
}

fn unavailable(addr: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Unavailable { connector: CONNECTOR, reason: format!("{addr}: {e}") }
}

/// What the client could not send, and what the server refused, is retried with backoff (the
/// sink keeps its place, and its status shows the error: a refused row may be accepted once the
/// table is altered); only rows the client itself finds malformed fail the sink.
fn ilp_error(addr: &str, e: IlpError) -> ConnectorError {
    match e.code() {
        ErrorCode::InvalidApiCall | ErrorCode::InvalidName | ErrorCode::InvalidUtf8 | ErrorCode::InvalidTimestamp | ErrorCode::ConfigError => {
            ConnectorError::Rejected { reason: format!("{CONNECTOR} {addr}: {}", e.msg()) }
        }
        ErrorCode::HttpNotSupported => unavailable(addr, "the server does not accept ILP over HTTP (is it QuestDB's HTTP port, 9000?)"),
        _ => unavailable(addr, e.msg()),
    }
}

impl QuestDbSink {
    /// A sink of a view with columns `view`; `append_only` says whether the view only ever
    /// inserts. Checks the options and connects (over HTTP, asking the server its settings).
    pub async fn new(view: SchemaRef, options: &SourceOptions, append_only: bool) -> Result<Self, ConnectorError> {
        check_known(options, "questdb", |k| {
            Ok(matches!(
                k,
                "questdb.addr"
                    | "questdb.protocol"
                    | "questdb.table"
                    | "questdb.designated_timestamp"
                    | "questdb.symbols"
                    | "questdb.delete.column"
                    | "type"
                    | "primary_key"
                    | "sink.batch.rows"
                    | "sink.max_pending_rows"
            ) || k.strip_prefix("questdb.").is_some_and(|key| CLIENT_KEYS.contains(&key)))
        })?;
        let required = |k: &str| options.get(k).cloned().ok_or_else(|| invalid(k, "is required"));
        let addr = required("questdb.addr")?;
        let table = required("questdb.table")?;
        TableName::new(&table).map_err(|e| invalid("questdb.table", e.msg()))?;
        let protocol = options.get("questdb.protocol").map(|p| p.to_ascii_lowercase()).unwrap_or_else(|| "http".into());
        if !matches!(protocol.as_str(), "http" | "https" | "tcp" | "tcps") {
            return Err(invalid("questdb.protocol", format!("\"{protocol}\" is not 'http', 'https', 'tcp' or 'tcps'")));
        }
        let mode = SinkMode::from_options(&view, options, append_only)?;
        let symbols: Vec<&str> = options.get("questdb.symbols").map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()).unwrap_or_default();
        for s in &symbols {
            let Ok(field) = view.field_with_name(s) else {
                return Err(invalid("questdb.symbols", format!("the view has no column \"{s}\"")));
            };
            if !matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                return Err(invalid("questdb.symbols", format!("column \"{s}\" is {}, and only text columns can be symbols", field.data_type())));
            }
        }
        let mut kinds = Vec::with_capacity(view.fields().len());
        for field in view.fields() {
            ColumnName::new(field.name()).map_err(|e| invalid("questdb.table", format!("column \"{}\": {}", field.name(), e.msg())))?;
            let kind = ColumnKind::of(field.data_type(), symbols.contains(&field.name().as_str())).ok_or_else(|| {
                invalid("questdb.table", format!("column \"{}\" is {}, which the line protocol cannot carry (text, numbers, booleans and timestamps can)", field.name(), field.data_type()))
            })?;
            kinds.push(kind);
        }
        let designated = match options.get("questdb.designated_timestamp") {
            None => None,
            Some(name) => {
                let i = view.index_of(name).map_err(|_| invalid("questdb.designated_timestamp", format!("the view has no column \"{name}\"")))?;
                if kinds[i] != ColumnKind::Timestamp {
                    return Err(invalid("questdb.designated_timestamp", format!("column \"{name}\" is not a timestamp")));
                }
                Some(i)
            }
        };
        if let SinkMode::Upsert { key } = &mode
            && designated.is_none_or(|d| !key.contains(&d))
        {
            return Err(invalid(
                "primary_key",
                "an upsert sink relies on QuestDB's DEDUP UPSERT KEYS, which must include the designated timestamp: set questdb.designated_timestamp to a column of primary_key",
            ));
        }
        let delete_column = options.get("questdb.delete.column").cloned().unwrap_or_else(|| "weir_deleted".into());
        ColumnName::new(&delete_column).map_err(|e| invalid("questdb.delete.column", e.msg()))?;
        let batch_rows = parse_count(options, "sink.batch.rows", DEFAULT_BATCH_ROWS, 100_000_000)?;

        let mut conf = format!("{protocol}::addr={};", conf_value(&addr));
        for key in CLIENT_KEYS {
            if let Some(value) = options.get(&format!("questdb.{key}")) {
                conf.push_str(&format!("{key}={};", conf_value(value)));
            }
        }
        if protocol.starts_with("http") && !options.contains_key("questdb.retry_timeout") {
            // Weir retries with its own backoff and shows it in the sink's status.
            conf.push_str("retry_timeout=0;");
        }
        let mut sink = QuestDbSink {
            conf,
            addr,
            http: protocol.starts_with("http"),
            sender: None,
            table,
            view,
            kinds,
            designated,
            mode,
            delete_column,
            batch_rows,
            progress: None,
            skipped_rows: 0,
        };
        sink.connect().await?;
        Ok(sink)
    }

    /// Builds the client (which connects: a TCP connection, or HTTP's settings request).
    async fn connect(&mut self) -> Result<(), ConnectorError> {
        if self.sender.is_some() {
            return Ok(());
        }
        let conf = self.conf.clone();
        let sender = tokio::task::spawn_blocking(move || Sender::from_conf(conf))
            .await
            .map_err(|e| unavailable(&self.addr, e))?
            .map_err(|e| match e.code() {
                // The configuration string holds secrets: say which part is wrong, not all of it.
                ErrorCode::ConfigError => invalid("questdb", e.msg().to_string()),
                _ => ilp_error(&self.addr, e),
            })?;
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one buffer; the client is dropped after a transport error and built again.
    async fn send(&mut self, buffer: Buffer) -> Result<(), ConnectorError> {
        self.connect().await?;
        let Some(mut sender) = self.sender.take() else { return Err(unavailable(&self.addr, "not connected")) };
        let http = self.http;
        let (sender, result) = tokio::task::spawn_blocking(move || {
            let result = if http { sender.flush_and_keep_with_flags(&buffer, true) } else { sender.flush_and_keep(&buffer) };
            (sender, result)
        })
        .await
        .map_err(|e| unavailable(&self.addr, e))?;
        match result {
            Ok(()) => {
                self.sender = Some(sender);
                Ok(())
            }
            Err(e) => {
                if self.http {
                    // An HTTP client outlives a failed request; a TCP connection does not.
                    self.sender = Some(sender);
                }
                Err(ilp_error(&self.addr, e))
            }
        }
    }

    /// One epoch as rows in the view's columns, and per row whether it marks a deleted key.
    fn epoch_rows(&self, changes: &[RecordBatch]) -> Result<(RecordBatch, Option<Vec<bool>>), ConnectorError> {
        match &self.mode {
            SinkMode::AppendOnly => Ok((inserted_rows(&self.view, changes)?, None)),
            SinkMode::Upsert { key } => {
                let (rows, gone) = newest_per_key(&self.view, key, changes)?;
                let mut deleted = vec![false; rows.num_rows()];
                deleted.resize(rows.num_rows() + gone.num_rows(), true);
                Ok((datafusion::arrow::compute::concat_batches(&self.view, &[rows, gone])?, Some(deleted)))
            }
        }
    }

    /// ILP rows for `rows` (`deleted` per row for upserts), in a new buffer.
    fn buffer(&mut self, rows: &RecordBatch, deleted: Option<&[bool]>) -> Result<Buffer, ConnectorError> {
        let rejected = |e: IlpError| ConnectorError::Rejected { reason: format!("{CONNECTOR}: {}", e.msg()) };
        let cast_options = CastOptions { safe: false, format_options: FormatOptions::default() };
        let columns: Vec<ArrayRef> = rows
            .columns()
            .iter()
            .zip(&self.kinds)
            .map(|(c, kind)| cast_with_options(c, &kind.arrow_type(), &cast_options))
            .collect::<Result<_, _>>()
            .map_err(|e| ConnectorError::Rejected { reason: format!("{CONNECTOR}: a value does not fit its column: {e}") })?;
        let names: Vec<ColumnName> = self.view.fields().iter().map(|f| ColumnName::new_unchecked(f.name())).collect();
        let table = TableName::new_unchecked(&self.table);
        let delete_column = ColumnName::new_unchecked(&self.delete_column);
        let mut buffer = match &self.sender {
            Some(sender) => sender.new_buffer(),
            None => Buffer::new(questdb::ingress::ProtocolVersion::V1),
        };
        let mut skipped = 0u64;
        for row in 0..rows.num_rows() {
            let at = match self.designated {
                Some(d) if columns[d].is_null(row) => {
                    skipped += 1;
                    continue;
                }
                Some(d) => Some(columns[d].as_primitive::<TimestampNanosecondType>().value(row)),
                None => None,
            };
            buffer.table(table).map_err(rejected)?;
            // ILP puts symbols before the other columns.
            for (i, column) in columns.iter().enumerate() {
                if self.kinds[i] == ColumnKind::Symbol && column.is_valid(row) {
                    buffer.symbol(names[i], column.as_string::<i32>().value(row)).map_err(rejected)?;
                }
            }
            for (i, column) in columns.iter().enumerate() {
                if Some(i) == self.designated || column.is_null(row) {
                    continue;
                }
                let name = names[i];
                match self.kinds[i] {
                    ColumnKind::Symbol => {}
                    ColumnKind::Text => buffer.column_str(name, column.as_string::<i32>().value(row)).map(drop).map_err(rejected)?,
                    ColumnKind::Integer => buffer.column_i64(name, column.as_primitive::<Int64Type>().value(row)).map(drop).map_err(rejected)?,
                    ColumnKind::Float => buffer.column_f64(name, column.as_primitive::<Float64Type>().value(row)).map(drop).map_err(rejected)?,
                    ColumnKind::Boolean => buffer.column_bool(name, column.as_boolean().value(row)).map(drop).map_err(rejected)?,
                    ColumnKind::Timestamp => {
                        let nanos = column.as_primitive::<TimestampNanosecondType>().value(row);
                        buffer.column_ts(name, TimestampMicros::new(nanos.div_euclid(1000))).map(drop).map_err(rejected)?
                    }
                }
            }
            if let Some(deleted) = deleted {
                buffer.column_bool(delete_column, deleted[row]).map_err(rejected)?;
            }
            match at {
                Some(nanos) => buffer.at(TimestampNanos::new(nanos)).map_err(rejected)?,
                None => buffer.at_now().map_err(rejected)?,
            }
        }
        if skipped > 0 {
            self.skipped_rows += skipped;
            tracing::warn!(table = %self.table, rows = skipped, total = self.skipped_rows, "QuestDB sink: rows with a NULL designated timestamp were not written");
        }
        Ok(buffer)
    }
}

#[async_trait]
impl Sink for QuestDbSink {
    async fn write_epoch(&mut self, epoch: u64, changes: &[RecordBatch]) -> Result<u64, ConnectorError> {
        let (rows, deleted) = self.epoch_rows(changes)?;
        let mut sent = 0;
        let mut done = match self.progress {
            Some((e, done)) if e == epoch => done,
            _ => 0,
        };
        while done < rows.num_rows() {
            let len = self.batch_rows.min(rows.num_rows() - done);
            let buffer = self.buffer(&rows.slice(done, len), deleted.as_deref().map(|d| &d[done..done + len]))?;
            self.progress = Some((epoch, done));
            if buffer.row_count() > 0 {
                self.send(buffer).await?;
                sent += 1;
            }
            done += len;
        }
        self.progress = None;
        Ok(sent)
    }

    /// ILP cannot read anything back.
    async fn last_delivered_epoch(&mut self) -> Result<Option<u64>, ConnectorError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::sink::DIFF_COLUMN;

    fn view() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("stream", DataType::Utf8, true),
            Field::new("note", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("avg", DataType::Float64, true),
            Field::new("hot", DataType::Boolean, true),
        ]))
    }

    fn sink(mode: SinkMode) -> QuestDbSink {
        let view = view();
        let kinds = view.fields().iter().map(|f| ColumnKind::of(f.data_type(), f.name() == "stream").unwrap()).collect();
        QuestDbSink {
            conf: String::new(),
            addr: "test".into(),
            http: true,
            sender: None,
            table: "chat".into(),
            view,
            kinds,
            designated: Some(0),
            mode,
            delete_column: "weir_deleted".into(),
            batch_rows: 2,
            progress: None,
            skipped_rows: 0,
        }
    }

    /// A view row: ts (µs), stream, note, n, avg, hot.
    type Row<'a> = (i64, &'a str, Option<&'a str>, i64, f64, bool);

    fn changes(rows: &[Row], diff: i64) -> RecordBatch {
        let mut fields: Vec<Field> = view().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            vec![
                Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
                Arc::new(BooleanArray::from(rows.iter().map(|r| r.5).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(vec![diff; rows.len()])),
            ],
        )
        .unwrap()
    }

    fn lines(buffer: &Buffer) -> String {
        String::from_utf8(buffer.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn rows_become_ilp_lines_with_symbols_first_and_the_designated_timestamp_last() {
        let mut s = sink(SinkMode::AppendOnly);
        let batch = changes(&[(1_000_000, "a b", Some("say \"hi\""), 3, 1.5, true), (2_000_000, "c", None, -4, 0.25, false)], 1);
        let (rows, deleted) = s.epoch_rows(&[batch]).unwrap();
        assert!(deleted.is_none());
        let text = lines(&s.buffer(&rows, None).unwrap());
        assert_eq!(
            text,
            "chat,stream=a\\ b note=\"say \\\"hi\\\"\",n=3i,avg=1.5,hot=t 1000000000\nchat,stream=c n=-4i,avg=0.25,hot=f 2000000000\n"
        );
    }

    #[test]
    fn upserts_mark_keys_that_left_the_view() {
        let mut s = sink(SinkMode::Upsert { key: vec![0, 1] });
        let epoch = [changes(&[(1_000_000, "a", None, 1, 1.0, true)], -1), changes(&[(2_000_000, "b", None, 2, 2.0, true)], 1)];
        let (rows, deleted) = s.epoch_rows(&epoch).unwrap();
        let text = lines(&s.buffer(&rows, deleted.as_deref()).unwrap());
        assert_eq!(text, "chat,stream=b n=2i,avg=2.0,hot=t,weir_deleted=f 2000000000\nchat,stream=a n=1i,avg=1.0,hot=t,weir_deleted=t 1000000000\n");
    }
}
