//! Grouped aggregation, maintained incrementally.
//!
//! Groups live in slots: a hash map from the group key (Arrow row format) to a slot index, and
//! one accumulator per aggregate call holding every slot's state in columns. Keys of one or two
//! integer-like columns (`auction, window_start`) are kept as a packed pair of integers
//! instead, and output rows are built from those. A batch of changes
//! is evaluated column-wise (group keys, arguments), each row is mapped to its slot, and every
//! accumulator is updated with the whole batch.
//!
//! **Windowed** aggregates group by a column with a close offset (a window bound): the slots
//! of a window are also listed under the window's close time, and when the watermark reaches it
//! they are emitted (in `EMIT ON WINDOW CLOSE` mode; in update mode their changes are flushed)
//! and freed. Their slots are reused, so state is bounded by the open windows.
//!
//! **HOP windows by panes** (when the planner chooses it, see `hop_panes.rs`): the input has a
//! row per pane instead of per window, groups are kept per key and pane, and a window's rows are
//! merged from its panes' groups when it closes.
//!
//! **Update mode** emits, at each barrier, the groups the epoch touched: the previously
//! emitted row of a group is retracted and its new row inserted (skipped when equal). The
//! previously emitted row is kept in row format per slot.
//!
//! **Checkpoints** are incremental: once a first snapshot was taken, the operator notes the
//! slots each epoch touched and the keys of groups it freed, and a checkpoint whose predecessor
//! was written holds only those groups (their whole state) and those keys (tombstones).
//! Groups of windows that closed need no tombstone: restoring drops every group whose window
//! closed by the restored watermark. A full snapshot is taken instead when the changes since the
//! last full one would outgrow it, so a chain never costs more than twice the state to read.
//!
//! # Correctness
//! After the barrier of epoch `e`, the integral of the operator's output is exactly
//! `{ (key, aggregates(rows of key)) : key has rows }` over the integral of its input up to `e`:
//! a group's output is re-derived from its accumulators (order-independent, see
//! `accumulators.rs`) whenever its rows changed, the old output is retracted, and a group whose
//! row count drops to zero is retracted and freed. A global aggregate (no GROUP BY) always has
//! its one row, as in SQL. In `EMIT ON WINDOW CLOSE` mode a window's rows are emitted once, when
//! the watermark passes its close time; no row of that window can arrive later because the
//! sources drop rows below the watermark and the close offset bounds every row of the window.

use std::collections::BTreeMap;

// hashbrown with foldhash (DataFusion's default): std's SipHash showed in profiles.
use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use weir_sql::streaming::{AggregateCall, HopPanes, WindowKey};

use super::{Operator, OperatorState, SavedBatch, Snapshot};
use super::accumulators::{self, GroupAccumulator};
use super::hop_panes::PaneMerger;
use super::stateless::conform;
use crate::dataflow::{Changes, EventTime};
use crate::error::{Result, WeirError};

pub struct CallConfig {
    pub call: AggregateCall,
    pub arg: Arc<dyn PhysicalExpr>,
    pub input_type: DataType,
}

pub struct AggregateConfig {
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub calls: Vec<CallConfig>,
    pub input_schema: SchemaRef,
    pub window: Option<WindowKey>,
    pub emit_on_close: bool,
    pub input_append_only: bool,
    pub panes: Option<HopPanes>,
    pub output: SchemaRef,
}

pub struct AggregateOp {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    args: Vec<Arc<dyn PhysicalExpr>>,
    accumulators: Vec<Box<dyn GroupAccumulator>>,
    /// No GROUP BY: one group that always exists.
    global: bool,
    key_converter: RowConverter,
    key_types: Vec<DataType>,
    output: SchemaRef,
    output_converter: RowConverter,
    window: Option<WindowKey>,
    emit_on_close: bool,
    /// HOP windows kept by panes: builds a window's rows from its panes' groups.
    panes: Option<PaneMerger>,

