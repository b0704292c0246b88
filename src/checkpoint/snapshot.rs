//! What the running dataflow hands in at a checkpoint barrier.
//!
//! The coordinator marks an epoch as a checkpoint ([`CheckpointHub::request`]) before it injects
//! the epoch's barrier. Every reader that forwards that barrier hands in its positions and
//! watermark state ([`SourceState`]); every view job that ends that epoch hands in its operators'
//! state and its contents ([`ViewState`]). Both are taken at the barrier, so together they are
//! one consistent cut: the views hold exactly the rows read before the positions.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weir_catalog::ObjectId;
use weir_connectors::SourcePosition;

use crate::dataflow::EventTime;
use crate::dataflow::operators::Snapshot;
use crate::dataflow::view_data::ViewData;
use crate::error::Result;

/// One partition's watermark state: what a restarted reader needs to call the same rows late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMark {
    /// The maximum of the watermark expression over the partition's rows.
    pub max: EventTime,
    pub ended: bool,
    /// Not read yet, in a source that reads its partitions one after another.
    pub pending: bool,
}

/// A source reader's watermark state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerState {
    pub partitions: Vec<PartitionMark>,
    pub current: EventTime,
}

/// A position as the manifest stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionRecord {
    pub partition: String,
    pub offset: u64,
}

/// A source at a checkpoint barrier: where to resume reading, and its watermark state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    pub positions: Vec<PositionRecord>,
    pub watermarks: TrackerState,
    /// Whether the source had read anything (a view that joins later then needs a backfill).
    pub read_any: bool,
    /// Whether every partition had ended.
    pub ended: bool,
}

impl SourceState {
    pub fn positions(&self) -> Vec<SourcePosition> {
        self.positions.iter().map(|p| SourcePosition { partition: p.partition.clone(), offset: p.offset }).collect()
    }

    pub fn record_positions(positions: &[SourcePosition]) -> Vec<PositionRecord> {
        positions.iter().map(|p| PositionRecord { partition: p.partition.clone(), offset: p.offset }).collect()
    }
}

/// A table's feed at a checkpoint barrier: the newest commit the views had received, and the
/// feed's watermark state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableState {
    pub seq: u64,
    pub watermarks: TrackerState,
}

/// A view job at a checkpoint barrier, after its epoch's output was applied.
pub struct ViewState {
    /// Per stateful operator (by node index in the view's plan): its state, or what changed
    /// since its state in the newest written checkpoint.
    pub operators: Vec<(usize, Snapshot)>,
    /// The view's contents (a persistent map: this is a cheap version, encoded off the job).
    pub contents: ViewData,
    /// The watermark the view's output had reached.
    pub watermark: EventTime,
}

/// What a reader or a job hands in for a checkpoint epoch.
pub enum Contribution {
    Source { id: ObjectId, epoch: u64, state: SourceState },
    Table { id: ObjectId, epoch: u64, state: TableState },
    /// `Err`: the view could not be snapshotted (an operator without checkpoints); recovery
    /// rebuilds it from its inputs instead.
    View { id: ObjectId, epoch: u64, state: Result<ViewState> },
}

/// Which epochs are checkpoints, shared by the coordinator, readers and jobs, and the channel
/// their contributions go to.
#[derive(Debug)]
pub struct CheckpointHub {
    requested: Mutex<BTreeSet<u64>>,
    /// Per view, the epoch of the newest written checkpoint that holds its state.
    views_written: Mutex<HashMap<ObjectId, u64>>,
    contributions: mpsc::UnboundedSender<Contribution>,
}

impl CheckpointHub {
    pub fn new() -> (Arc<CheckpointHub>, mpsc::UnboundedReceiver<Contribution>) {
        let (contributions, rx) = mpsc::unbounded_channel();
        (Arc::new(CheckpointHub { requested: Mutex::new(BTreeSet::new()), views_written: Mutex::new(HashMap::new()), contributions }), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.requested.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `epoch` as a checkpoint; call before its barrier is injected.
    pub fn request(&self, epoch: u64) {
        self.lock().insert(epoch);
    }

    /// The checkpoint of `epoch` was written or abandoned.
    pub fn finish(&self, epoch: u64) {
        self.lock().remove(&epoch);
    }

    pub fn is_requested(&self, epoch: u64) -> bool {
        self.lock().contains(&epoch)
    }

    /// The checkpoint of `epoch`, holding the state of `views`, was written.
    pub fn written(&self, epoch: u64, views: impl Iterator<Item = ObjectId>) {
        let mut written = self.views_written.lock().unwrap_or_else(|p| p.into_inner());
        for view in views {
            written.insert(view, epoch);
        }
    }

    /// The epoch of the newest written checkpoint that holds the state of `view`.
    pub fn written_for(&self, view: ObjectId) -> Option<u64> {
        self.views_written.lock().unwrap_or_else(|p| p.into_inner()).get(&view).copied()
    }

    pub fn contribute(&self, contribution: Contribution) {
        // The collector is gone only when the server shuts down.
        let _ = self.contributions.send(contribution);
    }
}
