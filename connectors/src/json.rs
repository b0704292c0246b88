//! `ENCODE JSON`: one JSON object per record (a Kafka or NATS message, a line of a file) decoded
//! straight into the declared Arrow columns by arrow-json's tape decoder.
//!
//! Fields are matched to columns by name; absent fields and JSON `null` are NULL; fields with no
//! column are ignored. Event times come as RFC 3339 strings (`"2026-01-01T00:00:00.250Z"`, or
//! without an offset: UTC) or as epoch milliseconds (a number, or a string of digits), the two
//! forms producers actually send. arrow-json would read a number into a timestamp column in the
//! column's own unit (microseconds), a silent factor of 1000, so timestamp columns are decoded as
//! text and converted here.
//!
//! Columns declared `json`/`jsonb` ([`JsonDecoder::with_json_columns`]) take the field's JSON
//! text as it is (a nested object, an array, a number, a quoted string); arrow-json cannot
//! decode an object into a text column, so those fields are left out of its schema and read
//! by serde_json's `RawValue` in a second pass over the chunk's records.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use serde_json::value::RawValue;
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::ReaderBuilder;

use crate::convert::conform;


/// Decodes JSON records into batches of a fixed schema.
#[derive(Debug, Clone)]
pub struct JsonDecoder {
    output: SchemaRef,
    /// `output` with timestamps as text (see [`timestamps_as_text`]).
    decode_schema: SchemaRef,
    timestamp_columns: Vec<usize>,
    /// Columns that hold raw JSON text: (index in `output`, field name).
    json_columns: Vec<(usize, String)>,
}

impl JsonDecoder {
    pub fn new(output: SchemaRef) -> Self {
        let fields: Vec<Field> =
            output.fields().iter().map(|f| Field::new(f.name(), timestamps_as_text(f.data_type()), true)).collect();
        let timestamp_columns: Vec<usize> = (0..fields.len())
            .filter(|&i| fields[i].data_type() != output.field(i).data_type())
            .collect();
        JsonDecoder { output, decode_schema: Arc::new(Schema::new(fields)), timestamp_columns, json_columns: Vec::new() }
    }

    /// Makes the named text columns hold JSON text (`json`/`jsonb` columns).
    pub fn with_json_columns(mut self, names: &[String]) -> Self {
        self.json_columns = self
            .output
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| names.contains(f.name()) && f.data_type() == &DataType::Utf8)
            .map(|(i, f)| (i, f.name().clone()))
            .collect();
        if !self.json_columns.is_empty() {
            let fields: Vec<_> = self
                .decode_schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.json_columns.iter().any(|(j, _)| j == i))
                .map(|(_, f)| f.clone())
                .collect();
            self.decode_schema = Arc::new(Schema::new(fields));
        }
        self
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
        if !self.json_columns.is_empty() {
            // Ascending indexes: each insert lands where the column belongs.
            for (i, array) in self.raw_json(records)? {
                columns.insert(i, array);
            }
        }
        for &i in &self.timestamp_columns {
            columns[i] = conform(&columns[i], self.output.field(i))?;
        }
        RecordBatch::try_new(self.output.clone(), columns).map_err(|e| e.to_string())
    }
}

impl JsonDecoder {
    /// The `json`/`jsonb` columns of every record, as the fields' JSON text (JSON `null` and
    /// absent fields are NULL).
    fn raw_json(&self, records: &[&[u8]]) -> Result<Vec<(usize, ArrayRef)>, String> {
        let mut builders: Vec<StringBuilder> = self.json_columns.iter().map(|_| StringBuilder::new()).collect();
        for record in records {
            let fields: HashMap<String, &RawValue> =
                serde_json::from_slice(record).map_err(|e| format!("not a JSON object: {e}"))?;
            for ((_, name), builder) in self.json_columns.iter().zip(&mut builders) {
                match fields.get(name.as_str()).map(|v| v.get()) {
                    Some(text) if text != "null" => builder.append_value(text),
                    _ => builder.append_null(),
                }
            }
        }
        Ok(self.json_columns.iter().zip(builders).map(|((i, _), mut b)| (*i, Arc::new(b.finish()) as ArrayRef)).collect())
    }
}

/// A column type with every timestamp in it (in a struct too) as text: arrow-json then hands
/// over the value as sent, and [`conform`] reads it (as Avro's and Protobuf's text times).
fn timestamps_as_text(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(..) => DataType::Utf8,
        DataType::Struct(fields) => DataType::Struct(
            fields.iter().map(|f| Field::new(f.name(), timestamps_as_text(f.data_type()), true)).collect(),
        ),
        other => other.clone(),
    }
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
    use datafusion::arrow::array::{Array, AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::TimeUnit;
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
    fn nested_objects_fill_struct_columns() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
        let geo = DataType::Struct(vec![Field::new("lat", DataType::Float64, true), Field::new("seen", ts, true)].into());
        let user = DataType::Struct(vec![Field::new("name", DataType::Utf8, true), Field::new("geo", geo, true)].into());
        let d = JsonDecoder::new(Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("user", user, true)])));
        let rows = d
            .decode(&[
                br#"{"id": 1, "user": {"name": "a", "geo": {"lat": 1.5, "seen": 1767225600250}, "extra": 1}}"#,
                br#"{"id": 2, "user": {"geo": {"seen": "2026-01-01T00:00:00.250Z"}}}"#,
                br#"{"id": 3, "user": null}"#,
                br#"{"id": 4}"#,
            ])
            .unwrap();
        let user = rows.column(1).as_struct();
        assert_eq!(user.column(0).as_string::<i32>().iter().collect::<Vec<_>>(), [Some("a"), None, None, None]);
        let geo = user.column(1).as_struct();
        let seen = geo.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!((seen.value(0), seen.value(1)), (1_767_225_600_250_000, 1_767_225_600_250_000));
        assert!(user.is_null(2) && user.is_null(3) && !user.is_null(1));
        assert!(d.decode(&[br#"{"id": 5, "user": {"geo": {"seen": "soon"}}}"#]).unwrap_err().contains("seen"));
        assert!(d.decode(&[br#"{"id": 6, "user": "not an object"}"#]).is_err());
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

    #[test]
    fn json_columns_keep_the_field_text() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("meta", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let d = JsonDecoder::new(schema).with_json_columns(&["meta".to_string()]);
        let rows = d
            .decode(&[
                br#"{"id": 1, "meta": {"a": [1, {"b": "c"}]}, "name": "x"}"#,
                br#"{"meta": "text", "id": 2}"#,
                br#"{"id": 3, "meta": null}"#,
                br#"{"id": 4, "meta": 4.5}"#,
            ])
            .unwrap();
        let meta: Vec<Option<&str>> = rows.column(1).as_string::<i32>().iter().collect();
        assert_eq!(meta, [Some(r#"{"a": [1, {"b": "c"}]}"#), Some(r#""text""#), None, Some("4.5")]);
        assert_eq!(rows.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().values().to_vec(), [1, 2, 3, 4]);
        assert_eq!(rows.column(2).as_string::<i32>().value(0), "x");
        assert!(d.decode(&[br#"{"id": 1, "meta": {"#]).is_err());
    }
}
