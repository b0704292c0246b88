//! Catalog objects.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A catalog object's id: unique for the life of a database, never reused.
pub type ObjectId = u64;

/// What an object is. Tables, sources, views and materialized views are relations and share
/// one namespace per schema, as in Postgres; sinks and subscriptions have their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Table,
    Source,
    View,
    MaterializedView,
    Sink,
    Subscription,
}

impl ObjectKind {
    /// Whether objects of this kind can be read in a `FROM` clause.
    pub fn is_relation(self) -> bool {
        matches!(
            self,
            ObjectKind::Table | ObjectKind::Source | ObjectKind::View | ObjectKind::MaterializedView
        )
    }

    /// The lower-case noun used in messages (`relation "x" already exists`, `sink "s" ...`).
    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::Table => "table",
            ObjectKind::Source => "source",
            ObjectKind::View => "view",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Sink => "sink",
            ObjectKind::Subscription => "subscription",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}

/// A column as the catalog lists it (for `pg_catalog`, `information_schema`, `weir_catalog`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The Postgres type name (`integer`, `character varying`, `timestamp with time zone`, ...).
    pub type_name: String,
    pub nullable: bool,
}

/// One named object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogObject {
    pub id: ObjectId,
    pub kind: ObjectKind,
    pub schema: String,
    pub name: String,
    pub owner: String,
    /// The statement that created the object, as SQL that parses back to it. May hold secrets
    /// (a sink's password): show it through the SQL layer's redaction, never raw.
    pub definition: String,
    pub columns: Vec<Column>,
    /// Names of the primary-key columns, in key order; empty when there is none.
    pub primary_key: Vec<String>,
    /// Objects this one reads from. A dependency cannot be dropped without CASCADE.
    pub depends_on: Vec<ObjectId>,
    /// Creation time, microseconds since the Unix epoch.
    pub created_at_micros: i64,
}

impl CatalogObject {
    /// `schema.name`, as shown to users.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}
