//! `SUBSCRIBE`: a view's changes as a never-ending stream of rows, in Materialize's shape:
//! `weir_epoch BIGINT, weir_diff BIGINT, [weir_progressed BOOLEAN,] <the columns>`.
//!
//! * The target is a materialized view, or a table, a source or `(query)`, which gets a view
//!   job of its own for as long as the subscription lasts (under an id outside the catalog's).
//! * `snapshot` (default true): the view's contents when the subscription joined come first, as
//!   positive rows of the first epoch it sees; with `snapshot = false` only later changes.
//! * `progress` (default false): after each epoch a row with `weir_progressed = true`, NULL
//!   diff and NULL columns says that every change up to that epoch has been sent (also when
//!   nothing changed).
//! * Rows are in epoch order; within an epoch as the view produced them (not consolidated).
//! * A slow subscriber never holds the view back: the feed buffers `buffer` epochs' worth of
//!   messages (`WITH (buffer = n)`, default 1024 messages); when it is full the view drops the
//!   subscription, which ends with an error saying so (SQLSTATE 53000), and the client can
//!   subscribe again for a new snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use tokio::sync::mpsc;
use weir_catalog::{ObjectId, ObjectKind};
use weir_sql::{CreateMaterializedView, Subscribe, SubscribeTarget};

use crate::coordinator::ChangeFeed;
use crate::database::{Database, table_schema};
use crate::dataflow::{Changes, Message};
use crate::error::{Result, SqlState, WeirError};
use crate::session::object_name;
use crate::streaming::options_map;

/// Ids of the view jobs subscriptions run for tables, sources and queries: far above any
/// catalog id.
static NEXT_JOB_ID: AtomicU64 = AtomicU64::new(1 << 62);

const DEFAULT_BUFFER: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Options {
    snapshot: bool,
    progress: bool,
    buffer: usize,
}

fn options(stmt: &Subscribe) -> Result<Options> {
    let map = options_map(&stmt.with);
    let flag = |key: &str, default: bool| -> Result<bool> {
        match map.get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "on") => Ok(true),
            Some("false" | "off") => Ok(false),
            Some(other) => Err(WeirError::new(SqlState::InvalidParameterValue, format!("invalid value \"{other}\" for option \"{key}\": must be true or false"))),
        }
    };
    for key in map.keys() {
        if !matches!(key.as_str(), "snapshot" | "progress" | "buffer") {
            return Err(WeirError::new(SqlState::InvalidParameterValue, format!("unknown SUBSCRIBE option \"{key}\""))
                .with_hint("SUBSCRIBE options: snapshot, progress, buffer."));
        }
    }
    let buffer = match map.get("buffer") {
        None => DEFAULT_BUFFER,
        Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            WeirError::new(SqlState::InvalidParameterValue, format!("invalid value \"{v}\" for option \"buffer\": must be a positive number of messages"))
        })?,
    };
    Ok(Options { snapshot: flag("snapshot", true)?, progress: flag("progress", false)?, buffer })
}

/// One of the `max_subscriptions` slots, held while a subscription streams.
struct SubscriptionSlot(Arc<Database>);

