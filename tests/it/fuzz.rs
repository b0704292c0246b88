//! Hostile input, generated: SQL token soups and mangled statements, random binary parameter
//! values, random protocol messages and raw bytes on the Postgres port, random Flight SQL
//! commands, tickets and bytes on the Flight port. Whatever comes in, the server answers with an
//! error (or closes that one connection, for bytes that are not the protocol), never panics or
//! hangs, and goes on serving everyone else.
//!
//! Cases per test: `WEIR_FUZZ_CASES` (default 1000, about a second each; CI runs the default). Failures print the
//! input, shrunk by proptest where the test drives a single statement.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::common::Server;

fn cases() -> u32 {
    std::env::var("WEIR_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The relations the SQL cases work on.
const SETUP: &str = "CREATE TABLE fz (a INT, b TEXT, ts TIMESTAMP, n NUMERIC(10,2), j JSONB);
INSERT INTO fz VALUES (1, 'x', '2024-01-01 00:00:01', 1.5, '{\"k\": 1}'), (2, NULL, '2024-01-01 00:00:09', NULL, '[1,2]'), (NULL, 'zz', NULL, -3, NULL);
CREATE MATERIALIZED VIEW fz_mv AS SELECT b, count(*) AS c, sum(a) AS s FROM fz GROUP BY b;
CREATE MATERIALIZED VIEW fz_win AS SELECT window_start, count(*) AS c FROM TUMBLE(fz, ts, INTERVAL '10' SECOND) GROUP BY window_start";

/// Valid statements the mutations start from: every area of the SQL surface.
const CORPUS: &[&str] = &[
    "SELECT a, b FROM fz WHERE a > 1 ORDER BY a LIMIT 2",
    "SELECT b, count(*), sum(a), avg(n) FROM fz GROUP BY b HAVING count(*) > 0",
    "SELECT * FROM fz_mv JOIN fz ON fz_mv.b = fz.b",
    "SELECT j->'k', j->>'k', j ? 'k' FROM fz",
    "SELECT window_start, window_end, count(*) FROM TUMBLE(fz, ts, INTERVAL '10' SECOND) GROUP BY 1, 2",
    "SELECT window_start, count(*) FROM HOP(fz, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY 1",
    "INSERT INTO fz VALUES (7, 'y', now(), 2.25, '{}')",
    "UPDATE fz SET b = 'q' WHERE a = 7",
    "DELETE FROM fz WHERE a = 7",
    "CREATE MATERIALIZED VIEW fz_tmp AS SELECT a, count(*) FROM fz GROUP BY a",
    "DROP MATERIALIZED VIEW IF EXISTS fz_tmp",
    "CREATE SOURCE fz_src (x INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'datagen', datagen.rows.per.second = '10')",
    "DROP SOURCE IF EXISTS fz_src CASCADE",
    "CREATE USER fz_user WITH PASSWORD 'secret'",
    "DROP USER IF EXISTS fz_user",
    "GRANT SELECT ON fz_mv TO fz_user",
    "SHOW CREATE MATERIALIZED VIEW fz_mv",
    "SELECT * FROM weir_catalog.sources",
    "SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r'",
    "SELECT CAST('2024-13-01' AS DATE), CAST('1e400' AS DOUBLE), 1/0",
    "BEGIN; INSERT INTO fz VALUES (8, 'w', NULL, NULL, NULL); ROLLBACK",
    "EXPLAIN SELECT * FROM fz",
    "SET TIME ZONE 'Europe/Paris'",
    "SELECT to_char(ts, 'YYYY-MM-DD'), date_trunc('hour', ts), extract(epoch FROM ts) FROM fz",
];

/// Tokens of the soups: keywords, punctuation, literals of every kind (and out-of-range ones),
/// names that exist and names that do not.
const TOKENS: &[&str] = &[
    "SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "JOIN", "ON", "UNION", "AS", "WITH", "CREATE",
    "DROP", "ALTER", "TABLE", "MATERIALIZED VIEW", "SOURCE", "SINK", "INSERT INTO", "VALUES", "UPDATE", "SET", "DELETE",
    "SUBSCRIBE", "BEGIN", "COMMIT", "ROLLBACK", "TUMBLE", "HOP", "SESSION", "WATERMARK FOR",
    "INTERVAL", "CAST", "::", "(", ")", "(", ")", ",", ",", ";", "*", "+", "-", "/", "%", "=", "<", ">=", "||", "->",
    "->>", "?", "[", "]", "NULL", "TRUE", "NOT", "AND", "OR", "IN", "BETWEEN", "CASE", "WHEN", "THEN", "END", "0", "1",
    "-1", "7", "99999999999999999999999", "1e308", "-0.0", "2.5", "'x'", "''", "'2024-01-01 00:00:00'", "'1 day'",
    "'{\"a\": [1, {}]}'", "'\\x00ff'", "E'\\n'", "$1", "fz", "fz_mv", "fz_win", "a", "b", "ts", "n", "j", "window_start",
    "nope", "weir_catalog.views", "pg_catalog.pg_type", "INT", "BIGINT", "TEXT", "TIMESTAMP", "NUMERIC(38, 10)",
    "JSONB", "BYTEA", "DATE", "count(", "sum(", "max(", "now()", "generate_series(", "tumble_start(", "substr(",
    "to_char(", "date_trunc(", "coalesce(", "row_number() OVER (", "DISTINCT", "EMIT ON WINDOW CLOSE",
    "connector = 'datagen'", "IF EXISTS", "CASCADE", "EXPLAIN", "SHOW", "DECLARE c CURSOR FOR", "FETCH",
];

fn token_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 1..24).prop_map(|t| t.join(" "))
}

