//! `connector = 'kafka'`: a topic's partitions read side by side, decoded to Arrow.
//!
//! Weir, not the consumer group, decides where each partition is read from: the source assigns
//! itself every partition of the topic at explicit offsets (those of `scan.startup.mode`, or of
//! a seek) and keeps the next offset of each partition as its [`SourcePosition`]s, which is what
//! checkpoints store and replays stop at. The group (`group.id`, default `weir-<source>`) only
//! receives commits once the epochs covering the offsets commit ([`Source::commit`]), so that
//! `kafka-consumer-groups` and other tools show the lag; a restarted source never resumes from
//! the group's offsets (the checkpoint is the truth, see docs/kafka-source.md).
//!
//! A blocking thread per reader polls librdkafka, groups messages per partition and decodes
//! them a chunk at a time ([`crate::records::decode_lenient`]: a bad message is reported with
//! its offset and first bytes, the rest of the chunk still arrives), then hands batches to the
//! engine over a bounded channel (back-pressure: the thread stops polling when the engine is
//! behind). The same thread checks the topic's metadata every few seconds and starts reading
//! partitions added to the topic from their beginning, serves the group commits, and turns
//! librdkafka's statistics into per-partition high watermarks, lag and rates
//! ([`ConnectorStatus`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, Timestamp};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use crate::error::ConnectorError;
use crate::kafka_queue::{MessageQueue, Received};
use crate::payload::PayloadDecoder;
use crate::options::{Startup, check_known, invalid, parse_count, parse_validate};
use crate::records::{DecodedRecords, decode_lenient, payload_prefix};
use crate::source::{
    ConnectorStatus, MetadataColumn, Source, SourceEvent, SourceFormat, SourceOptions, SourcePosition,
};

/// How long `CREATE SOURCE` waits for the brokers to answer.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reading thread waits for metadata, watermarks and timestamp lookups.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the topic is checked for new partitions.
const PARTITION_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// A chunk of messages is decoded when it is this old even if not full (bounds the latency a
/// slow topic adds).
const CHUNK_MAX_AGE: Duration = Duration::from_millis(20);
/// While messages keep coming, the clock is read once per this many (see `poll_loop`).
const CLOCK_EVERY: usize = 256;

/// What a source and its reading threads share: the topic, the client settings and how to
/// turn messages into rows.
struct KafkaShared {
    topic: String,
    /// librdkafka settings: the user's `properties.*`, then Weir's own.
    client: ClientConfig,
    /// `bootstrap.servers`, for messages (never the other properties, which may hold secrets).
    brokers: String,
    startup: Startup,
    schema: SchemaRef,
    /// Decodes the payload columns (the declared columns that are not metadata).
    payload: PayloadDecoder,
    /// The runtime the source was created on: the reading thread fetches registry schemas
    /// with it.
    runtime: tokio::runtime::Handle,
    /// For each column of `schema`: where its values come from.
    layout: Vec<ColumnSource>,
    batch_rows: usize,
    /// The offsets the live reader started from, once resolved: replays start there too.
    started_at: Mutex<Option<Vec<i64>>>,
    status: Arc<ConnectorStatus>,
}

#[derive(Debug, Clone, Copy)]
enum ColumnSource {
    /// The payload column at this index of the JSON decoder's schema.
    Payload(usize),
    Metadata(MetadataColumn),
}

pub struct KafkaSource {
    shared: Arc<KafkaShared>,
    /// Whether this is the live reader (a replay does not report status or commit).
    live: bool,
    /// Explicit start offsets per partition (from a seek or a replay); a partition without
    /// one starts at the startup mode's offset.
    start: Vec<Option<i64>>,
    /// Per partition: the next offset to read, once known.
    positions: Vec<Option<i64>>,
    /// Per partition: where a replay stops.
    stops: Option<Vec<i64>>,
    ended: Vec<bool>,
    fetcher: Option<Fetcher>,
    partitions_at_create: usize,
    /// Sought to checkpointed positions: where this reader starts is not where the source
    /// started, so it must not become the replays' start (they then start at the startup
    /// mode's offsets).
    sought: bool,
}

