//! `weir produce-chat`: live-stream chat events into Kafka topics, for the chat-analytics demo
//! over Kafka (`examples/chat_kafka.sql`) and for trying the Kafka source by hand.
//!
//! Two topics: `chat` (one message per chat line: stream, user, text, event time) and `viewer`
//! (each stream's viewer count once per second of event time). Messages are keyed by stream, so
//! one stream's messages keep their order within a partition. Event time is the wall clock, a
//! chat line up to 2 s late (as clients' clocks and queues make it), so watermarks advance and
//! windows close as the demo runs. Topics are created when missing.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::error::{Result, SqlState, WeirError};

/// What to produce, and where.
#[derive(Debug, Clone)]
pub struct ChatProducer {
    pub brokers: String,
    pub chat_topic: String,
    pub viewer_topic: String,
    /// Partitions of topics this creates.
    pub partitions: i32,
    /// Chat messages per second (0: as fast as possible).
    pub rate: f64,
    /// Chat messages to produce (0: until stopped).
    pub messages: u64,
    pub streams: usize,
    pub seed: u64,
}

/// What was produced.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Produced {
    pub chat: u64,
    pub viewer: u64,
}

const STREAMS: [&str; 8] =
    ["lofi_beats", "speedrun_any", "chess_blitz", "cooking_live", "retro_games", "late_night_talk", "pixel_art", "jazz_radio"];
const USERS: [&str; 15] = ["ada", "bo", "cy", "dee", "eli", "fay", "gus", "hal", "ivy", "jo", "kit", "lu", "max", "nia", "oz"];
const WORDS: [&str; 10] = ["gg", "lol", "pog", "nice", "wow", "hi chat", "what song is this", "first", "clip it", "o7"];

/// A small deterministic generator (xorshift64), enough for demo data.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn kafka_error(what: &str, e: KafkaError) -> WeirError {
    WeirError::new(SqlState::UnableToConnect, format!("{what}: {e}"))
}

impl ChatProducer {
    pub async fn run(&self) -> Result<Produced> {
        self.create_topics().await?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .create()
            .map_err(|e| kafka_error("cannot create the Kafka producer", e))?;
        let streams = &STREAMS[..self.streams.clamp(1, STREAMS.len())];
        let mut random = Random(self.seed.max(1));
        let mut produced = Produced::default();
        let started = Instant::now();
        let mut last_viewer_second = None;
        let mut pending = Vec::new();
        while self.messages == 0 || produced.chat < self.messages {
            let now_ms = chrono::Utc::now().timestamp_millis();
            // Viewer counts once per wall-clock second, for every stream.
            let second = now_ms / 1000;
            if last_viewer_second != Some(second) {
                last_viewer_second = Some(second);
                for (i, stream) in streams.iter().enumerate() {
                    let viewers = 100 * (i as u64 + 1) + random.next() % 50;
                    let payload = format!(r#"{{"stream_id": "{stream}", "viewers": {viewers}, "ts": {}}}"#, second * 1000);
                    pending.push(
                        producer
                            .send_result(FutureRecord::to(&self.viewer_topic).key(*stream).payload(&payload))
                            .map_err(|(e, _)| e),
                    );
                    produced.viewer += 1;
                }
            }
            let stream = random.pick(streams);
            let late_ms = (random.next() % 2000) as i64;
            let payload = format!(
                r#"{{"stream_id": "{stream}", "user_id": "{}", "message": "{}", "ts": {}}}"#,
                random.pick(&USERS),
                random.pick(&WORDS),
                now_ms - late_ms
            );
            pending.push(
                producer.send_result(FutureRecord::to(&self.chat_topic).key(stream).payload(&payload)).map_err(|(e, _)| e),
            );
            produced.chat += 1;
            if pending.len() >= 10_000 {
                wait_for_deliveries(&mut pending).await?;
            }
            if self.rate > 0.0 {
                let due = started + Duration::from_secs_f64(produced.chat as f64 / self.rate);
                tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            }
        }
        wait_for_deliveries(&mut pending).await?;
        producer.flush(Duration::from_secs(30)).map_err(|e| kafka_error("flushing messages failed", e))?;
        Ok(produced)
    }

    async fn create_topics(&self) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .map_err(|e| kafka_error("cannot create the Kafka admin client", e))?;
        let topics: Vec<NewTopic> = [&self.chat_topic, &self.viewer_topic]
            .iter()
            .map(|t| NewTopic::new(t, self.partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics(&topics, &options).await.map_err(|e| kafka_error(&format!("cannot create topics on {}", self.brokers), e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(WeirError::new(
                        SqlState::UnableToConnect,
                        format!("cannot create topic {topic} on {}: {code}", self.brokers),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A message handed to the producer (or why it could not be).
type Delivery = std::result::Result<rdkafka::producer::DeliveryFuture, KafkaError>;

/// Waits until every queued message is acknowledged by the broker.
async fn wait_for_deliveries(pending: &mut Vec<Delivery>) -> Result<()> {
    for delivery in pending.drain(..) {
        let future = delivery.map_err(|e| kafka_error("cannot queue a message", e))?;
        match future.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(kafka_error("a message was not delivered", e)),
            Err(_) => return Err(WeirError::internal("the producer stopped before delivering a message")),
        }
    }
    Ok(())
}