/// A statement of the corpus with a few characters deleted, replaced or inserted (mostly
/// characters that matter to SQL, so that some of the results still parse).
fn mangled() -> impl Strategy<Value = String> {
    let sql_char = prop_oneof![
        4 => proptest::sample::select(" ()',;:.*+-/<>=0123456789eEx$[]{}\"".chars().collect::<Vec<_>>()),
        1 => proptest::char::any(),
    ];
    let edit = (any::<prop::sample::Index>(), 0u8..3, sql_char);
    (proptest::sample::select(CORPUS), proptest::collection::vec(edit, 1..4)).prop_map(|(sql, edits)| {
        let mut chars: Vec<char> = sql.chars().collect();
        for (at, kind, c) in edits {
            let len = chars.len();
            let i = at.index(len.max(1));
            match kind {
                0 if len > 0 => {
                    chars.remove(i.min(len - 1));
                }
                1 if len > 0 => chars[i.min(len - 1)] = c,
                _ => chars.insert(i.min(len), c),
            }
        }
        // A Query message is NUL-terminated: clients cannot send a NUL inside the text.
        chars.into_iter().map(|c| if c == '\0' { ' ' } else { c }).collect()
    })
}

/// A statement of the corpus with some of its words replaced by tokens: other literals, names,
/// types and functions where the statement had its own, which mostly still parses and then
/// fails (or succeeds) in planning and execution.
fn spliced() -> impl Strategy<Value = String> {
    let splice = (any::<prop::sample::Index>(), proptest::sample::select(TOKENS));
    (proptest::sample::select(CORPUS), proptest::collection::vec(splice, 1..3)).prop_map(|(sql, splices)| {
        let mut words: Vec<&str> = sql.split(' ').collect();
        for (at, token) in splices {
            let i = at.index(words.len());
            words[i] = token;
        }
        words.join(" ")
    })
}

