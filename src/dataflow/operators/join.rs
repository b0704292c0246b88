//! The incremental join: a symmetric hash join over changes.
//!
//! Each side keeps its rows (Arrow row format) in buckets by join key, with their multiplicity.
//! A change on one side is joined with the other side's current rows and then added to its own
//! side; processing the two inputs' changes one batch at a time in arrival order gives, for
//! inner joins, `Δ(A ⋈ B) = ΔA ⋈ B + A ⋈ ΔB + ΔA ⋈ ΔB` exactly (the last term is covered because
//! whichever batch comes second sees the first in the other side's state). A self-join receives
//! each batch on both ports, one after the other, and is covered by the same argument.
//!
//! **Outer joins** also keep, for every row of a preserved side, how many rows of the other
//! side it matches (weighted by multiplicity, after the residual filter). The NULL-padded row is
//! in the output exactly while that count is zero: inserted when a row arrives without matches
//! or its last match goes, retracted when its first match comes.
//!
//! **State bounds** (see weir-sql's `streaming::join`): a row whose bound `value + offset` the
//! watermark (the minimum of both inputs') has reached can match no future row of the other
//! side, so it is dropped; rows arriving already past their bound are joined but never stored.
//!
//! # Correctness
//! The integral of the output equals the join of the integrals of the inputs: every output
//! pair is emitted with the product of its rows' diffs when the later of the two arrives, and a
//! dropped row can match no later row by its bound. Rows with a NULL key match nothing (SQL's
//! `=`); on a preserved side they are emitted NULL-padded at once and not stored.

use std::collections::BTreeMap;

// hashbrown with foldhash (DataFusion's default): std's SipHash showed in profiles.
use datafusion::common::HashMap;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, UInt32Array, new_null_array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use weir_sql::streaming::{JoinKind, StateBound};

use super::stateless::conform;
use super::{Operator, OperatorState, SavedBatch};
use crate::dataflow::{Changes, EventTime};
use crate::error::{Result, WeirError};

pub struct JoinSideConfig {
    pub schema: SchemaRef,
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub bounds: Vec<StateBound>,
    /// The input only ever inserts (a source, an `APPEND ONLY` table, an `EMIT ON WINDOW
    /// CLOSE` aggregate): no change ever names a stored row again, so rows are not indexed by
    /// content and equal rows are simply stored twice.
    pub append_only: bool,
}

pub struct JoinConfig {
    pub kind: JoinKind,
    pub sides: [JoinSideConfig; 2],
    /// Over the output schema (left columns, then right).
    pub residual: Option<Arc<dyn PhysicalExpr>>,
    pub output: SchemaRef,
}

/// Stored rows leave the state when the watermark passes their bound, rounded up to this many
/// microseconds of event time: one expiry list per 10 ms instead of one per distinct bound.
/// Keeping a row a little longer is harmless: its bound says no future row can pair with it.
const EXPIRY_GRANULARITY: EventTime = 10_000;

/// No slot (the end of a bucket's list).
const NO_SLOT: u32 = u32::MAX;

/// A stored row: its join key and the row itself (row format, one allocation), how many
/// copies, and (on a preserved side) how many matches it has.
struct StoredRow {
    /// The key's bytes, then the row's.
    bytes: Box<[u8]>,
    key_len: usize,
    key_hash: u64,
    row_hash: u64,
    multiplicity: i64,
    matches: i64,
    /// When it leaves the state (`EventTime::MAX`: never).
    expiry: EventTime,
    /// The other rows with the same key: a doubly linked list through the slots, so a bucket
    /// costs no allocation of its own and a row leaves it in O(1).
    prev: u32,
    next: u32,
}

impl StoredRow {
    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len]
    }

    fn row(&self) -> &[u8] {
        &self.bytes[self.key_len..]
    }
}

/// One side's rows, in slots. Two hash tables index the slots: by key (the first row of each
/// bucket's list) for probing, and by key and row for changes to a stored row (not kept for an
/// append-only input). Hashes are computed by the [`JoinOp`] (one hasher for both sides) and
/// kept in the row.
struct Side {
    schema: SchemaRef,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    bounds: Vec<StateBound>,
    preserved: bool,
    append_only: bool,
    rows: RowConverter,
    slots: Vec<Option<StoredRow>>,
    free: Vec<u32>,
    buckets: HashTable<u32>,
    by_row: HashTable<u32>,
    /// Rounded bound → slots whose rows leave the state when the watermark reaches it. A slot
    /// may have been freed or reused since it was listed: the row's own `expiry` decides.
    expiry: BTreeMap<EventTime, Vec<u32>>,
    watermark: Option<EventTime>,
    bytes: usize,
}