    slots: HashMap<Box<[u8]>, usize>,
    /// When every group key is integer-like and there are at most two (the common
    /// `GROUP BY auction, window_start`): the slots by packed key, which hash and compare as two
    /// integers instead of row-format bytes. `slots` is then unused.
    packed: Option<HashMap<PackedKey, usize>>,
    /// Per slot, its packed key (packed mode).
    packed_keys: Vec<PackedKey>,
    /// Per slot: its key (None when free; empty in packed mode), input row count, last emitted
    /// output row.
    keys: Vec<Option<Box<[u8]>>>,
    row_counts: Vec<i64>,
    emitted: Vec<Option<Box<[u8]>>>,
    dirty: Vec<bool>,
    dirty_list: Vec<usize>,
    free: Vec<usize>,
    /// Windowed: close time → slots of windows closing then.
    closing: BTreeMap<EventTime, Vec<usize>>,
    slot_close: Vec<EventTime>,
    watermark: EventTime,
    /// Rows that reached the operator for an already-closed window (dropped).
    pub late_rows: u64,
    /// What changed since the previous checkpoint snapshot (see [`ChangeLog`]).
    changes: ChangeLog,
}

/// The groups an aggregate changed since its previous checkpoint snapshot: what an incremental
/// snapshot holds. Kept only once checkpoints are taken, and given up (the next snapshot is
/// then a full one) when it outgrows the state.
#[derive(Default)]
struct ChangeLog {
    /// Whether changes are noted: from the first snapshot on, while they stay smaller than the
    /// state.
    tracking: bool,
    /// Per slot, whether it is in `slots`.
    noted: Vec<bool>,
    /// Slots an epoch touched: their groups are written whole (a slot freed since is skipped,
    /// one reused holds a new group that must be written anyway).
    slots: Vec<usize>,
    /// Keys of groups freed because their rows were retracted (packed key, row-format key).
    removed: Vec<(PackedKey, Box<[u8]>)>,
    /// Groups written in snapshots of changes since the last full snapshot.
    rows_since_full: usize,
}

impl ChangeLog {
    fn note_slot(&mut self, slot: usize) {
        if !self.tracking {
            return;
        }
        if self.noted.len() <= slot {
            self.noted.resize(slot + 1, false);
        }
        if !self.noted[slot] {
            self.noted[slot] = true;
            self.slots.push(slot);
        }
    }

    fn note_removed(&mut self, packed: PackedKey, key: &[u8], live: usize) {
        if !self.tracking {
            return;
        }
        self.removed.push((packed, key.into()));
        if self.removed.len() > live.max(1024) {
            // Churn beyond the state's size: a full snapshot is smaller than the tombstones.
            self.give_up();
        }
    }

    fn give_up(&mut self) {
        self.tracking = false;
        self.clear();
    }

    fn clear(&mut self) {
        for s in self.slots.drain(..) {
            self.noted[s] = false;
        }
        self.removed.clear();
    }
}

