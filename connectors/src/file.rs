//! `connector = 'file'`: Parquet, CSV or JSON files from a local directory, a glob or an
//! object store (`s3://bucket/prefix/`).
//!
//! The files are listed when the source starts and read one after another in name order; each
//! file is a partition (its path is the partition's name in [`SourcePosition`]s) with its own
//! watermark. Because a file is only opened when the previous one has ended, a partition that
//! has not started yet must not hold the source's watermark back: the source says so with
//! [`Source::partitions_in_sequence`]. Files named in event-time order (the usual
//! `events-0001.parquet`, or one file per hour) therefore close windows as they are read, which
//! keeps a backfill's state small.
//!
//! Decoding runs on a blocking thread per reader, one file at a time, ahead of the engine by a
//! few batches (a bounded channel): Parquet straight to Arrow with only the declared columns
//! decoded (projection pushdown), CSV and JSON one line per record. A line that does not decode
//! into the declared types is skipped and reported ([`SourceEvent::BadRecord`]); a file that
//! cannot be decoded at all is reported and skipped as a whole, so one bad file never stops the
//! source. A file that cannot be fetched is retried (the read fails and the engine calls again).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use object_store::path::Path as ObjectPath;
use tokio::sync::mpsc;

use crate::convert::to_declared;
use crate::error::ConnectorError;
use crate::json::JsonDecoder;
use crate::records::{DecodedRecords, decode_lenient, payload_prefix};
use crate::options::{check_known, invalid, parse_count};
use crate::source::{Source, SourceEvent, SourceFormat, SourceOptions, SourcePosition};

/// Rows per batch handed to the engine.
const DEFAULT_BATCH_ROWS: usize = 8192;
/// Batches decoded ahead of the engine.
const READ_AHEAD: usize = 4;

/// How the files are encoded (`FORMAT PLAIN ENCODE ...`).
#[derive(Debug, Clone, PartialEq)]
pub enum FileEncoding {
    Parquet,
    /// `ENCODE CSV (without_header = 'true', delimiter = ';')`: with a header line (columns
    /// matched by name) unless `without_header`, then by position.
    Csv { header: bool, delimiter: u8 },
    /// Newline-delimited JSON objects; keys matched to column names, others ignored; the
    /// named `json`/`jsonb` columns take a field's JSON text.
    Json { json_columns: Vec<String> },
}

impl FileEncoding {
    fn from_format(format: Option<&SourceFormat>) -> Result<Self, ConnectorError> {
        let Some(format) = format else {
            return Err(invalid("format", "a file source needs FORMAT PLAIN ENCODE PARQUET | CSV | JSON"));
        };
        if !format.format.eq_ignore_ascii_case("plain") {
            return Err(invalid("format", format!("unknown format '{}' for files (supported: PLAIN)", format.format)));
        }
        let known = |allowed: &[&str]| -> Result<(), ConnectorError> {
            match format.options.keys().find(|k| !allowed.contains(&k.as_str())) {
                Some(k) => Err(invalid(k, format!("unknown option for ENCODE {}", format.encode.to_ascii_uppercase()))),
                None => Ok(()),
            }
        };
        match format.encode.to_ascii_lowercase().as_str() {
            "parquet" => {
                known(&[])?;
                Ok(FileEncoding::Parquet)
            }
            "json" => {
                known(&[])?;
                Ok(FileEncoding::Json { json_columns: format.json_columns.clone() })
            }
            "csv" => {
                known(&["without_header", "delimiter"])?;
                let header = match format.options.get("without_header").map(|v| v.to_ascii_lowercase()) {
                    None => true,
                    Some(v) if v == "true" => false,
                    Some(v) if v == "false" => true,
                    Some(v) => return Err(invalid("without_header", format!("\"{v}\" is not 'true' or 'false'"))),
                };
                let delimiter = match format.options.get("delimiter").map(|d| d.as_bytes()) {
                    None => b',',
                    Some([d]) => *d,
                    Some(_) => return Err(invalid("delimiter", "must be a single ASCII character")),
                };
                Ok(FileEncoding::Csv { header, delimiter })
            }
            other => Err(invalid("format", format!("unknown encode '{other}' for files (supported: PARQUET, CSV, JSON)"))),
        }
    }
}

/// Where the files are: a store, the prefix to list under, and the pattern names must match.
#[derive(Debug, Clone)]
struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// A glob over the path below `prefix` (`None`: every file under it).
    pattern: Option<glob::Pattern>,
}

/// Splits a path at its first component with a glob character: the directory to list, and
/// the pattern for the rest.
fn split_glob(path: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.iter().position(|p| p.contains(['*', '?', '['])) {
        Some(i) => (parts[..i].join("/"), Some(parts[i..].join("/"))),
        None => (path.to_string(), None),
    }
}

