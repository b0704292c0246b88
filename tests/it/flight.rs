//! Arrow Flight SQL with arrow-flight's own Rust client: queries, updates, prepared statements
//! with parameters and metadata give what the same statements give over pgwire; SUBSCRIBE as a
//! DoGet stream folds to the view, and a Flight subscriber that stops reading holds back
//! neither inserts nor another subscriber.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetPrimaryKeys, CommandGetTables, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, FlightInfo};
use datafusion::arrow::array::{Array, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, Schema};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::transport::Channel;

use crate::common::Server;

pub(crate) async fn client(server: &Server) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", server.flight)).unwrap().connect().await.expect("connect to Flight SQL");
    FlightSqlServiceClient::new(channel)
}

/// The result of a FlightInfo's one endpoint.
async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    assert_eq!(info.endpoint.len(), 1);
    let ticket = info.endpoint[0].ticket.clone().expect("a ticket");
    client.do_get(ticket).await.unwrap().try_collect().await.unwrap()
}

async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client.execute(sql.to_string(), None).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    fetch(client, info).await
}

type Row = (i32, Option<String>, Option<i64>, Option<f64>);

/// `id int, name text, amount bigint, score double` rows from Arrow batches.
fn arrow_rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = vec![];
    for b in batches {
        let (id, name, amount, score) = (
            b.column(0).as_primitive::<Int32Type>(),
            b.column(1).as_string::<i32>(),
            b.column(2).as_primitive::<Int64Type>(),
            b.column(3).as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            let opt = |a: &dyn Array| !a.is_null(i);
            rows.push((
                id.value(i),
                opt(name).then(|| name.value(i).to_string()),
                opt(amount).then(|| amount.value(i)),
                opt(score).then(|| score.value(i)),
            ));
        }
    }
    rows
}

