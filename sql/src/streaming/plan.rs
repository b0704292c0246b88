//! The streaming planner: a DataFusion `LogicalPlan` of a view's query → a [`StreamPlan`].
//!
//! A [`StreamPlan`] is a tree of incremental operators (inputs at the leaves, the view at the
//! root) that the engine (`src/dataflow`) instantiates. The planner decides what can be
//! maintained incrementally and rejects the rest with [`StreamPlanError::NotSupported`] (SQLSTATE
//! 0A000) naming the construct, at `CREATE` time rather than when data arrives.
//!
//! Besides shapes, it tracks for every column a *close offset* (see [`StreamNode::close_offsets`]):
//! how the watermark, which is expressed in the event time of the inputs, bounds the values of
//! that column. An aggregate that groups by a column with a close offset is windowed: a group
//! with key value `v` is final once the watermark reaches `v + offset`.

use std::fmt;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchemaRef, ScalarValue, TableReference};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{BinaryExpr, Distinct, Expr, LogicalPlan, Operator};

use super::StreamPlanError;
use super::panes::{self, HopPanes};
use super::join::{self, JoinCondition, JoinKind};
use super::session::{SESSION_END, SESSION_START};
use super::window::{ADD_INTERVAL, HOP_PANE, HOP_STARTS, TUMBLE_START, interval_micros};

pub type NodeId = usize;

/// What an input relation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Source,
    Table,
    MaterializedView,
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputKind::Source => "source",
            InputKind::Table => "table",
            InputKind::MaterializedView => "materialized view",
        })
    }
}

/// A relation a view reads, as the catalog and the engine know it.
#[derive(Debug, Clone)]
pub struct ResolvedInput {
    pub id: u64,
    pub kind: InputKind,
    pub name: String,
    /// Close offsets of the relation's columns (the watermarked event-time column of a source
    /// or table has 1 µs: a row with event time `t` is late once the watermark passes `t`).
    pub close_offsets: Vec<Option<i64>>,
    /// Whether the relation only ever inserts (a source; an `EMIT ON WINDOW CLOSE` view).
    pub append_only: bool,
}

/// Looks up the relations a query reads (the server answers from its catalog).
pub trait InputResolver {
    fn resolve(&self, table: &TableReference) -> Option<ResolvedInput>;
}

/// The aggregate functions the engine maintains incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateKind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    StddevSamp,
    StddevPop,
    VarSamp,
    VarPop,
    BoolAnd,
    BoolOr,
    /// `first_value(x ORDER BY t)`: `x` of the row first in `t`'s order.
    FirstValue,
    /// `last_value(x ORDER BY t)`.
    LastValue,
    /// `approx_percentile_cont(p) WITHIN GROUP (ORDER BY x)`, computed exactly.
    ApproxPercentileCont,
}

impl AggregateKind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "count" => AggregateKind::Count,
            "sum" => AggregateKind::Sum,
            "avg" | "mean" => AggregateKind::Avg,
            "min" => AggregateKind::Min,
            "max" => AggregateKind::Max,
            "stddev" | "stddev_samp" => AggregateKind::StddevSamp,
            "stddev_pop" => AggregateKind::StddevPop,
            "var" | "var_samp" | "variance" => AggregateKind::VarSamp,
            "var_pop" => AggregateKind::VarPop,
            "bool_and" => AggregateKind::BoolAnd,
            "bool_or" => AggregateKind::BoolOr,
            "first_value" => AggregateKind::FirstValue,
            "last_value" => AggregateKind::LastValue,
            "approx_percentile_cont" => AggregateKind::ApproxPercentileCont,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct AggregateCall {
    pub kind: AggregateKind,
    pub args: Vec<Expr>,
    pub distinct: bool,
    /// The type DataFusion gives the result (the engine produces exactly this type).
    pub output_type: DataType,
    /// `first_value`/`last_value`: the order, as (descending, nulls first); the call's one
    /// argument is then `struct(order key, value)`.
    pub order: Option<(bool, bool)>,
    /// `approx_percentile_cont`: the percentile, in [0, 1].
    pub percentile: Option<f64>,
    /// The SQL spelling, for EXPLAIN.
    pub display: String,
}

/// The group column that makes an aggregate windowed.
#[derive(Debug, Clone, Copy)]
pub struct WindowKey {
    /// Index into the aggregate's group expressions (and output columns).
    pub group_index: usize,
    /// A group whose key value is `v` closes when the watermark reaches `v + close_offset`.
    pub close_offset: i64,
}