fn location(options: &SourceOptions) -> Result<Location, ConnectorError> {
    let path = options.get("path").map(|p| p.trim()).filter(|p| !p.is_empty());
    let Some(path) = path else { return Err(invalid("path", "a file source needs a path (a directory, a glob or s3://bucket/prefix)")) };
    let (store, key): (Arc<dyn ObjectStore>, String) = if let Some(rest) = path.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("path", "an s3:// path needs a bucket"));
        }
        (Arc::new(s3_store(bucket, options)?), key.to_string())
    } else {
        let local = path.strip_prefix("file://").unwrap_or(path);
        let absolute = std::path::absolute(local).map_err(|e| invalid("path", format!("'{local}': {e}")))?;
        let text = absolute.to_string_lossy().trim_start_matches('/').to_string();
        (Arc::new(object_store::local::LocalFileSystem::new()), text)
    };
    let (prefix, pattern) = split_glob(key.trim_end_matches('/'));
    let pattern = pattern
        .map(|p| glob::Pattern::new(&p).map_err(|e| invalid("path", format!("bad glob '{p}': {e}"))))
        .transpose()?;
    Ok(Location { store, prefix: ObjectPath::from(prefix), pattern })
}

/// An S3 (or S3-compatible) store for one bucket: credentials and region from the `s3.*`
/// options, else from the usual `AWS_*` environment variables.
fn s3_store(bucket: &str, options: &SourceOptions) -> Result<object_store::aws::AmazonS3, ConnectorError> {
    use object_store::aws::AmazonS3Builder;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = options.get("s3.endpoint") {
        // Test stores and MinIO-like servers answer path-style requests, often over plain HTTP.
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(region) = options.get("s3.region") {
        builder = builder.with_region(region);
    }
    if let Some(key) = options.get("s3.access_key_id") {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = options.get("s3.secret_access_key") {
        builder = builder.with_secret_access_key(secret);
    }
    // The builder's error may quote its configuration; say only what is wrong in general.
    builder.build().map_err(|_| invalid("path", "the S3 store could not be configured (check s3.* options and AWS_* variables)"))
}

/// A file to read: its path in the store and its name as a partition.
#[derive(Debug, Clone)]
struct FileEntry {
    path: ObjectPath,
    size: u64,
}

/// Lists the files in name order, leaving out hidden and marker files (`.x`, `_SUCCESS`).
async fn list_files(location: &Location) -> Result<Vec<FileEntry>, ConnectorError> {
    // A path naming one file: that file.
    if location.pattern.is_none()
        && let Ok(meta) = location.store.head(&location.prefix).await
    {
        return Ok(vec![FileEntry { path: meta.location, size: meta.size }]);
    }
    let listed: Vec<_> = location.store.list(Some(&location.prefix)).try_collect().await.map_err(unavailable)?;
    let prefix_parts = location.prefix.parts().count();
    let mut files: Vec<FileEntry> = listed
        .into_iter()
        .filter(|meta| {
            let below: Vec<_> = meta.location.parts().skip(prefix_parts).map(|p| p.as_ref().to_string()).collect();
            let hidden = below.iter().any(|p| p.starts_with('.') || p.starts_with('_'));
            let options = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
            !hidden && location.pattern.as_ref().is_none_or(|p| p.matches_with(&below.join("/"), options))
        })
        .map(|meta| FileEntry { path: meta.location, size: meta.size })
        .collect();
    files.sort_by(|a, b| a.path.as_ref().cmp(b.path.as_ref()));
    Ok(files)
}

/// What a source and its decoding thread share: the files and how to decode them.
struct FileSet {
    schema: SchemaRef,
    encoding: FileEncoding,
    store: Arc<dyn ObjectStore>,
    files: Vec<FileEntry>,
    batch_rows: usize,
}

/// The source: the file list, and where the reader is in it.
pub struct FileSource {
    set: Arc<FileSet>,
    /// Records consumed per file (rows returned plus bad records reported).
    offsets: Vec<u64>,
    /// Where [`Source::stop_at`] ends each file.
    stops: Vec<Option<u64>>,
    ended: Vec<bool>,
    /// The decoding thread's output, started on the first read after a seek.
    decoded: Option<mpsc::Receiver<Decoded>>,
}

/// What the decoding thread sends.
enum Decoded {
    Rows { file: usize, rows: RecordBatch },
    /// One record that does not fit the declared columns.
    Bad { file: usize, reason: String, payload: Vec<u8> },
    /// The file could not be decoded from this record on.
    Broken { file: usize, reason: String },
    FileEnd { file: usize },
    /// The file could not be fetched; the reader retries from its current position.
    Unavailable(String),
}

impl FileSource {
    /// Lists the files and checks the declared columns against the first one.
    pub async fn new(schema: SchemaRef, options: &SourceOptions, format: Option<&SourceFormat>) -> Result<Self, ConnectorError> {
        check_known(options, "file", |key| {
            Ok(matches!(key, "path" | "file.batch.rows") || key.starts_with("s3."))
        })?;
        let encoding = FileEncoding::from_format(format)?;
        let location = location(options)?;
        let batch_rows = parse_count(options, "file.batch.rows", DEFAULT_BATCH_ROWS, 1 << 20)?;
        let files = list_files(&location).await?;
        if files.is_empty() {
            return Err(invalid("path", format!("no files match '{}'", options.get("path").map(String::as_str).unwrap_or(""))));
        }
        let source = FileSource::at_start(Arc::new(FileSet { schema, encoding, store: location.store, files, batch_rows }));
        source.check_first_file().await?;
        Ok(source)
    }

    /// A reader of the files from their beginning.
    fn at_start(set: Arc<FileSet>) -> Self {
        let n = set.files.len();
        FileSource { set, offsets: vec![0; n], stops: vec![None; n], ended: vec![false; n], decoded: None }
    }

    /// The file a position names.
    fn file_index(&self, partition: &str) -> Option<usize> {
        self.set.files.iter().position(|f| f.path.as_ref() == partition)
    }

    /// The declared columns must be in the first file (Parquet, CSV with a header) with types
    /// that convert to the declared ones; a mistake is reported at CREATE, not at read time.
    async fn check_first_file(&self) -> Result<(), ConnectorError> {
        let first = &self.set.files[0];
        let file_schema = match self.set.encoding {
            FileEncoding::Parquet => Arc::new(self.parquet_schema(first).await?),
            FileEncoding::Csv { header: true, delimiter } => {
                let head = self.set.store.get_range(&first.path, 0..first.size.min(64 * 1024)).await.map_err(unavailable)?;
                Arc::new(csv_header_schema(&head, delimiter, &self.set.schema)?)
            }
            FileEncoding::Csv { header: false, .. } | FileEncoding::Json { .. } => return Ok(()),
        };
        projection(&file_schema, &self.set.schema, &first.path).map(|_| ())
    }

    /// A Parquet file's schema, from its footer.
    async fn parquet_schema(&self, file: &FileEntry) -> Result<Schema, ConnectorError> {
        let failure = |e: ParquetError| match FileFailure::from_parquet(e, "") {
            FileFailure::Unreachable(reason) => ConnectorError::Unavailable { connector: "file", reason },
            FileFailure::Broken(reason) => invalid("path", format!("'{}' is not a Parquet file: {reason}", file.path)),
        };
        let metadata = ObjectRangeReader::new(&self.set, file).get_metadata(None).await.map_err(failure)?;
        let file_metadata = metadata.file_metadata();
        datafusion::parquet::arrow::parquet_to_arrow_schema(file_metadata.schema_descr(), file_metadata.key_value_metadata())
            .map_err(failure)
    }

    fn start_decoding(&mut self) -> mpsc::Receiver<Decoded> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let job = DecodeJob {
            set: self.set.clone(),
            starts: self.offsets.clone(),
            skip: (0..self.set.files.len()).map(|f| self.ended[f] || self.stops[f].is_some_and(|s| s <= self.offsets[f])).collect(),
        };
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || job.run(&handle, &tx));
        rx
    }

    /// The first file that has not ended.
    fn current(&self) -> Option<usize> {
        self.ended.iter().position(|e| !e)
    }

    fn end_file(&mut self, file: usize) -> SourceEvent {
        self.ended[file] = true;
        SourceEvent::PartitionEnd { partition: file }
    }
}

