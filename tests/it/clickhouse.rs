//! ClickHouse sinks against a real `clickhouse-server` (`tests/services.sh` starts it and sets
//! `WEIR_CLICKHOUSE_URL`): views fed by SQL inserts, sunk to ClickHouse tables that must then
//! read back (with `FINAL` for upserts) exactly as the view's rows, no row missing or doubled.

use std::time::{Duration, Instant};

use crate::chat::unique_name;
use crate::common::{Server, text_rows};

fn clickhouse() -> Option<String> {
    match std::env::var("WEIR_CLICKHOUSE_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "CI must run the ClickHouse tests: start a server with tests/services.sh");
            eprintln!("skipped: WEIR_CLICKHOUSE_URL is not set (run tests/run.sh, or source tests/services.sh and start_clickhouse)");
            None
        }
    }
}

/// Runs a statement on ClickHouse and returns its TabSeparated output.
pub(crate) async fn ch(url: &str, sql: &str) -> String {
    let client = clickhouse::Client::default().with_url(url);
    let mut cursor = client.query(sql).fetch_bytes("TabSeparated").unwrap_or_else(|e| panic!("{sql}: {e}"));
    let bytes = cursor.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Rows of TabSeparated text, sorted.
pub(crate) fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The view's rows as TabSeparated-like lines, sorted.
pub(crate) async fn view_lines(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut lines: Vec<String> = text_rows(client, sql).await.iter().map(|r| r.join("\t")).collect();
    lines.sort();
    lines
}

/// Waits until ClickHouse's answer to `ch_sql` equals the view's answer to `view_sql`.
async fn wait_equal(client: &tokio_postgres::Client, url: &str, view_sql: &str, ch_sql: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let view = view_lines(client, view_sql).await;
        let target = sorted_lines(&ch(url, ch_sql).await);
        if view == target {
            return view;
        }
        assert!(Instant::now() < deadline, "ClickHouse has\n{target:#?}\nthe view has\n{view:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An EMIT ON WINDOW CLOSE view (append-only) into a plain MergeTree table: every closed window
/// once, with the epoch column marking each epoch's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_only_windows_land_once_in_a_merge_tree() {
    let Some(url) = clickhouse() else { return };
    let table = unique_name("windows");
    ch(&url, &format!(
        "CREATE TABLE {table} (k String, window_start DateTime, n Int64, s Int64, weir_epoch UInt64) \
         ENGINE = MergeTree ORDER BY (k, window_start)"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE ev (k TEXT, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY; \
             CREATE MATERIALIZED VIEW w AS SELECT k, window_start, count(*) AS n, sum(v) AS s \
                 FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY k, window_start EMIT ON WINDOW CLOSE; \
             CREATE SINK w_out FROM w WITH (connector = 'clickhouse', clickhouse.url = '{url}', clickhouse.table = '{table}')"
        ))
        .await
        .unwrap();
    // Several epochs of events over 100 s of event time, each batch closing earlier windows.
    let mut expected_rows = 0;
    for batch in 0..10i64 {
        let values: Vec<String> = (0..30i64)
            .map(|i| {
                let second = batch * 10 + i % 10;
                format!("('{}', {}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{second}' SECOND)", ["a", "b", "c"][(i % 3) as usize], i + batch)
            })
            .collect();
        client.batch_execute(&format!("INSERT INTO ev VALUES {}", values.join(", "))).await.unwrap();
        client.batch_execute("FLUSH").await.unwrap();
        expected_rows += 3;
    }
    // Close the last window.
    client.batch_execute("INSERT INTO ev VALUES ('z', 0, TIMESTAMP '2026-01-01 01:00:00')").await.unwrap();
    let rows = wait_equal(
        &client,
        &url,
        "SELECT k, window_start::text, n, s FROM w",
        &format!("SELECT k, window_start, n, s FROM {table}"),
    )
    .await;
    assert_eq!(rows.len(), expected_rows, "every window of the 100 s, and no more");
    // The rows came in more than one epoch, each marked with its own.
    let epochs: usize = ch(&url, &format!("SELECT uniqExact(weir_epoch) FROM {table}")).await.trim().parse().unwrap();
    assert!(epochs > 1, "{epochs} epochs");
    let sinks = client.query("SELECT name FROM weir_catalog.sinks", &[]).await;
    assert!(sinks.is_ok_and(|r| r.len() == 1));

    // Weir restarts: the rebuilt view's windows are in the table already and are not written
    // again; the windows closed afterwards are.
    drop(client);
    server.terminate();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client.batch_execute("INSERT INTO ev VALUES ('y', 1, TIMESTAMP '2026-01-01 02:00:00')").await.unwrap();
    let rows = wait_equal(
        &client,
        &url,
        "SELECT k, window_start::text, n, s FROM w",
        &format!("SELECT k, window_start, n, s FROM {table}"),
    )
    .await;
    assert_eq!(rows.len(), expected_rows + 1, "the window of z (01:00) closed, nothing doubled");
}

/// A GROUP BY view with updates and deletes into a ReplacingMergeTree(weir_epoch): `FINAL`
/// without the delete-marked keys equals the view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_and_deletes_read_back_with_final() {
    let Some(url) = clickhouse() else { return };
    let table = unique_name("totals");
    ch(&url, &format!(
        "CREATE TABLE {table} (k String, n Int64, s Int64, weir_epoch UInt64, weir_deleted UInt8) \
         ENGINE = ReplacingMergeTree(weir_epoch) ORDER BY k"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE t (id INT PRIMARY KEY, k TEXT, v BIGINT); \
             CREATE MATERIALIZED VIEW totals AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k; \
             CREATE SINK totals_out FROM totals WITH (connector = 'clickhouse', clickhouse.url = '{url}', \
                 clickhouse.table = '{table}', type = 'upsert', primary_key = 'k')"
        ))
        .await
        .unwrap();
    let view_sql = "SELECT k, n, s FROM totals";
    let ch_sql = format!("SELECT k, n, s FROM {table} FINAL WHERE weir_deleted = 0");
    for round in 0..8 {
        let values: Vec<String> = (0..20).map(|i| {
            let id = round * 20 + i;
            format!("({id}, 'k{}', {})", (id * 13) % 9, id * 3)
        }).collect();
        client.batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", "))).await.unwrap();
        client.batch_execute(&format!("UPDATE t SET v = v + 1 WHERE id % 5 = {}", round % 5)).await.unwrap();
        client.batch_execute(&format!("DELETE FROM t WHERE id % 11 = {}", round % 11)).await.unwrap();
        if round == 7 {
            // A whole key leaves the view.
            client.batch_execute("DELETE FROM t WHERE k = 'k4'").await.unwrap();
        }
        client.batch_execute("FLUSH").await.unwrap();
    }
    let rows = wait_equal(&client, &url, view_sql, &ch_sql).await;
    assert!(!rows.is_empty());
    let deleted = ch(&url, &format!("SELECT count() FROM {table} FINAL WHERE weir_deleted = 1 AND k = 'k4'")).await;
    assert_eq!(deleted.trim(), "1", "k4 is marked deleted");
}