impl AggregateOp {
    pub fn new(config: AggregateConfig) -> Result<Self> {
        let key_types: Vec<DataType> = config
            .group_exprs
            .iter()
            .map(|e| e.data_type(&config.input_schema))
            .collect::<datafusion::error::Result<_>>()?;
        let key_converter = RowConverter::new(key_types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let output_converter =
            RowConverter::new(config.output.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        let mut accumulators = Vec::with_capacity(config.calls.len());
        let mut args = Vec::with_capacity(config.calls.len());
        for c in &config.calls {
            accumulators.push(accumulators::create(&c.call, config.input_append_only, &c.input_type)?);
            args.push(c.arg.clone());
        }
        let global = config.group_exprs.is_empty();
        let panes = match config.panes {
            Some(spec) if config.emit_on_close && config.window.is_some() => {
                let calls: Vec<(AggregateCall, DataType)> =
                    config.calls.iter().map(|c| (c.call.clone(), c.input_type.clone())).collect();
                Some(PaneMerger::new(spec, &key_types, &calls)?)
            }
            Some(_) => return Err(WeirError::internal("HOP panes without emitting on window close")),
            None => None,
        };
        let input_types: Vec<DataType> = config.calls.iter().map(|c| c.input_type.clone()).collect();
        let mut op = AggregateOp {
            group_exprs: config.group_exprs,
            args,
            accumulators,
            global,
            key_converter,
            key_types: key_types.clone(),
            output: config.output,
            output_converter,
            window: config.window,
            emit_on_close: config.emit_on_close,
            panes,
            slots: HashMap::default(),
            packed: (!global && PackedKey::fits(&key_types)).then(HashMap::default),
            packed_keys: Vec::new(),
            keys: Vec::new(),
            row_counts: Vec::new(),
            emitted: Vec::new(),
            dirty: Vec::new(),
            dirty_list: Vec::new(),
            free: Vec::new(),
            closing: BTreeMap::new(),
            slot_close: Vec::new(),
            watermark: EventTime::MIN,
            late_rows: 0,
            changes: ChangeLog::default(),
        };
        if global {
            // The one group of a global aggregate exists from the start (count(*) = 0).
            let slot = op.allocate(Box::new([]), None, EventTime::MAX);
            op.mark_dirty(slot);
            // Its accumulators hold the slot before any row arrives (it is emitted at the
            // first barrier, rows or not).
            for (acc, input_type) in op.accumulators.iter_mut().zip(&input_types) {
                let empty = datafusion::arrow::array::new_empty_array(input_type);
                acc.update(&empty, &[], &[], 1)?;
            }
        }
        Ok(op)
    }

    fn allocate(&mut self, key: Box<[u8]>, packed: Option<PackedKey>, close: EventTime) -> usize {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.packed_keys.push(PackedKey::default());
                self.keys.push(None);
                self.row_counts.push(0);
                self.emitted.push(None);
                self.dirty.push(false);
                self.slot_close.push(EventTime::MAX);
                self.keys.len() - 1
            }
        };
        match (&mut self.packed, packed) {
            (Some(map), Some(packed)) => {
                map.insert(packed, slot);
                self.packed_keys[slot] = packed;
            }
            _ => {
                self.slots.insert(key.clone(), slot);
            }
        }
        self.keys[slot] = Some(key);
        self.slot_close[slot] = close;
        if self.window.is_some() {
            self.closing.entry(close).or_default().push(slot);
        }
        slot
    }

    fn release(&mut self, slot: usize) {
        if let Some(key) = self.keys[slot].take() {
            match &mut self.packed {
                Some(map) => {
                    map.remove(&self.packed_keys[slot]);
                }
                None => {
                    self.slots.remove(&key);
                }
            }
        }
        self.row_counts[slot] = 0;
        self.emitted[slot] = None;
        self.dirty[slot] = false;
        for a in &mut self.accumulators {
            a.reset(slot);
        }
        self.free.push(slot);
    }

    fn mark_dirty(&mut self, slot: usize) {
        if !self.dirty[slot] {
            self.dirty[slot] = true;
            self.dirty_list.push(slot);
        }
    }

    /// A batch's group keys in the form its slots are looked up by.
    fn batch_keys(&self, key_columns: &[ArrayRef]) -> Result<BatchKeys> {
        Ok(match self.packed {
            Some(_) => BatchKeys::Packed(PackedKey::columns(key_columns)?),
            None => BatchKeys::Rows(self.key_converter.convert_columns(key_columns)?),
        })
    }

    /// The slot of the group of row `row`, allocated if the group is new.
    fn slot_for(&mut self, row: usize, keys: &BatchKeys, close: EventTime) -> usize {
        if let Some(slot) = self.find_slot(row, keys) {
            return slot;
        }
        match keys {
            // The packed key is the whole key: no row-format bytes needed.
            BatchKeys::Packed(columns) => self.allocate(Box::new([]), Some(PackedKey::at(columns, row)), close),
            BatchKeys::Rows(rows) => self.allocate(rows.row(row).as_ref().into(), None, close),
        }
    }

    /// The slot of the group of row `row`, if the group exists.
    fn find_slot(&self, row: usize, keys: &BatchKeys) -> Option<usize> {
        match keys {
            BatchKeys::Packed(columns) => self.packed.as_ref().and_then(|m| m.get(&PackedKey::at(columns, row))).copied(),
            BatchKeys::Rows(rows) => self.slots.get(rows.row(row).as_ref()).copied(),
        }
    }

