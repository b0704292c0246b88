//! Users and password authentication: SCRAM-SHA-256 over the Postgres wire (tokio-postgres
//! does the client's side), the Flight handshake's Basic password, 28P01 for wrong passwords
//! and unknown users, the failed-login limit, and no password in the logs.

use std::time::Duration;

use crate::common::Server;

const SUPERUSER_PASSWORD: &str = "sup3r-s3cret-pw";

fn start(data: &std::path::Path, log: &std::path::Path) -> Server {
    let env = [("WEIR_SUPERUSER_PASSWORD".to_string(), SUPERUSER_PASSWORD.to_string())];
    Server::start_logged(data, &["--auth", "password"], &env, log)
}

async fn login(server: &Server, user: &str, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conn = format!("host={} port={} user={user} password='{password}' dbname=weir", server.pg.ip(), server.pg.port());
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn users_log_in_with_scram_and_wrong_passwords_get_28p01() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("weir.log"));
    let server = start(&data, &log);

    // No password, or a wrong one, for the superuser: 28P01 (and a name that is no role too,
    // with the same message, so names cannot be probed).
    let refused = login(&server, "weir", "wrong").await.expect_err("a wrong password is refused");
    assert_eq!(code(&refused), "28P01", "{refused}");
    let unknown = login(&server, "nobody", "whatever").await.expect_err("an unknown user is refused");
    assert_eq!(code(&unknown), "28P01");
    assert!(unknown.as_db_error().is_some_and(|e| e.message() == "password authentication failed for user \"nobody\""), "{unknown:?}");

    let admin = login(&server, "weir", SUPERUSER_PASSWORD).await.expect("the superuser logs in");
    admin.batch_execute("CREATE USER ann WITH PASSWORD 'ann-pw-1'; CREATE ROLE reporting; CREATE TABLE t (x INT)").await.unwrap();
    let ann = login(&server, "ann", "ann-pw-1").await.expect("a new user logs in");
    assert_eq!(ann.query_one("SELECT 1 + 1", &[]).await.unwrap().get::<_, i64>(0), 2);
    // A role without LOGIN cannot log in, even with no password to get wrong.
    assert_eq!(code(&login(&server, "reporting", "").await.expect_err("NOLOGIN")), "28P01");

    // Only superusers manage roles; anyone changes their own password.
    let denied = ann.batch_execute("CREATE USER mallory PASSWORD 'x'").await.unwrap_err();
    assert_eq!(code(&denied), "42501", "{denied}");
    assert_eq!(code(&ann.batch_execute("ALTER USER weir PASSWORD 'mine'").await.unwrap_err()), "42501");
    ann.batch_execute("ALTER USER ann WITH PASSWORD 'ann-pw-2'").await.unwrap();
    assert_eq!(code(&login(&server, "ann", "ann-pw-1").await.expect_err("the old password")), "28P01");
    login(&server, "ann", "ann-pw-2").await.expect("the new password");
    // A role that owns objects cannot be dropped; an unknown one only with IF EXISTS.
    ann.batch_execute("CREATE TABLE anns (x INT)").await.unwrap();
    let owns = admin.batch_execute("DROP USER ann").await.unwrap_err();
    assert_eq!(code(&owns), "2BP01", "{owns}");
    assert_eq!(code(&admin.batch_execute("DROP USER ghost").await.unwrap_err()), "42704");
    admin.batch_execute("DROP USER IF EXISTS ghost; DROP ROLE reporting").await.unwrap();
    assert_eq!(code(&admin.batch_execute("CREATE USER ann").await.unwrap_err()), "42710");

    // Roles and their passwords survive a restart.
    server.kill_9();
    let server = start(&data, &log);
    let ann = login(&server, "ann", "ann-pw-2").await.expect("ann after a restart");
    ann.batch_execute("DROP TABLE anns").await.unwrap();
    let admin = login(&server, "weir", SUPERUSER_PASSWORD).await.unwrap();
    admin.batch_execute("DROP USER ann").await.unwrap();
    assert_eq!(code(&login(&server, "ann", "ann-pw-2").await.expect_err("a dropped user")), "28P01");

    // After 5 failures from one address, it is refused at once, even with the right password.
    for _ in 0..5 {
        let _ = login(&server, "weir", "guess").await;
    }
    let blocked = login(&server, "weir", SUPERUSER_PASSWORD).await.expect_err("the address is blocked");
    let db = blocked.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "28P01");
    assert!(db.hint().is_some_and(|h| h.starts_with("Try again in")), "{db:?}");
    let (_, metrics) = server.http_get("/metrics");
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_auth_failures_total "))
        .and_then(|v| v.parse().ok())
        .expect("weir_auth_failures_total");
    assert!(failures >= 6, "{failures}");
    drop(server);

    // No password reached the log, in clear or as given.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("password authentication failed"), "failed logins are logged");
    for secret in [SUPERUSER_PASSWORD, "ann-pw-1", "ann-pw-2", "guess"] {
        assert!(!log.contains(secret), "the log holds {secret}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flight_checks_the_password_in_the_handshake() {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &dir.path().join("weir.log"));
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.flight)).unwrap().connect().await.unwrap();

    let mut anonymous = FlightSqlServiceClient::new(channel.clone());
    let err = anonymous.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");

    let mut wrong = FlightSqlServiceClient::new(channel.clone());
    let err = wrong.handshake("weir", "wrong").await.unwrap_err();
    assert!(err.to_string().contains("28P01: password authentication failed for user"), "{err}");

    let mut right = FlightSqlServiceClient::new(channel);
    right.handshake("weir", SUPERUSER_PASSWORD).await.expect("the superuser's password");
    assert!(right.token().is_some());
    right.execute("SELECT 1".into(), None).await.expect("a query with the bearer token");
}

