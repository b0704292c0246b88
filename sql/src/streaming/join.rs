//! Planning joins: which conjuncts of a join condition are hash keys, which are a residual
//! filter, and how the watermark bounds each side's state.
//!
//! An incremental join keeps every row of both inputs (a change on one side is joined with the
//! other side's rows). That state is bounded only when the condition relates the two sides'
//! watermarked columns: a window join (`a.window_start = b.window_start`) or an interval join
//! (`a.ts BETWEEN b.ts - INTERVAL '10' SECOND AND b.ts`). From a condition `X <= Y + c`, where `X`
//! is a column of one side with close offset `oX` and `Y` a column of the other side, a row of
//! `Y`'s side with value `y` can only match rows with `X <= y + c`; rows arriving later on `X`'s
//! side have `X > watermark - oX`, so the row can match nothing more once the watermark reaches
//! `y + c + oX` and is dropped then ([`StateBound`]). The same reasoning bounds when an output
//! row can still appear, which gives the join's output columns their close offsets.

use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, JoinType, Operator};

use super::StreamPlanError;
use super::plan::literal_interval;

/// The join types the engine maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    pub fn from_join_type(join_type: JoinType) -> Result<Self, StreamPlanError> {
        Ok(match join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            other => {
                return Err(StreamPlanError::not_supported(format!("{other} join in a materialized view"))
                    .with_hint("Semi and anti joins (EXISTS, IN and NOT IN subqueries) are not maintained incrementally."));
            }
        })
    }

    /// Whether rows of side `side` (0 = left, 1 = right) without a match appear, NULL-padded.
    pub fn preserves(self, side: usize) -> bool {
        match self {
            JoinKind::Inner => false,
            JoinKind::Left => side == 0,
            JoinKind::Right => side == 1,
            JoinKind::Full => true,
        }
    }
}

impl std::fmt::Display for JoinKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinKind::Inner => "Inner",
            JoinKind::Left => "Left",
            JoinKind::Right => "Right",
            JoinKind::Full => "Full",
        })
    }
}

/// A row of one side can be dropped from the join's state once the watermark reaches the row's
/// value in `column` (an index into that side's columns) plus `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBound {
    pub column: usize,
    pub offset: i64,
}

/// A join condition, split for a symmetric hash join.
#[derive(Debug, Clone)]
pub struct JoinCondition {
    /// Equality keys: `left_keys[i]` (over the left schema) = `right_keys[i]` (over the right).
    pub left_keys: Vec<Expr>,
    pub right_keys: Vec<Expr>,
    /// The rest of the condition, over the join's output schema (left columns, then right).
    pub residual: Option<Expr>,
    /// Per side (0 = left, 1 = right): when its rows leave the state, the earliest of these.
    pub bounds: [Vec<StateBound>; 2],
}

/// `column + constant` where the constant is a literal interval in microseconds.
fn linear(expr: &Expr) -> Option<(&Column, i64)> {
    match expr {
        Expr::Column(c) => Some((c, 0)),
        Expr::Alias(a) => linear(&a.expr),
        Expr::Cast(c) if matches!(c.field.data_type(), datafusion::arrow::datatypes::DataType::Timestamp(..)) => {
            linear(&c.expr)
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Plus, right }) => {
            let (c, k) = linear(left)?;
            Some((c, k.checked_add(literal_interval(right)?)?))
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Minus, right }) => {
            let (c, k) = linear(left)?;
            Some((c, k.checked_sub(literal_interval(right)?)?))
        }
        _ => None,
    }
}

/// Which side's columns an expression reads: `Some(0)` left only, `Some(1)` right only.
fn side_of(expr: &Expr, sides: [&DFSchema; 2]) -> Option<usize> {
    let columns = expr.column_refs();
    if columns.is_empty() {
        return None;
    }
    (0..2).find(|s| columns.iter().all(|c| sides[*s].has_column(c)))
}

