//! `ENCODE JSON`: one JSON object per record (a Kafka or NATS message, a line of a file) decoded
//! straight into the declared Arrow columns by arrow-json's tape decoder.
//!
//! Fields are matched to columns by name; absent fields and JSON `null` are NULL; fields with no
//! column are ignored. Event times come as RFC 3339 strings (`"2026-01-01T00:00:00.250Z"`, or
//! without an offset: UTC) or as epoch milliseconds (a number, or a string of digits), the two
//! forms producers actually send. arrow-json would read a number into a timestamp column in the
//! column's own unit (microseconds), a silent factor of 1000, so timestamp columns are decoded as
//! text and converted here.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;


/// Decodes JSON records into batches of a fixed schema.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    output: SchemaRef,
    /// `output` with timestamp columns as text.
    decode_schema: SchemaRef,
    timestamp_columns: Vec<usize>,
}

impl JsonDecoder {
    pub fn new(output: SchemaRef) -> Self {
        let timestamp_columns: Vec<usize> = output
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f.data_type(), DataType::Timestamp(..)))
            .map(|(i, _)| i)
            .collect();
        let fields: Vec<Field> = output
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if timestamp_columns.contains(&i) {
                    Field::new(f.name(), DataType::Utf8, true)
                } else {
                    f.as_ref().clone().with_nullable(true)
                }
            })
            .collect();
        JsonDecoder { output, decode_schema: Arc::new(Schema::new(fields)), timestamp_columns }
    }

    /// Decodes every record into one batch, or fails with the first problem found (the caller
    /// then decodes record by record to find the bad ones).
    pub fn decode(&self, records: &[&[u8]]) -> Result<RecordBatch, String> {
        let mut decoder = ReaderBuilder::new(self.decode_schema.clone())
            .with_batch_size(records.len().max(1))
            // Timestamp columns are text here: numbers (epoch millis) must reach them as text.
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        for record in records {
            let trimmed = record.trim_ascii();
            if !trimmed.starts_with(b"{") {
                return Err("a JSON record must be one object".into());
            }
            let used = decoder.decode(trimmed).map_err(|e| e.to_string())?;
            if used != trimmed.len() {
                return Err("a JSON record must be one object".into());
            }
        }
        let decoded = match decoder.flush().map_err(|e| e.to_string())? {
            Some(batch) => batch,
            None => return Ok(RecordBatch::new_empty(self.output.clone())),
        };
        if decoded.num_rows() != records.len() {
            return Err("a JSON record must be one object".into());
        }
        let mut columns = decoded.columns().to_vec();
        for &i in &self.timestamp_columns {
            columns[i] = event_times(columns[i].as_ref(), self.output.field(i))?;
        }
        RecordBatch::try_new(self.output.clone(), columns).map_err(|e| e.to_string())
    }
}

/// Text timestamps (RFC 3339, or epoch milliseconds) as the column's timestamp type.
fn event_times(text: &dyn Array, field: &Field) -> Result<ArrayRef, String> {
    let text = text.as_string::<i32>();
    let mut micros = Vec::with_capacity(text.len());
    for value in text.iter() {
        micros.push(value.map(|v| parse_event_time(v, field.name())).transpose()?);
    }
    let tz = match field.data_type() {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let array: ArrayRef = Arc::new(TimestampMicrosecondArray::from(micros).with_timezone_opt(tz));
    if matches!(field.data_type(), DataType::Timestamp(TimeUnit::Microsecond, _)) {
        return Ok(array);
    }
    cast(&array, field.data_type()).map_err(|e| e.to_string())
}

/// One event time in microseconds: epoch milliseconds (integer or decimal) or an RFC 3339 /
/// ISO 8601 timestamp.
pub fn parse_event_time(value: &str, column: &str) -> Result<i64, String> {
    let v = value.trim();
    let out_of_range = || format!("timestamp {v} for column \"{column}\" is out of range");
    if let Ok(millis) = v.parse::<i64>() {
        return millis.checked_mul(1000).ok_or_else(out_of_range);
    }
    if v.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && !v.contains([':', 'T', ' '])
        && let Ok(millis) = v.parse::<f64>()
    {
        let micros = (millis * 1000.0).round();
        if !micros.is_finite() || micros.abs() >= i64::MAX as f64 {
            return Err(out_of_range());
        }
        return Ok(micros as i64);
    }
    string_to_timestamp_nanos(v)
        .map(|nanos| nanos.div_euclid(1000))
        .map_err(|_| format!("invalid timestamp \"{v}\" for column \"{column}\": expected RFC 3339 or epoch milliseconds"))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::TimestampMicrosecondType;

    use super::*;

    fn decoder() -> JsonDecoder {
        JsonDecoder::new(Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), true),
        ])))
    }

    #[test]
    fn timestamps_are_rfc3339_or_epoch_millis() {
        let rows = decoder()
            .decode(&[
                br#"{"id": 1, "name": "a", "ts": "2026-01-01T00:00:00.250Z"}"#,
                br#"{"id": 2, "ts": 1767225600250, "extra": [1, 2]}"#,
                br#"{"id": 3, "name": "c", "ts": "1767225600250"}"#,
                br#"{"name": "d", "ts": "2026-01-01 01:00:00+01:00"}"#,
                br#"{"id": 5, "ts": null}"#,
            ])
            .unwrap();
        let ts = rows.column(2).as_primitive::<TimestampMicrosecondType>();
        let expected = 1_767_225_600_250_000;
        assert_eq!(ts.value(0), expected);
        assert_eq!(ts.value(1), expected);
        assert_eq!(ts.value(2), expected);
        assert_eq!(ts.value(3), expected - 250_000);
        assert!(ts.is_null(4));
        let ids = rows.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.iter().collect::<Vec<_>>(), [Some(1), Some(2), Some(3), None, Some(5)]);
        let names = rows.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(names.iter().collect::<Vec<_>>(), [Some("a"), None, Some("c"), Some("d"), None]);
    }

    #[test]
    fn bad_records_fail_the_batch_with_a_reason() {
        let d = decoder();
        for (record, needle) in [
            (&br#"{"id": "x"}"#[..], "id"),
            (br#"{"id": 1, "ts": "yesterday"}"#, "ts"),
            (br#"[1, 2]"#, "one object"),
            (br#"{"id": 1"#, ""),
            (br#"{"id": 1} {"id": 2}"#, "one object"),
        ] {
            let err = d.decode(&[br#"{"id": 0}"#, record]).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