/// The reading thread of one source, and how to stop it.
struct Fetcher {
    rx: mpsc::Receiver<Fetched>,
    commits: std::sync::mpsc::Sender<Vec<i64>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the reading thread sends.
enum Fetched {
    /// The offsets each partition starts from (all partitions known at start).
    Started(Vec<i64>),
    /// A partition added to the topic while reading, and where it starts.
    NewPartition { partition: usize, start: i64 },
    Rows { partition: usize, rows: RecordBatch, next_offset: i64 },
    Bad { partition: usize, offset: i64, reason: String, payload: Vec<u8> },
    /// A replay has read up to its stop offset in this partition.
    PartitionEnd { partition: usize },
}

impl KafkaSource {
    /// Checks the options (and, unless `connector.validate = 'false'`, that the brokers answer
    /// and the topic exists) and builds the source; reading starts on the first `next`.
    pub async fn new(
        source_name: &str,
        schema: SchemaRef,
        options: &SourceOptions,
        format: Option<&SourceFormat>,
        metadata: &[(usize, MetadataColumn)],
    ) -> Result<Self, ConnectorError> {
        check_known(options, "kafka", |key| {
            Ok(matches!(
                key,
                "topic"
                    | "group.id"
                    | "scan.startup.mode"
                    | "scan.startup.timestamp.millis"
                    | "connector.validate"
                    | "kafka.batch.rows"
            ) || key.starts_with("properties."))
        })?;
        let topic = options.get("topic").cloned().ok_or_else(|| invalid("topic", "connector 'kafka' needs a topic"))?;
        let brokers = options
            .get("properties.bootstrap.server")
            .or_else(|| options.get("properties.bootstrap.servers"))
            .cloned()
            .ok_or_else(|| invalid("properties.bootstrap.server", "connector 'kafka' needs the brokers' addresses"))?;
        let startup = Startup::parse(options)?;
        let validate = parse_validate(options)?;
        let batch_rows = parse_count(options, "kafka.batch.rows", 4096, 1 << 20)?;

        let mut client = ClientConfig::new();
        for (key, value) in options {
            if let Some(property) = key.strip_prefix("properties.") {
                let property = if property == "bootstrap.server" { "bootstrap.servers" } else { property };
                client.set(property, value);
            }
        }
        let group = options.get("group.id").cloned().unwrap_or_else(|| format!("weir-{source_name}"));
        client
            .set("group.id", group)
            // Weir decides where to read and when to commit.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "1000")
            .set_log_level(RDKafkaLogLevel::Warning);

        let (payload_schema, layout) = split_columns(&schema, metadata);
        let shared = Arc::new(KafkaShared {
            topic,
            client,
            brokers,
            startup,
            payload: PayloadDecoder::new("kafka", format, payload_schema)?,
            runtime: tokio::runtime::Handle::current(),
            schema,
            layout,
            batch_rows,
            started_at: Mutex::new(None),
            status: Arc::new(ConnectorStatus::default()),
        });
        shared.status.set_state("starting");
        let partitions_at_create = if validate {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || shared.partition_count(VALIDATE_TIMEOUT))
                .await
                .map_err(|e| unavailable(format!("the metadata request failed: {e}")))??
        } else {
            0
        };
        Ok(Self::reader(shared, true, Vec::new(), partitions_at_create))
    }

    fn reader(shared: Arc<KafkaShared>, live: bool, start: Vec<Option<i64>>, partitions_at_create: usize) -> Self {
        KafkaSource {
            shared,
            live,
            start,
            positions: Vec::new(),
            stops: None,
            ended: Vec::new(),
            fetcher: None,
            partitions_at_create,
            sought: false,
        }
    }

    fn start_fetcher(&mut self) -> &mut Fetcher {
        let (tx, rx) = mpsc::channel(8);
        let (commits, commit_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let job = FetchJob {
            shared: self.shared.clone(),
            live: self.live,
            start: self.start.clone(),
            stops: self.stops.clone(),
            tx,
            commits: commit_rx,
            stop: stop.clone(),
        };
        std::thread::Builder::new()
            .name(format!("kafka-{}", self.shared.topic))
            .spawn(move || job.run())
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!(error = %e, "could not start a Kafka reading thread"));
        self.fetcher.insert(Fetcher { rx, commits, stop })
    }

    fn grow(&mut self, partitions: usize) {
        if self.positions.len() < partitions {
            self.positions.resize(partitions, None);
            self.ended.resize(partitions, false);
        }
    }

    fn parse_positions(&self, positions: &[SourcePosition]) -> Result<Vec<(usize, i64)>, ConnectorError> {
        positions
            .iter()
            .map(|p| {
                let partition: usize = p.partition.parse().map_err(|_| ConnectorError::InvalidPosition {
                    partition: p.partition.clone(),
                    reason: format!("topic '{}' has numbered partitions", self.shared.topic),
                })?;
                let offset = i64::try_from(p.offset).map_err(|_| ConnectorError::InvalidPosition {
                    partition: p.partition.clone(),
                    reason: "offset out of range".into(),
                })?;
                Ok((partition, offset))
            })
            .collect()
    }
}

/// The JSON decoder's schema (the declared columns that are not metadata) and where each
/// column of the source comes from.
fn split_columns(schema: &SchemaRef, metadata: &[(usize, MetadataColumn)]) -> (SchemaRef, Vec<ColumnSource>) {
    let mut payload = Vec::new();
    let layout = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| match metadata.iter().find(|(c, _)| *c == i) {
            Some((_, m)) => ColumnSource::Metadata(*m),
            None => {
                payload.push(f.as_ref().clone());
                ColumnSource::Payload(payload.len() - 1)
            }
        })
        .collect();
    (Arc::new(Schema::new(payload)), layout)
}

fn unavailable(reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Unavailable { connector: "kafka", reason: reason.into() }
}

impl KafkaShared {
    fn consumer(&self) -> Result<BaseConsumer<KafkaContext>, ConnectorError> {
        let context = KafkaContext { topic: self.topic.clone(), status: self.status.clone(), last: Mutex::new(None) };
        self.client
            .create_with_context(context)
            .map_err(|e| invalid("properties", format!("librdkafka rejected the client settings: {e}")))
    }

    /// The topic's partition count, asking the brokers (blocking).
    fn partition_count(&self, timeout: Duration) -> Result<usize, ConnectorError> {
        let consumer = self.consumer()?;
        topic_partitions(&consumer, &self.topic, &self.brokers, timeout)
    }
}

