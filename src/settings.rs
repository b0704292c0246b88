//! Session settings (`SET` / `SHOW` / `RESET` / `current_setting`).
//!
//! Names are case-insensitive, as in Postgres. Settings marked *reported* are sent to the client
//! as ParameterStatus at startup and again whenever they change (libpq, pgJDBC and asyncpg
//! track `TimeZone`, `DateStyle`, `client_encoding`, `application_name`, ...).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Result, SqlState, WeirError};

/// The Postgres version Weir reports. Clients choose their catalog queries by it; Weir's
/// catalog emulation follows Postgres 15.
pub const SERVER_VERSION: &str = "15.18";
pub const SERVER_VERSION_NUM: &str = "150018";

#[derive(Debug, Clone)]
struct Setting {
    /// The canonical spelling (`TimeZone`), used in ParameterStatus and SHOW ALL.
    name: &'static str,
    value: String,
    default: String,
    reported: bool,
}

#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<String, Setting>,
    /// Settings this server does not interpret but accepts (`SET my.app_setting = ...`).
    custom: BTreeMap<String, String>,
}

const KNOWN: &[(&str, &str, bool)] = &[
    ("application_name", "", true),
    ("client_encoding", "UTF8", true),
    ("DateStyle", "ISO, MDY", true),
    ("default_transaction_isolation", "read committed", false),
    ("default_transaction_read_only", "off", true),
    ("extra_float_digits", "1", false),
    ("in_hot_standby", "off", true),
    ("integer_datetimes", "on", true),
    ("IntervalStyle", "postgres", true),
    ("is_superuser", "on", true),
    ("jit", "off", false),
    ("lc_messages", "C", false),
    ("lc_monetary", "C", false),
    ("lc_numeric", "C", false),
    ("lc_time", "C", false),
    ("max_identifier_length", "63", false),
    ("search_path", "\"$user\", public", false),
    ("server_encoding", "UTF8", true),
    ("server_version", SERVER_VERSION, true),
    ("server_version_num", SERVER_VERSION_NUM, false),
    ("session_authorization", "weir", true),
    ("standard_conforming_strings", "on", true),
    ("statement_timeout", "0", false),
    ("TimeZone", "UTC", true),
    ("transaction_isolation", "read committed", false),
    ("transaction_read_only", "off", false),
    ("bytea_output", "hex", false),
    ("lock_timeout", "0", false),
    ("idle_in_transaction_session_timeout", "0", false),
    ("row_security", "on", false),
];

/// Settings that are read-only for sessions.
const READ_ONLY: &[&str] = &[
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "max_identifier_length",
    "in_hot_standby",
    "is_superuser",
    "lc_messages",
];

impl Default for Settings {
    fn default() -> Self {
        let values = KNOWN
            .iter()
            .map(|(name, value, reported)| {
                (
                    name.to_ascii_lowercase(),
                    Setting { name, value: value.to_string(), default: value.to_string(), reported: *reported },
                )
            })
            .collect();
        Settings { values, custom: BTreeMap::new() }
    }
}

