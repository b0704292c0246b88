//! Recovery from checkpoints: a server killed with `kill -9` again and again while it ingests
//! comes back each time from its newest checkpoint, and its views end up exactly equal to a
//! batch computation over every event (nothing lost, nothing counted twice).
//!
//! The input is deterministic in event time (Nexmark bids from a fixed base time, one split, a
//! watermark delay no bid exceeds), so the uninterrupted result is well defined: DataFusion
//! computes it over the same bids written to Parquet by `weir generate-nexmark`'s code.

use std::time::Duration;

use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::clickhouse::{ch, sorted_lines, view_lines};
use crate::common::Server;
use crate::files::{batch_rows, weir_rows};
use crate::streaming::wait_until_source_ended;

const EVENTS: u64 = 120_000;
const BASE_TIME: &str = "2026-01-01 00:00:00";

/// A small deterministic generator (the seed is printed, so a failing run can be repeated with
/// `WEIR_CRASH_SEED`).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The seed of a crash test (printed; `WEIR_CRASH_SEED` repeats a run) and its generator.
fn crash_seed(test: &str) -> (u64, Lcg) {
    let seed: u64 = std::env::var("WEIR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("{test} crash test seed: {seed} (set WEIR_CRASH_SEED to repeat)");
    (seed, Lcg(seed))
}

/// `(name, the view's columns to compare, the same result computed by DataFusion over `bids`)`.
const VIEWS: [(&str, &str, &str); 7] = [
    (
        "tumble",
        "SELECT auction, window_start, n, s, hi FROM tumble",
        "SELECT auction, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00'), \
                count(*), sum(price), max(price) FROM bids GROUP BY 1, 2",
    ),
    (
        "hop",
        "SELECT auction, window_start, n FROM hop",
        "SELECT auction, ws, count(*) FROM ( \
            SELECT auction, CAST(date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00') AS BIGINT) \
                   - 2000000 * k AS ws \
            FROM bids CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS shifts(k)) GROUP BY 1, 2",
    ),
    (
        // Kept by panes (EXPLAIN: "HOP by panes").
        "hop_closed",
        "SELECT auction, window_start, n, hi FROM hop_closed",
        "SELECT auction, ws, count(*), max(price) FROM ( \
            SELECT auction, price, CAST(date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00') AS BIGINT) \
                   - 2000000 * k AS ws \
            FROM bids CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS shifts(k)) GROUP BY 1, 2",
    ),
    (
        "by_bidder",
        "SELECT b, n, s, lo FROM by_bidder",
        "SELECT bidder % 100, count(*), sum(price), min(price) FROM bids GROUP BY 1",
    ),
    (
        "per_window",
        "SELECT window_start, groups, n, hi FROM per_window",
        "SELECT ws, count(*), sum(n), max(hi) FROM ( \
            SELECT auction, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00') AS ws, \
                   count(*) AS n, max(price) AS hi FROM bids GROUP BY 1, 2) GROUP BY ws",
    ),
    (
        "closed",
        "SELECT auction, window_start, n FROM closed",
        "SELECT auction, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00'), count(*) \
         FROM bids GROUP BY 1, 2",
    ),
    (
        "top_bids",
        "SELECT auction, price, window_start FROM top_bids",
        "SELECT b.auction, b.price, b.ws FROM \
            (SELECT auction, price, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00') AS ws FROM bids) b \
            JOIN (SELECT date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00') AS ws, max(price) AS m \
                  FROM bids GROUP BY 1) w ON b.ws = w.ws AND b.price = w.m",
    ),
];

fn ddl() -> String {
    format!(
        "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, \
            date_time TIMESTAMP, extra VARCHAR, WATERMARK FOR date_time AS date_time - INTERVAL '2' SECOND) \
         WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = '{EVENTS}', \
            nexmark.base.time = '{BASE_TIME}', nexmark.rows.per.second = '15000', nexmark.max.chunk.size = '500'); \
         CREATE MATERIALIZED VIEW tumble AS SELECT auction, window_start, count(*) AS n, sum(price) AS s, max(price) AS hi \
            FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY auction, window_start; \
         CREATE MATERIALIZED VIEW hop AS SELECT auction, window_start, count(*) AS n \
            FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start; \
         CREATE MATERIALIZED VIEW hop_closed AS SELECT auction, window_start, count(*) AS n, max(price) AS hi \
            FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start \
            EMIT ON WINDOW CLOSE; \
         CREATE MATERIALIZED VIEW by_bidder AS SELECT bidder % 100 AS b, count(*) AS n, sum(price) AS s, min(price) AS lo \
            FROM bid GROUP BY bidder % 100; \
         CREATE MATERIALIZED VIEW per_window AS SELECT window_start, count(*) AS groups, sum(n) AS n, max(hi) AS hi \
            FROM tumble GROUP BY window_start; \
         CREATE MATERIALIZED VIEW closed AS SELECT auction, window_start, count(*) AS n \
            FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY auction, window_start EMIT ON WINDOW CLOSE; \
         CREATE MATERIALIZED VIEW top_bids AS SELECT b.auction, b.price, b.window_start \
            FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) b \
            JOIN (SELECT window_start, max(price) AS m FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start) w \
            ON b.window_start = w.window_start AND b.price = w.m"
    )
}

/// The newest checkpoint directory under `dir` (the default store, `<data dir>/checkpoints`).
fn newest_checkpoint(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut epochs: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("checkpoints")).ok()?.flatten().map(|e| e.path()).collect();
    epochs.sort();
    epochs.pop()
}