fn topic_partitions(
    consumer: &BaseConsumer<KafkaContext>,
    topic: &str,
    brokers: &str,
    timeout: Duration,
) -> Result<usize, ConnectorError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| unavailable(format!("could not reach the Kafka brokers at {brokers}: {e}")))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(invalid("topic", format!("topic '{topic}' does not exist")));
    };
    if let Some(e) = t.error() {
        let e = rdkafka::types::RDKafkaErrorCode::from(e);
        if e == rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
            return Err(invalid("topic", format!("topic '{topic}' does not exist")));
        }
        return Err(unavailable(format!("metadata of topic '{topic}': {e}")));
    }
    if t.partitions().is_empty() {
        return Err(invalid("topic", format!("topic '{topic}' does not exist")));
    }
    Ok(t.partitions().len())
}

/// librdkafka's callbacks: logs go to tracing, statistics and errors to the source's status.
struct KafkaContext {
    topic: String,
    status: Arc<ConnectorStatus>,
    /// The counters at the previous statistics, for rates.
    last: Mutex<Option<CounterSnapshot>>,
}

/// When librdkafka's statistics were taken, and per partition the messages and bytes received
/// until then.
type CounterSnapshot = (Instant, HashMap<i32, (i64, i64)>);

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        // A broker that is up means the source is connected; librdkafka reconnects by itself.
        if statistics.brokers.values().any(|b| b.state == "UP") {
            self.status.set_state("running");
        }
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut counters = HashMap::new();
        for (&id, p) in &topic.partitions {
            let Ok(index) = usize::try_from(id) else { continue }; // -1: the unassigned partition
            counters.insert(id, (p.rxmsgs as i64, p.rxbytes as i64));
            let rates = last.as_ref().and_then(|(at, before)| {
                let (msgs, bytes) = before.get(&id)?;
                let seconds = now.duration_since(*at).as_secs_f64().max(1e-3);
                Some(((p.rxmsgs as i64 - msgs) as f64 / seconds, (p.rxbytes as i64 - bytes) as f64 / seconds))
            });
            self.status.update(index, |progress| {
                if p.hi_offset >= 0 {
                    progress.high_watermark = Some(p.hi_offset);
                }
                if let Some((rows, bytes)) = rates {
                    progress.rows_per_second = rows.max(0.0);
                    progress.bytes_per_second = bytes.max(0.0);
                }
            });
        }
        *last = Some((now, counters));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(topic = %self.topic, error = %error, "Kafka client error: {reason}");
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown | rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.status.set_state(format!("broker unreachable: {reason}"));
        }
    }
}

impl ConsumerContext for KafkaContext {}

/// The reading thread's work.
struct FetchJob {
    shared: Arc<KafkaShared>,
    live: bool,
    start: Vec<Option<i64>>,
    stops: Option<Vec<i64>>,
    tx: mpsc::Sender<Fetched>,
    commits: std::sync::mpsc::Receiver<Vec<i64>>,
    stop: Arc<AtomicBool>,
}

/// The reading thread's state between polls.
struct Reading {
    /// Per partition, the messages waiting to be decoded.
    chunks: Vec<Chunk>,
    /// Per partition, whether a replay read it to its stop.
    ended: Vec<bool>,
    /// Messages waiting in all chunks.
    buffered: usize,
    /// When the oldest waiting message arrived.
    oldest: Option<Instant>,
}

/// Messages of one partition waiting to be decoded together.
#[derive(Default)]
struct Chunk {
    payloads: Vec<u8>,
    ends: Vec<usize>,
    offsets: Vec<i64>,
    keys: Vec<Option<Vec<u8>>>,
    timestamps: Vec<Option<i64>>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.offsets.len()
    }

    fn records(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let record = &self.payloads[start..end];
                start = end;
                record
            })
            .collect()
    }

    fn clear(&mut self) {
        self.payloads.clear();
        self.ends.clear();
        self.offsets.clear();
        self.keys.clear();
        self.timestamps.clear();
    }
}

