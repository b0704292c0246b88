//! Durability: committed changes survive `kill -9`; rolled-back ones do not.

use crate::common::Server;

#[tokio::test(flavor = "multi_thread")]
async fn committed_changes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let server = Server::start(dir.path());
        let c = server.connect().await;
        c.batch_execute(
            "CREATE TABLE acct (id INT PRIMARY KEY, owner TEXT NOT NULL, balance NUMERIC(12,2), opened TIMESTAMPTZ); \
             CREATE TABLE log (line TEXT); \
             CREATE TABLE gone (x INT)",
        )
        .await
        .unwrap();
        for i in 0..50i32 {
            c.execute(
                "INSERT INTO acct VALUES ($1, $2, 100.00, '2026-11-23 10:00:00+00')",
                &[&i, &format!("owner{i}")],
            )
            .await
            .unwrap();
        }
        c.batch_execute("UPDATE acct SET balance = balance + 0.25 WHERE id % 5 = 0").await.unwrap();
        c.batch_execute("DELETE FROM acct WHERE id >= 45").await.unwrap();
        c.batch_execute("BEGIN; INSERT INTO log VALUES ('kept'); COMMIT").await.unwrap();
        c.batch_execute("BEGIN; INSERT INTO log VALUES ('rolled back'); DELETE FROM acct; ROLLBACK").await.unwrap();
        c.batch_execute("DROP TABLE gone").await.unwrap();
        // An open, uncommitted block when the process dies must vanish too.
        c.batch_execute("BEGIN; INSERT INTO log VALUES ('never committed')").await.unwrap();
        let rows = c
            .query("SELECT id, owner, balance::TEXT, opened::TEXT FROM acct ORDER BY id", &[])
            .await
            .unwrap();
        let expected: Vec<(i32, String, String, String)> =
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
        server.kill_9();
        expected
    };
    assert_eq!(expected.len(), 45);

    let server = Server::start(dir.path());
    let c = server.connect().await;
    let rows = c.query("SELECT id, owner, balance::TEXT, opened::TEXT FROM acct ORDER BY id", &[]).await.unwrap();
    let got: Vec<(i32, String, String, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(got, expected);
    let lines: Vec<String> = c.query("SELECT line FROM log", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(lines, vec!["kept".to_string()]);
    let err = c.batch_execute("SELECT * FROM gone").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    // The primary key is still enforced after recovery.
    let err = c.batch_execute("INSERT INTO acct VALUES (1, 'x', 0, NULL)").await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23505");
    // And the recovered server keeps writing durably.
    c.batch_execute("INSERT INTO acct VALUES (100, 'late', 1, NULL)").await.unwrap();
    server.kill_9();
    let server = Server::start(dir.path());
    let c = server.connect().await;
    let n: i64 = c.query_one("SELECT count(*) FROM acct", &[]).await.unwrap().get(0);
    assert_eq!(n, 46);
}
