//! Server configuration: defaults, then `weir.toml`, then `WEIR_*` environment variables, then
//! command-line flags (each later source overrides the earlier ones).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;

pub use crate::auth::AuthMethod;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// A configured secret (a password): its `Debug` never shows it, so printing the
/// configuration cannot leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub pg_addr: String,
    pub http_addr: String,
    /// Arrow Flight SQL address.
    pub flight_addr: String,
    pub log_format: LogFormat,
    /// How long running statements may take to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Client sessions open at once over the Postgres wire; more get 53300.
    pub max_connections: usize,
    /// `SUBSCRIBE`s streaming at once; more get 53400.
    pub max_subscriptions: usize,
    /// Worker threads of the runtime ad-hoc queries execute on (apart from the dataflow's);
    /// 0: twice the cores, at least 4.
    pub query_threads: usize,
    /// Memory one ad-hoc statement may use (its own DataFusion memory pool); 0: unlimited.
    pub query_memory_limit_mb: u64,
    /// Milliseconds between epoch barriers (how often views publish).
    pub barrier_interval_ms: u64,
    /// Where checkpoints go: a URL `object_store` opens, or `<data_dir>/checkpoints` when unset.
    pub state_store: Option<String>,
    /// Milliseconds between checkpoints (at the next barrier after); 0 turns them off.
    pub checkpoint_interval_ms: u64,
    /// How clients log in; `None`: `trust` when every listener is on loopback, else `password`.
    pub auth: Option<AuthMethod>,
    /// The role created at start as a superuser.
    pub superuser: String,
    /// Its password, (re)set at every start when given.
    pub superuser_password: Option<Secret>,
    /// TLS certificate chain and private key (PEM files) for the Postgres wire and Flight.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Without a certificate: make a self-signed one (development).
    pub tls_self_signed: bool,
    /// Refuse Postgres-wire sessions that did not negotiate TLS (Postgres's `hostssl`).
    pub tls_required: bool,
    /// Seals connector secrets in the catalog file; `None`: `<data dir>/secret.key`.
    pub secret_key: Option<Secret>,
    /// Where traces are exported (OTLP over gRPC, e.g. `http://127.0.0.1:4317`); None: not exported.
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// The authentication method in force: as configured, else `trust` only when nothing
    /// listens beyond loopback.
    pub fn auth_method(&self) -> AuthMethod {
        self.auth.unwrap_or_else(|| {
            let loopback = |addr: &str| {
                addr.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
                    || addr.rsplit_once(':').is_some_and(|(host, _)| host == "localhost")
            };
            if loopback(&self.pg_addr) && loopback(&self.flight_addr) { AuthMethod::Trust } else { AuthMethod::Password }
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./weir-data"),
            // Loopback only unless configured otherwise: secure by default.
            pg_addr: "127.0.0.1:5433".to_string(),
            http_addr: "127.0.0.1:9095".to_string(),
            flight_addr: "127.0.0.1:50051".to_string(),
            log_format: LogFormat::Human,
            shutdown_grace_secs: 10,
            max_connections: 100,
            max_subscriptions: 100,
            query_threads: 0,
            query_memory_limit_mb: 1024,
            barrier_interval_ms: 250,
            state_store: None,
            checkpoint_interval_ms: 10_000,
            auth: None,
            superuser: "weir".to_string(),
            superuser_password: None,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            tls_required: false,
            secret_key: None,
            otlp_endpoint: None,
        }
    }
}

/// The file format (`weir.toml`); every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    pg_addr: Option<String>,
    http_addr: Option<String>,
    flight_addr: Option<String>,
    log_format: Option<LogFormat>,
    shutdown_grace_secs: Option<u64>,
    max_connections: Option<usize>,
    max_subscriptions: Option<usize>,
    query_threads: Option<usize>,
    query_memory_limit_mb: Option<u64>,
    barrier_interval_ms: Option<u64>,
    state_store: Option<String>,
    checkpoint_interval_ms: Option<u64>,
    auth: Option<AuthMethod>,
    superuser: Option<String>,
    superuser_password: Option<Secret>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_self_signed: Option<bool>,
    tls_required: Option<bool>,
    secret_key: Option<Secret>,
    otlp_endpoint: Option<String>,
}

