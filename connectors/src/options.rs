//! Reading typed values out of a source's `WITH (...)` options, with errors that name the option
//! (they reach the user at `CREATE SOURCE`).

use crate::error::ConnectorError;
use crate::source::SourceOptions;

pub fn invalid(option: &str, reason: impl Into<String>) -> ConnectorError {
    ConnectorError::InvalidOption { option: option.to_string(), reason: reason.into() }
}

/// The number in option `key`, or `default` when it is absent.
pub fn parse_num<T: std::str::FromStr>(options: &SourceOptions, key: &str, default: T) -> Result<T, ConnectorError> {
    Ok(parse_opt(options, key)?.unwrap_or(default))
}

/// The number in option `key`, if present.
pub fn parse_opt<T: std::str::FromStr>(options: &SourceOptions, key: &str) -> Result<Option<T>, ConnectorError> {
    options.get(key).map(|v| parse_value(key, v)).transpose()
}

/// A number given as the value of option `key`.
pub fn parse_value<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConnectorError> {
    let expected = match std::any::type_name::<T>() {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer",
        _ => "a number",
    };
    value.trim().parse().map_err(|_| invalid(key, format!("\"{value}\" is not {expected}")))
}

/// A non-negative duration such as `'10ms'`, `'1 second'`, `'250 milliseconds'`, `'2s'` (a
/// bare number is seconds), in microseconds.
pub fn parse_interval_micros(key: &str, value: &str) -> Result<i64, ConnectorError> {
    let bad = || invalid(key, format!("\"{value}\" is not a duration such as '10ms' or '1 second'"));
    let v = value.trim().to_ascii_lowercase();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let micros_per = match unit.trim() {
        "us" | "usec" | "usecs" | "microsecond" | "microseconds" => 1.0,
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1e3,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
        "h" | "hour" | "hours" => 3600e6,
        "d" | "day" | "days" => 86_400e6,
        _ => return Err(bad()),
    };
    let micros = number * micros_per;
    if !micros.is_finite() || micros >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(micros.round() as i64)
}

/// A timestamp as `'2026-01-01 00:00:00'` (UTC) or integer microseconds.
pub fn parse_timestamp_micros(key: &str, value: &str) -> Result<i64, ConnectorError> {
    if let Ok(n) = value.trim().parse::<i64>() {
        return Ok(n);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value.trim()) {
        return Ok(t.timestamp_micros());
    }
    let v = value.trim().replace('T', " ");
    let v = v.trim_end_matches('Z');
    if let Ok(t) = chrono::DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(t.timestamp_micros());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, format) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc().timestamp_micros());
    }
    Err(invalid(key, format!("\"{value}\" is not a timestamp such as '2026-01-01 00:00:00'")))
}

/// Options the engine interprets itself; connectors accept and ignore them.
const ENGINE_OPTIONS: &[&str] = &["connector", "watermark.idle_timeout", "watermark.late_events"];

/// Rejects keys that are neither the engine's nor accepted by `check` (which returns `Ok(false)`
/// for a key it does not know, or its own error for a key it knows better, e.g. a column option
/// naming no column).
pub fn check_known(
    options: &SourceOptions,
    connector: &str,
    check: impl Fn(&str) -> Result<bool, ConnectorError>,
) -> Result<(), ConnectorError> {
    for key in options.keys() {
        if ENGINE_OPTIONS.contains(&key.as_str()) || check(key)? {
            continue;
        }
        return Err(invalid(key, format!("unknown option for connector '{connector}'")));
    }
    Ok(())
}

/// A non-negative, finite rows-per-second limit (0: unlimited).
pub fn parse_rate(options: &SourceOptions, key: &str, default: f64) -> Result<f64, ConnectorError> {
    let rate: f64 = parse_num(options, key, default)?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(invalid(key, "must be a number of rows per second, 0 for no limit"));
    }
    Ok(rate)
}

/// A count in `1..=max`.
pub fn parse_count(options: &SourceOptions, key: &str, default: usize, max: usize) -> Result<usize, ConnectorError> {
    let n: usize = parse_num(options, key, default)?;
    if n == 0 || n > max {
        return Err(invalid(key, format!("must be between 1 and {max}")));
    }
    Ok(n)
}

/// Where a broker-backed source starts reading when no checkpoint or seek says otherwise:
/// `scan.startup.mode` (Kafka and NATS alike).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Startup {
    Earliest,
    Latest,
    /// The first message at or after this time (epoch milliseconds).
    Timestamp(i64),
}

impl Startup {
    /// `scan.startup.mode = 'earliest' (default) | 'latest' | 'timestamp'`, the last with
    /// `scan.startup.timestamp.millis`.
    pub fn parse(options: &SourceOptions) -> Result<Self, ConnectorError> {
        Ok(match options.get("scan.startup.mode").map(|m| m.to_ascii_lowercase()).as_deref() {
            None | Some("earliest") => Startup::Earliest,
            Some("latest") => Startup::Latest,
            Some("timestamp") => {
                let millis = options.get("scan.startup.timestamp.millis").ok_or_else(|| {
                    invalid("scan.startup.timestamp.millis", "scan.startup.mode 'timestamp' needs the time in epoch milliseconds")
                })?;
                Startup::Timestamp(parse_value("scan.startup.timestamp.millis", millis)?)
            }
            Some(other) => {
                return Err(invalid("scan.startup.mode", format!("\"{other}\" is not 'earliest', 'latest' or 'timestamp'")));
            }
        })
    }
}

/// Option `key` as `'true'` or `'false'`, or `default` when it is absent.
pub fn parse_bool(options: &SourceOptions, key: &str, default: bool) -> Result<bool, ConnectorError> {
    match options.get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(invalid(key, format!("\"{other}\" is not 'true' or 'false'"))),
    }
}

/// `connector.validate = 'true' (default) | 'false'`: whether `CREATE SOURCE` checks that the
/// broker answers.
pub fn parse_validate(options: &SourceOptions) -> Result<bool, ConnectorError> {
    parse_bool(options, "connector.validate", true)
}
/// A URL (or comma-separated URLs) without any `user:password@`, for messages and logs:
/// `nats://user:password@host:4222` -> `nats://host:4222`.
pub fn without_credentials(url: &str) -> String {
    url.split(',')
        .map(|server| match (server.find("://"), server.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}{}", &server[..scheme + 3], &server[at + 1..]),
            (None, Some(at)) => server[at + 1..].to_string(),
            _ => server.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

