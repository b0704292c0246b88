//! Postgres's text output for Arrow values.
//!
//! Clients parse the text format, and sqllogictest suites recorded on real Postgres compare it
//! byte for byte, so it must be Postgres's: `t`/`f` for booleans, the shortest exact float
//! (`3`, not `3.0`; `1e+20`), timestamps without a zero fraction and with a `+00` offset in the
//! session time zone, `\x` hex for bytea. Used for text-format result columns and for
//! `COPY ... TO STDOUT`.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Timelike};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array, Float64Array, LargeBinaryArray,
};
use datafusion::arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{Result, WeirError};

/// Postgres's text form of a composite value: `(1,"a b",)`, a field quoted when it is empty or
/// holds a quote, backslash, parenthesis, comma or space; NULL is nothing at all.
fn record(fields: &[ColumnText], i: usize) -> String {
    let mut out = String::from("(");
    for (n, field) in fields.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let Some(v) = field.value(i) else { continue };
        let needs_quotes = v.is_empty() || v.chars().any(|c| matches!(c, '"' | '\\' | '(' | ')' | ',') || c.is_whitespace());
        if needs_quotes {
            out.push('"');
            for c in v.chars() {
                if matches!(c, '"' | '\\') {
                    out.push(c);
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(&v);
        }
    }
    out.push(')');
    out
}

/// Formats every value of one column; `None` for NULL.
pub struct ColumnText<'a> {
    array: &'a ArrayRef,
    kind: Kind<'a>,
    time_zone: Option<Tz>,
    session_tz: String,
}

