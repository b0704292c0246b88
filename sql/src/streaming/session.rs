//! `SESSION(t, ts, gap)` windows: a session is a run of a key's rows whose event times are less
//! than `gap` apart; it spans `[first ts, last ts + gap)`, as in Flink and RisingWave. Sessions
//! are per key: the query's `GROUP BY` columns other than `window_start`/`window_end` (none:
//! one global sequence of sessions).
//!
//! The rewrite turns the table function into a window-function query that DataFusion runs in
//! batch (the tests' oracle, ad-hoc queries):
//!
//! ```sql
//! SESSION(t, ts, gap)  ->  (SELECT *, weir_session_start(ts, gap) OVER (PARTITION BY keys ORDER BY ts) AS window_start,
//!                                     weir_session_end(ts, gap) OVER (PARTITION BY keys ORDER BY ts) AS window_end FROM t)
//! ```
//!
//! and the streaming planner recognizes the two functions and plans the session operator
//! instead, which reassigns rows as sessions grow and merge.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::{Result as DfResult, exec_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{PartitionEvaluator, Signature, TypeSignature, Volatility, WindowUDFImpl};

use super::window::interval_micros;

pub const SESSION_START: &str = "weir_session_start";
pub const SESSION_END: &str = "weir_session_end";

/// The sessions of event times sorted ascending: per row, its session's `(start, end)`.
pub fn sessions(sorted: &[i64], gap: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::with_capacity(sorted.len());
    let mut first = 0;
    for i in 0..=sorted.len() {
        let ends_session = i == sorted.len() || (i > first && sorted[i] - sorted[i - 1] >= gap);
        if ends_session && i > first {
            let bounds = (sorted[first], sorted[i - 1].saturating_add(gap));
            out.extend(std::iter::repeat_n(bounds, i - first));
            first = i;
        }
    }
    out
}

/// `weir_session_start(ts, gap)` or `weir_session_end(ts, gap)` over a partition ordered by `ts`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SessionBound {
    end: bool,
    signature: Signature,
}

impl SessionBound {
    pub fn start() -> Self {
        SessionBound { end: false, signature: signature() }
    }

    pub fn end() -> Self {
        SessionBound { end: true, signature: signature() }
    }
}

fn signature() -> Signature {
    let interval = DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano);
    let variants = [None, Some(Arc::from("+00:00"))]
        .into_iter()
        .map(|tz| TypeSignature::Exact(vec![DataType::Timestamp(TimeUnit::Microsecond, tz), interval.clone()]))
        .collect();
    Signature::one_of(variants, Volatility::Immutable)
}

impl WindowUDFImpl for SessionBound {
    fn name(&self) -> &str {
        if self.end { SESSION_END } else { SESSION_START }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(&self, _args: PartitionEvaluatorArgs) -> DfResult<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(SessionEvaluator { end: self.end }))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> DfResult<FieldRef> {
        let data_type = match args.input_fields().first().map(|f| f.data_type()) {
            Some(t @ DataType::Timestamp(..)) => t.clone(),
            _ => DataType::Timestamp(TimeUnit::Microsecond, None),
        };
        Ok(Arc::new(Field::new(args.name(), data_type, true)))
    }
}

#[derive(Debug)]
struct SessionEvaluator {
    end: bool,
}

impl PartitionEvaluator for SessionEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> DfResult<ArrayRef> {
        let (Some(ts), Some(gap)) = (values.first(), values.get(1)) else {
            return exec_err!("SESSION takes a time column and a gap");
        };
        let gap = gap.as_primitive_opt::<IntervalMonthDayNanoType>().filter(|g| !g.is_empty() && g.is_valid(0));
        let Some(gap) = gap.and_then(|g| interval_micros(&g.value(0))) else {
            return plan_err!("a SESSION gap must be a constant interval without months");
        };
        if gap <= 0 {
            return plan_err!("a SESSION gap must be positive");
        }
        let tz = match ts.data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let micros = datafusion::arrow::compute::cast(ts, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let micros = micros.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        // Rows come sorted by ts with NULLs at one end; NULL times belong to no session.
        let valid: Vec<i64> = micros.iter().flatten().collect();
        let bounds = sessions(&valid, gap);
        let mut next = bounds.iter();
        let out: TimestampMicrosecondArray = (0..num_rows)
            .map(|i| {
                if micros.is_null(i) {
                    None
                } else {
                    next.next().map(|(s, e)| if self.end { *e } else { *s })
                }
            })
            .collect();
        Ok(Arc::new(out.with_timezone_opt(tz)))
    }
}

#[cfg(test)]
mod tests {
    use super::sessions;

    #[test]
    fn rows_closer_than_the_gap_share_a_session() {
        assert_eq!(sessions(&[], 5), vec![]);
        assert_eq!(sessions(&[1, 3, 7, 12, 20], 5), vec![(1, 12), (1, 12), (1, 12), (12, 17), (20, 25)]);
        assert_eq!(sessions(&[4, 4], 1), vec![(4, 5), (4, 5)]);
    }
}
