//! # weir-connectors: where data enters and leaves Weir
//!
//! A [`Source`] turns an external stream (Kafka, NATS JetStream, files, the built-in datagen and
//! Nexmark generators) into Arrow batches of events, partition by partition; a [`Sink`] delivers
//! a view's changes to an external system (ClickHouse, QuestDB).
//!
//! * [`source`] - the [`Source`] trait, [`SourceEvent`] and [`SourcePosition`] (what checkpoints
//!   record and replays stop at), and [`SourceOptions`].
//! * [`datagen`] - `connector = 'datagen'`: rows from per-column rules (sequences, random values,
//!   event times), deterministic per partition.
//! * [`nexmark`] - `connector = 'nexmark'`: the Nexmark benchmark's bids, auctions and people.
//! * [`file`] - `connector = 'file'`: Parquet, CSV and JSON files, local or in an object store,
//!   one partition per file, read in name order.
//! * [`kafka`] - `connector = 'kafka'`: a topic's partitions read side by side (librdkafka),
//!   offsets owned by Weir and committed to the consumer group after each epoch.
//! * [`nats`] - `connector = 'nats'`: a JetStream stream through a durable pull consumer, acked
//!   after each epoch.
//! * [`sink`] - the [`Sink`] trait (delivery is per epoch so that a re-sent epoch is idempotent),
//!   and the append-only and upsert shapes of an epoch's changes that every sink writes.
//! * [`clickhouse`] - `connector = 'clickhouse'`: a view's changes into a ClickHouse table, in
//!   inserts of `sink.batch.rows`, marked with the epoch so that none is written twice;
//!   `clickhouse_table` checks the table against the view (types, engine, sort key) or creates it.
//! * [`questdb`] - `connector = 'questdb'`: a view's changes as InfluxDB line protocol rows
//!   (the `questdb-rs` client, HTTP or TCP), requests of `sink.batch.rows` resumed where they
//!   failed.
//! * [`error`] - [`ConnectorError`].
//! * Internal: `kafka_queue` (the Kafka source's messages taken from librdkafka in batches),
//!   `partitions` (the generators' per-partition offsets, bounds and round-robin),
//!   `rate` (pacing to rows per second), `convert` (generated arrays to the declared column
//!   types), `options` (typed option values with errors naming the option) and `records`
//!   (decoding a chunk of records, falling back to one at a time to single out bad ones).
//! * [`json`] - JSON messages and lines to Arrow ([`JsonDecoder`]), shared by the file, Kafka
//!   and NATS sources and the decoding benchmark.
//! * [`avro`] - Avro messages to Arrow ([`AvroDecoder`]), with [`registry`] (a Confluent Schema
//!   Registry client) for the wire format's schema ids.
//! * [`protobuf`] - Protobuf messages to Arrow ([`ProtobufDecoder`]: prost-reflect dynamic
//!   messages, schemas compiled from `.proto` text by protox).
//! * [`payload`] - a message connector's `FORMAT PLAIN ENCODE ...` clause as one
//!   [`PayloadDecoder`], and the columns a format gives a source declared without any.
//!
//! [`create_source`] builds a source from its `connector` option; [`default_schema`] gives the
//! columns of a source declared without any.

pub mod avro;
pub mod clickhouse;
mod clickhouse_table;
pub mod datagen;
pub mod error;
pub mod file;
pub mod json;
pub mod kafka;
pub mod nats;
pub mod nexmark;
pub mod payload;
pub mod protobuf;
pub mod questdb;
pub mod registry;
pub mod sink;
pub mod source;

mod convert;
mod kafka_queue;
mod options;
mod records;
mod partitions;
mod rate;

use datafusion::arrow::datatypes::SchemaRef;

pub use datagen::DatagenSource;
pub use error::ConnectorError;
pub use file::FileSource;
pub use avro::AvroDecoder;
pub use json::JsonDecoder;
pub use payload::PayloadDecoder;
pub use protobuf::ProtobufDecoder;
pub use kafka::KafkaSource;
pub use nats::NatsSource;
pub use nexmark::{NexmarkSource, NexmarkTable, nexmark_default_schema};
pub use sink::Sink;
pub use source::{
    ConnectorStatus, MetadataColumn, PartitionProgress, Source, SourceEvent, SourceFormat, SourceOptions, SourcePosition,
};

/// The connectors `CREATE SOURCE` accepts.
pub const SOURCE_CONNECTORS: &[&str] = &["datagen", "nexmark", "file", "kafka", "nats"];

