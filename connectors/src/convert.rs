//! Fitting generated arrays to the declared column types.
//!
//! Generators build a few native array types (Int64, Float64, Utf8, Boolean, microsecond
//! timestamps) and convert them to whatever the user declared (`smallint`, `real`,
//! `numeric(10,2)`, `timestamptz`, `date`, ...) here, once per batch and column. Decoded
//! messages are fitted to the declared columns by name here too ([`conform_by_name`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StructArray, TimestampMicrosecondArray, new_null_array,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::arrow::error::ArrowError;

use crate::json::parse_event_time;

/// `array` as the declared type (a cast when the types differ; values out of the declared
/// type's range become NULL).
pub fn to_declared(array: ArrayRef, declared: &DataType) -> Result<ArrayRef, ArrowError> {
    if array.data_type() == declared { Ok(array) } else { cast(&array, declared) }
}

/// UTC instants in microseconds as the declared timestamp or date type. A microsecond timestamp
/// takes the values as they are, whatever its time zone; other units and dates are cast from
/// UTC (a cast from a timestamp without time zone would take them for local times).
pub fn timestamps_to_declared(micros: Vec<i64>, declared: &DataType) -> Result<ArrayRef, ArrowError> {
    let values = ScalarBuffer::from(micros);
    match declared {
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            Ok(Arc::new(TimestampMicrosecondArray::new(values, None).with_timezone_opt(tz.clone())))
        }
        _ => cast(&TimestampMicrosecondArray::new(values, None).with_timezone("+00:00"), declared),
    }
}

/// Whether a declared type is a timestamp or date that [`timestamps_to_declared`] can fill.
pub fn is_time(declared: &DataType) -> bool {
    matches!(declared, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64)
}

/// Whether a declared type is a string type.
pub fn is_text(declared: &DataType) -> bool {
    matches!(declared, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Whether a declared type can hold integers (integers, floats, decimals).
pub fn is_numeric(declared: &DataType) -> bool {
    declared.is_integer() || declared.is_floating() || is_decimal(declared)
}

pub fn is_decimal(declared: &DataType) -> bool {
    matches!(
        declared,
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) | DataType::Decimal256(..)
    )
}

/// The integers a declared integer or decimal type can hold, within `i64`; `None` for other
/// types.
pub fn integer_range(declared: &DataType) -> Option<(i64, i64)> {
    Some(match declared {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Int64 => (i64::MIN, i64::MAX),
        DataType::UInt8 => (0, u8::MAX.into()),
        DataType::UInt16 => (0, u16::MAX.into()),
        DataType::UInt32 => (0, u32::MAX.into()),
        DataType::UInt64 => (0, i64::MAX),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            let digits = i32::from(*p) - i32::from(*s);
            let max = if digits >= 19 { i64::MAX } else { 10i64.pow(digits.max(0) as u32) - 1 };
            (-max, max)
        }
        _ => return None,
    })
}