impl Side {
    fn stored(&self, slot: u32) -> Option<&StoredRow> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn stored_mut(&mut self, slot: u32) -> Option<&mut StoredRow> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// The slots of the rows whose key is `key`.
    fn bucket<'a>(&'a self, key: &[u8], key_hash: u64) -> impl Iterator<Item = (u32, &'a StoredRow)> + use<'a> {
        let head = self.buckets.find(key_hash, |s| self.stored(*s).is_some_and(|r| r.key() == key)).copied();
        std::iter::successors(head.and_then(|s| self.stored(s).map(|r| (s, r))), move |(_, r)| {
            (r.next != NO_SLOT).then(|| self.stored(r.next).map(|n| (r.next, n))).flatten()
        })
    }

    /// The slot holding exactly this key and row.
    fn find(&self, key: &[u8], row: &[u8], row_hash: u64) -> Option<u32> {
        self.by_row.find(row_hash, |s| self.stored(*s).is_some_and(|r| r.key() == key && r.row() == row)).copied()
    }

    fn insert(&mut self, key: &[u8], row: &[u8], hashes: (u64, u64), counts: (i64, i64), expiry: EventTime) {
        let (key_hash, row_hash) = hashes;
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                // Slot numbers stay below NO_SLOT: four billion stored rows is far beyond memory.
                (self.slots.len() - 1) as u32
            }
        };
        let mut bytes = Vec::with_capacity(key.len() + row.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(row);
        let mut stored = StoredRow {
            bytes: bytes.into_boxed_slice(),
            key_len: key.len(),
            key_hash,
            row_hash,
            multiplicity: counts.0,
            matches: counts.1,
            expiry,
            prev: NO_SLOT,
            next: NO_SLOT,
        };
        self.bytes += stored.bytes.len() + STORED_ROW_OVERHEAD;
        let Side { slots, buckets, by_row, .. } = self;
        let hash_of_key = |s: &u32| slots[*s as usize].as_ref().map_or(0, |r| r.key_hash);
        match buckets.find_mut(key_hash, |s| slots[*s as usize].as_ref().is_some_and(|r| r.key() == key)) {
            Some(head) => {
                stored.next = *head;
                if let Some(old_head) = slots[*head as usize].as_mut() {
                    old_head.prev = slot;
                }
                *head = slot;
            }
            None => {
                buckets.insert_unique(key_hash, slot, hash_of_key);
            }
        }
        if !self.append_only {
            let hash_of_row = |s: &u32| slots[*s as usize].as_ref().map_or(0, |r| r.row_hash);
            by_row.insert_unique(row_hash, slot, hash_of_row);
        }
        if expiry != EventTime::MAX {
            let listed = match expiry.rem_euclid(EXPIRY_GRANULARITY) {
                0 => expiry,
                r => expiry.checked_add(EXPIRY_GRANULARITY - r).unwrap_or(expiry),
            };
            self.expiry.entry(listed).or_default().push(slot);
        }
        self.slots[slot as usize] = Some(stored);
    }

    fn remove(&mut self, slot: u32) {
        let Some(stored) = self.slots.get_mut(slot as usize).and_then(Option::take) else { return };
        self.bytes = self.bytes.saturating_sub(stored.bytes.len() + STORED_ROW_OVERHEAD);
        if let Some(next) = self.stored_mut(stored.next) {
            next.prev = stored.prev;
        }
        match self.stored_mut(stored.prev) {
            Some(prev) => prev.next = stored.next,
            // The first of its bucket: the bucket now starts at the next row, or is gone.
            None => {
                if let Ok(head) = self.buckets.find_entry(stored.key_hash, |s| *s == slot) {
                    if stored.next == NO_SLOT {
                        head.remove();
                    } else {
                        *head.into_mut() = stored.next;
                    }
                }
            }
        }
        if !self.append_only
            && let Ok(entry) = self.by_row.find_entry(stored.row_hash, |s| *s == slot)
        {
            entry.remove();
        }
        self.free.push(slot);
    }
}

/// What a stored row costs besides its bytes: the slot and its two table entries.
const STORED_ROW_OVERHEAD: usize = std::mem::size_of::<Option<StoredRow>>() + 2 * std::mem::size_of::<u32>() + 8;