    /// The group key columns of these slots (none for a global aggregate).
    fn key_columns(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        self.key_columns_of(slots.iter().map(|s| (self.packed_keys[*s], self.keys[*s].as_deref().unwrap_or(&[]))))
    }

    /// The group key columns of these keys (packed, row format): the packed ones in packed
    /// mode, else the row-format ones.
    fn key_columns_of<'a>(&self, keys: impl Iterator<Item = (PackedKey, &'a [u8])> + Clone) -> Result<Vec<ArrayRef>> {
        if self.packed.is_some() {
            PackedKey::arrays(keys.map(|(packed, _)| packed), &self.key_types)
        } else if !self.global {
            let parser = self.key_converter.parser();
            Ok(self.key_converter.convert_rows(keys.map(|(_, row)| parser.parse(row)))?)
        } else {
            Ok(Vec::new())
        }
    }

    /// Groups that exist (slots not free).
    fn live_groups(&self) -> usize {
        self.keys.len() - self.free.len()
    }

    /// The output rows of these slots (group key columns, then aggregates).
    fn outputs(&self, slots: &[usize]) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.fields().len());
        columns.extend(self.key_columns(slots)?);
        for a in &self.accumulators {
            columns.push(a.evaluate(slots)?);
        }
        conform(columns, &self.output, slots.len())
    }

    /// Emits the current rows of `slots` as inserts (EMIT ON WINDOW CLOSE).
    fn emit_final(&mut self, slots: &[usize], out: &mut Vec<Changes>) -> Result<()> {
        let live: Vec<usize> = slots.iter().copied().filter(|s| self.keys[*s].is_some() && self.row_counts[*s] > 0).collect();
        if !live.is_empty() {
            out.push(Changes::inserts(self.outputs(&live)?));
        }
        Ok(())
    }

    /// Emits the changes of `slots` since they were last emitted (update mode): retract the old
    /// row, insert the new one, unless equal. Slots left without rows are freed.
    fn emit_updates(&mut self, slots: &[usize], out: &mut Vec<Changes>) -> Result<()> {
        let slots: Vec<usize> = slots.iter().copied().filter(|s| self.keys[*s].is_some()).collect();
        if slots.is_empty() {
            return Ok(());
        }
        let live: Vec<usize> = slots.iter().copied().filter(|s| self.global || self.row_counts[*s] > 0).collect();
        let new_rows = self.outputs(&live)?;
        let encoded = self.output_converter.convert_columns(new_rows.columns())?;
        let mut insert_mask = vec![false; live.len()];
        let mut new_bytes: HashMap<usize, Box<[u8]>> = HashMap::with_capacity_and_hasher(live.len(), Default::default());
        for (i, s) in live.iter().enumerate() {
            let bytes = encoded.row(i);
            if self.emitted[*s].as_deref() != Some(bytes.as_ref()) {
                insert_mask[i] = true;
                new_bytes.insert(*s, bytes.as_ref().into());
            }
        }
        // Retract the old row of every slot whose row changed or disappeared.
        let mut retract: Vec<Box<[u8]>> = Vec::new();
        for s in &slots {
            let changed = new_bytes.contains_key(s) || !(self.global || self.row_counts[*s] > 0);
            if changed && let Some(old) = self.emitted[*s].take() {
                retract.push(old);
            }
        }
        if !retract.is_empty() {
            let parser = self.output_converter.parser();
            let columns = self.output_converter.convert_rows(retract.iter().map(|r| parser.parse(r)))?;
            out.push(Changes::uniform(conform(columns, &self.output, retract.len())?, -1));
        }
        if insert_mask.iter().any(|m| *m) {
            let inserted = datafusion::arrow::compute::filter_record_batch(&new_rows, &BooleanArray::from(insert_mask))?;
            out.push(Changes::inserts(inserted));
        }
        for (s, bytes) in new_bytes {
            self.emitted[s] = Some(bytes);
        }
        for s in slots {
            if !self.global && self.row_counts[s] <= 0 {
                if self.row_counts[s] < 0 {
                    return Err(WeirError::internal("a group retracted more rows than it had"));
                }
                // A closed window's slot is released when it closes; here only groups that lost
                // all their rows, which a checkpoint of changes must name.
                let live = self.live_groups();
                self.changes.note_removed(self.packed_keys[s], self.keys[s].as_deref().unwrap_or(&[]), live);
                self.release(s);
            }
        }
        Ok(())
    }
}

