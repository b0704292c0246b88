//! Gathers what readers and view jobs hand in at a checkpoint barrier and writes the checkpoint
//! once everything expected is in: the parts, then the manifest, then garbage collection.
//!
//! A checkpoint waits for every source reader and every checkpointed view that was running
//! when its barrier was injected ([`Checkpointer::begin`]). A view that is dropped or fails
//! meanwhile is no longer waited for ([`Checkpointer::forget`]); a view whose operators cannot
//! be snapshotted is left out (recovery rebuilds it from its inputs). Checkpoints are written
//! one at a time, in epoch order, by one task: a slow store delays the next checkpoint, never a
//! view.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tokio::sync::{mpsc, watch};
use weir_catalog::ObjectId;

use super::ipc;
use super::snapshot::{CheckpointHub, Contribution, SourceState, TableState, ViewState};
use super::store::{CheckpointStore, CheckpointWriter, PartRef, ViewRecord};
use crate::dataflow::Changes;
use crate::dataflow::operators::Snapshot;
use crate::dataflow::view_data::ViewData;
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
    /// A gathered checkpoint is being written. The next one is not requested meanwhile: its
    /// operators could hand in only their changes once this one is written.
    writing: std::sync::atomic::AtomicBool,
    /// Checkpoints written since the server started.
    pub written_total: std::sync::atomic::AtomicU64,
    /// The epoch of the newest checkpoint written (or recovered from).
    written: watch::Sender<u64>,
    /// The catalog's version, recorded in each manifest.
    catalog_version: CatalogVersion,
    /// Per view, its contents as the newest written checkpoint holds them, and the parts that
    /// hold them: the next checkpoint writes only the difference (see [`ContentsChain`]).
    contents: Mutex<HashMap<ObjectId, ContentsChain>>,
    /// Per operator (view, node), the parts that hold its state in the newest written
    /// checkpoint: a full snapshot, then snapshots of changes. An operator hands in changes only
    /// when that checkpoint holds its previous snapshot, so the next checkpoint lists these
    /// parts again plus the new one.
    operator_chains: Mutex<HashMap<(ObjectId, usize), PartChain>>,
}

/// Named parts that together hold one piece of state, in the order they apply.
type PartChain = Vec<(String, PartRef)>;

/// A view's contents in checkpoints: a base part, then delta parts (the changes between two
/// checkpoints' versions of the contents, from the persistent map's `diff`). Recovery applies
/// them in order. A new base is written once the deltas outgrow the base.
struct ContentsChain {
    /// The version the parts add up to.
    version: ViewData,
    /// `(part name, part)`: the base first, then the deltas in epoch order.
    parts: PartChain,
    base_bytes: u64,
    delta_bytes: u64,
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
            writing: std::sync::atomic::AtomicBool::new(false),
            written_total: std::sync::atomic::AtomicU64::new(0),
            written,
            catalog_version,
            contents: Mutex::new(HashMap::new()),
            operator_chains: Mutex::new(HashMap::new()),
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

