//! `json` / `jsonb` columns and Postgres's JSON operators.
//!
//! Values are stored as their JSON text (`Utf8`); a Kafka or NATS JSON message's nested object
//! or array lands in a `jsonb` column as its raw text (see weir-connectors `json.rs`). The
//! functions that read into them come from datafusion-functions-json (`json_get_str`,
//! `json_get_int`, `json_contains`, `json_length`, ...); the operators are planned here with
//! Postgres's result types, not the crate's: `j -> 'k'` (or `-> 0`) is the member as JSON text,
//! so it chains (`j -> 'a' -> 'b'`), `j ->> 'k'` the member as text (a JSON string unquoted),
//! `j ? 'k'` whether the key exists. The crate's own `->` returns a union type that no Postgres
//! client can read.

use std::sync::Arc;

use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{Expr, ScalarUDF, lit, when};
use datafusion::prelude::SessionContext;
use datafusion_functions_json::udfs;
use sqlparser::ast::BinaryOperator;

/// Registers the JSON functions and operators on the shared context.
pub fn register(ctx: &SessionContext) -> Result<()> {
    for udf in [
        udfs::json_get_str_udf(),
        udfs::json_get_int_udf(),
        udfs::json_get_float_udf(),
        udfs::json_get_bool_udf(),
        udfs::json_get_json_udf(),
        udfs::json_as_text_udf(),
        udfs::json_contains_udf(),
        udfs::json_length_udf(),
        udfs::json_object_keys_udf(),
    ] {
        ctx.register_udf(udf.as_ref().clone());
    }
    ctx.state_ref().write().register_expr_planner(Arc::new(JsonOperators))
}

#[derive(Debug)]
struct JsonOperators;

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(&self, expr: RawBinaryExpr, _schema: &DFSchema) -> Result<PlannerResult<RawBinaryExpr>> {
        let func: Arc<ScalarUDF> = match expr.op {
            BinaryOperator::Arrow => udfs::json_get_json_udf(),
            BinaryOperator::LongArrow => udfs::json_as_text_udf(),
            BinaryOperator::Question => udfs::json_contains_udf(),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        // json_contains says false for a NULL document; Postgres says NULL.
        let null_document = (expr.op == BinaryOperator::Question).then(|| expr.left.clone().is_null());
        let call = Expr::ScalarFunction(ScalarFunction { func, args: vec![expr.left, expr.right] });
        Ok(PlannerResult::Planned(match null_document {
            Some(is_null) => when(is_null, lit(ScalarValue::Boolean(None))).otherwise(call)?,
            None => call,
        }))
    }
}
