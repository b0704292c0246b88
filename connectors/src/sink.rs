//! The sink side: a view's changes out to an external system.

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::ConnectorError;

/// The column of a change batch that holds each row's signed multiplicity.
pub const DIFF_COLUMN: &str = "weir_diff";

/// Delivers a view's changes epoch by epoch. A batch carries the view's columns plus the signed
/// `weir_diff` column. `write_epoch` may be called again for an epoch after a crash, so an
/// implementation must make a re-sent epoch replace itself rather than duplicate rows.
#[async_trait]
pub trait Sink: Send {
    async fn write_epoch(&mut self, epoch: u64, changes: &[RecordBatch]) -> Result<(), ConnectorError>;

    /// The last epoch known to be fully delivered, read from the external system when it can
    /// tell (used on recovery).
    async fn last_delivered_epoch(&mut self) -> Result<Option<u64>, ConnectorError>;
}