async fn pg_rows(pg: &tokio_postgres::Client, sql: &str) -> Vec<Row> {
    pg.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_answers_as_pgwire_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let pg = server.connect().await;
    let mut flight = client(&server).await;
    // The handshake hands out a bearer token the client sends from then on.
    flight.handshake("alice", "anything").await.unwrap();
    assert!(flight.token().is_some_and(|t| t.len() == 32));

    // DDL and DML as updates: the row count comes back.
    assert_eq!(
        flight
            .execute_update("CREATE TABLE t (id INT PRIMARY KEY, name TEXT, amount BIGINT, score DOUBLE PRECISION)".into(), None)
            .await
            .unwrap(),
        0
    );
    let inserted = flight
        .execute_update(
            "INSERT INTO t SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'n' || i END, i * 1000, i / 8.0 FROM generate_series(1, 20000) AS g(i)"
                .into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(inserted, 20000);

    // A query streams more than one batch and equals the pgwire answer row for row.
    let sql = "SELECT id, name, amount, score FROM t ORDER BY id";
    let batches = query(&mut flight, sql).await;
    assert!(batches.len() > 1, "streamed in batches, not one");
    assert_eq!(arrow_rows(&batches), pg_rows(&pg, sql).await);
    let schema = batches[0].schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Int32);
    assert!(!schema.field(0).is_nullable(), "the primary key is NOT NULL");

    // A prepared statement with parameters, run twice with different values.
    let sql = "SELECT id, name, amount, score FROM t WHERE id BETWEEN $1 AND $2 ORDER BY id";
    let mut prepared = flight.prepare(sql.into(), None).await.unwrap();
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 2);
    assert_eq!(prepared.dataset_schema().unwrap().field(1).name(), "name");
    for (low, high) in [(5i64, 9i64), (100, 140)] {
        let parameters = Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false), Field::new("$2", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(parameters, vec![Arc::new(Int64Array::from(vec![low])), Arc::new(Int64Array::from(vec![high]))]).unwrap();
        prepared.set_parameters(batch).unwrap();
        let info = prepared.execute().await.unwrap();
        let rows = arrow_rows(&fetch(&mut flight, info).await);
        let want = pg_rows(&pg, &format!("SELECT id, name, amount, score FROM t WHERE id BETWEEN {low} AND {high} ORDER BY id")).await;
        assert_eq!(rows, want);
        assert_eq!(rows.len() as i64, high - low + 1);
    }
    prepared.close().await.unwrap();

    // A prepared update with several parameter rows.
    let mut insert = flight.prepare("INSERT INTO t (id, name) VALUES ($1, $2)".into(), None).await.unwrap();
    let parameters = Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false), Field::new("$2", DataType::Utf8, false)]));
    let batch = RecordBatch::try_new(
        parameters,
        vec![Arc::new(Int64Array::from(vec![-1, -2, -3])), Arc::new(StringArray::from(vec!["x", "y", "z"]))],
    )
    .unwrap();
    insert.set_parameters(batch).unwrap();
    assert_eq!(insert.execute_update().await.unwrap(), 3);
    let names: Vec<String> = pg.query("SELECT name FROM t WHERE id < 0 ORDER BY id DESC", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(names, ["x", "y", "z"]);

    // Metadata: the table with its Arrow schema, and its primary key.
    let info = flight
        .get_tables(CommandGetTables {
            catalog: Some("weir".into()),
            db_schema_filter_pattern: Some("public".into()),
            table_name_filter_pattern: Some("t".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut flight, info).await;
    let tables = &tables[0];
    assert_eq!(tables.num_rows(), 1);
    assert_eq!(tables.column_by_name("table_type").unwrap().as_string::<i32>().value(0), "TABLE");
    let schema_bytes = tables.column_by_name("table_schema").unwrap().as_binary::<i32>().value(0).to_vec();
    let table_schema = Schema::try_from(arrow_flight::IpcMessage(schema_bytes.into())).unwrap();
    let columns: Vec<_> = table_schema.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    assert_eq!(
        columns,
        [
            ("id".to_string(), DataType::Int32),
            ("name".to_string(), DataType::Utf8),
            ("amount".to_string(), DataType::Int64),
            ("score".to_string(), DataType::Float64)
        ]
    );
    let info = flight
        .get_primary_keys(CommandGetPrimaryKeys { catalog: None, db_schema: Some("public".into()), table: "t".into() })
        .await
        .unwrap();
    let keys = fetch(&mut flight, info).await;
    assert_eq!(keys[0].num_rows(), 1);
    assert_eq!(keys[0].column_by_name("column_name").unwrap().as_string::<i32>().value(0), "id");

    // Errors: a gRPC status by SQLSTATE class, the SQLSTATE in the message and the metadata.
    let descriptor = FlightDescriptor::new_cmd(CommandStatementQuery { query: "SELECT * FROM missing".into(), transaction_id: None }.as_any().encode_to_vec());
    let status = flight.inner_mut().get_flight_info(descriptor).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(status.message().contains("42P01") && status.message().contains("\"missing\""), "{}", status.message());
    assert_eq!(status.metadata().get("x-weir-sqlstate").unwrap(), "42P01");
    let e = flight.execute("SELEC 1".into(), None).await.unwrap_err();
    assert!(e.to_string().contains("42601"), "{e}");
    // Transactions need a session a Flight request does not have: refused, not ignored.
    let e = flight.execute_update("BEGIN".into(), None).await.unwrap_err();
    assert!(e.to_string().contains("0A000"), "{e}");
    // A subscription never ends, so it cannot answer an update's row count.
    let e = flight.execute_update("SUBSCRIBE t".into(), None).await.unwrap_err();
    assert!(e.to_string().contains("42809"), "{e}");
    // The client goes on after errors; a token the server never issued is refused.
    assert_eq!(arrow_rows(&query(&mut flight, "SELECT id, name, amount, score FROM t WHERE id = 7").await)[0].1, None);
    flight.set_token("0123456789abcdef0123456789abcdef".into());
    let e = flight.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(e.to_string().contains("Unauthenticated") || e.to_string().contains("bearer token"), "{e}");
}

/// A SUBSCRIBE's DoGet stream (with progress rows) read one batch at a time.
struct FlightFeed {
    stream: FlightRecordBatchStream,
}

impl FlightFeed {
    async fn open(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> FlightFeed {
        let info = client.execute(sql.to_string(), None).await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        FlightFeed { stream: client.do_get(ticket).await.unwrap() }
    }

    /// Folds batches of `weir_epoch, weir_diff, weir_progressed, k, s` into `state` until the
    /// state equals `want` at a progress row.
    async fn follow_until(&mut self, state: &mut BTreeMap<(String, i64), i64>, last_epoch: &mut i64, want: &BTreeMap<(String, i64), i64>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| panic!("the subscription describes\n{state:?}\nthe view has\n{want:?}"));
            let batch = tokio::time::timeout(left, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("the subscription describes\n{state:?}\nthe view has\n{want:?}"))
                .expect("the stream goes on")
                .unwrap();
            let epochs = batch.column(0).as_primitive::<Int64Type>();
            let diffs = batch.column(1).as_primitive::<Int64Type>();
            let progressed = batch.column(2).as_any().downcast_ref::<BooleanArray>().unwrap();
            let (keys, sums) = (batch.column(3).as_string::<i32>(), batch.column(4).as_primitive::<Int64Type>());
            for i in 0..batch.num_rows() {
                assert!(epochs.value(i) >= *last_epoch, "epoch {} after {}", epochs.value(i), last_epoch);
                *last_epoch = epochs.value(i);
                if progressed.value(i) {
                    assert!(diffs.is_null(i) && keys.is_null(i), "a progress row has no data");
                    if state == want {
                        return;
                    }
                    continue;
                }
                *state.entry((keys.value(i).to_string(), sums.value(i))).or_default() += diffs.value(i);
                state.retain(|_, n| *n != 0);
            }
        }
    }
}

async fn view(pg: &tokio_postgres::Client) -> BTreeMap<(String, i64), i64> {
    let mut rows = BTreeMap::new();
    for r in pg.query("SELECT k, s FROM totals", &[]).await.unwrap() {
        *rows.entry((r.get::<_, String>(0), r.get::<_, i64>(1))).or_default() += 1;
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_subscriptions_fold_to_the_view_and_never_hold_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let pg = server.connect().await;
    pg.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, k TEXT, v BIGINT, pad TEXT); \
         CREATE MATERIALIZED VIEW totals AS SELECT k, sum(v) AS s FROM t GROUP BY k; \
         INSERT INTO t VALUES (1, 'a', 10, ''), (2, 'b', 5, ''), (3, 'a', 1, '')",
    )
    .await
    .unwrap();
    pg.batch_execute("FLUSH").await.unwrap();

    // A subscriber on its own connection that never reads after asking: with a 2-message
    // buffer it falls behind as soon as its HTTP/2 windows are full.
    let mut stalled_client = client(&server).await;
    let stalled_info = stalled_client
        .execute("SUBSCRIBE (SELECT id, pad FROM t) WITH (buffer = 2)".into(), None)
        .await
        .unwrap();
    let mut stalled = stalled_client.do_get(stalled_info.endpoint[0].ticket.clone().unwrap()).await.unwrap();

    let mut flight = client(&server).await;
    let mut feed = FlightFeed::open(&mut flight, "SUBSCRIBE totals WITH (progress = true)").await;
    let (mut state, mut last_epoch) = (BTreeMap::new(), 0);
    feed.follow_until(&mut state, &mut last_epoch, &view(&pg).await).await;

    // Without a snapshot: nothing of the current contents, only what changes later.
    let mut later = FlightFeed::open(&mut flight, "SUBSCRIBE totals WITH (snapshot = false, progress = true)").await;
    let (mut later_state, mut later_epoch) = (BTreeMap::new(), 0);
    later.follow_until(&mut later_state, &mut later_epoch, &BTreeMap::new()).await;

    let started = Instant::now();
    for round in 0..30i64 {
        pg.batch_execute(&format!(
            "INSERT INTO t SELECT i, 'k' || (i % 5), i AS v, repeat('x', 3000) FROM generate_series({}, {}) AS g(i); \
             UPDATE t SET v = v + 1 WHERE id = {}",
            100 + round * 100,
            199 + round * 100,
            1 + round % 3
        ))
        .await
        .unwrap();
        pg.batch_execute("FLUSH").await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(60), "inserts were held back: {:?}", started.elapsed());
    let want = view(&pg).await;
    feed.follow_until(&mut state, &mut last_epoch, &want).await;

    // The later subscriber's changes describe the difference from the view before them: the
    // old rows retracted, the new ones added.
    let before: BTreeMap<(String, i64), i64> = [(("a".to_string(), 11), 1), (("b".to_string(), 5), 1)].into();
    let mut expected_changes = want.clone();
    for (row, n) in &before {
        *expected_changes.entry(row.clone()).or_default() -= n;
    }
    expected_changes.retain(|_, n| *n != 0);
    later.follow_until(&mut later_state, &mut later_epoch, &expected_changes).await;

    // The stalled subscription was dropped when its buffer filled, and says so at the end of
    // what was already on its way.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return e.to_string(),
                None => return "the stream ended without an error".to_string(),
            }
        }
    })
    .await
    .expect("the stalled subscription ends");
    assert!(ended.contains("53000") && ended.contains("fell behind"), "{ended}");
}

