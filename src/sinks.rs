//! Sinks: a materialized view's changes delivered to an external system, epoch by epoch
//! (docs/sinks.md).
//!
//! A sink subscribes to its view like a downstream view does: it joins at an epoch boundary
//! with the view's contents as its first changes, then receives every epoch's changes and the
//! barrier that ends it. Two tasks run per sink:
//!
//! * the *receiver* gathers an epoch's changes and queues the epoch when its barrier arrives;
//!   the queue holds at most `sink.max_pending_rows` rows, past which the receiver waits, and
//!   so does the view (back-pressure, never loss);
//! * the *deliverer* writes queued epochs in order, retrying a failed one with backoff until it
//!   is written (`status` says `retrying: <error>` meanwhile); an error the target will not get
//!   over (a rejected change) makes the sink `failed`, and it lets go of its view.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tokio::sync::{Semaphore, mpsc};
use weir_catalog::{CatalogObject, NewObject, ObjectId, ObjectKind};
use weir_connectors::sink::DIFF_COLUMN;
use weir_connectors::{ConnectorError, Sink};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::SessionContext;
use weir_sql::streaming::StreamPlan;
use weir_sql::{CreateMaterializedView, CreateSink, SinkInput, Statement};

use crate::database::{Database, catalog_columns, table_schema};
use crate::dataflow::Message;
use crate::error::{Result, SqlState, WeirError};
use crate::session::object_name;
use crate::streaming::options_map;

/// Live figures of a sink, read by `weir_catalog.sinks`.
#[derive(Debug)]
pub struct SinkStats {
    pub view: ObjectId,
    /// The `connector` option, as written.
    pub connector: String,
    pub status: Mutex<String>,
    pub rows_delivered: AtomicU64,
    /// Inserts or requests sent for delivered epochs.
    pub batches: AtomicU64,
    pub epochs_delivered: AtomicU64,
    pub last_epoch: AtomicU64,
    pub retries: AtomicU64,
    /// Rows received but not yet delivered.
    pub pending_rows: AtomicU64,
    /// Epochs received but not yet delivered.
    pub pending_epochs: AtomicU64,
    /// When the oldest epoch not yet delivered was complete (Unix µs; 0 when none waits).
    oldest_pending_micros: AtomicU64,
}

