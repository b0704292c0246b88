//! Who may connect: password verifiers, the authentication method, failed-login limits; and
//! secrets at rest (design: `docs/security.md`).
//!
//! * [`scram`] - SCRAM-SHA-256's server side and Postgres's verifier format.
//! * [`login_limit`] - failed logins per client address.
//! * [`secrets`] - connector secrets sealed in the catalog file.

pub mod login_limit;
pub mod scram;
pub mod secrets;

use serde::Deserialize;

/// How clients prove who they are (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Any user name connects; a name that is a role gets its rights, others are superusers.
    Trust,
    /// The role must exist, may log in and prove its password (SCRAM-SHA-256 on the Postgres
    /// wire, HTTP Basic in the Flight handshake).
    Password,
}

/// The verifier a password given to `CREATE/ALTER USER ... PASSWORD` is stored as: a
/// verifier given as such is kept (as Postgres does), anything else is hashed.
pub fn password_verifier(password: &str) -> crate::error::Result<String> {
    if scram::Verifier::parse(password).is_some() {
        return Ok(password.to_string());
    }
    scram::Verifier::new(password)
        .map(|v| v.to_string())
        .map_err(|e| crate::error::WeirError::internal(format!("no randomness for a password salt: {e}")))
}
