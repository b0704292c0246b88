//! `ENCODE AVRO`: Avro messages decoded straight to Arrow by arrow-avro, then matched to the
//! declared columns by name.
//!
//! Two ways to know the writer schema:
//! * `schema.registry = 'http://...'`: each message is in the Confluent wire format (a zero byte,
//!   the 4-byte schema id, the Avro body) and its schema is fetched from the registry by id
//!   ([`SchemaRegistry`]) the first time the id is seen. Messages under different ids (a schema
//!   that evolved) decode side by side; columns are matched by name, so a field added later is
//!   NULL in older messages.
//! * `schema = '<Avro schema JSON>'`: every message is a bare Avro body written with that schema.
//!
//! Decoding needs the schema of every id in hand; [`AvroDecoder::prepare`] fetches the missing
//! ones before a chunk is decoded (an id the registry does not know makes its messages bad
//! records, skipped and counted like any other).

use std::sync::Arc;

use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::convert::conform_by_name;
use crate::error::ConnectorError;
use crate::options::invalid;
use crate::registry::{CONFLUENT_MAGIC, RegisteredSchema, SchemaCache, SchemaSource, confluent_schema_id};

/// Where the writer schema comes from.
#[derive(Debug)]
enum WriterSchema {
    Registry(SchemaCache<AvroSchema>),
    /// Bare bodies, all written with this schema.
    Inline(AvroSchema),
}

/// The id an inline schema is filed under in arrow-avro's schema store (bare bodies get a
/// Confluent prefix with this id so that one decoding path serves both cases).
const INLINE_ID: u32 = 0;

#[derive(Debug)]
pub struct AvroDecoder {
    output: SchemaRef,
    writer: WriterSchema,
}

impl AvroDecoder {
    /// A decoder into `output`'s columns.
    pub fn new(output: SchemaRef, source: SchemaSource<'_>) -> Result<Self, ConnectorError> {
        let writer = match source {
            SchemaSource::Registry(r) => WriterSchema::Registry(SchemaCache::new(r)),
            SchemaSource::Inline(json) => {
                let schema = AvroSchema::new(json.to_string());
                arrow_schema_of(&schema).map_err(|e| invalid("schema", format!("not a usable Avro schema: {e}")))?;
                WriterSchema::Inline(schema)
            }
        };
        Ok(AvroDecoder { output, writer })
    }

    /// Fetches the schemas of the ids in `records` that are not known yet. Failures are not
    /// errors here: the messages of an id that cannot be had become bad records in `decode`.
    pub async fn prepare(&self, records: &[&[u8]]) {
        if let WriterSchema::Registry(cache) = &self.writer {
            cache.prepare(records, avro_schema).await;
        }
    }

    fn schema_of(&self, id: u32) -> Result<AvroSchema, String> {
        match &self.writer {
            WriterSchema::Inline(schema) => Ok(schema.clone()),
            WriterSchema::Registry(cache) => cache.get(id),
        }
    }

    fn id_of(&self, record: &[u8]) -> Result<u32, String> {
        match self.writer {
            WriterSchema::Inline(_) => Ok(INLINE_ID),
            WriterSchema::Registry(_) => confluent_schema_id(record),
        }
    }

    /// Decodes every record into one batch of the output columns, or fails with the first
    /// problem (the caller then decodes record by record to single out the bad ones).
    pub fn decode(&self, records: &[&[u8]]) -> Result<RecordBatch, String> {
        let mut pieces = Vec::new();
        let mut start = 0;
        // Runs of records under one schema id decode together.
        while start < records.len() {
            let id = self.id_of(records[start])?;
            let mut end = start + 1;
            while end < records.len() && self.id_of(records[end]).is_ok_and(|i| i == id) {
                end += 1;
            }
            pieces.push(self.decode_run(id, &records[start..end])?);
            start = end;
        }
        match pieces.len() {
            0 => Ok(RecordBatch::new_empty(self.output.clone())),
            1 => Ok(pieces.remove(0)),
            _ => concat_batches(&self.output, &pieces).map_err(|e| e.to_string()),
        }
    }

    fn decode_run(&self, id: u32, records: &[&[u8]]) -> Result<RecordBatch, String> {
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        store.set(Fingerprint::Id(id), self.schema_of(id)?).map_err(|e| e.to_string())?;
        let mut decoder = ReaderBuilder::new()
            .with_writer_schema_store(store)
            .with_batch_size(records.len())
            .build_decoder()
            .map_err(|e| format!("Avro schema {id}: {e}"))?;
        let mut framed = Vec::new();
        for record in records {
            let message: &[u8] = match self.writer {
                WriterSchema::Registry(_) => record,
                WriterSchema::Inline(_) => {
                    framed.clear();
                    framed.push(CONFLUENT_MAGIC);
                    framed.extend_from_slice(&INLINE_ID.to_be_bytes());
                    framed.extend_from_slice(record);
                    &framed
                }
            };
            let used = decoder.decode(message).map_err(|e| format!("bad Avro message: {e}"))?;
            if used != message.len() {
                return Err(format!("bad Avro message: {} of its {} bytes make a record", used, message.len()));
            }
        }
        let batch = decoder.flush().map_err(|e| format!("bad Avro message: {e}"))?;
        let batch = batch.unwrap_or_else(|| RecordBatch::new_empty(decoder.schema()));
        if batch.num_rows() != records.len() {
            return Err(format!("bad Avro message: {} records gave {} rows", records.len(), batch.num_rows()));
        }
        conform_by_name(&batch, &self.output)
    }
}