impl SinkStats {
    fn set_status(&self, status: impl Into<String>) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status.into();
    }

    pub fn status(&self) -> String {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How long the oldest epoch not yet delivered has waited, in milliseconds: how far the
    /// target is behind the view (0 when it has everything).
    pub fn lag_ms(&self) -> u64 {
        match self.oldest_pending_micros.load(Ordering::Relaxed) {
            0 => 0,
            since => now_micros().saturating_sub(since) / 1000,
        }
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

struct SinkRuntime {
    stats: Arc<SinkStats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The running sinks.
#[derive(Default)]
pub struct Sinks {
    running: Mutex<HashMap<ObjectId, SinkRuntime>>,
}

impl Sinks {
    pub fn stats(&self) -> Vec<(ObjectId, Arc<SinkStats>)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.iter().map(|(id, r)| (*id, r.stats.clone())).collect()
    }

    /// Stops a sink's tasks (DROP SINK, or its view dropped).
    pub fn stop(&self, id: ObjectId) {
        if let Some(runtime) = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
            for task in runtime.tasks {
                task.abort();
            }
        }
    }
}

/// What a sink reads: a materialized view, or (`AS query`) a view job of its own that runs
/// under the sink's id and is seen nowhere else.
#[derive(Clone)]
struct Upstream {
    id: ObjectId,
    schema: SchemaRef,
    append_only: bool,
}

/// A sink's own query, planned as a view.
async fn plan_query(db: &Database, ctx: &SessionContext, stmt: &CreateSink) -> Result<Option<(StreamPlan, SchemaRef)>> {
    let SinkInput::Query { query, emit_on_window_close } = &stmt.input else { return Ok(None) };
    let view = CreateMaterializedView {
        if_not_exists: false,
        name: stmt.name.clone(),
        with: vec![],
        query: query.clone(),
        emit_on_window_close: *emit_on_window_close,
    };
    Ok(Some(crate::streaming::plan_view(db, ctx, &view).await?))
}

/// The materialized view a `CREATE SINK ... FROM view` reads.
fn named_view(db: &Database, name: &sqlparser::ast::ObjectName) -> Result<(CatalogObject, Upstream)> {
    let (schema, name) = object_name(name)?;
    let view = db.read_catalog().find_kind(ObjectKind::MaterializedView, &schema, &name)?.clone();
    let upstream = Upstream {
        id: view.id,
        schema: Arc::new(table_schema(&view.columns)?),
        append_only: db.coordinator.view_shape(view.id).is_some_and(|s| s.append_only),
    };
    Ok((view, upstream))
}

/// The connector writing to the target, checked against it and against the rows it will get.
async fn connect(stmt: &CreateSink, upstream: &Upstream) -> Result<(Box<dyn Sink>, usize)> {
    let options = options_map(&stmt.with);
    let max_pending = weir_connectors::sink::max_pending_rows(&options)?;
    let (schema, append_only) = (upstream.schema.clone(), upstream.append_only);
    let sink: Box<dyn Sink> = match options.get("connector").map(|c| c.to_ascii_lowercase()).as_deref() {
        Some("clickhouse") => Box::new(weir_connectors::clickhouse::ClickHouseSink::new(schema, &options, append_only).await?),
        Some("questdb") => Box::new(weir_connectors::questdb::QuestDbSink::new(schema, &options, append_only).await?),
        Some(other) => {
            return Err(WeirError::not_supported(format!("sink connector '{other}'")).with_hint("Sinks: connector = 'clickhouse' or 'questdb'."));
        }
        None => {
            return Err(WeirError::new(SqlState::InvalidParameterValue, "a sink needs a connector")
                .with_hint("Add WITH (connector = 'clickhouse', ...)."));
        }
    };
    Ok((sink, max_pending))
}

pub async fn create_sink(db: &Arc<Database>, ctx: &SessionContext, stmt: &CreateSink, owner: &str) -> Result<()> {
    let (schema_name, name) = object_name(&stmt.name)?;
    let _ddl = db.ddl_lock.lock().await;
    if stmt.if_not_exists && db.read_catalog().find(ObjectKind::Sink, &schema_name, &name).is_some() {
        return Ok(());
    }
    let query = plan_query(db, ctx, stmt).await?;
    // The id of a query's own view job is the sink's, known once the sink is in the catalog.
    let (mut upstream, depends_on, columns) = match (&stmt.input, &query) {
        (SinkInput::Object(name), _) => {
            let (view, upstream) = named_view(db, name)?;
            crate::roles::check_context_reads(db, ctx, [view.id])?;
            (upstream, vec![view.id], vec![])
        }
        (SinkInput::Query { .. }, Some((plan, schema))) => (
            Upstream { id: ObjectId::default(), schema: schema.clone(), append_only: plan.root().append_only },
            plan.inputs().iter().map(|i| i.id).collect(),
            catalog_columns(schema)?,
        ),
        (SinkInput::Query { .. }, None) => return Err(WeirError::internal("a sink query was not planned")),
    };
    let (sink, max_pending) = connect(stmt, &upstream).await?;
    let object = db.write_catalog().create(NewObject {
        kind: ObjectKind::Sink,
        schema: schema_name,
        name,
        owner: owner.to_string(),
        definition: Statement::CreateSink(Box::new(stmt.clone())).to_string(),
        columns,
        primary_key: vec![],
        depends_on,
    })?;
    let started = match query {
        Some((plan, schema)) => {
            upstream.id = object.id;
            crate::streaming::start_view(db, object.id, &plan, schema, crate::streaming::Contents::UntilSubscribed)
        }
        None => Ok(()),
    };
    if let Err(e) = started.and_then(|()| run(db, object.id, stmt, &upstream, sink, max_pending)) {
        db.coordinator.drop_view(object.id);
        let _ = db.write_catalog().drop_object(object.id, false);
        return Err(e);
    }
    Ok(())
}

/// Starts a sink from its stored definition (server start), and its query's view job if it has
/// one. A target that cannot be reached now does not stop the server: the sink is retried in
/// the background (status `retrying`); any other problem shows it as failed with the reason.
pub async fn start_sink(db: &Arc<Database>, ctx: &SessionContext, object: &CatalogObject) -> Result<()> {
    let stmt = match weir_sql::parse(&object.definition)?.pop().map(|p| p.statement) {
        Some(Statement::CreateSink(s)) => s,
        _ => return Err(WeirError::internal(format!("stored definition of sink {} is not CREATE SINK", object.name))),
    };
    let upstream = match (&stmt.input, plan_query(db, ctx, &stmt).await?) {
        (SinkInput::Object(name), _) => named_view(db, name).map(|(_, upstream)| upstream),
        (_, Some((plan, schema))) => {
            let append_only = plan.root().append_only;
            crate::streaming::start_view(db, object.id, &plan, schema.clone(), crate::streaming::Contents::UntilSubscribed)?;
            Ok(Upstream { id: object.id, schema, append_only })
        }
        (_, None) => Err(WeirError::internal("a sink query was not planned")),
    };
    let error = match upstream {
        Ok(upstream) => match connect(&stmt, &upstream).await {
            Ok((sink, max_pending)) => return run(db, object.id, &stmt, &upstream, sink, max_pending),
            Err(e) if e.state == SqlState::UnableToConnect => {
                retry_in_background(db, object, stmt, upstream, e);
                return Ok(());
            }
            Err(e) => e,
        },
        Err(e) => e,
    };
    tracing::error!(sink = %object.name, error = %error, state = error.state.code(), "sink not started");
    let stats = new_stats(object.depends_on.first().copied().unwrap_or_default(), connector_name(&stmt));
    stats.set_status(format!("failed: {}", error.message));
    db.sinks.running.lock().unwrap_or_else(|p| p.into_inner()).insert(object.id, SinkRuntime { stats, tasks: vec![] });
    Ok(())
}

/// A sink whose target could not be reached at server start: connects again with backoff (up
/// to 30 s) until it can, then runs.
fn retry_in_background(db: &Arc<Database>, object: &CatalogObject, stmt: Box<CreateSink>, upstream: Upstream, error: WeirError) {
    tracing::warn!(sink = %object.name, error = %error, "sink target unreachable; retrying in the background");
    let stats = new_stats(upstream.id, connector_name(&stmt));
    stats.set_status(format!("retrying: {}", error.message));
    let (task_db, id, task_stats) = (db.clone(), object.id, stats.clone());
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            task_stats.retries.fetch_add(1, Ordering::Relaxed);
            match connect(&stmt, &upstream).await {
                Ok((sink, max_pending)) => {
                    if let Err(e) = run(&task_db, id, &stmt, &upstream, sink, max_pending) {
                        task_stats.set_status(format!("failed: {}", e.message));
                    }
                    return;
                }
                Err(e) if e.state == SqlState::UnableToConnect => task_stats.set_status(format!("retrying: {}", e.message)),
                Err(e) => {
                    task_stats.set_status(format!("failed: {}", e.message));
                    return;
                }
            }
        }
    });
    db.sinks.running.lock().unwrap_or_else(|p| p.into_inner()).insert(object.id, SinkRuntime { stats, tasks: vec![task] });
}

