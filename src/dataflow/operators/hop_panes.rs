//! HOP windows from panes: an aggregate that keeps one group per key and pane (see
//! `weir_sql::streaming::panes` for when the planner chooses it and why it is exact) builds a
//! window's rows, when the window closes, by merging the groups of the window's panes.
//!
//! The aggregate lists its groups under their close time, which for a pane group is when the
//! pane's last window closes (pane start + size). A window closing at `c` covers the panes
//! starting at `c - size`, ..., `c - slide`, listed under `c`, `c + slide`, ...,
//! `c + size - slide`.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, Int64Array, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::HashMap;
use weir_sql::streaming::{AggregateCall, AggregateKind, HopPanes};

use super::accumulators::{self, GroupAccumulator};
use crate::dataflow::EventTime;
use crate::error::{Result, WeirError};

pub struct PaneMerger {
    spec: HopPanes,
    /// Group columns that do not hold window bounds: pane groups with equal values merge.
    other_keys: Vec<usize>,
    other_converter: RowConverter,
    /// Per call: the call and its argument's type.
    calls: Vec<(AggregateCall, DataType)>,
}

impl PaneMerger {
    pub fn new(spec: HopPanes, key_types: &[DataType], calls: &[(AggregateCall, DataType)]) -> Result<Self> {
        let other_keys: Vec<usize> =
            (0..key_types.len()).filter(|g| !spec.window_columns.iter().any(|(w, _)| w == g)).collect();
        let other_converter = RowConverter::new(other_keys.iter().map(|g| SortField::new(key_types[*g].clone())).collect())?;
        Ok(PaneMerger {
            spec,
            other_keys,
            other_converter,
            calls: calls.to_vec(),
        })
    }

    pub fn slide(&self) -> i64 {
        self.spec.slide
    }

    /// Pane groups listed under a close time at most this may belong to a window closing by
    /// `watermark` (their first window closes a slide after their start).
    pub fn last_pane_close(&self, watermark: EventTime) -> EventTime {
        watermark.saturating_add(self.spec.size - self.spec.slide)
    }

    /// The windows closing in `(previous, watermark]` that hold a pane with groups, ascending,
    /// given the close times the pane groups are listed under, ascending. Costs one step per
    /// pane and per window returned, however many panes a window has.
    pub fn closing_windows(
        &self,
        pane_closes: impl Iterator<Item = EventTime>,
        previous: EventTime,
        watermark: EventTime,
    ) -> Vec<EventTime> {
        let (slide, size) = (self.spec.slide, self.spec.size);
        let mut closes = Vec::new();
        // Every close up to here is listed or not wanted; panes, and so their windows' first
        // closes, come in ascending order.
        let mut done = previous;
        for pane_close in pane_closes {
            // Groups without a window close never (the unnest gives NULL starts no row).
            if pane_close == EventTime::MAX {
                continue;
            }
            // The pane's windows close at start + slide, ..., start + size, a slide apart.
            let start = pane_close - size;
            let first = start + slide;
            let mut close = if done < first { first } else { first + ((done - first) / slide + 1) * slide };
            while close <= pane_close && close <= watermark {
                closes.push(close);
                done = close;
                close += slide;
            }
        }
        closes
    }

    /// The close times the panes of the window closing at `close` are listed under.
    pub fn pane_closes(&self, close: EventTime) -> impl Iterator<Item = EventTime> + use<> {
        let slide = self.spec.slide;
        (0..self.spec.size / slide).map(move |j| close.saturating_add(j * slide))
    }

