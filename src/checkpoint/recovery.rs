//! Loading the newest intact checkpoint at start: the state every reader and view job resumes
//! from.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use weir_catalog::ObjectId;

use super::collector::DIFF_COLUMN;
use super::ipc;
use super::snapshot::{SourceState, TableState};
use super::store::CheckpointStore;
use crate::dataflow::operators::OperatorState;
use crate::dataflow::{Changes, EventTime};
use crate::error::{Result, SqlState, WeirError};

/// A view's checkpointed state.
pub struct RecoveredView {
    /// Per operator, its chain of snapshots: a full one, then changes in epoch order.
    pub operators: Vec<(usize, Vec<OperatorState>)>,
    pub contents: Vec<Changes>,
    pub watermark: EventTime,
}

/// The checkpoint recovery resumes from.
pub struct Recovered {
    pub epoch: u64,
    pub sources: HashMap<ObjectId, SourceState>,
    pub tables: HashMap<ObjectId, TableState>,
    pub views: HashMap<ObjectId, RecoveredView>,
}

fn corrupt(what: String) -> WeirError {
    WeirError::new(SqlState::DataCorrupted, format!("checkpoint: {what}"))
}

/// The newest complete checkpoint in `store`, read whole; `None` when there is none.
pub async fn load(store: &CheckpointStore) -> Result<Option<Recovered>> {
    let started = Instant::now();
    let Some(manifest) = store.latest().await? else { return Ok(None) };
    // Per view and operator, its snapshots by epoch ("" for the full one, so it sorts first;
    // epochs of changes are zero-padded, so they sort in order).
    let mut operators: BTreeMap<ObjectId, BTreeMap<usize, BTreeMap<String, OperatorState>>> = BTreeMap::new();
    let mut contents: HashMap<ObjectId, Vec<Changes>> = HashMap::new();
    for (name, part) in &manifest.parts {
        let parts: Vec<&str> = name.split('/').collect();
        let (_, batches) = ipc::decode(store.read_part(part).await?)?;
        match parts[..] {
            ["view", id, "op", node, entry] | ["view", id, "op", node, "delta", _, entry] => {
                let id: ObjectId = id.parse().map_err(|_| corrupt(format!("bad part name {name}")))?;
                let node: usize = node.parse().map_err(|_| corrupt(format!("bad part name {name}")))?;
                let epoch = if parts.len() == 7 { parts[5] } else { "" };
                let batch = one_batch(batches, name)?;
                let chain = operators.entry(id).or_default().entry(node).or_default();
                chain.entry(epoch.to_string()).or_default().push((entry.to_string(), batch));
            }
            // The base, then the deltas in epoch order: the manifest's parts are sorted by name,
            // and delta names end in a zero-padded epoch.
            ["view", id, "contents"] | ["view", id, "contents", "delta", _] => {
                let id: ObjectId = id.parse().map_err(|_| corrupt(format!("bad part name {name}")))?;
                let changes: Vec<Changes> = batches.into_iter().map(content_changes).collect::<Result<_>>()?;
                contents.entry(id).or_default().extend(changes);
            }
            _ => return Err(corrupt(format!("unknown part {name}"))),
        }
    }
    let mut views = HashMap::new();
    for (id, record) in &manifest.views {
        views.insert(
            *id,
            RecoveredView {
                operators: operators
                    .remove(id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(node, chain)| (node, chain.into_values().collect()))
                    .collect(),
                contents: contents.remove(id).unwrap_or_default(),
                watermark: record.watermark,
            },
        );
    }
    tracing::info!(
        epoch = manifest.epoch,
        views = views.len(),
        sources = manifest.sources.len(),
        load_ms = started.elapsed().as_millis() as u64,
        store = store.location(),
        "loaded checkpoint"
    );
    Ok(Some(Recovered {
        epoch: manifest.epoch,
        sources: manifest.sources.into_iter().collect(),
        tables: manifest.tables.into_iter().collect(),
        views,
    }))
}

fn one_batch(batches: Vec<RecordBatch>, name: &str) -> Result<RecordBatch> {
    let Some(first) = batches.first() else { return Err(corrupt(format!("part {name} holds no batch"))) };
    let schema = first.schema();
    Ok(datafusion::arrow::compute::concat_batches(&schema, &batches)?)
}

/// A `contents` batch back into rows and their multiplicities.
fn content_changes(batch: RecordBatch) -> Result<Changes> {
    let last = batch.num_columns().checked_sub(1).ok_or_else(|| corrupt("a contents part without columns".into()))?;
    if batch.schema().field(last).name() != DIFF_COLUMN {
        return Err(corrupt("a contents part without its diff column".into()));
    }
    let diffs = batch.column(last).as_primitive_opt::<Int64Type>().cloned().ok_or_else(|| corrupt("diffs are not integers".into()))?;
    let mut rows = batch;
    rows.remove_column(last);
    Ok(Changes::new(rows, diffs))
}
