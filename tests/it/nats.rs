//! NATS JetStream sources against a real `nats-server -js` with token auth
//! (`tests/services.sh` starts it and sets `WEIR_NATS_URL` and `WEIR_NATS_TOKEN`): JSON chat
//! events published to a stream, bad messages among them, read by a `connector = 'nats'` source
//! into a TUMBLE view that must equal DataFusion's batch answer over the good events; acks
//! follow checkpoints; a view made later replays the same messages.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::Config as StreamConfig};

use crate::formats::{CHAT_V1, avro_message};
use crate::chat::{BAD_MESSAGES, CHAT_VIEW, chat_events, counts_are_whole_after_a_restart, figure, oracle, unique_name, view_rows, wait_for};
use crate::common::Server;

/// The server's URL and token. `None` outside `tests/run.sh` (which starts one); in CI a
/// missing server is a failure, not a skip.
fn nats() -> Option<(String, String)> {
    match (std::env::var("WEIR_NATS_URL"), std::env::var("WEIR_NATS_TOKEN")) {
        (Ok(url), Ok(token)) => Some((url, token)),
        _ => {
            assert!(std::env::var_os("CI").is_none(), "CI must run the NATS tests: start a server with tests/services.sh");
            eprintln!("skipped: WEIR_NATS_URL is not set (run tests/run.sh, or source tests/services.sh and start_nats)");
            None
        }
    }
}

async fn jetstream(url: &str, token: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::with_token(token.to_string()).connect(url).await.expect("connect to NATS");
    jetstream::new(client)
}

/// Creates a stream named `name` holding the subjects `name.>`.
async fn create_stream(js: &jetstream::Context, name: &str) {
    js.create_stream(StreamConfig { name: name.to_string(), subjects: vec![format!("{name}.>")], ..Default::default() })
        .await
        .expect("create stream");
}

/// Publishes the messages in order and returns the stream sequence of each.
async fn publish<P: AsRef<[u8]>>(js: &jetstream::Context, messages: &[(String, P)]) -> Vec<u64> {
    let mut sequences = Vec::with_capacity(messages.len());
    for (subject, payload) in messages {
        let ack = js.publish(subject.clone(), bytes::Bytes::copy_from_slice(payload.as_ref())).await.expect("publish").await.expect("publish ack");
        sequences.push(ack.sequence);
    }
    sequences
}

