//! `WITH (key = value, ...)` options of streaming DDL, and secret redaction.

use std::fmt;

use sqlparser::ast::Expr;

/// One `key = value` option. Keys are dotted paths as in RisingWave
/// (`properties.bootstrap.server`, `fields.id.kind`), compared case-insensitively and stored
/// lower-case; values are SQL expressions (almost always string or number literals).
#[derive(Debug, Clone, PartialEq)]
pub struct WithOption {
    pub key: String,
    pub value: Expr,
}

impl WithOption {
    /// The value as a plain string: string literals unquoted, anything else as SQL text.
    pub fn value_string(&self) -> String {
        match &self.value {
            Expr::Value(v) => match &v.value {
                sqlparser::ast::Value::SingleQuotedString(s)
                | sqlparser::ast::Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }
}

impl fmt::Display for WithOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.key, self.value)
    }
}

/// Whether an option holds a secret that must never be shown back (`SHOW CREATE`, logs,
/// `weir_catalog`, error messages). The rule is on the last key segment so that it covers every
/// connector's spelling (`clickhouse.password`, `nats.token`, `properties.sasl.password`, ...).
pub fn is_secret_option(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    matches!(
        last.as_str(),
        "password" | "passwd" | "token" | "secret" | "secret_key" | "secret.key" | "credentials"
    ) || last.ends_with("password")
        || last.ends_with("token")
        || last.contains("secret")
        || key.to_ascii_lowercase().contains("secret.access.key")
        || key.to_ascii_lowercase().contains("sasl.jaas")
}

/// Writes `WITH (a = 1, b = 'x')` (nothing when empty), secrets redacted when `redact` is set.
pub(crate) fn fmt_with_options(
    f: &mut fmt::Formatter<'_>,
    options: &[WithOption],
    redact: bool,
) -> fmt::Result {
    if options.is_empty() {
        return Ok(());
    }
    write!(f, " WITH ")?;
    fmt_option_list(f, options, redact)
}

/// Writes `(a = 1, b = 'x')`, replacing secret values by `'***'` when `redact` is set.
pub(crate) fn fmt_option_list(
    f: &mut fmt::Formatter<'_>,
    options: &[WithOption],
    redact: bool,
) -> fmt::Result {
    write!(f, "(")?;
    for (i, o) in options.iter().enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        if redact && is_secret_option(&o.key) {
            write!(f, "{} = '***'", o.key)?;
        } else {
            write!(f, "{o}")?;
        }
    }
    write!(f, ")")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_by_their_last_segment() {
        assert!(is_secret_option("clickhouse.password"));
        assert!(is_secret_option("nats.token"));
        assert!(is_secret_option("properties.sasl.password"));
        assert!(is_secret_option("s3.secret.access.key"));
        assert!(is_secret_option("s3.secret_access_key"));
        assert!(!is_secret_option("clickhouse.user"));
        assert!(!is_secret_option("topic"));
    }
}