/// Runs `sql` over the simple protocol: it must come back (within the statement timeout plus
/// slack) with rows or a server error that carries a SQLSTATE; a closed connection is a crash.
async fn survives(client: &tokio_postgres::Client, sql: &str, outcomes: &Outcomes) -> Result<(), TestCaseError> {
    let outcome = tokio::time::timeout(Duration::from_secs(20), client.simple_query(sql)).await;
    let outcome = outcome.map_err(|_| TestCaseError::fail(format!("no answer in 20 s to {sql:?}")))?;
    match outcome {
        Ok(_) => outcomes.ok.set(outcomes.ok.get() + 1),
        Err(e) => match e.as_db_error() {
            Some(db) if db.code().code().len() == 5 => {
                let mut by_state = outcomes.errors.borrow_mut();
                *by_state.entry(db.code().code().to_string()).or_default() += 1;
                if db.code().code() == "XX000" {
                    outcomes.internal.borrow_mut().push(format!("{sql} -> {}", db.message()));
                }
            }
            _ => return Err(TestCaseError::fail(format!("{sql:?} ended the connection: {e:?}"))),
        },
    }
    // Whatever the case left open (a block, a failed block) is closed for the next one.
    client.simple_query("ROLLBACK").await.map_err(|e| TestCaseError::fail(format!("after {sql:?}: {e:?}")))?;
    Ok(())
}

/// What the SQL cases came back with: a run where every case fails to parse tests little.
#[derive(Default)]
struct Outcomes {
    ok: std::cell::Cell<u32>,
    errors: std::cell::RefCell<std::collections::BTreeMap<String, u32>>,
    /// Statements that got an internal error (XX000), printed: each is a message to improve.
    internal: std::cell::RefCell<Vec<String>>,
}

async fn still_serving(server: &Server) {
    let c = server.connect().await;
    let one: i64 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(server.http_get("/health").0, 200);
}

#[test]
fn sql_soups_and_mangled_statements_get_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = runtime();
    let client = rt.block_on(async {
        let c = server.connect().await;
        c.batch_execute(SETUP).await.unwrap();
        // A soup can make a query that runs for hours; it is canceled, which is an answer too.
        c.batch_execute("SET statement_timeout = '3s'").await.unwrap();
        c
    });
    // COPY switches the wire into a sub-protocol tokio-postgres's simple_query does not speak
    // (the COPY tests use its copy API).
    let strategy = prop_oneof![1 => token_soup(), 1 => mangled(), 2 => spliced()]
        .prop_filter("COPY needs a COPY-aware client", |sql| !sql.to_ascii_lowercase().contains("copy"));
    let outcomes = Outcomes::default();
    runner().run(&strategy, |sql| rt.block_on(survives(&client, &sql, &outcomes))).unwrap();
    let errors = outcomes.errors.into_inner();
    eprintln!("SQL cases: {} ran, errors by SQLSTATE: {errors:?}", outcomes.ok.get());
    for internal in outcomes.internal.borrow().iter() {
        eprintln!("internal error: {internal}");
    }
    // Past the parser: some cases ran, and some failed in planning or execution.
    assert!(outcomes.ok.get() > 0, "no case ran");
    assert!(errors.keys().any(|s| s != "42601"), "every case was a syntax error: {errors:?}");
    rt.block_on(still_serving(&server));
}

/// A raw Postgres-wire connection: enough of the protocol to send messages tokio-postgres
/// never would (arbitrary binary parameter values, malformed messages).
struct RawPg {
    stream: TcpStream,
}

impl RawPg {
    fn connect(addr: SocketAddr) -> std::io::Result<RawPg> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        let params = b"user\0weir\0database\0weir\0\0";
        let mut startup = Vec::new();
        startup.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
        startup.extend_from_slice(&196608u32.to_be_bytes());
        startup.extend_from_slice(params);
        stream.write_all(&startup)?;
        let mut raw = RawPg { stream };
        raw.until_ready()?;
        Ok(raw)
    }

    fn send(&mut self, tag: u8, body: &[u8]) -> std::io::Result<()> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        self.stream.write_all(&m)
    }

    /// Reads messages up to ReadyForQuery; returns the tags seen before it, and the SQLSTATE of
    /// the ErrorResponse among them.
    fn until_ready(&mut self) -> std::io::Result<(Vec<u8>, Option<String>)> {
        let (mut tags, mut sqlstate) = (Vec::new(), None);
        loop {
            let mut head = [0u8; 5];
            self.stream.read_exact(&mut head)?;
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut body = vec![0u8; len.saturating_sub(4)];
            self.stream.read_exact(&mut body)?;
            match head[0] {
                b'Z' => return Ok((tags, sqlstate)),
                // Fields: a type byte and a NUL-terminated value each; 'C' is the SQLSTATE.
                b'E' => {
                    sqlstate = body
                        .split(|b| *b == 0)
                        .find(|field| field.first() == Some(&b'C'))
                        .map(|field| String::from_utf8_lossy(&field[1..]).into_owned());
                }
                _ => {}
            }
            tags.push(head[0]);
        }
    }
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Parameter types a client may declare, with a query that uses the parameter as that type.
const PARAM_TYPES: &[(u32, &str)] = &[
    (16, "bool"),
    (17, "bytea"),
    (18, "char"),
    (20, "int8"),
    (21, "int2"),
    (23, "int4"),
    (25, "text"),
    (114, "json"),
    (700, "float4"),
    (701, "float8"),
    (1043, "varchar"),
    (1082, "date"),
    (1083, "time"),
    (1114, "timestamp"),
    (1184, "timestamptz"),
    (1186, "interval"),
    (1700, "numeric"),
    (2950, "uuid"),
    (3802, "jsonb"),
    (1007, "int4[]"),
    (1009, "text[]"),
];

