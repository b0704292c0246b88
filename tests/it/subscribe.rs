//! SUBSCRIBE over pgwire, as `COPY (SUBSCRIBE ...) TO STDOUT` read with tokio-postgres's
//! copy_out: the sum of diffs per row equals the view, epochs come in order with a progress row
//! after each, `snapshot = false` leaves the contents out, and a subscriber that stops reading
//! holds back neither inserts nor another subscriber.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncReadExt;

use crate::common::{Server, text_rows};

/// A COPY-out stream of a subscription, split into rows of text fields.
struct Feed {
    stream: Pin<Box<dyn Stream<Item = Result<Bytes, tokio_postgres::Error>> + Send>>,
    buffered: String,
}

impl Feed {
    async fn open(client: &tokio_postgres::Client, subscribe: &str) -> Feed {
        let stream = client.copy_out(&format!("COPY ({subscribe}) TO STDOUT")).await.unwrap();
        Feed { stream: Box::pin(stream), buffered: String::new() }
    }

    /// The next row (fields of COPY's text format), waiting at most `timeout`.
    async fn next_row(&mut self, timeout: Duration) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffered.find('\n') {
                let line: String = self.buffered.drain(..=end).collect();
                return Some(line.trim_end_matches('\n').split('\t').map(str::to_string).collect());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Some(Ok(bytes))) => self.buffered.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Some(Err(e))) => panic!("the subscription failed: {e}"),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

/// The view's rows, sorted, as COPY text fields.
async fn view_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    let mut rows = text_rows(client, sql).await;
    rows.sort();
    rows
}

/// Folds a subscription with progress rows (`weir_epoch, weir_diff, weir_progressed, cols`)
/// into the multiset of rows it describes, checking the epochs' order, until it equals `want`.
/// The subscription must have progress rows: the state is compared at each of them.
async fn follow_until(feed: &mut Feed, state: &mut BTreeMap<Vec<String>, i64>, last_epoch: &mut i64, want: &[Vec<String>]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = feed.next_row(Duration::from_secs(5)).await;
        if let Some(row) = &row {
            let epoch: i64 = row[0].parse().unwrap();
            assert!(epoch >= *last_epoch, "epoch {epoch} after {last_epoch}");
            if row[2] == "f" {
                *last_epoch = epoch;
                let diff: i64 = row[1].parse().unwrap();
                *state.entry(row[3..].to_vec()).or_default() += diff;
                state.retain(|_, n| *n != 0);
                continue;
            }
            assert_eq!(row[1], "\\N", "a progress row has no diff");
            // Everything up to this epoch has been sent: later rows are of later epochs.
            *last_epoch = epoch + 1;
        }
        // An epoch is complete (or nothing came): compare.
        let mut have: Vec<Vec<String>> = state.iter().flat_map(|(row, n)| std::iter::repeat_n(row.clone(), (*n).max(0) as usize)).collect();
        have.sort();
        if have == want && state.values().all(|n| *n >= 0) {
            return;
        }
        assert!(Instant::now() < deadline, "the subscription describes\n{have:?}\nthe view has\n{want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_folds_to_the_view_epoch_by_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, k TEXT, v BIGINT); \
             CREATE MATERIALIZED VIEW totals AS SELECT k, sum(v) AS s, count(*) AS n FROM t GROUP BY k; \
             INSERT INTO t VALUES (1, 'a', 10), (2, 'b', 5), (3, 'a', 1)",
        )
        .await
        .unwrap();
    client.batch_execute("FLUSH").await.unwrap();
    let reader = server.connect().await;
    let mut feed = Feed::open(&reader, "SUBSCRIBE totals WITH (progress = true)").await;
    let (mut state, mut last_epoch) = (BTreeMap::new(), 0);
    // The snapshot: the contents before any change.
    follow_until(&mut feed, &mut state, &mut last_epoch, &view_rows(&client, "SELECT * FROM totals").await).await;
    for round in 0..5 {
        client
            .batch_execute(&format!(
                "INSERT INTO t VALUES ({}, 'c', {round}); UPDATE t SET v = v + 1 WHERE id % 2 = {}; DELETE FROM t WHERE id = {}",
                10 + round,
                round % 2,
                10 + round - 1
            ))
            .await
            .unwrap();
        client.batch_execute("FLUSH").await.unwrap();
        let want = view_rows(&client, "SELECT * FROM totals").await;
        follow_until(&mut feed, &mut state, &mut last_epoch, &want).await;
    }
    // A table can be subscribed to as well (it gets a view job of its own).
    let table_reader = server.connect().await;
    let mut rows = Feed::open(&table_reader, "SUBSCRIBE t WITH (snapshot = true, progress = true)").await;
    let (mut state, mut last_epoch) = (BTreeMap::new(), 0);
    follow_until(&mut rows, &mut state, &mut last_epoch, &view_rows(&client, "SELECT * FROM t").await).await;
}