/// The group keys of a batch's rows: packed integers, or Arrow row format.
enum BatchKeys {
    Packed(Vec<datafusion::arrow::array::Int64Array>),
    Rows(datafusion::arrow::row::Rows),
}

/// A group key of at most two integer-like columns (integers, timestamps, dates), each as an
/// `i64`, with a bit per NULL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct PackedKey {
    values: [i64; 2],
    nulls: u8,
}

impl PackedKey {
    fn fits(types: &[DataType]) -> bool {
        (1..=2).contains(&types.len())
            && types.iter().all(|t| {
                matches!(
                    t,
                    DataType::Int8
                        | DataType::Int16
                        | DataType::Int32
                        | DataType::Int64
                        | DataType::UInt8
                        | DataType::UInt16
                        | DataType::UInt32
                        | DataType::Timestamp(..)
                        | DataType::Date32
                        | DataType::Date64
                )
            })
    }

    /// The key columns as `i64` arrays (a reinterpretation for 64-bit types; the types that
    /// [`PackedKey::fits`] accepts all convert without loss).
    fn columns(columns: &[ArrayRef]) -> Result<Vec<datafusion::arrow::array::Int64Array>> {
        columns
            .iter()
            .map(|c| {
                let c = datafusion::arrow::compute::cast(c, &DataType::Int64)?;
                Ok(c.as_primitive::<datafusion::arrow::datatypes::Int64Type>().clone())
            })
            .collect()
    }

    /// The key columns of these keys, in the key types (the inverse of [`PackedKey::columns`]).
    fn arrays(keys: impl Iterator<Item = PackedKey> + Clone, types: &[DataType]) -> Result<Vec<ArrayRef>> {
        types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let values: datafusion::arrow::array::Int64Array =
                    keys.clone().map(|k| (k.nulls & (1 << i) == 0).then_some(k.values[i])).collect();
                Ok(datafusion::arrow::compute::cast(&values, t)?)
            })
            .collect()
    }

    fn at(columns: &[datafusion::arrow::array::Int64Array], row: usize) -> PackedKey {
        let mut key = PackedKey::default();
        for (i, c) in columns.iter().enumerate() {
            if c.is_null(row) {
                key.nulls |= 1 << i;
            } else {
                key.values[i] = c.value(row);
            }
        }
        key
    }
}

