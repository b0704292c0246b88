//! Per-group aggregate state that accepts retractions.
//!
//! Each accumulator holds the state of one aggregate call for every group slot of an
//! aggregate operator, in columns (`Vec`s indexed by slot), and is updated with whole arrays:
//! the argument values, the slot of each row and the row's diff (+n: n insertions, -n: n
//! retractions). That is DataFusion's `GroupsAccumulator` model plus retraction.
//!
//! # Correctness
//! For every group, the accumulator's state after any sequence of updates depends only on the
//! multiset of (value, diff) applied, not on their order or batching: counts and sums are sums;
//! min/max and count(DISTINCT) keep a multiset of values (row-encoded, so any orderable type
//! works) and evaluate from it; variance keeps (n, mean, M2) with Welford's update, whose
//! inverse removes a value. So the result equals the aggregate over the group's current rows,
//! which is what a batch recomputation gives (floats up to rounding).

use std::collections::BTreeMap;

// hashbrown with foldhash (DataFusion's default): std's SipHash showed in profiles.
use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type, UInt64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use weir_sql::streaming::{AggregateCall, AggregateKind};

use crate::error::{Result, SqlState, WeirError};

pub trait GroupAccumulator: Send {
    /// Applies row `i` of `values` with multiplicity `diffs[i]` to slot `slots[i]`; `slot_count`
    /// is the number of slots in use (the accumulator grows to it).
    fn update(&mut self, values: &ArrayRef, slots: &[usize], diffs: &[i64], slot_count: usize) -> Result<()>;
    /// The aggregate's value for each listed slot.
    fn evaluate(&self, slots: &[usize]) -> Result<ArrayRef>;
    /// Forgets a slot's state (the slot will be reused for another group).
    fn reset(&mut self, slot: usize);
    fn size(&self) -> usize;
    /// The state of the listed slots as columns, one row per slot, for a checkpoint.
    fn save(&self, slots: &[usize]) -> Result<Vec<ArrayRef>>;
    /// Sets the state of `slots[i]` from row `i` of columns written by [`GroupAccumulator::save`]
    /// (the accumulator grows to `slot_count` slots).
    fn load(&mut self, columns: &[ArrayRef], slots: &[usize], slot_count: usize) -> Result<()>;
}

/// Creates the accumulator for a call on an argument of `input` type producing `output` type.
pub fn create(call: &AggregateCall, append_only: bool, input: &DataType) -> Result<Box<dyn GroupAccumulator>> {
    let (kind, distinct, output, order, percentile) =
        (call.kind, call.distinct, &call.output_type, call.order, call.percentile);
    Ok(match kind {
        AggregateKind::Count if distinct => Box::new(CountDistinct::new(input)?),
        AggregateKind::Count => Box::new(Count::default()),
        AggregateKind::Sum | AggregateKind::Avg => Box::new(SumAvg::new(kind == AggregateKind::Avg, input, output)?),
        AggregateKind::Min | AggregateKind::Max if append_only && IntMinMax::fits(input) => {
            Box::new(IntMinMax::new(kind == AggregateKind::Min, input, output))
        }
        AggregateKind::Min | AggregateKind::Max => {
            Box::new(MinMax::new(kind == AggregateKind::Min, append_only, input, output)?)
        }
        AggregateKind::StddevSamp | AggregateKind::StddevPop | AggregateKind::VarSamp | AggregateKind::VarPop => {
            Box::new(Variance::new(kind))
        }
        AggregateKind::BoolAnd | AggregateKind::BoolOr => Box::new(BoolAndOr::new(kind == AggregateKind::BoolAnd)),
        // The first value is the minimum of (order key, value) rows, the last the maximum;
        // the struct is always valid, so rows with a NULL value count.
        AggregateKind::FirstValue | AggregateKind::LastValue => Box::new(MinMax::over(
            ValueRows::ordered(input, order.unwrap_or((false, false)))?,
            kind == AggregateKind::FirstValue,
            append_only,
            input,
            output,
        )?),
        AggregateKind::ApproxPercentileCont => Box::new(Percentile::new(percentile.unwrap_or(0.5), output)),
    })
}

fn grow<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if v.len() < len {
        v.resize(len, fill);
    }
}

/// Checkpointed state that does not have the shape this code writes: a part from another
/// version, or damage the checksums missed.
fn corrupt(what: &str) -> WeirError {
    WeirError::new(SqlState::DataCorrupted, format!("checkpointed aggregate state: {what}"))
}

/// Column `i` of a saved state as an array of `T`.
fn saved<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
    columns: &[ArrayRef],
    i: usize,
) -> Result<&datafusion::arrow::array::PrimitiveArray<T>> {
    columns.get(i).and_then(|c| c.as_primitive_opt::<T>()).ok_or_else(|| corrupt(&format!("column {i} is missing or mistyped")))
}

