//! Shared by the broker tests (`kafka.rs`, `nats.rs`): chat events as JSON messages, the
//! TUMBLE view they feed, DataFusion's batch answer over the same events, and waiting for a
//! source to have read them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType};
use datafusion::prelude::SessionContext;

/// The view the broker tests define over their `chat` source.
pub const CHAT_VIEW: &str = "CREATE MATERIALIZED VIEW chat_per_stream AS \
    SELECT stream_id, window_start, count(*) AS n, max(user_id) AS m \
    FROM TUMBLE(chat, ts, INTERVAL '10' SECOND) GROUP BY stream_id, window_start";

/// Messages a chat source must skip, counted: not JSON, a wrong type, a bad timestamp.
pub const BAD_MESSAGES: [&str; 3] = [
    "{not json",
    r#"{"stream_id": "s1", "user_id": "many", "ts": 1767225600000}"#,
    r#"{"stream_id": "s1", "user_id": 1, "ts": "yesterday"}"#,
];

/// A name no other test run used (tansu cannot delete one topic alone; JetStream streams
/// outlive a test too).
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// A chat event: (stream, user, event time in microseconds).
pub type Event = (String, i64, i64);

pub const BASE_MICROS: i64 = 1_767_225_600_000_000; // 2026-01-01 00:00:00 UTC

/// `n` events per partition over ~60 s of event time, out of order by up to 2 s (less than the
/// watermark's 5 s delay, so none is late); every 7th event's time is an RFC 3339 string, the
/// others epoch milliseconds. Returns the messages and the events they hold.
pub fn chat_events(seed: u64, n: i64, from_second: i64) -> (Vec<(i32, String)>, Vec<Event>) {
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut messages, mut events) = (Vec::new(), Vec::new());
    for partition in 0..3 {
        for i in 0..n {
            let jitter = (next() % 2_000_000) as i64;
            let ts = BASE_MICROS + (from_second * 1_000_000) + i * 60_000_000 / n - jitter;
            let stream = format!("s{}", next() % 4);
            let user = (next() % 1000) as i64;
            let time = if i % 7 == 0 {
                let t = chrono::DateTime::from_timestamp_micros(ts).unwrap();
                format!("\"{}\"", t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            } else {
                // Whole milliseconds, so that both forms round-trip exactly.
                (ts / 1000).to_string()
            };
            let ts = if i % 7 == 0 { ts } else { ts / 1000 * 1000 };
            messages.push((partition, format!(r#"{{"stream_id": "{stream}", "user_id": {user}, "ts": {time}}}"#)));
            events.push((stream, user, ts));
        }
    }
    (messages, events)
}

/// DataFusion's batch answer: (stream, window start, count, max user) sorted.
pub async fn oracle(events: &[Event]) -> Vec<(String, i64, i64, i64)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("stream_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.0.as_str()))),
            Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.1))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.2))),
        ],
    )
    .unwrap();
    let ctx = SessionContext::new();
    ctx.register_batch("events", batch).unwrap();
    let batches = ctx
        .sql(
            "SELECT stream_id, date_bin(INTERVAL '10 seconds', ts, TIMESTAMP '1970-01-01 00:00:00') AS w, \
             count(*) AS n, max(user_id) AS m FROM events GROUP BY 1, 2",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            rows.push((
                b.column(0).as_string::<i32>().value(r).to_string(),
                b.column(1).as_primitive::<TimestampMicrosecondType>().value(r),
                b.column(2).as_primitive::<Int64Type>().value(r),
                b.column(3).as_primitive::<Int64Type>().value(r),
            ));
        }
    }
    rows.sort();
    rows
}

pub async fn view_rows(client: &tokio_postgres::Client) -> Vec<(String, i64, i64, i64)> {
    let epoch = std::time::SystemTime::UNIX_EPOCH;
    let mut rows: Vec<_> = client
        .query("SELECT stream_id, window_start, n, m FROM chat_per_stream", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let w: std::time::SystemTime = r.get(1);
            (r.get::<_, String>(0), w.duration_since(epoch).unwrap().as_micros() as i64, r.get(2), r.get(3))
        })
        .collect();
    rows.sort();
    rows
}

/// After a restart: the view `everything` (`count(*)` of `chat`, made before the crash) comes
/// back to `expected` before `deadline` (restored, or rebuilt by replaying the source from where
/// it started), and so does a view made now, while the source reads on from its checkpointed
/// position.
pub async fn counts_are_whole_after_a_restart(client: &tokio_postgres::Client, expected: i64, deadline: Instant) {
    loop {
        let rows = client.query("SELECT n FROM everything", &[]).await.unwrap();
        if rows.first().is_some_and(|r| r.get::<_, i64>(0) == expected) {
            break;
        }
        assert!(Instant::now() < deadline, "after a restart the view holds {:?}", rows.first().map(|r| r.get::<_, i64>(0)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.batch_execute("CREATE MATERIALIZED VIEW later AS SELECT count(*) AS n FROM chat").await.unwrap();
    assert_eq!(figure(client, "SELECT n FROM later").await, expected);
}

pub async fn figure(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Waits until the source has read `rows` rows and skipped `errors` records, then flushes.
pub async fn wait_for(client: &tokio_postgres::Client, source: &str, rows: i64, errors: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = client
            .query_one("SELECT rows_read, errors FROM weir_catalog.sources WHERE name = $1", &[&source])
            .await
            .unwrap();
        let (read, skipped): (i64, i64) = (row.get(0), row.get(1));
        if read >= rows && skipped >= errors {
            assert_eq!((read, skipped), (rows, errors), "read more than was produced");
            client.batch_execute("FLUSH").await.unwrap();
            return;
        }
        assert!(Instant::now() < deadline, "{source} read {read} rows and skipped {skipped}; expected {rows} and {errors}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
