//! Logs and traces: what `weir serve` writes to stderr (human or JSON lines, for Loki) and,
//! with `--otlp-endpoint`, the spans it exports over OTLP/gRPC (for Tempo, Jaeger, an
//! OpenTelemetry Collector).
//!
//! Spans: `statement` (one per statement over the Postgres wire or Flight SQL: protocol, kind,
//! user, and the SQLSTATE when it failed), `checkpoint` (epoch, bytes) and `sink.deliver` (one
//! epoch's delivery: sink, rows). Statement text is never an attribute: it can carry passwords
//! (`CREATE USER ... PASSWORD`, connector options).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Keeps the trace exporter running; [`Telemetry::shutdown`] sends the spans not yet exported.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: logs filtered by `WEIR_LOG` (default `info`), and spans at
    /// info and above exported to `otlp_endpoint` when set. Must run inside the Tokio runtime
    /// (the gRPC channel lives on it).
    pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry, String> {
        let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = match format {
            LogFormat::Human => logs.boxed(),
            LogFormat::Json => logs.json().boxed(),
        }
        .with_filter(filter);
        let traces = otlp_endpoint.map(tracer_provider).transpose()?;
        let spans = traces.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("weir"))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
        });
        tracing_subscriber::registry().with(logs).with(spans).try_init().map_err(|e| e.to_string())?;
        if let Some(endpoint) = otlp_endpoint {
            tracing::info!(%endpoint, "exporting traces over OTLP");
        }
        Ok(Telemetry { traces })
    }

    /// Exports what is buffered (bounded by the exporter's timeout) and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "the last spans were not exported");
        }
    }
}

fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot export traces to {endpoint}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("weir").build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// The span of one client statement; [`failed`] marks it with the error's SQLSTATE.
pub fn statement_span(protocol: &'static str, kind: &'static str, user: &str) -> tracing::Span {
    tracing::info_span!("statement", protocol, kind, user, sqlstate = tracing::field::Empty, otel.status_code = tracing::field::Empty)
}

pub fn failed(span: &tracing::Span, sqlstate: &str) {
    span.record("sqlstate", sqlstate);
    span.record("otel.status_code", "ERROR");
}