#[derive(Debug, Clone)]
pub enum StreamOp {
    Input(ResolvedInput),
    Filter { predicate: Expr, input_schema: DFSchemaRef },
    Project { exprs: Vec<Expr>, input_schema: DFSchemaRef },
    /// Expands the list column `list_column` of the input: one output row per element. Output
    /// column `i` comes from input column `dependency_indices[i]`.
    Unnest { list_column: usize, dependency_indices: Vec<usize> },
    Aggregate {
        group_exprs: Vec<Expr>,
        calls: Vec<AggregateCall>,
        window: Option<WindowKey>,
        /// Emit each group once, when its window closes (`EMIT ON WINDOW CLOSE`).
        emit_on_close: bool,
        /// Whether the aggregate's input only inserts (min/max then need no multiset).
        input_append_only: bool,
        /// HOP windows kept by panes (see [`super::panes`]): the input has one row per pane,
        /// not per window.
        panes: Option<HopPanes>,
        input_schema: DFSchemaRef,
    },
    Union,
    /// A symmetric hash join: input 0 is the left side, input 1 the right.
    Join {
        kind: JoinKind,
        condition: JoinCondition,
        left_schema: DFSchemaRef,
        right_schema: DFSchemaRef,
    },
    /// `SESSION` windows: appends, per entry of `outputs`, the session start (false) or end
    /// (true) of each row; sessions are per value of `keys` over event time `time`.
    Session { keys: Vec<Expr>, time: Expr, gap: i64, outputs: Vec<bool>, input_schema: DFSchemaRef },
    /// Holds changes until the watermark passes the close time of their row (the value of
    /// `column` plus `close_offset`), then releases them consolidated: `EMIT ON WINDOW CLOSE`
    /// for a view whose root is not itself a windowed aggregate (a window join, a view over
    /// windowed views).
    EmitOnClose { column: usize, close_offset: i64 },
}

#[derive(Debug, Clone)]
pub struct StreamNode {
    pub op: StreamOp,
    pub inputs: Vec<NodeId>,
    /// The node's output schema (DataFusion's schema for the plan node it came from).
    pub schema: DFSchemaRef,
    /// Per output column: when the watermark bounds the column, the offset `d` such that a row
    /// with value `v` no longer changes once the watermark reaches `v + d`.
    pub close_offsets: Vec<Option<i64>>,
    pub append_only: bool,
}

#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub nodes: Vec<StreamNode>,
    pub root: NodeId,
    pub emit_on_window_close: bool,
}

impl StreamPlan {
    /// The ids of the relations the plan reads, without duplicates.
    pub fn inputs(&self) -> Vec<&ResolvedInput> {
        let mut seen = Vec::<&ResolvedInput>::new();
        for n in &self.nodes {
            if let StreamOp::Input(i) = &n.op
                && !seen.iter().any(|s| s.id == i.id)
            {
                seen.push(i);
            }
        }
        seen
    }

    pub fn root(&self) -> &StreamNode {
        &self.nodes[self.root]
    }
}

/// Compiles an analyzed (type-coerced) logical plan of a view's query.
pub fn plan_stream(
    plan: &LogicalPlan,
    resolver: &dyn InputResolver,
    emit_on_window_close: bool,
) -> Result<StreamPlan, StreamPlanError> {
    let mut planner = Planner { nodes: Vec::new(), resolver, emit_on_window_close, windowed_aggregates: 0 };
    let mut root = planner.build(plan)?;
    if emit_on_window_close && !planner.emits_on_close(root) {
        let node = &planner.nodes[root];
        let Some((column, close_offset)) =
            node.close_offsets.iter().enumerate().find_map(|(i, o)| o.map(|o| (i, o)))
        else {
            return Err(StreamPlanError::not_supported("EMIT ON WINDOW CLOSE on rows without a window bound").with_hint(
                "EMIT ON WINDOW CLOSE needs the view's rows to carry a window bound: GROUP BY window_start or window_end of TUMBLE or HOP on a watermarked column, or a join on them.",
            ));
        };
        let (schema, close_offsets) = (node.schema.clone(), node.close_offsets.clone());
        root = planner.push(StreamNode {
            op: StreamOp::EmitOnClose { column, close_offset },
            inputs: vec![root],
            schema,
            close_offsets,
            append_only: true,
        });
    }
    Ok(StreamPlan { nodes: planner.nodes, root, emit_on_window_close })
}

