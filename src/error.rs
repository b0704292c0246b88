//! Errors and the one place where they become Postgres errors.
//!
//! Every failure a client can see is a [`WeirError`]: a SQLSTATE, a message worded like
//! Postgres's, and optional detail, hint and position. Errors from our own layers are built with
//! the right code where they happen; errors from DataFusion, Arrow, the catalog and storage are
//! classified here, in [`WeirError::from_datafusion`] and the `From` impls, so there is one
//! exhaustive mapping to read when a client gets the wrong code.

use std::fmt;

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use pgwire::error::{ErrorInfo, PgWireError};
use weir_catalog::CatalogError;

/// SQLSTATE codes Weir uses (Postgres's Appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlState {
    SyntaxError,
    UndefinedTable,
    UndefinedColumn,
    UndefinedFunction,
    UndefinedObject,
    DuplicateTable,
    DuplicateObject,
    DatatypeMismatch,
    AmbiguousColumn,
    InvalidTextRepresentation,
    InvalidDatetimeFormat,
    NumericValueOutOfRange,
    /// A binary parameter value that does not decode as its type.
    InvalidBinaryRepresentation,
    /// A date, time or interval value out of its type's range.
    DatetimeFieldOverflow,
    DivisionByZero,
    DataException,
    UniqueViolation,
    NotNullViolation,
    DependentObjectsStillExist,
    FeatureNotSupported,
    InvalidCatalogName,
    InFailedSqlTransaction,
    ActiveSqlTransaction,
    NoActiveSqlTransaction,
    InvalidCursorName,
    /// A prepared statement handle that does not exist.
    InvalidSqlStatementName,
    DuplicateCursor,
    InvalidParameterValue,
    UndefinedParameter,
    QueryCanceled,
    ProtocolViolation,
    WrongObjectType,
    InsufficientResources,
    /// `max_connections` client connections are open.
    TooManyConnections,
    /// A configured limit other than connections (`max_subscriptions`).
    ConfigurationLimitExceeded,
    /// A statement needed more memory than its limit.
    OutOfMemory,
    ObjectNotInPrerequisiteState,
    AdminShutdown,
    Internal,
    /// Stored data that fails its checks (a checkpoint's manifest or part).
    DataCorrupted,
    Io,
    /// An external system (a broker, an object store) could not be reached.
    UnableToConnect,
    /// A wrong password, an unknown user, or a role that may not log in.
    InvalidPassword,
    /// A connection the server's rules do not admit (`--tls-required` without TLS).
    InvalidAuthorizationSpecification,
    /// A role without the right to do this (read a relation, drop another's object).
    InsufficientPrivilege,
    /// A name no object may take (`CREATE ROLE public`).
    ReservedName,
    /// The object is in use (dropping the session's own role).
    ObjectInUse,
}

