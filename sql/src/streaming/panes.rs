//! HOP windows maintained by panes.
//!
//! A HOP window of `size` sliding by `slide` covers `size / slide` *panes*, the slide-long
//! tumbling windows it is made of; a row lies in one pane but in `size / slide` windows. The
//! rewrite (`window.rs`) gives each row all its windows (an unnest of `weir_hop_starts`), so an
//! aggregate over it updates `size / slide` groups per row. When the aggregate's calls merge
//! (count, sum and avg, min and max of integer-like values) and it emits each window once,
//! on close, over input that only inserts, [`plan_panes`] lets each row fall in its pane only
//! (`weir_hop_pane` in place of `weir_hop_starts`): the aggregate keeps one group per key and
//! pane and, when a window closes, merges the groups of its panes (`AggregateOp` in the engine,
//! configured by [`HopPanes`]). A row then costs one group update, and a pane group is read
//! once per window it belongs to.
//!
//! # Correctness
//! With panes, the group columns that hold window bounds hold pane values instead. The planner
//! accepts only plans where every value derived from the window start is the start plus a
//! constant (`window_start`, `window_end`): it traces the start through the projections between
//! the unnest and the aggregate, which may pass it on or add a constant interval to it and do
//! nothing else with it, and no aggregate argument may depend on it. Grouping rows by (other
//! keys, pane) and then merging, per window, the pane groups with equal other keys therefore
//! groups exactly the rows of each (other keys, window) group of the plan without panes; and
//! the state of count, sum and avg over a union of disjoint parts (a count of non-NULL values, a
//! sum) is the sum of the parts' states, and the minimum and maximum are the minimum of the
//! minima and the maximum of the maxima (NULL parts skipped, as the calls skip NULL values).
//! Integer sums wrap at 64 bits in both plans, so they agree; a float sum adds the same values
//! in another order, so it can differ in the last bits (as it does between arrival orders). A pane group is kept until its last window closes:
//! the window key column is checked to close exactly then.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Expr, ExprSchemable, ScalarUDF};
use std::sync::Arc;

use super::plan::{AggregateCall, AggregateKind, NodeId, StreamNode, StreamOp, WindowKey, literal_interval};
use super::window::{ADD_INTERVAL, HOP_STARTS, HopStarts};

/// How an aggregate keeps HOP windows by panes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopPanes {
    pub slide: i64,
    pub size: i64,
    /// The group columns that hold window bounds, as (group index, value minus window start):
    /// `window_start` is 0, `window_end` is `size`.
    pub window_columns: Vec<(usize, i64)>,
}