/// Per-slot multisets of row-encoded values as two list columns: the values and their counts.
fn save_byte_multisets<'a, S, I>(sets: I) -> Vec<ArrayRef>
where
    I: Iterator<Item = Option<S>>,
    S: Iterator<Item = (&'a [u8], i64)>,
{
    use datafusion::arrow::array::{BinaryBuilder, Int64Builder, ListBuilder};
    let mut values = ListBuilder::new(BinaryBuilder::new());
    let mut counts = ListBuilder::new(Int64Builder::new());
    for set in sets {
        for (v, n) in set.into_iter().flatten() {
            values.values().append_value(v);
            counts.values().append_value(n);
        }
        values.append(true);
        counts.append(true);
    }
    vec![Arc::new(values.finish()), Arc::new(counts.finish())]
}

/// One group's multiset: row-encoded values and their counts.
type ByteMultiset = Vec<(Box<[u8]>, i64)>;

/// The multisets written by [`save_byte_multisets`], one per row.
fn load_byte_multisets(columns: &[ArrayRef]) -> Result<Vec<ByteMultiset>> {
    let lists = |i: usize| columns.get(i).and_then(|c| c.as_list_opt::<i32>()).ok_or_else(|| corrupt("multiset columns are missing"));
    let (values, counts) = (lists(0)?, lists(1)?);
    (0..values.len())
        .map(|row| {
            let v = values.value(row);
            let v = v.as_binary_opt::<i32>().ok_or_else(|| corrupt("multiset values are not binary"))?;
            let n = counts.value(row);
            let n = n.as_primitive_opt::<Int64Type>().ok_or_else(|| corrupt("multiset counts are not integers"))?;
            Ok(v.iter().zip(n.iter()).map(|(v, n)| (Box::from(v.unwrap_or_default()), n.unwrap_or(0))).collect())
        })
        .collect()
}

/// `count(x)`: rows where x is not NULL (`count(*)` is `count(1)`).
#[derive(Default)]
struct Count {
    counts: Vec<i64>,
}

impl GroupAccumulator for Count {
    fn update(&mut self, values: &ArrayRef, slots: &[usize], diffs: &[i64], slot_count: usize) -> Result<()> {
        grow(&mut self.counts, slot_count, 0);
        if values.null_count() == 0 {
            for (s, d) in slots.iter().zip(diffs) {
                self.counts[*s] += d;
            }
        } else {
            for (i, (s, d)) in slots.iter().zip(diffs).enumerate() {
                if values.is_valid(i) {
                    self.counts[*s] += d;
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, slots: &[usize]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(slots.iter().map(|s| self.counts[*s]))))
    }

    fn reset(&mut self, slot: usize) {
        if let Some(c) = self.counts.get_mut(slot) {
            *c = 0;
        }
    }

    fn size(&self) -> usize {
        self.counts.len() * 8
    }

    fn save(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(slots)?])
    }

    fn load(&mut self, columns: &[ArrayRef], slots: &[usize], slot_count: usize) -> Result<()> {
        grow(&mut self.counts, slot_count, 0);
        let counts = saved::<Int64Type>(columns, 0)?;
        for (s, n) in slots.iter().zip(counts.values()) {
            self.counts[*s] = *n;
        }
        Ok(())
    }
}

/// Values as byte-comparable rows (for multisets of values of any type). A struct argument
/// (`first_value`'s `(order key, value)`) is encoded field by field, so rows sort by the order
/// key under its own sort options, and decode to the value.
struct ValueRows {
    converter: RowConverter,
    /// Whether values arrive as a struct of the encoded columns.
    fields: bool,
}

impl ValueRows {
    fn new(input: &DataType) -> Result<Self> {
        Ok(ValueRows { converter: RowConverter::new(vec![SortField::new(input.clone())])?, fields: false })
    }

    /// `(order key, value)` structs, the key sorted by `(descending, nulls_first)`.
    fn ordered(input: &DataType, (descending, nulls_first): (bool, bool)) -> Result<Self> {
        let DataType::Struct(fields) = input else {
            return Err(WeirError::internal("first_value/last_value without its (order, value) struct"));
        };
        let [key, value] = fields.iter().collect::<Vec<_>>()[..] else {
            return Err(WeirError::internal("first_value/last_value struct without two fields"));
        };
        let options = datafusion::arrow::compute::SortOptions { descending, nulls_first };
        let converter = RowConverter::new(vec![
            SortField::new_with_options(key.data_type().clone(), options),
            SortField::new(value.data_type().clone()),
        ])?;
        Ok(ValueRows { converter, fields: true })
    }

    fn encode(&self, values: &ArrayRef) -> Result<datafusion::arrow::row::Rows> {
        if self.fields {
            let values = values
                .as_struct_opt()
                .ok_or_else(|| WeirError::internal("first_value/last_value argument is not a struct"))?;
            Ok(self.converter.convert_columns(values.columns())?)
        } else {
            Ok(self.converter.convert_columns(std::slice::from_ref(values))?)
        }
    }

