//! The `weir` command.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use weir::config::ServeArgs;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "weir", version, about = "Weir, a SQL-first streaming database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run the server with the built-in demo (Nexmark and chat analytics views) in a temporary
    /// data directory.
    Demo(ServeArgs),
    /// Write Nexmark bids to Parquet and CSV files (DIR/parquet/bids-00000.parquet, DIR/csv/...),
    /// the same files on every run, for file sources and the benchmarks.
    GenerateNexmark(GenerateArgs),
    /// Produce live-stream chat events to Kafka topics (`chat`, `viewer`) for the chat demo over
    /// Kafka (examples/chat_kafka.sql). Topics are created when missing.
    ProduceChat(ProduceChatArgs),
    /// Decode a topic's chat messages (from produce-chat) into Arrow on one core, timing only
    /// the decoding: the ceiling for the Kafka ingest benchmark. Prints one JSON line.
    BenchJsonDecode(BenchJsonDecodeArgs),
}

#[derive(clap::Args)]
struct BenchJsonDecodeArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "chat")]
    topic: String,
    /// Messages to decode (the topic's first ones).
    #[arg(long)]
    messages: u64,
    /// Messages per decoded chunk (the Kafka source's `kafka.batch.rows`).
    #[arg(long, default_value_t = 4096)]
    batch_rows: usize,
}

#[derive(clap::Args)]
struct ProduceChatArgs {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Chat messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Chat messages to produce (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// Live streams the messages belong to (1-8).
    #[arg(long, default_value_t = 5)]
    streams: usize,
    #[arg(long, default_value = "chat")]
    chat_topic: String,
    #[arg(long, default_value = "viewer")]
    viewer_topic: String,
    /// Partitions of the topics this creates.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// The directory to write into.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Nexmark events to generate (about 92% are bids).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Files per format.
    #[arg(long, default_value_t = 10)]
    files: usize,
    /// Event time of the first event.
    #[arg(long, default_value = "2026-01-01 00:00:00")]
    base_time: String,
    /// Formats to write: parquet, csv or both (comma-separated).
    #[arg(long, default_value = "parquet,csv")]
    formats: String,
}

/// A single-threaded runtime for the tool subcommands.
fn tool_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("weir: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn produce_chat(args: ProduceChatArgs) -> ExitCode {
    let producer = weir::produce_chat::ChatProducer {
        brokers: args.brokers,
        chat_topic: args.chat_topic,
        viewer_topic: args.viewer_topic,
        partitions: args.partitions,
        rate: args.rate,
        messages: args.messages,
        streams: args.streams,
        seed: args.seed,
    };
    let runtime = match tool_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(producer.run()) {
        Ok(produced) => {
            println!(
                "{} chat messages to {} and {} viewer counts to {} on {}",
                produced.chat, producer.chat_topic, produced.viewer, producer.viewer_topic, producer.brokers
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

fn bench_json_decode(args: BenchJsonDecodeArgs) -> ExitCode {
    match weir::bench_decode::decode_topic(&args.brokers, &args.topic, args.messages, args.batch_rows) {
        Ok(run) => {
            println!(
                "{{\"messages\": {}, \"bytes\": {}, \"decode_s\": {:.6}, \"per_s\": {:.0}}}",
                run.messages,
                run.bytes,
                run.seconds,
                run.messages as f64 / run.seconds.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

fn generate(args: GenerateArgs) -> ExitCode {
    let formats: Vec<String> = args.formats.split(',').map(|f| f.trim().to_ascii_lowercase()).collect();
    if let Some(bad) = formats.iter().find(|f| !matches!(f.as_str(), "parquet" | "csv")) {
        eprintln!("weir: unknown format '{bad}' (parquet, csv)");
        return ExitCode::from(2);
    }
    let job = weir::generate::BidFiles {
        dir: args.out,
        events: args.events,
        files: args.files,
        base_time: args.base_time,
        parquet: formats.iter().any(|f| f == "parquet"),
        csv: formats.iter().any(|f| f == "csv"),
    };
    let runtime = match tool_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(job.write()) {
        Ok(written) => {
            println!(
                "{} bids in {} Parquet and {} CSV files under {}",
                written.bids,
                written.parquet_files.len(),
                written.csv_files.len(),
                job.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

/// The demo's SQL, also readable in `examples/`.
const DEMO_SCRIPTS: [&str; 2] = [include_str!("../examples/nexmark.sql"), include_str!("../examples/chat.sql")];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, demo) = match cli.command {
        Command::Serve(args) => (args, false),
        Command::Demo(args) => (args, true),
        Command::GenerateNexmark(args) => return generate(args),
        Command::ProduceChat(args) => return produce_chat(args),
        Command::BenchJsonDecode(args) => return bench_json_decode(args),
    };
    let mut config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(2);
        }
    };
    // The demo keeps nothing: a fresh data directory per run, removed on exit.
    let demo_dir = if demo && args.data_dir.is_none() {
        match tempfile_dir() {
            Ok(d) => {
                config.data_dir = d.clone();
                Some(d)
            }
            Err(e) => {
                eprintln!("weir: cannot create a temporary data directory: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _inside = runtime.enter();
        match weir::telemetry::Telemetry::init(config.log_format, config.otlp_endpoint.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("weir: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let setup: &[&str] = if demo { &DEMO_SCRIPTS } else { &[] };
    if demo {
        eprintln!(
            "weir demo: Nexmark sources (bid, auction) with views nexmark_q5, nexmark_q7, nexmark_q7_max; \
             a chat source with views chat_per_min, chat_active_60s and chat_zscore (after 11 minutes).\n\
             Connect with: psql -h {} -p {} -U weir weir\n\
             or with Arrow Flight SQL (ADBC, pandas, polars): grpc://{}\n\
             Try: SELECT * FROM chat_per_min ORDER BY window_start DESC LIMIT 10;",
            config.pg_addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h),
            config.pg_addr.rsplit_once(':').map_or("5433", |(_, p)| p),
            config.flight_addr,
        );
    }
    let result = runtime.block_on(weir::server::run_with_setup(Arc::new(config), setup, shutdown_signal()));
    {
        let _inside = runtime.enter();
        telemetry.shutdown();
    }
    if let Some(dir) = demo_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "weir failed");
            eprintln!("weir: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

/// A new directory under the system temp dir for the demo's data.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("weir-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
