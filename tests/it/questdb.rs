//! QuestDB sinks against a real line-protocol server. QuestDB has no package here, so InfluxDB
//! 1.x (`tests/services.sh` starts it and sets `WEIR_INFLUXDB_URL`) judges what the sink sends:
//! it rejects malformed lines, and its points, like a QuestDB table with `DEDUP UPSERT KEYS`,
//! are replaced by a later write with the same tags (symbols) and timestamp.
//!
//! * ILP over HTTP goes through a small proxy that adds the `db` parameter InfluxDB needs (the
//!   client does not send one) and can answer 503 for a while (an outage).
//! * ILP over TCP (InfluxDB 1.x has no TCP listener) goes to a listener that posts the lines it
//!   receives, unchanged, to InfluxDB's `/write`.
//!
//! Both record every line InfluxDB accepted, so that a test can tell a row sent twice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::chat::unique_name;
use crate::common::{Server, text_rows};

fn influxdb() -> Option<String> {
    match std::env::var("WEIR_INFLUXDB_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "CI must run the QuestDB sink tests: start InfluxDB with tests/services.sh");
            eprintln!("skipped: WEIR_INFLUXDB_URL is not set (run tests/run.sh, or source tests/services.sh and start_influxdb)");
            None
        }
    }
}

const DB: &str = "weir";

/// What reached InfluxDB through a proxy or forwarder.
#[derive(Default)]
struct Received {
    influx: String,
    /// Lines InfluxDB accepted.
    lines: Mutex<Vec<String>>,
    /// InfluxDB's answers other than success.
    errors: Mutex<Vec<String>>,
    /// `/write` requests forwarded.
    requests: AtomicUsize,
    /// While set, the HTTP proxy answers 503 to every write.
    down: AtomicBool,
}

impl Received {
    fn new(influx: &str) -> Arc<Self> {
        Arc::new(Received { influx: influx.to_string(), ..Default::default() })
    }

    /// Posts lines to InfluxDB, recording them when accepted.
    async fn write(&self, body: Bytes) -> (StatusCode, String) {
        let url = format!("{}/write?db={DB}&precision=ns", self.influx);
        let response = reqwest::Client::new().post(url).body(body.clone()).send().await.expect("InfluxDB answers");
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let text = response.text().await.unwrap_or_default();
        self.requests.fetch_add(1, Ordering::SeqCst);
        if status.is_success() {
            self.lines.lock().unwrap().extend(String::from_utf8_lossy(&body).lines().map(str::to_string));
        } else {
            self.errors.lock().unwrap().push(format!("{status}: {text}"));
        }
        (status, text)
    }

    fn assert_no_errors(&self) {
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "InfluxDB refused lines: {errors:?}");
    }

    fn line_count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// The accepted lines once the count has settled. InfluxDB shows a request's rows before
    /// the proxy has its answer and records them, so a test that saw the rows waits for the
    /// count to reach `expected` (or 5 s), then a little longer for any extra line.
    async fn settled_line_count(&self, expected: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.line_count() < expected && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.line_count()
    }
}

async fn proxy(State(received): State<Arc<Received>>, method: Method, uri: Uri, body: Bytes) -> (StatusCode, String) {
    if uri.path() == "/write" {
        if received.down.load(Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, "down for the test".into());
        }
        return received.write(body).await;
    }
    // The client's `/settings` request (InfluxDB answers 404: the client then speaks ILP v1).
    let url = format!("{}{}?db={DB}", received.influx, uri.path());
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
    let response = reqwest::Client::new().request(method, url).body(body).send().await.expect("InfluxDB answers");
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, response.text().await.unwrap_or_default())
}

/// An HTTP ILP endpoint in front of InfluxDB.
async fn http_proxy(received: Arc<Received>) -> SocketAddr {
    let app = axum::Router::new().fallback(proxy).layer(DefaultBodyLimit::disable()).with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A TCP ILP endpoint: the lines of each connection posted to InfluxDB as they arrive.
async fn tcp_forwarder(received: Arc<Received>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(socket);
                let mut chunk = String::new();
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => chunk.push_str(&line),
                    }
                    if reader.buffer().is_empty() && chunk.ends_with('\n') {
                        received.write(Bytes::from(std::mem::take(&mut chunk))).await;
                    }
                }
            });
        }
    });
    addr
}