/// `--auth password` without a superuser password would let nobody in: the server says so
/// and does not start.
#[test]
fn password_auth_without_a_superuser_password_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0", "--auth", "password", "--data-dir"])
        .arg(dir.path())
        .env_remove("WEIR_SUPERUSER_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no password") && stderr.contains("WEIR_SUPERUSER_PASSWORD"), "{stderr}");
}

/// The boolean a privilege query answers.
async fn holds(client: &tokio_postgres::Client, sql: &str) -> bool {
    client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}")).get(0)
}

/// `GRANT SELECT` / `REVOKE`: a role reads only what it owns or was granted (42501 otherwise),
/// over queries, views, SUBSCRIBE and sinks' inputs alike; only owners change or drop objects.
/// `has_table_privilege` answers accordingly.
#[tokio::test(flavor = "multi_thread")]
async fn reading_needs_select_and_ddl_needs_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"), &dir.path().join("weir.log"));
    let admin = login(&server, "weir", SUPERUSER_PASSWORD).await.unwrap();
    admin
        .batch_execute(
            "CREATE USER ann WITH PASSWORD 'ann-pw'; \
             CREATE TABLE orders (id INT PRIMARY KEY, amount BIGINT); \
             INSERT INTO orders VALUES (1, 10), (2, 32); \
             CREATE TABLE secrets (x INT); \
             CREATE MATERIALIZED VIEW totals AS SELECT sum(amount) AS total FROM orders",
        )
        .await
        .unwrap();
    admin.batch_execute("FLUSH").await.unwrap();
    let ann = login(&server, "ann", "ann-pw").await.unwrap();
    for (client, expected) in [(&ann, "off"), (&admin, "on")] {
        assert_eq!(client.query_one("SHOW is_superuser", &[]).await.unwrap().get::<_, String>(0), expected);
    }
    let denied = |e: tokio_postgres::Error| e.as_db_error().map(|d| (d.code().code().to_string(), d.message().to_string()));

    let err = ann.query("SELECT * FROM orders", &[]).await.unwrap_err();
    assert_eq!(denied(err), Some(("42501".into(), "permission denied for table orders".into())));
    // Also inside a subquery, and through a view over it.
    assert!(ann.query("SELECT 1 WHERE EXISTS (SELECT 1 FROM orders)", &[]).await.is_err());
    let err = ann.query("SELECT total FROM totals", &[]).await.unwrap_err();
    assert_eq!(denied(err).map(|d| d.0), Some("42501".into()));
    // The catalogs stay readable.
    assert!(ann.query_one("SELECT count(*) FROM pg_catalog.pg_class", &[]).await.is_ok());
    // has_table_privilege says the same (tools grey out what a role cannot read with it).
    assert!(!holds(&ann, "SELECT has_table_privilege('orders', 'SELECT')").await);
    assert!(holds(&ann, "SELECT has_table_privilege('pg_catalog.pg_class', 'SELECT')").await);
    assert!(holds(&admin, "SELECT has_table_privilege('orders', 'SELECT, INSERT')").await);
    assert!(!holds(&admin, "SELECT has_table_privilege('ann', 'orders', 'select')").await);

    admin.batch_execute("GRANT SELECT ON orders, totals TO ann").await.unwrap();
    assert!(holds(&ann, "SELECT has_table_privilege('orders', 'SELECT WITH GRANT OPTION')").await);
    assert!(holds(&admin, "SELECT has_table_privilege('ann', 'orders', 'INSERT, SELECT')").await);
    assert!(!holds(&ann, "SELECT has_table_privilege('orders', 'INSERT')").await, "a grant of SELECT is not INSERT");
    let err = ann.query_one("SELECT has_table_privilege('orders', 'FLY')", &[]).await.unwrap_err();
    assert_eq!(denied(err).map(|d| d.0), Some("22023".into()));
    let err = admin.query_one("SELECT has_table_privilege('nobody', 'orders', 'SELECT')", &[]).await.unwrap_err();
    assert_eq!(denied(err).map(|d| d.0), Some("42704".into()));
    assert_eq!(ann.query("SELECT * FROM orders", &[]).await.unwrap().len(), 2);
    let total: i64 = ann.query_one("SELECT total FROM totals", &[]).await.unwrap().get(0);
    assert_eq!(total, 42);
    // Reading is not writing, nor owning.
    let err = ann.batch_execute("INSERT INTO orders VALUES (3, 1)").await.unwrap_err();
    assert_eq!(denied(err).map(|d| d.0), Some("42501".into()));
    let err = ann.batch_execute("DROP TABLE orders").await.unwrap_err();
    assert_eq!(denied(err), Some(("42501".into(), "must be owner of table orders".into())));
    let err = ann.batch_execute("ALTER MATERIALIZED VIEW totals SET (retention = '1 day')").await.unwrap_err();
    assert_eq!(denied(err).map(|d| d.0), Some("42501".into()));
    // Only the owner grants.
    let err = ann.batch_execute("GRANT SELECT ON secrets TO ann").await.unwrap_err();
    assert_eq!(denied(err).map(|d| d.0), Some("42501".into()));
    // PUBLIC is every role; no role takes its name.
    admin.batch_execute("GRANT SELECT ON secrets TO PUBLIC").await.unwrap();
    ann.query("SELECT * FROM secrets", &[]).await.expect("granted to PUBLIC");
    assert!(holds(&ann, "SELECT has_table_privilege('secrets', 'SELECT')").await);
    admin.batch_execute("REVOKE SELECT ON secrets FROM PUBLIC").await.unwrap();
    let err = ann.query("SELECT * FROM secrets", &[]).await.unwrap_err();
    assert_eq!(denied(err).map(|d| d.0), Some("42501".into()));
    let err = admin.batch_execute("CREATE ROLE public").await.unwrap_err();
    assert_eq!(denied(err), Some(("42939".into(), "role name \"public\" is reserved".into())));

    // A view, a SUBSCRIBE or a sink reads its inputs with its creator's rights.
    let err = ann.batch_execute("CREATE MATERIALIZED VIEW peek AS SELECT count(*) AS n FROM secrets").await.unwrap_err();
    assert_eq!(denied(err), Some(("42501".into(), "permission denied for table secrets".into())));
    ann.batch_execute("CREATE MATERIALIZED VIEW big AS SELECT id FROM orders WHERE amount > 20").await.unwrap();
    admin.batch_execute("REVOKE SELECT ON totals FROM ann").await.unwrap();
    let err = ann.query("SELECT total FROM totals", &[]).await.unwrap_err();
    assert_eq!(denied(err).map(|d| d.0), Some("42501".into()));
    let err = ann.batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE totals").await.unwrap_err();
    assert_eq!(denied(err).map(|d| d.0), Some("42501".into()));
    let _ = ann.batch_execute("ROLLBACK").await;

    // What ann creates is ann's: readable by ann, and by the superuser.
    ann.batch_execute("CREATE TABLE notes (x INT); INSERT INTO notes VALUES (7)").await.unwrap();
    let x: i32 = ann.query_one("SELECT x FROM notes", &[]).await.unwrap().get(0);
    assert_eq!(x, 7);
    let x: i32 = admin.query_one("SELECT x FROM notes", &[]).await.unwrap().get(0);
    assert_eq!(x, 7);
    let ids: Vec<i32> = ann.query("SELECT id FROM big", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [2]);
}
