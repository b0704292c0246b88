//! File sources through the server: Nexmark bids written by `weir generate-nexmark` as Parquet
//! and CSV, read by `connector = 'file'` sources into windowed views, compared with DataFusion
//! computing the same query in batch over the same Parquet files.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::common::Server;
use crate::streaming::wait_until_source_ended;

/// (auction, window start in microseconds, aggregates...) rows, sorted.
type Rows = Vec<Vec<i64>>;

pub(crate) async fn weir_rows(client: &tokio_postgres::Client, sql: &str) -> Rows {
    let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let epoch = std::time::SystemTime::UNIX_EPOCH;
    let mut out: Rows = rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.columns()[i].type_() {
                    &tokio_postgres::types::Type::TIMESTAMP => {
                        r.get::<_, std::time::SystemTime>(i).duration_since(epoch).unwrap().as_micros() as i64
                    }
                    _ => r.get::<_, i64>(i),
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

pub(crate) fn batch_rows(batches: &[RecordBatch]) -> Rows {
    let mut out = Rows::new();
    for b in batches {
        for row in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| match c.data_type() {
                        datafusion::arrow::datatypes::DataType::Timestamp(..) => {
                            c.as_primitive::<TimestampMicrosecondType>().value(row)
                        }
                        _ => c.as_primitive::<Int64Type>().value(row),
                    })
                    .collect(),
            );
        }
    }
    out.sort();
    out
}

async fn source_figure(client: &tokio_postgres::Client, source: &str, column: &str) -> i64 {
    let sql = format!("SELECT {column} FROM weir_catalog.sources WHERE name = $1");
    client.query_one(&sql, &[&source]).await.unwrap().get(0)
}

const BID_COLUMNS: &str = "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, \
                           date_time TIMESTAMP, extra VARCHAR, WATERMARK FOR date_time AS date_time - INTERVAL '2' SECOND";

/// TUMBLE over Parquet files and HOP over the same bids as CSV equal DataFusion's batch answer
/// over the Parquet files; every bid is read once, none is late.
#[tokio::test(flavor = "multi_thread")]
async fn windows_over_parquet_and_csv_files_match_batch() {
    let dir = tempfile::tempdir().unwrap();
    let written = weir::generate::BidFiles {
        dir: dir.path().join("bids"),
        events: 50_000,
        files: 3,
        base_time: "2026-01-01 00:00:00".into(),
        parquet: true,
        csv: true,
    }
    .write()
    .await
    .unwrap();
    assert_eq!(written.parquet_files.len(), 3);
    let parquet_dir = dir.path().join("bids/parquet");
    let csv_glob = dir.path().join("bids/csv/*.csv");

    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids_pq ({BID_COLUMNS}) WITH (connector = 'file', path = '{}') FORMAT PLAIN ENCODE PARQUET; \
             CREATE SOURCE bids_csv ({BID_COLUMNS}) WITH (connector = 'file', path = '{}', file.batch.rows = '1000') \
                FORMAT PLAIN ENCODE CSV (without_header = 'true'); \
             CREATE MATERIALIZED VIEW tumble_pq AS \
                SELECT auction, window_start, count(*) AS n, sum(price) AS s, max(price) AS m \
                FROM TUMBLE(bids_pq, date_time, INTERVAL '10' SECOND) GROUP BY auction, window_start \
                EMIT ON WINDOW CLOSE; \
             CREATE MATERIALIZED VIEW hop_csv AS \
                SELECT auction, window_start, count(*) AS n \
                FROM HOP(bids_csv, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start",
            parquet_dir.display(),
            csv_glob.display()
        ))
        .await
        .unwrap();
    wait_until_source_ended(&client, "bids_pq").await;
    wait_until_source_ended(&client, "bids_csv").await;
    for source in ["bids_pq", "bids_csv"] {
        assert_eq!(source_figure(&client, source, "rows_read").await, written.bids as i64, "{source}");
        assert_eq!(source_figure(&client, source, "late_rows").await, 0, "{source}");
    }
    let partitions: i64 = client
        .query_one("SELECT count(*) FROM weir_catalog.source_partitions WHERE source = 'bids_pq' AND ended", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitions, 3, "one partition per file");

    let oracle = SessionContext::new();
    oracle.register_parquet("bids", parquet_dir.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let batch = |sql: &'static str| {
        let oracle = &oracle;
        async move { batch_rows(&oracle.sql(sql).await.unwrap().collect().await.unwrap()) }
    };
    let tumble = batch(
        "SELECT auction, date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00') AS ws, \
                count(*), sum(price), max(price) FROM bids GROUP BY 1, 2",
    )
    .await;
    assert!(tumble.len() > 1000, "too few groups: {}", tumble.len());
    assert_eq!(weir_rows(&client, "SELECT auction, window_start, n, s, m FROM tumble_pq").await, tumble);
    // HOP 10 s every 2 s: each bid in the five windows starting at the 2 s boundaries before it.
    let hop = batch(
        "SELECT auction, ws, count(*) FROM ( \
            SELECT auction, CAST(date_bin(INTERVAL '2 seconds', date_time, TIMESTAMP '1970-01-01 00:00:00') AS BIGINT) \
                   - 2000000 * k AS ws \
            FROM bids CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS shifts(k)) GROUP BY 1, 2",
    )
    .await;
    assert_eq!(weir_rows(&client, "SELECT auction, window_start, n FROM hop_csv").await, hop);
}