impl Settings {
    /// Applies startup parameters (`TimeZone`, `application_name`, `DateStyle`, ...). Unknown
    /// or invalid ones are ignored, as Postgres ignores what it does not report back.
    pub fn apply_startup(&mut self, params: &std::collections::HashMap<String, String>) {
        for (k, v) in params {
            if matches!(k.as_str(), "user" | "database" | "options" | "replication") {
                continue;
            }
            if self.values.contains_key(&k.to_ascii_lowercase())
                && let Err(e) = self.set(k, v)
            {
                tracing::debug!(parameter = %k, error = %e, "ignoring startup parameter");
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        let lower = name.to_ascii_lowercase();
        let lower = if lower == "timezone" { "timezone".to_string() } else { lower };
        self.values
            .get(&lower)
            .map(|s| s.value.clone())
            .or_else(|| self.custom.get(&lower).cloned())
    }

    /// Every setting as (name, value), for `SHOW ALL`.
    pub fn all(&self) -> Vec<(String, String)> {
        self.values.values().map(|s| (s.name.to_string(), s.value.clone())).collect()
    }

    /// Sets a value; returns the (name, value) to send as ParameterStatus when the setting is
    /// reported to clients.
    /// Sets a setting the server decides, read-only for sessions (`is_superuser`).
    pub fn set_by_server(&mut self, name: &str, value: &str) {
        if let Some(s) = self.values.get_mut(&name.to_ascii_lowercase()) {
            s.value = value.to_string();
        }
    }

    pub fn set(&mut self, name: &str, value: &str) -> Result<Option<(String, String)>> {
        let lower = name.to_ascii_lowercase();
        if READ_ONLY.contains(&lower.as_str()) {
            return Err(WeirError::new(
                SqlState::InvalidParameterValue,
                format!("parameter \"{name}\" cannot be changed"),
            ));
        }
        let value = normalize(&lower, value)?;
        match self.values.get_mut(&lower) {
            Some(s) => {
                s.value = value.clone();
                Ok(s.reported.then(|| (s.name.to_string(), value)))
            }
            None if lower.contains('.') => {
                // Custom (extension-style) settings are allowed, as in Postgres.
                self.custom.insert(lower, value);
                Ok(None)
            }
            None => Err(WeirError::new(
                SqlState::UndefinedObject,
                format!("unrecognized configuration parameter \"{name}\""),
            )),
        }
    }

    pub fn reset(&mut self, name: &str) -> Result<Option<(String, String)>> {
        let lower = name.to_ascii_lowercase();
        match self.values.get(&lower) {
            Some(s) => {
                let default = s.default.clone();
                self.set(name, &default)
            }
            None => {
                self.custom.remove(&lower);
                Ok(None)
            }
        }
    }

    /// Resets everything (`RESET ALL`, `DISCARD ALL`); returns the reported values that changed.
    pub fn reset_all(&mut self) -> Vec<(String, String)> {
        let mut changed = Vec::new();
        for s in self.values.values_mut() {
            if s.value != s.default {
                s.value = s.default.clone();
                if s.reported {
                    changed.push((s.name.to_string(), s.value.clone()));
                }
            }
        }
        self.custom.clear();
        changed
    }

    /// The session time zone, as an offset or IANA name Arrow understands.
    pub fn time_zone(&self) -> String {
        let tz = self.get("TimeZone").unwrap_or_else(|| "UTC".into());
        if tz.eq_ignore_ascii_case("utc") || tz.eq_ignore_ascii_case("gmt") || tz == "Z" {
            "+00:00".to_string()
        } else {
            tz
        }
    }

    /// `statement_timeout`, or `None` when it is 0 (no limit).
    pub fn statement_timeout(&self) -> Option<Duration> {
        let ms = parse_duration_ms(&self.get("statement_timeout")?).ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    }
}

/// Validates and normalizes a value as Postgres would store it.
fn normalize(name: &str, value: &str) -> Result<String> {
    let invalid = || {
        WeirError::new(
            SqlState::InvalidParameterValue,
            format!("invalid value for parameter \"{name}\": \"{value}\""),
        )
    };
    Ok(match name {
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => {
            parse_duration_ms(value).map_err(|_| invalid())?.to_string()
        }
        "extra_float_digits" => {
            let v: i32 = value.trim().parse().map_err(|_| invalid())?;
            if !(-15..=3).contains(&v) {
                return Err(invalid());
            }
            v.to_string()
        }
        "timezone" => {
            let v = value.trim();
            if v.eq_ignore_ascii_case("utc") || v.eq_ignore_ascii_case("gmt") {
                "UTC".to_string()
            } else if v.parse::<datafusion::arrow::array::timezone::Tz>().is_ok() {
                v.to_string()
            } else {
                return Err(WeirError::new(
                    SqlState::InvalidParameterValue,
                    format!("invalid value for parameter \"TimeZone\": \"{v}\""),
                ));
            }
        }
        "client_encoding" => {
            let v = value.trim().to_ascii_uppercase().replace('-', "");
            if v != "UTF8" && v != "UNICODE" {
                return Err(WeirError::new(
                    SqlState::FeatureNotSupported,
                    format!("client encoding \"{value}\" is not supported; Weir speaks UTF8 only"),
                ));
            }
            "UTF8".to_string()
        }
        "datestyle" => {
            // Only ISO output is produced; accept the usual spellings and keep the order part.
            let order = if value.to_ascii_uppercase().contains("DMY") { "DMY" } else { "MDY" };
            format!("ISO, {order}")
        }
        _ => value.to_string(),
    })
}

/// Parses Postgres duration values: `5000` (ms), `5s`, `5000ms`, `1min`, `2h`.
fn parse_duration_ms(value: &str) -> std::result::Result<u64, ()> {
    let v = value.trim().trim_matches('\'').to_ascii_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().map_err(|_| ())?;
    let factor = match unit.trim() {
        "" | "ms" => 1.0,
        "s" => 1000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        "us" => 0.001,
        _ => return Err(()),
    };
    Ok((num * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_settings_are_announced() {
        let mut s = Settings::default();
        assert_eq!(
            s.set("timezone", "Europe/Paris").unwrap(),
            Some(("TimeZone".to_string(), "Europe/Paris".to_string()))
        );
        assert_eq!(s.set("search_path", "public").unwrap(), None);
        assert_eq!(s.get("SEARCH_PATH").as_deref(), Some("public"));
        assert!(s.set("server_version", "1").is_err());
        assert!(s.set("no_such_thing", "1").is_err());
        s.set("myapp.flag", "on").unwrap();
        assert_eq!(s.get("myapp.flag").as_deref(), Some("on"));
    }

    #[test]
    fn statement_timeout_units() {
        let mut s = Settings::default();
        assert_eq!(s.statement_timeout(), None);
        s.set("statement_timeout", "5s").unwrap();
        assert_eq!(s.statement_timeout(), Some(Duration::from_secs(5)));
        s.set("statement_timeout", "250").unwrap();
        assert_eq!(s.statement_timeout(), Some(Duration::from_millis(250)));
        assert!(s.set("statement_timeout", "soon").is_err());
    }
}