/// InfluxDB's rows of a measurement (its newest point per tag set and time), column name to
/// value, times in nanoseconds.
async fn influx_rows(influx: &str, measurement: &str) -> Vec<BTreeMap<String, serde_json::Value>> {
    let json = influx_query(influx, &format!("SELECT * FROM \"{measurement}\"")).await;
    let Some(series) = json["results"][0]["series"][0].as_object() else { return Vec::new() };
    let columns: Vec<String> = series["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| columns.iter().cloned().zip(row.as_array().unwrap().iter().cloned()).collect())
        .collect()
}

async fn influx_query(influx: &str, q: &str) -> serde_json::Value {
    let url = format!("{influx}/query");
    let response = reqwest::Client::new().get(url).query(&[("db", DB), ("epoch", "ns"), ("q", q)]).send().await.unwrap();
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// A value as both sides are compared: numbers through f64, so that `2` and `2.0` agree.
fn canonical(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "NULL".into(),
        serde_json::Value::Bool(b) => if *b { "t" } else { "f" }.into(),
        serde_json::Value::Number(n) => format!("{}", n.as_f64().unwrap()),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A view timestamp's text (`2026-01-01 00:00:10`) as Unix nanoseconds.
fn nanos(text: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap().and_utc().timestamp_nanos_opt().unwrap()
}

/// The view's rows, the timestamp column (first) as nanoseconds and numbers through f64.
async fn view_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = text_rows(client, sql)
        .await
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, text)| match text.as_str() {
                    "\\N" => "NULL".to_string(),
                    _ if i == 0 => nanos(text).to_string(),
                    _ => text.parse::<f64>().map(|f| format!("{f}")).unwrap_or_else(|_| text.clone()),
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// InfluxDB's rows in the given columns (`time` first), filtered by `keep`, sorted.
async fn target_rows(
    influx: &str,
    measurement: &str,
    columns: &[&str],
    keep: impl Fn(&BTreeMap<String, serde_json::Value>) -> bool,
) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = influx_rows(influx, measurement)
        .await
        .iter()
        .filter(|r| keep(r))
        .map(|r| columns.iter().map(|c| canonical(&r[*c])).collect())
        .collect();
    rows.sort();
    rows
}

/// Waits until InfluxDB's rows equal the view's.
async fn wait_equal(
    client: &tokio_postgres::Client,
    influx: &str,
    view_sql: &str,
    measurement: &str,
    columns: &[&str],
    keep: impl Fn(&BTreeMap<String, serde_json::Value>) -> bool,
) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let view = view_rows(client, view_sql).await;
        let target = target_rows(influx, measurement, columns, &keep).await;
        if view == target {
            return view;
        }
        assert!(Instant::now() < deadline, "InfluxDB has\n{target:#?}\nthe view has\n{view:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const WINDOWS_DDL: &str = "CREATE TABLE ev (k TEXT, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY; \
     CREATE MATERIALIZED VIEW w AS SELECT k, window_start, count(*) AS n, sum(v) AS s, avg(v) AS mean, max(v) > 20 AS hot, 'win-' || k AS label \
         FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY k, window_start EMIT ON WINDOW CLOSE";

/// The columns the tests compare, the designated timestamp first.
const WINDOWS_VIEW: &str = "SELECT window_start, k, n, s, mean, hot, label FROM w";
const WINDOWS_COLUMNS: &[&str] = &["time", "k", "n", "s", "mean", "hot", "label"];

/// Batches of 30 events in event-time order (none late), each batch 10 s of event time and
/// closing the windows before it; returns how many windows (3 keys each) they fill.
async fn insert_windows(client: &tokio_postgres::Client, batches: std::ops::Range<i64>) -> usize {
    let mut windows = 0;
    for batch in batches {
        let values: Vec<String> = (0..30i64)
            .map(|i| {
                let second = batch * 10 + i / 3;
                format!("('{}', {}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{second}' SECOND)", ["a", "b", "c"][(i % 3) as usize], i + batch)
            })
            .collect();
        client.batch_execute(&format!("INSERT INTO ev VALUES {}", values.join(", "))).await.unwrap();
        client.batch_execute("FLUSH").await.unwrap();
        windows += 3;
    }
    windows
}

/// A server with the windows view (`WINDOWS_DDL`) sunk over ILP/HTTP through a proxy to
/// InfluxDB, with the given extra sink options.
struct WindowsSink {
    received: Arc<Received>,
    table: String,
    client: tokio_postgres::Client,
    _server: Server,
    _dir: tempfile::TempDir,
}

async fn windows_sink(influx: &str, prefix: &str, extra: &str) -> WindowsSink {
    let received = Received::new(influx);
    let addr = http_proxy(received.clone()).await;
    let table = unique_name(prefix);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client.batch_execute(WINDOWS_DDL).await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE SINK w_out FROM w WITH (connector = 'questdb', questdb.addr = '{addr}', questdb.table = '{table}', \
                 questdb.designated_timestamp = 'window_start', questdb.symbols = 'k'{extra})"
        ))
        .await
        .unwrap();
    WindowsSink { received, table, client, _server: server, _dir: dir }
}

/// An EMIT ON WINDOW CLOSE view over ILP/HTTP, in requests of at most 4 rows: every window
/// once, with the designated timestamp, a symbol and a field of each type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_append_only_windows_arrive_once_with_their_types() {
    let Some(influx) = influxdb() else { return };
    let sink = windows_sink(&influx, "windows", ", sink.batch.rows = '4'").await;
    let (received, table, client) = (&sink.received, &sink.table, &sink.client);
    let windows = insert_windows(client, 0..10).await;
    client.batch_execute("INSERT INTO ev VALUES ('z', 0, TIMESTAMP '2026-01-01 01:00:00')").await.unwrap();
    let rows = wait_equal(client, &influx, WINDOWS_VIEW, table, WINDOWS_COLUMNS, |_| true).await;
    assert_eq!(rows.len(), windows, "every window of the 100 s, and no more");
    received.assert_no_errors();
    assert_eq!(received.settled_line_count(windows).await, windows, "each window was sent once");
    assert!(received.requests.load(Ordering::SeqCst) >= windows.div_ceil(4), "requests of at most 4 rows");

    // Symbols are tags; the other columns keep their types.
    let tags = influx_query(&influx, &format!("SHOW TAG KEYS FROM \"{table}\"")).await;
    assert_eq!(tags["results"][0]["series"][0]["values"], serde_json::json!([["k"]]));
    let fields = influx_query(&influx, &format!("SHOW FIELD KEYS FROM \"{table}\"")).await;
    assert_eq!(
        fields["results"][0]["series"][0]["values"],
        serde_json::json!([["hot", "boolean"], ["label", "string"], ["mean", "float"], ["n", "integer"], ["s", "integer"]])
    );
    let delivered: i64 = client.query_one("SELECT rows_delivered FROM weir_catalog.sinks", &[]).await.unwrap().get(0);
    assert_eq!(delivered as usize, windows);
}

/// A GROUP BY view with updates and deletes over ILP/TCP, keyed by its timestamp and a symbol:
/// each key's newest point equals the view, and a key that left the view is marked deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_upserts_replace_points_and_mark_deleted_keys() {
    let Some(influx) = influxdb() else { return };
    let received = Received::new(&influx);
    let addr = tcp_forwarder(received.clone()).await;
    let table = unique_name("totals");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE t (id INT PRIMARY KEY, k TEXT, v BIGINT, ts TIMESTAMP); \
             CREATE MATERIALIZED VIEW totals AS SELECT date_trunc('minute', ts) AS minute, k, count(*) AS n, sum(v) AS s FROM t GROUP BY 1, 2; \
             CREATE SINK totals_out FROM totals WITH (connector = 'questdb', questdb.protocol = 'tcp', questdb.addr = '{addr}', \
                 questdb.table = '{table}', type = 'upsert', primary_key = 'minute, k', questdb.designated_timestamp = 'minute', \
                 questdb.symbols = 'k')"
        ))
        .await
        .unwrap();
    let live = |r: &BTreeMap<String, serde_json::Value>| r["weir_deleted"] == serde_json::Value::Bool(false);
    let view_sql = "SELECT minute, k, n, s FROM totals";
    let columns = ["time", "k", "n", "s"];
    let values: Vec<String> = (0..60)
        .map(|i| format!("({i}, '{}', {i}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{}' SECOND)", ["a", "b", "c", "d"][i % 4], i * 7))
        .collect();
    client.batch_execute(&format!("INSERT INTO t VALUES {}", values.join(", "))).await.unwrap();
    let first = wait_equal(&client, &influx, view_sql, &table, &columns, live).await;
    // Updates move rows between keys; deleting every row of key d in the first minute removes
    // that key from the view.
    client.batch_execute("UPDATE t SET v = v * 10 WHERE id % 5 = 0").await.unwrap();
    client.batch_execute("UPDATE t SET k = 'e' WHERE id % 7 = 0").await.unwrap();
    client.batch_execute("DELETE FROM t WHERE k = 'd' AND ts < TIMESTAMP '2026-01-01 00:01:00'").await.unwrap();
    let after = wait_equal(&client, &influx, view_sql, &table, &columns, live).await;
    assert_ne!(first, after, "the changes changed the view");
    let first_minute = nanos("2026-01-01 00:00:00");
    let deleted = target_rows(&influx, &table, &["time", "k"], |r| r["weir_deleted"] == serde_json::Value::Bool(true)).await;
    assert!(deleted.contains(&vec![first_minute.to_string(), "d".into()]), "key (00:00, d) marked deleted: {deleted:?}");
    received.assert_no_errors();
}

