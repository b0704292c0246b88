//! Window table functions: `TUMBLE`, `HOP` and `SESSION` (see [`super::session`]) in `FROM`.
//!
//! DataFusion does not know these table functions, so before planning, [`rewrite_windows`]
//! replaces each one with a subquery that adds `window_start` and `window_end` using scalar
//! functions defined here (`weir_add_interval` is `+` for fixed intervals, without Arrow's
//! per-value calendar arithmetic):
//!
//! ```sql
//! TUMBLE(t, ts, size[, offset])      ->  (SELECT *, weir_add_interval(window_start, size) AS window_end FROM
//!                                           (SELECT *, weir_tumble_start(ts, size, offset) AS window_start FROM t))
//! HOP(t, ts, slide, size[, offset])  ->  (SELECT *, weir_add_interval(window_start, size) AS window_end FROM
//!                                           (SELECT *, unnest(weir_hop_starts(ts, slide, size, offset)) AS window_start FROM t))
//! ```
//!
//! The rewritten query is ordinary SQL: run as a batch query it gives the windows of the stored
//! rows (the tests' oracle), and the streaming planner recognizes the two functions to learn
//! when a window closes. Windows are aligned to the Unix epoch plus `offset` and half-open
//! `[start, end)`, as in RisingWave and Flink.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, TimeUnit};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use sqlparser::ast::{self, FunctionArg, FunctionArgExpr, Query, TableFactor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::StreamPlanError;
use super::session::{SESSION_END, SESSION_START};

pub const TUMBLE_START: &str = "weir_tumble_start";
pub const HOP_STARTS: &str = "weir_hop_starts";
/// `weir_hop_pane(ts, slide, size, offset)`: a one-element list of the start of the slide-long
/// pane holding `ts`. Not produced by the rewrite: the streaming planner puts it in place of
/// `weir_hop_starts` when an aggregate maintains HOP windows by panes (see `plan.rs`).
pub const HOP_PANE: &str = "weir_hop_pane";
/// `weir_add_interval(ts, interval)`: `ts + interval` for fixed-length intervals, without the
/// calendar arithmetic Arrow's `+` does per value (window ends are on every row).
pub const ADD_INTERVAL: &str = "weir_add_interval";

/// Replaces window table functions in every `FROM` of the query (including subqueries).
pub fn rewrite_windows(query: &mut Query) -> Result<(), StreamPlanError> {
    let mut error = None;
    rewrite_query(query, &mut error);
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn rewrite_query(query: &mut Query, error: &mut Option<StreamPlanError>) {
    if let Some(with) = &mut query.with {
        for cte in &mut with.cte_tables {
            rewrite_query(&mut cte.query, error);
        }
    }
    rewrite_set_expr(&mut query.body, error);
}

fn rewrite_set_expr(body: &mut ast::SetExpr, error: &mut Option<StreamPlanError>) {
    match body {
        ast::SetExpr::Select(select) => {
            let keys = session_keys(&select.group_by);
            let joined = select.from.len() > 1 || select.from.iter().any(|twj| !twj.joins.is_empty());
            let context = if joined { Err(session_in_join()) } else { keys };
            for twj in &mut select.from {
                rewrite_factor(&mut twj.relation, &context, error);
                for join in &mut twj.joins {
                    rewrite_factor(&mut join.relation, &context, error);
                }
            }
        }
        ast::SetExpr::Query(q) => rewrite_query(q, error),
        ast::SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left, error);
            rewrite_set_expr(right, error);
        }
        _ => {}
    }
}

fn session_in_join() -> StreamPlanError {
    StreamPlanError::not_supported("SESSION windows inside a join")
        .with_hint("Aggregate the SESSION windows in their own view and join that view.")
}

