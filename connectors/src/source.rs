//! The source side: external streams in, Arrow batches out.
//!
//! A [`Source`] is a set of partitions (Kafka partitions, generator splits) read by one reader
//! task of the engine. It returns batches tagged with their partition, so that the engine can
//! keep a watermark per partition, and it can say where it is ([`Source::positions`]) and go back
//! there ([`Source::seek`]), which is what checkpoints and backfills need.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::ConnectorError;

/// Where a source has read up to in one partition, in a form a checkpoint can store and a
/// restarted source can seek to (a Kafka offset, a JetStream sequence, a generator's row index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    pub partition: String,
    pub offset: u64,
}

/// What [`Source::next`] produced.
#[derive(Debug)]
pub enum SourceEvent {
    /// Rows read from one partition, in the source's declared schema.
    Batch { partition: usize, rows: RecordBatch },
    /// A bounded partition has no more rows (its watermark may go to +infinity).
    PartitionEnd { partition: usize },
    /// Every partition has ended; `next` will not be called again.
    End,
    /// A record at `offset` of `partition` could not be decoded into the declared columns and
    /// was skipped (it counts in the partition's position, so a replay skips it too).
    /// `payload` is the record's first bytes, for the user to recognise it.
    BadRecord { partition: usize, offset: u64, reason: String, payload: Vec<u8> },
}

/// A partitioned stream of events. Implementations must be deterministic given the positions
/// they resume from, so that recovery and backfills replay exactly the same events.
///
/// `next` must be cancel-safe: the engine calls it inside `tokio::select!` next to its control
/// channel, so a call that is dropped before completing must not lose or skip rows (wait first,
/// then produce).
#[async_trait]
pub trait Source: Send {
    /// The schema of the batches [`Source::next`] returns (the columns the user declared).
    fn schema(&self) -> SchemaRef;

    /// How many partitions the source reads; batches name a partition in `0..partitions()`.
    fn partitions(&self) -> usize;

    /// Whether partitions are read one after another (files in name order) rather than side by
    /// side: then a partition that has not produced a row yet is not waited for by the
    /// watermark, since it will only start once the partitions before it end.
    fn partitions_in_sequence(&self) -> bool {
        false
    }

    async fn next(&mut self) -> Result<SourceEvent, ConnectorError>;

    /// The position of every partition after the last batch returned.
    fn positions(&self) -> Vec<SourcePosition>;

    /// Resumes reading after the given positions (from a checkpoint, or to stop a replay).
    async fn seek(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError>;

    /// A new reader of the same source from its very beginning, when the source can replay its
    /// history (generators can; a topic with retention may not). Views created after the shared
    /// reader started use it to backfill.
    fn replay_from_start(&self) -> Option<Box<dyn Source>>;

    /// Stops a replay reader at these positions: it reports each partition's end once it has
    /// returned the rows before the given position.
    fn stop_at(&mut self, positions: &[SourcePosition]);

    /// Everything up to `positions` is reflected in committed epochs: a broker-backed source
    /// tells its broker (Kafka commits the offsets to its consumer group, so that ordinary
    /// tools show the lag; JetStream acks the messages).
    async fn commit(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        let _ = positions;
        Ok(())
    }

    /// Live figures the connector keeps itself (offsets, lag, connection status), when it has
    /// any; the engine shows them in `weir_catalog` and `/metrics`.
    fn status(&self) -> Option<Arc<ConnectorStatus>> {
        None
    }
}

/// A column filled from a message's metadata rather than its payload: `INCLUDE key AS k`
/// (RisingWave's syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataColumn {
    Key,
    Partition,
    Offset,
    Timestamp,
}

impl MetadataColumn {
    pub const ALL: [MetadataColumn; 4] =
        [MetadataColumn::Key, MetadataColumn::Partition, MetadataColumn::Offset, MetadataColumn::Timestamp];

    pub fn name(self) -> &'static str {
        match self {
            MetadataColumn::Key => "key",
            MetadataColumn::Partition => "partition",
            MetadataColumn::Offset => "offset",
            MetadataColumn::Timestamp => "timestamp",
        }
    }

    /// `key`, `partition`, `offset` or `timestamp` (any case).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// The column's name when `INCLUDE` gives no alias: `_<connector>_<what>`.
    pub fn default_column_name(self, connector: &str) -> String {
        format!("_{}_{}", connector.to_ascii_lowercase(), self.name())
    }

    pub fn data_type(self) -> DataType {
        match self {
            MetadataColumn::Key => DataType::Binary,
            MetadataColumn::Partition => DataType::Int32,
            MetadataColumn::Offset => DataType::Int64,
            MetadataColumn::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        }
    }
}

/// What a connector reports about itself while it runs, shared with the engine.
#[derive(Debug, Default)]
pub struct ConnectorStatus {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default, Clone)]
struct StatusInner {
    state: String,
    partitions: Vec<PartitionProgress>,
}

/// One partition's progress as its connector sees it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PartitionProgress {
    /// The next offset (or sequence) to read, once known.
    pub next_offset: Option<i64>,
    /// The broker's high watermark: the offset the next produced message will get.
    pub high_watermark: Option<i64>,
    /// Payload bytes read.
    pub bytes: u64,
    /// Rows and bytes per second over the last statistics interval.
    pub rows_per_second: f64,
    pub bytes_per_second: f64,
}

impl PartitionProgress {
    /// Messages behind the broker's high watermark.
    pub fn lag(&self) -> Option<i64> {
        Some((self.high_watermark? - self.next_offset?).max(0))
    }
}

impl ConnectorStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `running`, `connecting`, or what is wrong (`broker unreachable: ...`).
    pub fn state(&self) -> String {
        self.lock().state.clone()
    }

    pub fn set_state(&self, state: impl Into<String>) {
        self.lock().state = state.into();
    }

    pub fn partitions(&self) -> Vec<PartitionProgress> {
        self.lock().partitions.clone()
    }

    /// Changes partition `p`'s progress (creating it, and any before it, when new).
    pub fn update(&self, p: usize, f: impl FnOnce(&mut PartitionProgress)) {
        let mut inner = self.lock();
        if inner.partitions.len() <= p {
            inner.partitions.resize(p + 1, PartitionProgress::default());
        }
        f(&mut inner.partitions[p]);
    }
}

/// A source's `WITH (...)` options: lower-case dotted keys to string values.
pub type SourceOptions = BTreeMap<String, String>;

/// A source's `FORMAT <format> ENCODE <encode> (options)` clause: how its messages or files are
/// encoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceFormat {
    pub format: String,
    pub encode: String,
    /// Lower-case keys.
    pub options: SourceOptions,
    /// The declared `json`/`jsonb` columns: a JSON message's nested object, array or any other
    /// value lands in them as its JSON text.
    pub json_columns: Vec<String>,
}