/// Whether the aggregate about to be planned over `input` can keep its HOP windows by panes;
/// if so, switches the unnest below it to panes and returns what the engine needs. Called only
/// for an aggregate that emits on window close over append-only input.
pub(crate) fn plan_panes(
    nodes: &mut [StreamNode],
    input: NodeId,
    group_exprs: &[Expr],
    calls: &[AggregateCall],
    window: WindowKey,
    input_schema: &DFSchema,
) -> Option<HopPanes> {
    if !calls.iter().all(|c| mergeable(c, input_schema)) {
        return None;
    }
    // Projections down to the unnest of HOP windows.
    let mut chain = Vec::new();
    let mut id = input;
    while let StreamOp::Project { .. } = nodes[id].op {
        chain.push(id);
        id = nodes[id].inputs[0];
    }
    let StreamOp::Unnest { list_column, dependency_indices } = &nodes[id].op else {
        return None;
    };
    let list_column = *list_column;
    let mut shifts: Vec<Option<i64>> = dependency_indices.iter().map(|d| (*d == list_column).then_some(0)).collect();
    let windows = nodes[id].inputs[0];
    let StreamOp::Project { exprs, .. } = &nodes[windows].op else {
        return None;
    };
    let Expr::ScalarFunction(hop) = strip_alias(exprs.get(list_column)?) else {
        return None;
    };
    if hop.name() != HOP_STARTS || hop.args.len() != 4 {
        return None;
    }
    let hop_args = hop.args.clone();
    let (slide, size) = (literal_interval(&hop_args[1])?, literal_interval(&hop_args[2])?);
    if slide <= 0 || size <= slide || size % slide != 0 {
        return None;
    }
    // The window start through the projections, bottom up.
    for &p in chain.iter().rev() {
        let StreamOp::Project { exprs, input_schema } = &nodes[p].op else {
            return None;
        };
        shifts = exprs
            .iter()
            .map(|e| match window_shift(e, input_schema, &shifts) {
                Shift::Independent => Some(None),
                Shift::By(d) => Some(Some(d)),
                Shift::Other => None,
            })
            .collect::<Option<_>>()?;
    }
    let mut window_columns = Vec::new();
    for (g, e) in group_exprs.iter().enumerate() {
        match window_shift(e, input_schema, &shifts) {
            Shift::Independent => {}
            Shift::By(d) => window_columns.push((g, d)),
            Shift::Other => return None,
        }
    }
    let independent = |e: &Expr| matches!(window_shift(e, input_schema, &shifts), Shift::Independent);
    if !calls.iter().all(|c| c.args.iter().all(independent)) {
        return None;
    }
    // A pane group is freed when the window key says its group closes: that must be when the
    // pane's last window closes (the pane start plus `size`).
    let (_, shift) = window_columns.iter().find(|(g, _)| *g == window.group_index)?;
    if shift + window.close_offset != size {
        return None;
    }
    let StreamOp::Project { exprs, .. } = &mut nodes[windows].op else {
        return None;
    };
    let pane = Expr::ScalarFunction(ScalarFunction {
        func: Arc::new(ScalarUDF::new_from_impl(HopStarts::panes())),
        args: hop_args,
    });
    exprs[list_column] = match &exprs[list_column] {
        Expr::Alias(a) => pane.alias_qualified(a.relation.clone(), a.name.clone()),
        _ => pane,
    };
    Some(HopPanes { slide, size, window_columns })
}

/// count, sum and avg (whose states add up), min and max of integer-like values: the calls
/// whose window value the engine merges from its panes'.
fn mergeable(call: &AggregateCall, schema: &DFSchema) -> bool {
    let Some(Ok(input)) = call.args.first().map(|a| a.get_type(schema)) else {
        return false;
    };
    match call.kind {
        AggregateKind::Count => !call.distinct,
        // Their states (a count, a sum) add up; the engine's accumulator takes these types.
        AggregateKind::Sum | AggregateKind::Avg => matches!(
            input,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Decimal128(..)
        ),
        AggregateKind::Min | AggregateKind::Max => {
            matches!(
                input,
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Timestamp(..) | DataType::Date64
            ) && call.output_type == input
        }
        _ => false,
    }
}

enum Shift {
    /// The value does not depend on the window start.
    Independent,
    /// The value is the window start plus this.
    By(i64),
    /// The value depends on the window start some other way.
    Other,
}

/// How `expr` over `schema` depends on the window start, given per column of `schema` its
/// shift from the window start (None: independent of it).
fn window_shift(expr: &Expr, schema: &DFSchema, shifts: &[Option<i64>]) -> Shift {
    // A column that does not resolve is taken as depending on the start some other way.
    let shift_of = |c: &datafusion::common::Column| schema.index_of_column(c).map(|i| shifts.get(i).copied().flatten());
    let mut depends = false;
    for c in expr.column_refs() {
        match shift_of(c) {
            Ok(shift) => depends |= shift.is_some(),
            Err(_) => return Shift::Other,
        }
    }
    if !depends {
        return Shift::Independent;
    }
    match strip_alias(expr) {
        Expr::Column(c) => shift_of(c).ok().flatten().map_or(Shift::Other, Shift::By),
        Expr::ScalarFunction(f) if f.name() == ADD_INTERVAL && f.args.len() == 2 => {
            match (window_shift(&f.args[0], schema, shifts), literal_interval(&f.args[1])) {
                (Shift::By(d), Some(by)) => Shift::By(d + by),
                _ => Shift::Other,
            }
        }
        _ => Shift::Other,
    }
}

fn strip_alias(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(a) => strip_alias(&a.expr),
        e => e,
    }
}
