//! Runs the sqllogictest files in tests/slt/ over pgwire. Their expected values were recorded on
//! a real PostgreSQL 15 (tests/slt/check_against_postgres.py replays them there).

use std::path::PathBuf;

use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::common::Server;

#[derive(Debug)]
struct PgError(tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{db}"),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for PgError {}

struct Weir {
    client: Client,
}

#[async_trait::async_trait]
impl AsyncDB for Weir {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let msgs = self.client.simple_query(sql).await.map_err(PgError)?;
        let mut columns = None;
        let mut rows = Vec::new();
        let mut count = 0;
        for m in msgs {
            match m {
                SimpleQueryMessage::RowDescription(c) => {
                    columns = Some(c.len());
                    rows.clear();
                }
                SimpleQueryMessage::Row(r) => rows.push(
                    (0..r.len())
                        .map(|i| match r.get(i) {
                            None => "NULL".to_string(),
                            Some("") => "(empty)".to_string(),
                            Some(v) => v.to_string(),
                        })
                        .collect(),
                ),
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows { types: vec![DefaultColumnType::Any; n], rows },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "weir"
    }

    async fn sleep(d: std::time::Duration) {
        tokio::time::sleep(d).await;
    }

    fn error_sql_state(e: &PgError) -> Option<String> {
        e.0.code().map(|c| c.code().to_string())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqllogictest_files_match_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let conn = server.conn_str();
    let mut files: Vec<PathBuf> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files found");
    // Streaming SQL has no Postgres counterpart: those files run on Weir only.
    let mut streaming: Vec<PathBuf> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slt/streaming"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    streaming.sort();
    files.extend(streaming);
    let mut failures = Vec::new();
    for file in &files {
        let conn = conn.clone();
        let mut runner = Runner::new(move || {
            let conn = conn.clone();
            async move {
                let (client, connection) = tokio_postgres::connect(&conn, NoTls).await.map_err(PgError)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, PgError>(Weir { client })
            }
        });
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}:\n{}", file.display(), e.display(true)));
        }
        runner.shutdown_async().await;
    }
    assert!(failures.is_empty(), "{} of {} files failed:\n{}", failures.len(), files.len(), failures.join("\n\n"));
}
