//! Bad input: every SQLSTATE the foundation promises comes from a real statement, and garbage
//! on the socket closes only that connection.

use std::io::{Read, Write};

use crate::common::Server;

async fn code_of(c: &tokio_postgres::Client, sql: &str) -> (String, String, Option<String>) {
    let err = c.batch_execute(sql).await.expect_err(sql);
    let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: not a database error: {err}"));
    let pos = db.position().map(|p| format!("{p:?}"));
    (db.code().code().to_string(), db.message().to_string(), pos)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sqlstate_comes_from_a_real_statement() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE e (id INT PRIMARY KEY, n INT, s TEXT)").await.unwrap();
    c.batch_execute("INSERT INTO e VALUES (1, 1, 'a')").await.unwrap();

    let (code, msg, pos) = code_of(&c, "SELEC 1").await;
    assert_eq!((code.as_str(), msg.as_str()), ("42601", "syntax error at or near \"SELEC\""));
    assert_eq!(pos.as_deref(), Some("Original(1)"));
    assert_eq!(code_of(&c, "SELECT * FROM nope").await.0, "42P01");
    assert_eq!(code_of(&c, "SELECT nope FROM e").await.0, "42703");
    let (code, msg, _) = code_of(&c, "CREATE TABLE e (x INT)").await;
    assert_eq!((code.as_str(), msg.as_str()), ("42P07", "relation \"e\" already exists"));
    assert_eq!(code_of(&c, "SELECT 'a' + 1").await.0, "42883");
    let (code, msg, _) = code_of(&c, "SELECT '12x'::int").await;
    assert_eq!((code.as_str(), msg.as_str()), ("22P02", "invalid input syntax for type integer: \"12x\""));
    assert_eq!(code_of(&c, "INSERT INTO e VALUES (2, 'x', 'b')").await.0, "22P02");
    let (code, msg, _) = code_of(&c, "INSERT INTO e VALUES (1, 2, 'dup')").await;
    assert_eq!((code.as_str(), msg.as_str()), ("23505", "duplicate key value violates unique constraint \"e_pkey\""));
    assert_eq!(code_of(&c, "INSERT INTO e (n) VALUES (5)").await.0, "23502");
    assert_eq!(code_of(&c, "CREATE SOURCE s (a INT) WITH (connector = 'datagen', watermark.late_events = 'keep')").await.0, "22023");
    assert_eq!(code_of(&c, "CREATE MATERIALIZED VIEW v AS SELECT 1").await.0, "0A000");
    assert_eq!(code_of(&c, "SUBSCRIBE nope").await.0, "42P01");
    assert_eq!(code_of(&c, "SUBSCRIBE e WITH (colour = 'red')").await.0, "22023");
    assert_eq!(code_of(&c, "COPY (SUBSCRIBE e WITH (snapshot = 'maybe')) TO STDOUT").await.0, "22023");

    // 42804: a WHERE clause that is not boolean.
    assert_eq!(code_of(&c, "SELECT * FROM e WHERE n").await.0, "42804");

    // 3D000: an unknown database is refused at startup.
    let conn = format!("host={} port={} user=weir dbname=nosuchdb", server.pg.ip(), server.pg.port());
    let err = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.err().expect("must fail");
    assert_eq!(err.code().unwrap().code(), "3D000");

    // Nothing above broke the session or the table.
    let n: i64 = c.query_one("SELECT count(*) FROM e", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_socket_does_not_take_the_server_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let good = server.connect().await;

    // Pure garbage, a truncated startup packet, an absurd length, and a valid startup followed
    // by a malformed message.
    let payloads: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0, 0, 0, 100, 0, 3],
        vec![0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4],
        {
            let mut v = Vec::new();
            let params = b"user\0weir\0database\0weir\0\0";
            v.extend_from_slice(&((8 + params.len()) as u32).to_be_bytes());
            v.extend_from_slice(&196608u32.to_be_bytes());
            v.extend_from_slice(params);
            // A Query message whose length runs past its body.
            v.extend_from_slice(b"Q\0\0\0\xffSELECT");
            v.extend_from_slice(b"X\0\0\0\x01");
            v
        },
    ];
    for p in payloads {
        let mut s = std::net::TcpStream::connect(server.pg).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&p);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // The earlier connection and new ones still work.
    let one: i64 = good.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let again = server.connect().await;
    let one: i64 = again.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let (status, body) = server.http_get("/health");
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_endpoints_report_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let c = server.connect().await;
    c.batch_execute("CREATE TABLE h (a INT)").await.unwrap();
    c.batch_execute("INSERT INTO h VALUES (1)").await.unwrap();
    let _ = c.batch_execute("SELECT * FROM nope").await;
    assert_eq!(server.http_get("/health").0, 200);
    assert_eq!(server.http_get("/ready").0, 200);
    let (status, metrics) = server.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("weir_connections_active 1"), "{metrics}");
    assert!(metrics.contains("weir_statements_total{kind=\"INSERT\",outcome=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("weir_statements_total{kind=\"SELECT\",outcome=\"error\"} 1"), "{metrics}");
    assert!(metrics.contains("weir_errors_total{sqlstate=\"42P01\"} 1"), "{metrics}");
    assert!(metrics.contains("weir_tables 1"), "{metrics}");
}