    /// A row holding only NULLs (what a group without values evaluates to).
    fn null_row(&self, input: &DataType) -> Result<Box<[u8]>> {
        let null: ArrayRef = match input {
            // A struct of NULLs (not a NULL struct): its fields are what gets encoded.
            DataType::Struct(fields) if self.fields => {
                let columns = fields.iter().map(|f| datafusion::arrow::array::new_null_array(f.data_type(), 1)).collect();
                Arc::new(datafusion::arrow::array::StructArray::new(fields.clone(), columns, None))
            }
            _ => datafusion::arrow::array::new_null_array(input, 1),
        };
        Ok(self.encode(&null)?.row(0).as_ref().into())
    }

    fn decode<'a>(&self, rows: impl Iterator<Item = Option<&'a [u8]>>, null: &'a [u8]) -> Result<ArrayRef> {
        let parser = self.converter.parser();
        let rows: Vec<_> = rows.map(|r| parser.parse(r.unwrap_or(null))).collect();
        let mut columns = self.converter.convert_rows(rows)?;
        columns.pop().ok_or_else(|| WeirError::internal("decoded no column"))
    }
}

/// `count(DISTINCT x)`: a multiset of the non-NULL values per group.
struct CountDistinct {
    rows: ValueRows,
    values: Vec<HashMap<Box<[u8]>, i64>>,
}

impl CountDistinct {
    fn new(input: &DataType) -> Result<Self> {
        Ok(CountDistinct { rows: ValueRows::new(input)?, values: Vec::new() })
    }
}

fn apply_multiset(map: &mut HashMap<Box<[u8]>, i64>, key: &[u8], diff: i64) {
    match map.get_mut(key) {
        Some(n) => {
            *n += diff;
            if *n == 0 {
                map.remove(key);
            }
        }
        None => {
            map.insert(key.into(), diff);
        }
    }
}

impl GroupAccumulator for CountDistinct {
    fn update(&mut self, values: &ArrayRef, slots: &[usize], diffs: &[i64], slot_count: usize) -> Result<()> {
        grow(&mut self.values, slot_count, HashMap::new());
        let rows = self.rows.encode(values)?;
        for (i, (s, d)) in slots.iter().zip(diffs).enumerate() {
            if values.is_valid(i) {
                apply_multiset(&mut self.values[*s], rows.row(i).as_ref(), *d);
            }
        }
        Ok(())
    }

    fn evaluate(&self, slots: &[usize]) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(slots.iter().map(|s| self.values[*s].len() as i64))))
    }

    fn reset(&mut self, slot: usize) {
        if let Some(v) = self.values.get_mut(slot) {
            *v = HashMap::new();
        }
    }

    fn size(&self) -> usize {
        self.values.iter().map(|m| m.len() * 48 + m.keys().map(|k| k.len()).sum::<usize>()).sum::<usize>()
            + self.values.len() * 48
    }

    fn save(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        Ok(save_byte_multisets(slots.iter().map(|s| self.values.get(*s).map(|m| m.iter().map(|(k, n)| (k.as_ref(), *n))))))
    }

    fn load(&mut self, columns: &[ArrayRef], slots: &[usize], slot_count: usize) -> Result<()> {
        grow(&mut self.values, slot_count, HashMap::new());
        for (s, set) in slots.iter().zip(load_byte_multisets(columns)?) {
            self.values[*s] = set.into_iter().collect();
        }
        Ok(())
    }
}

/// How a sum is accumulated: exactly for integers and decimals, in f64 for floats.
#[derive(Clone, Copy, PartialEq)]
enum SumKind {
    Int,
    UInt,
    Float,
    Decimal { scale: i8 },
}

/// `sum(x)` and `avg(x)`: a sum and a count of non-NULL values per group.
struct SumAvg {
    avg: bool,
    kind: SumKind,
    output: DataType,
    ints: Vec<i128>,
    floats: Vec<f64>,
    counts: Vec<i64>,
}

impl SumAvg {
    fn new(avg: bool, input: &DataType, output: &DataType) -> Result<Self> {
        let kind = match input {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => SumKind::Int,
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => SumKind::UInt,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => SumKind::Float,
            DataType::Decimal128(_, s) => SumKind::Decimal { scale: *s },
            other => return Err(WeirError::not_supported(format!("sum/avg over {other} in a materialized view"))),
        };
        // DataFusion's avg of integers is a float average.
        let kind = if avg && matches!(kind, SumKind::Int | SumKind::UInt) { SumKind::Float } else { kind };
        Ok(SumAvg { avg, kind, output: output.clone(), ints: Vec::new(), floats: Vec::new(), counts: Vec::new() })
    }
}

