//! `--otlp-endpoint`: spans reach a real OTLP/gRPC receiver (the collector's protocol, served
//! here with the generated OpenTelemetry service): statements with their protocol, kind and
//! SQLSTATE, checkpoints, under the service name `weir`, and no statement text, so no password.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use crate::common::Server;

#[derive(Default, Clone)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(&self, request: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    })
}

/// A span as (service name, span name, attributes, status code).
type Received = (Option<String>, String, Vec<KeyValue>, i32);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_checkpoints_are_exported_as_spans() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collector = Collector::default();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream_of(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--otlp-endpoint", &endpoint, "--checkpoint-interval-ms", "200"]);
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE tr (x INT); CREATE MATERIALIZED VIEW tr_mv AS SELECT count(*) AS n FROM tr").await.unwrap();
    c.execute("INSERT INTO tr VALUES ($1)", &[&1i32]).await.unwrap();
    c.query_one("SELECT n FROM tr_mv", &[]).await.unwrap();
    let err = c.batch_execute("SELECT * FROM no_such_table").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    c.batch_execute("CREATE USER tr_user WITH PASSWORD 'tr-secret-pw'").await.unwrap();
    // Until a checkpoint was written (every 200 ms).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !server.http_get("/metrics").1.contains("weir_checkpoints_written_total 1") {
        assert!(std::time::Instant::now() < deadline, "no checkpoint was written");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(c);
    // Shutdown exports what the batch processor still holds.
    let status = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(status.success());
    serving.abort();

    let requests = collector.requests.lock().unwrap().clone();
    let spans: Vec<Received> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            let service = rs.resource.as_ref().and_then(|r| text(&r.attributes, "service.name"));
            rs.scope_spans.iter().flat_map(move |ss| {
                let service = service.clone();
                ss.spans.iter().map(move |s| (service.clone(), s.name.clone(), s.attributes.clone(), s.status.as_ref().map_or(0, |st| st.code)))
            })
        })
        .collect();
    assert!(!spans.is_empty(), "no span was exported");
    assert!(spans.iter().all(|(service, ..)| service.as_deref() == Some("weir")), "service names: {:?}", spans.iter().map(|s| &s.0).collect::<Vec<_>>());
    let statement = |kind: &str| {
        spans.iter().find(|(_, name, attributes, _)| name == "statement" && text(attributes, "kind").as_deref() == Some(kind)).unwrap_or_else(|| {
            panic!("no statement span of kind {kind}: {:?}", spans.iter().map(|(_, n, a, _)| (n, text(a, "kind"))).collect::<Vec<_>>())
        })
    };
    let insert = statement("INSERT");
    assert_eq!(text(&insert.2, "protocol").as_deref(), Some("pgwire"));
    assert_eq!(text(&insert.2, "user").as_deref(), Some("weir"));
    // The failed SELECT carries its SQLSTATE and an error status (2 = STATUS_CODE_ERROR).
    let failed = spans
        .iter()
        .find(|(_, name, attributes, _)| name == "statement" && text(attributes, "sqlstate").as_deref() == Some("42P01"))
        .expect("the failed statement's span");
    assert_eq!(failed.3, 2);
    assert!(spans.iter().any(|(_, name, attributes, _)| name == "checkpoint" && text(attributes, "epoch").is_some()), "no checkpoint span");
    // Nothing exported carries the password.
    statement("CREATE ROLE");
    let everything = format!("{requests:?}");
    assert!(!everything.contains("tr-secret-pw"), "a span carries the password");
}

/// The accepted connections of `listener`, as tonic's `serve_with_incoming` takes them.
fn tokio_stream_of(listener: tokio::net::TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(socket, _)| socket);
        Some((accepted, listener))
    })
}