/// The Avro schema of a registry entry.
fn avro_schema(schema: &RegisteredSchema) -> Result<AvroSchema, String> {
    if !schema.schema_type.eq_ignore_ascii_case("avro") {
        return Err(format!("schema {} is a {} schema, not Avro", schema.id, schema.schema_type));
    }
    let avro = AvroSchema::new(schema.schema.clone());
    arrow_schema_of(&avro).map_err(|e| format!("schema {} is not a usable Avro schema: {e}", schema.id))?;
    Ok(avro)
}

/// The Arrow columns arrow-avro decodes a writer schema into.
fn arrow_schema_of(schema: &AvroSchema) -> Result<SchemaRef, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(Fingerprint::Id(INLINE_ID), schema.clone()).map_err(|e| e.to_string())?;
    let decoder = ReaderBuilder::new().with_writer_schema_store(store).build_decoder().map_err(|e| e.to_string())?;
    Ok(decoder.schema())
}

/// The columns of a source declared without any, from the writer schema: Avro's types as
/// Weir's (timestamps in microseconds, text as `Utf8`, records as structs). Arrays and maps
/// have no column type yet and are left out.
pub fn declared_columns(schema_json: &str) -> Result<SchemaRef, String> {
    let arrow = arrow_schema_of(&AvroSchema::new(schema_json.to_string()))?;
    let fields = arrow
        .fields()
        .iter()
        .filter_map(|f| Some(Field::new(f.name(), column_type(f.data_type())?, true)))
        .collect::<Vec<_>>();
    Ok(Arc::new(Schema::new(fields)))
}