impl GroupAccumulator for SumAvg {
    fn update(&mut self, values: &ArrayRef, slots: &[usize], diffs: &[i64], slot_count: usize) -> Result<()> {
        grow(&mut self.counts, slot_count, 0);
        match self.kind {
            SumKind::Float => {
                grow(&mut self.floats, slot_count, 0.0);
                let v = cast(values, &DataType::Float64)?;
                let v = v.as_primitive::<Float64Type>();
                for (i, (s, d)) in slots.iter().zip(diffs).enumerate() {
                    if v.is_valid(i) {
                        self.floats[*s] += v.value(i) * *d as f64;
                        self.counts[*s] += d;
                    }
                }
            }
            SumKind::Int | SumKind::UInt | SumKind::Decimal { .. } => {
                grow(&mut self.ints, slot_count, 0);
                if self.kind == SumKind::Int && values.null_count() == 0 {
                    // The common case, without a call per value.
                    let v = cast(values, &DataType::Int64)?;
                    for ((s, d), x) in slots.iter().zip(diffs).zip(v.as_primitive::<Int64Type>().values()) {
                        self.ints[*s] += *x as i128 * *d as i128;
                        self.counts[*s] += d;
                    }
                    return Ok(());
                }
                let get: Box<dyn Fn(usize) -> i128> = match self.kind {
                    SumKind::Int => {
                        let v = cast(values, &DataType::Int64)?;
                        let v = v.as_primitive::<Int64Type>().clone();
                        Box::new(move |i| v.value(i) as i128)
                    }
                    SumKind::UInt => {
                        let v = cast(values, &DataType::UInt64)?;
                        let v = v.as_primitive::<UInt64Type>().clone();
                        Box::new(move |i| v.value(i) as i128)
                    }
                    _ => {
                        let v = values.as_primitive::<Decimal128Type>().clone();
                        Box::new(move |i| v.value(i))
                    }
                };
                for (i, (s, d)) in slots.iter().zip(diffs).enumerate() {
                    if values.is_valid(i) {
                        self.ints[*s] += get(i) * *d as i128;
                        self.counts[*s] += d;
                    }
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, slots: &[usize]) -> Result<ArrayRef> {
        let valid = |s: usize| self.counts[s] > 0;
        let out: ArrayRef = match (self.kind, self.avg) {
            (SumKind::Float, false) => {
                Arc::new(Float64Array::from_iter(slots.iter().map(|s| valid(*s).then(|| self.floats[*s]))))
            }
            (SumKind::Float, true) => Arc::new(Float64Array::from_iter(
                slots.iter().map(|s| valid(*s).then(|| self.floats[*s] / self.counts[*s] as f64)),
            )),
            // Integer sums wrap at 64 bits as DataFusion's do.
            (SumKind::Int, _) => {
                Arc::new(Int64Array::from_iter(slots.iter().map(|s| valid(*s).then(|| self.ints[*s] as i64))))
            }
            (SumKind::UInt, _) => {
                Arc::new(UInt64Array::from_iter(slots.iter().map(|s| valid(*s).then(|| self.ints[*s] as u64))))
            }
            (SumKind::Decimal { scale }, false) => {
                let DataType::Decimal128(p, s) = self.output else {
                    return Err(WeirError::internal("decimal sum without a decimal output type"));
                };
                let _ = scale;
                Arc::new(Decimal128Array::from_iter(slots.iter().map(|s| valid(*s).then(|| self.ints[*s]))).with_precision_and_scale(p, s)?)
            }
            (SumKind::Decimal { scale }, true) => {
                let DataType::Decimal128(p, target_scale) = self.output else {
                    return Err(WeirError::internal("decimal avg without a decimal output type"));
                };
                // As DataFusion: scale the sum up to the result's scale, then divide (truncating).
                let mul = 10i128.pow((target_scale - scale).max(0) as u32);
                Arc::new(
                    Decimal128Array::from_iter(
                        slots.iter().map(|s| valid(*s).then(|| self.ints[*s] * mul / self.counts[*s] as i128)),
                    )
                    .with_precision_and_scale(p, target_scale)?,
                )
            }
        };
        Ok(if out.data_type() == &self.output { out } else { cast(&out, &self.output)? })
    }

    fn reset(&mut self, slot: usize) {
        if let Some(c) = self.counts.get_mut(slot) {
            *c = 0;
        }
        if let Some(v) = self.ints.get_mut(slot) {
            *v = 0;
        }
        if let Some(v) = self.floats.get_mut(slot) {
            *v = 0.0;
        }
    }

    fn size(&self) -> usize {
        self.counts.len() * 8 + self.ints.len() * 16 + self.floats.len() * 8
    }

    fn save(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        let ints = Decimal128Array::from_iter_values(slots.iter().map(|s| self.ints.get(*s).copied().unwrap_or(0)));
        let floats = Float64Array::from_iter_values(slots.iter().map(|s| self.floats.get(*s).copied().unwrap_or(0.0)));
        let counts = Int64Array::from_iter_values(slots.iter().map(|s| self.counts.get(*s).copied().unwrap_or(0)));
        Ok(vec![Arc::new(ints), Arc::new(floats), Arc::new(counts)])
    }

    fn load(&mut self, columns: &[ArrayRef], slots: &[usize], slot_count: usize) -> Result<()> {
        grow(&mut self.ints, slot_count, 0);
        grow(&mut self.floats, slot_count, 0.0);
        grow(&mut self.counts, slot_count, 0);
        let (ints, floats, counts) =
            (saved::<Decimal128Type>(columns, 0)?, saved::<Float64Type>(columns, 1)?, saved::<Int64Type>(columns, 2)?);
        for (i, s) in slots.iter().enumerate() {
            self.ints[*s] = ints.value(i);
            self.floats[*s] = floats.value(i);
            self.counts[*s] = counts.value(i);
        }
        Ok(())
    }
}

/// `min(x)` / `max(x)` of integers or timestamps over an insert-only input: the best
/// value per group as an `i64` (no row encoding, no allocation per better value).
struct IntMinMax {
    is_min: bool,
    input: DataType,
    output: DataType,
    best: Vec<Option<i64>>,
}

impl IntMinMax {
    fn fits(input: &DataType) -> bool {
        matches!(
            input,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Timestamp(..)
                | DataType::Date64
        )
    }

    fn new(is_min: bool, input: &DataType, output: &DataType) -> Self {
        IntMinMax { is_min, input: input.clone(), output: output.clone(), best: Vec::new() }
    }
}

impl GroupAccumulator for IntMinMax {
    fn update(&mut self, values: &ArrayRef, slots: &[usize], diffs: &[i64], slot_count: usize) -> Result<()> {
        grow(&mut self.best, slot_count, None);
        if diffs.iter().any(|d| *d <= 0) {
            return Err(WeirError::internal("a retraction reached an insert-only min/max"));
        }
        let v = cast(values, &DataType::Int64)?;
        let v = v.as_primitive::<Int64Type>();
        for (i, s) in slots.iter().enumerate() {
            if v.is_null(i) {
                continue;
            }
            let x = v.value(i);
            let best = &mut self.best[*s];
            *best = Some(match *best {
                None => x,
                Some(b) if self.is_min => b.min(x),
                Some(b) => b.max(x),
            });
        }
        Ok(())
    }

    fn evaluate(&self, slots: &[usize]) -> Result<ArrayRef> {
        let out: ArrayRef = Arc::new(Int64Array::from_iter(slots.iter().map(|s| self.best[*s])));
        // Back to the input's type (a reinterpretation for timestamps), then the output's.
        let typed = cast(&out, &self.input)?;
        Ok(if typed.data_type() == &self.output { typed } else { cast(&typed, &self.output)? })
    }

    fn reset(&mut self, slot: usize) {
        if let Some(b) = self.best.get_mut(slot) {
            *b = None;
        }
    }

    fn size(&self) -> usize {
        self.best.len() * 16
    }

    fn save(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(Int64Array::from_iter(slots.iter().map(|s| self.best.get(*s).copied().flatten())))])
    }

    fn load(&mut self, columns: &[ArrayRef], slots: &[usize], slot_count: usize) -> Result<()> {
        grow(&mut self.best, slot_count, None);
        for (s, best) in slots.iter().zip(saved::<Int64Type>(columns, 0)?.iter()) {
            self.best[*s] = best;
        }
        Ok(())
    }
}

/// `min(x)` / `max(x)`. Over an insert-only input the best value is enough; when the input
/// can retract, a multiset of values per group (ordered by their row encoding, which orders
/// like the values) lets a retraction of the current best fall back to the next one.
struct MinMax {
    is_min: bool,
    rows: ValueRows,
    output: DataType,
    null_row: Box<[u8]>,
    best: Vec<Option<Box<[u8]>>>,
    multiset: Option<Vec<BTreeMap<Box<[u8]>, i64>>>,
}

impl MinMax {
    fn new(is_min: bool, append_only: bool, input: &DataType, output: &DataType) -> Result<Self> {
        Self::over(ValueRows::new(input)?, is_min, append_only, input, output)
    }

