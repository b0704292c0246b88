//! The source side: external streams in, Arrow batches out.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::ConnectorError;

/// Where a source has read up to, per partition, in a form a checkpoint can store and a
/// restarted source can seek to (a Kafka offset, a JetStream sequence, a generator's row index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePosition {
    pub partition: String,
    pub offset: u64,
}

/// A partitioned stream of events. Implementations must be deterministic given the positions
/// they resume from, so that recovery replays exactly the events after the last checkpoint.
#[async_trait]
pub trait Source: Send {
    /// The schema of the batches [`Source::next_batch`] returns.
    fn schema(&self) -> SchemaRef;

    /// The next batch of events and the partition positions after it, or `None` when a bounded
    /// source is exhausted.
    async fn next_batch(&mut self) -> Result<Option<(RecordBatch, Vec<SourcePosition>)>, ConnectorError>;

    /// Resumes reading after the given positions (from a checkpoint).
    async fn seek(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError>;
}