struct Planner<'a> {
    nodes: Vec<StreamNode>,
    resolver: &'a dyn InputResolver,
    emit_on_window_close: bool,
    windowed_aggregates: usize,
}

impl Planner<'_> {
    /// Whether the node's output already is final per window: an `EMIT ON WINDOW CLOSE`
    /// aggregate, possibly under stateless operators.
    fn emits_on_close(&self, id: NodeId) -> bool {
        let node = &self.nodes[id];
        match &node.op {
            StreamOp::Aggregate { emit_on_close, .. } => *emit_on_close,
            StreamOp::Project { .. } | StreamOp::Filter { .. } => self.emits_on_close(node.inputs[0]),
            _ => false,
        }
    }

    fn push(&mut self, node: StreamNode) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn build(&mut self, plan: &LogicalPlan) -> Result<NodeId, StreamPlanError> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                if scan.projection.is_some() || !scan.filters.is_empty() || scan.fetch.is_some() {
                    return Err(StreamPlanError::invalid("the view's plan was optimized before streaming planning"));
                }
                let input = self.resolver.resolve(&scan.table_name).ok_or_else(|| {
                    StreamPlanError::not_supported(format!("reading \"{}\" in a materialized view", scan.table_name))
                        .with_hint("A materialized view reads tables, sources and other materialized views.")
                })?;
                let close_offsets = input.close_offsets.clone();
                let append_only = input.append_only;
                Ok(self.push(StreamNode {
                    op: StreamOp::Input(input),
                    inputs: vec![],
                    schema: scan.projected_schema.clone(),
                    close_offsets,
                    append_only,
                }))
            }
            LogicalPlan::SubqueryAlias(alias) => self.build(&alias.input),
            LogicalPlan::Projection(p) => {
                let input = self.build(&p.input)?;
                for e in &p.expr {
                    check_expr(e)?;
                }
                let offsets = p
                    .expr
                    .iter()
                    .map(|e| close_offset(e, p.input.schema(), &self.nodes[input].close_offsets))
                    .collect();
                let append_only = self.nodes[input].append_only;
                Ok(self.push(StreamNode {
                    op: StreamOp::Project { exprs: p.expr.clone(), input_schema: p.input.schema().clone() },
                    inputs: vec![input],
                    schema: p.schema.clone(),
                    close_offsets: offsets,
                    append_only,
                }))
            }
            LogicalPlan::Filter(f) => {
                // WHERE over an inner join is part of its condition (the join keys of a comma
                // join, the time bounds of an interval join).
                if let LogicalPlan::Join(j) = f.input.as_ref()
                    && j.join_type == datafusion::logical_expr::JoinType::Inner
                {
                    return self.join_node(j, Some(&f.predicate));
                }
                let input = self.build(&f.input)?;
                check_expr(&f.predicate)?;
                let node = &self.nodes[input];
                let (offsets, append_only) = (node.close_offsets.clone(), node.append_only);
                Ok(self.push(StreamNode {
                    op: StreamOp::Filter { predicate: f.predicate.clone(), input_schema: f.input.schema().clone() },
                    inputs: vec![input],
                    schema: f.input.schema().clone(),
                    close_offsets: offsets,
                    append_only,
                }))
            }
            LogicalPlan::Unnest(u) => {
                if u.list_type_columns.len() != 1 || !u.struct_type_columns.is_empty() {
                    return Err(StreamPlanError::not_supported("unnest of several columns or of structs"));
                }
                let input = self.build(&u.input)?;
                let list_column = u.list_type_columns[0].0;
                if u.list_type_columns[0].1.depth != 1 {
                    return Err(StreamPlanError::not_supported("recursive unnest"));
                }
                let in_offsets = &self.nodes[input].close_offsets;
                let offsets = u.dependency_indices.iter().map(|i| in_offsets.get(*i).copied().flatten()).collect();
                let append_only = self.nodes[input].append_only;
                Ok(self.push(StreamNode {
                    op: StreamOp::Unnest { list_column, dependency_indices: u.dependency_indices.clone() },
                    inputs: vec![input],
                    schema: u.schema.clone(),
                    close_offsets: offsets,
                    append_only,
                }))
            }
            LogicalPlan::Aggregate(a) => {
                let input = self.build(&a.input)?;
                let mut group_exprs = Vec::with_capacity(a.group_expr.len());
                for g in &a.group_expr {
                    if matches!(g, Expr::GroupingSet(_)) {
                        return Err(StreamPlanError::not_supported("GROUPING SETS, CUBE and ROLLUP"));
                    }
                    check_expr(g)?;
                    group_exprs.push(g.clone());
                }
                let mut calls = Vec::with_capacity(a.aggr_expr.len());
                for (i, e) in a.aggr_expr.iter().enumerate() {
                    let output_type = a.schema.field(a.group_expr.len() + i).data_type().clone();
                    calls.push(aggregate_call(e, output_type)?);
                }
                self.aggregate_node(input, group_exprs, calls, a.input.schema().clone(), a.schema.clone())
            }
            LogicalPlan::Distinct(Distinct::All(inner)) => {
                let input = self.build(inner)?;
                let group_exprs = inner.schema().columns().into_iter().map(Expr::Column).collect();
                self.aggregate_node(input, group_exprs, vec![], inner.schema().clone(), inner.schema().clone())
            }
            LogicalPlan::Distinct(Distinct::On(_)) => Err(StreamPlanError::not_supported("DISTINCT ON")),
            LogicalPlan::Union(u) => {
                let inputs = u.inputs.iter().map(|i| self.build(i)).collect::<Result<Vec<_>, _>>()?;
                let width = u.schema.fields().len();
                let close_offsets = (0..width)
                    .map(|c| {
                        inputs.iter().try_fold(i64::MIN, |acc, n| self.nodes[*n].close_offsets.get(c).copied().flatten().map(|o| acc.max(o)))
                    })
                    .collect();
                let append_only = inputs.iter().all(|n| self.nodes[*n].append_only);
                Ok(self.push(StreamNode { op: StreamOp::Union, inputs, schema: u.schema.clone(), close_offsets, append_only }))
            }
            LogicalPlan::Sort(s) if s.fetch.is_none() => self.build(&s.input),
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => Err(StreamPlanError::not_supported("LIMIT in a materialized view")
                .with_hint("Apply LIMIT when you query the view.")),
            LogicalPlan::Join(j) => self.join_node(j, None),
            LogicalPlan::Window(w) => self.session_node(w),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => Err(StreamPlanError::not_supported(
                "a materialized view that reads no table, source or view",
            )),
            LogicalPlan::RecursiveQuery(_) => Err(StreamPlanError::not_supported("WITH RECURSIVE in a materialized view")),
            other => Err(StreamPlanError::not_supported(format!("{} in a materialized view", other.display()))),
        }
    }

    fn join_node(&mut self, j: &datafusion::logical_expr::Join, filter: Option<&Expr>) -> Result<NodeId, StreamPlanError> {
        let kind = JoinKind::from_join_type(j.join_type)?;
        if j.null_aware {
            return Err(StreamPlanError::not_supported("NOT IN subqueries in a materialized view"));
        }
        if j.null_equality == datafusion::common::NullEquality::NullEqualsNull {
            return Err(StreamPlanError::not_supported("a join on IS NOT DISTINCT FROM in a materialized view"));
        }
        let left = self.build(&j.left)?;
        let right = self.build(&j.right)?;
        let conjuncts: Vec<&Expr> = j.filter.iter().chain(filter).collect();
        for c in &conjuncts {
            check_expr(c)?;
        }
        let (left_offsets, right_offsets) = (self.nodes[left].close_offsets.clone(), self.nodes[right].close_offsets.clone());
        let condition = join::split_condition(
            &j.on,
            &conjuncts,
            [j.left.schema().as_ref(), j.right.schema().as_ref()],
            [&left_offsets, &right_offsets],
        )?;
        let close_offsets = join::output_close_offsets(kind, [&left_offsets, &right_offsets], &condition.bounds);
        let append_only = kind == JoinKind::Inner && self.nodes[left].append_only && self.nodes[right].append_only;
        Ok(self.push(StreamNode {
            op: StreamOp::Join { kind, condition, left_schema: j.left.schema().clone(), right_schema: j.right.schema().clone() },
            inputs: vec![left, right],
            schema: j.schema.clone(),
            close_offsets,
            append_only,
        }))
    }

    /// The `Window` node that the `SESSION` rewrite produces; any other window function is 0A000.
    fn session_node(&mut self, w: &datafusion::logical_expr::Window) -> Result<NodeId, StreamPlanError> {
        use datafusion::logical_expr::expr::{WindowFunction, WindowFunctionDefinition};
        let over = || StreamPlanError::not_supported("window functions (OVER) in a materialized view");
        let mut outputs = Vec::new();
        let mut shape: Option<(&Vec<Expr>, &Expr, &Expr)> = None;
        for e in &w.window_expr {
            let Expr::WindowFunction(f) = e else { return Err(over()) };
            let WindowFunction { fun: WindowFunctionDefinition::WindowUDF(udf), params } = f.as_ref() else {
                return Err(over());
            };
            let end = match udf.name() {
                SESSION_START => false,
                SESSION_END => true,
                _ => return Err(over()),
            };
            let [time, gap] = params.args.as_slice() else { return Err(StreamPlanError::invalid("SESSION takes a time column and a gap")) };
            if shape.is_some_and(|(p, t, g)| p != &params.partition_by || t != time || g != gap) {
                return Err(over());
            }
            shape = Some((&params.partition_by, time, gap));
            outputs.push(end);
        }
        let Some((keys, time, gap)) = shape else { return Err(over()) };
        let gap = literal_interval(gap)
            .filter(|g| *g > 0)
            .ok_or_else(|| StreamPlanError::invalid("a SESSION gap must be a positive constant interval without months"))?;
        let input = self.build(&w.input)?;
        let in_offsets = self.nodes[input].close_offsets.clone();
        let Some(time_offset) = close_offset(time, w.input.schema(), &in_offsets) else {
            return Err(StreamPlanError::not_supported("SESSION windows over a time column without a watermark")
                .with_hint("Declare WATERMARK FOR the time column on the source, so that sessions can close."));
        };
        for k in keys {
            check_expr(k)?;
        }
        // Rows move between sessions until theirs closes, so only the session end is bounded:
        // a session ending at `e` is final once no row below `e` can come.
        let mut close_offsets = vec![None; in_offsets.len()];
        close_offsets.extend(outputs.iter().map(|end| end.then_some(time_offset - 1)));
        Ok(self.push(StreamNode {
            op: StreamOp::Session {
                keys: keys.clone(),
                time: time.clone(),
                gap,
                outputs,
                input_schema: w.input.schema().clone(),
            },
            inputs: vec![input],
            schema: w.schema.clone(),
            close_offsets,
            append_only: false,
        }))
    }

    fn aggregate_node(
        &mut self,
        input: NodeId,
        group_exprs: Vec<Expr>,
        calls: Vec<AggregateCall>,
        input_schema: DFSchemaRef,
        schema: DFSchemaRef,
    ) -> Result<NodeId, StreamPlanError> {
        let in_offsets = self.nodes[input].close_offsets.clone();
        let group_offsets: Vec<Option<i64>> =
            group_exprs.iter().map(|g| close_offset(g, &input_schema, &in_offsets)).collect();
        let window = group_offsets
            .iter()
            .enumerate()
            .find_map(|(i, o)| o.map(|close_offset| WindowKey { group_index: i, close_offset }));
        let emit_on_close = self.emit_on_window_close && window.is_some();
        if window.is_some() {
            self.windowed_aggregates += 1;
        }
        let mut close_offsets = group_offsets;
        close_offsets.resize(group_exprs.len() + calls.len(), None);
        let input_append_only = self.nodes[input].append_only;
        let panes = match window {
            Some(w) if emit_on_close && input_append_only => {
                panes::plan_panes(&mut self.nodes, input, &group_exprs, &calls, w, &input_schema)
            }
            _ => None,
        };
        Ok(self.push(StreamNode {
            op: StreamOp::Aggregate { group_exprs, calls, window, emit_on_close, input_append_only, panes, input_schema },
            inputs: vec![input],
            schema,
            close_offsets,
            append_only: emit_on_close,
        }))
    }
}

