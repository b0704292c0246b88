//! # Weir: a SQL-first streaming database
//!
//! This crate is the server. Start reading at [`server::run`], which opens the [`database`] and
//! serves the Postgres wire protocol, Arrow Flight SQL and HTTP. A client's statement then
//! travels:
//!
//! ```text
//! server::pgwire,
//! server::flight  ── text ──►  weir_sql::parse  ──►  session::Session::execute
//!                                                     │  queries, DML: planned by DataFusion
//!                                                     │  DDL: weir_catalog + storage
//!                                                     ▼
//!                         database (DataFusion context, catalog, storage snapshots)
//!                                                     │  writes: signed row changes
//!                                                     ▼
//!                                    storage (in-memory tables + write-ahead log)
//!                                                     │  committed changes
//!                                                     ▼
//!             coordinator ── barriers ──► dataflow (sources/tables → view jobs → view versions)
//! ```
//!
//! Modules:
//! * [`auth`] - users' password verifiers (SCRAM-SHA-256), `--auth`, failed-login limits.
//! * [`config`] - `weir serve` flags, `weir.toml`, `WEIR_*` variables.
//! * [`server`] - listeners, graceful shutdown; [`server::pgwire`] (protocol glue),
//!   [`server::flight`] (Arrow Flight SQL, `docs/flight.md`),
//!   [`server::http`] (`/health`, `/ready`, `/metrics`), [`server::cancel`].
//! * [`roles`] - `CREATE / ALTER / DROP USER`, who is a superuser.
//! * [`session`] - one client session: statement dispatch, transactions, DDL, DML, COPY.
//! * [`settings`] - session settings for `SET`/`SHOW`.
//! * [`query_runtime`] - the threads ad-hoc queries execute on, apart from the dataflow's.
//! * [`database`] - the shared state and DataFusion context; how tables appear to DataFusion.
//! * [`storage`] - durable tables: [`storage::table`] rows, [`storage::wal`] the log.
//! * [`jsonb`] - `json`/`jsonb` columns' operators (`->`, `->>`, `?`) and functions.
//! * [`pg_compat`] - Postgres functions clients call (`version()`, `current_setting`, ...);
//!   [`pg_catalog`] - declared types, indexes and constraints patched into `pg_catalog`;
//!   [`pg_rewrite`] - rewrites that let DataFusion run what clients send.
//! * [`text_format`] - Postgres's text output of values; [`copy`]: COPY formats.
//! * [`error`] - [`error::WeirError`] and the mapping of every error to a SQLSTATE.
//! * [`metrics`] - counters for `/metrics`; [`telemetry`] - logs and OTLP trace export.
//! * [`generate`] - `weir generate-nexmark`: Nexmark bids as Parquet/CSV files (benchmarks).
//! * [`streaming`] - streaming DDL: sources and materialized views from statement to catalog to
//!   running dataflow; [`coordinator`] - barriers, epochs, publishing view versions, FLUSH;
//!   [`dataflow`] - the incremental engine (readers, jobs, operators, view contents). See
//!   `docs/dataflow.md`. [`weir_catalog`] - the `weir_catalog` system tables (sources, views).
//! * [`sinks`] - `CREATE SINK`: a view's changes delivered epoch by epoch (`docs/sinks.md`).
//! * [`checkpoint`] - checkpoints of the dataflow at barriers and recovery from them at start
//!   (`docs/checkpoints.md`): what readers, tables and view jobs hand in, the collector that
//!   writes it over `object_store`, and loading the newest intact checkpoint.
//! * [`subscribe`] - `SUBSCRIBE`: a view's changes as a stream of rows for a client, never
//!   holding the view back.
//!
//! Sibling crates: `weir-sql` (statements), `weir-catalog` (objects and persistence),
//! `weir-connectors` (source and sink traits).

pub mod auth;
pub mod bench_decode;
pub mod checkpoint;
pub mod config;
pub mod coordinator;
pub mod copy;
pub mod dataflow;
pub mod database;
pub mod error;
pub mod generate;
pub mod jsonb;
pub mod metrics;
pub mod pg_catalog;
pub mod pg_compat;
pub mod pg_rewrite;
pub mod roles;
pub mod produce_chat;
pub mod query_runtime;
pub mod server;
pub mod session;
pub mod settings;
pub mod sinks;
pub mod storage;
pub mod streaming;
pub mod subscribe;
pub mod telemetry;
pub mod text_format;
pub mod weir_catalog;
