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
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array, new_null_array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use weir_sql::streaming::{JoinKind, StateBound};

use super::Operator;
use super::stateless::conform;
use crate::dataflow::{Changes, EventTime};
use crate::error::{Result, WeirError};

pub struct JoinSideConfig {
    pub schema: SchemaRef,
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub bounds: Vec<StateBound>,
}

pub struct JoinConfig {
    pub kind: JoinKind,
    pub sides: [JoinSideConfig; 2],
    /// Over the output schema (left columns, then right).
    pub residual: Option<Arc<dyn PhysicalExpr>>,
    pub output: SchemaRef,
}

/// A stored row: how many copies, and (on a preserved side) how many matches it has.
#[derive(Debug, Clone, Copy)]
struct Entry {
    multiplicity: i64,
    matches: i64,
}

type Bucket = HashMap<Box<[u8]>, Entry>;

/// A stored row's address: its join key and the row itself (both in row format).
type EntryId = (Box<[u8]>, Box<[u8]>);

struct Side {
    schema: SchemaRef,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    bounds: Vec<StateBound>,
    preserved: bool,
    rows: RowConverter,
    buckets: HashMap<Box<[u8]>, Bucket>,
    /// Bound → the (key, row) entries that leave the state when the watermark reaches it.
    expiry: BTreeMap<EventTime, Vec<EntryId>>,
    watermark: Option<EventTime>,
    bytes: usize,
}

impl Side {
    fn remove(&mut self, key: &[u8], row: &[u8]) {
        if let Some(bucket) = self.buckets.get_mut(key) {
            if bucket.remove(row).is_some() {
                self.bytes = self.bytes.saturating_sub(row.len() + 32);
            }
            if bucket.is_empty() {
                self.buckets.remove(key);
                self.bytes = self.bytes.saturating_sub(key.len() + 48);
            }
        }
    }
}

pub struct JoinOp {
    sides: [Side; 2],
    key_types: Vec<DataType>,
    keys: RowConverter,
    residual: Option<Arc<dyn PhysicalExpr>>,
    output: SchemaRef,
    /// The minimum of both inputs' watermarks, once both have one.
    watermark: EventTime,
}

fn side(config: JoinSideConfig, preserved: bool) -> Result<Side> {
    let rows = RowConverter::new(config.schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
    Ok(Side {
        schema: config.schema,
        keys: config.keys,
        bounds: config.bounds,
        preserved,
        rows,
        buckets: HashMap::default(),
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
        })
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

        // Pairs with the other side's current rows.
        let other = &self.sides[o];
        let mut own_index = Vec::new();
        let mut other_rows = Vec::new();
        let mut other_multiplicities = Vec::new();
        let mut pair_entries: Vec<(&[u8], &[u8])> = Vec::new();
        let parser = other.rows.parser();
        for (i, keyless) in keyless.iter().enumerate() {
            if *keyless {
                continue;
            }
            let key = keys.row(i);
            if let Some((stored_key, bucket)) = other.buckets.get_key_value(key.as_ref()) {
                for (row, entry) in bucket {
                    own_index.push(i as u32);
                    other_rows.push(parser.parse(row));
                    other_multiplicities.push(entry.multiplicity);
                    pair_entries.push((stored_key.as_ref(), row.as_ref()));
                }
            }
        }
        // Per row of the change: its matches (weighted); per matched row of the other side
        // (when preserved): how its match count moves.
        let mut matches = vec![0i64; n];
        let mut other_moves: Vec<(EntryId, i64)> = Vec::new();
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
                    let (key, row) = pair_entries[p];
                    other_moves.push(((key.into(), row.into()), diffs[i]));
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
            let mut before: HashMap<EntryId, i64> = HashMap::default();
            let side = &mut self.sides[o];
            for ((key, row), d) in other_moves {
                if let Some(entry) = side.buckets.get_mut(&key).and_then(|b| b.get_mut(&row)) {
                    before.entry((key, row)).or_insert(entry.matches);
                    entry.matches += d;
                }
            }
            let mut appear = Vec::new();
            let mut appear_diffs = Vec::new();
            for ((key, row), was) in before {
                let Some(entry) = side.buckets.get(&key).and_then(|b| b.get(&row)) else { continue };
                let diff = match (was == 0, entry.matches == 0) {
                    (true, false) => -entry.multiplicity,
                    (false, true) => entry.multiplicity,
                    _ => continue,
                };
                appear.push(row);
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
        let side = &mut self.sides[s];
        for i in 0..n {
            if keyless[i] || diffs[i] == 0 || expiries[i] <= watermark {
                continue;
            }
            let (key, row) = (keys.row(i), encoded.row(i));
            let bucket = match side.buckets.get_mut(key.as_ref()) {
                Some(b) => b,
                None => {
                    side.bytes += key.as_ref().len() + 48;
                    side.buckets.entry(key.as_ref().into()).or_default()
                }
            };
            match bucket.get_mut(row.as_ref()) {
                Some(entry) => {
                    entry.multiplicity += diffs[i];
                    if entry.multiplicity == 0 {
                        side.remove(key.as_ref(), row.as_ref());
                    }
                }
                None => {
                    bucket.insert(row.as_ref().into(), Entry { multiplicity: diffs[i], matches: matches[i] });
                    side.bytes += row.as_ref().len() + 32;
                    if expiries[i] != EventTime::MAX {
                        side.expiry.entry(expiries[i]).or_default().push((key.as_ref().into(), row.as_ref().into()));
                    }
                }
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
            for (key, row) in expired.into_values().flatten() {
                side.remove(&key, &row);
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
}