    fn over(rows: ValueRows, is_min: bool, append_only: bool, input: &DataType, output: &DataType) -> Result<Self> {
        let null_row = rows.null_row(input)?;
        Ok(MinMax {
            is_min,
            rows,
            output: output.clone(),
            null_row,
            best: Vec::new(),
            multiset: (!append_only).then(Vec::new),
        })
    }
}

impl GroupAccumulator for MinMax {
    fn update(&mut self, values: &ArrayRef, slots: &[usize], diffs: &[i64], slot_count: usize) -> Result<()> {
        let rows = self.rows.encode(values)?;
        match &mut self.multiset {
            Some(sets) => {
                grow(sets, slot_count, BTreeMap::new());
                for (i, (s, d)) in slots.iter().zip(diffs).enumerate() {
                    if values.is_valid(i) {
                        let key = rows.row(i);
                        let set = &mut sets[*s];
                        match set.get_mut(key.as_ref()) {
                            Some(n) => {
                                *n += d;
                                if *n == 0 {
                                    set.remove(key.as_ref());
                                }
                            }
                            None => {
                                set.insert(key.as_ref().into(), *d);
                            }
                        }
                    }
                }
            }
            None => {
                grow(&mut self.best, slot_count, None);
                for (i, (s, d)) in slots.iter().zip(diffs).enumerate() {
                    if *d <= 0 {
                        return Err(WeirError::internal("a retraction reached an insert-only min/max"));
                    }
                    if !values.is_valid(i) {
                        continue;
                    }
                    let key = rows.row(i);
                    let better = match &self.best[*s] {
                        None => true,
                        Some(b) => (key.as_ref() < b.as_ref()) == self.is_min && key.as_ref() != b.as_ref(),
                    };
                    if better {
                        self.best[*s] = Some(key.as_ref().into());
                    }
                }
            }
        }
        Ok(())
    }