impl SqlState {
    pub fn code(self) -> &'static str {
        match self {
            SqlState::SyntaxError => "42601",
            SqlState::UndefinedTable => "42P01",
            SqlState::UndefinedColumn => "42703",
            SqlState::UndefinedFunction => "42883",
            SqlState::UndefinedObject => "42704",
            SqlState::DuplicateTable => "42P07",
            SqlState::ObjectNotInPrerequisiteState => "55000",
            SqlState::AdminShutdown => "57P01",
            SqlState::UnableToConnect => "08001",
            SqlState::DuplicateObject => "42710",
            SqlState::DatatypeMismatch => "42804",
            SqlState::AmbiguousColumn => "42702",
            SqlState::InvalidTextRepresentation => "22P02",
            SqlState::InvalidDatetimeFormat => "22007",
            SqlState::NumericValueOutOfRange => "22003",
            SqlState::InvalidBinaryRepresentation => "22P03",
            SqlState::DatetimeFieldOverflow => "22008",
            SqlState::DivisionByZero => "22012",
            SqlState::DataException => "22000",
            SqlState::UniqueViolation => "23505",
            SqlState::NotNullViolation => "23502",
            SqlState::DependentObjectsStillExist => "2BP01",
            SqlState::FeatureNotSupported => "0A000",
            SqlState::InvalidCatalogName => "3D000",
            SqlState::InFailedSqlTransaction => "25P02",
            SqlState::ActiveSqlTransaction => "25001",
            SqlState::NoActiveSqlTransaction => "25P01",
            SqlState::InvalidCursorName => "34000",
            SqlState::InvalidSqlStatementName => "26000",
            SqlState::DuplicateCursor => "42P03",
            SqlState::InvalidParameterValue => "22023",
            SqlState::UndefinedParameter => "42P02",
            SqlState::QueryCanceled => "57014",
            SqlState::ProtocolViolation => "08P01",
            SqlState::WrongObjectType => "42809",
            SqlState::InsufficientResources => "53000",
            SqlState::TooManyConnections => "53300",
            SqlState::ConfigurationLimitExceeded => "53400",
            SqlState::OutOfMemory => "53200",
            SqlState::Internal => "XX000",
            SqlState::DataCorrupted => "XX001",
            SqlState::Io => "58030",
            SqlState::InvalidPassword => "28P01",
            SqlState::InvalidAuthorizationSpecification => "28000",
            SqlState::InsufficientPrivilege => "42501",
            SqlState::ReservedName => "42939",
            SqlState::ObjectInUse => "55006",
        }
    }
}

/// A client-visible error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeirError {
    pub state: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// 1-based character position in the query text (syntax errors).
    pub position: Option<usize>,
}

pub type Result<T, E = WeirError> = std::result::Result<T, E>;

impl fmt::Display for WeirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.state.code())
    }
}

impl std::error::Error for WeirError {}

impl From<weir_sql::streaming::StreamPlanError> for WeirError {
    fn from(e: weir_sql::streaming::StreamPlanError) -> Self {
        match e {
            weir_sql::streaming::StreamPlanError::NotSupported { construct, hint } => {
                let err = WeirError::new(SqlState::FeatureNotSupported, format!("{construct} is not supported"));
                match hint {
                    Some(h) => err.with_hint(h),
                    None => err,
                }
            }
            weir_sql::streaming::StreamPlanError::Invalid(m) => WeirError::new(SqlState::InvalidParameterValue, m),
        }
    }
}

impl From<weir_connectors::ConnectorError> for WeirError {
    fn from(e: weir_connectors::ConnectorError) -> Self {
        let state = match e {
            weir_connectors::ConnectorError::Unavailable { .. } => SqlState::UnableToConnect,
            _ => SqlState::InvalidParameterValue,
        };
        WeirError::new(state, e.to_string())
    }
}