pub struct JoinOp {
    sides: [Side; 2],
    key_types: Vec<DataType>,
    keys: RowConverter,
    residual: Option<Arc<dyn PhysicalExpr>>,
    output: SchemaRef,
    /// The minimum of both inputs' watermarks, once both have one.
    watermark: EventTime,
    hasher: DefaultHashBuilder,
}

fn side(config: JoinSideConfig, preserved: bool) -> Result<Side> {
    let rows = RowConverter::new(config.schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
    Ok(Side {
        schema: config.schema,
        keys: config.keys,
        bounds: config.bounds,
        preserved,
        append_only: config.append_only,
        rows,
        slots: Vec::new(),
        free: Vec::new(),
        buckets: HashTable::new(),
        by_row: HashTable::new(),
        expiry: BTreeMap::new(),
        watermark: None,
        bytes: 0,
    })
}

impl JoinOp {
    pub fn new(config: JoinConfig) -> Result<Self> {
        let [left, right] = config.sides;
        let key_types: Vec<DataType> =
            left.keys.iter().map(|k| k.data_type(&left.schema)).collect::<datafusion::error::Result<_>>()?;
        let keys = RowConverter::new(key_types.iter().map(|t| SortField::new(t.clone())).collect())?;
        Ok(JoinOp {
            sides: [side(left, config.kind.preserves(0))?, side(right, config.kind.preserves(1))?],
            key_types,
            keys,
            residual: config.residual,
            output: config.output,
            watermark: EventTime::MIN,
            hasher: DefaultHashBuilder::default(),
        })
    }

    fn hash_key(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The hash of a stored row's identity: its key and its row.
    fn hash_row(&self, key: &[u8], row: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        h.write(row);
        h.finish()
    }

    /// The key columns of `rows` on side `s`, in the key types of the left side.
    fn key_columns(&self, s: usize, rows: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let n = rows.num_rows();
        self.sides[s]
            .keys
            .iter()
            .zip(&self.key_types)
            .map(|(k, t)| {
                let a = k.evaluate(rows)?.into_array(n)?;
                Ok(if a.data_type() == t { a } else { cast(&a, t)? })
            })
            .collect()
    }

    /// Output columns: side `s`'s `own` columns and the other side's `other` columns, in
    /// left-then-right order.
    fn output_batch(&self, s: usize, own: Vec<ArrayRef>, other: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        let columns = if s == 0 { [own, other].concat() } else { [other, own].concat() };
        conform(columns, &self.output, rows)
    }

    /// Side `s`'s rows at `indices`, NULL-padded on the other side.
    fn null_padded(&self, s: usize, rows: &RecordBatch, indices: &[u32], diffs: Vec<i64>) -> Result<Changes> {
        let indices = UInt32Array::from(indices.to_vec());
        let own = rows.columns().iter().map(|c| take(c.as_ref(), &indices, None)).collect::<std::result::Result<Vec<_>, _>>()?;
        let other = self.sides[1 - s].schema.fields().iter().map(|f| new_null_array(f.data_type(), indices.len())).collect();
        Ok(Changes::new(self.output_batch(s, own, other, indices.len())?, Int64Array::from(diffs)))
    }

    /// When each row of side `s` can leave the state (`EventTime::MAX`: never).
    fn expiries(&self, s: usize, rows: &RecordBatch) -> Result<Vec<EventTime>> {
        let mut out = vec![EventTime::MAX; rows.num_rows()];
        for b in &self.sides[s].bounds {
            let times = super::close_times(rows.column(b.column), b.offset)?;
            for (o, t) in out.iter_mut().zip(times) {
                *o = (*o).min(t);
            }
        }
        Ok(out)
    }
}

impl Operator for JoinOp {
    fn process(&mut self, s: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()> {
        let n = changes.len();
        if n == 0 {
            return Ok(());
        }
        if s > 1 {
            return Err(WeirError::internal("a join has two inputs"));
        }
        let o = 1 - s;
        let diffs = changes.diffs.values();
        let key_columns = self.key_columns(s, &changes.rows)?;
        let keyless: Vec<bool> = (0..n).map(|i| key_columns.iter().any(|k| k.is_null(i))).collect();
        let keys = self.keys.convert_columns(&key_columns)?;
        let key_hashes: Vec<u64> = (0..n).map(|i| self.hash_key(keys.row(i).as_ref())).collect();

        // Pairs with the other side's current rows.
        let other = &self.sides[o];
        let mut own_index = Vec::new();
        let mut other_rows = Vec::new();
        let mut other_multiplicities = Vec::new();
        let mut pair_slots: Vec<u32> = Vec::new();
        let parser = other.rows.parser();
        for (i, keyless) in keyless.iter().enumerate() {
            if *keyless {
                continue;
            }
            let key = keys.row(i);
            for (slot, stored) in other.bucket(key.as_ref(), key_hashes[i]) {
                own_index.push(i as u32);
                other_rows.push(parser.parse(stored.row()));
                other_multiplicities.push(stored.multiplicity);
                pair_slots.push(slot);
            }
        }
        // Per row of the change: its matches (weighted); per matched row of the other side
        // (when preserved): how its match count moves.
        let mut matches = vec![0i64; n];
        let mut other_moves: Vec<(u32, i64)> = Vec::new();
        if !own_index.is_empty() {
            let count = own_index.len();
            let indices = UInt32Array::from(own_index.clone());
            let own = changes
                .rows
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let other_columns = other.rows.convert_rows(other_rows.iter().copied())?;
            let pairs = self.output_batch(s, own, other_columns, count)?;
            let passed = match &self.residual {
                Some(r) => {
                    let mask = r.evaluate(&pairs)?.into_array(count)?;
                    let mask = mask
                        .as_boolean_opt()
                        .ok_or_else(|| WeirError::internal("a join condition did not evaluate to booleans"))?;
                    // NULL counts as false, as in ON.
                    Some(if mask.null_count() > 0 {
                        datafusion::arrow::compute::prep_null_mask_filter(mask)
                    } else {
                        mask.clone()
                    })
                }
                None => None,
            };
            let mut pair_diffs = Vec::with_capacity(count);
            for p in 0..count {
                let i = own_index[p] as usize;
                pair_diffs.push(diffs[i] * other_multiplicities[p]);
                if passed.as_ref().is_some_and(|m| !m.value(p)) {
                    continue;
                }
                matches[i] += other_multiplicities[p];
                if other.preserved {
                    other_moves.push((pair_slots[p], diffs[i]));
                }
            }
            let result = Changes::new(pairs, Int64Array::from(pair_diffs));
            let result = match &passed {
                Some(mask) => result.filter(mask)?,
                None => result,
            };
            if !result.is_empty() {
                out.push(result);
            }
        }

        // Outer join bookkeeping on the other side: NULL-padded rows come and go as their
        // match counts leave or return to zero.
        if !other_moves.is_empty() {
            let mut before: HashMap<u32, i64> = HashMap::default();
            let side = &mut self.sides[o];
            for (slot, d) in other_moves {
                if let Some(stored) = side.stored_mut(slot) {
                    before.entry(slot).or_insert(stored.matches);
                    stored.matches += d;
                }
            }
            let side = &self.sides[o];
            let mut appear = Vec::new();
            let mut appear_diffs = Vec::new();
            for (slot, was) in before {
                let Some(stored) = side.stored(slot) else { continue };
                let diff = match (was == 0, stored.matches == 0) {
                    (true, false) => -stored.multiplicity,
                    (false, true) => stored.multiplicity,
                    _ => continue,
                };
                appear.push(stored.row());
                appear_diffs.push(diff);
            }
            if !appear.is_empty() {
                let parser = side.rows.parser();
                let own = side.rows.convert_rows(appear.iter().map(|r| parser.parse(r)))?;
                let nulls = self.sides[s].schema.fields().iter().map(|f| new_null_array(f.data_type(), appear.len())).collect();
                let batch = self.output_batch(o, own, nulls, appear.len())?;
                out.push(Changes::new(batch, Int64Array::from(appear_diffs)));
            }
        }

        // NULL-padded rows of this side: rows without a match (and rows with a NULL key).
        if self.sides[s].preserved {
            let lonely: Vec<u32> = (0..n).filter(|i| keyless[*i] || matches[*i] == 0).map(|i| i as u32).collect();
            if !lonely.is_empty() {
                let d = lonely.iter().map(|i| diffs[*i as usize]).collect();
                out.push(self.null_padded(s, &changes.rows, &lonely, d)?);
            }
        }

        // Finally the change joins its own side's state.
        let expiries = self.expiries(s, &changes.rows)?;
        let encoded = self.sides[s].rows.convert_columns(changes.rows.columns())?;
        let watermark = self.watermark;
        for i in 0..n {
            if keyless[i] || diffs[i] == 0 || expiries[i] <= watermark {
                continue;
            }
            let (key, row) = (keys.row(i), encoded.row(i));
            let (key, row) = (key.as_ref(), row.as_ref());
            if self.sides[s].append_only {
                if diffs[i] < 0 {
                    return Err(WeirError::internal("an append-only join input retracted a row"));
                }
                self.sides[s].insert(key, row, (key_hashes[i], 0), (diffs[i], matches[i]), expiries[i]);
                continue;
            }
            let row_hash = self.hash_row(key, row);
            let side = &mut self.sides[s];
            match side.find(key, row, row_hash) {
                Some(slot) => {
                    let emptied = side.stored_mut(slot).is_some_and(|stored| {
                        stored.multiplicity += diffs[i];
                        stored.multiplicity == 0
                    });
                    if emptied {
                        side.remove(slot);
                    }
                }
                None => side.insert(key, row, (key_hashes[i], row_hash), (diffs[i], matches[i]), expiries[i]),
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, port: usize, watermark: EventTime, _out: &mut Vec<Changes>) -> Result<Option<EventTime>> {
        if let Some(side) = self.sides.get_mut(port) {
            side.watermark = Some(side.watermark.map_or(watermark, |w| w.max(watermark)));
        }
        let (Some(l), Some(r)) = (self.sides[0].watermark, self.sides[1].watermark) else { return Ok(None) };
        let combined = l.min(r);
        if combined <= self.watermark {
            return Ok(None);
        }
        self.watermark = combined;
        for side in &mut self.sides {
            let kept = match combined.checked_add(1) {
                Some(next) => side.expiry.split_off(&next),
                None => BTreeMap::new(),
            };
            let expired = std::mem::replace(&mut side.expiry, kept);
            for slot in expired.into_values().flatten() {
                if side.stored(slot).is_some_and(|r| r.expiry <= combined) {
                    side.remove(slot);
                }
            }
        }
        Ok(Some(combined))
    }

    fn state_bytes(&self) -> usize {
        self.sides.iter().map(|s| s.bytes).sum()
    }

    fn stateful(&self) -> Option<&'static str> {
        Some("a join")
    }

    /// Per side every stored row as it is held (key and row bytes, multiplicity, matches,
    /// expiry), and the watermarks (`meta`).
    fn snapshot(&self) -> Result<OperatorState> {
        let mut state = Vec::with_capacity(3);
        for (i, side) in self.sides.iter().enumerate() {
            let stored: Vec<&StoredRow> = side.slots.iter().flatten().collect();
            let batch = RecordBatch::try_from_iter([
                ("key", Arc::new(BinaryArray::from_iter_values(stored.iter().map(|r| r.key()))) as ArrayRef),
                ("row", Arc::new(BinaryArray::from_iter_values(stored.iter().map(|r| r.row()))) as ArrayRef),
                ("multiplicity", Arc::new(Int64Array::from_iter_values(stored.iter().map(|r| r.multiplicity))) as ArrayRef),
                ("matches", Arc::new(Int64Array::from_iter_values(stored.iter().map(|r| r.matches))) as ArrayRef),
                ("expiry", Arc::new(Int64Array::from_iter_values(stored.iter().map(|r| r.expiry))) as ArrayRef),
            ])?;
            state.push((format!("side{i}"), batch));
        }
        let meta = RecordBatch::try_from_iter([
            ("watermark", Arc::new(Int64Array::from(vec![self.watermark])) as ArrayRef),
            ("left", Arc::new(Int64Array::from(vec![self.sides[0].watermark])) as ArrayRef),
            ("right", Arc::new(Int64Array::from(vec![self.sides[1].watermark])) as ArrayRef),
        ])?;
        state.push(("meta".into(), meta));
        Ok(state)
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        for (name, batch) in state {
            let saved = SavedBatch { batch: &batch, what: "join" };
            let side = match name.as_str() {
                "side0" => 0,
                "side1" => 1,
                "meta" => {
                    self.watermark = saved.int("watermark")?;
                    let (left, right) = (saved.ints("left")?, saved.ints("right")?);
                    self.sides[0].watermark = left.iter().next().flatten();
                    self.sides[1].watermark = right.iter().next().flatten();
                    continue;
                }
                other => return Err(saved.corrupt(&format!("unknown part {other}"))),
            };
            let (keys, rows) = (saved.binary("key")?, saved.binary("row")?);
            let (multiplicity, matches, expiry) = (saved.ints("multiplicity")?, saved.ints("matches")?, saved.ints("expiry")?);
            for i in 0..batch.num_rows() {
                let (key, row) = (keys.value(i), rows.value(i));
                let hashes = (self.hash_key(key), self.hash_row(key, row));
                self.sides[side].insert(key, row, hashes, (multiplicity.value(i), matches.value(i)), expiry.value(i));
            }
        }
        Ok(())
    }
}
