//! The incremental engine: what flows between operators, and the pieces that move it.
//!
//! Start with `docs/dataflow.md`. In short: a source's [`reader`] task reads batches, assigns
//! watermarks ([`watermark`]) and broadcasts [`Message`]s to the [`job`] of every view that reads
//! the source; a job runs the view's tree of [`operators`] (built from weir-sql's `StreamPlan`),
//! integrates the changes that reach the root into the view's contents ([`view_data`]) and, at
//! every barrier, hands the coordinator (`crate::coordinator`) an immutable version of them.
//!
//! * [`Changes`] - rows plus a signed multiplicity per row; every edge carries them.
//! * [`operators`] - the [`operators::Operator`] trait; filter, projection, unnest, union and the
//!   grouped aggregate with its retractable accumulators.
//! * [`view_data`] - a view's contents: a persistent multiset of rows, cheap to version.
//! * [`watermark`] - per-partition watermarks, idleness and the late-row rule.
//! * [`dead_letter`] - late rows kept with their reason (`watermark.late_events = 'dead_letter'`).
//! * [`source_errors`] - records a source skipped because they did not decode.
//! * [`reader`] - the shared reader task of one source, with backfill for late-coming views.
//! * [`job`] - one view's task: barrier alignment, operator tree, materialization, and at
//!   checkpoint barriers the snapshot of its operators and contents (`crate::checkpoint`).

pub mod dead_letter;
pub mod job;
pub mod operators;
pub mod reader;
pub mod source_errors;
pub mod view_data;
pub mod watermark;

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;

use crate::error::Result;

/// Event time and watermarks are microseconds since the Unix epoch.
pub type EventTime = i64;

/// A watermark that no row will ever be below again: sent when a bounded source is exhausted.
pub const WATERMARK_MAX: EventTime = i64::MAX;

/// A batch of changes: `rows`, where row `i` is inserted `diffs[i]` times (negative: retracted).
#[derive(Debug, Clone)]
pub struct Changes {
    pub rows: RecordBatch,
    pub diffs: Int64Array,
}

impl Changes {
    pub fn new(rows: RecordBatch, diffs: Int64Array) -> Self {
        debug_assert_eq!(rows.num_rows(), diffs.len());
        Changes { rows, diffs }
    }

    /// Every row inserted once.
    pub fn inserts(rows: RecordBatch) -> Self {
        let diffs = Int64Array::from(vec![1i64; rows.num_rows()]);
        Changes { rows, diffs }
    }

    /// Every row with the same diff.
    pub fn uniform(rows: RecordBatch, diff: i64) -> Self {
        let diffs = Int64Array::from(vec![diff; rows.num_rows()]);
        Changes { rows, diffs }
    }

    pub fn len(&self) -> usize {
        self.rows.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.num_rows() == 0
    }

    /// The rows where `mask` is true.
    pub fn filter(&self, mask: &datafusion::arrow::array::BooleanArray) -> Result<Changes> {
        let rows = filter_record_batch(&self.rows, mask)?;
        let diffs = datafusion::arrow::compute::filter(&self.diffs, mask)?;
        let diffs = diffs
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| crate::error::WeirError::internal("diff column is not Int64"))?;
        Ok(Changes { rows, diffs })
    }
}

/// What travels on an edge of the dataflow.
#[derive(Debug, Clone)]
pub enum Message {
    Data(Arc<Changes>),
    /// No later row on this edge has an event time below this.
    Watermark(EventTime),
    /// The end of epoch `n`: everything before belongs to it.
    Barrier(u64),
}
