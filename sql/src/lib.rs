//! # weir-sql: the statements Weir accepts
//!
//! Weir speaks Postgres-flavoured SQL plus RisingWave/Materialize-style streaming DDL. This crate
//! owns the *shape* of that language; it does not execute anything.
//!
//! * [`statement`] - Weir's own [`Statement`] enum. Standard SQL (DDL, DML, queries, session
//!   commands) is carried as sqlparser's AST; streaming DDL (`CREATE SOURCE`, `CREATE
//!   MATERIALIZED VIEW`, `CREATE SINK`, `SUBSCRIBE`, `FLUSH`) and Weir's `SHOW` commands have
//!   their own structs. Every statement implements `Display` so that the catalog can store it as
//!   SQL text and parse it back unchanged (`SHOW CREATE` prints it).
//! * [`parser`] - [`parse`] splits a query string into statements, dispatches each one either to
//!   Weir's own grammar or to sqlparser's Postgres dialect, and keeps each statement's source
//!   text (the pgwire layer re-reads queries through datafusion-postgres's compatibility rewrites).
//! * [`options`] - `WITH (key = value, ...)` options with dotted keys, and redaction of secret
//!   values (`password`, `token`, ...) for `SHOW CREATE`, logs and errors.
//! * [`streaming`] - window table functions (`TUMBLE`, `HOP`) and the streaming planner that
//!   compiles a view's DataFusion `LogicalPlan` into a tree of incremental operators.
//! * [`error`] - [`ParseError`], with the character position Postgres reports for syntax errors.
//!
//! Data moves one way: text → [`parse`] → `Vec<ParsedStatement>` → the server's session layer.

pub mod error;
pub mod options;
pub mod parser;
pub mod statement;
pub mod streaming;

pub use error::ParseError;
pub use options::{WithOption, is_secret_option};
pub use parser::{ParsedStatement, parse, parse_type_name};
pub use statement::{
    CreateMaterializedView, CreateSink, CreateSource, CreateStreamingTable, FormatEncode, ObjectKind, RoleOptions, SinkInput,
    Statement, Subscribe, SubscribeTarget, Watermark,
};

/// Re-export of the sqlparser version whose AST [`Statement::Standard`] carries.
pub use sqlparser;
