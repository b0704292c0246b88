//! Postgres functions that clients call and DataFusion / datafusion-pg-catalog lack.
//!
//! Database-wide functions (`version()`, `pg_cancel_backend`) are registered once on the shared
//! context. Session-dependent ones (`current_setting`, `set_config`, `pg_backend_pid`) are
//! registered on each statement's state, bound to that session's values (see
//! [`register_session_functions`]), because DataFusion functions see no session of ours.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_string_array;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

use crate::database::Database;
use crate::settings::Settings;

/// What `version()` returns. It must start with `PostgreSQL ` followed by a version: SQLAlchemy
/// and other drivers parse it.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {} (Weir {}) on {}-linux, compiled by rustc, 64-bit",
        crate::settings::SERVER_VERSION,
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

pub fn register_functions(ctx: &SessionContext, db: &Arc<Database>) {
    let version = version_string();
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(datafusion::scalar::ScalarValue::Utf8(Some(version.clone()))))
        }),
    ));

    // pg_cancel_backend(pid): cancels the statement running on that connection. Without users
    // and roles yet, any session may cancel any other, as a Postgres superuser can.
    let registry = db.cancel.clone();
    ctx.register_udf(create_udf(
        "pg_cancel_backend",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Volatile,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let pids = arrays[0]
                .as_any()
                .downcast_ref::<Int32Array>()
                .ok_or_else(|| DataFusionError::Plan("pg_cancel_backend expects an integer".into()))?;
            let out: BooleanArray = pids.iter().map(|p| p.map(|pid| registry.cancel(pid))).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    ));
}

/// Registers the functions whose answers depend on the session on a statement's state.
pub fn register_session_functions(
    state: &mut datafusion::execution::SessionState,
    settings: &Settings,
    backend_pid: i32,
) {
    let values = settings.clone();
    let current_setting = create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = as_string_array(&arrays[0])?;
            let mut out = Vec::with_capacity(names.len());
            for name in names.iter() {
                match name {
                    None => out.push(None),
                    Some(n) => match values.get(n) {
                        Some(v) => out.push(Some(v)),
                        None => {
                            return Err(DataFusionError::External(Box::new(
                                crate::error::WeirError::new(
                                    crate::error::SqlState::UndefinedObject,
                                    format!("unrecognized configuration parameter \"{n}\""),
                                ),
                            )));
                        }
                    },
                }
            }
            Ok(ColumnarValue::Array(Arc::new(StringArray::from(out)) as ArrayRef))
        }),
    );
    // set_config(name, value, is_local) returns the new value. Clients (asyncpg) call it to turn
    // `jit` off; the value is answered but not kept, since there is no such setting to change.
    let set_config = create_udf(
        "set_config",
        vec![DataType::Utf8, DataType::Utf8, DataType::Boolean],
        DataType::Utf8,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| Ok(args[1].clone())),
    );
    let pid = create_udf(
        "pg_backend_pid",
        vec![],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(datafusion::scalar::ScalarValue::Int32(Some(backend_pid))))
        }),
    );
    for udf in [current_setting, set_config, pid] {
        if let Err(e) = state.register_udf(Arc::new(udf)) {
            tracing::warn!(error = %e, "could not register a session function");
        }
    }
}