impl SubscriptionSlot {
    fn take(db: &Arc<Database>) -> Result<Self> {
        let metrics = &db.metrics;
        let open = metrics.subscriptions_active.fetch_add(1, Ordering::SeqCst) + 1;
        // Taken first, then checked, so two racing subscribers cannot both pass the limit.
        let slot = SubscriptionSlot(db.clone());
        if open > db.config.max_subscriptions as i64 {
            metrics.subscriptions_over_limit.fetch_add(1, Ordering::Relaxed);
            return Err(WeirError::new(SqlState::ConfigurationLimitExceeded, format!("too many subscriptions: {} are streaming", db.config.max_subscriptions))
                .with_hint("End a SUBSCRIBE or close its cursor, or raise --max-subscriptions."));
        }
        Ok(slot)
    }
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.0.metrics.subscriptions_active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A view job run for one subscription, dropped with it.
struct OwnJob {
    db: Arc<Database>,
    id: ObjectId,
}

impl Drop for OwnJob {
    fn drop(&mut self) {
        self.db.coordinator.drop_view(self.id);
    }
}

/// The columns of a subscription's rows for a view with `columns`.
fn output_schema(columns: &Schema, progress: bool) -> SchemaRef {
    let mut fields = vec![Field::new("weir_epoch", DataType::Int64, false), Field::new("weir_diff", DataType::Int64, true)];
    if progress {
        fields.push(Field::new("weir_progressed", DataType::Boolean, false));
    }
    fields.extend(columns.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
    Arc::new(Schema::new(fields))
}

/// Starts a subscription; the stream ends only with an error (the subscriber fell behind, the
/// view was dropped) or when the client stops reading.
pub async fn subscribe(db: &Arc<Database>, ctx: &SessionContext, stmt: &Subscribe) -> Result<(SchemaRef, SendableRecordBatchStream)> {
    let (schema, rx) = subscribe_channel(db, ctx, stmt).await?;
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok((schema.clone(), Box::pin(RecordBatchStreamAdapter::new(schema, stream))))
}

/// A subscription's batches on a channel (what a cursor keeps: a receiver, unlike a stream,
/// can be shared with the session).
pub async fn subscribe_channel(db: &Arc<Database>, ctx: &SessionContext, stmt: &Subscribe) -> Result<(SchemaRef, Receiver)> {
    let options = options(stmt)?;
    let slot = SubscriptionSlot::take(db)?;
    let view_query = |query| CreateMaterializedView {
        if_not_exists: false,
        name: sqlparser::ast::ObjectName::from(vec![sqlparser::ast::Ident::new("subscribe")]),
        with: vec![],
        query,
        emit_on_window_close: false,
    };
    let named = match &stmt.target {
        SubscribeTarget::Object(name) => {
            let (schema, n) = object_name(name)?;
            let catalog = db.read_catalog();
            let object = catalog.find(ObjectKind::Table, &schema, &n).cloned().ok_or_else(|| {
                WeirError::new(SqlState::UndefinedTable, format!("relation \"{n}\" does not exist"))
            })?;
            match object.kind {
                ObjectKind::MaterializedView => Some(object),
                ObjectKind::Table | ObjectKind::Source => None,
                _ => return Err(WeirError::new(SqlState::WrongObjectType, format!("\"{n}\" cannot be subscribed to")).with_hint("SUBSCRIBE reads materialized views, tables, sources and queries.")),
            }
        }
        SubscribeTarget::Query(_) => None,
    };
    let (view, columns, own_job) = match named {
        Some(object) => {
            crate::roles::check_context_reads(db, ctx, [object.id])?;
            (object.id, Arc::new(table_schema(&object.columns)?), None)
        }
        None => {
            let query = match &stmt.target {
                SubscribeTarget::Query(q) => q.clone(),
                SubscribeTarget::Object(name) => match weir_sql::parse(&format!("SELECT * FROM {name}"))?.pop().map(|p| p.statement) {
                    Some(weir_sql::Statement::Standard(s)) => match *s {
                        sqlparser::ast::Statement::Query(q) => q,
                        _ => return Err(WeirError::internal("SUBSCRIBE target did not parse as a query")),
                    },
                    _ => return Err(WeirError::internal("SUBSCRIBE target did not parse as a query")),
                },
            };
            let (plan, schema) = crate::streaming::plan_view(db, ctx, &view_query(query)).await?;
            let id = NEXT_JOB_ID.fetch_add(1, Ordering::Relaxed);
            crate::streaming::start_view(db, id, &plan, schema.clone(), crate::streaming::Contents::UntilSubscribed)?;
            (id, schema, Some(OwnJob { db: db.clone(), id }))
        }
    };
    let feed = db.coordinator.change_feed(view, options.buffer)?;
    let schema = output_schema(&columns, options.progress);
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(run(feed, schema.clone(), options, tx, (slot, own_job)));
    Ok((schema, rx))
}

/// Rows of `changes` at `epoch`.
fn change_rows(schema: &SchemaRef, epoch: u64, changes: &Changes, progress: bool) -> Result<RecordBatch> {
    let n = changes.rows.num_rows();
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_value(epoch as i64, n)), Arc::new(changes.diffs.clone())];
    if progress {
        columns.push(Arc::new(BooleanArray::from(vec![false; n])));
    }
    columns.extend(changes.rows.columns().iter().cloned());
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The progress row of `epoch`: NULL diff and columns.
fn progress_row(schema: &SchemaRef, epoch: u64) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![epoch as i64])), new_null_array(&DataType::Int64, 1), Arc::new(BooleanArray::from(vec![true]))];
    columns.extend(schema.fields().iter().skip(3).map(|f| new_null_array(f.data_type(), 1)));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// `FETCH ... WITH (timeout = '1s')`: how long FETCH waits for a first row (None: until one
/// comes or the statement is canceled).
pub fn fetch_timeout(with: &[weir_sql::WithOption]) -> Result<Option<std::time::Duration>> {
    let options = options_map(with);
    for key in options.keys() {
        if key != "timeout" {
            return Err(WeirError::new(SqlState::InvalidParameterValue, format!("unknown FETCH option \"{key}\"")).with_hint("FETCH takes WITH (timeout = '1s')."));
        }
    }
    options.get("timeout").map(|t| crate::streaming::parse_duration("timeout", t)).transpose()
}