impl Operator for AggregateOp {
    fn process(&mut self, _port: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()> {
        let _ = out;
        let n = changes.len();
        if n == 0 {
            return Ok(());
        }
        let key_columns: Vec<ArrayRef> = self
            .group_exprs
            .iter()
            .map(|e| e.evaluate(&changes.rows)?.into_array(n))
            .collect::<datafusion::error::Result<_>>()?;
        let closes = match self.window {
            Some(w) => Some(super::close_times(&key_columns[w.group_index], w.close_offset)?),
            None => None,
        };
        let mut row_slots = Vec::with_capacity(n);
        let mut keep = Vec::with_capacity(n);
        let diffs = changes.diffs.values();
        if self.global {
            row_slots.resize(n, 0);
            keep.resize(n, true);
            self.row_counts[0] += diffs.iter().sum::<i64>();
            self.mark_dirty(0);
        } else {
            let keys = self.batch_keys(&key_columns)?;
            for i in 0..n {
                let close = closes.as_ref().map_or(EventTime::MAX, |c| c[i]);
                if closes.is_some() && close <= self.watermark {
                    // The window already closed: sources drop late rows, so this only happens
                    // when an upstream view changes a window it had already finalized.
                    self.late_rows += 1;
                    keep.push(false);
                    continue;
                }
                let slot = self.slot_for(i, &keys, close);
                self.row_counts[slot] += diffs[i];
                self.mark_dirty(slot);
                row_slots.push(slot);
                keep.push(true);
            }
        }
        let all_kept = keep.iter().all(|k| *k);
        let (rows, kept_diffs) = if all_kept {
            (changes.rows.clone(), diffs.to_vec())
        } else {
            let mask = BooleanArray::from(keep);
            let filtered = changes.filter(&mask)?;
            (filtered.rows, filtered.diffs.values().to_vec())
        };
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let slot_count = self.keys.len();
        for (acc, arg) in self.accumulators.iter_mut().zip(&self.args) {
            let values = arg.evaluate(&rows)?.into_array(rows.num_rows())?;
            acc.update(&values, &row_slots, &kept_diffs, slot_count)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, _port: usize, watermark: EventTime, out: &mut Vec<Changes>) -> Result<Option<EventTime>> {
        if watermark <= self.watermark {
            return Ok(None);
        }
        let previous = std::mem::replace(&mut self.watermark, watermark);
        if self.panes.is_some() {
            self.emit_hop_windows(previous, watermark, out)?;
        }
        if self.window.is_some() {
            let still_open = match watermark.checked_add(1) {
                Some(next) => self.closing.split_off(&next),
                None => BTreeMap::new(),
            };
            let closed = std::mem::replace(&mut self.closing, still_open);
            for (close, slots) in closed {
                // A slot may have been freed and reused for a later window since it was listed,
                // or even for another group closing at the same time (a session whose start
                // moved), which lists it twice.
                let mut slots: Vec<usize> =
                    slots.into_iter().filter(|s| self.keys[*s].is_some() && self.slot_close[*s] == close).collect();
                slots.sort_unstable();
                slots.dedup();
                if self.panes.is_some() {
                    // Pane groups: their windows were emitted above.
                } else if self.emit_on_close {
                    self.emit_final(&slots, out)?;
                } else {
                    self.emit_updates(&slots, out)?;
                }
                for s in slots {
                    if self.keys[s].is_some() {
                        self.release(s);
                    }
                }
            }
        }
        Ok(Some(watermark))
    }

    fn on_barrier(&mut self, _epoch: u64, out: &mut Vec<Changes>) -> Result<()> {
        // The list may name a slot twice (freed and reused) or name a freed slot: the flag is
        // the truth.
        let mut dirty = Vec::with_capacity(self.dirty_list.len());
        for s in std::mem::take(&mut self.dirty_list) {
            if self.dirty[s] {
                self.dirty[s] = false;
                self.changes.note_slot(s);
                dirty.push(s);
            }
        }
        if !self.emit_on_close {
            self.emit_updates(&dirty, out)?;
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        let keys: usize = self.keys.iter().map(|k| k.as_ref().map_or(8, |k| k.len() + 48)).sum();
        let emitted: usize = self.emitted.iter().map(|k| k.as_ref().map_or(8, |k| k.len() + 16)).sum();
        keys + emitted + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
    }

    fn stateful(&self) -> Option<&'static str> {
        Some("an aggregate")
    }

    /// Taken after a barrier, when no group is dirty: per live group its key columns, close
    /// time, row count, last emitted row and accumulator columns (`groups`), and the operator's
    /// watermark (`meta`).
    fn snapshot(&self) -> Result<OperatorState> {
        let live: Vec<usize> = (0..self.keys.len()).filter(|s| self.keys[*s].is_some()).collect();
        Ok(vec![("groups".into(), self.groups_batch(&live)?), ("meta".into(), self.meta_batch()?)])
    }

    /// A snapshot of changes holds `groups` (as in a full one) for the groups changed since the
    /// previous snapshot, `removed` (their key columns) for the groups freed since, and `meta`.
    fn checkpoint(&mut self, since_previous: bool) -> Result<Snapshot> {
        let was_tracking = self.changes.tracking;
        let changed: Vec<usize> = self.changes.slots.iter().copied().filter(|s| self.keys[*s].is_some()).collect();
        let removed = std::mem::take(&mut self.changes.removed);
        self.changes.clear();
        // A global aggregate is one row: its changes are all of it.
        let written = self.changes.rows_since_full + changed.len() + removed.len();
        if self.global || !since_previous || !was_tracking || written > self.live_groups() {
            self.changes.tracking = !self.global;
            self.changes.rows_since_full = 0;
            return self.snapshot().map(Snapshot::Full);
        }
        self.changes.rows_since_full = written;
        let removed_keys = self.key_columns_of(removed.iter().map(|(packed, key)| (*packed, key.as_ref())))?;
        let removed_batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(
                removed_keys.iter().enumerate().map(|(i, c)| Field::new(format!("key{i}"), c.data_type().clone(), true)).collect::<Vec<_>>(),
            )),
            removed_keys,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(removed.len())),
        )?;
        Ok(Snapshot::Changes(vec![
            ("groups".into(), self.groups_batch(&changed)?),
            ("meta".into(), self.meta_batch()?),
            ("removed".into(), removed_batch),
        ]))
    }

    /// Restores a full snapshot, or applies a snapshot of changes on top of what is restored:
    /// `removed` first (a group freed and then created again is in both), then `groups`, then
    /// `meta`, whose watermark also drops the groups of windows that closed since.
    fn restore(&mut self, mut state: OperatorState) -> Result<()> {
        state.sort_by_key(|(name, _)| match name.as_str() {
            "removed" => 0,
            "groups" => 1,
            _ => 2,
        });
        for (name, batch) in state {
            let saved = SavedBatch { batch: &batch, what: "aggregate" };
            match name.as_str() {
                "meta" => {
                    // State kept by panes and by windows differ in meaning, not in shape.
                    let pane_slide = saved.batch.column_by_name("pane_slide").map(|_| saved.int("pane_slide")).transpose()?;
                    if pane_slide != self.panes.as_ref().map(PaneMerger::slide) {
                        return Err(saved.corrupt("HOP groups kept by panes in one and by windows in the other"));
                    }
                    self.watermark = saved.int("watermark")?;
                    self.late_rows = saved.int("late_rows")? as u64;
                    self.drop_closed_windows();
                }
                "removed" => {
                    let keys = self.saved_keys(&saved)?;
                    for row in 0..batch.num_rows() {
                        if let Some(slot) = self.find_slot(row, &keys) {
                            self.release(slot);
                        }
                    }
                }
                "groups" => {
                    let n = batch.num_rows();
                    let (close, rows, emitted) = (saved.ints("close")?, saved.ints("rows")?, saved.binary("emitted")?);
                    let slots: Vec<usize> = if self.global {
                        if n != 1 {
                            return Err(saved.corrupt("a global aggregate without exactly one group"));
                        }
                        vec![0]
                    } else {
                        let keys = self.saved_keys(&saved)?;
                        (0..n).map(|i| self.slot_for(i, &keys, close.value(i))).collect()
                    };
                    for (i, s) in slots.iter().enumerate() {
                        self.row_counts[*s] = rows.value(i);
                        self.emitted[*s] = emitted.is_valid(i).then(|| Box::from(emitted.value(i)));
                    }
                    let slot_count = self.keys.len();
                    for (a, acc) in self.accumulators.iter_mut().enumerate() {
                        let prefix = format!("acc{a}_");
                        let columns: Vec<ArrayRef> = batch
                            .schema()
                            .fields()
                            .iter()
                            .zip(batch.columns())
                            .filter(|(f, _)| f.name().starts_with(&prefix))
                            .map(|(_, c)| c.clone())
                            .collect();
                        acc.load(&columns, &slots, slot_count)?;
                    }
                }
                other => return Err(saved.corrupt(&format!("unknown part {other}"))),
            }
        }
        Ok(())
    }
}