fn aggregate_call(expr: &Expr, output_type: DataType) -> Result<AggregateCall, StreamPlanError> {
    let display = expr.schema_name().to_string();
    let inner = match expr {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
        return Err(StreamPlanError::invalid(format!("unexpected aggregate expression {expr}")));
    };
    let name = func.name().to_ascii_lowercase();
    let kind = AggregateKind::from_name(&name)
        .ok_or_else(|| StreamPlanError::not_supported(format!("the aggregate function {name}() in a materialized view")))?;
    if params.filter.is_some() {
        return Err(StreamPlanError::not_supported("FILTER (WHERE ...) on an aggregate in a materialized view"));
    }
    if params.distinct && kind != AggregateKind::Count && kind != AggregateKind::Min && kind != AggregateKind::Max {
        return Err(StreamPlanError::not_supported(format!("{name}(DISTINCT ...) in a materialized view")));
    }
    for a in &params.args {
        check_expr(a)?;
    }
    let mut call = AggregateCall {
        kind,
        args: params.args.clone(),
        // min/max are the same with or without DISTINCT.
        distinct: params.distinct && kind == AggregateKind::Count,
        output_type,
        display,
        order: None,
        percentile: None,
    };
    match kind {
        AggregateKind::FirstValue | AggregateKind::LastValue => {
            let ([value], [order]) = (params.args.as_slice(), params.order_by.as_slice()) else {
                return Err(StreamPlanError::not_supported(format!("{name}() without exactly one ORDER BY key"))
                    .with_hint(format!("Write {name}(x ORDER BY event_time): a view's rows arrive in no particular order.")));
            };
            check_expr(&order.expr)?;
            call.order = Some((!order.asc, order.nulls_first));
            call.args = vec![datafusion::functions::core::expr_fn::r#struct(vec![order.expr.clone(), value.clone()])];
        }
        AggregateKind::ApproxPercentileCont => {
            // WITHIN GROUP (ORDER BY x) puts x first and the percentile second.
            let (Some(value), Some(percentile)) = (params.args.first(), params.args.get(1)) else {
                return Err(StreamPlanError::invalid("approx_percentile_cont takes a percentile and WITHIN GROUP (ORDER BY x)"));
            };
            if params.args.len() > 2 {
                return Err(StreamPlanError::not_supported("approx_percentile_cont with a centroid count in a materialized view")
                    .with_hint("Views compute percentiles exactly; leave the centroid count out."));
            }
            if params.order_by.iter().any(|o| !o.asc) {
                return Err(StreamPlanError::not_supported("approx_percentile_cont in descending order in a materialized view")
                    .with_hint("Use ascending order and the percentile 1 - p."));
            }
            let p = match strip_casts(percentile) {
                Expr::Literal(ScalarValue::Float64(Some(p)), _) => *p,
                Expr::Literal(ScalarValue::Float32(Some(p)), _) => f64::from(*p),
                Expr::Literal(v, _) if v.data_type().is_numeric() => {
                    v.cast_to(&DataType::Float64).ok().and_then(|v| if let ScalarValue::Float64(p) = v { p } else { None }).unwrap_or(-1.0)
                }
                _ => -1.0,
            };
            if !(0.0..=1.0).contains(&p) {
                return Err(StreamPlanError::invalid("the percentile of approx_percentile_cont must be a constant between 0 and 1"));
            }
            call.percentile = Some(p);
            call.args = vec![value.clone()];
        }
        _ => {
            if !params.order_by.is_empty() {
                return Err(StreamPlanError::not_supported(format!("ORDER BY inside {name}() in a materialized view")));
            }
            if params.args.len() != 1 {
                return Err(StreamPlanError::not_supported(format!("{name}() with {} arguments", params.args.len())));
            }
        }
    }
    Ok(call)
}

fn strip_casts(expr: &Expr) -> &Expr {
    match expr {
        Expr::Cast(c) => strip_casts(&c.expr),
        Expr::TryCast(c) => strip_casts(&c.expr),
        Expr::Alias(a) => strip_casts(&a.expr),
        e => e,
    }
}

/// Rejects what a stateless operator cannot evaluate on changes.
fn check_expr(expr: &Expr) -> Result<(), StreamPlanError> {
    let mut error = None;
    let _ = expr.apply(|e| {
        let problem = match e {
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => {
                Some(StreamPlanError::not_supported("subqueries in a materialized view"))
            }
            Expr::WindowFunction(_) => Some(StreamPlanError::not_supported("window functions (OVER) in a materialized view")),
            Expr::ScalarFunction(f) if f.func.signature().volatility == datafusion::logical_expr::Volatility::Volatile => {
                Some(StreamPlanError::not_supported(format!("the volatile function {}() in a materialized view", f.name())))
            }
            Expr::ScalarFunction(f) if matches!(f.name(), "now" | "current_timestamp" | "current_date" | "current_time") => {
                Some(StreamPlanError::not_supported(format!("{}() in a materialized view", f.name()))
                    .with_hint("A view's rows may only depend on its inputs; filter on event time with watermarks instead."))
            }
            _ => None,
        };
        match problem {
            Some(p) => {
                error = Some(p);
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop)
            }
            None => Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue),
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

use datafusion::common::tree_node::TreeNode;

pub(crate) fn literal_interval(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) => interval_micros(v),
        Expr::Cast(c) => literal_interval(&c.expr),
        Expr::Alias(a) => literal_interval(&a.expr),
        _ => None,
    }
}

/// The close offset of an expression's values (see [`StreamNode::close_offsets`]), when the
/// expression preserves the watermark bound of a column: the column itself, a window start
/// computed from it, or it plus or minus a constant interval.
fn close_offset(expr: &Expr, schema: &datafusion::common::DFSchema, offsets: &[Option<i64>]) -> Option<i64> {
    match expr {
        Expr::Alias(a) => close_offset(&a.expr, schema, offsets),
        Expr::Column(c) => schema.index_of_column(c).ok().and_then(|i| offsets.get(i).copied().flatten()),
        Expr::Cast(c) if matches!(c.field.data_type(), DataType::Timestamp(..)) => close_offset(&c.expr, schema, offsets),
        Expr::ScalarFunction(f) if f.name() == TUMBLE_START && f.args.len() >= 2 => {
            let o = close_offset(&f.args[0], schema, offsets)?;
            let size = literal_interval(&f.args[1])?;
            Some(size - 1 + o)
        }
        Expr::ScalarFunction(f) if f.name() == ADD_INTERVAL && f.args.len() == 2 => {
            let o = close_offset(&f.args[0], schema, offsets)?;
            Some(o - literal_interval(&f.args[1])?)
        }
        Expr::ScalarFunction(f) if f.name() == HOP_STARTS && f.args.len() >= 3 => {
            let o = close_offset(&f.args[0], schema, offsets)?;
            let size = literal_interval(&f.args[2])?;
            Some(size - 1 + o)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let o = close_offset(left, schema, offsets)?;
            let d = literal_interval(right)?;
            match op {
                Operator::Plus => Some(o - d),
                Operator::Minus => Some(o + d),
                _ => None,
            }
        }
        _ => None,
    }
}

/// An expression as SQL for EXPLAIN: DataFusion's own rendering, except for intervals, which
/// it prints as structs.
fn sql_text(expr: &Expr) -> String {
    match expr {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) => match interval_micros(v) {
            Some(micros) => format!("INTERVAL '{}'", fmt_duration(micros)),
            None => expr.human_display().to_string(),
        },
        Expr::Alias(a) => sql_text(&a.expr),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => format!("{} {op} {}", sql_text(left), sql_text(right)),
        Expr::Between(b) => format!(
            "{} {}BETWEEN {} AND {}",
            sql_text(&b.expr),
            if b.negated { "NOT " } else { "" },
            sql_text(&b.low),
            sql_text(&b.high)
        ),
        Expr::Not(e) => format!("NOT {}", sql_text(e)),
        other => other.human_display().to_string(),
    }
}