/// The column type for a type arrow-avro decodes to, `None` for one a column cannot hold.
fn column_type(decoded: &DataType) -> Option<DataType> {
    Some(match decoded {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary | DataType::FixedSizeBinary(_) => DataType::Binary,
        // Enums.
        DataType::Dictionary(_, values) if matches!(values.as_ref(), DataType::Utf8) => DataType::Utf8,
        DataType::Struct(fields) => {
            let fields: Vec<Field> =
                fields.iter().filter_map(|f| Some(Field::new(f.name(), column_type(f.data_type())?, true))).collect();
            if fields.is_empty() {
                return None;
            }
            DataType::Struct(fields.into())
        }
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::FixedSizeList(..)
        | DataType::Map(..)
        | DataType::Union(..)
        | DataType::Dictionary(..) => return None,
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow_avro::schema::{FingerprintStrategy, SCHEMA_METADATA_KEY};
    use arrow_avro::writer::WriterBuilder;
    use arrow_avro::writer::format::AvroSoeFormat;
    use datafusion::arrow::array::{
        Array, AsArray, Float64Array, Int64Array, ListBuilder, StringArray, StringBuilder, StructArray,
        TimestampMillisecondArray,
    };
    use datafusion::arrow::datatypes::{Fields, Float32Type, TimestampMicrosecondType};

    use super::*;

    const CHAT_V1: &str = r#"{"type":"record","name":"Chat","fields":[
        {"name":"stream_id","type":"string"},
        {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

    /// Messages in the Confluent wire format, written by arrow-avro's own writer.
    fn confluent(schema_json: &str, id: u32, streams: &[&str], millis: &[i64]) -> Vec<Vec<u8>> {
        let metadata = HashMap::from([(SCHEMA_METADATA_KEY.to_string(), schema_json.to_string())]);
        let fields = vec![
            Field::new("stream_id", DataType::Utf8, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())), false),
        ];
        let arrow = Schema::new_with_metadata(fields, metadata);
        let ts = TimestampMillisecondArray::from(millis.to_vec()).with_timezone("+00:00");
        let batch = RecordBatch::try_new(Arc::new(arrow.clone()), vec![Arc::new(StringArray::from(streams.to_vec())), Arc::new(ts)]).unwrap();
        (0..batch.num_rows())
            .map(|i| {
                let mut w = WriterBuilder::new(arrow.clone())
                    .with_fingerprint_strategy(FingerprintStrategy::Id(id))
                    .build::<_, AvroSoeFormat>(Vec::new())
                    .unwrap();
                w.write(&batch.slice(i, 1)).unwrap();
                w.finish().unwrap();
                w.into_inner()
            })
            .collect()
    }

    fn output() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("stream_id", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("missing", DataType::Int64, true),
        ]))
    }

    #[test]
    fn inline_schema_bodies_decode_by_column_name() {
        let framed = confluent(CHAT_V1, 0, &["a", "b"], &[1_000, 2_500]);
        // Bare bodies: the 5-byte prefix cut off.
        let bodies: Vec<&[u8]> = framed.iter().map(|m| &m[5..]).collect();
        let decoder = AvroDecoder::new(output(), SchemaSource::Inline(CHAT_V1)).unwrap();
        let batch = decoder.decode(&bodies).unwrap();
        assert_eq!(batch.column(0).as_string::<i32>().iter().collect::<Vec<_>>(), [Some("a"), Some("b")]);
        assert_eq!(batch.column(1).as_primitive::<TimestampMicrosecondType>().values().to_vec(), [1_000_000, 2_500_000]);
        assert_eq!(batch.column(2).null_count(), 2);
        // A truncated body and trailing bytes are both errors.
        assert!(decoder.decode(&[&bodies[0][..bodies[0].len() - 1]]).is_err());
        let mut longer = bodies[1].to_vec();
        longer.extend_from_slice(b"xx");
        assert!(decoder.decode(&[&longer]).is_err());
    }

    #[test]
    fn declared_columns_come_from_the_schema() {
        let schema = declared_columns(CHAT_V1).unwrap();
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert!(matches!(schema.field(1).data_type(), DataType::Timestamp(TimeUnit::Microsecond, _)));
        assert!(AvroDecoder::new(output(), SchemaSource::Inline("{not avro")).is_err());
        let no_schema = SchemaSource::from_options(&Default::default(), "AVRO", "<Avro schema JSON>").unwrap_err();
        assert!(no_schema.to_string().contains("schema.registry"));
    }

    #[test]
    fn records_fill_struct_columns_by_field_name() {
        const NESTED: &str = r#"{"type":"record","name":"Chat","fields":[
            {"name":"id","type":"long"},
            {"name":"user","type":{"type":"record","name":"User","fields":[
                {"name":"name","type":"string"},
                {"name":"geo","type":{"type":"record","name":"Geo","fields":[{"name":"lat","type":"double"}]}},
                {"name":"tags","type":{"type":"array","items":"string"}}]}}]}"#;
        let geo = Fields::from(vec![Field::new("lat", DataType::Float64, false)]);
        let tags = DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)));
        let user = Fields::from(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("geo", DataType::Struct(geo.clone()), false),
            Field::new("tags", tags, false),
        ]);
        let metadata = HashMap::from([(SCHEMA_METADATA_KEY.to_string(), NESTED.to_string())]);
        let arrow = Schema::new_with_metadata(
            vec![Field::new("id", DataType::Int64, false), Field::new("user", DataType::Struct(user.clone()), false)],
            metadata,
        );
        let mut list = ListBuilder::new(StringBuilder::new()).with_field(Field::new("item", DataType::Utf8, false));
        list.values().append_value("x");
        list.append(true);
        let geo_array = StructArray::new(geo, vec![Arc::new(Float64Array::from(vec![1.5]))], None);
        let user_array = StructArray::new(
            user,
            vec![Arc::new(StringArray::from(vec!["ann"])), Arc::new(geo_array), Arc::new(list.finish())],
            None,
        );
        let batch = RecordBatch::try_new(Arc::new(arrow.clone()), vec![Arc::new(Int64Array::from(vec![7])), Arc::new(user_array)]).unwrap();
        let mut w = WriterBuilder::new(arrow).with_fingerprint_strategy(FingerprintStrategy::Id(0)).build::<_, AvroSoeFormat>(Vec::new()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        let framed = w.into_inner();

        // Without declared columns: the array field is left out, the records are structs.
        let columns = declared_columns(NESTED).unwrap();
        let DataType::Struct(user_type) = columns.field(1).data_type() else { panic!("{columns:?}") };
        let names: Vec<&str> = user_type.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["name", "geo"]);

        // Declared: a subset in another order, with a field the writer lacks (NULL) and a cast.
        let declared_geo = DataType::Struct(vec![Field::new("alt", DataType::Int64, true), Field::new("lat", DataType::Float32, true)].into());
        let declared_user = DataType::Struct(vec![Field::new("geo", declared_geo, true), Field::new("name", DataType::Utf8, true)].into());
        let output = Arc::new(Schema::new(vec![Field::new("user", declared_user, true)]));
        let decoded = AvroDecoder::new(output, SchemaSource::Inline(NESTED)).unwrap().decode(&[&framed[5..]]).unwrap();
        let user = decoded.column(0).as_struct();
        assert_eq!(user.column(1).as_string::<i32>().value(0), "ann");
        let geo = user.column(0).as_struct();
        assert!(geo.column(0).is_null(0));
        assert_eq!(geo.column(1).as_primitive::<Float32Type>().value(0), 1.5);

        // A record into a scalar column does not fit.
        let wrong = Arc::new(Schema::new(vec![Field::new("user", DataType::Utf8, true)]));
        assert!(AvroDecoder::new(wrong, SchemaSource::Inline(NESTED)).unwrap().decode(&[&framed[5..]]).is_err());
    }

    #[test]
    fn numbers_into_timestamp_columns_are_epoch_milliseconds() {
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1_500]))]).unwrap();
        let out = Arc::new(Schema::new(vec![Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true)]));
        let conformed = conform_by_name(&batch, &out).unwrap();
        assert_eq!(conformed.column(0).as_primitive::<TimestampMicrosecondType>().value(0), 1_500_000);
    }
}