    fn evaluate(&self, slots: &[usize]) -> Result<ArrayRef> {
        let out = match &self.multiset {
            Some(sets) => self.rows.decode(
                slots.iter().map(|s| {
                    let set = &sets[*s];
                    let entry = if self.is_min { set.keys().next() } else { set.keys().next_back() };
                    entry.map(|k| k.as_ref())
                }),
                &self.null_row,
            )?,
            None => self.rows.decode(slots.iter().map(|s| self.best[*s].as_deref()), &self.null_row)?,
        };
        Ok(if out.data_type() == &self.output { out } else { cast(&out, &self.output)? })
    }

    fn reset(&mut self, slot: usize) {
        if let Some(b) = self.best.get_mut(slot) {
            *b = None;
        }
        if let Some(sets) = &mut self.multiset
            && let Some(s) = sets.get_mut(slot)
        {
            *s = BTreeMap::new();
        }
    }

    fn size(&self) -> usize {
        let best: usize = self.best.iter().map(|b| 24 + b.as_ref().map_or(0, |b| b.len())).sum();
        let sets: usize = self
            .multiset
            .as_ref()
            .map_or(0, |s| s.iter().map(|m| 24 + m.keys().map(|k| k.len() + 40).sum::<usize>()).sum());
        best + sets
    }

    fn save(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        Ok(match &self.multiset {
            Some(sets) => save_byte_multisets(slots.iter().map(|s| sets.get(*s).map(|m| m.iter().map(|(k, n)| (k.as_ref(), *n))))),
            None => vec![Arc::new(datafusion::arrow::array::BinaryArray::from_iter(
                slots.iter().map(|s| self.best.get(*s).and_then(|b| b.as_deref())),
            ))],
        })
    }

    fn load(&mut self, columns: &[ArrayRef], slots: &[usize], slot_count: usize) -> Result<()> {
        match &mut self.multiset {
            Some(sets) => {
                grow(sets, slot_count, BTreeMap::new());
                for (s, set) in slots.iter().zip(load_byte_multisets(columns)?) {
                    sets[*s] = set.into_iter().collect();
                }
            }
            None => {
                grow(&mut self.best, slot_count, None);
                let best = columns.first().and_then(|c| c.as_binary_opt::<i32>()).ok_or_else(|| corrupt("min/max values are not binary"))?;
                for (s, b) in slots.iter().zip(best.iter()) {
                    self.best[*s] = b.map(Box::from);
                }
            }
        }
        Ok(())
    }
}

/// Variance and standard deviation by Welford's method, which can also remove a value.
struct Variance {
    kind: AggregateKind,
    n: Vec<i64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Variance {
    fn new(kind: AggregateKind) -> Self {
        Variance { kind, n: Vec::new(), mean: Vec::new(), m2: Vec::new() }
    }

    fn add(&mut self, s: usize, x: f64) {
        self.n[s] += 1;
        let delta = x - self.mean[s];
        self.mean[s] += delta / self.n[s] as f64;
        self.m2[s] += delta * (x - self.mean[s]);
    }

    fn remove(&mut self, s: usize, x: f64) {
        if self.n[s] <= 1 {
            self.n[s] = 0;
            self.mean[s] = 0.0;
            self.m2[s] = 0.0;
            return;
        }
        let old_mean = self.mean[s];
        self.n[s] -= 1;
        self.mean[s] = (old_mean * (self.n[s] + 1) as f64 - x) / self.n[s] as f64;
        self.m2[s] -= (x - old_mean) * (x - self.mean[s]);
        if self.m2[s] < 0.0 {
            self.m2[s] = 0.0;
        }
    }
}

impl GroupAccumulator for Variance {
    fn update(&mut self, values: &ArrayRef, slots: &[usize], diffs: &[i64], slot_count: usize) -> Result<()> {
        grow(&mut self.n, slot_count, 0);
        grow(&mut self.mean, slot_count, 0.0);
        grow(&mut self.m2, slot_count, 0.0);
        let v = cast(values, &DataType::Float64)?;
        let v = v.as_primitive::<Float64Type>();
        for (i, (s, d)) in slots.iter().zip(diffs).enumerate() {
            if !v.is_valid(i) {
                continue;
            }
            let x = v.value(i);
            for _ in 0..d.unsigned_abs() {
                if *d > 0 { self.add(*s, x) } else { self.remove(*s, x) }
            }
        }
        Ok(())
    }