/// A JSON file with bad lines: the good rows reach the view, each bad line is counted as an
/// error of the source, and the source goes on to the next file.
#[tokio::test(flavor = "multi_thread")]
async fn bad_json_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    std::fs::write(
        events.join("1.json"),
        "{\"k\": \"a\", \"v\": 1, \"ts\": \"2026-01-01T00:00:00Z\"}\n\
         {\"k\": \"a\", \"v\": \"oops\", \"ts\": \"2026-01-01T00:00:01Z\"}\n\
         {broken\n\
         {\"k\": \"b\", \"v\": 2, \"ts\": \"2026-01-01T00:00:02Z\"}\n",
    )
    .unwrap();
    std::fs::write(events.join("2.json"), "{\"k\": \"a\", \"v\": 3, \"ts\": \"2026-01-01T00:00:03Z\"}\n").unwrap();
    let server = Server::start(&dir.path().join("data"));
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (k VARCHAR, v BIGINT, ts TIMESTAMP) WITH (connector = 'file', path = '{}') \
                FORMAT PLAIN ENCODE JSON; \
             CREATE MATERIALIZED VIEW per_k AS SELECT k, sum(v) AS v FROM ev GROUP BY k",
            events.display()
        ))
        .await
        .unwrap();
    wait_until_source_ended(&client, "ev").await;
    let rows = client.query("SELECT k, v FROM per_k ORDER BY k", &[]).await.unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [("a".to_string(), 4), ("b".to_string(), 2)]);
    assert_eq!(source_figure(&client, "ev", "errors").await, 2);
    assert_eq!(source_figure(&client, "ev", "rows_read").await, 3);

    // Mistakes are reported at CREATE, with the option they concern.
    for (sql, expected) in [
        (format!("CREATE SOURCE x (k VARCHAR) WITH (connector = 'file', path = '{}/nothing-*')", dir.path().display()), "FORMAT"),
        (
            format!(
                "CREATE SOURCE x (k VARCHAR) WITH (connector = 'file', path = '{}/nothing-*') FORMAT PLAIN ENCODE JSON",
                dir.path().display()
            ),
            "no files match",
        ),
        (
            "CREATE SOURCE x (k VARCHAR) WITH (connector = 'datagen') FORMAT PLAIN ENCODE JSON".to_string(),
            "takes no FORMAT",
        ),
    ] {
        let e = client.batch_execute(&sql).await.unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "22023", "{sql}");
        assert!(db.message().contains(expected), "{sql}: {}", db.message());
    }
}