/// The keys SESSION windows of a SELECT are per: its GROUP BY columns other than the window
/// bounds.
fn session_keys(group_by: &ast::GroupByExpr) -> Result<Vec<String>, StreamPlanError> {
    let ast::GroupByExpr::Expressions(exprs, _) = group_by else {
        return Err(StreamPlanError::not_supported("SESSION windows with GROUP BY ALL"));
    };
    let mut keys = Vec::new();
    for e in exprs {
        let column = match e {
            ast::Expr::Identifier(i) => i,
            ast::Expr::CompoundIdentifier(parts) => match parts.last() {
                Some(i) => i,
                None => continue,
            },
            other => {
                return Err(StreamPlanError::not_supported(format!("SESSION windows grouped by the expression {other}"))
                    .with_hint("Group SESSION windows by columns (sessions are per key); compute expressions in a view first."));
            }
        };
        if !matches!(column.value.to_ascii_lowercase().as_str(), "window_start" | "window_end") {
            keys.push(column.to_string());
        }
    }
    Ok(keys)
}

type SessionContext = Result<Vec<String>, StreamPlanError>;

fn rewrite_factor(factor: &mut TableFactor, session: &SessionContext, error: &mut Option<StreamPlanError>) {
    match factor {
        TableFactor::Derived { subquery, .. } => rewrite_query(subquery, error),
        TableFactor::NestedJoin { table_with_joins, .. } => {
            let joined = Err(session_in_join());
            rewrite_factor(&mut table_with_joins.relation, &joined, error);
            for join in &mut table_with_joins.joins {
                rewrite_factor(&mut join.relation, &joined, error);
            }
        }
        TableFactor::Table { name, alias, args: Some(args), .. } => {
            let function = name.to_string().to_ascii_lowercase();
            if !matches!(function.as_str(), "tumble" | "hop" | "session") {
                return;
            }
            match window_subquery(&function, &args.args, alias.as_ref(), session) {
                Ok(replacement) => *factor = replacement,
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        _ => {}
    }
}

fn arg_sql(arg: &FunctionArg) -> Result<String, StreamPlanError> {
    match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.to_string()),
        other => Err(StreamPlanError::invalid(format!("unexpected window function argument {other}"))),
    }
}

fn window_subquery(
    function: &str,
    args: &[FunctionArg],
    alias: Option<&ast::TableAlias>,
    session: &SessionContext,
) -> Result<TableFactor, StreamPlanError> {
    let args: Vec<String> = args.iter().map(arg_sql).collect::<Result<_, _>>()?;
    let usage = match function {
        "tumble" => "TUMBLE(relation, time_column, size [, offset])",
        "hop" => "HOP(relation, time_column, slide, size [, offset])",
        _ => "SESSION(relation, time_column, gap)",
    };
    let arity_ok = match function {
        "tumble" => (3..=4).contains(&args.len()),
        "hop" => (4..=5).contains(&args.len()),
        _ => args.len() == 3,
    };
    if !arity_ok {
        return Err(StreamPlanError::invalid(format!("wrong number of arguments: use {usage}")));
    }
    let relation = &args[0];
    let ts = &args[1];
    let alias_sql = match alias {
        Some(a) => format!("AS {}", a.to_string().trim_start_matches("AS ")),
        None => format!("AS {}", relation.rsplit('.').next().unwrap_or(relation)),
    };
    let zero = "INTERVAL '0 seconds'".to_string();
    let sql = if function == "session" {
        let gap = &args[2];
        let keys = session.clone()?;
        let partition = if keys.is_empty() { String::new() } else { format!("PARTITION BY {} ", keys.join(", ")) };
        let over = format!("OVER ({partition}ORDER BY {ts})");
        format!(
            "SELECT * FROM (SELECT *, {SESSION_START}({ts}, {gap}) {over} AS window_start, \
             {SESSION_END}({ts}, {gap}) {over} AS window_end FROM {relation}) {alias_sql}"
        )
    } else if function == "tumble" {
        let size = &args[2];
        let offset = args.get(3).unwrap_or(&zero);
        format!(
            // window_end from window_start, so the start is computed once per row.
            "SELECT * FROM (SELECT *, {ADD_INTERVAL}(window_start, {size}) AS window_end FROM \
             (SELECT *, {TUMBLE_START}({ts}, {size}, {offset}) AS window_start FROM {relation}) \
             AS weir_tumble_input) {alias_sql}"
        )
    } else {
        let (slide, size) = (&args[2], &args[3]);
        let offset = args.get(4).unwrap_or(&zero);
        format!(
            "SELECT * FROM (SELECT *, {ADD_INTERVAL}(window_start, {size}) AS window_end FROM \
             (SELECT *, unnest({HOP_STARTS}({ts}, {slide}, {size}, {offset})) AS window_start FROM {relation}) \
             AS weir_hop_input) {alias_sql}"
        )
    };
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, &sql)
        .map_err(|e| StreamPlanError::invalid(format!("bad window function arguments: {e}")))?;
    let Some(ast::Statement::Query(query)) = statements.pop() else {
        return Err(StreamPlanError::invalid("bad window function arguments"));
    };
    let ast::SetExpr::Select(select) = *query.body else {
        return Err(StreamPlanError::invalid("bad window function arguments"));
    };
    let mut from = select.from;
    match from.pop() {
        Some(twj) => Ok(twj.relation),
        None => Err(StreamPlanError::invalid("bad window function arguments")),
    }
}