    fn evaluate(&self, slots: &[usize]) -> Result<ArrayRef> {
        let value = |s: usize| -> Option<f64> {
            let n = self.n[s];
            let (var, ok) = match self.kind {
                AggregateKind::VarSamp | AggregateKind::StddevSamp => (self.m2[s] / (n - 1) as f64, n > 1),
                _ => (self.m2[s] / n as f64, n > 0),
            };
            if !ok {
                return None;
            }
            Some(match self.kind {
                AggregateKind::StddevSamp | AggregateKind::StddevPop => var.sqrt(),
                _ => var,
            })
        };
        Ok(Arc::new(Float64Array::from_iter(slots.iter().map(|s| value(*s)))))
    }

    fn reset(&mut self, slot: usize) {
        if slot < self.n.len() {
            self.n[slot] = 0;
            self.mean[slot] = 0.0;
            self.m2[slot] = 0.0;
        }
    }

    fn size(&self) -> usize {
        self.n.len() * 24
    }

    fn save(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        let n = Int64Array::from_iter_values(slots.iter().map(|s| self.n[*s]));
        let mean = Float64Array::from_iter_values(slots.iter().map(|s| self.mean[*s]));
        let m2 = Float64Array::from_iter_values(slots.iter().map(|s| self.m2[*s]));
        Ok(vec![Arc::new(n), Arc::new(mean), Arc::new(m2)])
    }

    fn load(&mut self, columns: &[ArrayRef], slots: &[usize], slot_count: usize) -> Result<()> {
        grow(&mut self.n, slot_count, 0);
        grow(&mut self.mean, slot_count, 0.0);
        grow(&mut self.m2, slot_count, 0.0);
        let (n, mean, m2) = (saved::<Int64Type>(columns, 0)?, saved::<Float64Type>(columns, 1)?, saved::<Float64Type>(columns, 2)?);
        for (i, s) in slots.iter().enumerate() {
            self.n[*s] = n.value(i);
            self.mean[*s] = mean.value(i);
            self.m2[*s] = m2.value(i);
        }
        Ok(())
    }
}

/// `bool_and` / `bool_or`: counts of true and false values per group.
struct BoolAndOr {
    and: bool,
    trues: Vec<i64>,
    falses: Vec<i64>,
}

impl BoolAndOr {
    fn new(and: bool) -> Self {
        BoolAndOr { and, trues: Vec::new(), falses: Vec::new() }
    }
}

impl GroupAccumulator for BoolAndOr {
    fn update(&mut self, values: &ArrayRef, slots: &[usize], diffs: &[i64], slot_count: usize) -> Result<()> {
        grow(&mut self.trues, slot_count, 0);
        grow(&mut self.falses, slot_count, 0);
        let v = values.as_boolean_opt().ok_or_else(|| WeirError::internal("bool_and/bool_or over non-booleans"))?;
        for (i, (s, d)) in slots.iter().zip(diffs).enumerate() {
            if v.is_valid(i) {
                if v.value(i) { self.trues[*s] += d } else { self.falses[*s] += d }
            }
        }
        Ok(())
    }

    fn evaluate(&self, slots: &[usize]) -> Result<ArrayRef> {
        Ok(Arc::new(BooleanArray::from_iter(slots.iter().map(|s| {
            let (t, f) = (self.trues[*s], self.falses[*s]);
            if t + f == 0 {
                None
            } else if self.and {
                Some(f == 0)
            } else {
                Some(t > 0)
            }
        }))))
    }

    fn reset(&mut self, slot: usize) {
        if slot < self.trues.len() {
            self.trues[slot] = 0;
            self.falses[slot] = 0;
        }
    }

    fn size(&self) -> usize {
        self.trues.len() * 16
    }

    fn save(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        let trues = Int64Array::from_iter_values(slots.iter().map(|s| self.trues[*s]));
        let falses = Int64Array::from_iter_values(slots.iter().map(|s| self.falses[*s]));
        Ok(vec![Arc::new(trues), Arc::new(falses)])
    }