    /// The rows of the window closing at `close`, from its pane groups: `keys` are their group
    /// key columns, one row per pane group, whose state `accumulators` hold in `slots`. Returns
    /// the window's key columns then aggregate columns, and its row count.
    pub fn merge(
        &self,
        close: EventTime,
        mut keys: Vec<ArrayRef>,
        accumulators: &[Box<dyn GroupAccumulator>],
        slots: &[usize],
    ) -> Result<(Vec<ArrayRef>, usize)> {
        let n = keys.first().map_or(0, |k| k.len());
        let start = close - self.spec.size;
        for (g, shift) in &self.spec.window_columns {
            let value = TimestampMicrosecondArray::from_value(start + shift, n);
            keys[*g] = cast(&value, keys[*g].data_type())?;
        }
        // Group the pane groups by their other key columns.
        let mut group_of = Vec::with_capacity(n);
        let mut firsts: Vec<u32> = Vec::new();
        if self.other_keys.is_empty() {
            group_of.resize(n, 0);
            if n > 0 {
                firsts.push(0);
            }
        } else {
            let others: Vec<ArrayRef> = self.other_keys.iter().map(|g| keys[*g].clone()).collect();
            let rows = self.other_converter.convert_columns(&others)?;
            let mut index: HashMap<&[u8], usize> = HashMap::with_capacity_and_hasher(n, Default::default());
            for i in 0..n {
                let next = firsts.len();
                let group = *index.entry(rows.row(i).data()).or_insert(next);
                if group == next {
                    firsts.push(i as u32);
                }
                group_of.push(group);
            }
        }
        let groups = firsts.len();
        let firsts = UInt32Array::from(firsts);
        let mut columns: Vec<ArrayRef> = keys.iter().map(|k| take(k, &firsts, None)).collect::<std::result::Result<_, _>>()?;
        let window_slots: Vec<usize> = (0..groups).collect();
        for ((call, input_type), acc) in self.calls.iter().zip(accumulators) {
            columns.push(match call.kind {
                AggregateKind::Min | AggregateKind::Max => {
                    merge_extremes(call.kind == AggregateKind::Min, &acc.evaluate(slots)?, &group_of, groups)?
                }
                // count, sum and avg keep counts and sums, which add: the windows' states are
                // the sums of their panes', evaluated by an accumulator of the same call.
                _ => {
                    let state = add_states(&acc.save(slots)?, &group_of, groups)?;
                    let mut window = accumulators::create(call, true, input_type)?;
                    window.load(&state, &window_slots, groups)?;
                    window.evaluate(&window_slots)?
                }
            });
        }
        Ok((columns, groups))
    }
}

/// The minimum or maximum per window group (`group_of`: pane row → window group) of per-pane
/// minima or maxima of integer-like values; NULL (a pane without values) is skipped.
fn merge_extremes(min: bool, partial: &ArrayRef, group_of: &[usize], groups: usize) -> Result<ArrayRef> {
    let values = cast(partial, &DataType::Int64)?;
    let values = values.as_primitive::<Int64Type>();
    let mut merged: Vec<Option<i64>> = vec![None; groups];
    for (i, group) in group_of.iter().enumerate() {
        if values.is_valid(i) {
            let v = values.value(i);
            let slot = &mut merged[*group];
            *slot = Some(match *slot {
                None => v,
                Some(m) if min => m.min(v),
                Some(m) => m.max(v),
            });
        }
    }
    let merged: ArrayRef = Arc::new(Int64Array::from(merged));
    Ok(cast(&merged, partial.data_type())?)
}

