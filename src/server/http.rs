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
    let body = db.metrics.render(&[
        ("weir_statements_running", "Statements executing now.", running as f64),
        ("weir_tables", "User tables in the catalog.", tables as f64),
        ("weir_wal_bytes", "Bytes in the table write-ahead log.", wal as f64),
    ]);
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