/// What `CREATE SOURCE` says about a source, as its connector needs it.
pub struct SourceSpec<'a> {
    /// The source's name (Kafka's default consumer group is `weir-<name>`).
    pub name: &'a str,
    /// The `connector` option (any case).
    pub connector: &'a str,
    /// The declared columns, then the `INCLUDE`d ones.
    pub schema: SchemaRef,
    pub options: &'a SourceOptions,
    /// The `FORMAT ... ENCODE ...` clause, which only connectors that decode messages or files
    /// take.
    pub format: Option<&'a SourceFormat>,
    /// The columns of `schema` that `INCLUDE` fills from message metadata (Kafka only).
    pub metadata: &'a [(usize, MetadataColumn)],
    /// When the source was created: anchors generated event time, so that a source re-created
    /// after a restart produces the same events.
    pub created_at_micros: i64,
}

/// Builds the source its `connector` names.
pub async fn create_source(spec: SourceSpec<'_>) -> Result<Box<dyn Source>, ConnectorError> {
    let SourceSpec { name, connector, schema, options, format, metadata, created_at_micros } = spec;
    let connector = connector.trim().to_ascii_lowercase();
    if !metadata.is_empty() && connector != "kafka" {
        return Err(ConnectorError::InvalidOption {
            option: "include".into(),
            reason: format!("connector '{connector}' has no message metadata to INCLUDE (only 'kafka' does)"),
        });
    }
    if format.is_some() && matches!(connector.as_str(), "datagen" | "nexmark") {
        return Err(ConnectorError::InvalidOption {
            option: "format".into(),
            reason: format!("connector '{connector}' generates rows and takes no FORMAT ... ENCODE clause"),
        });
    }
    match connector.as_str() {
        "datagen" => Ok(Box::new(DatagenSource::new(schema, options, created_at_micros)?)),
        "nexmark" => Ok(Box::new(NexmarkSource::new(schema, options, created_at_micros)?)),
        "file" => Ok(Box::new(FileSource::new(schema, options, format).await?)),
        "kafka" => Ok(Box::new(KafkaSource::new(name, schema, options, format, metadata).await?)),
        "nats" => Ok(Box::new(NatsSource::new(name, schema, options, format).await?)),
        _ => Err(ConnectorError::InvalidOption {
            option: "connector".into(),
            reason: format!("unknown connector '{connector}' (supported: {})", SOURCE_CONNECTORS.join(", ")),
        }),
    }
}

/// The columns a connector provides when `CREATE SOURCE` declares none: a Nexmark table's
/// (given a valid `nexmark.table.type`); `None` otherwise.
pub fn default_schema(connector: &str, options: &SourceOptions) -> Option<SchemaRef> {
    match connector.trim().to_ascii_lowercase().as_str() {
        "nexmark" => {
            let table: NexmarkTable = options.get("nexmark.table.type")?.parse().ok()?;
            Some(nexmark_default_schema(table))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> SourceOptions {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn spec<'a>(connector: &'a str, schema: SchemaRef, options: &'a SourceOptions) -> SourceSpec<'a> {
        SourceSpec { name: "s", connector, schema, options, format: None, metadata: &[], created_at_micros: 0 }
    }

    #[tokio::test]
    async fn connectors_are_chosen_by_name() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let source = create_source(spec("DataGen", schema.clone(), &opts(&[("connector", "DataGen")]))).await.unwrap();
        assert_eq!(source.partitions(), 1);
        match create_source(spec("pulsar", schema.clone(), &SourceOptions::new())).await {
            Err(ConnectorError::InvalidOption { option, reason }) => {
                assert_eq!(option, "connector");
                assert!(reason.contains("datagen, nexmark, file, kafka, nats"), "{reason}");
            }
            other => panic!("expected an error, got {:?}", other.map(|s| s.schema())),
        }
    }

    #[tokio::test]
    async fn nexmark_has_a_default_schema() {
        let bid = default_schema("nexmark", &opts(&[("nexmark.table.type", "bid")])).unwrap();
        let names: Vec<&str> = bid.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["auction", "bidder", "price", "channel", "url", "date_time", "extra"]);
        assert_eq!(nexmark_default_schema(NexmarkTable::Person).fields().len(), 8);
        assert_eq!(nexmark_default_schema(NexmarkTable::Auction).fields().len(), 10);
        let source = create_source(spec("nexmark", bid.clone(), &opts(&[("nexmark.table.type", "Bid")]))).await.unwrap();
        assert_eq!(source.schema(), bid);
        assert!(default_schema("nexmark", &SourceOptions::new()).is_none());
        assert!(default_schema("datagen", &SourceOptions::new()).is_none());
    }
}
