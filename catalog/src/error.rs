//! Catalog errors.

use thiserror::Error;

use crate::object::ObjectKind;

#[derive(Debug, Error)]
pub enum CatalogError {
    /// A relation (or sink) of that name exists already in the schema.
    #[error("{noun} \"{name}\" already exists", noun = existing.noun_for_duplicate())]
    AlreadyExists { existing: ObjectKind, name: String },
    #[error("{kind} \"{name}\" does not exist")]
    NotFound { kind: ObjectKind, name: String },
    /// `DROP TABLE v` where `v` is a view, and the like.
    #[error("\"{name}\" is not a {expected}")]
    WrongKind { name: String, expected: ObjectKind, actual: ObjectKind },
    /// A plain DROP of an object that others read from.
    #[error("cannot drop {kind} {name} because other objects depend on it")]
    HasDependents { kind: ObjectKind, name: String, dependents: Vec<String> },
    /// A new object names a dependency that does not exist (a bug in the caller).
    #[error("object {0} referenced as a dependency does not exist")]
    MissingDependency(u64),
    #[error("role \"{0}\" already exists")]
    RoleExists(String),
    #[error("role \"{0}\" does not exist")]
    RoleNotFound(String),
    /// `public` names every role in grants; no role may take the name.
    #[error("role name \"{0}\" is reserved")]
    ReservedRoleName(String),
    /// `DROP USER` of a role that still owns objects.
    #[error("role \"{name}\" cannot be dropped because some objects depend on it")]
    RoleOwnsObjects { name: String, owned: Vec<String> },
    #[error("catalog storage error: {0}")]
    Io(#[from] std::io::Error),
    #[error("catalog file is corrupt: {0}")]
    Corrupt(String),
}

impl ObjectKind {
    /// Postgres says `relation "t" already exists` for any relation kind.
    fn noun_for_duplicate(self) -> &'static str {
        if self.is_relation() { "relation" } else { self.noun() }
    }
}
