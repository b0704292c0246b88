//! Streaming SQL: the parts of planning that make a query a continuously maintained view.
//!
//! * [`window`] - `TUMBLE`/`HOP` table functions, rewritten into plain SQL before DataFusion plans
//!   the query, and the scalar functions that rewrite uses.
//! * [`join`] - join conditions split into hash keys, a residual filter and watermark bounds
//!   on each side's state (window and interval joins).
//! * [`panes`] - HOP windows kept by panes: when an aggregate over HOP windows updates one
//!   group per row instead of one per window.
//! * [`session`] - `SESSION` windows: the batch window functions and the sessions rule.
//! * [`plan`] - the streaming planner: DataFusion `LogicalPlan` → [`StreamPlan`], a tree of
//!   incremental operators, with 0A000 errors for what cannot be maintained incrementally.
//!
//! Flow: `CREATE MATERIALIZED VIEW` AST → [`rewrite_windows`] → DataFusion (plan + analyze,
//! in the server) → [`plan_stream`] → the engine builds operators from the [`StreamPlan`].

pub mod join;
pub mod panes;
pub mod plan;
pub mod session;
pub mod window;

use thiserror::Error;

pub use plan::{
    AggregateCall, AggregateKind, InputKind, InputResolver, NodeId, ResolvedInput, StreamNode, StreamOp, StreamPlan,
    WindowKey, plan_stream,
};
pub use join::{JoinCondition, JoinKind, StateBound};
pub use panes::HopPanes;
pub use session::SessionBound;
pub use window::{AddInterval, HopStarts, TumbleStart, rewrite_windows};

/// Registers the functions the window rewrite produces (`TUMBLE`, `HOP`, `SESSION`) with a
/// DataFusion context, so that rewritten queries run in batch too.
pub fn register_window_functions(ctx: &datafusion::prelude::SessionContext) {
    use datafusion::logical_expr::{ScalarUDF, WindowUDF};
    ctx.register_udf(ScalarUDF::new_from_impl(TumbleStart::default()));
    ctx.register_udf(ScalarUDF::new_from_impl(HopStarts::default()));
    ctx.register_udf(ScalarUDF::new_from_impl(AddInterval::default()));
    ctx.register_udwf(WindowUDF::new_from_impl(SessionBound::start()));
    ctx.register_udwf(WindowUDF::new_from_impl(SessionBound::end()));
}

/// Why a query cannot become a streaming view.
#[derive(Debug, Clone, Error)]
pub enum StreamPlanError {
    /// A construct the engine cannot maintain incrementally (SQLSTATE 0A000).
    #[error("{construct} is not supported")]
    NotSupported { construct: String, hint: Option<String> },
    /// A malformed use of a streaming construct (SQLSTATE 42601/22023 at the boundary).
    #[error("{0}")]
    Invalid(String),
}

impl StreamPlanError {
    pub fn not_supported(construct: impl Into<String>) -> Self {
        StreamPlanError::NotSupported { construct: construct.into(), hint: None }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        StreamPlanError::Invalid(message.into())
    }

    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        match self {
            StreamPlanError::NotSupported { construct, .. } => {
                StreamPlanError::NotSupported { construct, hint: Some(hint.into()) }
            }
            other => other,
        }
    }
}