impl WeirError {
    pub fn new(state: SqlState, message: impl Into<String>) -> Self {
        WeirError { state, message: message.into(), detail: None, hint: None, position: None }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn not_supported(what: impl fmt::Display) -> Self {
        WeirError::new(SqlState::FeatureNotSupported, format!("{what} is not supported yet"))
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        WeirError::new(SqlState::Internal, message.to_string())
    }

    pub fn canceled(reason: &str) -> Self {
        WeirError::new(SqlState::QueryCanceled, format!("canceling statement due to {reason}"))
    }

    pub fn in_failed_transaction() -> Self {
        WeirError::new(
            SqlState::InFailedSqlTransaction,
            "current transaction is aborted, commands ignored until end of transaction block",
        )
    }

    /// Classifies a DataFusion error. DataFusion words errors for Rust users
    /// ("table 'weir.public.t' not found"); Postgres clients and tests expect Postgres's
    /// wording and codes, so the common cases are rewritten, the rest keep their text.
    pub fn from_datafusion(err: DataFusionError) -> Self {
        let err = strip_context(err);
        match err {
            DataFusionError::SQL(e, _) => {
                WeirError::new(SqlState::SyntaxError, format!("syntax error: {e}"))
            }
            DataFusionError::SchemaError(e, _) => {
                use datafusion::common::SchemaError as S;
                match *e {
                    S::FieldNotFound { field, .. } => WeirError::new(
                        SqlState::UndefinedColumn,
                        format!("column \"{}\" does not exist", field.name),
                    ),
                    S::AmbiguousReference { field } => WeirError::new(
                        SqlState::AmbiguousColumn,
                        format!("column reference \"{}\" is ambiguous", field.name),
                    ),
                    other => WeirError::new(SqlState::DuplicateObject, other.to_string()),
                }
            }
            DataFusionError::ArrowError(e, _) => WeirError::from(*e),
            DataFusionError::NotImplemented(msg) => WeirError::new(
                SqlState::FeatureNotSupported,
                format!("not supported: {}", msg.trim()),
            ),
            DataFusionError::Plan(msg) => classify_plan_error(&msg),
            DataFusionError::Execution(msg) => classify_execution_error(&msg),
            // DataFusion's memory pools are its only source of this error.
            DataFusionError::ResourcesExhausted(msg) => WeirError::new(SqlState::OutOfMemory, "out of memory")
                .with_detail(msg.trim().to_string())
                .with_hint("The statement needed more than its memory limit (--query-memory-limit-mb); raise the limit or narrow the query."),
            DataFusionError::External(e) => match e.downcast::<WeirError>() {
                Ok(w) => *w,
                Err(e) => WeirError::new(SqlState::Internal, e.to_string()),
            },
            other => WeirError::new(SqlState::Internal, other.to_string()),
        }
    }
}

/// Removes DataFusion's `Context` and diagnostic wrappers to reach the error that happened.
fn strip_context(err: DataFusionError) -> DataFusionError {
    match err {
        DataFusionError::Context(_, inner) => strip_context(*inner),
        DataFusionError::Diagnostic(_, inner) => strip_context(*inner),
        DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
            Ok(e) => strip_context(e),
            Err(shared) => DataFusionError::Internal(shared.to_string()),
        },
        DataFusionError::Collection(mut errs) if !errs.is_empty() => strip_context(errs.remove(0)),
        other => other,
    }
}

/// The text between the first pair of single quotes (DataFusion quotes names that way).
fn quoted(msg: &str) -> Option<&str> {
    let start = msg.find('\'')? + 1;
    let len = msg[start..].find('\'')?;
    Some(&msg[start..start + len])
}

fn classify_plan_error(msg: &str) -> WeirError {
    if msg.contains("non-boolean predicate") {
        let ty = msg.rsplit("returning ").next().unwrap_or("another type").trim();
        return WeirError::new(
            SqlState::DatatypeMismatch,
            format!("argument of WHERE must be type boolean, not type {}", pg_type_word(ty)),
        );
    }
    if msg.starts_with("table '") && msg.contains("not found") {
        let name = quoted(msg).unwrap_or(msg);
        let name = name.rsplit('.').next().unwrap_or(name);
        return WeirError::new(SqlState::UndefinedTable, format!("relation \"{name}\" does not exist"));
    }
    if msg.contains("Invalid function") || msg.contains("There is no function") {
        let name = quoted(msg).unwrap_or(msg);
        return WeirError::new(SqlState::UndefinedFunction, format!("function {name} does not exist"))
            .with_detail(msg.to_string());
    }
    if msg.contains("No function matches")
        || msg.contains("Cannot infer common")
        || msg.contains("does not support")
        || msg.contains("Failed to coerce")
        || msg.contains("Cannot coerce")
        || msg.contains("not supported for")
    {
        return WeirError::new(SqlState::UndefinedFunction, msg.to_string())
            .with_hint("No function or operator matches the given argument types. You might need to add explicit type casts.");
    }
    if msg.contains("Inserting query must have the same schema")
        || msg.contains("Column count doesn't match")
        || msg.contains("Inserting query schema mismatch")
    {
        return WeirError::new(SqlState::SyntaxError, "INSERT has more expressions than target columns")
            .with_detail(msg.to_string());
    }
    if msg.contains("column '") && msg.contains("not found") {
        let name = quoted(msg).unwrap_or(msg);
        return WeirError::new(SqlState::UndefinedColumn, format!("column \"{name}\" does not exist"));
    }
    if msg.contains("Placeholder") {
        return WeirError::new(SqlState::UndefinedParameter, msg.to_string());
    }
    WeirError::new(SqlState::SyntaxError, msg.to_string())
}

