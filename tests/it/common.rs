//! Starts a real `weir serve` process for integration tests.



use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub pg: SocketAddr,
    pub http: SocketAddr,
    pub flight: SocketAddr,
}

impl Server {
    /// Starts a server on 127.0.0.1:0 with the given data directory and waits for its ready line.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// [`Server::start`] with more `weir serve` flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Server {
        Self::spawn(data_dir, flags, &[], "warn", Stdio::inherit())
    }

    /// [`Server::start_with`] with more environment variables, appending the server's log (at
    /// `info`, as JSON lines) to `log`.
    pub fn start_logged(data_dir: &Path, flags: &[&str], env: &[(String, String)], log: &Path) -> Server {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the log file");
        let flags: Vec<&str> = flags.iter().copied().chain(["--log-format", "json"]).collect();
        Self::spawn(data_dir, &flags, env, "info", Stdio::from(file))
    }

    fn spawn(data_dir: &Path, flags: &[&str], env: &[(String, String)], log_level: &str, stderr: Stdio) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("WEIR_LOG", log_level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start weir");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("weir did not print its ready line");
        let mut pg = None;
        let mut http = None;
        let mut flight = None;
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("pg=") {
                pg = v.parse().ok();
            }
            if let Some(v) = part.strip_prefix("http=") {
                http = v.parse().ok();
            }
            if let Some(v) = part.strip_prefix("flight=") {
                flight = v.parse().ok();
            }
        }
        Server {
            child,
            pg: pg.expect("pg address in ready line"),
            http: http.expect("http address in ready line"),
            flight: flight.expect("flight address in ready line"),
        }
    }

    pub fn conn_str(&self) -> String {
        format!("host={} port={} user=weir dbname=weir", self.pg.ip(), self.pg.port())
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(), tokio_postgres::NoTls)
            .await
            .expect("connect to weir");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY-free: use the kill command rather than libc.
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "weir did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET a path on the HTTP port (plain HTTP/1.0 over a socket: no client dependency).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.http).expect("connect http");
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).expect("read");
        let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of a simple query as text fields, NULL as `\N` (COPY's text form), in the order the
/// server sent them.
/// The value of the sample `name` (labels included, as printed) in a `/metrics` text.
pub fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.rsplit_once(' ').filter(|(key, _)| *key == name)).and_then(|(_, v)| v.parse().ok())
}

pub async fn text_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).unwrap_or("\\N").to_string()).collect()),
            _ => None,
        })
        .collect()
}