/// Saved accumulator states (count and sum columns) added up per window group. Integers wrap
/// as the accumulators' own sums do.
fn add_states(columns: &[ArrayRef], group_of: &[usize], groups: usize) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|column| -> Result<ArrayRef> {
            Ok(match column.data_type() {
                DataType::Int64 => {
                    let mut sums = vec![0i64; groups];
                    for (v, g) in column.as_primitive::<Int64Type>().values().iter().zip(group_of) {
                        sums[*g] = sums[*g].wrapping_add(*v);
                    }
                    Arc::new(Int64Array::from(sums))
                }
                DataType::Decimal128(..) => {
                    let mut sums = vec![0i128; groups];
                    for (v, g) in column.as_primitive::<Decimal128Type>().values().iter().zip(group_of) {
                        sums[*g] = sums[*g].wrapping_add(*v);
                    }
                    Arc::new(Decimal128Array::from(sums).with_data_type(column.data_type().clone()))
                }
                DataType::Float64 => {
                    let mut sums = vec![0f64; groups];
                    for (v, g) in column.as_primitive::<Float64Type>().values().iter().zip(group_of) {
                        sums[*g] += *v;
                    }
                    Arc::new(Float64Array::from(sums))
                }
                other => return Err(WeirError::internal(format!("an aggregate state column of type {other} merged from panes"))),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kind: AggregateKind, output_type: DataType) -> (AggregateCall, DataType) {
        let call =
            AggregateCall { kind, args: vec![], distinct: false, output_type, order: None, percentile: None, display: String::new() };
        (call, DataType::Int64)
    }

    fn merger() -> PaneMerger {
        let spec = HopPanes { slide: 2, size: 6, window_columns: vec![(1, 0)] };
        let calls = [
            call(AggregateKind::Count, DataType::Int64),
            call(AggregateKind::Max, DataType::Int64),
            call(AggregateKind::Avg, DataType::Float64),
        ];
        PaneMerger::new(spec, &[DataType::Int64, DataType::Int64], &calls).unwrap()
    }

    #[test]
    fn a_pane_belongs_to_the_windows_closing_in_its_span() {
        let m = merger();
        // The pane [10, 12) is listed under 16 and belongs to the windows closing at 12, 14, 16.
        assert_eq!(m.closing_windows([16].into_iter(), 0, 100), vec![12, 14, 16]);
        assert_eq!(m.closing_windows([16].into_iter(), 12, 14), vec![14]);
        assert_eq!(m.closing_windows([16].into_iter(), 13, 100), vec![14, 16]);
        // Overlapping panes give each window once, in order; NULL-start groups none.
        assert_eq!(m.closing_windows([16, 18, 22, EventTime::MAX].into_iter(), 11, EventTime::MAX), vec![12, 14, 16, 18, 20, 22]);
        assert_eq!(m.pane_closes(12).collect::<Vec<_>>(), vec![12, 14, 16]);
        assert_eq!(m.last_pane_close(12), 16);
    }

    #[test]
    fn many_panes_per_window_cost_a_step_per_pane() {
        let spec = HopPanes { slide: 1, size: 100_000, window_columns: vec![(0, 0)] };
        let m = PaneMerger::new(spec, &[DataType::Int64], &[]).unwrap();
        // 100,000 open panes, the watermark moving one slide: one window closes.
        let listed = (100_000..200_000).map(|start| start + 100_000);
        assert_eq!(m.closing_windows(listed, 150_000, 150_001), vec![150_001]);
    }

    #[test]
    fn panes_merge_by_their_other_keys() {
        let m = merger();
        let keys: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![7, 8, 7])), Arc::new(Int64Array::from(vec![6, 8, 10]))];
        // Three pane groups in slots 0, 1, 2: values 5 | NULL, NULL | 4, 2, 3.
        let values: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None, None, Some(4), Some(2), Some(3)]));
        let value_slots = [0, 0, 1, 2, 2, 2];
        let mut accumulators: Vec<Box<dyn GroupAccumulator>> = Vec::new();
        for (call, input) in &m.calls {
            let mut acc = accumulators::create(call, true, input).unwrap();
            acc.update(&values, &value_slots, &[1; 6], 3).unwrap();
            accumulators.push(acc);
        }
        let (columns, rows) = m.merge(12, keys, &accumulators, &[0, 1, 2]).unwrap();
        assert_eq!(rows, 2);
        let column = |i: usize| columns[i].as_primitive::<Int64Type>().iter().collect::<Vec<_>>();
        assert_eq!(column(0), vec![Some(7), Some(8)]);
        assert_eq!(column(1), vec![Some(6), Some(6)], "the window start replaces the pane starts");
        // count(v) skips NULLs: 1 + 3 for key 7, 0 for key 8.
        assert_eq!(column(2), vec![Some(4), Some(0)]);
        assert_eq!(column(3), vec![Some(5), None]);
        let avg = columns[4].as_primitive::<Float64Type>().iter().collect::<Vec<_>>();
        assert_eq!(avg, vec![Some(3.5), None]);
    }
}
