//! Roles (users): who may log in, with which password verifier, and whether they are
//! superusers. Passwords are never stored: only a SCRAM-SHA-256 verifier, which does not let its
//! reader log in (see `docs/security.md`).

use serde::{Deserialize, Serialize};

/// The grantee that stands for every role (`GRANT SELECT ON t TO PUBLIC`), as in Postgres; no
/// role may be named so.
pub const PUBLIC: &str = "public";

/// A role, as `CREATE USER` / `CREATE ROLE` made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub superuser: bool,
    /// May connect (`LOGIN`; `CREATE USER`'s default, not `CREATE ROLE`'s).
    pub login: bool,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`; `None`: no password, so no
    /// password login.
    pub password: Option<String>,
    pub created_at_micros: i64,
}

/// What `ALTER ROLE` changes; `None` leaves a property as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleChange {
    pub superuser: Option<bool>,
    pub login: Option<bool>,
    /// `Some(None)`: `PASSWORD NULL`, removing the password.
    pub password: Option<Option<String>>,
}