#[derive(Debug, Clone)]
struct BindCase {
    /// Index into PARAM_TYPES, or None to let the server infer the type.
    declared: Option<usize>,
    target: usize,
    value: Option<Vec<u8>>,
    binary_value: bool,
    binary_result: bool,
}

fn bind_case() -> impl Strategy<Value = BindCase> {
    (
        proptest::option::of(0..PARAM_TYPES.len()),
        0..PARAM_TYPES.len(),
        proptest::option::weighted(0.95, proptest::collection::vec(any::<u8>(), 0..24)),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(declared, target, value, binary_value, binary_result)| BindCase { declared, target, value, binary_value, binary_result })
}

/// Parse, Bind (with the case's value), Execute, Sync; the tags of the answer and its
/// SQLSTATE if it was an error.
fn bind_execute(raw: &mut RawPg, case: &BindCase) -> Result<(Vec<u8>, Option<String>), TestCaseError> {
    let fail = |e: std::io::Error| TestCaseError::fail(format!("{case:?}: the connection ended: {e}"));
    let mut parse = Vec::new();
    cstr(&mut parse, "");
    cstr(&mut parse, &format!("SELECT CAST($1 AS {}) AS v", PARAM_TYPES[case.target].1));
    match case.declared {
        Some(i) => {
            parse.extend_from_slice(&1i16.to_be_bytes());
            parse.extend_from_slice(&PARAM_TYPES[i].0.to_be_bytes());
        }
        None => parse.extend_from_slice(&0i16.to_be_bytes()),
    }
    raw.send(b'P', &parse).map_err(fail)?;
    let mut bind = Vec::new();
    cstr(&mut bind, "");
    cstr(&mut bind, "");
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&i16::from(case.binary_value).to_be_bytes());
    bind.extend_from_slice(&1i16.to_be_bytes());
    match &case.value {
        Some(v) => {
            bind.extend_from_slice(&(v.len() as i32).to_be_bytes());
            bind.extend_from_slice(v);
        }
        None => bind.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&i16::from(case.binary_result).to_be_bytes());
    raw.send(b'B', &bind).map_err(fail)?;
    let mut execute = Vec::new();
    cstr(&mut execute, "");
    execute.extend_from_slice(&0i32.to_be_bytes());
    raw.send(b'E', &execute).map_err(fail)?;
    raw.send(b'S', &[]).map_err(fail)?;
    raw.until_ready().map_err(fail)
}

/// The server answers with rows or an error and is ready for the next query on the same
/// connection.
fn bind_one(raw: &mut RawPg, case: &BindCase) -> Result<(), TestCaseError> {
    let (tags, _) = bind_execute(raw, case)?;
    // Either the statement completed or an ErrorResponse said why not.
    if !tags.contains(&b'C') && !tags.contains(&b'E') {
        return Err(TestCaseError::fail(format!("{case:?}: neither a result nor an error: {tags:?}")));
    }
    Ok(())
}

