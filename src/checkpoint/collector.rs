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
use super::snapshot::{CheckpointHub, Contribution, SourceState, TableState, ViewState};
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

/// How long a checkpoint may wait for the state of every source and view.
const GATHER_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Checkpoints remembered for `weir_catalog.checkpoints`.
const RECORDS_KEPT: usize = 100;

struct Pending {
    /// Sources and tables still to hand in their state.
    sources: HashSet<ObjectId>,
    views: HashSet<ObjectId>,
    source_states: BTreeMap<ObjectId, SourceState>,
    table_states: BTreeMap<ObjectId, TableState>,
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
    /// Checkpoints written since the server started.
    pub written_total: std::sync::atomic::AtomicU64,
    /// The epoch of the newest checkpoint written (or recovered from).
    written: watch::Sender<u64>,
    /// The catalog's version, recorded in each manifest.
    catalog_version: CatalogVersion,
}

/// Reads the catalog's version when a checkpoint is written.
pub type CatalogVersion = Box<dyn Fn() -> u64 + Send + Sync>;

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").field("store", &self.store.location()).finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// A checkpointer writing to `store`, starting after the checkpoint of `recovered_epoch`.
    pub fn start(store: Arc<CheckpointStore>, recovered_epoch: u64, catalog_version: CatalogVersion) -> Arc<Checkpointer> {
        let (hub, contributions) = CheckpointHub::new();
        let (written, _) = watch::channel(recovered_epoch);
        let checkpointer = Arc::new(Checkpointer {
            store,
            hub,
            pending: Mutex::new(BTreeMap::new()),
            records: Mutex::new(VecDeque::new()),
            written_total: std::sync::atomic::AtomicU64::new(0),
            written,
            catalog_version,
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

    /// Whether a checkpoint is still being gathered (the next one waits for it). One gathered
    /// for longer than [`GATHER_LIMIT`] is abandoned with a warning naming what it waits for:
    /// a view or source that never hands in its state must not stop checkpoints (and the
    /// broker commits that follow them) for good.
    pub fn busy(&self) -> bool {
        let mut pending = self.lock();
        let stale: Vec<u64> = pending.iter().filter(|(_, p)| p.started.elapsed() > GATHER_LIMIT).map(|(e, _)| *e).collect();
        for epoch in stale {
            if let Some(p) = pending.remove(&epoch) {
                tracing::warn!(epoch, sources = ?p.sources, views = ?p.views, "checkpoint abandoned: these did not hand in their state");
                self.hub.finish(epoch);
            }
        }
        !pending.is_empty()
    }

    /// The checkpoint of `epoch` expects these sources (and tables) and views; call before injecting the
    /// barrier. Returns false, and takes no checkpoint, when there is nothing to checkpoint.
    pub fn begin(&self, epoch: u64, sources: HashSet<ObjectId>, views: HashSet<ObjectId>) -> bool {
        if sources.is_empty() && views.is_empty() {
            return false;
        }
        self.hub.request(epoch);
        let pending = Pending {
            sources,
            views,
            source_states: BTreeMap::new(),
            table_states: BTreeMap::new(),
            view_states: BTreeMap::new(),
            started: Instant::now(),
        };
        self.lock().insert(epoch, pending);
        true
    }

    /// A source or view went away: no checkpoint waits for it any more.
    pub fn forget(&self, id: ObjectId) {
        let mut pending = self.lock();
        for p in pending.values_mut() {
            p.sources.remove(&id);
            p.views.remove(&id);
            p.source_states.remove(&id);
            p.table_states.remove(&id);
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
        // Also looked at on a timer: a checkpoint completes without a last contribution when
        // what it still waited for was dropped.
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let contribution = tokio::select! {
                c = contributions.recv() => match c {
                    Some(c) => Some(c),
                    None => return,
                },
                _ = tick.tick() => None,
            };
            let Some(this) = this.upgrade() else { return };
            let ready = {
                let mut pending = this.lock();
                match contribution {
                    Some(Contribution::Source { id, epoch, state }) => {
                        if let Some(p) = pending.get_mut(&epoch)
                            && p.sources.remove(&id)
                        {
                            p.source_states.insert(id, state);
                        }
                    }
                    Some(Contribution::Table { id, epoch, state }) => {
                        if let Some(p) = pending.get_mut(&epoch)
                            && p.sources.remove(&id)
                        {
                            p.table_states.insert(id, state);
                        }
                    }
                    Some(Contribution::View { id, epoch, state }) => {
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
                    }
                    None => {}
                }
                let complete = pending.iter().find(|(_, p)| p.complete()).map(|(e, _)| *e);
                complete.and_then(|epoch| pending.remove(&epoch).map(|p| (epoch, p)))
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
                        this.written_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        // For inspection: state is keyed by object id, and ids are never reused, so recovery
        // needs no version check (objects the checkpoint does not know start afresh).
        let mut writer = self.store.begin(epoch, (self.catalog_version)());
        let mut bytes = 0u64;
        let (views, sources) = (p.view_states.len(), p.source_states.len());
        writer.manifest_mut().sources = p.source_states.into_iter().collect();
        writer.manifest_mut().tables = p.table_states.into_iter().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_checkpoint_completes_when_what_it_waits_for_goes_away() {
        let checkpointer = Checkpointer::start(Arc::new(CheckpointStore::in_memory()), 0, Box::new(|| 3));
        // Nothing to checkpoint: no checkpoint is started, so none can hang.
        assert!(!checkpointer.begin(1, HashSet::new(), HashSet::new()));
        assert!(!checkpointer.busy());
        assert!(checkpointer.begin(2, HashSet::from([7]), HashSet::from([9])));
        assert!(checkpointer.busy());
        let state = SourceState { read_any: true, ..SourceState::default() };
        checkpointer.hub.contribute(Contribution::Source { id: 7, epoch: 2, state: state.clone() });
        // View 9 is dropped before it handed anything in.
        checkpointer.forget(9);
        let mut written = checkpointer.written();
        tokio::time::timeout(std::time::Duration::from_secs(5), written.wait_for(|e| *e == 2)).await.unwrap().unwrap();
        assert!(!checkpointer.busy());
        let manifest = checkpointer.store().latest().await.unwrap().unwrap();
        assert_eq!((manifest.epoch, manifest.catalog_version), (2, 3));
        assert_eq!(manifest.sources.get(&7), Some(&state));
        assert!(manifest.views.is_empty());
        assert_eq!(checkpointer.records().len(), 1);
    }
}
