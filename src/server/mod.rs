//! The network servers: Postgres wire ([`pgwire`]), Arrow Flight SQL ([`flight`], with
//! [`flight_metadata`]), HTTP ([`http`]), TLS for the first two ([`tls`]), and what they share.
//!
//! [`run`] binds every listener, prints one ready line on stdout (tests and scripts wait for
//! it), serves until SIGINT/SIGTERM, then stops accepting, lets running statements finish for
//! the grace period, and returns. Everything a statement acknowledged is already durable (table
//! commits fsync before they answer), so there is nothing else to flush on the way out.

pub mod cancel;
pub mod flight;
pub mod flight_metadata;
pub mod http;
pub mod numeric;
pub mod pgwire;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::database::Database;
use crate::error::{Result, WeirError};

/// The addresses the servers actually listen on (after binding port 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub pg: SocketAddr,
    pub http: SocketAddr,
    pub flight: SocketAddr,
}

/// Opens the database, serves until `shutdown` fires, then drains connections.
pub async fn run(config: Arc<Config>, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
    run_with_setup(config, &[], shutdown).await
}

/// [`run`], first executing `setup` scripts (SQL text) as the superuser before accepting
/// connections (`weir demo` creates its sources and views this way).
pub async fn run_with_setup(
    config: Arc<Config>,
    setup: &[&str],
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let started = std::time::Instant::now();
    let db = Database::open(config.clone()).await?;
    for script in setup {
        let mut session = crate::session::Session::new(db.clone(), 0, config.superuser.clone());
        for statement in weir_sql::parse(script)? {
            session.execute(&statement).await.map_err(|e| {
                WeirError::new(e.state, format!("setup statement failed: {}: {}", statement.text, e.message))
            })?;
        }
    }
    let tls = tls::identity(&config)?;
    let pg_tls = tls.as_ref().map(tls::pg_acceptor).transpose()?;
    let flight_tls = tls.as_ref().map(tls::flight_config);
    let pg_listener = bind(&config.pg_addr, "Postgres").await?;
    let http_listener = bind(&config.http_addr, "HTTP").await?;
    let flight_listener = bind(&config.flight_addr, "Flight SQL").await?;
    let addrs = BoundAddrs {
        pg: pg_listener.local_addr()?,
        http: http_listener.local_addr()?,
        flight: flight_listener.local_addr()?,
    };
    tracing::info!(
        pg = %addrs.pg,
        http = %addrs.http,
        flight = %addrs.flight,
        data_dir = %config.data_dir.display(),
        tls = tls.is_some(),
        auth = ?config.auth_method(),
        startup_ms = started.elapsed().as_millis() as u64,
        "weir is ready"
    );
    // The one line on stdout: the contract with scripts and tests that start the server.
    println!("weir ready pg={} http={} flight={}", addrs.pg, addrs.http, addrs.flight);

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(http::serve(http_listener, db.clone(), async move {
        let _ = http_stop.wait_for(|s| *s).await;
    }));

    let mut flight_stop = stop_rx.clone();
    let flight = tokio::spawn(flight::serve(flight_listener, db.clone(), flight_tls, async move {
        let _ = flight_stop.wait_for(|s| *s).await;
    }));

    let handlers = Arc::new(pgwire::WeirPgHandlers::new(db.clone()));
    let mut connections = JoinSet::new();
    let mut stop = stop_rx.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = pg_listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    let db = db.clone();
                    let tls = pg_tls.clone();
                    connections.spawn(async move {
                        use futures::FutureExt;
                        // pgwire's decoder panics on some malformed messages (a length shorter
                        // than the fields it reads): that ends this connection only, as a
                        // protocol error, not with a panic report.
                        let served = std::panic::AssertUnwindSafe(::pgwire::tokio::process_socket(socket, tls, handlers)).catch_unwind().await;
                        let error = match served {
                            Ok(Ok(())) => return,
                            Ok(Err(e)) => e.to_string(),
                            Err(panic) => format!("malformed message ({})", panic_message(panic.as_ref())),
                        };
                        // A malformed or truncated message ends this connection only.
                        db.metrics.connections_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(%peer, %error, "connection closed after a protocol error");
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(pg_listener);
    let open = connections.len();
    tracing::info!(open_connections = open, "shutting down: no longer accepting connections");
    // Let running statements finish (up to the grace period); idle sessions are not waited for.
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let finished = tokio::time::timeout(grace, async {
        while db.running_statements.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!("grace period over: canceling the statements still running");
    }
    // Every acknowledged commit is already in the fsynced WAL: closing sessions loses nothing
    // but their open, uncommitted blocks, as in Postgres.
    connections.shutdown().await;
    // Flight streams that never end on their own (SUBSCRIBE) hold tonic's graceful shutdown
    // open: after the grace period they are cut, as Postgres connections are.
    let mut flight = flight;
    if tokio::time::timeout(Duration::from_secs(1), &mut flight).await.is_err() {
        flight.abort();
    }
    let _ = http.await;
    tracing::info!("weir stopped");
    Ok(())
}

async fn bind(addr: &str, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| WeirError::new(crate::error::SqlState::Io, format!("cannot listen for {what} on {addr}: {e}")))
}

/// The text a panic carried, when it was a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("panic")
}