/// A fixed-length interval in microseconds; months have no fixed length and are refused.
pub fn interval_micros(v: &IntervalMonthDayNano) -> Option<i64> {
    if v.months != 0 {
        return None;
    }
    // Checked: a literal of millions of days must not overflow.
    (v.days as i64).checked_mul(86_400_000_000)?.checked_add(v.nanoseconds / 1_000)
}

fn scalar_interval(v: &ColumnarValue, what: &str) -> DfResult<i64> {
    match v {
        ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(i))) => match interval_micros(i) {
            Some(m) => Ok(m),
            None => plan_err!("a window {what} must not be given in months or years"),
        },
        ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(None)) => plan_err!("a window {what} must not be NULL"),
        _ => plan_err!("a window {what} must be a constant interval"),
    }
}

fn timestamps(v: &ColumnarValue, rows: usize) -> DfResult<TimestampMicrosecondArray> {
    let array = v.clone().into_array(rows)?;
    let array = datafusion::arrow::compute::cast(&array, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    match array.as_any().downcast_ref::<TimestampMicrosecondArray>() {
        Some(a) => Ok(a.clone()),
        None => exec_err!("window time column is not a timestamp"),
    }
}

/// The start of the tumbling window of `size` (aligned to the epoch plus `offset`) holding `ts`.
pub fn tumble_start(ts: i64, size: i64, offset: i64) -> i64 {
    ts - (ts - offset).rem_euclid(size)
}

/// `(timestamp, interval × n)` for each `n` in `counts`, with or without the session time zone.
fn timestamp_and_intervals(counts: &[usize]) -> Signature {
    let interval = DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano);
    let mut variants = Vec::new();
    for tz in [None, Some(Arc::from("+00:00"))] {
        for n in counts {
            let mut args = vec![DataType::Timestamp(TimeUnit::Microsecond, tz.clone())];
            args.extend(std::iter::repeat_n(interval.clone(), *n));
            variants.push(TypeSignature::Exact(args));
        }
    }
    Signature::one_of(variants, Volatility::Immutable)
}

/// Timestamps computed in UTC microseconds, labelled with the time zone the plan expects.
fn in_return_timezone(out: TimestampMicrosecondArray, args: &ScalarFunctionArgs) -> ColumnarValue {
    let out = out.with_timezone_opt(match args.return_field.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    });
    ColumnarValue::Array(Arc::new(out))
}

/// `weir_tumble_start(ts, size, offset)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TumbleStart {
    signature: Signature,
}

impl Default for TumbleStart {
    fn default() -> Self {
        TumbleStart { signature: timestamp_and_intervals(&[2, 3]) }
    }
}

impl ScalarUDFImpl for TumbleStart {
    fn name(&self) -> &str {
        TUMBLE_START
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(args[0].clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let size = scalar_interval(&args.args[1], "size")?;
        let offset = scalar_interval(&args.args[2], "offset")?;
        if size <= 0 {
            return plan_err!("a window size must be positive");
        }
        let ts = timestamps(&args.args[0], args.number_rows)?;
        Ok(in_return_timezone(ts.unary(|t| tumble_start(t, size, offset)), &args))
    }
}

/// `weir_add_interval(ts, interval)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AddInterval {
    signature: Signature,
}

impl Default for AddInterval {
    fn default() -> Self {
        AddInterval { signature: timestamp_and_intervals(&[1]) }
    }
}