impl FetchJob {
    fn alive(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    fn send(&self, fetched: Fetched) -> bool {
        !self.stop.load(Ordering::Relaxed) && self.tx.blocking_send(fetched).is_ok()
    }

    /// Retries `f` with backoff until it works or the source is dropped, showing why in the
    /// source's status.
    fn retry<T>(&self, what: &str, f: impl Fn() -> Result<T, ConnectorError>) -> Option<T> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match f() {
                Ok(value) => return Some(value),
                Err(e) => {
                    if self.live {
                        self.shared.status.set_state(format!("{what} failed, retrying: {e}"));
                    }
                    tracing::warn!(topic = %self.shared.topic, error = %e, "{what} failed; retrying in {backoff:?}");
                }
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if !self.alive() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Where partition `p` starts: the explicit start, else the startup mode's offset.
    fn start_offset(&self, consumer: &BaseConsumer<KafkaContext>, p: usize, startup: Startup) -> Result<i64, ConnectorError> {
        if let Some(Some(offset)) = self.start.get(p) {
            return Ok(*offset);
        }
        let topic = &self.shared.topic;
        let id = p as i32;
        let (low, high) = consumer
            .fetch_watermarks(topic, id, REQUEST_TIMEOUT)
            .map_err(|e| unavailable(format!("watermarks of {topic}/{p}: {e}")))?;
        match startup {
            Startup::Earliest => Ok(low),
            Startup::Latest => Ok(high),
            Startup::Timestamp(millis) => {
                let mut query = TopicPartitionList::new();
                query
                    .add_partition_offset(topic, id, Offset::Offset(millis))
                    .map_err(|e| unavailable(e.to_string()))?;
                let found = consumer
                    .offsets_for_times(query, REQUEST_TIMEOUT)
                    .map_err(|e| unavailable(format!("offset for time {millis} in {topic}/{p}: {e}")))?;
                // No message at or after the time: start at the end.
                let offset = match found.find_partition(topic, id).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => o.clamp(low, high),
                    _ => high,
                };
                Ok(offset)
            }
        }
    }

    fn assign(&self, consumer: &BaseConsumer<KafkaContext>, partitions: &[(usize, i64)]) -> Result<(), ConnectorError> {
        let mut list = TopicPartitionList::new();
        for &(p, offset) in partitions {
            list.add_partition_offset(&self.shared.topic, p as i32, Offset::Offset(offset))
                .map_err(|e| unavailable(e.to_string()))?;
        }
        consumer.incremental_assign(&list).map_err(|e| unavailable(format!("assigning partitions: {e}")))
    }

    fn run(self) {
        let Some(consumer) = self.retry("creating the Kafka client", || self.shared.consumer()) else { return };
        let shared = &self.shared;
        let Some(count) =
            self.retry("reading the topic's metadata", || topic_partitions(&consumer, &shared.topic, &shared.brokers, REQUEST_TIMEOUT))
        else {
            return;
        };
        let count = count.max(self.start.len());
        let startup = shared.startup;
        let Some(starts) = self.retry("finding the start offsets", || {
            (0..count).map(|p| self.start_offset(&consumer, p, startup)).collect::<Result<Vec<_>, _>>()
        }) else {
            return;
        };
        if !self.send(Fetched::Started(starts.clone())) {
            return;
        }
        // Partitions a replay has nothing to read from end at once.
        let mut ended = vec![false; count];
        let mut assigned = Vec::new();
        for (p, &start) in starts.iter().enumerate() {
            if self.stops.as_ref().is_some_and(|s| s.get(p).is_none_or(|&stop| start >= stop)) {
                ended[p] = true;
                if !self.send(Fetched::PartitionEnd { partition: p }) {
                    return;
                }
            } else {
                assigned.push((p, start));
            }
        }
        let Some(mut queue) = MessageQueue::new(&consumer) else {
            tracing::error!(topic = %shared.topic, "librdkafka could not make a message queue");
            return;
        };
        for &(p, _) in &assigned {
            if let Err(e) = queue.forward_partition(&shared.topic, p as i32) {
                tracing::error!(topic = %shared.topic, partition = p, error = %e, "cannot read the partition");
                return;
            }
        }
        if self.retry("assigning partitions", || self.assign(&consumer, &assigned)).is_none() {
            return;
        }
        if self.live {
            // The brokers answered; from now on librdkafka's statistics and errors say whether
            // they still do.
            shared.status.set_state("running");
        }
        self.poll_loop(&consumer, &mut queue, ended);
    }

    fn poll_loop(&self, consumer: &BaseConsumer<KafkaContext>, queue: &mut MessageQueue, ended: Vec<bool>) {
        let mut reading = Reading { chunks: (0..ended.len()).map(|_| Chunk::default()).collect(), ended, buffered: 0, oldest: None };
        let mut next_partition_check = Instant::now() + PARTITION_CHECK_INTERVAL;
        // Reading the clock is not free (in a VM it was 14% of this thread's time when done per
        // message, by us and by librdkafka), so the time-based work (commits, the consumer
        // queue's statistics and errors, new partitions, flushing an old chunk) runs when no
        // message is waiting, and every CLOCK_EVERY messages while they keep coming.
        let mut since_clock = CLOCK_EVERY;
        let mut idle = false;
        while self.alive() {
            if self.stops.is_some() && reading.ended.iter().all(|e| *e) {
                return;
            }
            if idle || since_clock >= CLOCK_EVERY {
                since_clock = 0;
                self.serve_commits(consumer);
                if !self.serve_consumer_queue(consumer, &mut reading) {
                    return;
                }
                let now = Instant::now();
                if self.stops.is_none() && now >= next_partition_check {
                    next_partition_check = now + PARTITION_CHECK_INTERVAL;
                    if !self.pick_up_new_partitions(consumer, queue, &mut reading) {
                        return;
                    }
                }
                if reading.oldest.is_some_and(|t| now.duration_since(t) >= CHUNK_MAX_AGE) && !self.flush(&mut reading) {
                    return;
                }
            }
            // Wait for messages only when none were waiting last time.
            let messages = queue.take(if idle { CHUNK_MAX_AGE } else { Duration::ZERO });
            idle = messages.is_empty();
            since_clock += messages.len();
            for i in 0..messages.len() {
                if !self.accept(messages.get(i), &mut reading) {
                    return;
                }
            }
        }
    }

    /// Takes one message into its partition's chunk, decoding and sending chunks when they are
    /// full or a replay reached its stop. False when the source is gone.
    fn accept(&self, message: Received<'_>, reading: &mut Reading) -> bool {
        if let Some(error) = message.error {
            tracing::warn!(topic = %self.shared.topic, partition = message.partition, %error, "Kafka fetch error");
            return true;
        }
        let Ok(p) = usize::try_from(message.partition) else { return true };
        if p >= reading.chunks.len() || reading.ended[p] {
            return true;
        }
        let offset = message.offset;
        if let Some(stop) = self.stops.as_ref().and_then(|s| s.get(p))
            && offset >= *stop
        {
            return true;
        }
        let chunk = &mut reading.chunks[p];
        chunk.payloads.extend_from_slice(message.payload);
        chunk.ends.push(chunk.payloads.len());
        chunk.offsets.push(offset);
        chunk.keys.push(message.key.map(<[u8]>::to_vec));
        chunk.timestamps.push(message.timestamp);
        reading.buffered += 1;
        reading.oldest.get_or_insert_with(Instant::now);
        let reached_stop = self.stops.as_ref().and_then(|s| s.get(p)).is_some_and(|&stop| offset + 1 >= stop);
        if (reading.buffered >= self.shared.batch_rows || reached_stop) && !self.flush(reading) {
            return false;
        }
        if reached_stop {
            reading.ended[p] = true;
            if !self.send(Fetched::PartitionEnd { partition: p }) {
                return false;
            }
        }
        true
    }

    /// Serves the consumer's own queue: librdkafka's statistics (the status), errors and commit
    /// replies. Messages arrive there only for a partition not forwarded to the message queue,
    /// which should not happen; they are taken all the same.
    fn serve_consumer_queue(&self, consumer: &BaseConsumer<KafkaContext>, reading: &mut Reading) -> bool {
        for _ in 0..64 {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(message)) => {
                    let received = Received {
                        partition: message.partition(),
                        offset: message.offset(),
                        payload: message.payload().unwrap_or_default(),
                        key: message.key(),
                        timestamp: match message.timestamp() {
                            Timestamp::NotAvailable => None,
                            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
                        },
                        error: None,
                    };
                    if !self.accept(received, reading) {
                        return false;
                    }
                }
                Some(Err(e)) => tracing::warn!(topic = %self.shared.topic, error = %e, "Kafka error"),
                None => break,
            }
        }
        true
    }

    fn serve_commits(&self, consumer: &BaseConsumer<KafkaContext>) {
        let mut latest = None;
        while let Ok(offsets) = self.commits.try_recv() {
            latest = Some(offsets);
        }
        let Some(offsets) = latest else { return };
        let mut list = TopicPartitionList::new();
        for (p, &offset) in offsets.iter().enumerate() {
            if offset >= 0 && list.add_partition_offset(&self.shared.topic, p as i32, Offset::Offset(offset)).is_err() {
                return;
            }
        }
        if list.count() > 0
            && let Err(e) = consumer.commit(&list, CommitMode::Async)
        {
            tracing::warn!(topic = %self.shared.topic, error = %e, "could not commit offsets to the consumer group");
        }
    }

    /// Starts reading partitions added to the topic since the last check, from their beginning.
    fn pick_up_new_partitions(&self, consumer: &BaseConsumer<KafkaContext>, queue: &mut MessageQueue, reading: &mut Reading) -> bool {
        let shared = &self.shared;
        let count = match topic_partitions(consumer, &shared.topic, &shared.brokers, REQUEST_TIMEOUT) {
            Ok(count) => count,
            Err(e) => {
                tracing::debug!(topic = %shared.topic, error = %e, "partition check failed");
                return true;
            }
        };
        for p in reading.ended.len()..count {
            // New partitions hold only messages produced after they appeared: read them all.
            let start = match self.start_offset(consumer, p, Startup::Earliest) {
                Ok(start) => start,
                Err(e) => {
                    tracing::warn!(topic = %shared.topic, partition = p, error = %e, "new partition not started yet");
                    return true;
                }
            };
            if let Err(e) = queue.forward_partition(&shared.topic, p as i32) {
                tracing::warn!(topic = %shared.topic, partition = p, error = %e, "new partition not started yet");
                return true;
            }
            if let Err(e) = self.assign(consumer, &[(p, start)]) {
                tracing::warn!(topic = %shared.topic, partition = p, error = %e, "new partition not started yet");
                return true;
            }
            tracing::info!(topic = %shared.topic, partition = p, start, "reading a new partition");
            reading.ended.push(false);
            reading.chunks.push(Chunk::default());
            if !self.send(Fetched::NewPartition { partition: p, start }) {
                return false;
            }
        }
        true
    }

    /// Decodes and sends every partition's waiting messages.
    fn flush(&self, reading: &mut Reading) -> bool {
        reading.buffered = 0;
        reading.oldest = None;
        for (partition, chunk) in reading.chunks.iter_mut().enumerate() {
            if chunk.len() == 0 {
                continue;
            }
            if self.live {
                let bytes = chunk.payloads.len() as u64;
                self.shared.status.update(partition, |p| p.bytes += bytes);
            }
            let records = chunk.records();
            if self.shared.payload.fetches_schemas() {
                self.shared.runtime.block_on(self.shared.payload.prepare(&records));
            }
            let mut pieces = Vec::new();
            decode_lenient(&records, |r| self.shared.payload.decode(r), |piece| {
                pieces.push(piece);
                true
            });
            for piece in pieces {
                let fetched = match piece {
                    DecodedRecords::Rows { first, rows } => {
                        let n = rows.num_rows();
                        let rows = match self.with_metadata(rows, chunk, partition, first) {
                            Ok(rows) => rows,
                            Err(e) => {
                                tracing::error!(topic = %self.shared.topic, error = %e, "could not add metadata columns");
                                continue;
                            }
                        };
                        Fetched::Rows { partition, rows, next_offset: chunk.offsets[first + n - 1] + 1 }
                    }
                    DecodedRecords::Bad { index, reason } => Fetched::Bad {
                        partition,
                        offset: chunk.offsets[index],
                        reason,
                        payload: payload_prefix(records[index]),
                    },
                };
                if !self.send(fetched) {
                    return false;
                }
            }
            chunk.clear();
        }
        true
    }

    /// The decoded payload columns with the metadata columns of messages `first..` added, in
    /// the source's column order.
    fn with_metadata(&self, payload: RecordBatch, chunk: &Chunk, partition: usize, first: usize) -> Result<RecordBatch, ConnectorError> {
        let range = first..first + payload.num_rows();
        let columns: Vec<ArrayRef> = self
            .shared
            .layout
            .iter()
            .map(|source| -> ArrayRef {
                match source {
                    ColumnSource::Payload(i) => payload.column(*i).clone(),
                    ColumnSource::Metadata(MetadataColumn::Key) => {
                        let mut keys = BinaryBuilder::new();
                        for key in &chunk.keys[range.clone()] {
                            keys.append_option(key.as_deref());
                        }
                        Arc::new(keys.finish())
                    }
                    ColumnSource::Metadata(MetadataColumn::Partition) => {
                        Arc::new(Int32Array::from_value(partition as i32, range.len()))
                    }
                    ColumnSource::Metadata(MetadataColumn::Offset) => Arc::new(Int64Array::from(chunk.offsets[range.clone()].to_vec())),
                    ColumnSource::Metadata(MetadataColumn::Timestamp) => Arc::new(
                        TimestampMicrosecondArray::from(
                            chunk.timestamps[range.clone()].iter().map(|t| t.and_then(|ms| ms.checked_mul(1000))).collect::<Vec<_>>(),
                        )
                        .with_timezone("+00:00"),
                    ),
                }
            })
            .collect();
        Ok(RecordBatch::try_new(self.shared.schema.clone(), columns)?)
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.shared.schema.clone()
    }

    fn partitions(&self) -> usize {
        self.partitions_at_create.max(1)
    }

    async fn next(&mut self) -> Result<SourceEvent, ConnectorError> {
        loop {
            if self.stops.is_some() && !self.ended.is_empty() && self.ended.iter().all(|e| *e) {
                return Ok(SourceEvent::End);
            }
            let fetcher = match &mut self.fetcher {
                Some(f) => f,
                None => self.start_fetcher(),
            };
            let Some(fetched) = fetcher.rx.recv().await else {
                // The thread stopped (it could not start): start it again on the next call.
                self.fetcher = None;
                return Err(unavailable(format!("the reader of topic '{}' stopped", self.shared.topic)));
            };
            match fetched {
                Fetched::Started(starts) => {
                    self.grow(starts.len());
                    for (p, start) in starts.iter().enumerate() {
                        self.positions[p].get_or_insert(*start);
                    }
                    if self.live {
                        if !self.sought {
                            self.shared.started_at.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| starts.clone());
                        }
                        for (p, start) in starts.iter().enumerate() {
                            self.shared.status.update(p, |progress| progress.next_offset = Some(*start));
                        }
                    }
                }
                Fetched::NewPartition { partition, start } => {
                    self.grow(partition + 1);
                    self.positions[partition] = Some(start);
                    if self.live {
                        if let Some(started) = self.shared.started_at.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                            started.resize(partition + 1, 0);
                            started[partition] = start;
                        }
                        self.shared.status.update(partition, |progress| progress.next_offset = Some(start));
                    }
                }
                Fetched::Rows { partition, rows, next_offset } => {
                    self.grow(partition + 1);
                    self.positions[partition] = Some(next_offset);
                    if self.live {
                        self.shared.status.update(partition, |progress| progress.next_offset = Some(next_offset));
                    }
                    return Ok(SourceEvent::Batch { partition, rows });
                }
                Fetched::Bad { partition, offset, reason, payload } => {
                    self.grow(partition + 1);
                    self.positions[partition] = Some(offset + 1);
                    return Ok(SourceEvent::BadRecord { partition, offset: offset.max(0) as u64, reason, payload });
                }
                Fetched::PartitionEnd { partition } => {
                    self.grow(partition + 1);
                    if !self.ended[partition] {
                        self.ended[partition] = true;
                        return Ok(SourceEvent::PartitionEnd { partition });
                    }
                }
            }
        }
    }

    fn positions(&self) -> Vec<SourcePosition> {
        self.positions
            .iter()
            .enumerate()
            .filter_map(|(p, o)| Some(SourcePosition { partition: p.to_string(), offset: u64::try_from((*o)?).ok()? }))
            .collect()
    }

    async fn seek(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        let parsed = self.parse_positions(positions)?;
        let count = parsed.iter().map(|(p, _)| p + 1).max().unwrap_or(0);
        let mut start = vec![None; count];
        for (p, offset) in parsed {
            start[p] = Some(offset);
        }
        self.fetcher = None;
        self.positions = start.clone();
        self.ended = vec![false; count];
        self.start = start;
        self.sought = true;
        Ok(())
    }

    fn replay_from_start(&self) -> Option<Box<dyn Source>> {
        let started = self.shared.started_at.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let start = started.unwrap_or_default().into_iter().map(Some).collect();
        Some(Box::new(KafkaSource::reader(self.shared.clone(), false, start, self.partitions_at_create)))
    }

    fn stop_at(&mut self, positions: &[SourcePosition]) {
        let Ok(parsed) = self.parse_positions(positions) else { return };
        let count = parsed.iter().map(|(p, _)| p + 1).max().unwrap_or(0);
        let mut stops = vec![0i64; count];
        for (p, offset) in parsed {
            stops[p] = offset;
        }
        // The replay reads exactly the partitions the live reader had positions for.
        self.grow(count);
        self.stops = Some(stops);
        self.fetcher = None;
    }

    async fn commit(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        let parsed = self.parse_positions(positions)?;
        let count = parsed.iter().map(|(p, _)| p + 1).max().unwrap_or(0);
        let mut offsets = vec![-1i64; count];
        for (p, offset) in parsed {
            offsets[p] = offset;
        }
        if let Some(fetcher) = &self.fetcher {
            let _ = fetcher.commits.send(offsets);
        }
        Ok(())
    }

    fn status(&self) -> Option<Arc<ConnectorStatus>> {
        self.live.then(|| self.shared.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, TimeUnit};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("k", DataType::Binary, true),
            Field::new("p", DataType::Int32, true),
            Field::new("o", DataType::Int64, true),
        ]))
    }

    fn metadata() -> Vec<(usize, MetadataColumn)> {
        vec![(2, MetadataColumn::Key), (3, MetadataColumn::Partition), (4, MetadataColumn::Offset)]
    }

    fn options(brokers: &str, topic: &str, extra: &[(&str, &str)]) -> SourceOptions {
        let mut o: SourceOptions = [("connector", "kafka"), ("topic", topic), ("properties.bootstrap.server", brokers)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        o.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        o
    }

    fn json() -> SourceFormat {
        SourceFormat { format: "plain".into(), encode: "json".into(), ..Default::default() }
    }

    /// Produces `(partition, key, payload)` messages and waits until all are acknowledged.
    fn produce(brokers: &str, topic: &str, messages: &[(i32, String, String)]) {
        let producer: ThreadedProducer<DefaultProducerContext> =
            ClientConfig::new().set("bootstrap.servers", brokers).create().expect("producer");
        for (partition, key, payload) in messages {
            producer
                .send(BaseRecord::to(topic).partition(*partition).key(key.as_bytes()).payload(payload.as_bytes()))
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");
    }

    /// Reads until `rows` rows and `bad` bad records arrived.
    async fn read(source: &mut dyn Source, rows: usize, bad: usize) -> (Vec<(usize, RecordBatch)>, Vec<(usize, u64, String)>) {
        let (mut batches, mut bads) = (Vec::new(), Vec::new());
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while n < rows || bads.len() < bad {
            assert!(Instant::now() < deadline, "read {n} rows and {} bad records of {rows} and {bad}", bads.len());
            match tokio::time::timeout(Duration::from_secs(30), source.next()).await.expect("no event").expect("read") {
                SourceEvent::Batch { partition, rows } => {
                    n += rows.num_rows();
                    batches.push((partition, rows));
                }
                SourceEvent::BadRecord { partition, offset, reason, .. } => bads.push((partition, offset, reason)),
                other => panic!("unexpected {other:?}"),
            }
        }
        (batches, bads)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_every_partition_with_metadata_and_reports_bad_messages() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("events", 3, 1).expect("topic");
        let brokers = cluster.bootstrap_servers();
        let mut messages = Vec::new();
        for i in 0..30i64 {
            let p = (i % 3) as i32;
            let payload = if i == 10 { "{not json".to_string() } else { format!(r#"{{"id": {i}, "ts": {}}}"#, 1_000 * i) };
            messages.push((p, format!("key-{i}"), payload));
        }
        produce(&brokers, "events", &messages);

        let mut source = KafkaSource::new("events", schema(), &options(&brokers, "events", &[]), Some(&json()), &metadata()).await.unwrap();
        assert_eq!(source.partitions(), 3);
        let (batches, bad) = read(&mut source, 29, 1).await;
        // Message 10 went to partition 1 as its 4th message (offset 3).
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].0, bad[0].1), (1, 3), "{bad:?}");
        let mut seen = Vec::new();
        for (partition, rows) in &batches {
            let ids = rows.column(0).as_primitive::<Int64Type>();
            let ts = rows.column(1).as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
            let keys = rows.column(2).as_binary::<i32>();
            let parts = rows.column(3).as_primitive::<Int32Type>();
            let offsets = rows.column(4).as_primitive::<Int64Type>();
            for r in 0..rows.num_rows() {
                let id = ids.value(r);
                assert_eq!(id % 3, *partition as i64);
                assert_eq!(parts.value(r) as usize, *partition);
                assert_eq!(ts.value(r), id * 1_000_000, "epoch millis become microseconds");
                assert_eq!(keys.value(r), format!("key-{id}").as_bytes());
                assert_eq!(offsets.value(r), id / 3);
                seen.push(id);
            }
        }
        seen.sort();
        assert_eq!(seen, (0..30).filter(|i| *i != 10).collect::<Vec<_>>());
        let mut positions = source.positions();
        positions.sort_by(|a, b| a.partition.cmp(&b.partition));
        assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [10, 10, 10]);

        // A replay from the start, stopped where the live reader is, returns the same rows.
        let mut replay = source.replay_from_start().unwrap();
        replay.stop_at(&positions);
        let mut replayed = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), replay.next()).await.expect("no event").unwrap() {
                SourceEvent::Batch { rows, .. } => replayed += rows.num_rows(),
                SourceEvent::End => break,
                SourceEvent::PartitionEnd { .. } | SourceEvent::BadRecord { .. } => {}
            }
        }
        assert_eq!(replayed, 29);

        // Committed offsets reach the consumer group.
        source.commit(&positions).await.unwrap();
        let group: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "weir-events").create().unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..3 {
            list.add_partition(topic_name(), p);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let committed = group.committed_offsets(list.clone(), Duration::from_secs(5)).unwrap();
            let offsets: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
            if offsets == vec![Offset::Offset(10); 3] {
                break;
            }
            assert!(Instant::now() < deadline, "committed offsets are {offsets:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn topic_name() -> &'static str {
        "events"
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seek_resumes_and_latest_skips_history() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("seek", 2, 1).expect("topic");
        let brokers = cluster.bootstrap_servers();
        let batch = |from: i64, to: i64| -> Vec<(i32, String, String)> {
            (from..to).map(|i| ((i % 2) as i32, i.to_string(), format!(r#"{{"id": {i}}}"#))).collect()
        };
        produce(&brokers, "seek", &batch(0, 20));
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));

        let mut latest =
            KafkaSource::new("events", schema.clone(), &options(&brokers, "seek", &[("scan.startup.mode", "latest")]), Some(&json()), &[])
                .await
                .unwrap();
        let mut seeked = KafkaSource::new("events", schema.clone(), &options(&brokers, "seek", &[]), Some(&json()), &[]).await.unwrap();
        let at = |p: &str, offset: u64| SourcePosition { partition: p.into(), offset };
        seeked.seek(&[at("0", 5), at("1", 8)]).await.unwrap();
        // `latest` starts reading (and so resolves its start) before the new messages exist.
        let first = tokio::time::timeout(Duration::from_millis(500), latest.next()).await;
        assert!(first.is_err(), "latest returned history: {first:?}");
        produce(&brokers, "seek", &batch(20, 24));

        let ids = |batches: Vec<(usize, RecordBatch)>| {
            let mut ids: Vec<i64> =
                batches.iter().flat_map(|(_, b)| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
            ids.sort();
            ids
        };
        let (batches, _) = read(&mut latest, 4, 0).await;
        assert_eq!(ids(batches), [20, 21, 22, 23]);
        // Partition 0 from offset 5 (ids 10, 12, ..., 22), partition 1 from offset 8 (ids 17, 19, 21, 23).
        let (batches, _) = read(&mut seeked, 10, 0).await;
        assert_eq!(ids(batches), [10, 12, 14, 16, 17, 18, 19, 20, 21, 22, 23]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_options_and_unreachable_brokers_are_reported() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let err = |o: SourceOptions, f: Option<SourceFormat>| {
            let schema = schema.clone();
            async move {
                match KafkaSource::new("events", schema, &o, f.as_ref(), &[]).await {
                    Err(e) => e.to_string(),
                    Ok(_) => panic!("accepted {o:?}"),
                }
            }
        };
        // Nothing listens on port 1.
        let down = "127.0.0.1:1";
        assert!(err(options(down, "t", &[]), None).await.contains("FORMAT PLAIN ENCODE JSON"));
        assert!(err(options(down, "t", &[("scan.startup.mode", "middle")]), Some(json())).await.contains("scan.startup.mode"));
        assert!(err(options(down, "t", &[("scan.startup.mode", "timestamp")]), Some(json())).await.contains("timestamp.millis"));
        assert!(err(options(down, "t", &[("bogus", "1")]), Some(json())).await.contains("bogus"));
        match KafkaSource::new("events", schema.clone(), &options(down, "t", &[]), Some(&json()), &[]).await {
            Err(e @ ConnectorError::Unavailable { .. }) => assert!(e.to_string().contains("127.0.0.1:1"), "{e}"),
            other => panic!("expected the brokers to be unreachable, got {:?}", other.err()),
        }
        // Without validation the source is created and reports its state instead.
        let source =
            KafkaSource::new("events", schema.clone(), &options(down, "t", &[("connector.validate", "false")]), Some(&json()), &[]).await;
        assert!(source.is_ok());

        let cluster = MockCluster::new(1).expect("mock cluster");
        let missing = err(options(&cluster.bootstrap_servers(), "nope", &[]), Some(json())).await;
        assert!(missing.contains("does not exist"), "{missing}");
    }
}