    /// Whether a checkpoint is still being gathered or written (the next one waits for it). One gathered
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
        !pending.is_empty() || self.writing.load(std::sync::atomic::Ordering::Acquire)
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
        self.contents.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.operator_chains.lock().unwrap_or_else(|p| p.into_inner()).retain(|(view, _), _| *view != id);
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
                let ready = complete.and_then(|epoch| pending.remove(&epoch).map(|p| (epoch, p)));
                if ready.is_some() {
                    // Under the lock that `busy` takes: it never sees the checkpoint in neither.
                    this.writing.store(true, std::sync::atomic::Ordering::Release);
                }
                ready
            };
            if let Some((epoch, p)) = ready {
                // Older checkpoints still gathering would now be useless: this one supersedes them.
                let older: Vec<u64> = this.lock().range(..epoch).map(|(e, _)| *e).collect();
                for e in older {
                    this.lock().remove(&e);
                    this.hub.finish(e);
                }
                let started = p.started;
                let written = tracing::Instrument::instrument(this.write(epoch, p), tracing::info_span!("checkpoint", epoch)).await;
                // Done before the epoch is published: whoever waits for it may start the next.
                this.hub.finish(epoch);
                this.writing.store(false, std::sync::atomic::Ordering::Release);
                match written {
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
        let mut chains = Vec::with_capacity(views);
        let mut operator_chains = Vec::new();
        writer.manifest_mut().sources = p.source_states.into_iter().collect();
        writer.manifest_mut().tables = p.table_states.into_iter().collect();
        for (id, view) in p.view_states {
            let previous: Vec<Option<PartChain>> = {
                let known = self.operator_chains.lock().unwrap_or_else(|p| p.into_inner());
                view.operators.iter().map(|(node, _)| known.get(&(id, *node)).cloned()).collect()
            };
            if view.operators.iter().zip(&previous).any(|((_, s), p)| matches!(s, Snapshot::Changes(_)) && p.is_none()) {
                // Cannot happen (changes are handed in only on top of a written snapshot), but
                // if it did, the changes alone would restore a wrong state.
                tracing::warn!(view = id, "view left out of the checkpoint: operator changes without the state they apply to");
                continue;
            }
            for ((node, snapshot), previous) in view.operators.into_iter().zip(previous) {
                let (mut chain, state, prefix) = match snapshot {
                    Snapshot::Full(state) => (Vec::new(), state, format!("view/{id}/op/{node}")),
                    Snapshot::Changes(state) => {
                        let chain = previous.unwrap_or_default();
                        for (name, part) in &chain {
                            writer.keep_part(name, part.clone());
                        }
                        (chain, state, format!("view/{id}/op/{node}/delta/{epoch:020}"))
                    }
                };
                for (name, batch) in state {
                    let data = off_the_runtime(move || ipc::encode(&batch.schema(), &[batch])).await?;
                    let name = format!("{prefix}/{name}");
                    let part = writer.put_part(&name, data).await?;
                    bytes += part.bytes;
                    chain.push((name, part));
                }
                operator_chains.push(((id, node), chain));
            }
            let parts = self.write_contents(&mut writer, epoch, id, &view.contents).await?;
            bytes += parts.last().map_or(0, |(_, p)| p.bytes);
            chains.push((id, view.contents.clone(), parts));
            writer.manifest_mut().views.insert(id, ViewRecord { watermark: view.watermark });
        }
        let manifest = writer.commit().await?;
        self.operator_chains.lock().unwrap_or_else(|p| p.into_inner()).extend(operator_chains);
        self.hub.written(epoch, manifest.views.keys().copied());
        // Only a written checkpoint moves the chains: after a failed one, the next checkpoint's
        // deltas start from what the last written one holds.
        let mut contents = self.contents.lock().unwrap_or_else(|p| p.into_inner());
        for (id, version, parts) in chains {
            let is_base = parts.len() == 1;
            let last = parts.last().map_or(0, |(_, p)| p.bytes);
            let chain = contents.entry(id).or_insert_with(|| ContentsChain { version: version.clone(), parts: Vec::new(), base_bytes: 0, delta_bytes: 0 });
            if is_base {
                chain.base_bytes = last;
                chain.delta_bytes = 0;
            } else {
                chain.delta_bytes += last;
            }
            chain.version = version;
            chain.parts = parts;
        }
        drop(contents);
        Ok(CheckpointRecord { epoch, created_at_micros: manifest.created_at_micros, bytes_written: bytes, duration_ms: 0, views, sources })
    }
}

impl Checkpointer {
    /// Writes a view's contents into the checkpoint: the changes since the newest written
    /// checkpoint's version as a delta part (earlier parts of the chain kept), or the whole
    /// contents as a new base when there is no chain or its deltas would outgrow the base.
    /// Returns the chain of parts the manifest now lists, the one written last.
    async fn write_contents(&self, writer: &mut CheckpointWriter<'_>, epoch: u64, id: ObjectId, contents: &ViewData) -> Result<PartChain> {
        let previous = {
            let chains = self.contents.lock().unwrap_or_else(|p| p.into_inner());
            chains.get(&id).map(|c| (c.version.clone(), c.parts.clone(), c.base_bytes, c.delta_bytes))
        };
        if let Some((version, parts, base_bytes, delta_bytes)) = previous {
            let current = contents.clone();
            let delta = off_the_runtime(move || {
                let (schema, batches) = contents_batches(current.schema(), current.changes_since(&version)?)?;
                ipc::encode(&schema, &batches)
            })
            .await?;
            if delta_bytes + delta.len() as u64 <= base_bytes {
                let name = format!("view/{id}/contents/delta/{epoch:020}");
                let part = writer.put_part(&name, delta).await?;
                for (name, part) in &parts {
                    writer.keep_part(name, part.clone());
                }
                let mut chain = parts;
                chain.push((name, part));
                return Ok(chain);
            }
        }
        let current = contents.clone();
        let base = off_the_runtime(move || {
            let (schema, batches) = contents_batches(current.schema(), current.as_changes()?)?;
            ipc::encode(&schema, &batches)
        })
        .await?;
        let name = format!("view/{id}/contents");
        let part = writer.put_part(&name, base).await?;
        Ok(vec![(name, part)])
    }
}