/// A binary interval whose microseconds do not fit in nanoseconds (what arrow-pg converts it to)
/// is refused as out of range, not wrapped into another interval; one that fits is read.
#[test]
fn an_interval_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut raw = RawPg::connect(server.pg).unwrap();
    let interval = PARAM_TYPES.iter().position(|(_, name)| *name == "interval").unwrap();
    let value = |micros: i64, days: i32, months: i32| {
        [micros.to_be_bytes().as_slice(), &days.to_be_bytes(), &months.to_be_bytes()].concat()
    };
    let case = |micros| BindCase { declared: Some(interval), target: interval, value: Some(value(micros, 1, 0)), binary_value: true, binary_result: false };
    for micros in [i64::MAX, i64::MIN, i64::MAX / 1000 + 1] {
        let (_, sqlstate) = bind_execute(&mut raw, &case(micros)).unwrap();
        assert_eq!(sqlstate.as_deref(), Some("22008"), "{micros} µs");
    }
    let (tags, sqlstate) = bind_execute(&mut raw, &case(i64::MAX / 1000)).unwrap();
    assert_eq!((tags.contains(&b'C'), sqlstate), (true, None), "the largest interval that fits");
}

#[test]
fn random_binary_parameters_are_decoded_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let raw = std::cell::RefCell::new(RawPg::connect(server.pg).unwrap());
    runner().run(&bind_case(), |case| bind_one(&mut raw.borrow_mut(), &case)).unwrap();
    runtime().block_on(still_serving(&server));
}

/// What a case sends on a fresh connection: raw bytes, or a valid startup followed by
/// messages with random tags, lengths and bodies.
#[derive(Debug, Clone)]
enum PgBytes {
    Raw(Vec<u8>),
    AfterStartup(Vec<(u8, Option<u32>, Vec<u8>)>),
}

fn pg_bytes() -> impl Strategy<Value = PgBytes> {
    let tags = proptest::sample::select(&b"PBEDSHCFQXdcfpKZ\x00\xff"[..]);
    let message = (tags, proptest::option::weighted(0.2, any::<u32>()), proptest::collection::vec(any::<u8>(), 0..64));
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048).prop_map(PgBytes::Raw),
        proptest::collection::vec(message, 1..6).prop_map(PgBytes::AfterStartup),
    ]
}

/// Sends the case, then waits (bounded) for the server to answer or close.
fn send_bytes(addr: SocketAddr, case: &PgBytes) -> Result<(), TestCaseError> {
    let fail = |what: &str, e: std::io::Error| TestCaseError::fail(format!("{case:?}: {what}: {e}"));
    let mut stream = match case {
        PgBytes::Raw(bytes) => {
            let mut s = TcpStream::connect(addr).map_err(|e| fail("connect", e))?;
            let _ = s.write_all(bytes);
            s
        }
        PgBytes::AfterStartup(messages) => {
            let mut raw = RawPg::connect(addr).map_err(|e| fail("startup", e))?;
            for (tag, length, body) in messages {
                let mut m = vec![*tag];
                m.extend_from_slice(&length.unwrap_or(body.len() as u32 + 4).to_be_bytes());
                m.extend_from_slice(body);
                if raw.stream.write_all(&m).is_err() {
                    break;
                }
            }
            raw.stream
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Write);
    stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| fail("timeout", e))?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Ok(()),
        // A reset is the server closing on bytes it did not read: fine. Waiting is not.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(fail("the server neither answered nor closed", e)),
    }
}

#[test]
fn random_bytes_on_the_postgres_port_close_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = runtime();
    let bystander = rt.block_on(server.connect());
    runner().run(&pg_bytes(), |case| send_bytes(server.pg, &case)).unwrap();
    rt.block_on(async {
        let one: i64 = bystander.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "a session open all along still works");
        still_serving(&server).await;
    });
    // Every fuzzed connection was closed and unregistered (a leak would fill max_connections).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = server.http_get("/metrics");
        if metrics.contains("weir_connections_active 1\n") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "fuzzed connections still count as open: {metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Clone)]