fn new_stats(view: ObjectId, connector: String) -> Arc<SinkStats> {
    Arc::new(SinkStats {
        view,
        connector,
        status: Mutex::new("starting".into()),
        rows_delivered: AtomicU64::new(0),
        batches: AtomicU64::new(0),
        epochs_delivered: AtomicU64::new(0),
        last_epoch: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        pending_rows: AtomicU64::new(0),
        pending_epochs: AtomicU64::new(0),
        oldest_pending_micros: AtomicU64::new(0),
    })
}

fn connector_name(stmt: &CreateSink) -> String {
    options_map(&stmt.with).get("connector").cloned().unwrap_or_default()
}

fn run(db: &Arc<Database>, id: ObjectId, stmt: &CreateSink, upstream: &Upstream, sink: Box<dyn Sink>, max_pending: usize) -> Result<()> {
    let (backfill, live) = db.coordinator.subscribe(upstream.id, id)?;
    let stats = new_stats(upstream.id, connector_name(stmt));
    stats.set_status("running");
    let permits = Arc::new(Semaphore::new(max_pending));
    let (epochs_tx, epochs_rx) = mpsc::unbounded_channel();
    let receiver = tokio::spawn(receive(backfill, live, epochs_tx, permits.clone(), max_pending, stats.clone()));
    let deliverer = tokio::spawn(deliver(sink, epochs_rx, permits, stats.clone()));
    db.sinks.running.lock().unwrap_or_else(|p| p.into_inner()).insert(id, SinkRuntime { stats, tasks: vec![receiver, deliverer] });
    Ok(())
}