fn unavailable(e: object_store::Error) -> ConnectorError {
    ConnectorError::Unavailable { connector: "file", reason: e.to_string() }
}

/// Where each declared column is in a file's schema, checking that its type converts.
fn projection(file_schema: &Schema, declared: &Schema, path: &ObjectPath) -> Result<Vec<usize>, ConnectorError> {
    declared
        .fields()
        .iter()
        .map(|field| {
            let index = file_schema
                .index_of(field.name())
                .ok()
                .or_else(|| file_schema.fields().iter().position(|f| f.name().eq_ignore_ascii_case(field.name())))
                .ok_or_else(|| invalid("path", format!("column \"{}\" is not in '{path}'", field.name())))?;
            let found = file_schema.field(index).data_type();
            if !can_cast_types(found, field.data_type()) {
                return Err(invalid(
                    "path",
                    format!("column \"{}\" is {found} in '{path}', which does not convert to {}", field.name(), field.data_type()),
                ));
            }
            Ok(index)
        })
        .collect()
}

/// The schema of a CSV file with a header: its column names, typed as declared where a
/// declared column has the name, text otherwise (they are not decoded).
fn csv_header_schema(head: &[u8], delimiter: u8, declared: &Schema) -> Result<Schema, ConnectorError> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let names = line.trim_end_matches('\r').split(delimiter as char).map(|n| n.trim().trim_matches('"').to_string());
    Ok(Schema::new(
        names
            .map(|name| {
                let data_type = declared
                    .fields()
                    .iter()
                    .find(|f| f.name().eq_ignore_ascii_case(&name))
                    .map_or(DataType::Utf8, |f| f.data_type().clone());
                Field::new(name, data_type, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// A batch with the projected columns in declared order and types.
fn to_declared_batch(declared: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, ConnectorError> {
    let columns = columns
        .into_iter()
        .zip(declared.fields())
        .map(|(c, f)| to_declared(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(declared.clone(), columns)?)
}

/// The decoding thread's work: the files from the given offsets, in order.
struct DecodeJob {
    set: Arc<FileSet>,
    /// Records to skip at the start of each file (already read).
    starts: Vec<u64>,
    /// Files not to read at all (ended, or stopped before their start).
    skip: Vec<bool>,
}

/// A Parquet file in the object store, read by byte ranges: the footer, then only the chunks
/// of the declared columns (no copy of the whole file).
struct ObjectRangeReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

impl ObjectRangeReader {
    fn new(set: &FileSet, file: &FileEntry) -> Self {
        ObjectRangeReader { store: set.store.clone(), path: file.path.clone(), size: file.size }
    }
}

fn parquet_io_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectRangeReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(parquet_io_error) }.boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(parquet_io_error) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Why a file stopped before its end.
enum FileFailure {
    /// Its bytes do not decode: the rest of the file is skipped.
    Broken(String),
    /// The store could not be read: the reader retries from its position.
    Unreachable(String),
}

impl FileFailure {
    /// A Parquet error: unreachable when it came from the object store (our reader's I/O),
    /// broken otherwise.
    fn from_parquet(e: ParquetError, context: &str) -> Self {
        match &e {
            ParquetError::External(inner) if inner.is::<object_store::Error>() => FileFailure::Unreachable(e.to_string()),
            _ => FileFailure::Broken(format!("{context}{e}")),
        }
    }
}

/// `false` once the receiving source is gone.
type Emit<'a> = &'a mut dyn FnMut(Decoded) -> bool;

impl DecodeJob {
    fn run(self, handle: &tokio::runtime::Handle, tx: &mpsc::Sender<Decoded>) {
        let mut send = |d: Decoded| tx.blocking_send(d).is_ok();
        for (file, entry) in self.set.files.iter().enumerate() {
            if self.skip[file] {
                continue;
            }
            // Parquet reads only the footer and the declared columns' byte ranges; the text
            // formats read the whole file.
            let outcome = match &self.set.encoding {
                FileEncoding::Parquet => self.parquet(handle, file, entry, &mut send),
                &FileEncoding::Csv { header, delimiter } => self.fetch(handle, entry).and_then(|bytes| {
                    self.lines(file, bytes, &mut send, |lines| decode_csv(&self.set.schema, lines, delimiter), header.then_some(delimiter))
                        .map_err(FileFailure::Broken)
                }),
                FileEncoding::Json { json_columns } => self.fetch(handle, entry).and_then(|bytes| {
                    let json = JsonDecoder::new(self.set.schema.clone()).with_json_columns(json_columns);
                    self.lines(file, bytes, &mut send, |lines| json.decode(lines), None).map_err(FileFailure::Broken)
                }),
            };
            match outcome {
                Ok(true) => {}
                Ok(false) => return,
                Err(FileFailure::Broken(reason)) => {
                    if !send(Decoded::Broken { file, reason }) {
                        return;
                    }
                }
                Err(FileFailure::Unreachable(reason)) => {
                    let _ = send(Decoded::Unavailable(format!("could not read '{}': {reason}", entry.path)));
                    return;
                }
            }
            if !send(Decoded::FileEnd { file }) {
                return;
            }
        }
    }

    /// A whole (text) file.
    fn fetch(&self, handle: &tokio::runtime::Handle, entry: &FileEntry) -> Result<Bytes, FileFailure> {
        handle
            .block_on(async { self.set.store.get(&entry.path).await?.bytes().await })
            .map_err(|e| FileFailure::Unreachable(e.to_string()))
    }

    /// Decodes a Parquet file's declared columns. `Ok(false)`: the receiver is gone.
    fn parquet(&self, handle: &tokio::runtime::Handle, file: usize, entry: &FileEntry, send: Emit<'_>) -> Result<bool, FileFailure> {
        let builder = handle
            .block_on(ParquetRecordBatchStreamBuilder::new(ObjectRangeReader::new(&self.set, entry)))
            .map_err(|e| FileFailure::from_parquet(e, "not a Parquet file: "))?;
        let indices =
            projection(builder.schema(), &self.set.schema, &entry.path).map_err(|e| FileFailure::Broken(e.to_string()))?;
        // The projected batch has the file's column order; `order` puts it in declared order.
        let mut sorted = indices.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let order: Vec<usize> = indices.iter().map(|i| sorted.binary_search(i).unwrap_or(0)).collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), sorted);
        let mut reader = builder
            .with_projection(mask)
            .with_batch_size(self.set.batch_rows)
            .with_offset(self.starts[file] as usize)
            .build()
            .map_err(|e| FileFailure::from_parquet(e, ""))?;
        // Fetching and decoding happen in `next`, on this (blocking) thread.
        while let Some(batch) = handle.block_on(reader.next()) {
            let batch = batch.map_err(|e| FileFailure::from_parquet(e, ""))?;
            let columns = order.iter().map(|&i| batch.column(i).clone()).collect();
            let rows = to_declared_batch(&self.set.schema, columns).map_err(|e| FileFailure::Broken(e.to_string()))?;
            if !send(Decoded::Rows { file, rows }) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Decodes a text file one line per record, `batch_rows` lines at a time; a chunk that
    /// fails is decoded again line by line so that only the bad lines are skipped.
    fn lines(
        &self,
        file: usize,
        bytes: Bytes,
        send: Emit<'_>,
        decode: impl Fn(&[&[u8]]) -> Result<RecordBatch, String>,
        header: Option<u8>,
    ) -> Result<bool, String> {
        let mut lines = bytes
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
        // With a header, columns are matched by name: decode through a reordering.
        let reorder = match header {
            Some(delimiter) => {
                let head = lines.next().unwrap_or_default();
                let file_schema = csv_header_schema(head, delimiter, &self.set.schema).map_err(|e| e.to_string())?;
                Some(projection(&file_schema, &self.set.schema, &self.set.files[file].path).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let mut lines = lines.skip(self.starts[file] as usize).peekable();
        let mut chunk: Vec<&[u8]> = Vec::with_capacity(self.set.batch_rows);
        while lines.peek().is_some() {
            chunk.clear();
            chunk.extend(lines.by_ref().take(self.set.batch_rows));
            let reordered: Vec<Vec<u8>> = match &reorder {
                Some(order) => chunk.iter().map(|l| reorder_csv_line(l, header.unwrap_or(b','), order)).collect(),
                None => Vec::new(),
            };
            let reordered_records: Vec<&[u8]>;
            let records: &[&[u8]] = if reorder.is_some() {
                reordered_records = reordered.iter().map(Vec::as_slice).collect();
                &reordered_records
            } else {
                &chunk
            };
            let finished = decode_lenient(records, &decode, |piece| match piece {
                DecodedRecords::Rows { rows, .. } => send(Decoded::Rows { file, rows }),
                DecodedRecords::Bad { index, reason } => {
                    let raw = chunk[index];
                    send(Decoded::Bad { file, reason, payload: payload_prefix(raw) })
                }
            });
            if !finished {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A CSV line with only the fields at `order`, in that order (a line with a header's column
/// order turned into the declared order). Quoted fields keep their quotes.
fn reorder_csv_line(line: &[u8], delimiter: u8, order: &[usize]) -> Vec<u8> {
    let mut fields: Vec<&[u8]> = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, &b) in line.iter().enumerate() {
        if b == b'"' {
            quoted = !quoted;
        } else if b == delimiter && !quoted {
            fields.push(&line[start..i]);
            start = i + 1;
        }
    }
    fields.push(&line[start..]);
    let mut out = Vec::with_capacity(line.len());
    for (n, &i) in order.iter().enumerate() {
        if n > 0 {
            out.push(delimiter);
        }
        // A missing field reads as empty (NULL), as a short line does without a header.
        out.extend_from_slice(fields.get(i).copied().unwrap_or_default());
    }
    out
}

fn decode_csv(schema: &SchemaRef, lines: &[&[u8]], delimiter: u8) -> Result<RecordBatch, String> {
    let mut decoder = datafusion::arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(false)
        .with_delimiter(delimiter)
        .with_batch_size(lines.len().max(1))
        .build_decoder();
    for line in lines {
        // The line, then its end: csv-core takes a record in pieces.
        for mut buf in [*line, b"\n".as_slice()] {
            while !buf.is_empty() {
                let used = decoder.decode(buf).map_err(|e| e.to_string())?;
                if used == 0 {
                    return Err("the CSV decoder made no progress".into());
                }
                buf = &buf[used..];
            }
        }
    }
    decoder.flush().map_err(|e| e.to_string())?.ok_or_else(|| "no rows".to_string())
}

#[async_trait]
impl Source for FileSource {
    fn schema(&self) -> SchemaRef {
        self.set.schema.clone()
    }

    fn partitions(&self) -> usize {
        self.set.files.len()
    }

    fn partitions_in_sequence(&self) -> bool {
        true
    }

    async fn next(&mut self) -> Result<SourceEvent, ConnectorError> {
        loop {
            let Some(current) = self.current() else { return Ok(SourceEvent::End) };
            if self.stops[current].is_some_and(|s| self.offsets[current] >= s) {
                return Ok(self.end_file(current));
            }
            let decoded = match &mut self.decoded {
                Some(rx) => rx.recv().await,
                None => {
                    self.decoded = Some(self.start_decoding());
                    continue;
                }
            };
            // Past the only await: the call completes from here on.
            match decoded {
                None => {
                    self.decoded = None;
                    return Err(ConnectorError::Unavailable { connector: "file", reason: "the file reader stopped".into() });
                }
                Some(Decoded::Unavailable(reason)) => {
                    self.decoded = None;
                    return Err(ConnectorError::Unavailable { connector: "file", reason });
                }
                Some(Decoded::Rows { file, mut rows }) => {
                    let offset = self.offsets[file];
                    if let Some(stop) = self.stops[file] {
                        let room = stop.saturating_sub(offset) as usize;
                        if rows.num_rows() > room {
                            rows = rows.slice(0, room);
                        }
                    }
                    if rows.num_rows() == 0 {
                        continue;
                    }
                    self.offsets[file] += rows.num_rows() as u64;
                    return Ok(SourceEvent::Batch { partition: file, rows });
                }
                Some(Decoded::Bad { file, reason, payload }) => {
                    if self.stops[file].is_some_and(|s| self.offsets[file] >= s) {
                        continue;
                    }
                    let offset = self.offsets[file];
                    self.offsets[file] += 1;
                    return Ok(SourceEvent::BadRecord { partition: file, offset, reason, payload });
                }
                Some(Decoded::Broken { file, reason }) => {
                    let offset = self.offsets[file];
                    // Nothing after the broken record can be read: the file ends here.
                    self.stops[file] = Some(offset);
                    let reason = format!("'{}' cannot be decoded; the rest of the file is skipped: {reason}", self.set.files[file].path);
                    return Ok(SourceEvent::BadRecord { partition: file, offset, reason, payload: Vec::new() });
                }
                Some(Decoded::FileEnd { file }) => {
                    if !self.ended[file] {
                        return Ok(self.end_file(file));
                    }
                }
            }
        }
    }

    fn positions(&self) -> Vec<SourcePosition> {
        self.set.files
            .iter()
            .zip(&self.offsets)
            .map(|(f, &offset)| SourcePosition { partition: f.path.to_string(), offset })
            .collect()
    }

    async fn seek(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        let mut targets = Vec::with_capacity(positions.len());
        for pos in positions {
            let file = self.file_index(&pos.partition).ok_or_else(|| {
                ConnectorError::InvalidPosition { partition: pos.partition.clone(), reason: "no such file in the source".into() }
            })?;
            targets.push((file, pos.offset));
        }
        for (file, offset) in targets {
            self.offsets[file] = offset;
            self.ended[file] = false;
        }
        self.decoded = None;
        Ok(())
    }

    fn replay_from_start(&self) -> Option<Box<dyn Source>> {
        Some(Box::new(FileSource::at_start(self.set.clone())))
    }

    fn stop_at(&mut self, positions: &[SourcePosition]) {
        for pos in positions {
            if let Some(file) = self.file_index(&pos.partition) {
                self.stops[file] = Some(self.stops[file].map_or(pos.offset, |s| s.min(pos.offset)));
            }
        }
        self.decoded = None;
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Int64Type, TimeUnit, TimestampMicrosecondType};
    use datafusion::parquet::arrow::ArrowWriter;

    use super::*;

    fn declared() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn format(encode: &str, options: &[(&str, &str)]) -> SourceFormat {
        SourceFormat {
            format: "PLAIN".into(),
            encode: encode.into(),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn options(path: &std::path::Path, extra: &[(&str, &str)]) -> SourceOptions {
        let mut o: SourceOptions = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        o.insert("path".into(), path.to_string_lossy().into_owned());
        o
    }

    /// A Parquet file with columns in another order than declared, plus one not declared.
    fn write_parquet(path: &std::path::Path, ids: std::ops::Range<i64>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("extra", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("id", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(ids.clone().map(|i| format!("n{i}")))),
                Arc::new(Int64Array::from_iter_values(ids.clone())),
                Arc::new(datafusion::arrow::array::TimestampMillisecondArray::from_iter_values(ids.clone().map(|i| i * 1000))),
                Arc::new(datafusion::arrow::array::Int32Array::from_iter_values(ids.clone().map(|i| i as i32))),
            ],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    async fn drain(source: &mut dyn Source) -> (Vec<(usize, RecordBatch)>, Vec<usize>, Vec<(usize, u64, String)>) {
        let (mut batches, mut ends, mut bad) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            match source.next().await.unwrap() {
                SourceEvent::Batch { partition, rows } => batches.push((partition, rows)),
                SourceEvent::PartitionEnd { partition } => ends.push(partition),
                SourceEvent::BadRecord { partition, offset, reason, payload } => {
                    bad.push((partition, offset, format!("{reason} (record: {})", String::from_utf8_lossy(&payload))))
                }
                SourceEvent::End => return (batches, ends, bad),
            }
        }
    }

    fn ids(batches: &[(usize, RecordBatch)]) -> Vec<i64> {
        batches.iter().flat_map(|(_, b)| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parquet_files_are_read_in_name_order_with_declared_columns() {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(&dir.path().join("b.parquet"), 100..250);
        write_parquet(&dir.path().join("a.parquet"), 0..100);
        std::fs::write(dir.path().join("_SUCCESS"), b"").unwrap();
        let opts = options(dir.path(), &[("file.batch.rows", "64")]);
        let mut source = FileSource::new(declared(), &opts, Some(&format("parquet", &[]))).await.unwrap();
        assert_eq!(source.partitions(), 2);
        assert!(source.partitions_in_sequence());
        let (batches, ends, bad) = drain(&mut source).await;
        assert_eq!(ids(&batches), (0..250).collect::<Vec<_>>());
        assert_eq!(ends, [0, 1]);
        assert!(bad.is_empty());
        assert!(batches.iter().all(|(_, b)| b.schema() == declared() && b.num_rows() <= 64));
        // File a holds 0..100: every batch of partition 0 comes from it.
        assert!(batches.iter().filter(|(p, _)| *p == 0).all(|(_, b)| b.column(0).as_primitive::<Int64Type>().value(0) < 100));
        let ts = batches[0].1.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(1), 1_000_000);
        assert_eq!(batches[0].1.column(2).as_string::<i32>().value(3), "n3");
        let positions = source.positions();
        assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [100, 150]);
        assert!(positions[0].partition.ends_with("a.parquet"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seek_and_stop_at_resume_and_bound_a_replay() {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(&dir.path().join("f1.parquet"), 0..100);
        write_parquet(&dir.path().join("f2.parquet"), 100..200);
        let opts = options(dir.path(), &[("file.batch.rows", "30")]);
        let mut source = FileSource::new(declared(), &opts, Some(&format("PARQUET", &[]))).await.unwrap();
        // Read into the second file, then replay up to there.
        let mut read = Vec::new();
        while read.len() < 130 {
            if let SourceEvent::Batch { rows, .. } = source.next().await.unwrap() {
                read.extend(rows.column(0).as_primitive::<Int64Type>().values().iter().copied());
            }
        }
        let mut replay = source.replay_from_start().unwrap();
        replay.stop_at(&source.positions());
        let (batches, ends, _) = drain(replay.as_mut()).await;
        assert_eq!(ids(&batches), read);
        assert_eq!(ends, [0, 1]);
        // A new reader sought to the positions reads the rest.
        let mut resumed = FileSource::new(declared(), &opts, Some(&format("parquet", &[]))).await.unwrap();
        resumed.seek(&source.positions()).await.unwrap();
        let (rest, _, _) = drain(&mut resumed).await;
        let mut all = read.clone();
        all.extend(ids(&rest));
        assert_eq!(all, (0..200).collect::<Vec<_>>());
        let bad = SourcePosition { partition: "nope".into(), offset: 1 };
        assert!(matches!(resumed.seek(&[bad]).await, Err(ConnectorError::InvalidPosition { .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn csv_with_header_maps_names_and_skips_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text = "name,id,ignored,ts\n\
                    a,1,x,2026-01-01 00:00:01\n\
                    \"b, quoted\",2,y,2026-01-01 00:00:02.5\n\
                    c,not-a-number,z,2026-01-01 00:00:03\n\
                    \n\
                    d,4,w,2026-01-01T00:00:04Z\n";
        std::fs::write(dir.path().join("x.csv"), text).unwrap();
        let opts = options(&dir.path().join("*.csv"), &[]);
        let mut source = FileSource::new(declared(), &opts, Some(&format("csv", &[]))).await.unwrap();
        let (batches, _, bad) = drain(&mut source).await;
        assert_eq!(ids(&batches), [1, 2, 4]);
        let names: Vec<String> =
            batches.iter().flat_map(|(_, b)| b.column(2).as_string::<i32>().iter().map(|s| s.unwrap_or_default().to_string())).collect();
        assert_eq!(names, ["a", "b, quoted", "d"]);
        let ts: Vec<i64> =
            batches.iter().flat_map(|(_, b)| b.column(1).as_primitive::<TimestampMicrosecondType>().values().to_vec()).collect();
        assert_eq!(ts[1] - ts[0], 1_500_000);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].1, 2, "the bad record's offset counts records, not lines");
        assert!(bad[0].2.contains("not-a-number"), "{}", bad[0].2);
        assert_eq!(source.positions()[0].offset, 4);
        // Without a header, by position.
        std::fs::write(dir.path().join("y.txt"), "7;2026-01-01 00:00:07;g\n").unwrap();
        let opts = options(&dir.path().join("y.txt"), &[]);
        let f = format("csv", &[("without_header", "true"), ("delimiter", ";")]);
        let (batches, _, _) = drain(&mut FileSource::new(declared(), &opts, Some(&f)).await.unwrap()).await;
        assert_eq!(ids(&batches), [7]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn json_lines_decode_by_name_and_bad_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"id\": 1, \"ts\": \"2026-01-01T00:00:01Z\", \"name\": \"a\", \"other\": [1]}\n\
                    {\"id\": \"two\", \"ts\": \"2026-01-01T00:00:02Z\"}\n\
                    not json\n\
                    {\"ts\": \"2026-01-01 00:00:03\", \"id\": 3}\n";
        std::fs::write(dir.path().join("e.json"), text).unwrap();
        let opts = options(dir.path(), &[]);
        let mut source = FileSource::new(declared(), &opts, Some(&format("json", &[]))).await.unwrap();
        let (batches, _, bad) = drain(&mut source).await;
        assert_eq!(ids(&batches), [1, 3]);
        assert_eq!(bad.iter().map(|b| b.1).collect::<Vec<_>>(), [1, 2]);
        let names: Vec<Option<&str>> = batches.iter().flat_map(|(_, b)| b.column(2).as_string::<i32>().iter()).collect();
        assert_eq!(names, [Some("a"), None]);
        // Declared `jsonb`, the same field is its JSON text.
        let mut jsonb = format("json", &[]);
        jsonb.json_columns = vec!["name".into()];
        let mut source = FileSource::new(declared(), &opts, Some(&jsonb)).await.unwrap();
        let (batches, _, _) = drain(&mut source).await;
        let names: Vec<Option<&str>> = batches.iter().flat_map(|(_, b)| b.column(2).as_string::<i32>().iter()).collect();
        assert_eq!(names, [Some("\"a\""), None]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_sources_are_reported_at_create() {
        let dir = tempfile::tempdir().unwrap();
        let f = format("parquet", &[]);
        let error = |r: Result<FileSource, ConnectorError>| match r {
            Err(ConnectorError::InvalidOption { option, reason }) => format!("{option}: {reason}"),
            Err(e) => format!("{e}"),
            Ok(_) => panic!("expected an error"),
        };
        assert!(error(FileSource::new(declared(), &options(dir.path(), &[]), Some(&f)).await).contains("no files match"));
        assert!(error(FileSource::new(declared(), &SourceOptions::new(), Some(&f)).await).contains("needs a path"));
        write_parquet(&dir.path().join("a.parquet"), 0..3);
        let opts = options(dir.path(), &[]);
        assert!(error(FileSource::new(declared(), &opts, None).await).contains("FORMAT PLAIN ENCODE"));
        assert!(error(FileSource::new(declared(), &opts, Some(&format("avro", &[]))).await).contains("unknown encode"));
        let missing = Arc::new(Schema::new(vec![Field::new("nope", DataType::Int64, true)]));
        assert!(error(FileSource::new(missing, &opts, Some(&f)).await).contains("column \"nope\" is not in"));
        let bad_type = Arc::new(Schema::new(vec![Field::new("ts", DataType::Boolean, true)]));
        assert!(error(FileSource::new(bad_type, &opts, Some(&f)).await).contains("does not convert"));
        let unknown = options(dir.path(), &[("file.nope", "1")]);
        assert!(error(FileSource::new(declared(), &unknown, Some(&f)).await).contains("file.nope"));
        // A file that is not Parquet among good ones: reported, skipped, the rest is read.
        std::fs::write(dir.path().join("b.parquet"), b"not parquet").unwrap();
        write_parquet(&dir.path().join("c.parquet"), 3..5);
        let mut source = FileSource::new(declared(), &opts, Some(&f)).await.unwrap();
        let (batches, ends, bad) = drain(&mut source).await;
        assert_eq!(ids(&batches), [0, 1, 2, 3, 4]);
        assert_eq!(ends, [0, 1, 2]);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].2.contains("b.parquet"), "{}", bad[0].2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parquet_file_that_cannot_be_fetched_is_retried_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(&dir.path().join("a.parquet"), 0..10);
        write_parquet(&dir.path().join("b.parquet"), 10..20);
        let opts = options(dir.path(), &[]);
        let mut source = FileSource::new(declared(), &opts, Some(&format("parquet", &[]))).await.unwrap();
        // Gone after listing: the store cannot serve it, which is not a broken file.
        std::fs::remove_file(dir.path().join("a.parquet")).unwrap();
        match source.next().await {
            Err(ConnectorError::Unavailable { reason, .. }) => assert!(reason.contains("a.parquet"), "{reason}"),
            other => panic!("expected the file to be unavailable, got {:?}", other.map(|_| ())),
        }
        // Back again: read from its start, nothing skipped.
        write_parquet(&dir.path().join("a.parquet"), 0..10);
        let (batches, ends, bad) = drain(&mut source).await;
        assert_eq!(ids(&batches), (0..20).collect::<Vec<_>>());
        assert_eq!(ends, [0, 1]);
        assert!(bad.is_empty());
    }

    #[test]
    fn globs_split_at_their_first_pattern_component() {
        assert_eq!(split_glob("data/bids/*.parquet"), ("data/bids".into(), Some("*.parquet".into())));
        assert_eq!(split_glob("data/2026-*/x.csv"), ("data".into(), Some("2026-*/x.csv".into())));
        assert_eq!(split_glob("data/bids"), ("data/bids".into(), None));
    }
}
