//! tokio-postgres over the simple and the extended protocol, text and binary results.

use rust_decimal::Decimal;
use tokio_postgres::SimpleQueryMessage;

use crate::common::Server;

/// A scan that runs for hours unless canceled. It is made of many small batches, so it yields
/// to the runtime between them: cancel and timeouts act at those points. (A selective nested
/// loop join is a bad choice here: DataFusion's join loops inside one poll until it fills an
/// output batch, which on two cores can hold both runtime workers for many seconds, so the
/// session sending the cancel is starved.)
const LONG_QUERY: &str = "SELECT count(*) FROM generate_series(1, 10000000000000) g WHERE g.value % 7 = 3";

/// Calls `cancel` every 100 ms until `running` ends, and returns its outcome. A cancel that
/// arrives before the statement starts is a no-op, hence the repetition. `cancel` says whether
/// the server knew the session; once the statement has ended the session may be gone.
async fn cancel_until_finished<T, F, Fut>(running: tokio::task::JoinHandle<T>, mut cancel: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if running.is_finished() {
            return running.await.unwrap();
        }
        let known = cancel().await;
        assert!(known || running.is_finished(), "the session to cancel must be known");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the query was never canceled");
    }
}

/// [`cancel_until_finished`] with CancelRequests on new connections (what psql's Ctrl-C sends).
async fn cancel_by_request<T>(running: tokio::task::JoinHandle<T>, token: tokio_postgres::CancelToken) -> T {
    cancel_until_finished(running, || {
        let token = token.clone();
        async move {
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
            true
        }
    })
    .await
}

fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn text_and_binary_results_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.connect().await;

    c.batch_execute(
        "CREATE TABLE ev (id INT PRIMARY KEY, name TEXT, price NUMERIC(10,2), ok BOOLEAN, \
         ts TIMESTAMPTZ, big BIGINT, x DOUBLE PRECISION)",
    )
    .await
    .unwrap();
    // Several statements in one simple query.
    let msgs = c
        .simple_query(
            "INSERT INTO ev VALUES (1, 'a', 12.50, true, '2026-11-23 10:00:00+00', 9000000000, 2.5); \
             INSERT INTO ev VALUES (2, NULL, 0.10, false, '2026-11-23T10:00:01.5Z', -1, 3); \
             SELECT id, name, price, ok, ts, big, x FROM ev ORDER BY id",
        )
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&msgs),
        vec![
            vec![
                Some("1".into()),
                Some("a".into()),
                Some("12.50".into()),
                Some("t".into()),
                Some("2026-11-23 10:00:00+00".into()),
                Some("9000000000".into()),
                Some("2.5".into())
            ],
            vec![
                Some("2".into()),
                None,
                Some("0.10".into()),
                Some("f".into()),
                Some("2026-11-23 10:00:01.5+00".into()),
                Some("-1".into()),
                Some("3".into())
            ],
        ]
    );
    let tags: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(tags, vec![1, 1, 2]);

    // Extended protocol: typed parameters in, binary results out.
    let stmt = c.prepare("SELECT id, name, price, ok, ts, big, x FROM ev WHERE id = $1").await.unwrap();
    assert_eq!(stmt.params(), &[tokio_postgres::types::Type::INT4]);
    let row = c.query_one(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("a"));
    assert_eq!(row.get::<_, Decimal>(2), Decimal::new(1250, 2));
    assert!(row.get::<_, bool>(3));
    let ts: chrono::DateTime<chrono::Utc> = row.get(4);
    assert_eq!(ts.to_rfc3339(), "2026-11-23T10:00:00+00:00");
    assert_eq!(row.get::<_, i64>(5), 9_000_000_000);
    assert_eq!(row.get::<_, f64>(6), 2.5);

    // Prepared insert with parameters, then read back.
    let ins = c.prepare("INSERT INTO ev (id, name, big) VALUES ($1, $2, $3)").await.unwrap();
    for i in 10..15i32 {
        let n = c.execute(&ins, &[&i, &format!("n{i}"), &(i as i64 * 2)]).await.unwrap();
        assert_eq!(n, 1);
    }
    let rows = c.query("SELECT id, big FROM ev WHERE id >= $1 ORDER BY id", &[&10i32]).await.unwrap();
    let got: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, (10..15).map(|i| (i, i as i64 * 2)).collect::<Vec<_>>());

    // UPDATE and DELETE report their row counts.
    assert_eq!(c.execute("UPDATE ev SET name = 'z' WHERE id >= $1", &[&12i32]).await.unwrap(), 3);
    assert_eq!(c.execute("DELETE FROM ev WHERE name = 'z'", &[]).await.unwrap(), 3);
    let n: i64 = c.query_one("SELECT count(*) FROM ev", &[]).await.unwrap().get(0);
    assert_eq!(n, 4);

    // Empty query.
    let msgs = c.simple_query("").await.unwrap();
    assert!(simple_rows(&msgs).is_empty());

    // Session settings.
    c.batch_execute("SET TIME ZONE 'Asia/Kolkata'").await.unwrap();
    let msgs = c.simple_query("SELECT ts FROM ev WHERE id = 1; SHOW timezone").await.unwrap();
    assert_eq!(
        simple_rows(&msgs),
        vec![vec![Some("2026-11-23 15:30:00+05:30".into())], vec![Some("Asia/Kolkata".into())]]
    );
    let v: String = c.query_one("SELECT version()", &[]).await.unwrap().get(0);
    assert!(v.starts_with("PostgreSQL 15"), "{v}");

    assert!(server.terminate().success(), "SIGTERM must exit 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_follow_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let a = server.connect().await;
    let b = server.connect().await;
    a.batch_execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT)").await.unwrap();

    a.batch_execute("BEGIN; INSERT INTO t VALUES (1, 'one')").await.unwrap();
    // A's write is visible to A, not to B, until COMMIT.
    let n: i64 = a.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    let n: i64 = b.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    a.batch_execute("COMMIT").await.unwrap();
    let n: i64 = b.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);

    // ROLLBACK discards.
    a.batch_execute("BEGIN; INSERT INTO t VALUES (2, 'two'); UPDATE t SET v = 'uno' WHERE k = 1; ROLLBACK")
        .await
        .unwrap();
    let rows = b.query("SELECT k, v FROM t ORDER BY k", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "one");

    // An error in a block fails it (25P02) until ROLLBACK; COMMIT then rolls back.
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("INSERT INTO t VALUES (3, 'three')").await.unwrap();
    let err = a.batch_execute("INSERT INTO t VALUES (1, 'dup')").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    let err = a.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "25P02");
    let msgs = a.simple_query("COMMIT").await.unwrap();
    assert!(matches!(msgs.last(), Some(SimpleQueryMessage::CommandComplete(_))));
    let n: i64 = b.query_one("SELECT count(*) FROM t WHERE k = 3", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "a failed block must not commit");

    // A multi-statement simple query is atomic.
    let err = a.batch_execute("INSERT INTO t VALUES (4, 'four'); INSERT INTO t VALUES (1, 'dup')").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    let n: i64 = b.query_one("SELECT count(*) FROM t WHERE k = 4", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);

    // Savepoints.
    a.batch_execute(
        "BEGIN; INSERT INTO t VALUES (5, 'five'); SAVEPOINT s; INSERT INTO t VALUES (6, 'six'); \
         ROLLBACK TO SAVEPOINT s; COMMIT",
    )
    .await
    .unwrap();
    let ks: Vec<i32> = b.query("SELECT k FROM t ORDER BY k", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ks, vec![1, 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE m (host TEXT, ts TIMESTAMP, v DOUBLE PRECISION)").await.unwrap();
    let sink = c.copy_in("COPY m FROM STDIN").await.unwrap();
    let data = "a\t2026-11-23 10:00:00\t1.5\nb\t2026-11-23 10:01:00\t\\N\n";
    futures::pin_mut!(sink);
    use futures::SinkExt;
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 2);
    let sink = c.copy_in("COPY m (host, v) FROM STDIN WITH (FORMAT csv, HEADER true)").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from("host,v\n\"c,d\",4\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);

    let out = c.copy_out("COPY (SELECT host, ts, v FROM m ORDER BY host) TO STDOUT WITH (FORMAT csv)").await.unwrap();
    use futures::TryStreamExt;
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    let text: String = chunks.iter().map(|b| String::from_utf8_lossy(b).to_string()).collect();
    assert_eq!(text, "a,2026-11-23 10:00:00,1.5\nb,2026-11-23 10:01:00,\n\"c,d\",,4\n");

    // Bad data is an error and nothing of the COPY is written.
    let sink = c.copy_in("COPY m FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from("e\t2026-11-23 10:00:00\t1\nf\tnot a time\t2\n")).await.unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22007");
    let n: i64 = c.query_one("SELECT count(*) FROM m", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_timeout_stop_a_long_query() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.connect().await;
    let long = LONG_QUERY;
    let victim = server.connect().await;
    let running_token = victim.cancel_token();
    let running = tokio::spawn(async move { victim.query_one(long, &[]).await.map(|_| ()) });
    let outcome = cancel_by_request(running, running_token).await;
    let err = outcome.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014");

    c.batch_execute("SET statement_timeout = '200ms'").await.unwrap();
    let err = c.query_one(long, &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014");
    assert!(err.as_db_error().unwrap().message().contains("statement timeout"));
    c.batch_execute("SET statement_timeout = 0").await.unwrap();
    // The session still works.
    let one: i64 = c.query_one("SELECT 1::BIGINT", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn weir_commands_and_catalog_functions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE Orders (id BIGINT PRIMARY KEY, note VARCHAR(40), amount NUMERIC(10,2))")
        .await
        .unwrap();
    c.batch_execute("CREATE TABLE IF NOT EXISTS orders (x INT)").await.unwrap();

    let rows = simple_rows(&c.simple_query("SHOW TABLES").await.unwrap());
    assert_eq!(rows, vec![vec![Some("orders".into())]]);
    let rows = simple_rows(&c.simple_query("SHOW CREATE TABLE orders").await.unwrap());
    let ddl = rows[0][1].clone().unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("public.orders"));
    assert!(ddl.starts_with("CREATE TABLE Orders (id BIGINT PRIMARY KEY"), "{ddl}");
    // What SHOW CREATE prints is valid SQL that recreates the table.
    c.batch_execute("DROP TABLE orders").await.unwrap();
    c.batch_execute(&ddl).await.unwrap();

    // Declared types reach pg_catalog and information_schema in Postgres's words.
    let rows = simple_rows(
        &c.simple_query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE c.relname = 'orders' ORDER BY a.attnum",
        )
        .await
        .unwrap(),
    );
    let types: Vec<String> = rows.iter().map(|r| r[1].clone().unwrap()).collect();
    assert_eq!(types, vec!["bigint", "character varying(40)", "numeric(10,2)"]);
    let rows = simple_rows(
        &c.simple_query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'orders' ORDER BY ordinal_position",
        )
        .await
        .unwrap(),
    );
    let types: Vec<String> = rows.iter().map(|r| r[1].clone().unwrap()).collect();
    assert_eq!(types, vec!["bigint", "character varying", "numeric"]);
    let rows = simple_rows(
        &c.simple_query("SELECT pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint WHERE conname = 'orders_pkey'")
            .await
            .unwrap(),
    );
    assert_eq!(rows, vec![vec![Some("PRIMARY KEY (id)".into())]]);

    // Privilege functions answer for the owner, and know what does not exist.
    let yes: bool = c.query_one("SELECT has_table_privilege('orders', 'SELECT')", &[]).await.unwrap().get(0);
    assert!(yes);
    let yes: bool = c.query_one("SELECT has_table_privilege('weir', 'pg_class', 'SELECT')", &[]).await.unwrap().get(0);
    assert!(yes);
    let err = c.query_one("SELECT has_table_privilege('nope', 'SELECT')", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");

    // Session functions.
    let rows = simple_rows(
        &c.simple_query("SELECT current_setting('server_version_num')::int / 100, quote_ident('time'), current_database()")
            .await
            .unwrap(),
    );
    assert_eq!(rows, vec![vec![Some("1500".into()), Some("\"time\"".into()), Some("weir".into())]]);
    let rows = simple_rows(&c.simple_query("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").await.unwrap());
    assert!(rows.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_cancel_backend_stops_another_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let victim = server.connect().await;
    let admin = server.connect().await;
    let pid: i32 = victim.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let running = tokio::spawn(async move { victim.simple_query(LONG_QUERY).await });
    let admin = &admin;
    let outcome = cancel_until_finished(running, || async move {
        admin.query_one("SELECT pg_cancel_backend($1)", &[&pid]).await.unwrap().get::<_, bool>(0)
    })
    .await;
    let err = outcome.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "57014");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_running_statement_finish() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.connect().await;
    // About two seconds of work in a debug build: long enough to be running when SIGTERM comes.
    let query = "SELECT count(*) FROM generate_series(1, 30000) a, generate_series(1, 30000) b WHERE a.value + b.value = 7";
    let running = tokio::spawn(async move { c.query_one(query, &[]).await.map(|r| r.get::<_, i64>(0)) });
    // Wait until the server reports the statement as running, then ask it to stop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, metrics) = server.http_get("/metrics");
        if metrics.contains("weir_statements_running 1") || running.is_finished() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the statement never started");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert_eq!(running.await.unwrap().unwrap(), 6, "the running statement completes");
}

/// `--max-connections`: one session more gets 53300, as in Postgres; a CancelRequest still gets
/// through while the server is full; a place that frees up can be taken again.
#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_get_53300_and_cancels_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--max-connections", "2"]);
    let first = server.connect().await;
    let second = server.connect().await;
    let err = match tokio_postgres::connect(&server.conn_str(), tokio_postgres::NoTls).await {
        Ok(_) => panic!("a third session was let in"),
        Err(e) => e,
    };
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53300");
    assert_eq!(db.message(), "sorry, too many clients already");

    // Full, and a long query is canceled through a CancelRequest on a new connection.
    let token = first.cancel_token();
    let running = tokio::spawn(async move { first.query_one(LONG_QUERY, &[]).await.map(|_| ()) });
    let outcome = cancel_by_request(running, token).await;
    assert_eq!(outcome.unwrap_err().code().unwrap().code(), "57014");

    // A session that ends frees its place.
    drop(second);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let third = loop {
        match tokio_postgres::connect(&server.conn_str(), tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                break client;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("53300"), "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the freed place was not given back: {e}"),
        }
    };
    assert_eq!(third.query_one("SELECT 1::BIGINT", &[]).await.unwrap().get::<_, i64>(0), 1);
    let (_, metrics) = server.http_get("/metrics");
    assert!(metrics.lines().any(|l| l.starts_with("weir_connections_over_limit_total ") && !l.ends_with(" 0")), "{metrics}");
}