impl ScalarUDFImpl for AddInterval {
    fn name(&self) -> &str {
        ADD_INTERVAL
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(args[0].clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let by = scalar_interval(&args.args[1], "size")?;
        let ts = timestamps(&args.args[0], args.number_rows)?;
        Ok(in_return_timezone(ts.unary(|t| t.saturating_add(by)), &args))
    }
}

/// `weir_hop_starts(ts, slide, size, offset)`: the starts of every hopping window holding `ts`,
/// oldest first; or, as `weir_hop_pane` ([`HopStarts::panes`]), only the latest of them, which
/// is the start of the slide-long pane holding `ts`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HopStarts {
    signature: Signature,
    pane_only: bool,
}

impl Default for HopStarts {
    fn default() -> Self {
        HopStarts { signature: timestamp_and_intervals(&[3]), pane_only: false }
    }
}

impl HopStarts {
    pub fn panes() -> Self {
        HopStarts { pane_only: true, ..HopStarts::default() }
    }
}

impl ScalarUDFImpl for HopStarts {
    fn name(&self) -> &str {
        if self.pane_only { HOP_PANE } else { HOP_STARTS }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::List(Arc::new(Field::new("item", args[0].clone(), true))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let slide = scalar_interval(&args.args[1], "slide")?;
        let size = scalar_interval(&args.args[2], "size")?;
        let offset = scalar_interval(&args.args[3], "offset")?;
        if slide <= 0 || size <= 0 {
            return plan_err!("a window size and slide must be positive");
        }
        if size % slide != 0 {
            return plan_err!("a HOP window size must be a multiple of its slide");
        }
        let tz = match args.return_field.data_type() {
            DataType::List(f) => match f.data_type() {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            },
            _ => None,
        };
        let ts = timestamps(&args.args[0], args.number_rows)?;
        let per_row = if self.pane_only { 1 } else { (size / slide) as usize };
        let values = TimestampMicrosecondBuilder::with_capacity(ts.len() * per_row).with_timezone_opt(tz.clone());
        let mut builder = ListBuilder::new(values)
            .with_field(Arc::new(Field::new("item", DataType::Timestamp(TimeUnit::Microsecond, tz), true)));
        for t in ts.iter() {
            match t {
                Some(t) => {
                    // The latest window holding t starts at its slide boundary; earlier ones
                    // start one slide apart while they still contain t.
                    let last = tumble_start(t, slide, offset);
                    let first = if self.pane_only { last } else { last - size + slide };
                    let mut start = first;
                    while start <= last {
                        builder.values().append_value(start);
                        start += slide;
                    }
                    builder.append(true);
                }
                None => builder.append(false),
            }
        }
        let out: ArrayRef = Arc::new(builder.finish());
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumble_start_aligns_to_epoch_and_offset() {
        assert_eq!(tumble_start(0, 10, 0), 0);
        assert_eq!(tumble_start(9, 10, 0), 0);
        assert_eq!(tumble_start(10, 10, 0), 10);
        assert_eq!(tumble_start(-1, 10, 0), -10);
        assert_eq!(tumble_start(12, 10, 3), 3);
        assert_eq!(tumble_start(13, 10, 3), 13);
    }

    fn rewritten(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        let ast::Statement::Query(q) = &mut statements[0] else { panic!() };
        rewrite_windows(q).unwrap();
        q.to_string()
    }

    #[test]
    fn tumble_becomes_a_subquery_with_window_columns() {
        let sql = rewritten("SELECT count(*) FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start");
        assert!(sql.contains("weir_tumble_start(date_time, INTERVAL '10' SECOND"), "{sql}");
        assert!(sql.contains("AS bid"), "{sql}");
    }

    #[test]
    fn hop_unnests_window_starts() {
        let sql = rewritten("SELECT 1 FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS h");
        assert!(sql.contains("unnest(weir_hop_starts("), "{sql}");
        assert!(sql.contains("AS h"), "{sql}");
    }

    #[test]
    fn wrong_arity_is_an_error() {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT 1 FROM TUMBLE(bid, ts)").unwrap();
        let ast::Statement::Query(q) = &mut statements[0] else { panic!() };
        assert!(rewrite_windows(q).is_err());
    }
}
