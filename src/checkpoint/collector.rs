//! Gathers what readers and view jobs hand in at a checkpoint barrier and writes the checkpoint
//! once everything expected is in: the parts, then the manifest, then garbage collection.
//!
//! A checkpoint waits for every source reader and every checkpointed view that was running
//! when its barrier was injected ([`Checkpointer::begin`]). A view that is dropped or fails
//! meanwhile is no longer waited for ([`Checkpointer::forget`]); a view whose operators cannot
//! be snapshotted is left out (recovery rebuilds it from its inputs). Checkpoints are written
//! one at a time, in epoch order, by one task: a slow store delays the next checkpoint, never a
//! view.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tokio::sync::{mpsc, watch};
use weir_catalog::ObjectId;

use super::ipc;
use super::snapshot::{CheckpointHub, Contribution, SourceState, ViewState};
use super::store::{CheckpointStore, ViewRecord};
use crate::error::Result;

/// The column that carries each content row's multiplicity in a `contents` part.
pub const DIFF_COLUMN: &str = "weir_diff";

/// A written checkpoint, as `weir_catalog.checkpoints` shows it.
#[derive(Debug, Clone)]
pub struct CheckpointRecord {
    pub epoch: u64,
    pub created_at_micros: i64,
    pub bytes_written: u64,
    pub duration_ms: u64,
    pub views: usize,
    pub sources: usize,
}

/// Checkpoints remembered for `weir_catalog.checkpoints`.
const RECORDS_KEPT: usize = 100;

struct Pending {
    sources: HashSet<ObjectId>,
    views: HashSet<ObjectId>,
    source_states: BTreeMap<ObjectId, SourceState>,
    view_states: BTreeMap<ObjectId, ViewState>,
    started: Instant,
}

impl Pending {
    fn complete(&self) -> bool {
        self.sources.is_empty() && self.views.is_empty()
    }
}