/// `--query-memory-limit-mb`: a statement that needs more memory than its pool (and cannot
/// spill) gets 53200 with the largest consumers in the detail; the session goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_over_its_memory_limit_gets_53200() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--query-memory-limit-mb", "8"]);
    let c = server.connect().await;
    let err = c.query_one("SELECT cardinality(array_agg(g.value)) FROM generate_series(1, 5000000) g", &[]).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53200");
    assert_eq!(db.message(), "out of memory");
    assert!(db.detail().is_some_and(|d| d.contains("consumed")), "{db:?}");
    // Within the limit, and the session still works.
    let n: i64 = c.query_one("SELECT count(*) FROM generate_series(1, 100000) g", &[]).await.unwrap().get(0);
    assert_eq!(n, 100000);
}

/// A query that computes for seconds inside single polls (a selective nested-loop join, which
/// fills its output batch before it yields) runs on the query runtime's threads: meanwhile
/// other sessions get answers, a view over a table keeps up with inserts, and a cancel answers
/// at once. On the shared runtime the join held every worker (see LONG_QUERY).
#[tokio::test(flavor = "multi_thread")]
async fn a_heavy_query_starves_neither_sessions_nor_views() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let setup = server.connect().await;
    setup
        .batch_execute("CREATE TABLE heavy_t (x BIGINT); CREATE MATERIALIZED VIEW heavy_mv AS SELECT count(*) AS n FROM heavy_t")
        .await
        .unwrap();
    let victim = server.connect().await;
    let token = victim.cancel_token();
    let join = "SELECT count(*) FROM generate_series(1, 300000) a, generate_series(1, 300000) b WHERE a.value + b.value = 7";
    let running = tokio::spawn(async move { victim.simple_query(join).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !server.http_get("/metrics").1.contains("weir_statements_running 1") {
        assert!(std::time::Instant::now() < deadline, "the join never started");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Let the join take its threads.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let other = server.connect().await;
    for i in 1..=5_i64 {
        let started = std::time::Instant::now();
        other.execute("INSERT INTO heavy_t VALUES ($1)", &[&i]).await.unwrap();
        let n = loop {
            let n: i64 = other.query_one("SELECT n FROM heavy_mv", &[]).await.unwrap().get(0);
            if n == i || started.elapsed() > std::time::Duration::from_secs(10) {
                break n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(n, i, "the view did not take the insert within 10 s");
        // The join still runs: the answers above came while it held its threads.
        assert!(!running.is_finished(), "the join ended early: {:?}", running.await);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "insert {i} and its view took {:?}", started.elapsed());
    }
    let started = std::time::Instant::now();
    let outcome = cancel_by_request(running, token).await;
    assert_eq!(outcome.unwrap_err().code().unwrap().code(), "57014");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the cancel took {:?}", started.elapsed());
}

/// `--max-subscriptions`: one more gets 53400; one that ends frees its place.
#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_over_the_limit_get_53400() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--max-subscriptions", "2"]);
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE sub_t (x BIGINT); CREATE MATERIALIZED VIEW sub_mv AS SELECT count(*) AS n FROM sub_t").await.unwrap();
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let s = server.connect().await;
        s.batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE sub_mv").await.unwrap();
        subscribers.push(s);
    }
    let third = server.connect().await;
    let err = third.batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE sub_mv").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "53400", "{err:?}");
    third.batch_execute("ROLLBACK").await.unwrap();
    let metrics = server.http_get("/metrics").1;
    assert!(metrics.contains("weir_subscriptions_active 2\n"), "{metrics}");
    assert!(metrics.contains("weir_subscriptions_over_limit_total 1\n"), "{metrics}");

    // Ending a block closes its cursor, and with it the subscription.
    subscribers[0].batch_execute("COMMIT").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match third.batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE sub_mv").await {
            Ok(()) => break,
            Err(e) => {
                assert_eq!(e.code().unwrap().code(), "53400", "{e:?}");
                third.batch_execute("ROLLBACK").await.unwrap();
                assert!(std::time::Instant::now() < deadline, "the place never freed up");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    // The snapshot: (epoch, diff 1, n 0).
    let rows = simple_rows(&third.simple_query("FETCH 1 c").await.unwrap());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][1..], [Some("1".to_string()), Some("0".to_string())]);
}