/// The chat messages of `chat_events` interleaved across its partitions in event-time order
/// (one JetStream stream is one ordered log), each partition on its own subject.
fn interleaved(stream: &str, messages: Vec<(i32, String)>, per_partition: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(messages.len());
    for i in 0..per_partition {
        for p in 0..3 {
            let (partition, payload) = &messages[p * per_partition + i];
            out.push((format!("{stream}.p{partition}"), payload.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn tumble_view_matches_batch_bad_messages_are_counted_and_acks_follow_checkpoints() {
    let Some((url, token)) = nats() else { return };
    let js = jetstream(&url, &token).await;
    let stream = unique_name("chat");
    create_stream(&js, &stream).await;
    let (messages, mut events) = chat_events(7, 200, 0);
    let mut messages = interleaved(&stream, messages, 200);
    let bad = BAD_MESSAGES;
    let bad_at = [100, 251, 402];
    for (at, payload) in bad_at.iter().zip(bad) {
        messages.insert(*at, (format!("{stream}.p0"), payload.to_string()));
    }
    let sequences = publish(&js, &messages).await;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&dir.path().join("data"), &["--checkpoint-interval-ms", "500"]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE chat (stream_id VARCHAR, user_id BIGINT, ts TIMESTAMP, \
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (connector = 'nats', nats.server_url = '{url}', nats.token = '{token}', \
                   nats.stream = '{stream}', nats.subject = '{stream}.>') FORMAT PLAIN ENCODE JSON; \
             {CHAT_VIEW}"
        ))
        .await
        .unwrap();
    wait_for(&client, "chat", events.len() as i64, 3).await;
    assert_eq!(figure(&client, "SELECT late_rows FROM weir_catalog.sources WHERE name = 'chat'").await, 0);
    assert_eq!(view_rows(&client).await, oracle(&events).await, "first 600 events");

    // The bad messages, by stream sequence.
    let errors = client
        .query("SELECT \"offset\", error, payload FROM weir_catalog.source_errors WHERE source = 'chat' ORDER BY 1", &[])
        .await
        .unwrap();
    assert_eq!(errors.len(), 3);
    for ((row, at), payload) in errors.iter().zip(bad_at).zip(bad) {
        assert_eq!(row.get::<_, i64>(0) as u64, sequences[at]);
        assert!(!row.get::<_, String>(1).is_empty());
        assert_eq!(row.get::<_, String>(2), payload);
    }

    // More events later: the view follows incrementally.
    let (more, more_events) = chat_events(11, 50, 60);
    let sequences = publish(&js, &interleaved(&stream, more, 50)).await;
    let last = *sequences.last().unwrap();
    events.extend(more_events);
    wait_for(&client, "chat", events.len() as i64, 3).await;
    assert_eq!(view_rows(&client).await, oracle(&events).await, "after 150 more events");

    // Weir's position, the lag, and the durable consumer's acks once a checkpoint holds them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let row = client
            .query_one("SELECT \"offset\", lag FROM weir_catalog.source_partitions WHERE source = 'chat'", &[])
            .await
            .unwrap();
        let (offset, lag): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        let info = js.get_stream(&stream).await.unwrap().consumer_info("weir-chat").await.unwrap();
        if offset == Some(last as i64 + 1) && lag == Some(0) && info.ack_floor.stream_sequence == last && info.num_ack_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offset {offset:?} (want {}), lag {lag:?}, acked up to {} (want {last}), {} acks pending",
            last + 1,
            info.ack_floor.stream_sequence,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A view made now replays the stream from where the source started, up to where it is.
    client.batch_execute("CREATE MATERIALIZED VIEW everything AS SELECT count(*) AS n FROM chat").await.unwrap();
    assert_eq!(figure(&client, "SELECT n FROM everything").await, events.len() as i64);

    let status: String =
        client.query_one("SELECT status FROM weir_catalog.sources WHERE name = 'chat'", &[]).await.unwrap().get(0);
    assert_eq!(status, "running");
    let shown: String = client.query_one("SHOW CREATE SOURCE chat", &[]).await.unwrap().get(1);
    assert!(!shown.contains(&token), "{shown}");
    let (_, body) = server.http_get("/metrics");
    assert!(body.contains("weir_source_errors_total{source=\"chat\"} 3"), "{body}");

    // The token is sealed in the catalog file, and opens again after a restart: the source
    // reconnects with it.
    let catalog = std::fs::read_to_string(dir.path().join("data/catalog/catalog.json")).unwrap();
    assert!(catalog.contains("nats.token = 'weir-sealed:v1:") && !catalog.contains(&token), "the catalog file holds the token");
    server.kill_9();
    let server = Server::start_with(&dir.path().join("data"), &["--checkpoint-interval-ms", "500"]);
    let client = server.connect().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: String =
            client.query_one("SELECT status FROM weir_catalog.sources WHERE name = 'chat'", &[]).await.unwrap().get(0);
        if status == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "after a restart the source is {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The views come back, the replay reading the stream with the sealed token.
    counts_are_whole_after_a_restart(&client, events.len() as i64, deadline).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_and_a_missing_stream_are_errors_at_create() {
    let Some((url, token)) = nats() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    let create = |name: &str, token: &str, stream: &str| {
        format!(
            "CREATE SOURCE {name} (id BIGINT) WITH (connector = 'nats', nats.server_url = '{url}', \
             nats.token = '{token}', nats.stream = '{stream}') FORMAT PLAIN ENCODE JSON"
        )
    };
    let err = client.batch_execute(&create("a", "not-the-token", "s")).await.unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "08001", "{db:?}");
    assert!(db.message().to_lowercase().contains("authorization"), "{}", db.message());
    assert!(!db.message().contains("not-the-token"), "{}", db.message());

    let err = client.batch_execute(&create("b", &token, &unique_name("missing"))).await.unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "22023", "{db:?}");
    assert!(db.message().contains("does not exist"), "{}", db.message());
    assert!(!db.message().contains(&token), "{}", db.message());
}

/// A `nats-server -js` of the test's own (no auth), which the test can stop and start again on
/// the same port and storage.
struct OwnServer {
    port: u16,
    store: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnServer {
    fn start(store: std::path::PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = OwnServer { port, store, child: None };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (tests/services.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn status_of(client: &tokio_postgres::Client, source: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: String =
            client.query_one("SELECT status FROM weir_catalog.sources WHERE name = $1", &[&source]).await.unwrap().get(0);
        if wanted(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "status stayed {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_goes_away_is_shown_and_reading_resumes_without_duplicates() {
    if nats().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut nats = OwnServer::start(dir.path().join("nats"));
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    create_stream(&js, "events").await;
    let batch = |from: i64| (from..from + 100).map(|i| ("events.a".to_string(), format!(r#"{{"id": {i}}}"#))).collect::<Vec<_>>();
    publish(&js, &batch(0)).await;

    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE events (id BIGINT) WITH (connector = 'nats', nats.server_url = '{}', nats.stream = 'events') \
             FORMAT PLAIN ENCODE JSON; \
             CREATE MATERIALIZED VIEW seen AS SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(id) AS total FROM events",
            nats.url()
        ))
        .await
        .unwrap();
    wait_for(&client, "events", 100, 0).await;
    status_of(&client, "events", |s| s == "running").await;

    nats.stop();
    let down = status_of(&client, "events", |s| s.contains("unreachable")).await;
    assert!(down.contains(&format!("127.0.0.1:{}", nats.port)), "{down}");

    nats.restart();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    publish(&js, &batch(100)).await;
    wait_for(&client, "events", 200, 0).await;
    status_of(&client, "events", |s| s == "running").await;
    let row = client.query_one("SELECT n, ids, total FROM seen", &[]).await.unwrap();
    let (n, ids, total): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((n, ids, total), (200, 200, (0..200).sum::<i64>()), "every message once");
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_modes_latest_and_timestamp_skip_earlier_messages() {
    let Some((url, token)) = nats() else { return };
    let js = jetstream(&url, &token).await;
    let stream = unique_name("startup");
    create_stream(&js, &stream).await;
    let batch = |from: i64, n: i64| (from..from + n).map(|i| (format!("{stream}.x"), format!(r#"{{"id": {i}}}"#))).collect::<Vec<_>>();
    publish(&js, &batch(0, 10)).await;
    // The server stamps messages with its clock: leave a gap on both sides of the cut.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cut = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&js, &batch(10, 5)).await;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    let source = |name: &str, mode: &str| {
        format!(
            "CREATE SOURCE {name} (id BIGINT) WITH (connector = 'nats', nats.server_url = '{url}', nats.token = '{token}', \
             nats.stream = '{stream}', {mode}) FORMAT PLAIN ENCODE JSON; \
             CREATE MATERIALIZED VIEW {name}_ids AS SELECT count(*) AS n, min(id) AS first, max(id) AS last FROM {name}"
        )
    };
    client
        .batch_execute(&source("since_cut", &format!("scan.startup.mode = 'timestamp', scan.startup.timestamp.millis = '{cut}'")))
        .await
        .unwrap();
    client.batch_execute(&source("from_now", "scan.startup.mode = 'latest'")).await.unwrap();
    wait_for(&client, "since_cut", 5, 0).await;
    // `latest` starts after the last message when the reader starts (sequence 16): it reads
    // only what comes next.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query_one("SELECT \"offset\" FROM weir_catalog.source_partitions WHERE source = 'from_now'", &[])
        .await
        .unwrap()
        .get::<_, Option<i64>>(0)
        .is_none()
    {
        assert!(Instant::now() < deadline, "from_now never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(figure(&client, "SELECT \"offset\" FROM weir_catalog.source_partitions WHERE source = 'from_now'").await, 16);
    publish(&js, &batch(15, 3)).await;
    wait_for(&client, "from_now", 3, 0).await;
    wait_for(&client, "since_cut", 8, 0).await;
    let ids = |view: &str| format!("SELECT n, first, last FROM {view}");
    let row = client.query_one(&ids("since_cut_ids"), &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (8, 10, 17));
    let row = client.query_one(&ids("from_now_ids"), &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (3, 15, 17));
}

/// `ENCODE AVRO` with an inline schema: bare Avro bodies (no registry, no wire-format prefix)
/// published to a stream, a body that does not decode among them.
#[tokio::test(flavor = "multi_thread")]
async fn avro_with_an_inline_schema_matches_batch() {
    let Some((url, token)) = nats() else { return };
    let js = jetstream(&url, &token).await;
    let stream = unique_name("avro");
    create_stream(&js, &stream).await;
    let (_, events) = chat_events(9, 100, 0);
    // Interleaved across the generator's partitions, as `interleaved` does for JSON.
    let mut messages: Vec<(String, Vec<u8>)> = (0..100)
        .flat_map(|i| (0..3).map(move |p| (p, p * 100 + i)))
        .map(|(p, at)| (format!("{stream}.p{p}"), avro_message(&events[at], None, false)))
        .collect();
    messages.insert(120, (format!("{stream}.p1"), vec![0x02, 0xff, 0xff]));
    publish(&js, &messages).await;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    let inline = CHAT_V1.replace('\'', "''");
    client
        .batch_execute(&format!(
            "CREATE SOURCE chat (stream_id VARCHAR, user_id BIGINT, ts TIMESTAMP, \
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (connector = 'nats', nats.server_url = '{url}', nats.token = '{token}', nats.stream = '{stream}') \
             FORMAT PLAIN ENCODE AVRO (schema = '{inline}'); \
             {CHAT_VIEW}"
        ))
        .await
        .unwrap();
    wait_for(&client, "chat", events.len() as i64, 1).await;
    assert_eq!(figure(&client, "SELECT late_rows FROM weir_catalog.sources WHERE name = 'chat'").await, 0);
    assert_eq!(view_rows(&client).await, oracle(&events).await);
}

/// A nested JSON object into a `JSONB` column, read with `->` and `->>` in a view: counts per
/// country and OS equal the ones counted from the published messages.
#[tokio::test(flavor = "multi_thread")]
async fn nested_json_lands_in_a_jsonb_column_and_views_read_it_with_arrows() {
    let Some((url, token)) = nats() else { return };
    let js = jetstream(&url, &token).await;
    let stream = unique_name("jsonb");
    create_stream(&js, &stream).await;
    let (messages, events) = chat_events(21, 60, 0);
    let mut expected: std::collections::BTreeMap<(Option<String>, Option<String>), i64> = Default::default();
    let with_meta: Vec<(i32, String)> = messages
        .into_iter()
        .enumerate()
        .map(|(i, (p, json))| {
            let (country, os) = (["de", "us", "br"][i % 3], ["ios", "android"][i % 2]);
            let (meta, key) = match i {
                i if i % 15 == 0 => (String::new(), (None, None)),
                i if i % 10 == 0 => (r#", "meta": "x""#.to_string(), (None, None)),
                _ => (
                    format!(r#", "meta": {{"country": "{country}", "client": {{"os": "{os}", "v": [1, 2]}}}}"#),
                    (Some(country.to_string()), Some(os.to_string())),
                ),
            };
            *expected.entry(key).or_default() += 1;
            (p, format!("{}{meta}}}", json.trim_end_matches('}')))
        })
        .collect();
    publish(&js, &interleaved(&stream, with_meta, 60)).await;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE chat (stream_id VARCHAR, user_id BIGINT, ts TIMESTAMP, meta JSONB, \
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (connector = 'nats', nats.server_url = '{url}', nats.token = '{token}', nats.stream = '{stream}') \
             FORMAT PLAIN ENCODE JSON; \
             {CHAT_VIEW}; \
             CREATE MATERIALIZED VIEW by_client AS \
                 SELECT meta ->> 'country' AS country, meta -> 'client' ->> 'os' AS os, count(*) AS n \
                 FROM chat GROUP BY 1, 2"
        ))
        .await
        .unwrap();
    wait_for(&client, "chat", events.len() as i64, 0).await;
    assert_eq!(view_rows(&client).await, oracle(&events).await);
    let rows = client.query("SELECT country, os, n FROM by_client", &[]).await.unwrap();
    let got: std::collections::BTreeMap<(Option<String>, Option<String>), i64> =
        rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect();
    assert_eq!(got, expected);
}

/// Nested JSON objects fill STRUCT columns (to any depth, timestamps inside included); views
/// read their fields with Postgres's `(col).field` and with `col.field`, and clients get whole
/// structs as records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_json_fills_struct_columns_and_views_read_their_fields() {
    let Some((url, token)) = nats() else { return };
    let js = jetstream(&url, &token).await;
    let stream = unique_name("struct");
    create_stream(&js, &stream).await;
    let (messages, events) = chat_events(23, 60, 0);
    /// (country, os) → (rows, newest `seen` in epoch milliseconds).
    type ByClient = std::collections::BTreeMap<(Option<String>, Option<String>), (i64, Option<i64>)>;
    let mut expected = ByClient::new();
    let with_user: Vec<(i32, String)> = messages
        .into_iter()
        .enumerate()
        .map(|(i, (p, json))| {
            let (country, os) = (["de", "us", "br"][i % 3], ["ios", "android"][i % 2]);
            let seen = 1_767_225_600_000i64 + i as i64;
            let (user, key, seen) = match i {
                i if i % 15 == 0 => (String::new(), (None, None), None),
                i if i % 10 == 0 => (r#", "user": {"country": null}"#.to_string(), (None, None), None),
                i if i % 7 == 0 => (format!(r#", "user": {{"country": "{country}"}}"#), (Some(country.to_string()), None), None),
                _ => (
                    format!(r#", "user": {{"country": "{country}", "client": {{"os": "{os}", "seen": {seen}, "v": [1]}}}}"#),
                    (Some(country.to_string()), Some(os.to_string())),
                    Some(seen),
                ),
            };
            let entry = expected.entry(key).or_insert((0, None));
            entry.0 += 1;
            entry.1 = entry.1.max(seen);
            (p, format!("{}{user}}}", json.trim_end_matches('}')))
        })
        .collect();
    publish(&js, &interleaved(&stream, with_user, 60)).await;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE chat (stream_id VARCHAR, user_id BIGINT, ts TIMESTAMP, \
                 \"user\" STRUCT<country TEXT, client STRUCT<os TEXT, seen TIMESTAMPTZ>>, \
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (connector = 'nats', nats.server_url = '{url}', nats.token = '{token}', nats.stream = '{stream}') \
             FORMAT PLAIN ENCODE JSON; \
             {CHAT_VIEW}; \
             CREATE MATERIALIZED VIEW by_client AS \
                 SELECT (\"user\").country, \"user\".client.os, count(*) AS n, \
                        max((\"user\").client.seen) AS last_seen \
                 FROM chat GROUP BY 1, 2; \
             CREATE MATERIALIZED VIEW clients AS SELECT user_id, (\"user\").client FROM chat"
        ))
        .await
        .unwrap();
    wait_for(&client, "chat", events.len() as i64, 0).await;
    assert_eq!(view_rows(&client).await, oracle(&events).await);
    let rows = client
        .query("SELECT country, os, n, round(extract(epoch FROM last_seen) * 1000)::bigint FROM by_client", &[])
        .await
        .unwrap();
    let got: ByClient = rows.iter().map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3)))).collect();
    assert_eq!(got, expected);

    // Whole structs reach clients as Postgres records, in text.
    let text = client
        .simple_query("SELECT client FROM clients WHERE client IS NOT NULL LIMIT 1")
        .await
        .unwrap();
    let value = text
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row");
    assert!(
        value.starts_with("(ios,\"2026-01-01 00:00:00") || value.starts_with("(android,\"2026-01-01 00:00:00"),
        "{value}"
    );
    let described = client.prepare("SELECT client FROM clients").await.unwrap();
    assert_eq!(described.columns()[0].type_().oid(), 2249, "a struct column is a record");
}