enum FlightCase {
    /// GetFlightInfo with these bytes as the descriptor's command.
    Command(Vec<u8>),
    /// A valid query command with bytes changed.
    MangledCommand(Vec<(prop::sample::Index, u8)>),
    Ticket(Vec<u8>),
    Action(String, Vec<u8>),
    /// Raw bytes on the port: after the HTTP/2 preface, or not.
    Bytes(bool, Vec<u8>),
}

fn flight_case() -> impl Strategy<Value = FlightCase> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..256);
    prop_oneof![
        bytes().prop_map(FlightCase::Command),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6).prop_map(FlightCase::MangledCommand),
        bytes().prop_map(FlightCase::Ticket),
        (
            proptest::sample::select(vec![
                "CreatePreparedStatement".to_string(),
                "ClosePreparedStatement".to_string(),
                "BeginTransaction".to_string(),
                "CancelQuery".to_string(),
                "nope".to_string(),
            ]),
            bytes()
        )
            .prop_map(|(t, b)| FlightCase::Action(t, b)),
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..4096)).prop_map(|(p, b)| FlightCase::Bytes(p, b)),
    ]
}

async fn flight_one(
    server: &Server,
    flight: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    case: &FlightCase,
) -> Result<(), TestCaseError> {
    use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let inner = flight.inner_mut();
    let answered = async {
        match case {
            FlightCase::Command(bytes) => {
                let _ = inner.get_flight_info(arrow_flight::FlightDescriptor::new_cmd(bytes.clone())).await;
            }
            FlightCase::MangledCommand(edits) => {
                let query = CommandStatementQuery { query: "SELECT 1 AS one".into(), transaction_id: None };
                let mut bytes = query.as_any().encode_to_vec();
                for (at, byte) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = *byte;
                }
                // A mangled command may still be a valid query: then its result must be readable.
                if let Ok(info) = inner.get_flight_info(arrow_flight::FlightDescriptor::new_cmd(bytes)).await
                    && let Some(ticket) = info.into_inner().endpoint.first().and_then(|e| e.ticket.clone())
                    && let Ok(response) = inner.do_get(ticket).await
                {
                    let mut stream = response.into_inner();
                    while let Some(Ok(_)) = futures::StreamExt::next(&mut stream).await {}
                }
            }
            FlightCase::Ticket(bytes) => {
                if let Ok(response) = inner.do_get(arrow_flight::Ticket::new(bytes.clone())).await {
                    let mut stream = response.into_inner();
                    while let Some(Ok(_)) = futures::StreamExt::next(&mut stream).await {}
                }
            }
            FlightCase::Action(kind, body) => {
                let action = arrow_flight::Action { r#type: kind.clone(), body: body.clone().into() };
                if let Ok(response) = inner.do_action(action).await {
                    let mut stream = response.into_inner();
                    while let Some(Ok(_)) = futures::StreamExt::next(&mut stream).await {}
                }
            }
            FlightCase::Bytes(preface, bytes) => {
                if let Ok(mut socket) = tokio::net::TcpStream::connect(server.flight).await {
                    if *preface {
                        let _ = socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                    }
                    let _ = socket.write_all(bytes).await;
                    let _ = socket.shutdown().await;
                    let mut answer = Vec::new();
                    let _ = socket.read_to_end(&mut answer).await;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), answered)
        .await
        .map_err(|_| TestCaseError::fail(format!("{case:?}: no answer in 20 s")))
}

#[test]
fn random_flight_requests_and_bytes_get_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let rt = runtime();
    let mut flight = rt.block_on(crate::flight::client(&server));
    let flight_cell = std::cell::RefCell::new(&mut flight);
    runner()
        .run(&flight_case(), |case| rt.block_on(flight_one(&server, &mut flight_cell.borrow_mut(), &case)))
        .unwrap();
    rt.block_on(async {
        let info = flight.execute("SELECT 41 + 1 AS x".to_string(), None).await.expect("Flight still answers");
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let batches: Vec<_> = futures::TryStreamExt::try_collect(flight.do_get(ticket).await.unwrap()).await.unwrap();
        let batches: Vec<datafusion::arrow::array::RecordBatch> = batches;
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        still_serving(&server).await;
    });
}