/// A Postgres-style name for an Arrow type name in a DataFusion message.
fn pg_type_word(arrow: &str) -> &str {
    match arrow {
        "Int16" => "smallint",
        "Int32" => "integer",
        "Int64" => "bigint",
        "Float32" => "real",
        "Float64" => "double precision",
        "Utf8" | "Utf8View" | "LargeUtf8" => "text",
        "Boolean" => "boolean",
        "Date32" => "date",
        other => other,
    }
}

fn classify_execution_error(msg: &str) -> WeirError {
    if msg.contains("Divide by zero") || msg.contains("divide by zero") {
        return WeirError::new(SqlState::DivisionByZero, "division by zero");
    }
    if let Some(e) = classify_cast_message(msg) {
        return e;
    }
    WeirError::new(SqlState::DataException, msg.to_string())
}

/// Arrow's cast failures ("Cannot cast string '12x' to value of Int32 type") are Postgres's
/// `invalid input syntax for type integer: "12x"` (22P02) or, for dates and times, 22007.
fn classify_cast_message(msg: &str) -> Option<WeirError> {
    let is_parse = msg.contains("Cannot cast string")
        || msg.contains("Error parsing")
        || msg.contains("Parser error")
        || msg.contains("Cannot parse");
    if !is_parse {
        if msg.contains("Overflow") || msg.contains("overflow") || msg.contains("too large") {
            return Some(WeirError::new(SqlState::NumericValueOutOfRange, msg.to_string()));
        }
        return None;
    }
    let value = quoted(msg).unwrap_or("");
    let lower = msg.to_ascii_lowercase();
    let (ty, state) = if lower.contains("timestamp") || lower.contains("date") || lower.contains("time") {
        (
            if lower.contains("date32") { "date" } else { "timestamp" },
            SqlState::InvalidDatetimeFormat,
        )
    } else if lower.contains("int64") {
        ("bigint", SqlState::InvalidTextRepresentation)
    } else if lower.contains("int16") {
        ("smallint", SqlState::InvalidTextRepresentation)
    } else if lower.contains("int") {
        ("integer", SqlState::InvalidTextRepresentation)
    } else if lower.contains("decimal") {
        ("numeric", SqlState::InvalidTextRepresentation)
    } else if lower.contains("float") {
        ("double precision", SqlState::InvalidTextRepresentation)
    } else if lower.contains("boolean") {
        ("boolean", SqlState::InvalidTextRepresentation)
    } else {
        ("the target type", SqlState::InvalidTextRepresentation)
    };
    Some(
        WeirError::new(state, format!("invalid input syntax for type {ty}: \"{value}\""))
            .with_detail(msg.to_string()),
    )
}

impl From<DataFusionError> for WeirError {
    fn from(e: DataFusionError) -> Self {
        WeirError::from_datafusion(e)
    }
}