fn fmt_duration(micros: i64) -> String {
    if micros % 1_000_000 == 0 {
        format!("{}s", micros / 1_000_000)
    } else if micros % 1_000 == 0 {
        format!("{}ms", micros / 1_000)
    } else {
        format!("{micros}us")
    }
}

impl StreamPlan {
    fn fmt_node(&self, f: &mut fmt::Formatter<'_>, id: NodeId, depth: usize) -> fmt::Result {
        let node = &self.nodes[id];
        let pad = "  ".repeat(depth);
        match &node.op {
            StreamOp::Input(i) => writeln!(f, "{pad}Input: {} {}{}", i.kind, i.name,
                if i.close_offsets.iter().any(Option::is_some) { ", watermarked" } else { "" })?,
            StreamOp::Filter { predicate, .. } => writeln!(f, "{pad}Filter: {predicate}")?,
            StreamOp::Project { exprs, .. } => {
                // Output names, not expressions: window rewrites make the latter unreadable.
                let names: Vec<String> = node.schema.fields().iter().map(|f| f.name().clone()).collect();
                let text = exprs.iter().map(|e| e.to_string()).collect::<String>();
                let note = if text.contains(TUMBLE_START) {
                    " (TUMBLE window bounds)"
                } else if text.contains(HOP_STARTS) {
                    " (HOP window starts)"
                } else if text.contains(HOP_PANE) {
                    " (HOP panes)"
                } else {
                    ""
                };
                writeln!(f, "{pad}Project: {}{note}", names.join(", "))?
            }
            StreamOp::Unnest { .. } => {
                let panes = match &self.nodes[node.inputs[0]].op {
                    StreamOp::Project { exprs, .. } => exprs.iter().any(|e| e.to_string().contains(HOP_PANE)),
                    _ => false,
                };
                writeln!(f, "{pad}Unnest: one row per HOP {}", if panes { "pane" } else { "window" })?
            }
            StreamOp::Aggregate { group_exprs, calls, window, emit_on_close, input_append_only, panes, .. } => {
                let calls = calls.iter().map(|c| c.display.clone()).collect::<Vec<_>>().join(", ");
                let state = match window {
                    Some(w) => format!(
                        "windowed by group key {} (closes at key + {}), state freed when the window closes{}",
                        w.group_index,
                        fmt_duration(w.close_offset),
                        if *emit_on_close { ", emits once on close" } else { ", emits updates" }
                    ),
                    None => "unbounded state: one entry per group, emits updates".to_string(),
                };
                let groups: Vec<String> = group_exprs.iter().map(|g| g.schema_name().to_string()).collect();
                writeln!(f, "{pad}Aggregate: group by [{}], aggregates [{calls}]", groups.join(", "))?;
                writeln!(f, "{pad}  state: {state}{}", if *input_append_only { "" } else { "; input retracts" })?;
                if let Some(p) = panes {
                    writeln!(
                        f,
                        "{pad}  HOP by panes of {}: a row updates its pane's group, a window merges its {} panes when it closes",
                        fmt_duration(p.slide),
                        p.size / p.slide
                    )?;
                }
            }
            StreamOp::Union => writeln!(f, "{pad}Union All")?,
            StreamOp::Join { kind, condition, left_schema, right_schema } => {
                let keys: Vec<String> = condition
                    .left_keys
                    .iter()
                    .zip(&condition.right_keys)
                    .map(|(l, r)| format!("{} = {}", sql_text(l), sql_text(r)))
                    .collect();
                let residual = condition.residual.as_ref().map(|r| format!(", filter {}", sql_text(r))).unwrap_or_default();
                writeln!(f, "{pad}{kind} Join: [{}]{residual}", keys.join(", "))?;
                let describe = |side: usize, schema: &DFSchemaRef| match condition.bounds[side].first() {
                    Some(b) => format!(
                        "rows freed when the watermark passes {} + {}",
                        schema.field(b.column).name(),
                        fmt_duration(b.offset)
                    ),
                    None => "unbounded (every row kept)".to_string(),
                };
                writeln!(f, "{pad}  state: left {}; right {}", describe(0, left_schema), describe(1, right_schema))?;
            }
            StreamOp::Session { keys, time, gap, .. } => {
                let keys: Vec<String> = keys.iter().map(sql_text).collect();
                writeln!(
                    f,
                    "{pad}Session: gap {} over {} per [{}]",
                    fmt_duration(*gap),
                    sql_text(time),
                    keys.join(", ")
                )?;
                writeln!(f, "{pad}  state: the rows of open sessions, freed when the watermark passes a session's end")?;
            }
            StreamOp::EmitOnClose { column, close_offset } => writeln!(
                f,
                "{pad}Emit On Close: each row once the watermark passes {} + {}",
                node.schema.field(*column).name(),
                fmt_duration(*close_offset)
            )?,
        }
        for i in &node.inputs {
            self.fmt_node(f, *i, depth + 1)?;
        }
        Ok(())
    }
}

impl fmt::Display for StreamPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = self.root();
        let cols = root.schema.fields().iter().map(|c| c.name().clone()).collect::<Vec<_>>().join(", ");
        writeln!(
            f,
            "Materialize: [{cols}]{}",
            if self.emit_on_window_close { ", emit on window close" } else { "" }
        )?;
        self.fmt_node(f, self.root, 1)
    }
}
