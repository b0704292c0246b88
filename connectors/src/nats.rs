//! `connector = 'nats'`: a NATS JetStream stream read through a pull consumer, decoded to Arrow.
//!
//! A JetStream stream is one ordered log, so the source has one partition, and its position is
//! the next stream sequence to read. As with Kafka, Weir owns the position: the live reader
//! creates its durable consumer (`nats.consumer`, default `weir-<source>`) to deliver from
//! exactly that sequence, with `AckPolicy::All`, and acks the newest message a checkpoint covers
//! once the checkpoint is written ([`Source::commit`]; the newest published epoch when
//! checkpoints are off). A message the server delivers again (its ack came after `ack_wait`) is recognised by
//! its sequence and dropped. Replays (a view created after the source started) read through an
//! ephemeral consumer that acks nothing, from the sequence the live reader started at, up to the
//! live reader's position. See docs/nats-source.md.
//!
//! One tokio task per reader pulls messages, groups them into chunks (`nats.batch.rows` or
//! 20 ms), decodes a chunk at a time ([`crate::records::decode_lenient`]: a bad message is
//! reported with its sequence and first bytes, the rest of the chunk still arrives) and hands
//! batches to the engine over a bounded channel, which is the back-pressure: the task stops
//! pulling while the engine is behind.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::{Config as PullConfig, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, stream::Stream as JetStream};
use async_nats::{ConnectOptions, Event};
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::ConnectorError;
use crate::options::without_credentials;
use crate::payload::PayloadDecoder;
use crate::options::{Startup, check_known, invalid, parse_count, parse_validate};
use crate::records::{DecodedRecords, decode_lenient, payload_prefix};
use crate::source::{ConnectorStatus, Source, SourceEvent, SourceFormat, SourceOptions, SourcePosition};

/// How long connecting may take, at `CREATE SOURCE` and later.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A chunk of messages is decoded when it is this old even if not full.
const CHUNK_MAX_AGE: Duration = Duration::from_millis(20);
/// How long the server waits for an ack before delivering a message again. Acks follow epoch
/// commits (every 250 ms by default), so this only matters when the engine stalls; redeliveries
/// are dropped by sequence anyway.
const ACK_WAIT: Duration = Duration::from_secs(300);
/// How long an unused replay consumer lives on the server.
const REPLAY_CONSUMER_TTL: Duration = Duration::from_secs(60);
/// How often rows/s and bytes/s are computed.
const RATE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the source authenticates (never printed: the values are secrets).
enum Auth {
    None,
    Token(String),
    UserPassword(String, String),
    CredentialsFile(String),
}

/// What a source and its reading tasks share.
struct NatsShared {
    server_url: String,
    /// `server_url` without any `user:password@`, for messages.
    server_shown: String,
    auth: Auth,
    /// `nats.stream`, or found from `nats.subject` when absent.
    stream: Option<String>,
    subject: Option<String>,
    /// The durable consumer's name.
    consumer: String,
    startup: Startup,
    schema: SchemaRef,
    payload: PayloadDecoder,
    batch_rows: usize,
    max_ack_pending: i64,
    /// The sequence the live reader started from, once known: replays start there too.
    started_at: Mutex<Option<u64>>,
    status: Arc<ConnectorStatus>,
}

pub struct NatsSource {
    shared: Arc<NatsShared>,
    /// Whether this is the live reader (a replay neither acks nor reports status).
    live: bool,
    /// Where reading starts (a seek or a replay); `None`: where `scan.startup.mode` says.
    start: Option<u64>,
    /// The next stream sequence to read, once known.
    position: Option<u64>,
    /// Where a replay stops.
    stop: Option<u64>,
    /// Sought to a checkpointed position: where this reader starts is not where the source
    /// started, so it must not become the replays' start.
    sought: bool,
    ended: bool,
    reader: Option<Reader>,
}