/// Decoded columns (Avro, Protobuf) as the declared ones: matched by name (a declared column the
/// writer schema lacks is NULL), cast to the declared type. A value that does not fit fails.
pub fn conform_by_name(decoded: &RecordBatch, output: &SchemaRef) -> Result<RecordBatch, String> {
    let rows = decoded.num_rows();
    let columns = output
        .fields()
        .iter()
        .map(|field| match decoded.column_by_name(field.name()) {
            Some(column) => conform(column, field),
            None => Ok(new_null_array(field.data_type(), rows)),
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    RecordBatch::try_new(output.clone(), columns).map_err(|e| e.to_string())
}

/// One decoded column as the declared `field`. Structs are matched field by field, by name, at
/// any depth.
pub fn conform(column: &ArrayRef, field: &Field) -> Result<ArrayRef, String> {
    if column.data_type() == field.data_type() {
        return Ok(column.clone());
    }
    let strict = CastOptions { safe: false, ..CastOptions::default() };
    let fits = |e: &dyn std::fmt::Display| format!("field \"{}\" does not fit column type {}: {e}", field.name(), field.data_type());
    match (column.data_type(), field.data_type()) {
        (DataType::Struct(_), DataType::Struct(declared)) => {
            let decoded = column.as_struct();
            let children = declared
                .iter()
                .map(|f| match decoded.column_by_name(f.name()) {
                    Some(child) => conform(child, f),
                    None => Ok(new_null_array(f.data_type(), decoded.len())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let array = StructArray::try_new(declared.clone(), children, decoded.nulls().cloned()).map_err(|e| fits(&e))?;
            Ok(Arc::new(array))
        }
        (_, DataType::Struct(_)) => Err(fits(&format!("a {} is not a record", column.data_type()))),
        // An event time sent as a plain number is epoch milliseconds (as in JSON), not the
        // column's own unit.
        (DataType::Int64 | DataType::Int32, DataType::Timestamp(..)) => {
            let millis = cast_with_options(column, &DataType::Int64, &strict).map_err(|e| fits(&e))?;
            let micros: TimestampMicrosecondArray = millis
                .as_primitive::<Int64Type>()
                .iter()
                .map(|m| m.map(|m| m.checked_mul(1000).ok_or("timestamp out of range")).transpose())
                .collect::<Result<_, _>>()
                .map_err(|e| fits(&e))?;
            utc_micros_as(micros, field.data_type()).map_err(|e| fits(&e))
        }
        (DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8, DataType::Timestamp(..)) => {
            let text = cast_with_options(column, &DataType::Utf8, &strict).map_err(|e| fits(&e))?;
            let micros: TimestampMicrosecondArray = text
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(|v| parse_event_time(v, field.name())).transpose())
                .collect::<Result<_, _>>()?;
            utc_micros_as(micros, field.data_type()).map_err(|e| fits(&e))
        }
        _ => cast_with_options(column, field.data_type(), &strict).map_err(|e| fits(&e)),
    }
}

/// UTC instants in microseconds as the declared timestamp type: the declared time zone is
/// attached as it is (the instants do not move), other units are cast.
fn utc_micros_as(micros: TimestampMicrosecondArray, declared: &DataType) -> Result<ArrayRef, ArrowError> {
    let tz = match declared {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let array: ArrayRef = Arc::new(micros.with_timezone_opt(tz));
    to_declared(array, declared)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{Date32Type, TimestampMicrosecondType, TimestampMillisecondType};

    use super::*;

    #[test]
    fn timestamps_keep_their_instant_in_every_declared_type() {
        let day = 86_400_000_000i64;
        let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
        let a = timestamps_to_declared(vec![day], &tz).unwrap();
        assert_eq!(a.data_type(), &tz);
        assert_eq!(a.as_primitive::<TimestampMicrosecondType>().value(0), day);
        let ms = DataType::Timestamp(TimeUnit::Millisecond, Some("+02:00".into()));
        let a = timestamps_to_declared(vec![day], &ms).unwrap();
        assert_eq!(a.as_primitive::<TimestampMillisecondType>().value(0), day / 1000);
        let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
        let a = timestamps_to_declared(vec![day], &ms).unwrap();
        assert_eq!(a.as_primitive::<TimestampMillisecondType>().value(0), day / 1000);
        let a = timestamps_to_declared(vec![day + 1], &DataType::Date32).unwrap();
        assert_eq!(a.as_primitive::<Date32Type>().value(0), 1);
    }

    #[test]
    fn casts_follow_the_declared_type() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, 40_000]));
        let b = to_declared(a.clone(), &DataType::Int16).unwrap();
        assert_eq!((b.data_type(), b.null_count()), (&DataType::Int16, 1));
        assert!(Arc::ptr_eq(&a, &to_declared(a.clone(), &DataType::Int64).unwrap()));
        assert_eq!(integer_range(&DataType::Decimal128(5, 2)), Some((-999, 999)));
        assert_eq!(integer_range(&DataType::Decimal128(38, 10)), Some((-i64::MAX, i64::MAX)));
    }
}
