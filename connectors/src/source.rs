//! The source side: external streams in, Arrow batches out.
//!
//! A [`Source`] is a set of partitions (Kafka partitions, generator splits) read by one reader
//! task of the engine. It returns batches tagged with their partition, so that the engine can
//! keep a watermark per partition, and it can say where it is ([`Source::positions`]) and go back
//! there ([`Source::seek`]), which is what checkpoints and backfills need.

use std::collections::BTreeMap;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
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
    BadRecord { partition: usize, offset: u64, reason: String },
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
}