/// Bad sink definitions are errors at CREATE, naming what is wrong; the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sinks_are_errors_at_create() {
    let Some(url) = clickhouse() else { return };
    let table = unique_name("narrow");
    ch(&url, &format!("CREATE TABLE {table} (k String, weir_epoch UInt64) ENGINE = MergeTree ORDER BY k")).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, k TEXT, v BIGINT); \
             CREATE MATERIALIZED VIEW totals AS SELECT k, count(*) AS n FROM t GROUP BY k",
        )
        .await
        .unwrap();
    let create = |with: String| {
        let client = &client;
        async move {
            let sql = format!("CREATE SINK s FROM totals WITH (connector = 'clickhouse', {with})");
            let e = client.batch_execute(&sql).await.expect_err(&sql);
            let e = e.as_db_error().expect("a database error").clone();
            (e.code().code().to_string(), e.message().to_string())
        }
    };
    let (code, message) = create(format!("clickhouse.url = '{url}', clickhouse.table = 'nope', primary_key = 'k'")).await;
    assert!(message.contains("no table"), "{code} {message}");
    let (_, message) = create(format!("clickhouse.url = '{url}', clickhouse.table = '{table}', primary_key = 'k'")).await;
    assert!(message.contains("no column \"n\""), "{message}");
    let (_, message) = create(format!("clickhouse.url = '{url}', clickhouse.table = '{table}'")).await;
    assert!(message.contains("primary_key"), "{message}");
    let (_, message) = create(format!("clickhouse.url = '{url}', clickhouse.table = '{table}', type = 'append-only'")).await;
    assert!(message.contains("upsert"), "{message}");
    // Tables that cannot hold the view's values, or would not make upserts replace rows.
    let narrow = unique_name("int32");
    ch(&url, &format!("CREATE TABLE {narrow} (k String, n Int32, weir_epoch UInt64, weir_deleted UInt8) ENGINE = ReplacingMergeTree(weir_epoch) ORDER BY k")).await;
    let (code, message) = create(format!("clickhouse.url = '{url}', clickhouse.table = '{narrow}', primary_key = 'k'")).await;
    assert_eq!(code, "22023", "{message}");
    assert!(message.contains("column \"n\" is Int32, which cannot hold"), "{message}");
    let collapsing = unique_name("collapsing");
    ch(&url, &format!(
        "CREATE TABLE {collapsing} (k String, n Int64, weir_epoch UInt64, weir_deleted UInt8, sign Int8) ENGINE = CollapsingMergeTree(sign) ORDER BY k"
    ))
    .await;
    let (_, message) = create(format!("clickhouse.url = '{url}', clickhouse.table = '{collapsing}', primary_key = 'k'")).await;
    assert!(message.contains("needs ReplacingMergeTree(weir_epoch)"), "{message}");
    let sorted = unique_name("sorted");
    ch(&url, &format!("CREATE TABLE {sorted} (k String, n Int64, weir_epoch UInt64, weir_deleted UInt8) ENGINE = ReplacingMergeTree(weir_epoch) ORDER BY n")).await;
    let (_, message) = create(format!("clickhouse.url = '{url}', clickhouse.table = '{sorted}', primary_key = 'k'")).await;
    assert!(message.contains("sorted by"), "{message}");
    // Wrong credentials: 08001, as postgres_fdw reports a failed login, with ClickHouse's
    // reason and without the password.
    let (code, message) =
        create(format!("clickhouse.url = '{url}', clickhouse.table = '{table}', clickhouse.password = 'not-the-password', primary_key = 'k'")).await;
    assert_eq!(code, "08001", "{message}");
    assert!(message.contains("Wrong password") || message.contains("Authentication failed"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    let (code, message) =
        create("clickhouse.url = 'http://127.0.0.1:1', clickhouse.table = 't', clickhouse.password = 'hunter2', primary_key = 'k'".into()).await;
    assert_eq!(code, "08001", "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert_eq!(client.query("SELECT count(*) FROM totals", &[]).await.unwrap().len(), 1, "the server goes on");
}

/// The `--config-file=` argument of the ClickHouse server `tests/services.sh` started.
fn clickhouse_config_arg() -> String {
    format!("--config-file={}", std::env::var("WEIR_CLICKHOUSE_CONFIG").expect("WEIR_CLICKHOUSE_CONFIG"))
}

fn kill_clickhouse() {
    let killed = std::process::Command::new("pkill").args(["-9", "-f", "--", &clickhouse_config_arg()]).status().expect("pkill");
    assert!(killed.success(), "no ClickHouse server with {}", clickhouse_config_arg());
}

/// Starts the server again, in the background of a shell that exits at once: it outlives the
/// test, and tests/services.sh's stop_services stops it by its config file.
async fn start_clickhouse_again(url: &str) {
    let started = std::process::Command::new("sh")
        .args(["-c", &format!("clickhouse-server '{}' >/dev/null 2>&1 &", clickhouse_config_arg())])
        .status()
        .expect("start clickhouse-server");
    assert!(started.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while clickhouse::Client::default().with_url(url).query("SELECT 1").execute().await.is_err() {
        assert!(Instant::now() < deadline, "ClickHouse did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ClickHouse killed mid-stream and back seconds later: the view keeps running, the sink says it
/// is retrying, and afterwards the table holds every window exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_loses_and_doubles_nothing() {
    let Some(url) = clickhouse() else { return };
    let table = unique_name("outage");
    ch(&url, &format!(
        "CREATE TABLE {table} (k String, window_start DateTime, n Int64, weir_epoch UInt64) ENGINE = MergeTree ORDER BY (k, window_start)"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE ev (k TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY; \
             CREATE MATERIALIZED VIEW w AS SELECT k, window_start, count(*) AS n \
                 FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY k, window_start EMIT ON WINDOW CLOSE; \
             CREATE SINK w_out FROM w WITH (connector = 'clickhouse', clickhouse.url = '{url}', clickhouse.table = '{table}', \
                 sink.batch.rows = '1')"
        ))
        .await
        .unwrap();
    let round = |r: i64| {
        let values: Vec<String> = (0..20i64)
            .map(|i| format!("('{}', TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{}' SECOND)", ["a", "b"][(i % 2) as usize], r * 10 + i % 10))
            .collect();
        format!("INSERT INTO ev VALUES {}", values.join(", "))
    };
    for r in 0..5 {
        client.batch_execute(&round(r)).await.unwrap();
        client.batch_execute("FLUSH").await.unwrap();
    }
    kill_clickhouse();
    for r in 5..15 {
        client.batch_execute(&round(r)).await.unwrap();
        // The view goes on while the sink cannot write.
        client.batch_execute("FLUSH").await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status: String = client.query_one("SELECT status FROM weir_catalog.sinks", &[]).await.unwrap().get(0);
    assert!(status.starts_with("retrying"), "{status}");
    start_clickhouse_again(&url).await;
    client.batch_execute("INSERT INTO ev VALUES ('z', TIMESTAMP '2026-01-01 01:00:00')").await.unwrap();
    let rows = wait_equal(
        &client,
        &url,
        "SELECT k, window_start::text, n FROM w",
        &format!("SELECT k, window_start, n FROM {table}"),
    )
    .await;
    assert_eq!(rows.len(), 30, "15 windows of two keys, each once");
    // The sink counts an insert once ClickHouse answered it, a moment after its rows show.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut batches: i64 = 0;
    while Instant::now() < deadline {
        batches = client.query_one("SELECT batches FROM weir_catalog.sinks", &[]).await.unwrap().get(0);
        if batches >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(batches, 30, "one insert per row (sink.batch.rows = 1)");
    let retries: i64 = client.query_one("SELECT retries FROM weir_catalog.sinks", &[]).await.unwrap().get(0);
    assert!(retries > 0);
}

/// Weir restarted while ClickHouse is down: the sink waits for it (status `retrying`) instead of
/// failing, and once ClickHouse is back the upsert table equals the rebuilt view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_whose_target_is_down_at_start_waits_for_it() {
    let Some(url) = clickhouse() else { return };
    let table = unique_name("later");
    ch(&url, &format!(
        "CREATE TABLE {table} (k String, n Int64, weir_epoch UInt64, weir_deleted UInt8) ENGINE = ReplacingMergeTree(weir_epoch) ORDER BY k"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE t (id INT PRIMARY KEY, k TEXT); \
             CREATE MATERIALIZED VIEW counts AS SELECT k, count(*) AS n FROM t GROUP BY k; \
             CREATE SINK counts_out FROM counts WITH (connector = 'clickhouse', clickhouse.url = '{url}', \
                 clickhouse.table = '{table}', type = 'upsert', primary_key = 'k'); \
             INSERT INTO t VALUES (1, 'a'), (2, 'a'), (3, 'b')"
        ))
        .await
        .unwrap();
    let ch_sql = format!("SELECT k, n FROM {table} FINAL WHERE weir_deleted = 0");
    wait_equal(&client, &url, "SELECT k, n FROM counts", &ch_sql).await;
    drop(client);
    server.kill_9();
    kill_clickhouse();
    let server = Server::start(&data);
    let client = server.connect().await;
    client.batch_execute("INSERT INTO t VALUES (4, 'c'); DELETE FROM t WHERE k = 'b'").await.unwrap();
    let status: String = client.query_one("SELECT status FROM weir_catalog.sinks", &[]).await.unwrap().get(0);
    assert!(status.starts_with("retrying"), "{status}");
    start_clickhouse_again(&url).await;
    let rows = wait_equal(&client, &url, "SELECT k, n FROM counts", &ch_sql).await;
    assert_eq!(rows, ["a\t2", "c\t1"]);
}

/// `clickhouse.create_table = 'true'` creates the tables the sinks need (an upsert
/// ReplacingMergeTree ordered by the key, an append-only MergeTree), and epochs are written in
/// inserts of at most `sink.batch.rows` rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_tables_take_the_views_rows_in_batches() {
    let Some(url) = clickhouse() else { return };
    let (totals, windows) = (unique_name("created_totals"), unique_name("created_windows"));
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE t (id INT PRIMARY KEY, k TEXT, v BIGINT, ts TIMESTAMP, ok BOOLEAN); \
             CREATE MATERIALIZED VIEW totals AS SELECT k, count(*) AS n, sum(v) AS s, max(ts) AS last, bool_and(ok) AS all_ok FROM t GROUP BY k; \
             CREATE SINK totals_out FROM totals WITH (connector = 'clickhouse', clickhouse.url = '{url}', clickhouse.table = '{totals}', \
                 clickhouse.create_table = 'true', type = 'upsert', primary_key = 'k', sink.batch.rows = '2'); \
             CREATE TABLE ev (k TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts) APPEND ONLY; \
             CREATE SINK windows_out AS SELECT k, window_start, count(*) AS n FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) \
                 GROUP BY k, window_start EMIT ON WINDOW CLOSE \
                 WITH (connector = 'clickhouse', clickhouse.url = '{url}', clickhouse.table = '{windows}', clickhouse.create_table = 'true', \
                 sink.batch.rows = '2')"
        ))
        .await
        .unwrap();
    let engines = ch(&url, &format!("SELECT name, engine FROM system.tables WHERE name IN ('{totals}', '{windows}') ORDER BY engine")).await;
    assert_eq!(sorted_lines(&engines), sorted_lines(&format!("{windows}\tMergeTree\n{totals}\tReplacingMergeTree\n")));
    let values: Vec<String> = (0..40)
        .map(|i| format!("({i}, 'k{}', {i}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{i}' SECOND, {})", i % 7, i % 5 != 0))
        .collect();
    client.batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", "))).await.unwrap();
    client.batch_execute("UPDATE t SET v = v + 100 WHERE id % 3 = 0; DELETE FROM t WHERE k = 'k6'").await.unwrap();
    let rows = wait_equal(
        &client,
        &url,
        "SELECT k, n, s, last::text, CASE WHEN all_ok THEN 1 ELSE 0 END FROM totals",
        &format!("SELECT k, n, s, last, all_ok FROM {totals} FINAL WHERE weir_deleted = 0"),
    )
    .await;
    assert_eq!(rows.len(), 6, "k0..k5; k6 left the view");
    let events: Vec<String> = (0..60).map(|i| format!("('{}', TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{i}' SECOND)", ["a", "b", "c"][i % 3])).collect();
    client.batch_execute(&format!("INSERT INTO ev VALUES {}, ('z', TIMESTAMP '2026-01-01 01:00:00')", events.join(", "))).await.unwrap();
    // The batch answer: the closed 10 s windows of the events.
    let rows = wait_equal(
        &client,
        &url,
        "SELECT k, date_bin(INTERVAL '10 seconds', ts, TIMESTAMP '1970-01-01 00:00:00')::text AS w, count(*) FROM ev \
         WHERE ts < TIMESTAMP '2026-01-01 01:00:00' GROUP BY 1, 2",
        &format!("SELECT k, window_start, n FROM {windows}"),
    )
    .await;
    assert_eq!(rows.len(), 18, "6 windows of 3 keys");
    let figures = client.query("SELECT name, rows_delivered, batches, epochs_delivered FROM weir_catalog.sinks ORDER BY name", &[]).await.unwrap();
    let (_, metrics) = server.http_get("/metrics");
    for row in figures {
        let (name, rows, batches): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert!(batches >= rows.div_euclid(2), "{batches} inserts for {rows} changes in inserts of 2");
        // The same figure on /metrics, and nothing waiting once ClickHouse has every row.
        assert!(metrics.contains(&format!("weir_sink_rows_delivered_total{{sink=\"{name}\"}} {rows}\n")), "{name}: {metrics}");
        assert!(metrics.contains(&format!("weir_sink_pending_rows{{sink=\"{name}\"}} 0\n")), "{name}: {metrics}");
        assert!(metrics.contains(&format!("weir_sink_retries_total{{sink=\"{name}\"}} 0\n")), "{name}: {metrics}");
    }
}