/// Splits `conjuncts` (from `ON`, and from a `WHERE` over an inner join) into keys, bounds and
/// a residual filter. `offsets` are the close offsets of each side's columns.
pub fn split_condition(
    on: &[(Expr, Expr)],
    conjuncts: &[&Expr],
    sides: [&DFSchema; 2],
    offsets: [&[Option<i64>]; 2],
) -> Result<JoinCondition, StreamPlanError> {
    let mut condition = JoinCondition {
        left_keys: Vec::new(),
        right_keys: Vec::new(),
        residual: None,
        bounds: [Vec::new(), Vec::new()],
    };
    let mut residual = Vec::new();
    // `a <= b + c` facts between the two sides, for the state bounds.
    let mut facts: Vec<(&Expr, &Expr)> = Vec::new();
    for (l, r) in on {
        condition.left_keys.push(l.clone());
        condition.right_keys.push(r.clone());
        facts.push((l, r));
        facts.push((r, l));
    }
    for conjunct in conjuncts.iter().flat_map(|c| split_conjunction(c)) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
                match (side_of(left, sides), side_of(right, sides)) {
                    (Some(0), Some(1)) => {
                        condition.left_keys.push(left.as_ref().clone());
                        condition.right_keys.push(right.as_ref().clone());
                    }
                    (Some(1), Some(0)) => {
                        condition.left_keys.push(right.as_ref().clone());
                        condition.right_keys.push(left.as_ref().clone());
                    }
                    _ => residual.push(conjunct.clone()),
                }
                facts.push((left, right));
                facts.push((right, left));
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                match op {
                    Operator::Lt | Operator::LtEq => facts.push((left, right)),
                    Operator::Gt | Operator::GtEq => facts.push((right, left)),
                    _ => {}
                }
                residual.push(conjunct.clone());
            }
            Expr::Between(Between { expr, negated: false, low, high }) => {
                facts.push((low, expr));
                facts.push((expr, high));
                residual.push(conjunct.clone());
            }
            other => residual.push(other.clone()),
        }
    }
    condition.residual = residual.into_iter().reduce(Expr::and);

    for (smaller, larger) in facts {
        // smaller_col + ks <= larger_col + kl, i.e. X <= Y + (kl - ks).
        let (Some((x, ks)), Some((y, kl))) = (linear(smaller), linear(larger)) else { continue };
        let (Some(x_side), Some(y_side)) = (
            (0..2).find(|s| sides[*s].has_column(x)),
            (0..2).find(|s| sides[*s].has_column(y)),
        ) else {
            continue;
        };
        if x_side == y_side {
            continue;
        }
        let (Ok(xi), Ok(yi)) = (sides[x_side].index_of_column(x), sides[y_side].index_of_column(y)) else { continue };
        let Some(ox) = offsets[x_side].get(xi).copied().flatten() else { continue };
        let Some(offset) = kl.checked_sub(ks).and_then(|c| c.checked_add(ox)) else { continue };
        let bound = StateBound { column: yi, offset };
        if !condition.bounds[y_side].contains(&bound) {
            condition.bounds[y_side].push(bound);
        }
    }
    if condition.left_keys.is_empty() {
        return Err(StreamPlanError::not_supported("a join without an equality between its two sides")
            .with_hint("Join on at least one equality (a key, or window_start for a window join); cross joins and pure range joins are not maintained incrementally."));
    }
    Ok(condition)
}

/// The close offsets of a join's output: a column of side `s` keeps a bound when `s`'s state is
/// bounded through that column (an output row with value `v` appears before the watermark
/// reaches `v + max(own offset, bound offset)`); columns of a side that outer joins may
/// NULL-pad lose theirs.
pub fn output_close_offsets(kind: JoinKind, offsets: [&[Option<i64>]; 2], bounds: &[Vec<StateBound>; 2]) -> Vec<Option<i64>> {
    let mut out = Vec::new();
    for side in 0..2 {
        let other_preserved = kind.preserves(1 - side);
        for (column, own) in offsets[side].iter().enumerate() {
            let bound = bounds[side].iter().filter(|b| b.column == column).map(|b| b.offset).min();
            out.push(match (own, bound) {
                (Some(own), Some(bound)) if !other_preserved => Some((*own).max(bound)),
                _ => None,
            });
        }
    }
    out
}