/// `snapshot = false`: only changes after the subscription started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_snapshot_only_later_changes_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (id INT PRIMARY KEY, k TEXT); INSERT INTO t VALUES (1, 'old'); FLUSH")
        .await
        .unwrap();
    let reader = server.connect().await;
    let mut feed = Feed::open(&reader, "SUBSCRIBE (SELECT k FROM t) WITH (snapshot = false)").await;
    // Let the subscription join before the insert.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.batch_execute("INSERT INTO t VALUES (2, 'new')").await.unwrap();
    client.batch_execute("FLUSH").await.unwrap();
    let row = feed.next_row(Duration::from_secs(10)).await.expect("the new row");
    assert_eq!(&row[1..], ["1", "new"], "{row:?}");
    assert!(feed.next_row(Duration::from_millis(500)).await.is_none(), "nothing else: the old row was not sent");
}

/// A subscriber that stops reading: inserts go on, and another subscriber sees every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_holds_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (id INT PRIMARY KEY, pad TEXT); CREATE MATERIALIZED VIEW all_t AS SELECT id, pad FROM t")
        .await
        .unwrap();
    let mut stalled = stalled_subscriber(server.pg, "COPY (SUBSCRIBE all_t WITH (buffer = 2)) TO STDOUT").await;
    let reader = server.connect().await;
    let mut feed = Feed::open(&reader, "SUBSCRIBE all_t WITH (progress = true)").await;
    // 12 MB of rows: more than the kernel's socket buffers hold for the stalled client.
    let started = Instant::now();
    for round in 0..40 {
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT i, repeat('x', 3000) FROM generate_series({}, {}) AS g(i)",
                round * 100,
                round * 100 + 99
            ))
            .await
            .unwrap();
        client.batch_execute("FLUSH").await.unwrap();
    }
    eprintln!("inserts took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(60), "inserts were held back: {:?}", started.elapsed());
    let want = view_rows(&client, "SELECT * FROM all_t").await;
    assert_eq!(want.len(), 4000);
    let (mut state, mut last_epoch) = (BTreeMap::new(), 0);
    follow_until(&mut feed, &mut state, &mut last_epoch, &want).await;
    // The stalled subscription was dropped when its buffer filled, and says so (SQLSTATE
    // 53000) once the client reads again.
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !contains(&answer, b"fell behind") {
        let mut chunk = vec![0u8; 1 << 20];
        let read = tokio::time::timeout_at(deadline.into(), stalled.read(&mut chunk)).await.expect("the stalled subscription ends with an error").unwrap();
        assert!(read > 0, "the connection closed without the error");
        answer.extend_from_slice(&chunk[..read]);
    }
    assert!(contains(&answer, b"C53000"), "SQLSTATE 53000");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A client that sends `sql` and then reads nothing, with a small receive buffer: its
/// connection backs up as soon as the server has more to send than the kernel holds.
async fn stalled_subscriber(addr: std::net::SocketAddr, sql: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(65536).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    // StartupMessage (protocol 3.0, user and database weir), then a simple Query.
    let mut startup = Vec::new();
    startup.extend_from_slice(&196608i32.to_be_bytes());
    for s in ["user", "weir", "database", "weir", ""] {
        startup.extend_from_slice(s.as_bytes());
        startup.push(0);
    }
    let mut message = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&startup);
    message.push(b'Q');
    message.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    message.extend_from_slice(sql.as_bytes());
    message.push(0);
    stream.write_all(&message).await.unwrap();
    stream
}

/// FETCH over the extended protocol (what asyncpg does always, and psycopg from the sixth
/// execution of a statement on): Describe answers with the cursor's columns, so the rows that
/// Execute sends have a description; they come as binary when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_is_described_with_the_cursor_columns() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE ft (k TEXT, v BIGINT); INSERT INTO ft VALUES ('a', 1), ('b', 2)").await.unwrap();
    c.batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE ft").await.unwrap();
    let fetch = c.prepare("FETCH ALL c WITH (timeout = '5s')").await.unwrap();
    let names: Vec<&str> = fetch.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["weir_epoch", "weir_diff", "k", "v"]);
    let mut rows: Vec<(i64, String, i64)> = c
        .query(&fetch, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>("weir_diff"), r.get::<_, String>("k"), r.get::<_, i64>("v")))
        .collect();
    rows.sort();
    assert_eq!(rows, [(1, "a".to_string(), 1), (1, "b".to_string(), 2)]);
    c.batch_execute("COMMIT").await.unwrap();
}