impl From<ArrowError> for WeirError {
    fn from(e: ArrowError) -> Self {
        match &e {
            ArrowError::CastError(msg) | ArrowError::ParseError(msg) => classify_cast_message(msg)
                .unwrap_or_else(|| WeirError::new(SqlState::InvalidTextRepresentation, msg.clone())),
            ArrowError::DivideByZero => WeirError::new(SqlState::DivisionByZero, "division by zero"),
            ArrowError::ArithmeticOverflow(msg) => {
                WeirError::new(SqlState::NumericValueOutOfRange, msg.clone())
            }
            ArrowError::ExternalError(inner) => match inner.downcast_ref::<WeirError>() {
                Some(w) => w.clone(),
                None => WeirError::new(SqlState::Internal, e.to_string()),
            },
            _ => WeirError::new(SqlState::Internal, e.to_string()),
        }
    }
}

impl From<CatalogError> for WeirError {
    fn from(e: CatalogError) -> Self {
        let state = match &e {
            CatalogError::AlreadyExists { existing, .. } => {
                if existing.is_relation() { SqlState::DuplicateTable } else { SqlState::DuplicateObject }
            }
            CatalogError::NotFound { kind, .. } => {
                if kind.is_relation() { SqlState::UndefinedTable } else { SqlState::UndefinedObject }
            }
            CatalogError::WrongKind { .. } => SqlState::WrongObjectType,
            CatalogError::HasDependents { .. } => SqlState::DependentObjectsStillExist,
            CatalogError::MissingDependency(_) | CatalogError::Corrupt(_) => SqlState::Internal,
            CatalogError::Io(_) => SqlState::Io,
            CatalogError::RoleExists(_) => SqlState::DuplicateObject,
            CatalogError::RoleNotFound(_) => SqlState::UndefinedObject,
            CatalogError::ReservedRoleName(_) => SqlState::ReservedName,
            CatalogError::RoleOwnsObjects { .. } => SqlState::DependentObjectsStillExist,
        };
        let mut err = WeirError::new(state, e.to_string());
        if let CatalogError::HasDependents { dependents, .. } = &e {
            err = err
                .with_detail(dependents.join("\n"))
                .with_hint("Use DROP ... CASCADE to drop the dependent objects too.");
        }
        if let CatalogError::RoleOwnsObjects { owned, .. } = &e {
            err = err.with_detail(owned.join("\n")).with_hint("Drop the role's objects first.");
        }
        if let CatalogError::NotFound { kind, name } = &e
            && kind.is_relation()
        {
            err.message = format!("{} \"{name}\" does not exist", if *kind == weir_catalog::ObjectKind::Table { "table" } else { kind.noun() });
        }
        err
    }
}

impl From<weir_sql::ParseError> for WeirError {
    fn from(e: weir_sql::ParseError) -> Self {
        WeirError {
            state: SqlState::SyntaxError,
            message: e.message,
            detail: e.detail,
            hint: None,
            position: e.position,
        }
    }
}

impl From<std::io::Error> for WeirError {
    fn from(e: std::io::Error) -> Self {
        WeirError::new(SqlState::Io, format!("I/O error: {e}"))
    }
}

impl From<WeirError> for ErrorInfo {
    fn from(e: WeirError) -> Self {
        let mut info = ErrorInfo::new("ERROR".to_string(), e.state.code().to_string(), e.message);
        info.detail = e.detail;
        info.hint = e.hint;
        info.position = e.position.map(|p| p.to_string());
        info
    }
}

impl From<WeirError> for PgWireError {
    fn from(e: WeirError) -> Self {
        PgWireError::UserError(Box::new(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_table_reads_like_postgres() {
        let e = WeirError::from_datafusion(DataFusionError::Plan(
            "table 'weir.public.nope' not found".into(),
        ));
        assert_eq!(e.state, SqlState::UndefinedTable);
        assert_eq!(e.message, "relation \"nope\" does not exist");
    }

    #[test]
    fn bad_integer_text_is_22p02() {
        let e = WeirError::from(ArrowError::CastError(
            "Cannot cast string '12x' to value of Int32 type".into(),
        ));
        assert_eq!(e.state, SqlState::InvalidTextRepresentation);
        assert_eq!(e.message, "invalid input syntax for type integer: \"12x\"");
    }
}