/// The reading task of one source, and how to reach it.
struct Reader {
    rx: mpsc::Receiver<Fetched>,
    commits: mpsc::UnboundedSender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the reading task sends.
enum Fetched {
    /// The sequence reading starts from (sent again after a reconnection).
    Started(u64),
    Rows { rows: RecordBatch, next: u64 },
    Bad { sequence: u64, reason: String, payload: Vec<u8> },
    /// A replay has read up to its stop.
    End,
}

impl NatsSource {
    /// Checks the options (and, unless `connector.validate = 'false'`, that the server answers
    /// and the stream exists) and builds the source; reading starts on the first `next`.
    pub async fn new(
        source_name: &str,
        schema: SchemaRef,
        options: &SourceOptions,
        format: Option<&SourceFormat>,
    ) -> Result<Self, ConnectorError> {
        check_known(options, "nats", |key| {
            Ok(matches!(
                key,
                "nats.server_url"
                    | "nats.subject"
                    | "nats.stream"
                    | "nats.consumer"
                    | "nats.token"
                    | "nats.user"
                    | "nats.password"
                    | "nats.credentials_file"
                    | "nats.max_ack_pending"
                    | "nats.batch.rows"
                    | "scan.startup.mode"
                    | "scan.startup.timestamp.millis"
                    | "connector.validate"
            ))
        })?;
        let server_url = options
            .get("nats.server_url")
            .cloned()
            .ok_or_else(|| invalid("nats.server_url", "connector 'nats' needs the server's address (nats://host:4222)"))?;
        let stream = options.get("nats.stream").cloned();
        let subject = options.get("nats.subject").cloned();
        if stream.is_none() && subject.is_none() {
            return Err(invalid("nats.stream", "connector 'nats' needs nats.stream (or nats.subject, to find the stream)"));
        }
        let auth = match (
            options.get("nats.token"),
            options.get("nats.user"),
            options.get("nats.password"),
            options.get("nats.credentials_file"),
        ) {
            (None, None, None, None) => Auth::None,
            (Some(token), None, None, None) => Auth::Token(token.clone()),
            (None, Some(user), Some(password), None) => Auth::UserPassword(user.clone(), password.clone()),
            (None, None, None, Some(path)) => Auth::CredentialsFile(path.clone()),
            (None, Some(_), None, None) | (None, None, Some(_), None) => {
                return Err(invalid("nats.user", "nats.user and nats.password go together"));
            }
            _ => {
                return Err(invalid(
                    "nats.token",
                    "give one way to authenticate: nats.token, nats.user with nats.password, or nats.credentials_file",
                ));
            }
        };
        let consumer = options.get("nats.consumer").cloned().unwrap_or_else(|| consumer_name(source_name));
        let max_ack_pending = parse_count(options, "nats.max_ack_pending", 1_000_000, i64::MAX as usize)? as i64;
        let shared = Arc::new(NatsShared {
            server_shown: without_credentials(&server_url),
            server_url,
            auth,
            stream,
            subject,
            consumer,
            startup: Startup::parse(options)?,
            payload: PayloadDecoder::new("nats", format, schema.clone())?,
            schema,
            batch_rows: parse_count(options, "nats.batch.rows", 4096, 1 << 20)?,
            max_ack_pending,
            started_at: Mutex::new(None),
            status: Arc::new(ConnectorStatus::default()),
        });
        shared.status.set_state("starting");
        if parse_validate(options)? {
            let client = shared.connect(false).await?;
            shared.open_stream(&jetstream::new(client)).await?;
        }
        Ok(Self::reader(shared, true, None))
    }

    fn reader(shared: Arc<NatsShared>, live: bool, start: Option<u64>) -> Self {
        NatsSource { shared, live, start, position: start, stop: None, sought: false, ended: false, reader: None }
    }

    fn start_reader(&mut self) -> &mut Reader {
        let (tx, rx) = mpsc::channel(8);
        let (commits, commit_rx) = mpsc::unbounded_channel();
        let task = ReadTask { shared: self.shared.clone(), live: self.live, next: self.start, stop: self.stop, tx, commits: commit_rx };
        let task = tokio::spawn(task.run());
        self.reader.insert(Reader { rx, commits, task })
    }

