//! The streaming engine through the server: consistency of views read together while a source
//! is ingesting, views rebuilt after a restart, and the demo's SQL.

use crate::common::Server;

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows[0].get::<_, Option<i64>>(0).unwrap_or(0)
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
            && count(&client, "SELECT count(*) FROM nexmark_q5_counts").await > 0
        {
            filled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(filled, "demo views stayed empty");
    let explain = client.simple_query("EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT stream_id, count(*) FROM TUMBLE(chat, ts, INTERVAL '1' MINUTE) GROUP BY stream_id, window_start").await.unwrap();
    let text: Vec<String> = explain
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(text.iter().any(|l| l.contains("Aggregate") && !l.contains("unbounded")), "{text:?}");
    assert!(text.iter().any(|l| l.contains("closes at key + 1m") || l.contains("closes at key + 60s")), "{text:?}");
}
