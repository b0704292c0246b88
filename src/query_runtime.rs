//! The runtime ad-hoc queries execute on, apart from the one that runs the dataflow and the
//! listeners.
//!
//! DataFusion operators can compute for seconds inside one poll (a nested-loop join fills its
//! output batch before it yields). On a shared runtime such a query holds worker threads, and
//! the sources, view jobs, sinks and every other session on them wait: cooperative scheduling
//! cannot take a thread back. Queries run here instead, on threads of their own, so the
//! operating system shares the cores between them and the streaming engine, and a canceled or
//! timed-out statement's client gets its answer at once (its execution stops at its next yield).

use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::error::DataFusionError;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, WeirError};

/// Batches a query may run ahead of the client reading them.
const AHEAD: usize = 2;

pub struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    /// `threads` workers (0: twice the cores, at least 4). More threads than cores on purpose:
    /// a query holds as many as it has partitions (one per core) while it computes, and the
    /// others keep the next query from waiting for it; the OS shares the cores between them.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = match threads {
            0 => (2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)).max(4),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("weir-query")
            .enable_all()
            .build()?;
        Ok(QueryRuntime(Some(runtime)))
    }

    /// Executes `df` on this runtime; its batches come back through a bounded channel, so a
    /// client that reads slowly holds the query back. Dropping the stream stops the query.
    pub async fn execute(&self, df: DataFrame) -> Result<SendableRecordBatchStream> {
        let runtime = self.0.as_ref().ok_or_else(|| WeirError::internal("the query runtime has stopped"))?;
        let (started_tx, started) = oneshot::channel();
        let (tx, rx) = mpsc::channel(AHEAD);
        let panicked = tx.clone();
        let query = async move {
            let mut stream = match df.execute_stream().await {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            if started_tx.send(Ok(stream.schema())).is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    () = tx.closed() => return,
                };
                let Some(item) = next else { return };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        };
        runtime.spawn(async move {
            // A panicking operator must fail the query: without this the client would see the
            // rows sent so far as the whole result.
            if let Err(panic) = std::panic::AssertUnwindSafe(query).catch_unwind().await {
                let message = crate::server::panic_message(panic.as_ref()).to_string();
                tracing::error!(panic = %message, "a query panicked");
                let error = DataFusionError::Internal(format!("the query failed: {message}"));
                let _ = panicked.send(Err(error)).await;
            }
        });
        let schema = started.await.map_err(|_| WeirError::internal("the query runtime dropped a query"))??;
        let batches = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

impl Drop for QueryRuntime {
    /// Without waiting for running queries: the database may be dropped inside another
    /// runtime, where blocking on this one's shutdown is not allowed.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn runs_a_query_and_reports_its_errors() {
        let queries = QueryRuntime::new(1).unwrap();
        let ctx = SessionContext::new();
        let df = ctx.sql("SELECT * FROM generate_series(1, 100000) AS t(x) WHERE x % 7 = 0").await.unwrap();
        let batches: Vec<_> = queries.execute(df).await.unwrap().collect().await;
        let rows: usize = batches.into_iter().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 100000 / 7);
        let df = ctx.sql("SELECT CAST('x' AS INT)").await.unwrap();
        let failed = match queries.execute(df).await {
            Err(e) => Some(e),
            Ok(stream) => stream.collect::<Vec<_>>().await.into_iter().find_map(|b| b.err()).map(WeirError::from),
        };
        assert!(failed.is_some(), "a failing cast must fail");
    }

    #[tokio::test]
    async fn a_panicking_operator_fails_the_query() {
        use datafusion::arrow::datatypes::DataType;
        use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
        let queries = QueryRuntime::new(1).unwrap();
        let ctx = SessionContext::new();
        let boom = |_: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> { panic!("boom") };
        ctx.register_udf(create_udf("boom", vec![DataType::Int64], DataType::Int64, Volatility::Volatile, std::sync::Arc::new(boom)));
        let df = ctx.sql("SELECT boom(value) FROM generate_series(1, 10)").await.unwrap();
        let results: Vec<_> = queries.execute(df).await.unwrap().collect().await;
        let error = results.iter().find_map(|r| r.as_ref().err()).expect("the panic is an error").to_string();
        assert!(error.contains("boom"), "{error}");
    }
}
