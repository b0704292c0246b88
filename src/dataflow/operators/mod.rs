//! Incremental operators and how a view's `StreamPlan` becomes a tree of them.
//!
//! Every operator consumes [`Changes`] on numbered input ports and produces changes for its
//! parent. The invariant that makes a view correct is the same for all of them: *the integral
//! of an operator's output equals the operator's relational meaning applied to the integral of
//! its input* (DBSP's definition of incremental). Stateless operators (filter, projection,
//! unnest, union) are linear, so they satisfy it by acting on each row and keeping its diff;
//! the aggregate keeps state to satisfy it (see `aggregate.rs`).
//!
//! * [`stateless`] - input pass-through, filter, projection, unnest, union.
//! * [`aggregate`] - grouped aggregation, windowed or not, update or emit-on-close.
//! * [`hop_panes`] - HOP windows merged from pane groups when they close (for the aggregate).
//! * [`accumulators`] - per-group aggregate state that accepts retractions.
//! * [`join`] - the symmetric hash join (inner and outer), with watermark-bounded state.
//! * [`session`] - `SESSION` windows: rows get their session's bounds, reassigned as sessions merge.
//! * [`emit_on_close`] - holds a view's changes until their window closes.

pub mod accumulators;
pub mod aggregate;
pub mod emit_on_close;
pub mod hop_panes;
pub mod join;
pub mod session;
pub mod stateless;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::DFSchema;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use weir_sql::streaming::{StreamOp, StreamPlan};

use super::{Changes, EventTime};
use crate::error::Result;

/// Operator state in a form a checkpoint can store: named Arrow batches.
pub type OperatorState = Vec<(String, datafusion::arrow::array::RecordBatch)>;

/// An operator's state for one checkpoint.
pub enum Snapshot {
    /// All of it.
    Full(OperatorState),
    /// What changed since the operator's previous snapshot. Restoring the previous snapshot's
    /// chain and then this gives the state now.
    Changes(OperatorState),
}

/// A state batch an operator saved, read back: its columns by name and type, or
/// `DataCorrupted` naming the operator (`what`) and the column.
pub struct SavedBatch<'a> {
    pub batch: &'a datafusion::arrow::array::RecordBatch,
    pub what: &'static str,
}

impl SavedBatch<'_> {
    pub fn corrupt(&self, detail: &str) -> crate::error::WeirError {
        crate::error::WeirError::new(crate::error::SqlState::DataCorrupted, format!("checkpointed {}: {detail}", self.what))
    }

    pub fn ints(&self, name: &str) -> Result<datafusion::arrow::array::Int64Array> {
        self.batch
            .column_by_name(name)
            .and_then(|c| c.as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>())
            .cloned()
            .ok_or_else(|| self.corrupt(&format!("no integer column {name}")))
    }

    pub fn binary(&self, name: &str) -> Result<datafusion::arrow::array::BinaryArray> {
        self.batch
            .column_by_name(name)
            .and_then(|c| c.as_binary_opt::<i32>())
            .cloned()
            .ok_or_else(|| self.corrupt(&format!("no binary column {name}")))
    }

    /// The value of a one-row integer column (an operator's `meta`).
    pub fn int(&self, name: &str) -> Result<i64> {
        let column = self.ints(name)?;
        if column.len() != 1 || column.is_null(0) {
            return Err(self.corrupt(&format!("{name} is not one value")));
        }
        Ok(column.value(0))
    }
}

/// The `meta` part of an operator that keeps only its watermark besides its rows.
pub fn watermark_meta(watermark: EventTime) -> Result<datafusion::arrow::array::RecordBatch> {
    let column: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(vec![watermark]));
    Ok(datafusion::arrow::array::RecordBatch::try_from_iter([("watermark", column)])?)
}

