//! # weir-connectors: where data enters and leaves Weir
//!
//! A [`Source`] turns an external stream (Kafka, NATS JetStream, files, the built-in datagen and
//! Nexmark generators) into Arrow batches of events; a [`Sink`] delivers a view's changes to an
//! external system (ClickHouse, QuestDB). This crate holds the traits and, as the streaming
//! issues land, one module per connector plus `formats` (JSON, later Avro and Protobuf).
//!
//! * [`source`] - the [`Source`] trait and [`SourcePosition`], what a checkpoint records.
//! * [`sink`] - the [`Sink`] trait; delivery is per epoch so that a re-sent epoch is idempotent.
//! * [`error`] - [`ConnectorError`].

pub mod error;
pub mod sink;
pub mod source;

pub use error::ConnectorError;
pub use sink::Sink;
pub use source::{Source, SourcePosition};