/// The ILP endpoint answers 503 for several seconds mid-stream: the view keeps running, the
/// sink says it is retrying, and afterwards every window arrived exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_outage_loses_and_doubles_nothing() {
    let Some(influx) = influxdb() else { return };
    let sink = windows_sink(&influx, "outage", "").await;
    let (received, table, client) = (&sink.received, &sink.table, &sink.client);
    let mut windows = insert_windows(client, 0..3).await;
    received.down.store(true, Ordering::SeqCst);
    windows += insert_windows(client, 3..7).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: String = client.query_one("SELECT status FROM weir_catalog.sinks", &[]).await.unwrap().get(0);
        if status.starts_with("retrying") {
            assert!(status.contains("503") || status.contains("down for the test"), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "the sink never said it was retrying: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    windows += insert_windows(client, 7..10).await;
    let count: i64 = client.query_one("SELECT count(*) FROM w", &[]).await.unwrap().get(0);
    assert!(count > 0, "the view kept running");
    received.down.store(false, Ordering::SeqCst);
    client.batch_execute("INSERT INTO ev VALUES ('z', 0, TIMESTAMP '2026-01-01 01:00:00')").await.unwrap();
    let rows = wait_equal(client, &influx, WINDOWS_VIEW, table, WINDOWS_COLUMNS, |_| true).await;
    assert_eq!(rows.len(), windows);
    received.assert_no_errors();
    assert_eq!(received.settled_line_count(windows).await, windows, "no window was written twice");
    let status: String = client.query_one("SELECT status FROM weir_catalog.sinks", &[]).await.unwrap().get(0);
    assert_eq!(status, "running");
    let retries: i64 = client.query_one("SELECT retries FROM weir_catalog.sinks", &[]).await.unwrap().get(0);
    assert!(retries > 0);
}

/// Definitions the sink cannot serve are refused at CREATE with the reason; the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_questdb_sinks_are_refused_at_create() {
    let Some(influx) = influxdb() else { return };
    let addr = http_proxy(Received::new(&influx)).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client.batch_execute(WINDOWS_DDL).await.unwrap();
    let create = |with: String| {
        let client = &client;
        async move {
            let sql = format!("CREATE SINK s FROM w WITH (connector = 'questdb', questdb.table = 'x', {with})");
            let e = client.batch_execute(&sql).await.expect_err(&sql);
            let e = e.as_db_error().expect("a database error").clone();
            (e.code().code().to_string(), e.message().to_string())
        }
    };
    let (code, message) = create("questdb.addr = '127.0.0.1:1', questdb.password = 'hunter2', questdb.username = 'u'".into()).await;
    assert_eq!(code, "08001", "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let (code, message) = create(format!("questdb.addr = '{addr}', questdb.designated_timestamp = 'k'")).await;
    assert_eq!(code, "22023", "{message}");
    assert!(message.contains("not a timestamp"), "{message}");
    let (_, message) = create(format!("questdb.addr = '{addr}', questdb.symbols = 'n'")).await;
    assert!(message.contains("only text columns"), "{message}");
    let (_, message) = create(format!("questdb.addr = '{addr}', questdb.protocol = 'udp'")).await;
    assert!(message.contains("questdb.protocol"), "{message}");
    let (_, message) = create(format!("questdb.addr = '{addr}', type = 'upsert', primary_key = 'k'")).await;
    assert!(message.contains("DEDUP"), "{message}");
    let (_, message) = create(format!("questdb.addr = '{addr}', questdb.colour = 'red'")).await;
    assert!(message.contains("questdb.colour"), "{message}");
    let shown = client.simple_query("SHOW SINKS").await.unwrap();
    assert!(shown.iter().all(|m| !matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))), "no sink was created");
    assert_eq!(client.query("SELECT count(*) FROM w", &[]).await.unwrap().len(), 1, "the server goes on");
}