    /// The sequence a position of partition "0" names.
    fn sequence(positions: &[SourcePosition]) -> Result<Option<u64>, ConnectorError> {
        let mut sequence = None;
        for p in positions {
            if p.partition != "0" {
                return Err(ConnectorError::InvalidPosition {
                    partition: p.partition.clone(),
                    reason: "a NATS JetStream source has one partition, \"0\"".into(),
                });
            }
            sequence = Some(p.offset);
        }
        Ok(sequence)
    }
}

/// A durable consumer name from a source name: JetStream names cannot hold `.`, `*`, `>` or
/// whitespace.
fn consumer_name(source: &str) -> String {
    let name: String =
        source.chars().map(|c| if c == '.' || c == '*' || c == '>' || c.is_whitespace() { '_' } else { c }).collect();
    format!("weir-{name}")
}

fn unavailable(reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Unavailable { connector: "nats", reason: reason.into() }
}

impl NatsShared {
    /// Connects; the live reader's connection reports disconnections in the source's status.
    async fn connect(&self, report_status: bool) -> Result<async_nats::Client, ConnectorError> {
        let options = match &self.auth {
            Auth::None => ConnectOptions::new(),
            Auth::Token(token) => ConnectOptions::with_token(token.clone()),
            Auth::UserPassword(user, password) => ConnectOptions::with_user_and_password(user.clone(), password.clone()),
            Auth::CredentialsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| invalid("nats.credentials_file", format!("cannot read {path}: {e}")))?,
        };
        let mut options = options.connection_timeout(CONNECT_TIMEOUT).name("weir");
        if report_status {
            let status = self.status.clone();
            let server = self.server_shown.clone();
            options = options.event_callback(move |event| {
                let (status, server) = (status.clone(), server.clone());
                async move {
                    match event {
                        Event::Disconnected => {
                            status.set_state(format!("broker unreachable: lost the connection to {server}, reconnecting"))
                        }
                        Event::Connected => status.set_state("running"),
                        other => tracing::info!(server = %server, "NATS connection: {other}"),
                    }
                }
            });
        }
        options
            .connect(self.server_url.as_str())
            .await
            .map_err(|e| unavailable(format!("could not connect to {}: {e}", self.server_shown)))
    }

    /// The JetStream stream the source reads.
    async fn open_stream(&self, js: &jetstream::Context) -> Result<JetStream, ConnectorError> {
        let name = match (&self.stream, &self.subject) {
            (Some(stream), _) => stream.clone(),
            (None, Some(subject)) => js.stream_by_subject(subject.clone()).await.map_err(|e| {
                invalid("nats.subject", format!("no JetStream stream on {} holds subject '{subject}': {e}", self.server_shown))
            })?,
            (None, None) => return Err(invalid("nats.stream", "connector 'nats' needs nats.stream")),
        };
        js.get_stream(&name).await.map_err(|e| match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                invalid("nats.stream", format!("stream '{name}' does not exist on {}", self.server_shown))
            }
            _ => unavailable(format!("could not read stream '{name}' on {}: {e}", self.server_shown)),
        })
    }
}

/// A chunk of messages waiting to be decoded.
#[derive(Default)]
struct Chunk {
    payloads: Vec<Bytes>,
    sequences: Vec<u64>,
    /// Acks the newest message of the chunk (and with `AckPolicy::All` all before it).
    last_acker: Option<Acker>,
    since: Option<Instant>,
}

/// The reading task: connects, creates its consumer and pulls, again after any failure.
struct ReadTask {
    shared: Arc<NatsShared>,
    live: bool,
    /// The next sequence to read, once known (advances as chunks are sent).
    next: Option<u64>,
    stop: Option<u64>,
    tx: mpsc::Sender<Fetched>,
    commits: mpsc::UnboundedReceiver<u64>,
}

/// Rows and bytes counted for the rates shown in `weir_catalog.source_partitions`.
struct Rates {
    since: Instant,
    rows: u64,
    bytes: u64,
}

