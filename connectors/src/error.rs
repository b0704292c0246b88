//! Connector errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConnectorError {
    /// A `WITH (...)` option is missing or has a bad value; reported at CREATE time.
    #[error("invalid option \"{option}\": {reason}")]
    InvalidOption { option: String, reason: String },
    /// A position given to [`crate::Source::seek`] names no partition of the source (a checkpoint
    /// of a different source, or one created with other options).
    #[error("invalid position for partition \"{partition}\": {reason}")]
    InvalidPosition { partition: String, reason: String },
    /// The external system could not be reached or refused the request; retried by the caller.
    #[error("{connector} is unavailable: {reason}")]
    Unavailable { connector: &'static str, reason: String },
    /// The external system refused the data, or the data cannot be written there; retrying
    /// would not help, so the sink fails with this reason.
    #[error("{reason}")]
    Rejected { reason: String },
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}