/// A cursor over a subscription (`DECLARE c CURSOR FOR SUBSCRIBE ...`): batches the
/// subscription produced and FETCH has not returned yet.
pub struct SubscribeCursor {
    schema: SchemaRef,
    batches: Receiver,
    pending: std::collections::VecDeque<RecordBatch>,
}

impl SubscribeCursor {
    pub async fn declare(db: &Arc<Database>, ctx: &SessionContext, stmt: &Subscribe) -> Result<Self> {
        let (schema, batches) = subscribe_channel(db, ctx, stmt).await?;
        Ok(SubscribeCursor { schema, batches, pending: Default::default() })
    }

    /// The rows' columns: `weir_epoch`, `weir_diff`, [`weir_progressed`,] the view's.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Up to `count` rows: waits until at least one is there (at most `timeout`, after which it
    /// returns none), then takes what is ready without waiting more.
    pub async fn fetch(&mut self, count: u64, timeout: Option<std::time::Duration>) -> Result<(SchemaRef, RecordBatch)> {
        if self.pending.is_empty() {
            let next = match timeout {
                Some(t) => tokio::time::timeout(t, self.batches.recv()).await.ok(),
                None => Some(self.batches.recv().await),
            };
            match next {
                Some(Some(batch)) => self.pending.push_back(batch?),
                Some(None) => return Err(WeirError::new(SqlState::ObjectNotInPrerequisiteState, "the subscription ended")),
                None => {}
            }
        }
        let mut wanted = usize::try_from(count).unwrap_or(usize::MAX);
        // Take what else is ready now, without waiting.
        let mut ready: usize = self.pending.iter().map(|b| b.num_rows()).sum();
        while ready < wanted {
            let Ok(batch) = self.batches.try_recv() else { break };
            let batch = batch?;
            ready += batch.num_rows();
            self.pending.push_back(batch);
        }
        let mut out = Vec::new();
        while wanted > 0 {
            let Some(batch) = self.pending.pop_front() else { break };
            if batch.num_rows() > wanted {
                out.push(batch.slice(0, wanted));
                self.pending.push_front(batch.slice(wanted, batch.num_rows() - wanted));
                break;
            }
            wanted -= batch.num_rows();
            out.push(batch);
        }
        Ok((self.schema.clone(), datafusion::arrow::compute::concat_batches(&self.schema, &out)?))
    }
}

type Sender = mpsc::Sender<datafusion::error::Result<RecordBatch>>;
type Receiver = mpsc::Receiver<datafusion::error::Result<RecordBatch>>;

/// Turns the feed into rows, epoch by epoch, until the client goes away or the feed ends.
/// `_held` (the subscription's slot and its own view job) is released when it returns.
async fn run(mut feed: ChangeFeed, schema: SchemaRef, options: Options, tx: Sender, _held: (SubscriptionSlot, Option<OwnJob>)) {
    let send = |batch: Result<RecordBatch>| {
        let tx = tx.clone();
        async move { tx.send(batch.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))).await.is_ok() }
    };
    let snapshot = (&mut feed.snapshot).await.ok();
    let mut pending: Vec<Arc<Changes>> = Vec::new();
    let mut first = true;
    loop {
        // A client that went away ends the subscription even while nothing is sent to it.
        let message = tokio::select! {
            m = feed.live.recv() => m,
            () = tx.closed() => return,
        };
        match message {
            Some(Message::Data(changes)) => pending.push(changes),
            Some(Message::Watermark(_)) => {}
            Some(Message::Barrier(epoch)) => {
                // The snapshot is the contents as of this first epoch's boundary: its rows
                // and the rest of the epoch's changes are the epoch's.
                if std::mem::take(&mut first) && options.snapshot {
                    let contents = match snapshot.as_ref().map(|s| s.as_changes()).transpose() {
                        Ok(c) => c.unwrap_or_default(),
                        Err(e) => {
                            send(Err(e)).await;
                            return;
                        }
                    };
                    for changes in contents {
                        if !send(change_rows(&schema, epoch, &changes, options.progress)).await {
                            return;
                        }
                    }
                }
                for changes in pending.drain(..) {
                    if changes.rows.num_rows() > 0 && !send(change_rows(&schema, epoch, &changes, options.progress)).await {
                        return;
                    }
                }
                if options.progress && !send(progress_row(&schema, epoch)).await {
                    return;
                }
            }
            None => {
                if feed.overflowed.load(Ordering::Relaxed) {
                    let error = WeirError::new(SqlState::InsufficientResources, format!("the subscriber fell behind by more than {} messages", options.buffer))
                        .with_hint("Read faster, raise WITH (buffer = ...), or SUBSCRIBE again for a new snapshot.");
                    send(Err(error)).await;
                } else {
                    send(Err(WeirError::new(SqlState::ObjectNotInPrerequisiteState, "the subscribed view was dropped"))).await;
                }
                return;
            }
        }
    }
}