/// Runs CPU-bound encoding on the blocking pool: a large view's parts take seconds to encode,
/// which must not hold up the runtime's workers (queries, readers, jobs).
async fn off_the_runtime<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| crate::error::WeirError::internal(format!("checkpoint encoding stopped: {e}")))?
}

/// Rows plus their multiplicity (or, in a delta, the change of it) as batches of the contents'
/// columns and a `weir_diff` column.
fn contents_batches(schema: &datafusion::arrow::datatypes::SchemaRef, changes: Vec<Changes>) -> Result<(Arc<Schema>, Vec<RecordBatch>)> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for changes in changes {
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

    /// Contents go as a base, then as deltas (and an operator's state as a full snapshot, then
    /// its changes) between the written versions; recovery applies
    /// them in order and gets the newest version back, including retracted rows.
    #[tokio::test]
    async fn contents_are_written_as_a_base_then_deltas() {
        use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
        use datafusion::arrow::datatypes::SchemaRef;
        let store = Arc::new(CheckpointStore::in_memory());
        let checkpointer = Checkpointer::start(store.clone(), 0, Box::new(|| 1));
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new("n", DataType::Int64, true)]));
        let changes = |keys: &[&str], n: &[i64], diff: i64| {
            let rows = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(keys.to_vec())), Arc::new(Int64Array::from(n.to_vec()))],
            )
            .unwrap();
            Changes::uniform(rows, diff)
        };
        let mut contents = ViewData::new(schema.clone()).unwrap();
        let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        contents.apply(&changes(&key_refs, &vec![1; 200], 1)).unwrap();
        let mut written = checkpointer.written();
        for (epoch, step) in [(1u64, 0), (2, 1), (3, 2)] {
            if step == 1 {
                contents.apply(&changes(&["key-3"], &[1], -1)).unwrap();
                contents.apply(&changes(&["key-3", "new"], &[2, 7], 1)).unwrap();
            }
            if step == 2 {
                contents.apply(&changes(&["key-5"], &[1], -1)).unwrap();
            }
            assert!(checkpointer.begin(epoch, HashSet::new(), HashSet::from([9])));
            // Operator 4 hands in its state, then only its changes (tagged with the epoch).
            let tag: ArrayRef = Arc::new(Int64Array::from(vec![epoch as i64]));
            let operator_state = vec![("groups".to_string(), RecordBatch::try_from_iter([("epoch", tag)]).unwrap())];
            let snapshot = if step == 0 { Snapshot::Full(operator_state) } else { Snapshot::Changes(operator_state) };
            let state = ViewState { operators: vec![(4, snapshot)], contents: contents.clone(), watermark: 0 };
            checkpointer.hub.contribute(Contribution::View { id: 9, epoch, state: Ok(state) });
            tokio::time::timeout(std::time::Duration::from_secs(5), written.wait_for(|e| *e == epoch)).await.unwrap().unwrap();
        }
        let manifest = store.latest().await.unwrap().unwrap();
        let names: Vec<&String> = manifest.parts.keys().collect();
        assert_eq!(checkpointer.hub.written_for(9), Some(3));
        let (operator_parts, names): (Vec<&String>, Vec<&String>) = names.into_iter().partition(|n| n.contains("/op/"));
        assert_eq!(
            operator_parts,
            ["view/9/op/4/delta/00000000000000000002/groups", "view/9/op/4/delta/00000000000000000003/groups", "view/9/op/4/groups"]
        );
        assert_eq!(names.len(), 3, "a base and two deltas: {names:?}");
        assert!(names[1].ends_with("/00000000000000000002") && names[2].ends_with("/00000000000000000003"), "{names:?}");
        let deltas: u64 = manifest.parts.iter().filter(|(n, _)| n.contains("/delta/")).map(|(_, p)| p.bytes).sum();
        assert!(deltas < manifest.parts["view/9/contents"].bytes, "deltas are smaller than the base");

        let recovered = crate::checkpoint::recovery::load(&store).await.unwrap().unwrap();
        // The operator's chain comes back in order: its full state, then its changes.
        let [(4, chain)] = &recovered.views[&9].operators[..] else { panic!("one operator's chain") };
        let epochs: Vec<i64> = chain.iter().map(|state| state[0].1.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0)).collect();
        assert_eq!(epochs, [1, 2, 3]);
        let mut restored = ViewData::new(schema.clone()).unwrap();
        for c in &recovered.views[&9].contents {
            restored.apply(c).unwrap();
        }
        assert_eq!(restored.batches(), contents.batches());
        assert_eq!(restored.len(), 200);
    }
}