/// `weir serve` flags. Each also reads a `WEIR_*` environment variable (clap gives the flag
/// precedence over the variable).
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Configuration file (TOML). Defaults to ./weir.toml when it exists.
    #[arg(long, env = "WEIR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the catalog and table data.
    #[arg(long, env = "WEIR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Postgres wire address.
    #[arg(long, env = "WEIR_PG_ADDR")]
    pub pg_addr: Option<String>,
    /// HTTP address for /health, /ready and /metrics.
    #[arg(long, env = "WEIR_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Arrow Flight SQL address.
    #[arg(long, env = "WEIR_FLIGHT_ADDR")]
    pub flight_addr: Option<String>,
    /// Log format.
    #[arg(long, env = "WEIR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Seconds to let running statements finish after SIGTERM/SIGINT.
    #[arg(long, env = "WEIR_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Client sessions open at once over the Postgres wire (as Postgres's max_connections).
    #[arg(long, env = "WEIR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// SUBSCRIBEs streaming at once (statements, cursors, COPY TO STDOUT); more get 53400.
    #[arg(long, env = "WEIR_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,
    /// Worker threads for ad-hoc queries, apart from the streaming engine's, so that a heavy
    /// query cannot starve views, sources or other sessions; 0 (default): twice the cores, at
    /// least 4.
    #[arg(long, env = "WEIR_QUERY_THREADS")]
    pub query_threads: Option<usize>,
    /// Megabytes one ad-hoc statement may use (sorts and hash aggregates spill past it, other
    /// operators fail with 53200); 0 for no limit.
    #[arg(long, env = "WEIR_QUERY_MEMORY_LIMIT_MB")]
    pub query_memory_limit_mb: Option<u64>,
    /// Milliseconds between epoch barriers: how often views publish new results.
    #[arg(long, env = "WEIR_BARRIER_INTERVAL_MS")]
    pub barrier_interval_ms: Option<u64>,
    /// Where checkpoints are written: a directory URL (file:///path), memory://, or
    /// s3://bucket/prefix (settings from the AWS_* variables). Default: <data-dir>/checkpoints.
    #[arg(long, env = "WEIR_STATE_STORE")]
    pub state_store: Option<String>,
    /// Milliseconds between checkpoints (taken at the next barrier); 0 turns checkpoints off.
    #[arg(long, env = "WEIR_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// How clients log in: trust (any user name) or password (SCRAM-SHA-256). Default: trust
    /// when the Postgres wire and Flight listen on loopback only, else password.
    #[arg(long, env = "WEIR_AUTH", value_enum)]
    pub auth: Option<AuthMethod>,
    /// The superuser role created at start (default weir).
    #[arg(long, env = "WEIR_SUPERUSER")]
    pub superuser: Option<String>,
    /// The superuser's password, set at every start. Prefer the variable to the flag (a flag is
    /// visible in the process list).
    #[arg(long, env = "WEIR_SUPERUSER_PASSWORD", hide_env_values = true)]
    pub superuser_password: Option<Secret>,
    /// TLS certificate chain (PEM) for the Postgres wire and Flight SQL.
    #[arg(long, env = "WEIR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "WEIR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Without --tls-cert: serve TLS with a self-signed certificate kept in <data-dir>/tls
    /// (development only: clients cannot verify it unless they trust that file).
    #[arg(long, env = "WEIR_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,
    /// Refuse Postgres-wire sessions without TLS (as a Postgres `hostssl` line; Flight SQL
    /// speaks only TLS once TLS is on). Needs --tls-cert or --tls-self-signed.
    #[arg(long, env = "WEIR_TLS_REQUIRED")]
    pub tls_required: bool,
    /// The key connector secrets (passwords, tokens) are sealed with in the catalog file (any
    /// text). Default: a random key kept in <data-dir>/secret.key. Prefer the variable.
    #[arg(long, env = "WEIR_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<Secret>,
    /// Export traces (OTLP over gRPC) to this collector endpoint, e.g. http://127.0.0.1:4317.
    #[arg(long, env = "WEIR_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl ServeArgs {
    pub fn resolve(&self) -> Result<Config, String> {
        let mut config = Config::default();
        let file = match &self.config {
            Some(path) => Some(read_file(path)?),
            None if Path::new("weir.toml").exists() => Some(read_file(Path::new("weir.toml"))?),
            None => None,
        };
        // Flags (and their variables) over the file over the defaults.
        macro_rules! overlay {
            ($from:expr) => {{
                let from = $from;
                overlay!(@plain from: data_dir, pg_addr, http_addr, flight_addr, log_format, shutdown_grace_secs,
                    max_connections, max_subscriptions, query_threads, query_memory_limit_mb, barrier_interval_ms,
                    checkpoint_interval_ms, superuser);
                overlay!(@optional from: state_store, auth, superuser_password, tls_cert, tls_key, secret_key, otlp_endpoint);
            }};
            (@plain $from:ident: $($field:ident),*) => {
                $(if let Some(v) = &$from.$field { config.$field = v.clone(); })*
            };
            (@optional $from:ident: $($field:ident),*) => {
                $(if let Some(v) = &$from.$field { config.$field = Some(v.clone()); })*
            };
        }
        if let Some(f) = file {
            overlay!(&f);
            if let Some(v) = f.tls_self_signed {
                config.tls_self_signed = v;
            }
            if let Some(v) = f.tls_required {
                config.tls_required = v;
            }
        }
        overlay!(self);
        config.tls_self_signed |= self.tls_self_signed;
        config.tls_required |= self.tls_required;
        Ok(config)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("invalid {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "pg_addr = \"127.0.0.1:6000\"\ndata_dir = \"/tmp/x\"\n").unwrap();
        let args = ServeArgs { config: Some(path.clone()), pg_addr: Some("127.0.0.1:7000".into()), ..Default::default() };
        let c = args.resolve().unwrap();
        assert_eq!(c.pg_addr, "127.0.0.1:7000");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.http_addr, "127.0.0.1:9095");
        assert_eq!(c.auth_method(), AuthMethod::Trust);
        let public = ServeArgs { pg_addr: Some("0.0.0.0:5433".into()), superuser_password: Some(Secret("pw".into())), ..Default::default() };
        let c = public.resolve().unwrap();
        assert_eq!(c.auth_method(), AuthMethod::Password);
        assert!(!format!("{c:?}").contains("pw\""), "{c:?}");
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        assert!(ServeArgs { config: Some(path), ..Default::default() }.resolve().is_err());
    }
}