/// One epoch's changes, ready to write, and the queue room they hold.
struct PendingEpoch {
    epoch: u64,
    changes: Vec<RecordBatch>,
    rows: usize,
    permits: u32,
    /// When its barrier arrived (Unix µs).
    complete_micros: u64,
}

/// A change batch as sinks take it: the view's columns, then `weir_diff`.
fn with_diffs(changes: &crate::dataflow::Changes) -> std::result::Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let mut fields: Vec<Field> = changes.rows.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
    let mut columns: Vec<ArrayRef> = changes.rows.columns().to_vec();
    columns.push(Arc::new(changes.diffs.clone()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

async fn receive(
    mut backfill: mpsc::Receiver<Message>,
    mut live: mpsc::Receiver<Message>,
    epochs: mpsc::UnboundedSender<PendingEpoch>,
    permits: Arc<Semaphore>,
    max_pending: usize,
    stats: Arc<SinkStats>,
) {
    fn take(m: Message, changes: &mut Vec<RecordBatch>, rows: &mut usize) {
        if let Message::Data(c) = m {
            match with_diffs(&c) {
                Ok(batch) => {
                    *rows += batch.num_rows();
                    changes.push(batch);
                }
                Err(e) => tracing::error!(error = %e, "sink: a change batch could not be taken"),
            }
        }
    }
    let mut changes = Vec::new();
    let mut rows = 0usize;
    // The view's contents when the sink joined belong to the first epoch it receives.
    while let Some(m) = backfill.recv().await {
        take(m, &mut changes, &mut rows);
    }
    while let Some(m) = live.recv().await {
        let Message::Barrier(epoch) = m else {
            take(m, &mut changes, &mut rows);
            continue;
        };
        // An epoch larger than the whole queue takes all of it.
        let wanted = u32::try_from(rows.min(max_pending)).unwrap_or(u32::MAX);
        let Ok(held) = permits.clone().acquire_many_owned(wanted).await else { return };
        held.forget();
        stats.pending_rows.fetch_add(rows as u64, Ordering::Relaxed);
        stats.pending_epochs.fetch_add(1, Ordering::Relaxed);
        let pending = PendingEpoch { epoch, changes: std::mem::take(&mut changes), rows, permits: wanted, complete_micros: now_micros() };
        rows = 0;
        if epochs.send(pending).is_err() {
            return;
        }
    }
}

async fn deliver(mut sink: Box<dyn Sink>, mut epochs: mpsc::UnboundedReceiver<PendingEpoch>, permits: Arc<Semaphore>, stats: Arc<SinkStats>) {
    use tracing::Instrument;
    while let Some(pending) = epochs.recv().await {
        stats.oldest_pending_micros.store(pending.complete_micros, Ordering::Relaxed);
        let span = tracing::info_span!("sink.deliver", connector = %stats.connector, epoch = pending.epoch, rows = pending.rows);
        if !deliver_epoch(sink.as_mut(), &pending, &stats).instrument(span).await {
            // The receiver stops and lets go of the view, which must not wait for a sink that
            // will never write again.
            permits.close();
            return;
        }
        permits.add_permits(pending.permits as usize);
        stats.pending_rows.fetch_sub(pending.rows as u64, Ordering::Relaxed);
        stats.pending_epochs.fetch_sub(1, Ordering::Relaxed);
        if epochs.is_empty() {
            stats.oldest_pending_micros.store(0, Ordering::Relaxed);
        }
        stats.rows_delivered.fetch_add(pending.rows as u64, Ordering::Relaxed);
        stats.epochs_delivered.fetch_add(1, Ordering::Relaxed);
        stats.last_epoch.store(pending.epoch, Ordering::Relaxed);
        stats.set_status("running");
    }
}

/// Writes one epoch, retrying while the target is unavailable; false when the sink failed for
/// good.
async fn deliver_epoch(sink: &mut dyn Sink, pending: &PendingEpoch, stats: &SinkStats) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        match sink.write_epoch(pending.epoch, &pending.changes).await {
            Ok(batches) => {
                stats.batches.fetch_add(batches, Ordering::Relaxed);
                return true;
            }
            Err(e @ ConnectorError::Unavailable { .. }) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                stats.set_status(format!("retrying: {e}"));
                tracing::warn!(epoch = pending.epoch, error = %e, "sink: delivery failed, retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(epoch = pending.epoch, error = %e, "sink failed");
                stats.set_status(format!("failed: {e}"));
                return false;
            }
        }
    }
}