impl AggregateOp {
    /// The `groups` batch of a snapshot for these slots.
    fn groups_batch(&self, slots: &[usize]) -> Result<RecordBatch> {
        let mut columns: Vec<(String, ArrayRef)> = Vec::new();
        for (i, key) in self.key_columns(slots)?.into_iter().enumerate() {
            columns.push((format!("key{i}"), key));
        }
        columns.push(("close".into(), Arc::new(Int64Array::from_iter_values(slots.iter().map(|s| self.slot_close[*s])))));
        columns.push(("rows".into(), Arc::new(Int64Array::from_iter_values(slots.iter().map(|s| self.row_counts[*s])))));
        columns.push(("emitted".into(), Arc::new(BinaryArray::from_iter(slots.iter().map(|s| self.emitted[*s].as_deref())))));
        for (a, acc) in self.accumulators.iter().enumerate() {
            for (c, column) in acc.save(slots)?.into_iter().enumerate() {
                columns.push((format!("acc{a}_{c}"), column));
            }
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(columns.iter().map(|(n, c)| Field::new(n, c.data_type().clone(), true)).collect::<Vec<_>>())),
            columns.into_iter().map(|(_, c)| c).collect(),
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(slots.len())),
        )?)
    }

    fn meta_batch(&self) -> Result<RecordBatch> {
        let mut columns = vec![
            ("watermark", Arc::new(Int64Array::from(vec![self.watermark])) as ArrayRef),
            ("late_rows", Arc::new(Int64Array::from(vec![self.late_rows as i64])) as ArrayRef),
        ];
        if let Some(panes) = &self.panes {
            columns.push(("pane_slide", Arc::new(Int64Array::from(vec![panes.slide()])) as ArrayRef));
        }
        Ok(RecordBatch::try_from_iter(columns)?)
    }

    /// Emits the windows closing in `(previous, watermark]` (HOP by panes), each from its
    /// panes' groups. Their groups are freed afterwards, as they close.
    fn emit_hop_windows(&mut self, previous: EventTime, watermark: EventTime, out: &mut Vec<Changes>) -> Result<()> {
        let Some(panes) = &self.panes else {
            return Ok(());
        };
        let listed = self.closing.range(..=panes.last_pane_close(watermark)).map(|(close, _)| *close);
        for close in panes.closing_windows(listed, previous, watermark) {
            let mut slots = Vec::new();
            for pane_close in panes.pane_closes(close) {
                if let Some(listed) = self.closing.get(&pane_close) {
                    slots.extend(listed.iter().copied().filter(|s| {
                        self.keys[*s].is_some() && self.slot_close[*s] == pane_close && self.row_counts[*s] > 0
                    }));
                }
            }
            slots.sort_unstable();
            slots.dedup();
            if slots.is_empty() {
                continue;
            }
            let keys = self.key_columns(&slots)?;
            let (columns, rows) = panes.merge(close, keys, &self.accumulators, &slots)?;
            out.push(Changes::inserts(conform(columns, &self.output, rows)?));
        }
        Ok(())
    }

    /// The group keys of a saved batch (`key0`, `key1`, ...).
    fn saved_keys(&self, saved: &SavedBatch<'_>) -> Result<BatchKeys> {
        let keys: Vec<ArrayRef> = (0..self.key_types.len())
            .map(|i| saved.batch.column_by_name(&format!("key{i}")).cloned().ok_or_else(|| saved.corrupt("missing key column")))
            .collect::<Result<_>>()?;
        self.batch_keys(&keys)
    }

    /// Frees, without emitting anything, the groups of windows that closed by the watermark: a
    /// restored chain's earlier snapshots hold groups that closed before its last one.
    fn drop_closed_windows(&mut self) {
        if self.window.is_none() {
            return;
        }
        let still_open = match self.watermark.checked_add(1) {
            Some(next) => self.closing.split_off(&next),
            None => BTreeMap::new(),
        };
        for (close, slots) in std::mem::replace(&mut self.closing, still_open) {
            for s in slots {
                if self.keys[s].is_some() && self.slot_close[s] == close {
                    self.release(s);
                }
            }
        }
    }
}
