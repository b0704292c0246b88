//! # weir-catalog: what exists in a Weir database
//!
//! The catalog is the list of named objects (tables, sources, views, materialized views, sinks,
//! subscriptions), each with an id, a schema-qualified name, an owner, its definition as SQL text
//! and the ids of the objects it reads from. The SQL text is the source of truth: on start the
//! server re-plans every definition, so the catalog never stores a format that can drift from
//! what the planner understands.
//!
//! * [`object`] - [`CatalogObject`], [`ObjectKind`], [`Column`].
//! * [`catalog`] - [`Catalog`], the in-memory map with name lookup, dependency edges
//!   (`DROP ... CASCADE` and the 2BP01 "other objects depend on it" check) and persistence.
//! * [`role`] - [`Role`]: users, their password verifiers, superuser and login rights; the
//!   catalog also keeps which roles may read which relation (`GRANT SELECT`).
//! * [`persist`] - how the catalog reaches disk: one JSON document replaced atomically
//!   (write to a temp file, fsync, rename, fsync the directory) on every change.
//! * [`error`] - [`CatalogError`]; the server maps each variant to a SQLSTATE.

pub mod catalog;
pub mod error;
pub mod object;
pub mod persist;
pub mod role;

pub use catalog::{Catalog, DefinitionCodec, NewObject};
pub use error::CatalogError;
pub use object::{CatalogObject, Column, ObjectId, ObjectKind};
pub use role::{PUBLIC, Role, RoleChange};
