//! Integration tests: a real `weir serve` process driven by real clients. One test binary (so
//! DataFusion is linked once), one module per area.

mod clickhouse;
mod formats;
mod auth;
mod chat;
mod common;
mod errors;
mod files;
mod flight;
mod fuzz;
mod kafka;
mod nats;
mod oracle;
mod protocol;
mod questdb;
mod recovery;
mod restart;
mod slt;
mod streaming;
mod subscribe;
mod traces;