pub trait Operator: Send {
    /// Consumes changes arriving on input `port`, appending output changes to `out`.
    fn process(&mut self, port: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()>;

    /// The watermark of input `port` advanced to `watermark`. Returns the operator's output
    /// watermark when it advanced (a window operator emits closed windows first).
    fn on_watermark(&mut self, port: usize, watermark: EventTime, out: &mut Vec<Changes>) -> Result<Option<EventTime>>;

    /// The epoch ended on every input: emit what the epoch changed.
    fn on_barrier(&mut self, _epoch: u64, _out: &mut Vec<Changes>) -> Result<()> {
        Ok(())
    }

    /// Bytes of state held (reported in `weir_catalog.materialized_views`).
    fn state_bytes(&self) -> usize {
        0
    }

    /// What state the operator keeps (`None`: stateless), for messages.
    fn stateful(&self) -> Option<&'static str> {
        None
    }

    /// The operator's state, for a checkpoint, taken right after a barrier. Stateless operators
    /// have none; a stateful one that does not implement it fails loudly (its view is then
    /// rebuilt at recovery) rather than returning a state that looks empty.
    fn snapshot(&self) -> Result<OperatorState> {
        match self.stateful() {
            Some(what) => Err(crate::error::WeirError::not_supported(format!("checkpointing the state of {what}"))),
            None => Ok(Vec::new()),
        }
    }

    /// The operator's state for a checkpoint, taken right after a barrier. With
    /// `since_previous` (the operator's previous snapshot is in a written checkpoint), an
    /// operator that tracks its changes may hand in only those ([`Snapshot::Changes`]); the
    /// default is always the whole state.
    fn checkpoint(&mut self, since_previous: bool) -> Result<Snapshot> {
        let _ = since_previous;
        self.snapshot().map(Snapshot::Full)
    }

    /// Restores state taken by [`Operator::snapshot`] into a freshly built operator. A chain of
    /// snapshots (a full one, then changes) is restored by calling this for each, in order.
    fn restore(&mut self, state: OperatorState) -> Result<()> {
        match self.stateful() {
            Some(what) => Err(crate::error::WeirError::not_supported(format!("restoring the state of {what}"))),
            None if state.is_empty() => Ok(()),
            None => Err(crate::error::WeirError::internal("state given to a stateless operator")),
        }
    }
}

/// The operators of a plan, indexed like the plan's nodes, each with its parent and the port
/// it feeds. Children always have lower indices than their parents (the planner builds
/// bottom-up), so ascending order is a valid evaluation order.
pub struct OperatorTree {
    pub operators: Vec<Box<dyn Operator>>,
    pub parents: Vec<Option<(usize, usize)>>,
    pub root: usize,
    /// `(input relation id, leaf node)` for every Input node.
    pub leaves: Vec<(u64, usize)>,
    pub output_schema: SchemaRef,
}

/// Compiles an expression of the plan against the schema of the node's input.
pub fn physical_expr(expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(create_physical_expr(
        expr,
        schema,
        &ExecutionProps::new(),
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )?)
}

/// The Arrow schema operators produce for a plan node: DataFusion's, with every column
/// nullable. Nullability inferred through streaming operators is not worth a runtime check
/// (a view's columns are reported nullable to clients, as Postgres does for views).
pub fn arrow_schema(schema: &DFSchema) -> SchemaRef {
    Arc::new(Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ))
}

/// The close time of each row: its value in a window-bound column (a timestamp) plus the
/// column's close offset; `EventTime::MAX` (never) for NULL.
pub fn close_times(column: &ArrayRef, close_offset: i64) -> Result<Vec<EventTime>> {
    let micros = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let micros = micros.as_primitive::<TimestampMicrosecondType>();
    Ok((0..micros.len())
        .map(|i| if micros.is_null(i) { EventTime::MAX } else { micros.value(i).saturating_add(close_offset) })
        .collect())
}

