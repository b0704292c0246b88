//! The HTTP endpoint: `/health` (the process is up), `/ready` (catalog loaded and storage
//! recovered), `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::database::Database;

pub fn router(db: Arc<Database>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(db)
}

async fn ready(State(db): State<Arc<Database>>) -> impl IntoResponse {
    if db.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(db): State<Arc<Database>>) -> impl IntoResponse {
    let tables = db.read_catalog().objects_of_kind(weir_catalog::ObjectKind::Table).count();
    let wal = db.storage.wal_bytes();
    let running = db.running_statements.load(std::sync::atomic::Ordering::SeqCst);
    let lag = db.coordinator.freshness_lag_ms().unwrap_or(0);
    let mut body = db.metrics.render(&[
        ("weir_statements_running", "Statements executing now.", running as f64),
        ("weir_tables", "User tables in the catalog.", tables as f64),
        ("weir_wal_bytes", "Bytes in the table write-ahead log.", wal as f64),
        ("weir_freshness_lag_seconds", "How long ago the inputs reflected by what queries read were read.", lag as f64 / 1000.0),
    ]);
    body.push_str(&streaming_metrics(&db));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    db: Arc<Database>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(db)).with_graceful_shutdown(shutdown).await
}

/// Per source and per view figures (the numbers of `weir_catalog.sources` and
/// `weir_catalog.materialized_views`).
fn streaming_metrics(db: &Database) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    use weir_catalog::ObjectKind;

    use crate::metrics::{Family, render_families};
    let catalog = db.read_catalog();
    let family = |name, help, kind, labels, rows| Family { name, help, kind, labels, rows };
    let now_micros = chrono::Utc::now().timestamp_micros();
    // How far event time lags the wall clock (None before the first watermark and after a
    // bounded source ended).
    let delay = |watermark: i64| {
        (watermark != crate::dataflow::EventTime::MIN && watermark != crate::dataflow::WATERMARK_MAX)
            .then(|| (now_micros - watermark) as f64 / 1e6)
    };
    let (mut read, mut late, mut errors, mut watermark) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut watermark_delay = Vec::new();
    let (mut partition_rows, mut partition_bytes, mut lag, mut offset) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for o in catalog.objects_of_kind(ObjectKind::Source) {
        let Some(s) = db.coordinator.source_stats(o.id) else { continue };
        let name = || vec![o.name.clone()];
        read.push((name(), s.rows.load(Relaxed) as f64));
        late.push((name(), s.late_rows.load(Relaxed) as f64));
        errors.push((name(), s.errors.load(Relaxed) as f64));
        let w = s.watermark.load(Relaxed);
        if let Some(d) = delay(w) {
            watermark.push((name(), w as f64 / 1e6));
            watermark_delay.push((name(), d));
        }
        let by_partition = |p: usize| vec![o.name.clone(), p.to_string()];
        for (p, stats) in s.partitions.lock().unwrap_or_else(|e| e.into_inner()).iter().enumerate() {
            partition_rows.push((by_partition(p), stats.rows as f64));
        }
        let progress = s.connector.as_ref().map(|c| c.partitions()).unwrap_or_default();
        for (p, progress) in progress.iter().enumerate() {
            partition_bytes.push((by_partition(p), progress.bytes as f64));
            if let Some(l) = progress.lag() {
                lag.push((by_partition(p), l as f64));
            }
            if let Some(o) = progress.next_offset {
                offset.push((by_partition(p), o as f64));
            }
        }
    }
    let (mut rows, mut state, mut epoch, mut view_delay) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let last_barrier = db.coordinator.last_barrier();
    let mut behind = Vec::new();
    for o in catalog.objects_of_kind(ObjectKind::MaterializedView) {
        if let Some(s) = db.coordinator.view_stats(o.id) {
            rows.push((vec![o.name.clone()], s.rows.load(Relaxed) as f64));
            state.push((vec![o.name.clone()], s.state_bytes.load(Relaxed) as f64));
            let committed = s.last_epoch.load(Relaxed);
            epoch.push((vec![o.name.clone()], committed as f64));
            if committed > 0 {
                behind.push((vec![o.name.clone()], last_barrier.saturating_sub(committed) as f64));
            }
            if let Some(d) = delay(s.watermark.load(Relaxed)) {
                view_delay.push((vec![o.name.clone()], d));
            }
        }
    }
    let (mut delivered, mut retries, mut pending, mut sink_lag, mut sink_epoch) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, s) in db.sinks.stats() {
        let Some(o) = catalog.get(id) else { continue };
        let name = || vec![o.name.clone()];
        delivered.push((name(), s.rows_delivered.load(Relaxed) as f64));
        retries.push((name(), s.retries.load(Relaxed) as f64));
        pending.push((name(), s.pending_rows.load(Relaxed) as f64));
        sink_lag.push((name(), s.lag_ms() as f64 / 1000.0));
        sink_epoch.push((name(), s.last_epoch.load(Relaxed) as f64));
    }
    let sink = &["sink"][..];
    let source = &["source"][..];
    let partition = &["source", "partition"][..];
    let view = &["view"][..];
    let checkpoints = db.coordinator.checkpointer().map(|c| c.records()).unwrap_or_default();
    let newest = checkpoints.last();
    let checkpoint_figure = |f: &dyn Fn(&crate::checkpoint::collector::CheckpointRecord) -> f64| {
        newest.map(|r| vec![(Vec::new(), f(r))]).unwrap_or_default()
    };
    let no_labels = &[][..];
    render_families(&[
        family("weir_checkpoint_epoch", "The epoch of the newest checkpoint written.", "gauge", no_labels, checkpoint_figure(&|r| r.epoch as f64)),
        family("weir_checkpoint_duration_seconds", "How long the newest checkpoint took, from its barrier to its manifest.", "gauge", no_labels, checkpoint_figure(&|r| r.duration_ms as f64 / 1000.0)),
        family("weir_checkpoint_bytes", "Bytes the newest checkpoint wrote.", "gauge", no_labels, checkpoint_figure(&|r| r.bytes_written as f64)),
        family(
            "weir_checkpoints_written_total",
            "Checkpoints written since the server started (the newest 100 are in weir_catalog.checkpoints).",
            "counter",
            no_labels,
            db.coordinator.checkpointer().map(|c| vec![(Vec::new(), c.written_total.load(Relaxed) as f64)]).unwrap_or_default(),
        ),
        family("weir_source_rows_read_total", "Rows a source read.", "counter", source, read),
        family("weir_source_late_rows_total", "Rows a source dropped as late.", "counter", source, late),
        family("weir_source_errors_total", "Records a source skipped because they did not decode, and read failures.", "counter", source, errors),
        family("weir_source_watermark_seconds", "A source's watermark (Unix seconds).", "gauge", source, watermark),
        family("weir_source_watermark_delay_seconds", "Wall clock minus a source's watermark: how far behind event time its views can close windows.", "gauge", source, watermark_delay),
        family("weir_source_partition_rows_read_total", "Rows read from one partition of a source.", "counter", partition, partition_rows),
        family("weir_source_partition_bytes_read_total", "Payload bytes read from one partition (Kafka, NATS).", "counter", partition, partition_bytes),
        family("weir_source_partition_lag_messages", "Messages behind the partition's high watermark (Kafka, NATS).", "gauge", partition, lag),
        family("weir_source_partition_offset", "The next offset (or NATS stream sequence) a partition is read from (Kafka, NATS).", "gauge", partition, offset),
        family("weir_view_rows", "Rows in a materialized view.", "gauge", view, rows),
        family("weir_view_state_bytes", "Operator and contents bytes of a view.", "gauge", view, state),
        family("weir_view_last_epoch", "The last epoch a view committed.", "gauge", view, epoch),
        family("weir_view_epochs_behind", "Epoch barriers injected that a view has not committed yet (each is --barrier-interval-ms): which view holds back freshness.", "gauge", view, behind),
        family("weir_view_watermark_delay_seconds", "Wall clock minus a view's watermark (how stale its newest closed window is).", "gauge", view, view_delay),
        family("weir_sink_rows_delivered_total", "Rows a sink delivered to its target.", "counter", sink, delivered),
        family("weir_sink_retries_total", "Deliveries a sink retried after its target failed.", "counter", sink, retries),
        family("weir_sink_pending_rows", "Rows a sink received and has not delivered yet.", "gauge", sink, pending),
        family("weir_sink_lag_seconds", "How long the oldest epoch a sink has not delivered has waited (0: up to date).", "gauge", sink, sink_lag),
        family("weir_sink_last_epoch", "The last epoch a sink delivered.", "gauge", sink, sink_epoch),
    ])
}
