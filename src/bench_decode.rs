//! `weir bench-json-decode`: how fast one core decodes a topic's chat messages (what
//! `weir produce-chat` writes) into Arrow with the decoder the Kafka source uses, with Kafka
//! fetching and the engine left out. It is the ceiling the `kafka-json` workload of
//! `benchmarks/suite.py` compares the Kafka source's rows per CPU-second with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_connectors::JsonDecoder;

use crate::error::{Result, SqlState, WeirError};

/// What one decoding run measured.
#[derive(Debug, Clone, Copy)]
pub struct DecodeRun {
    pub messages: u64,
    pub bytes: u64,
    /// Wall-clock seconds of decoding alone, on one thread.
    pub seconds: f64,
}

/// The columns of `weir produce-chat`'s chat messages, as `examples/chat_kafka.sql` declares them.
fn chat_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("stream_id", DataType::Utf8, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]))
}

fn unavailable(message: String) -> WeirError {
    WeirError::new(SqlState::UnableToConnect, message)
}

/// Reads the topic's first `messages` messages into memory, then decodes them in chunks of
/// `batch_rows` (the Kafka source's `kafka.batch.rows` default), timing the decoding only.
pub fn decode_topic(brokers: &str, topic: &str, messages: u64, batch_rows: usize) -> Result<DecodeRun> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-bench-json-decode")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| unavailable(format!("cannot create a Kafka consumer: {e}")))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| unavailable(format!("cannot read the metadata of topic {topic} on {brokers}: {e}")))?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        return Err(WeirError::new(SqlState::InvalidParameterValue, format!("topic {topic} does not exist on {brokers}")));
    }
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p as i32, Offset::Beginning)
            .map_err(|e| WeirError::internal(format!("cannot assign partition {p}: {e}")))?;
    }
    consumer.assign(&assignment).map_err(|e| unavailable(format!("cannot assign topic {topic}: {e}")))?;

    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(messages as usize);
    let mut last_message = Instant::now();
    while (payloads.len() as u64) < messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                payloads.push(message.payload().unwrap_or_default().to_vec());
                last_message = Instant::now();
            }
            Some(Err(e)) => return Err(unavailable(format!("reading topic {topic} failed: {e}"))),
            None if last_message.elapsed() > Duration::from_secs(30) => {
                return Err(WeirError::new(
                    SqlState::InvalidParameterValue,
                    format!("topic {topic} holds {} messages, fewer than {messages}", payloads.len()),
                ));
            }
            None => {}
        }
    }

    let decoder = JsonDecoder::new(chat_schema());
    let bytes = payloads.iter().map(|p| p.len() as u64).sum();
    let started = Instant::now();
    let mut rows = 0u64;
    for chunk in payloads.chunks(batch_rows.max(1)) {
        let records: Vec<&[u8]> = chunk.iter().map(|p| p.as_slice()).collect();
        let batch = decoder.decode(&records).map_err(|e| WeirError::new(SqlState::InvalidParameterValue, e))?;
        rows += batch.num_rows() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(DecodeRun { messages: rows, bytes, seconds })
}