impl ReadTask {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.replay_done() {
                let _ = self.tx.send(Fetched::End).await;
                return;
            }
            match self.pull().await {
                Ok(()) => return,
                Err(e) => {
                    if self.tx.is_closed() {
                        return;
                    }
                    if self.live {
                        self.shared.status.set_state(format!("{e}; retrying"));
                    }
                    tracing::warn!(consumer = %self.shared.consumer, error = %e, "reading NATS failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// A replay with nothing (more) to read: the live reader had read nothing when the replay
    /// was made (its stop is 0), or the replay has caught up with where it had read to.
    fn replay_done(&self) -> bool {
        match (self.stop, self.next) {
            (Some(stop), None) => stop == 0,
            (Some(stop), Some(next)) => next >= stop,
            (None, _) => false,
        }
    }

    /// Sends to the source; false when the source is gone.
    async fn send(&self, fetched: Fetched) -> bool {
        self.tx.send(fetched).await.is_ok()
    }

    /// One connection's worth of reading: `Ok` once the source is gone or a replay has reached
    /// its stop, `Err` for a failure to retry.
    async fn pull(&mut self) -> Result<(), ConnectorError> {
        let shared = self.shared.clone();
        let client = shared.connect(self.live).await?;
        let js = jetstream::new(client);
        let mut stream = shared.open_stream(&js).await?;
        let state = stream
            .info()
            .await
            .map_err(|e| unavailable(format!("could not read the state of stream on {}: {e}", shared.server_shown)))?
            .state
            .clone();
        if self.next.is_none() {
            self.next = match shared.startup {
                Startup::Earliest => Some(state.first_sequence.max(1)),
                Startup::Latest => Some(state.last_sequence + 1),
                // Known with the first message delivered.
                Startup::Timestamp(_) => None,
            };
        }
        let deliver_policy = match (self.next, shared.startup) {
            (Some(start_sequence), _) => DeliverPolicy::ByStartSequence { start_sequence },
            (None, Startup::Timestamp(millis)) => DeliverPolicy::ByStartTime {
                start_time: chrono::DateTime::from_timestamp_millis(millis)
                    .ok_or_else(|| invalid("scan.startup.timestamp.millis", format!("{millis} is out of range")))?,
            },
            (None, _) => DeliverPolicy::All,
        };
        if let Some(start) = self.next
            && !self.send(Fetched::Started(start)).await
        {
            return Ok(());
        }
        let config = PullConfig {
            durable_name: self.live.then(|| shared.consumer.clone()),
            deliver_policy,
            ack_policy: if self.live { AckPolicy::All } else { AckPolicy::None },
            ack_wait: ACK_WAIT,
            max_ack_pending: if self.live { shared.max_ack_pending } else { 0 },
            filter_subject: shared.subject.clone().unwrap_or_default(),
            inactive_threshold: if self.live { Duration::ZERO } else { REPLAY_CONSUMER_TTL },
            ..Default::default()
        };
        if self.live {
            // The consumer is re-made at Weir's position; an old one (from before a restart or
            // a reconnection) would deliver from its own.
            let _ = stream.delete_consumer(&shared.consumer).await;
        }
        let consumer: PullConsumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| unavailable(format!("could not create consumer '{}': {e}", shared.consumer)))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(shared.batch_rows.min(10_000))
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| unavailable(format!("could not pull from consumer '{}': {e}", shared.consumer)))?;
        if self.live {
            shared.status.set_state("running");
        }

        let mut chunk = Chunk::default();
        // Per chunk sent: its newest sequence and how to ack up to it.
        let mut acks: VecDeque<(u64, Acker)> = VecDeque::new();
        let mut pending = 0u64;
        let mut rates = Rates { since: Instant::now(), rows: 0, bytes: 0 };
        let mut tick = tokio::time::interval(RATE_INTERVAL);
        loop {
            let flush_at = chunk.since.map(|t| t + CHUNK_MAX_AGE).unwrap_or_else(|| Instant::now() + RATE_INTERVAL);
            tokio::select! {
                biased;
                Some(position) = self.commits.recv() => ack_up_to(&mut acks, position).await,
                _ = tick.tick() => self.report_rates(&mut rates),
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(flush_at)), if chunk.since.is_some() => {
                    if !self.flush(&mut chunk, &mut acks, pending, &mut rates).await {
                        return Ok(());
                    }
                }
                item = messages.next() => {
                    let message = match item {
                        None => return Err(unavailable("the consumer's message stream ended")),
                        Some(Err(e)) => match e.kind() {
                            MessagesErrorKind::MissingHeartbeat => {
                                tracing::warn!(consumer = %shared.consumer, "NATS heartbeats missing; waiting for the server");
                                continue;
                            }
                            _ => return Err(unavailable(format!("pulling from consumer '{}' failed: {e}", shared.consumer))),
                        },
                        Some(Ok(message)) => message,
                    };
                    let (sequence, remaining) = match message.info() {
                        Ok(info) => (info.stream_sequence, info.pending),
                        Err(e) => return Err(unavailable(format!("a message without JetStream metadata: {e}"))),
                    };
                    if self.next.is_some_and(|next| sequence < next) {
                        continue; // delivered again (its ack came late), or already read
                    }
                    if self.stop.is_some_and(|stop| sequence >= stop) {
                        return self.finish_replay(&mut chunk, &mut acks, pending, &mut rates).await;
                    }
                    if self.next.is_none() {
                        self.next = Some(sequence);
                        if !self.send(Fetched::Started(sequence)).await {
                            return Ok(());
                        }
                    }
                    pending = remaining;
                    let (message, acker) = message.split();
                    chunk.payloads.push(message.payload);
                    chunk.sequences.push(sequence);
                    chunk.last_acker = Some(acker);
                    chunk.since.get_or_insert_with(Instant::now);
                    // A replay that reached its stop, or the end of what the stream holds
                    // (messages removed by retention would otherwise be waited for forever).
                    let replay_end = self.stop.is_some_and(|stop| sequence + 1 >= stop || remaining == 0);
                    if replay_end {
                        return self.finish_replay(&mut chunk, &mut acks, pending, &mut rates).await;
                    }
                    if chunk.sequences.len() >= shared.batch_rows
                        && !self.flush(&mut chunk, &mut acks, pending, &mut rates).await
                    {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn finish_replay(
        &mut self,
        chunk: &mut Chunk,
        acks: &mut VecDeque<(u64, Acker)>,
        pending: u64,
        rates: &mut Rates,
    ) -> Result<(), ConnectorError> {
        if self.flush(chunk, acks, pending, rates).await {
            self.send(Fetched::End).await;
        }
        Ok(())
    }

    /// Decodes and sends the chunk; false when the source is gone.
    async fn flush(
        &mut self,
        chunk: &mut Chunk,
        acks: &mut VecDeque<(u64, Acker)>,
        pending: u64,
        rates: &mut Rates,
    ) -> bool {
        let Some(&last) = chunk.sequences.last() else { return true };
        let records: Vec<&[u8]> = chunk.payloads.iter().map(|p| p.as_ref()).collect();
        self.shared.payload.prepare(&records).await;
        let mut pieces = Vec::new();
        decode_lenient(&records, |r| self.shared.payload.decode(r), |piece| {
            pieces.push(piece);
            true
        });
        for piece in pieces {
            let fetched = match piece {
                DecodedRecords::Rows { first, rows } => {
                    rates.rows += rows.num_rows() as u64;
                    Fetched::Rows { next: chunk.sequences[first + rows.num_rows() - 1] + 1, rows }
                }
                DecodedRecords::Bad { index, reason } => Fetched::Bad {
                    sequence: chunk.sequences[index],
                    reason,
                    payload: payload_prefix(records[index]),
                },
            };
            if !self.send(fetched).await {
                return false;
            }
        }
        let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        rates.bytes += bytes;
        self.next = Some(last + 1);
        if self.live {
            if let Some(acker) = chunk.last_acker.take() {
                acks.push_back((last, acker));
            }
            self.shared.status.update(0, |p| {
                p.next_offset = Some(last as i64 + 1);
                // The consumer's pending count is the lag; shown as a high watermark so that
                // lag = high watermark - next offset holds as for Kafka.
                p.high_watermark = Some(last as i64 + 1 + pending as i64);
                p.bytes += bytes;
            });
        }
        chunk.payloads.clear();
        chunk.sequences.clear();
        chunk.last_acker = None;
        chunk.since = None;
        true
    }

    fn report_rates(&self, rates: &mut Rates) {
        let seconds = rates.since.elapsed().as_secs_f64().max(1e-3);
        if self.live {
            self.shared.status.update(0, |p| {
                p.rows_per_second = rates.rows as f64 / seconds;
                p.bytes_per_second = rates.bytes as f64 / seconds;
            });
        }
        *rates = Rates { since: Instant::now(), rows: 0, bytes: 0 };
    }
}

/// Acks the newest sent chunk before `position` (with `AckPolicy::All` that acks every message
/// before it too).
async fn ack_up_to(acks: &mut VecDeque<(u64, Acker)>, position: u64) {
    let mut newest = None;
    while acks.front().is_some_and(|(sequence, _)| *sequence < position) {
        newest = acks.pop_front();
    }
    if let Some((sequence, acker)) = newest
        && let Err(e) = acker.ack().await
    {
        // The next commit acks a later message, which covers this one.
        tracing::warn!(sequence, error = %e, "could not ack NATS messages");
    }
}

#[async_trait]
impl Source for NatsSource {
    fn schema(&self) -> SchemaRef {
        self.shared.schema.clone()
    }

    fn partitions(&self) -> usize {
        1
    }

    async fn next(&mut self) -> Result<SourceEvent, ConnectorError> {
        loop {
            if self.ended {
                return Ok(SourceEvent::End);
            }
            let reader = match &mut self.reader {
                Some(r) => r,
                None => self.start_reader(),
            };
            let Some(fetched) = reader.rx.recv().await else {
                self.reader = None;
                return Err(unavailable(format!("the reader of consumer '{}' stopped", self.shared.consumer)));
            };
            match fetched {
                Fetched::Started(start) => {
                    self.position.get_or_insert(start);
                    if self.live {
                        if !self.sought {
                            self.shared.started_at.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(start);
                        }
                        self.shared.status.update(0, |p| {
                            p.next_offset.get_or_insert(start as i64);
                        });
                    }
                }
                Fetched::Rows { rows, next } => {
                    self.position = Some(next);
                    return Ok(SourceEvent::Batch { partition: 0, rows });
                }
                Fetched::Bad { sequence, reason, payload } => {
                    self.position = Some(sequence + 1);
                    return Ok(SourceEvent::BadRecord { partition: 0, offset: sequence, reason, payload });
                }
                Fetched::End => {
                    self.ended = true;
                    return Ok(SourceEvent::PartitionEnd { partition: 0 });
                }
            }
        }
    }

    fn positions(&self) -> Vec<SourcePosition> {
        self.position.map(|offset| SourcePosition { partition: "0".into(), offset }).into_iter().collect()
    }

    async fn seek(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        let sequence = Self::sequence(positions)?;
        self.reader = None;
        self.start = sequence;
        self.position = sequence;
        self.sought = true;
        self.ended = false;
        Ok(())
    }

    /// A replay starts where the live reader started. After a restart that is not known (the
    /// live reader was sought to its checkpointed position), and the replay starts where
    /// `scan.startup.mode` says: the stream's first message for `earliest` (the default), the
    /// same instant for `timestamp`; for `latest`, the stream's end when the replay starts, so
    /// it reads nothing.
    fn replay_from_start(&self) -> Option<Box<dyn Source>> {
        let started = *self.shared.started_at.lock().unwrap_or_else(|p| p.into_inner());
        Some(Box::new(NatsSource::reader(self.shared.clone(), false, started)))
    }

    fn stop_at(&mut self, positions: &[SourcePosition]) {
        // No position: the live reader had read nothing, so neither does the replay.
        self.stop = Some(Self::sequence(positions).ok().flatten().unwrap_or(0));
        self.reader = None;
    }

    async fn commit(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        if let (Some(sequence), Some(reader)) = (Self::sequence(positions)?, &self.reader) {
            let _ = reader.commits.send(sequence);
        }
        Ok(())
    }

    fn status(&self) -> Option<Arc<ConnectorStatus>> {
        self.live.then(|| self.shared.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]))
    }

    fn options(pairs: &[(&str, &str)]) -> SourceOptions {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn json() -> SourceFormat {
        SourceFormat { format: "PLAIN".into(), encode: "JSON".into(), ..Default::default() }
    }

    async fn error_of(pairs: &[(&str, &str)], format: Option<SourceFormat>) -> ConnectorError {
        match NatsSource::new("s", schema(), &options(pairs), format.as_ref()).await {
            Ok(_) => panic!("{pairs:?} was accepted"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn options_are_checked_before_connecting() {
        let base = [("nats.server_url", "nats://127.0.0.1:1"), ("nats.stream", "s"), ("connector.validate", "false")];
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("nats.stream", "s")], "nats.server_url"),
            (vec![("nats.server_url", "nats://h:4222")], "nats.stream"),
            ([&base[..], &[("nats.user", "u")]].concat(), "nats.user"),
            ([&base[..], &[("nats.token", "t"), ("nats.user", "u"), ("nats.password", "p")]].concat(), "nats.token"),
            ([&base[..], &[("nats.max_ack_pending", "lots")]].concat(), "nats.max_ack_pending"),
            ([&base[..], &[("scan.startup.mode", "soon")]].concat(), "scan.startup.mode"),
            ([&base[..], &[("nats.subjects", "x")]].concat(), "nats.subjects"),
        ];
        for (pairs, expected) in cases {
            match error_of(&pairs, Some(json())).await {
                ConnectorError::InvalidOption { option, .. } => assert_eq!(option, expected, "{pairs:?}"),
                other => panic!("{pairs:?}: {other}"),
            }
        }
        match error_of(&base, None).await {
            ConnectorError::InvalidOption { option, .. } => assert_eq!(option, "format"),
            other => panic!("{other}"),
        }
        // Without validation the source is made without a server.
        let source = NatsSource::new("my.source", schema(), &options(&base), Some(&json())).await.unwrap();
        assert_eq!(source.shared.consumer, "weir-my_source");
        assert_eq!(source.partitions(), 1);
        assert!(source.positions().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_without_credentials() {
        let pairs = [("nats.server_url", "nats://weir:hunter2@127.0.0.1:1"), ("nats.stream", "s")];
        match error_of(&pairs, Some(json())).await {
            ConnectorError::Unavailable { reason, .. } => {
                assert!(reason.contains("127.0.0.1:1"), "{reason}");
                assert!(!reason.contains("hunter2"), "{reason}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn credentials_are_cut_from_urls() {
        assert_eq!(without_credentials("nats://u:p@h:4222,nats://h2:4222"), "nats://h:4222,nats://h2:4222");
        assert_eq!(without_credentials("tok@h:4222"), "h:4222");
        assert_eq!(without_credentials("h:4222"), "h:4222");
    }

    #[tokio::test]
    async fn positions_name_partition_zero() {
        let base = [("nats.server_url", "h:4222"), ("nats.stream", "s"), ("connector.validate", "false")];
        let mut source = NatsSource::new("s", schema(), &options(&base), Some(&json())).await.unwrap();
        source.seek(&[SourcePosition { partition: "0".into(), offset: 42 }]).await.unwrap();
        assert_eq!(source.positions(), vec![SourcePosition { partition: "0".into(), offset: 42 }]);
        assert!(matches!(
            source.seek(&[SourcePosition { partition: "1".into(), offset: 1 }]).await,
            Err(ConnectorError::InvalidPosition { .. })
        ));
    }
}
