//! The streaming engine through the server: consistency of views read together while a source
//! is ingesting, views rebuilt after a restart, and the demo's SQL.

use crate::common::{Server, metric, text_rows};

/// The lines of an EXPLAIN (its one column).
async fn explain(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    text_rows(client, sql).await.concat()
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows[0].get::<_, Option<i64>>(0).unwrap_or(0)
}

/// Waits until a bounded source has ended and a FLUSH after that returned: every row it read
/// is then in every view, and its final watermark closed every window.
pub(crate) async fn wait_until_source_ended(client: &tokio_postgres::Client, source: &str) {
    for _ in 0..600 {
        client.batch_execute("FLUSH").await.unwrap();
        let ended: bool = client
            .query_one("SELECT ended FROM weir_catalog.sources WHERE name = $1", &[&source])
            .await
            .unwrap()
            .get(0);
        if ended {
            client.batch_execute("FLUSH").await.unwrap();
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("source {source} did not end");
}

/// Two views over one source, read in one SELECT, always agree: both are read as of the same
/// published epoch, whatever the source is doing.
#[tokio::test(flavor = "multi_thread")]
async fn two_views_over_one_source_never_disagree_while_ingesting() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE ev (k VARCHAR, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
             WITH (connector = 'datagen', datagen.rows.per.second = '4000', datagen.split.num = '2', \
                   fields.k.kind = 'random', fields.k.values = 'a,b,c,d,e', \
                   fields.v.kind = 'random', fields.v.min = '1', fields.v.max = '9'); \
             CREATE MATERIALIZED VIEW per_key AS SELECT k, count(*) AS n, sum(v) AS s FROM ev GROUP BY k; \
             CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n, sum(v) AS s FROM ev;",
        )
        .await
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let row = client
            .query_one(
                "SELECT coalesce(a.n, 0), b.n, coalesce(a.s, 0), coalesce(b.s, 0) \
                 FROM (SELECT sum(n) AS n, sum(s) AS s FROM per_key) a CROSS JOIN total b",
                &[],
            )
            .await
            .unwrap();
        let (by_key, total): (i64, i64) = (row.get(0), row.get(1));
        let (sum_by_key, sum_total): (i64, i64) = (row.get(2), row.get(3));
        assert_eq!(by_key, total, "per-key counts and the total disagree");
        assert_eq!(sum_by_key, sum_total, "per-key sums and the total disagree");
        seen.insert(total);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The test saw the views move, so it compared more than one state.
    assert!(seen.len() > 5, "views did not advance: {seen:?}");
}

/// After a restart, views are rebuilt from their inputs: a table's rows and a generator's
/// replayed sequence give the same contents as before.
#[tokio::test(flavor = "multi_thread")]
async fn views_are_rebuilt_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = server.connect().await;
    // One statement at a time: a multi-statement query is one transaction, and views only see
    // committed rows.
    for sql in [
        "CREATE TABLE t (k TEXT, v BIGINT)",
        "INSERT INTO t VALUES ('a', 1), ('b', 2), ('a', 3)",
        "CREATE MATERIALIZED VIEW tv AS SELECT k, count(*) AS n, max(v) AS hi FROM t GROUP BY k",
        "DELETE FROM t WHERE v = 3",
        "CREATE SOURCE seq (id BIGINT) WITH (connector = 'datagen', datagen.rows.per.second = '0', datagen.max.rows = '1000')",
        "CREATE MATERIALIZED VIEW seq_sum AS SELECT count(*) AS n, sum(id) AS s FROM seq",
        "FLUSH",
    ] {
        client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    let before = client.query("SELECT k, n, hi FROM tv ORDER BY k", &[]).await.unwrap();
    let before: Vec<(String, i64, i64)> = before.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(before, vec![("a".to_string(), 1, 1), ("b".to_string(), 1, 2)]);
    drop(client);
    server.kill_9();

    let server = Server::start(dir.path());
    let client = server.connect().await;
    client.batch_execute("FLUSH").await.unwrap();
    let after = client.query("SELECT k, n, hi FROM tv ORDER BY k", &[]).await.unwrap();
    let after: Vec<(String, i64, i64)> = after.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(after, before);
    // The bounded generator replays all of its 1000 rows: 1 + ... + 1000.
    let mut n = 0;
    for _ in 0..100 {
        client.batch_execute("FLUSH").await.unwrap();
        n = count(&client, "SELECT n FROM seq_sum").await;
        if n == 1000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(n, 1000);
    let s: i64 = client.query_one("SELECT s FROM seq_sum", &[]).await.unwrap().get(0);
    assert_eq!(s, 500_500);
}

/// The SQL `weir demo` runs is valid and its views fill up.
#[tokio::test(flavor = "multi_thread")]
async fn demo_examples_create_working_views() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = server.connect().await;
    for file in ["nexmark.sql", "chat.sql"] {
        let sql = std::fs::read_to_string(format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{file}: {e:?}"));
    }
    let mut filled = false;
    for _ in 0..100 {
        client.batch_execute("FLUSH").await.unwrap();
        if count(&client, "SELECT count(*) FROM chat_per_min").await > 0
            && count(&client, "SELECT count(*) FROM nexmark_q5").await > 0
            && count(&client, "SELECT count(*) FROM nexmark_q7").await > 0
        {
            filled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(filled, "demo views stayed empty");
    let text = explain(&client, "EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT stream_id, count(*) FROM TUMBLE(chat, ts, INTERVAL '1' MINUTE) GROUP BY stream_id, window_start").await;
    assert!(text.iter().any(|l| l.contains("Aggregate") && !l.contains("unbounded")), "{text:?}");
    assert!(text.iter().any(|l| l.contains("closes at key + 1m") || l.contains("closes at key + 60s")), "{text:?}");
    let hop = "EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT stream_id, window_start, count(*) \
        FROM HOP(chat, ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE) GROUP BY stream_id, window_start";
    let text = explain(&client, &format!("{hop} EMIT ON WINDOW CLOSE")).await;
    assert!(text.iter().any(|l| l.contains("HOP by panes of 10s") && l.contains("merges its 6 panes")), "{text:?}");
    assert!(text.iter().any(|l| l.contains("one row per HOP pane")), "{text:?}");
    let text = explain(&client, hop).await;
    assert!(!text.iter().any(|l| l.contains("panes")), "update mode keeps HOP by windows: {text:?}");
}

/// The chat demo's z-score view (a per-minute view joined with itself on a 10-minute interval,
/// aggregated and emitted on window close) equals the same query computed in batch over the
/// per-minute view, once a bounded source has closed every window.
#[tokio::test(flavor = "multi_thread")]
async fn chat_zscore_view_matches_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE chat (stream_id VARCHAR, user_id VARCHAR, ts TIMESTAMP, \
                WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             WITH (connector = 'datagen', datagen.rows.per.second = '0', datagen.max.rows = '30000', \
                   datagen.split.num = '2', watermark.idle_timeout = '0', \
                   fields.stream_id.kind = 'random', fields.stream_id.values = 'a,a,a,b,c', \
                   fields.user_id.kind = 'random', fields.user_id.values = 'u1,u2,u3,u4', \
                   fields.ts.kind = 'event_time', fields.ts.start = '2026-01-01 00:00:00', \
                   fields.ts.step = '100ms', fields.ts.disorder = '2s')",
        )
        .await
        .unwrap();
    // The views exactly as the demo defines them.
    let example = std::fs::read_to_string(format!("{}/examples/chat.sql", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for statement in example.split(';') {
        let sql: String = statement.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
        if sql.trim_start().starts_with("CREATE MATERIALIZED VIEW") {
            client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
    }
    wait_until_source_ended(&client, "chat").await;
    let query = |sql: &'static str| {
        let client = &client;
        async move {
            let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter()
                .map(|r| {
                    (r.get::<_, String>(0), r.get::<_, std::time::SystemTime>(1), r.get::<_, i64>(2), r.get::<_, f64>(3), r.get::<_, Option<f64>>(4))
                })
                .collect::<Vec<_>>()
        }
    };
    let streamed = query("SELECT stream_id, window_start, messages, mean_10m, stddev_10m FROM chat_zscore ORDER BY 1, 2").await;
    let batch = query(
        "SELECT cur.stream_id, cur.window_start, cur.messages, avg(prev.messages), stddev_samp(prev.messages) \
         FROM chat_per_min cur JOIN chat_per_min prev ON prev.stream_id = cur.stream_id \
          AND prev.window_start BETWEEN cur.window_start - INTERVAL '10' MINUTE AND cur.window_start - INTERVAL '1' MINUTE \
         GROUP BY cur.stream_id, cur.window_start, cur.messages ORDER BY 1, 2",
    )
    .await;
    // 15000 rows per partition, 100 ms apart: 25 minutes of event time, 3 streams.
    assert!(batch.len() > 60, "too few minutes to compare: {}", batch.len());
    eprintln!("chat_zscore: {} rows streamed, {} in batch", streamed.len(), batch.len());
    assert_eq!(streamed.len(), batch.len());
    for (s, b) in streamed.iter().zip(&batch) {
        assert_eq!((&s.0, s.1, s.2), (&b.0, b.1, b.2));
        assert!((s.3 - b.3).abs() < 1e-9 * b.3.abs().max(1.0), "{s:?} vs {b:?}");
        match (s.4, b.4) {
            (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9 * y.abs().max(1.0), "{s:?} vs {b:?}"),
            (x, y) => assert_eq!(x, y),
        }
    }
    let flagged: i64 = client
        .query_one("SELECT count(*) FROM chat_zscore WHERE anomaly = (abs(z) > 3.0)", &[])
        .await
        .unwrap()
        .get(0);
    let with_z: i64 = client.query_one("SELECT count(*) FROM chat_zscore WHERE z IS NOT NULL", &[]).await.unwrap().get(0);
    assert_eq!(flagged, with_z, "the anomaly flag disagrees with z");
}

/// `watermark.late_events = 'dead_letter'`: rows more out of order than the watermark allows are
/// left out of views, counted, and kept with their reason; every generated row is either in the
/// view or a dead letter, never both.
#[tokio::test(flavor = "multi_thread")]
async fn late_rows_go_to_the_dead_letter_table() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE jumpy (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
             WITH (connector = 'datagen', datagen.rows.per.second = '0', datagen.max.rows = '5000', \
                   watermark.idle_timeout = '0', watermark.late_events = 'dead_letter', \
                   fields.id.kind = 'sequence', fields.ts.kind = 'event_time', fields.ts.step = '100ms', \
                   fields.ts.disorder = '5s'); \
             CREATE MATERIALIZED VIEW on_time AS SELECT count(*) AS n, sum(id) AS s FROM jumpy;",
        )
        .await
        .unwrap();
    wait_until_source_ended(&client, "jumpy").await;
    let late = count(&client, "SELECT late_rows FROM weir_catalog.sources WHERE name = 'jumpy'").await;
    let letters = count(&client, "SELECT count(*) FROM weir_catalog.late_events WHERE source = 'jumpy'").await;
    let on_time = count(&client, "SELECT n FROM on_time").await;
    assert!(late > 100, "the disorder should make many rows late: {late}");
    assert_eq!(letters, late, "every late row is kept");
    assert_eq!(on_time + late, 5000, "every row is on time or late");
    let per_partition = count(&client, "SELECT sum(rows_read) FROM weir_catalog.source_partitions WHERE source = 'jumpy'").await;
    assert_eq!(per_partition, 5000, "partition counts add up to the source's");
    let ids_on_time = count(&client, "SELECT s FROM on_time").await;
    let ids_late = count(
        &client,
        "SELECT sum(CAST(split_part(btrim(\"row\", '()'), ',', 1) AS BIGINT)) FROM weir_catalog.late_events WHERE source = 'jumpy'",
    )
    .await;
    assert_eq!(ids_on_time + ids_late, 5000 * 5001 / 2, "a row is in the view or a dead letter, never both");
    let wrong = count(
        &client,
        "SELECT count(*) FROM weir_catalog.late_events WHERE event_time >= watermark OR reason NOT LIKE 'late%'",
    )
    .await;
    assert_eq!(wrong, 0, "a dead letter's event time is below the watermark it missed");
    // The same figures on /metrics, and the view's freshness.
    let (_, metrics) = server.http_get("/metrics");
    assert!(metrics.contains(&format!("weir_source_late_rows_total{{source=\"jumpy\"}} {late}")), "{metrics}");
    assert!(metrics.contains("weir_source_rows_read_total{source=\"jumpy\"} 5000"), "{metrics}");
    assert!(metrics.contains("weir_view_rows{view=\"on_time\"} 1"), "{metrics}");
    // The view keeps up with the barriers (a few at most in flight); every statement was timed.
    let figure = |name: &str| metric(&metrics, name).unwrap_or_else(|| panic!("no {name}: {metrics}"));
    assert!(figure("weir_view_epochs_behind{view=\"on_time\"}") < 20.0, "{metrics}");
    assert!(figure("weir_statement_duration_seconds_count") >= 5.0, "{metrics}");
    let lag = count(&client, "SELECT freshness_lag_ms FROM weir_catalog.materialized_views WHERE name = 'on_time'").await;
    assert!((0..60_000).contains(&lag), "freshness lag {lag} ms");
    // A source with the default policy keeps nothing.
    let err = client
        .batch_execute("CREATE SOURCE bad (ts TIMESTAMP) WITH (connector = 'datagen', watermark.late_events = 'keep')")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22023"), "{err:?}");
}

/// `WITH (retention = ...)`: windows that closed longer ago than the retention (in event time,
/// against the watermark) leave the view; `ALTER MATERIALIZED VIEW ... SET` changes it while
/// the view runs, and the catalog keeps it across a restart.
#[tokio::test(flavor = "multi_thread")]
async fn retention_forgets_old_windows_and_alter_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--barrier-interval-ms", "20"];
    let server = Server::start_with(dir.path(), &flags);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE ev (k TEXT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY; \
             CREATE MATERIALIZED VIEW w WITH (retention = '1 minute') AS \
                SELECT window_start, window_end, count(*) AS n FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) \
                GROUP BY window_start, window_end",
        )
        .await
        .unwrap();
    // 300 s of events: the watermark ends at 298 s.
    let values: Vec<String> = (0..300).map(|s| format!("('a', TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{s}' SECOND)")).collect();
    client.batch_execute(&format!("INSERT INTO ev VALUES {}", values.join(", "))).await.unwrap();
    let windows = |expected: Vec<i64>| {
        let client = &client;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                client.batch_execute("FLUSH").await.unwrap();
                let got: Vec<i64> = client
                    .query("SELECT CAST(extract(epoch FROM window_start) - 1767225600 AS BIGINT) FROM w ORDER BY 1", &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if got == expected {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "windows {got:?}, expected {expected:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    // Kept: windows ending at or after 298 - 60 = 238 s.
    windows((23..30).map(|w| w * 10).collect()).await;
    client.batch_execute("ALTER MATERIALIZED VIEW w SET (retention = '10 seconds')").await.unwrap();
    windows(vec![280, 290]).await;

    let err = client
        .batch_execute("CREATE MATERIALIZED VIEW totals WITH (retention = '1 day') AS SELECT k, count(*) AS n FROM ev GROUP BY k")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "0A000", "{err}");
    let err = client.batch_execute("CREATE MATERIALIZED VIEW x WITH (ttl = '1 day') AS SELECT k FROM ev").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22023", "{err}");
    let err = client.batch_execute("ALTER MATERIALIZED VIEW nope SET (retention = '1 day')").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01", "{err}");

    drop(client);
    server.kill_9();
    let server = Server::start_with(dir.path(), &flags);
    let client = server.connect().await;
    let show: String = client.query_one("SHOW CREATE MATERIALIZED VIEW w", &[]).await.unwrap().get(1);
    assert!(show.contains("retention = '10 seconds'"), "{show}");
}

/// `/metrics` says how far event time lags the wall clock, per source and per view: for a source
/// whose event time follows the wall clock with a 2 s watermark delay, about 2 s.
#[tokio::test(flavor = "multi_thread")]
async fn watermark_delays_follow_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE clocked (ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) \
             WITH (connector = 'datagen', datagen.rows.per.second = '200', fields.ts.kind = 'event_time'); \
             CREATE MATERIALIZED VIEW clocked_per_s AS SELECT window_start, count(*) AS n FROM TUMBLE(clocked, ts, INTERVAL '1' SECOND) GROUP BY window_start",
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, metrics) = server.http_get("/metrics");
        let source = metric(&metrics, "weir_source_watermark_delay_seconds{source=\"clocked\"}");
        let view = metric(&metrics, "weir_view_watermark_delay_seconds{view=\"clocked_per_s\"}");
        if let (Some(source), Some(view)) = (source, view) {
            assert!((1.5..10.0).contains(&source), "source watermark delay {source} s: {metrics}");
            assert!((1.5..10.0).contains(&view), "view watermark delay {view} s: {metrics}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no watermark delays: {metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