/// `CREATE SINK ... AS SELECT ... EMIT ON WINDOW CLOSE`: the sink maintains its own query (no
/// view in the catalog) and InfluxDB ends up with what a batch run of that query returns.
/// `SHOW SINKS` and `SHOW CREATE SINK` (secrets redacted) describe it; DROP SINK stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_of_its_own_query_equals_the_batch_query() {
    let Some(influx) = influxdb() else { return };
    let received = Received::new(&influx);
    let addr = http_proxy(received.clone()).await;
    let table = unique_name("own_query");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client.batch_execute(WINDOWS_DDL).await.unwrap();
    let query = "SELECT window_start, k, count(*) AS n, sum(v) AS s FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY k, window_start";
    client
        .batch_execute(&format!(
            "CREATE SINK q AS {query} EMIT ON WINDOW CLOSE WITH (connector = 'questdb', questdb.addr = '{addr}', \
                 questdb.table = '{table}', questdb.designated_timestamp = 'window_start', questdb.symbols = 'k', \
                 questdb.username = 'weir', questdb.password = 'hunter2')"
        ))
        .await
        .unwrap();
    insert_windows(&client, 0..10).await;
    client.batch_execute("INSERT INTO ev VALUES ('z', 0, TIMESTAMP '2026-01-01 01:00:00')").await.unwrap();
    // The batch answer (DataFusion over the same events, windows by date_bin), less the windows
    // the watermark has not closed.
    let closed = "SELECT date_bin(INTERVAL '10 seconds', ts, TIMESTAMP '1970-01-01 00:00:00') AS window_start, k, count(*) AS n, sum(v) AS s \
                  FROM ev WHERE ts < TIMESTAMP '2026-01-01 00:59:50' GROUP BY 1, 2";
    let rows = wait_equal(&client, &influx, closed, &table, &["time", "k", "n", "s"], |_| true).await;
    assert_eq!(rows.len(), 30);
    received.assert_no_errors();

    let shown = client.simple_query("SHOW SINKS").await.unwrap();
    let row = shown.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some((0..4).map(|i| r.get(i).unwrap_or("").to_string()).collect::<Vec<_>>()),
        _ => None,
    });
    assert_eq!(row, Some(vec!["q".into(), "".into(), "questdb".into(), "running".into()]));
    let create: String = client.query_one("SHOW CREATE SINK q", &[]).await.unwrap().get(1);
    assert!(create.contains("EMIT ON WINDOW CLOSE") && !create.contains("hunter2"), "{create}");
    let views: i64 = client.query_one("SELECT count(*) FROM weir_catalog.materialized_views", &[]).await.unwrap().get(0);
    assert_eq!(views, 1, "only w: the sink's query is not a view of the catalog");

    // After a restart the sink's query runs again from the stored definition (the windows it
    // sends again replace themselves: same tags and timestamp) and follows new events.
    server.terminate();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    let values: Vec<String> = (0..30).map(|i| format!("('{}', {i}, TIMESTAMP '2026-01-01 02:00:00' + INTERVAL '{}' SECOND)", ["a", "b", "c"][i % 3], i / 3)).collect();
    client.batch_execute(&format!("INSERT INTO ev VALUES {}, ('z', 0, TIMESTAMP '2026-01-01 03:00:00')", values.join(", "))).await.unwrap();
    let closed = closed.replace("00:59:50", "02:59:50");
    let rows = wait_equal(&client, &influx, &closed, &table, &["time", "k", "n", "s"], |_| true).await;
    assert_eq!(rows.len(), 34, "the 30 windows, (01:00, z) and the 3 new ones");
    received.assert_no_errors();

    client.batch_execute("DROP SINK q").await.unwrap();
    let before = received.settled_line_count(0).await;
    client.batch_execute("INSERT INTO ev VALUES ('y', 0, TIMESTAMP '2026-01-01 04:00:00')").await.unwrap();
    client.batch_execute("FLUSH").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received.line_count(), before, "a dropped sink sends nothing");
}