/// Bad input on the Flight port: random bytes instead of HTTP/2, a ticket that is not a Flight
/// SQL command, a command that is not protobuf, a ticket already redeemed. Each gets an error
/// (or a closed connection); the server goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flight_input_gets_errors_and_the_server_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));

    // Not HTTP/2 at all: the connection is closed, nothing else happens.
    let mut socket = tokio::net::TcpStream::connect(server.flight).await.unwrap();
    let noise: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let _ = socket.write_all(&noise).await;
    let mut answer = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer)).await;
    drop(socket);

    let mut flight = client(&server).await;
    let status = flight.inner_mut().do_get(arrow_flight::Ticket::new(b"not a command".to_vec())).await.unwrap_err();
    assert!(matches!(status.code(), tonic::Code::InvalidArgument | tonic::Code::Internal | tonic::Code::Unimplemented), "{status:?}");
    let status = flight.inner_mut().get_flight_info(FlightDescriptor::new_cmd(vec![0xff, 0x01, 0x02])).await.unwrap_err();
    assert_ne!(status.code(), tonic::Code::Ok);
    // A ticket is redeemed once.
    let info = flight.execute("SELECT 1 AS one".into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let first: Vec<RecordBatch> = flight.do_get(ticket.clone()).await.unwrap().try_collect().await.unwrap();
    assert_eq!(first[0].num_rows(), 1);
    let again = flight.inner_mut().do_get(ticket).await;
    let again = match again {
        Err(status) => status,
        Ok(response) => response.into_inner().next().await.expect("an answer").unwrap_err(),
    };
    assert_eq!(again.code(), tonic::Code::NotFound, "{again:?}");
    // Still serving, both wires.
    assert_eq!(query(&mut flight, "SELECT 2 AS two").await[0].num_rows(), 1);
    let pg = server.connect().await;
    assert_eq!(pg.query_one("SELECT 3", &[]).await.unwrap().get::<_, i64>(0), 3);
}