pub fn build(plan: &StreamPlan) -> Result<OperatorTree> {
    let mut operators: Vec<Box<dyn Operator>> = Vec::with_capacity(plan.nodes.len());
    let mut parents = vec![None; plan.nodes.len()];
    let mut leaves = Vec::new();
    for (id, node) in plan.nodes.iter().enumerate() {
        for (port, child) in node.inputs.iter().enumerate() {
            parents[*child] = Some((id, port));
        }
        let output = arrow_schema(&node.schema);
        let op: Box<dyn Operator> = match &node.op {
            StreamOp::Input(input) => {
                leaves.push((input.id, id));
                Box::new(stateless::InputOp::new(output))
            }
            StreamOp::Filter { predicate, input_schema } => {
                Box::new(stateless::FilterOp::new(physical_expr(predicate, input_schema)?))
            }
            StreamOp::Project { exprs, input_schema } => {
                let exprs = exprs.iter().map(|e| physical_expr(e, input_schema)).collect::<Result<Vec<_>>>()?;
                Box::new(stateless::ProjectOp::new(exprs, output))
            }
            StreamOp::Unnest { list_column, dependency_indices } => {
                Box::new(stateless::UnnestOp::new(*list_column, dependency_indices.clone(), output))
            }
            StreamOp::Union => Box::new(stateless::UnionOp::new(node.inputs.len(), output)),
            StreamOp::Join { kind, condition, left_schema, right_schema } => {
                let side = |port: usize, schema: &DFSchema, keys: &[Expr], bounds: &[weir_sql::streaming::StateBound]| {
                    Ok::<_, crate::error::WeirError>(join::JoinSideConfig {
                        schema: arrow_schema(schema),
                        keys: keys.iter().map(|k| physical_expr(k, schema)).collect::<Result<_>>()?,
                        bounds: bounds.to_vec(),
                        append_only: node.inputs.get(port).is_some_and(|i| plan.nodes[*i].append_only),
                    })
                };
                Box::new(join::JoinOp::new(join::JoinConfig {
                    kind: *kind,
                    sides: [
                        side(0, left_schema, &condition.left_keys, &condition.bounds[0])?,
                        side(1, right_schema, &condition.right_keys, &condition.bounds[1])?,
                    ],
                    residual: condition.residual.as_ref().map(|r| physical_expr(r, &node.schema)).transpose()?,
                    output,
                })?)
            }
            StreamOp::Session { keys, time, gap, outputs, input_schema } => {
                Box::new(session::SessionOp::new(session::SessionConfig {
                    keys: keys.iter().map(|k| physical_expr(k, input_schema)).collect::<Result<_>>()?,
                    time: physical_expr(time, input_schema)?,
                    gap: *gap,
                    outputs: outputs.clone(),
                    input_schema: arrow_schema(input_schema),
                    output,
                })?)
            }
            StreamOp::EmitOnClose { column, close_offset } => {
                Box::new(emit_on_close::EmitOnCloseOp::new(*column, *close_offset, output)?)
            }
            StreamOp::Aggregate { group_exprs, calls, window, emit_on_close, input_append_only, panes, input_schema } => {
                Box::new(aggregate::AggregateOp::new(aggregate::AggregateConfig {
                    group_exprs: group_exprs.iter().map(|e| physical_expr(e, input_schema)).collect::<Result<_>>()?,
                    calls: calls
                        .iter()
                        .map(|c| {
                            let arg = physical_expr(&c.args[0], input_schema)?;
                            let input_type = arg.data_type(&arrow_schema(input_schema))?;
                            Ok(aggregate::CallConfig { call: c.clone(), arg, input_type })
                        })
                        .collect::<Result<_>>()?,
                    input_schema: arrow_schema(input_schema),
                    window: *window,
                    emit_on_close: *emit_on_close,
                    input_append_only: *input_append_only,
                    panes: panes.clone(),
                    output,
                })?)
            }
        };
        operators.push(op);
    }
    let output_schema = arrow_schema(&plan.root().schema);
    Ok(OperatorTree { operators, parents, root: plan.root, leaves, output_schema })
}