enum Kind<'a> {
    Bool(&'a BooleanArray),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Timestamp(TimeUnit, bool),
    Binary,
    List,
    Struct(Vec<ColumnText<'a>>),
    Other(ArrayFormatter<'a>),
}

impl<'a> ColumnText<'a> {
    /// `session_tz` is the session's `TimeZone`, used for `timestamptz` output.
    pub fn new(array: &'a ArrayRef, session_tz: &str) -> Result<Self> {
        let kind = match array.data_type() {
            DataType::Boolean => Kind::Bool(array.as_boolean()),
            DataType::Float32 => Kind::F32(array.as_primitive()),
            DataType::Float64 => Kind::F64(array.as_primitive()),
            DataType::Timestamp(unit, tz) => Kind::Timestamp(*unit, tz.is_some()),
            DataType::Binary | DataType::LargeBinary => Kind::Binary,
            DataType::List(_) | DataType::LargeList(_) => Kind::List,
            DataType::Struct(_) => Kind::Struct(
                array.as_struct().columns().iter().map(|c| ColumnText::new(c, session_tz)).collect::<Result<_>>()?,
            ),
            _ => Kind::Other(
                ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
                    .map_err(WeirError::from)?,
            ),
        };
        let time_zone = Tz::from_str(session_tz).ok();
        Ok(ColumnText { array, kind, time_zone, session_tz: session_tz.to_string() })
    }

    pub fn value(&self, i: usize) -> Option<String> {
        // A NullArray has no validity buffer: `is_null` says false for it.
        if self.array.is_null(i) || self.array.data_type() == &DataType::Null {
            return None;
        }
        Some(match &self.kind {
            Kind::Bool(a) => if a.value(i) { "t" } else { "f" }.to_string(),
            Kind::F32(a) => format_float(a.value(i) as f64, true),
            Kind::F64(a) => format_float(a.value(i), false),
            Kind::Timestamp(unit, with_tz) => self.timestamp(i, *unit, *with_tz)?,
            Kind::List => self.list(i)?,
            Kind::Struct(fields) => record(fields, i),
            Kind::Binary => {
                let bytes = match self.array.data_type() {
                    DataType::LargeBinary => self.array.as_any().downcast_ref::<LargeBinaryArray>()?.value(i),
                    _ => self.array.as_any().downcast_ref::<BinaryArray>()?.value(i),
                };
                let mut s = String::with_capacity(2 + bytes.len() * 2);
                s.push_str("\\x");
                for b in bytes {
                    s.push_str(&format!("{b:02x}"));
                }
                s
            }
            // An unconstrained `numeric` column is stored as Decimal128(38, 10); Postgres shows
            // such values without padding zeros.
            Kind::Other(f) if matches!(self.array.data_type(), DataType::Decimal128(38, 10)) => {
                let s = f.value(i).to_string();
                match s.contains('.') {
                    true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
                    false => s,
                }
            }
            Kind::Other(f) => f.value(i).to_string(),
        })
    }

    /// Postgres array output: `{1,2,NULL}`, elements quoted when they need it.
    fn list(&self, i: usize) -> Option<String> {
        let items: ArrayRef = match self.array.data_type() {
            DataType::LargeList(_) => self.array.as_list::<i64>().value(i),
            _ => self.array.as_list::<i32>().value(i),
        };
        let text = ColumnText::new(&items, &self.session_tz).ok()?;
        let parts: Vec<String> = (0..items.len())
            .map(|j| match text.value(j) {
                None => "NULL".to_string(),
                Some(v) => {
                    let needs_quotes = v.is_empty()
                        || v.eq_ignore_ascii_case("null")
                        || v.chars().any(|c| matches!(c, ',' | '{' | '}' | '"' | '\\') || c.is_whitespace());
                    if needs_quotes {
                        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    } else {
                        v
                    }
                }
            })
            .collect();
        Some(format!("{{{}}}", parts.join(",")))
    }

    fn timestamp(&self, i: usize, unit: TimeUnit, with_tz: bool) -> Option<String> {
        let a = self.array;
        let naive: NaiveDateTime = match unit {
            TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value_as_datetime(i)?,
            TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value_as_datetime(i)?,
            TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value_as_datetime(i)?,
            TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value_as_datetime(i)?,
        };
        if !with_tz {
            return Some(format_naive(&naive));
        }
        // A timestamptz is an instant (stored as UTC); show it in the session's zone.
        let Some(tz) = self.time_zone.or_else(|| Tz::from_str("+00:00").ok()) else {
            return Some(format!("{}+00", format_naive(&naive)));
        };
        let local: DateTime<Tz> = tz.from_utc_datetime(&naive);
        let offset = local.offset().fix().local_minus_utc();
        Some(format!("{}{}", format_naive(&local.naive_local()), format_offset(offset)))
    }
}

/// `2026-11-23 10:00:00`, with the fraction only when it is not zero, trailing zeros trimmed.
fn format_naive(t: &NaiveDateTime) -> String {
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let micros = t.nanosecond() / 1000;
    if micros != 0 {
        let frac = format!("{micros:06}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s
}

/// `+00`, `+05:30`, `-08`.
fn format_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.abs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    match (m, sec) {
        (0, 0) => format!("{sign}{h:02}"),
        (_, 0) => format!("{sign}{h:02}:{m:02}"),
        _ => format!("{sign}{h:02}:{m:02}:{sec:02}"),
    }
}

/// Postgres's float output with `extra_float_digits` ≥ 1 (the default since Postgres 12): the
/// shortest text that reads back exactly, `NaN`, `Infinity`, and exponent form outside
/// 1e-4 ≤ |x| < 1e15 (1e6 for real).
pub fn format_float(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let shortest = if single { format!("{:e}", v as f32) } else { format!("{v:e}") };
    // shortest is like "1.2345e3" or "1e-5"
    let (mantissa, exp) = shortest.split_once('e').unwrap_or((&shortest, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let max_exp = if single { 6 } else { 15 };
    if exp < -4 || exp >= max_exp {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else if single {
        format!("{}", v as f32)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::TimestampMicrosecondArray;

    use super::*;

    #[test]
    fn floats_read_like_postgres() {
        assert_eq!(format_float(3.0, false), "3");
        assert_eq!(format_float(2.5, false), "2.5");
        assert_eq!(format_float(0.1, false), "0.1");
        assert_eq!(format_float(1e20, false), "1e+20");
        assert_eq!(format_float(1.5e-7, false), "1.5e-07");
        assert_eq!(format_float(123456789012.0, false), "123456789012");
        assert_eq!(format_float(f64::INFINITY, false), "Infinity");
        assert_eq!(format_float(0.1f32 as f64, true), "0.1");
    }

    #[test]
    fn structs_read_like_postgres_records() {
        use datafusion::arrow::array::{Int64Array, StringArray, StructArray};
        use datafusion::arrow::buffer::NullBuffer;
        use datafusion::arrow::datatypes::{Field, Fields};
        let inner = StructArray::new(
            Fields::from(vec![Field::new("x", DataType::Boolean, true)]),
            vec![Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]))],
            None,
        );
        let fields = Fields::from(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("i", inner.data_type().clone(), true),
        ]);
        let outer: ArrayRef = Arc::new(StructArray::new(
            fields,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("a b"), Some(""), Some("x")])),
                Arc::new(inner),
            ],
            Some(NullBuffer::from(vec![true, true, false])),
        ));
        let text = ColumnText::new(&outer, "UTC").unwrap();
        // As Postgres 15 prints SELECT ROW(1, 'a b', ROW(true)), ROW(NULL::int, '', ROW(NULL::bool)).
        assert_eq!(text.value(0).as_deref(), Some(r#"(1,"a b","(t)")"#));
        assert_eq!(text.value(1).as_deref(), Some(r#"(,"","()")"#));
        assert_eq!(text.value(2), None);
        let quoted: ArrayRef = Arc::new(StructArray::new(
            Fields::from(vec![Field::new("s", DataType::Utf8, true)]),
            vec![Arc::new(StringArray::from(vec![r#"q"\"#]))],
            None,
        ));
        // SELECT ROW('q"\') prints ("q""\\").
        assert_eq!(ColumnText::new(&quoted, "UTC").unwrap().value(0).as_deref(), Some(r#"("q""\\")"#));
    }

    #[test]
    fn timestamps_read_like_postgres() {
        // 2026-11-23 10:00:00 UTC and 10:00:00.25
        let a: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_795_428_000_000_000, 1_795_428_000_250_000])
                .with_timezone("+00:00"),
        );
        let utc = ColumnText::new(&a, "+00:00").unwrap();
        assert_eq!(utc.value(0).unwrap(), "2026-11-23 10:00:00+00");
        assert_eq!(utc.value(1).unwrap(), "2026-11-23 10:00:00.25+00");
        let ist = ColumnText::new(&a, "Asia/Kolkata").unwrap();
        assert_eq!(ist.value(0).unwrap(), "2026-11-23 15:30:00+05:30");
        let list: ArrayRef = Arc::new(datafusion::arrow::array::ListArray::from_iter_primitive::<
            datafusion::arrow::datatypes::Int32Type,
            _,
            _,
        >(vec![Some(vec![Some(1), None, Some(3)])]));
        assert_eq!(ColumnText::new(&list, "UTC").unwrap().value(0).unwrap(), "{1,NULL,3}");
        let naive: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![1_795_428_000_000_000]));
        assert_eq!(ColumnText::new(&naive, "UTC").unwrap().value(0).unwrap(), "2026-11-23 10:00:00");
    }
}