/// Where a crash test keeps its checkpoints.
enum Store {
    /// The default: `<data dir>/checkpoints`.
    Local,
    /// `s3://<bucket>/<prefix>` on the S3-compatible server `tests/services.sh start_s3` runs.
    S3 { endpoint: String, bucket: String },
}

#[tokio::test(flavor = "multi_thread")]
async fn views_survive_repeated_kill_9_exactly() {
    crash_test(Store::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn views_survive_repeated_kill_9_with_checkpoints_on_s3() {
    let (Ok(endpoint), Ok(bucket)) = (std::env::var("WEIR_S3_ENDPOINT"), std::env::var("WEIR_S3_BUCKET")) else {
        eprintln!("skipped: WEIR_S3_ENDPOINT is not set (run tests/run.sh, or source tests/services.sh and start_s3)");
        return;
    };
    crash_test(Store::S3 { endpoint, bucket }).await;
}

/// Ingests Nexmark bids into five views, kills the server 10 times at random moments (once
/// damaging the newest checkpoint first, on a local store), restarts it each time, and compares
/// every view with DataFusion over all the bids.
async fn crash_test(store: Store) {
    let (seed, mut rng) = crash_seed("nexmark");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("weir.log");
    let mut flags: Vec<String> = ["--barrier-interval-ms", "100", "--checkpoint-interval-ms", "300"].map(String::from).to_vec();
    let mut env: Vec<(String, String)> = Vec::new();
    if let Store::S3 { endpoint, bucket } = &store {
        let prefix = dir.path().file_name().unwrap().to_string_lossy().trim_start_matches('.').to_string();
        flags.extend(["--state-store".to_string(), format!("s3://{bucket}/crash-{prefix}")]);
        for (k, v) in [
            ("AWS_ENDPOINT", endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ] {
            env.push((k.to_string(), v.to_string()));
        }
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let bids = weir::generate::BidFiles {
        dir: dir.path().join("bids"),
        events: EVENTS,
        files: 1,
        base_time: BASE_TIME.into(),
        parquet: true,
        csv: false,
    }
    .write()
    .await
    .unwrap();

    let server = Server::start_logged(&data, &flags, &env, &log);
    server.connect().await.batch_execute(&ddl()).await.unwrap();
    // The closed windows also go to ClickHouse, into a plain MergeTree: a window written twice
    // would be there twice.
    let clickhouse = std::env::var("WEIR_CLICKHOUSE_URL").ok();
    let sink_table = format!("crash_{}", seed % 1_000_000_007);
    if let Some(url) = &clickhouse {
        ch(url, &format!(
            "CREATE TABLE {sink_table} (auction Int64, window_start DateTime, n Int64, weir_epoch UInt64) \
             ENGINE = MergeTree ORDER BY (auction, window_start)"
        ))
        .await;
        server
            .connect()
            .await
            .batch_execute(&format!(
                "CREATE SINK closed_out FROM closed WITH (connector = 'clickhouse', clickhouse.url = '{url}', \
                 clickhouse.table = '{sink_table}')"
            ))
            .await
            .unwrap();
    } else {
        eprintln!("no ClickHouse sink: WEIR_CLICKHOUSE_URL is not set");
    }
    let mut server = Some(server);
    let mut kills = 0;
    let mut corrupted = false;
    while kills < 10 {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1200))).await;
        let running = server.take().unwrap();
        let ended: bool = running
            .connect()
            .await
            .query_one("SELECT ended FROM weir_catalog.sources WHERE name = 'bid'", &[])
            .await
            .unwrap()
            .get(0);
        running.kill_9();
        kills += 1;
        eprintln!("kill {kills}: source ended before the kill: {ended}");
        // Once, damage the newest checkpoint: recovery must fall back to the one before it.
        if !corrupted && kills >= 3 && matches!(store, Store::Local) && let Some(newest) = newest_checkpoint(&data) {
            let part = newest.join("0.arrow");
            if part.exists() {
                std::fs::write(&part, b"not arrow").unwrap();
                corrupted = true;
                eprintln!("damaged {}", part.display());
            }
        }
        server = Some(Server::start_logged(&data, &flags, &env, &log));
    }
    let server = server.unwrap();
    let client = server.connect().await;
    wait_until_source_ended(&client, "bid").await;

    let oracle = SessionContext::new();
    let parquet = dir.path().join("bids/parquet");
    oracle.register_parquet("bids", parquet.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    for (name, weir_sql, oracle_sql) in VIEWS {
        let expected = batch_rows(&oracle.sql(oracle_sql).await.unwrap().collect().await.unwrap());
        assert!(!expected.is_empty(), "{name}: the oracle has no rows");
        let got = weir_rows(&client, weir_sql).await;
        assert_eq!(got.len(), expected.len(), "{name}: row count (seed {seed})");
        assert_eq!(got, expected, "{name}: contents (seed {seed})");
    }
    if let Some(url) = &clickhouse {
        let view = view_lines(&client, "SELECT auction, window_start, n FROM closed").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let table = sorted_lines(&ch(url, &format!("SELECT auction, window_start, n FROM {sink_table}")).await);
            if table == view {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ClickHouse holds {} rows, the view {} (seed {seed}); first differences: {:?}",
                table.len(),
                view.len(),
                table.iter().zip(&view).find(|(a, b)| a != b)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let late: i64 = client.query_one("SELECT late_rows FROM weir_catalog.sources WHERE name = 'bid'", &[]).await.unwrap().get(0);
    assert_eq!(late, 0);
    // The restarted server goes on checkpointing, and says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let row = client.query_one("SELECT count(*), min(bytes_written), max(views) FROM weir_catalog.checkpoints", &[]).await.unwrap();
        let (count, bytes, views): (i64, Option<i64>, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        if count > 0 {
            assert!(bytes.unwrap_or(0) > 0 && views == Some(VIEWS.len() as i64), "{count} checkpoints, {bytes:?} bytes, {views:?} views");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint listed in weir_catalog.checkpoints");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = server.http_get("/metrics");
    assert!(metrics.lines().any(|l| l.starts_with("weir_checkpoint_epoch ")), "{metrics}");
    assert!(bids.bids > 100_000);
    if matches!(store, Store::Local) {
        // Operators hand in only their changes once a checkpoint holds their state.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !newest_checkpoint(&data)
            .and_then(|c| std::fs::read_to_string(c.join("MANIFEST.json")).ok())
            .is_some_and(|m| m.lines().any(|l| l.contains("/op/") && l.contains("/delta/")))
        {
            assert!(std::time::Instant::now() < deadline, "no checkpoint holds an operator's changes");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let log = std::fs::read_to_string(&log).unwrap();
    // Views came back from their checkpointed state, not rebuilt from the source's start.
    let recoveries: Vec<&str> = log.lines().filter(|l| l.contains("recovered from checkpoint")).collect();
    eprintln!("{}", recoveries.join("\n"));
    // A checkpoint taken while the views were still being created holds only those created
    // before it: the others are rebuilt from the source (and must still come out exact).
    assert!(recoveries.len() >= 5, "too few recoveries from a checkpoint: {recoveries:?}");
    let all = VIEWS.len();
    let views = |l: &str, n: usize| l.contains(&format!("\"views\":{n}")) && l.contains(&format!("\"rebuilt\":{}", all - n));
    assert!(recoveries.iter().all(|l| (1..=all).any(|n| views(l, n))), "{recoveries:?}");
    assert!(recoveries.iter().filter(|l| views(l, all)).count() >= 5, "{recoveries:?}");
    assert!(!log.contains("does not restore"), "a view's state did not restore");
    if corrupted {
        assert!(log.contains("skipping a checkpoint that is incomplete or damaged"), "the damaged checkpoint was not reported");
    }
}

/// Chat messages produced to a three-partition Kafka topic in rounds while the server is
/// killed and restarted between and during them: a TUMBLE view and a running count per stream
/// end up equal to DataFusion over every message produced. The watermark never treats a
/// partition as idle here, so which rows are on time does not depend on read timing.
#[tokio::test(flavor = "multi_thread")]
async fn views_over_kafka_survive_repeated_kill_9_exactly() {
    let Some((brokers, _)) = crate::kafka::broker() else { return };
    let (seed, mut rng) = crash_seed("kafka");
    let topic = crate::chat::unique_name("crash");
    crate::kafka::create_topic(&brokers, &topic, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("weir.log");
    let flags = ["--barrier-interval-ms", "100", "--checkpoint-interval-ms", "300"];
    let server = Server::start_logged(&data, &flags, &[], &log);
    server
        .connect()
        .await
        .batch_execute(&format!(
            "CREATE SOURCE chat (stream_id VARCHAR, user_id BIGINT, ts TIMESTAMP, \
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{brokers}', \
                   scan.startup.mode = 'earliest', watermark.idle_timeout = '0', kafka.batch.rows = '100') \
             FORMAT PLAIN ENCODE JSON; \
             {}; \
             CREATE MATERIALIZED VIEW totals AS SELECT stream_id, count(*) AS n, max(user_id) AS m FROM chat GROUP BY stream_id",
            crate::chat::CHAT_VIEW
        ))
        .await
        .unwrap();
    let mut server = Some(server);
    let mut events = Vec::new();
    for round in 0..10i64 {
        let (messages, round_events) = crate::chat::chat_events(seed.wrapping_add(round as u64), 300, round * 60);
        events.extend(round_events);
        let (b, t) = (brokers.clone(), topic.clone());
        let producing = tokio::task::spawn_blocking(move || crate::kafka::produce(&b, &t, &messages));
        tokio::time::sleep(Duration::from_millis(100 + rng.below(700))).await;
        server.take().unwrap().kill_9();
        producing.await.unwrap();
        server = Some(Server::start_logged(&data, &flags, &[], &log));
    }
    let server = server.unwrap();
    let client = server.connect().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let read: Option<i64> = client.query_one("SELECT sum(n)::BIGINT FROM totals", &[]).await.unwrap().get(0);
        if read == Some(events.len() as i64) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the views hold {read:?} of {} messages (seed {seed})", events.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(crate::chat::view_rows(&client).await, crate::chat::oracle(&events).await, "seed {seed}");
    let mut expected: std::collections::BTreeMap<String, (i64, i64)> = std::collections::BTreeMap::new();
    for (stream, user, _) in &events {
        let e = expected.entry(stream.clone()).or_insert((0, i64::MIN));
        e.0 += 1;
        e.1 = e.1.max(*user);
    }
    let totals: std::collections::BTreeMap<String, (i64, i64)> = client
        .query("SELECT stream_id, n, m FROM totals", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(totals, expected, "seed {seed}");
    let late: i64 = client.query_one("SELECT late_rows FROM weir_catalog.sources WHERE name = 'chat'", &[]).await.unwrap().get(0);
    assert_eq!(late, 0);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.lines().filter(|l| l.contains("recovered from checkpoint") && l.contains("\"views\":2")).count() >= 5, "too few recoveries");
}

/// Waits until a checkpoint holds every view as it is now (taken at or after the newest epoch
/// any view reported).
async fn wait_for_a_checkpoint_of_every_view(client: &tokio_postgres::Client) {
    let epoch: i64 = client.query_one("SELECT max(last_epoch) FROM weir_catalog.materialized_views", &[]).await.unwrap().get(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.query_one("SELECT count(*) FROM weir_catalog.checkpoints WHERE epoch >= $1", &[&epoch]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint after epoch {epoch}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Right after a restart, before any new epoch, a query sees the restored contents: the view
/// is not empty while it waits for its first barrier.
#[tokio::test(flavor = "multi_thread")]
async fn restored_views_answer_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--checkpoint-interval-ms", "200"];
    let server = Server::start_with(dir.path(), &flags);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE g (k BIGINT, v BIGINT) WITH (connector = 'datagen', datagen.rows.per.second = '0', \
                 datagen.max.rows = '5000', fields.k.kind = 'sequence', fields.v.kind = 'random', fields.v.max = '9'); \
             CREATE MATERIALIZED VIEW per_v AS SELECT v, count(*) AS n FROM g GROUP BY v",
        )
        .await
        .unwrap();
    wait_until_source_ended(&client, "g").await;
    wait_for_a_checkpoint_of_every_view(&client).await;
    let before = crate::common::text_rows(&client, "SELECT v, n FROM per_v ORDER BY v").await;
    assert_eq!(before.len(), 10);
    server.kill_9();

    // A long barrier interval: the restored view must answer before its first epoch.
    let server = Server::start_with(dir.path(), &["--checkpoint-interval-ms", "200", "--barrier-interval-ms", "60000"]);
    let client = server.connect().await;
    assert_eq!(crate::common::text_rows(&client, "SELECT v, n FROM per_v ORDER BY v").await, before);
}

/// Views over tables resume from the checkpoint too: the table's commits after the
/// checkpoint's position come from the log, through the same watermark rule, so the views end
/// up equal to the same queries over the tables, with inserts and deletes, across kills.
#[tokio::test(flavor = "multi_thread")]
async fn views_over_tables_resume_from_the_checkpoint() {
    let (seed, mut rng) = crash_seed("tables");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("weir.log");
    let flags = ["--barrier-interval-ms", "50", "--checkpoint-interval-ms", "100"];
    let mut server = Server::start_logged(&data, &flags, &[], &log);
    server
        .connect()
        .await
        .batch_execute(
            "CREATE TABLE acct (k INT, v BIGINT); \
             CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n, sum(v) AS s FROM acct GROUP BY k; \
             CREATE TABLE ev (k INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY; \
             CREATE MATERIALIZED VIEW w AS SELECT window_start, count(*) AS n, max(k) AS top \
                FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY window_start",
        )
        .await
        .unwrap();
    for round in 0..8i64 {
        let client = server.connect().await;
        for i in 0..20i64 {
            let (k, v) = (rng.below(7) as i32, rng.below(1000) as i64);
            client.execute("INSERT INTO acct VALUES ($1, $2)", &[&k, &v]).await.unwrap();
            let second = round * 40 + i * 2;
            client
                .batch_execute(&format!("INSERT INTO ev VALUES ({k}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{second}' SECOND)"))
                .await
                .unwrap();
        }
        // One commit with several changes to the table (a delete, an insert, an update).
        let (k, k2) = (rng.below(7), rng.below(7));
        client
            .batch_execute(&format!(
                "BEGIN; DELETE FROM acct WHERE k = {k}; INSERT INTO acct VALUES ({k}, 1); \
                 UPDATE acct SET v = v + 1 WHERE k = {k2}; COMMIT"
            ))
            .await
            .unwrap();
        // Every other kill comes right after the commits, before a checkpoint holds them: those
        // must come back from the log.
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        }
        drop(client);
        server.kill_9();
        server = Server::start_logged(&data, &flags, &[], &log);
    }
    let client = server.connect().await;
    client.batch_execute("FLUSH").await.unwrap();
    let rows = |sql: &'static str| {
        let client = &client;
        async move {
            let mut r = crate::common::text_rows(client, sql).await;
            r.sort();
            r
        }
    };
    let expected = rows("SELECT k::TEXT, count(*)::TEXT, sum(v)::TEXT FROM acct GROUP BY k").await;
    assert!(!expected.is_empty());
    assert_eq!(rows("SELECT k::TEXT, n::TEXT, s::TEXT FROM per_k").await, expected, "per_k (seed {seed})");
    let expected = rows(
        "SELECT date_bin(INTERVAL '10 seconds', ts, TIMESTAMP '1970-01-01 00:00:00')::TEXT, count(*)::TEXT, max(k)::TEXT \
         FROM ev GROUP BY 1",
    )
    .await;
    assert_eq!(rows("SELECT window_start::TEXT, n::TEXT, top::TEXT FROM w").await, expected, "w (seed {seed})");
    let log = std::fs::read_to_string(&log).unwrap();
    let resumed = log.lines().filter(|l| l.contains("recovered from checkpoint") && l.contains("\"views\":2") && l.contains("\"rebuilt\":0")).count();
    assert!(resumed >= 4, "views over tables resumed {resumed} times of 8");
}

/// A checkpoint whose positions the source does not know (a foreign or edited manifest): the
/// source reads nothing more and says why, its view keeps its restored rows, and the server
/// goes on (other views publish, FLUSH returns).
#[tokio::test(flavor = "multi_thread")]
async fn a_position_the_source_cannot_seek_to_stops_that_source_only() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--checkpoint-interval-ms", "100", "--barrier-interval-ms", "50"];
    let server = Server::start_with(dir.path(), &flags);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE g (k BIGINT) WITH (connector = 'datagen', datagen.rows.per.second = '0', datagen.max.rows = '1000', \
                 fields.k.kind = 'sequence'); \
             CREATE MATERIALIZED VIEW n AS SELECT count(*) AS n FROM g; \
             CREATE TABLE t (x INT); \
             CREATE MATERIALIZED VIEW sum_t AS SELECT sum(x) AS s FROM t",
        )
        .await
        .unwrap();
    wait_until_source_ended(&client, "g").await;
    wait_for_a_checkpoint_of_every_view(&client).await;
    drop(client);
    server.kill_9();
    // Every manifest names a partition the generator does not have.
    let mut edited_manifests = 0;
    for entry in std::fs::read_dir(dir.path().join("checkpoints")).unwrap().flatten() {
        let manifest = entry.path().join("MANIFEST.json");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            let edited = text.replace("\"partition\": \"0\"", "\"partition\": \"no-such-split\"");
            edited_manifests += usize::from(edited != text);
            std::fs::write(&manifest, edited).unwrap();
        }
    }
    assert!(edited_manifests > 0, "no manifest names the generator's partition");
    let server = Server::start_with(dir.path(), &flags);
    let client = server.connect().await;
    // Two calls: in one query string they would share an implicit transaction, and FLUSH would
    // run before the insert commits.
    client.batch_execute("INSERT INTO t VALUES (5)").await.unwrap();
    client.batch_execute("FLUSH").await.unwrap();
    let s: Option<i64> = client.query_one("SELECT s FROM sum_t", &[]).await.unwrap().get(0);
    assert_eq!(s, Some(5), "the other view keeps publishing");
    let n: i64 = client.query_one("SELECT n FROM n", &[]).await.unwrap().get(0);
    assert_eq!(n, 1000, "the restored view keeps its rows");
    let errors: i64 = client.query_one("SELECT errors FROM weir_catalog.sources WHERE name = 'g'", &[]).await.unwrap().get(0);
    assert_eq!(errors, 1);
}