    fn load(&mut self, columns: &[ArrayRef], slots: &[usize], slot_count: usize) -> Result<()> {
        grow(&mut self.trues, slot_count, 0);
        grow(&mut self.falses, slot_count, 0);
        let (trues, falses) = (saved::<Int64Type>(columns, 0)?, saved::<Int64Type>(columns, 1)?);
        for (i, s) in slots.iter().enumerate() {
            self.trues[*s] = trues.value(i);
            self.falses[*s] = falses.value(i);
        }
        Ok(())
    }
}

/// A float ordered by `total_cmp`, for the percentile multiset.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ordered(f64);

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// `approx_percentile_cont(p)`: computed exactly (linear interpolation between the two
/// nearest ranks, as `percentile_cont`), so within any error bound the approximation promises.
/// Keeps a multiset of each group's non-NULL values, which retractions need anyway; windowed
/// groups free it when their window closes.
struct Percentile {
    percentile: f64,
    output: DataType,
    values: Vec<BTreeMap<Ordered, i64>>,
}

impl Percentile {
    fn new(percentile: f64, output: &DataType) -> Self {
        Percentile { percentile, output: output.clone(), values: Vec::new() }
    }

    fn value_at(set: &BTreeMap<Ordered, i64>, total: i64, rank: i64) -> Option<f64> {
        let mut seen = 0;
        for (v, n) in set {
            seen += n;
            if seen > rank.min(total - 1) {
                return Some(v.0);
            }
        }
        None
    }
}

impl GroupAccumulator for Percentile {
    fn update(&mut self, values: &ArrayRef, slots: &[usize], diffs: &[i64], slot_count: usize) -> Result<()> {
        grow(&mut self.values, slot_count, BTreeMap::new());
        let floats = cast(values, &DataType::Float64)?;
        let floats = floats.as_primitive::<Float64Type>();
        for (i, (s, d)) in slots.iter().zip(diffs).enumerate() {
            if floats.is_null(i) {
                continue;
            }
            let set = &mut self.values[*s];
            let key = Ordered(floats.value(i));
            let n = set.entry(key).or_insert(0);
            *n += d;
            if *n == 0 {
                set.remove(&key);
            }
        }
        Ok(())
    }

    fn evaluate(&self, slots: &[usize]) -> Result<ArrayRef> {
        let out: Float64Array = slots
            .iter()
            .map(|s| {
                let set = self.values.get(*s)?;
                let total: i64 = set.values().sum();
                if total <= 0 {
                    return None;
                }
                let position = self.percentile * (total - 1) as f64;
                let (lower, upper) = (position.floor() as i64, position.ceil() as i64);
                let low = Self::value_at(set, total, lower)?;
                let high = Self::value_at(set, total, upper)?;
                Some(low + (high - low) * (position - lower as f64))
            })
            .collect();
        let out: ArrayRef = Arc::new(out);
        Ok(if out.data_type() == &self.output { out } else { cast(&out, &self.output)? })
    }

    fn reset(&mut self, slot: usize) {
        if let Some(s) = self.values.get_mut(slot) {
            *s = BTreeMap::new();
        }
    }

    fn size(&self) -> usize {
        self.values.iter().map(|m| 24 + m.len() * 48).sum()
    }

    fn save(&self, slots: &[usize]) -> Result<Vec<ArrayRef>> {
        use datafusion::arrow::array::{Float64Builder, Int64Builder, ListBuilder};
        let mut values = ListBuilder::new(Float64Builder::new());
        let mut counts = ListBuilder::new(Int64Builder::new());
        for s in slots {
            for (v, n) in self.values.get(*s).into_iter().flatten() {
                values.values().append_value(v.0);
                counts.values().append_value(*n);
            }
            values.append(true);
            counts.append(true);
        }
        Ok(vec![Arc::new(values.finish()), Arc::new(counts.finish())])
    }

    fn load(&mut self, columns: &[ArrayRef], slots: &[usize], slot_count: usize) -> Result<()> {
        grow(&mut self.values, slot_count, BTreeMap::new());
        let lists = |i: usize| columns.get(i).and_then(|c| c.as_list_opt::<i32>()).ok_or_else(|| corrupt("percentile columns are missing"));
        let (values, counts) = (lists(0)?, lists(1)?);
        for (row, s) in slots.iter().enumerate() {
            let v = values.value(row);
            let n = counts.value(row);
            let (v, n) = (
                v.as_primitive_opt::<Float64Type>().ok_or_else(|| corrupt("percentile values are not floats"))?,
                n.as_primitive_opt::<Int64Type>().ok_or_else(|| corrupt("percentile counts are not integers"))?,
            );
            self.values[*s] = v.values().iter().zip(n.values()).map(|(v, n)| (Ordered(*v), *n)).collect();
        }
        Ok(())
    }
}