pub struct Checkpointer {
    store: Arc<CheckpointStore>,
    pub hub: Arc<CheckpointHub>,
    pending: Mutex<BTreeMap<u64, Pending>>,
    records: Mutex<VecDeque<CheckpointRecord>>,
    /// The epoch of the newest checkpoint written (or recovered from).
    written: watch::Sender<u64>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").field("store", &self.store.location()).finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// A checkpointer writing to `store`, starting after the checkpoint of `recovered_epoch`.
    pub fn start(store: Arc<CheckpointStore>, recovered_epoch: u64) -> Arc<Checkpointer> {
        let (hub, contributions) = CheckpointHub::new();
        let (written, _) = watch::channel(recovered_epoch);
        let checkpointer = Arc::new(Checkpointer {
            store,
            hub,
            pending: Mutex::new(BTreeMap::new()),
            records: Mutex::new(VecDeque::new()),
            written,
        });
        tokio::spawn(Self::collect(Arc::downgrade(&checkpointer), contributions));
        checkpointer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// Whether a checkpoint is still being gathered or written (the next one waits for it).
    pub fn busy(&self) -> bool {
        !self.lock().is_empty()
    }

    /// The checkpoint of `epoch` expects these sources and views; call before injecting the
    /// barrier.
    pub fn begin(&self, epoch: u64, sources: HashSet<ObjectId>, views: HashSet<ObjectId>) {
        self.hub.request(epoch);
        let pending = Pending { sources, views, source_states: BTreeMap::new(), view_states: BTreeMap::new(), started: Instant::now() };
        self.lock().insert(epoch, pending);
    }

    /// A source or view went away: no checkpoint waits for it any more.
    pub fn forget(&self, id: ObjectId) {
        let mut pending = self.lock();
        for p in pending.values_mut() {
            p.sources.remove(&id);
            p.views.remove(&id);
            p.source_states.remove(&id);
            p.view_states.remove(&id);
        }
    }

    /// Watch the epoch of the newest written checkpoint.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    pub fn records(&self) -> Vec<CheckpointRecord> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    async fn collect(this: std::sync::Weak<Self>, mut contributions: mpsc::UnboundedReceiver<Contribution>) {
        while let Some(contribution) = contributions.recv().await {
            let Some(this) = this.upgrade() else { return };
            let ready = {
                let mut pending = this.lock();
                let epoch = match contribution {
                    Contribution::Source { id, epoch, state } => {
                        if let Some(p) = pending.get_mut(&epoch)
                            && p.sources.remove(&id)
                        {
                            p.source_states.insert(id, state);
                        }
                        epoch
                    }
                    Contribution::View { id, epoch, state } => {
                        if let Some(p) = pending.get_mut(&epoch)
                            && p.views.remove(&id)
                        {
                            match state {
                                Ok(state) => {
                                    p.view_states.insert(id, state);
                                }
                                Err(e) => tracing::info!(view = id, reason = %e, "view left out of the checkpoint; recovery rebuilds it from its inputs"),
                            }
                        }
                        epoch
                    }
                };
                match pending.get(&epoch) {
                    Some(p) if p.complete() => pending.remove(&epoch).map(|p| (epoch, p)),
                    _ => None,
                }
            };
            if let Some((epoch, p)) = ready {
                // Older checkpoints still gathering would now be useless: this one supersedes them.
                let older: Vec<u64> = this.lock().range(..epoch).map(|(e, _)| *e).collect();
                for e in older {
                    this.lock().remove(&e);
                    this.hub.finish(e);
                }
                let started = p.started;
                match this.write(epoch, p).await {
                    Ok(record) => {
                        tracing::info!(
                            epoch,
                            bytes = record.bytes_written,
                            duration_ms = started.elapsed().as_millis() as u64,
                            views = record.views,
                            "checkpoint written"
                        );
                        let mut records = this.records.lock().unwrap_or_else(|p| p.into_inner());
                        if records.len() == RECORDS_KEPT {
                            records.pop_front();
                        }
                        records.push_back(CheckpointRecord { duration_ms: started.elapsed().as_millis() as u64, ..record });
                        drop(records);
                        this.written.send_replace(epoch);
                    }
                    Err(e) => tracing::warn!(epoch, error = %e, "checkpoint not written; the next one will try again"),
                }
                this.hub.finish(epoch);
                if let Err(e) = this.store.collect_garbage().await {
                    tracing::warn!(error = %e, "could not delete old checkpoints");
                }
            }
        }
    }

    async fn write(&self, epoch: u64, p: Pending) -> Result<CheckpointRecord> {
        let mut writer = self.store.begin(epoch, 0);
        let mut bytes = 0u64;
        let (views, sources) = (p.view_states.len(), p.source_states.len());
        writer.manifest_mut().sources = p.source_states.into_iter().collect();
        for (id, view) in p.view_states {
            for (node, state) in view.operators {
                for (name, batch) in state {
                    let data = ipc::encode(&batch.schema(), &[batch])?;
                    bytes += writer.put_part(&format!("view/{id}/op/{node}/{name}"), data).await?.bytes;
                }
            }
            let (schema, batches) = contents_batches(&view.contents)?;
            bytes += writer.put_part(&format!("view/{id}/contents"), ipc::encode(&schema, &batches)?).await?.bytes;
            writer.manifest_mut().views.insert(id, ViewRecord { watermark: view.watermark });
        }
        let manifest = writer.commit().await?;
        Ok(CheckpointRecord { epoch, created_at_micros: manifest.created_at_micros, bytes_written: bytes, duration_ms: 0, views, sources })
    }
}

/// A view's contents as batches of its rows plus their multiplicity.
fn contents_batches(contents: &crate::dataflow::view_data::ViewData) -> Result<(Arc<Schema>, Vec<RecordBatch>)> {
    let mut fields: Vec<Field> = contents.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for changes in contents.as_changes()? {
        let mut columns: Vec<ArrayRef> = changes.rows.columns().to_vec();
        columns.push(Arc::new(changes.diffs));
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok((schema, batches))
}
