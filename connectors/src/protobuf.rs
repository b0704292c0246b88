//! `ENCODE PROTOBUF`: Protobuf messages decoded with prost-reflect (dynamic messages from a
//! descriptor that protox compiles from `.proto` text), their fields matched to the declared
//! columns by name (a nested message to a `STRUCT` column, field by field).
//!
//! * `schema.registry = 'http://...'`: the Confluent wire format (a zero byte, the 4-byte schema
//!   id, the message indexes, the body). The schema is the registry's `.proto` text; the
//!   indexes pick the message type in it (`[0]`, written as one zero byte, is the first).
//! * `schema = '<.proto text>'` (and `message = 'package.Name'`, default the file's first
//!   message): bare bodies.
//!
//! Field values: proto3 scalars without presence read as their default (as Protobuf defines
//! them); fields with presence (`optional`, proto2) that are unset are NULL; enums are their
//! value's name; `google.protobuf.Timestamp` is a timestamp; an integer into a `TIMESTAMP`
//! column is epoch milliseconds; an unset message field is a NULL struct. Repeated and map
//! fields are not read (declaring a column for one is an error at `CREATE`).

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StructArray, new_null_array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::convert::conform;
use crate::error::ConnectorError;
use crate::options::invalid;
use crate::registry::{RegisteredSchema, SchemaCache, SchemaSource, confluent_schema_id};

/// The name the schema text is compiled under.
const SCHEMA_FILE: &str = "weir_schema.proto";

/// A compiled `.proto` file: its message types by Confluent message index.
#[derive(Debug, Clone)]
pub struct ProtoSchema {
    pool: DescriptorPool,
}

impl ProtoSchema {
    pub fn compile(text: &str) -> Result<Self, String> {
        struct Source(String);
        impl FileResolver for Source {
            fn open_file(&self, name: &str) -> Result<File, protox::Error> {
                if name == SCHEMA_FILE { File::from_source(name, &self.0) } else { Err(protox::Error::file_not_found(name)) }
            }
        }
        let mut resolver = ChainFileResolver::new();
        resolver.add(Source(text.to_string()));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.open_file(SCHEMA_FILE).map_err(|e| format!("not a usable .proto schema: {e}"))?;
        Ok(ProtoSchema { pool: compiler.descriptor_pool() })
    }

    fn file_messages(&self) -> Vec<MessageDescriptor> {
        self.pool.get_file_by_name(SCHEMA_FILE).map(|f| f.messages().collect()).unwrap_or_default()
    }

    /// The message type a Confluent index path names (`[i]`: the i-th top-level message,
    /// `[i, j]`: its j-th nested message, ...).
    fn by_indexes(&self, indexes: &[usize]) -> Result<MessageDescriptor, String> {
        let mut candidates = self.file_messages();
        let mut found = None;
        for &i in indexes {
            let message = candidates.get(i).cloned().ok_or_else(|| format!("the schema has no message at index path {indexes:?}"))?;
            candidates = message.child_messages().collect();
            found = Some(message);
        }
        found.ok_or_else(|| "empty message index path".to_string())
    }

    /// The message type named `name` (a full name), or the first one.
    fn by_name(&self, name: Option<&str>) -> Result<MessageDescriptor, String> {
        match name {
            Some(n) => self.pool.get_message_by_name(n.trim_start_matches('.')).ok_or_else(|| format!("the schema has no message {n}")),
            None => self.file_messages().into_iter().next().ok_or_else(|| "the schema declares no message".to_string()),
        }
    }
}

#[derive(Debug)]
enum WriterSchema {
    Registry(SchemaCache<ProtoSchema>),
    Inline(MessageDescriptor),
}

#[derive(Debug)]
pub struct ProtobufDecoder {
    output: SchemaRef,
    writer: WriterSchema,
}

impl ProtobufDecoder {
    /// A decoder into `output`'s columns; `message` names the message type of an inline schema.
    pub fn new(output: SchemaRef, source: SchemaSource<'_>, message: Option<&str>) -> Result<Self, ConnectorError> {
        let writer = match source {
            SchemaSource::Registry(r) => WriterSchema::Registry(SchemaCache::new(r)),
            SchemaSource::Inline(text) => {
                let schema = ProtoSchema::compile(text).map_err(|e| invalid("schema", e))?;
                let descriptor = schema.by_name(message).map_err(|e| invalid("message", e))?;
                check_columns(&descriptor, output.fields()).map_err(|e| invalid("schema", e))?;
                WriterSchema::Inline(descriptor)
            }
        };
        Ok(ProtobufDecoder { output, writer })
    }

    pub async fn prepare(&self, records: &[&[u8]]) {
        if let WriterSchema::Registry(cache) = &self.writer {
            cache.prepare(records, proto_schema).await;
        }
    }

    /// The message type and body of one record.
    fn split<'a>(&self, record: &'a [u8]) -> Result<(MessageDescriptor, &'a [u8]), String> {
        match &self.writer {
            WriterSchema::Inline(descriptor) => Ok((descriptor.clone(), record)),
            WriterSchema::Registry(cache) => {
                let id = confluent_schema_id(record)?;
                let schema = cache.get(id)?;
                let (indexes, body) = message_indexes(&record[5..])?;
                let descriptor = schema.by_indexes(&indexes)?;
                Ok((descriptor, body))
            }
        }
    }

    pub fn decode(&self, records: &[&[u8]]) -> Result<RecordBatch, String> {
        let mut pieces = Vec::new();
        let mut run: Vec<DynamicMessage> = Vec::new();
        for record in records {
            let (descriptor, body) = self.split(record)?;
            let message = DynamicMessage::decode(descriptor, body).map_err(|e| format!("bad Protobuf message: {e}"))?;
            // Runs of one message type decode into one batch.
            if run.last().is_some_and(|m| m.descriptor() != message.descriptor()) {
                pieces.push(self.to_batch(&run)?);
                run.clear();
            }
            run.push(message);
        }
        if !run.is_empty() {
            pieces.push(self.to_batch(&run)?);
        }
        match pieces.len() {
            0 => Ok(RecordBatch::new_empty(self.output.clone())),
            1 => Ok(pieces.remove(0)),
            _ => concat_batches(&self.output, &pieces).map_err(|e| e.to_string()),
        }
    }

    /// Messages of one type as the declared columns.
    fn to_batch(&self, messages: &[DynamicMessage]) -> Result<RecordBatch, String> {
        let descriptor = messages[0].descriptor();
        let messages: Vec<Option<&DynamicMessage>> = messages.iter().map(Some).collect();
        let columns = self
            .output
            .fields()
            .iter()
            .map(|out| match descriptor.get_field_by_name(out.name()) {
                Some(field) => field_array(&messages, &field, out),
                None => Ok(new_null_array(out.data_type(), messages.len())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.output.clone(), columns).map_err(|e| e.to_string())
    }
}

/// One field of `messages` as the declared column (or struct field) `declared`. `None` stands
/// for an unset parent message: its fields are NULL too.
fn field_array(messages: &[Option<&DynamicMessage>], field: &FieldDescriptor, declared: &Field) -> Result<ArrayRef, String> {
    if let Kind::Message(nested) = field.kind()
        && !is_timestamp(&nested)
        && !field.is_list()
        && !field.is_map()
    {
        let DataType::Struct(children) = declared.data_type() else {
            return Err(format!("field \"{}\" is a message, which only a STRUCT column can hold", field.name()));
        };
        let values: Vec<Option<&DynamicMessage>> = messages
            .iter()
            .map(|m| match m.filter(|m| m.has_field(field)).map(|m| m.get_field(field)) {
                Some(Cow::Borrowed(Value::Message(value))) => Some(value),
                _ => None,
            })
            .collect();
        let arrays = children
            .iter()
            .map(|child| match nested.get_field_by_name(child.name()) {
                Some(f) => field_array(&values, &f, child),
                None => Ok(new_null_array(child.data_type(), values.len())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let present: NullBuffer = values.iter().map(Option::is_some).collect::<Vec<_>>().into();
        return Ok(Arc::new(StructArray::try_new(children.clone(), arrays, Some(present)).map_err(|e| e.to_string())?));
    }
    let Some(data_type) = natural_type(field) else {
        return Err(format!("field \"{}\" is a repeated or map field, which a column cannot hold", field.name()));
    };
    let unset = ScalarValue::try_from(&data_type).map_err(|e| e.to_string())?;
    let values: Vec<ScalarValue> =
        messages.iter().map(|m| m.map_or_else(|| unset.clone(), |m| scalar(m, field))).collect();
    let array = if values.is_empty() {
        datafusion::arrow::array::new_empty_array(&data_type)
    } else {
        ScalarValue::iter_to_array(values).map_err(|e| e.to_string())?
    };
    conform(&array, declared)
}

fn proto_schema(schema: &RegisteredSchema) -> Result<ProtoSchema, String> {
    if !schema.schema_type.eq_ignore_ascii_case("protobuf") {
        return Err(format!("schema {} is a {} schema, not Protobuf", schema.id, schema.schema_type));
    }
    ProtoSchema::compile(&schema.schema).map_err(|e| format!("schema {}: {e}", schema.id))
}

/// Confluent's message indexes: a zigzag varint count, then that many zigzag varints; a count
/// of 0 means `[0]` (the first message). Returns them and the body after them.
fn message_indexes(bytes: &[u8]) -> Result<(Vec<usize>, &[u8]), String> {
    fn varint(bytes: &[u8], at: &mut usize) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(*at).ok_or("message indexes cut off")?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err("message index varint too long".into())
    }
    let mut at = 0;
    let count = varint(bytes, &mut at)?;
    if count == 0 {
        return Ok((vec![0], &bytes[at..]));
    }
    if !(1..=100).contains(&count) {
        return Err(format!("bad message index count {count}"));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = varint(bytes, &mut at)?;
        indexes.push(usize::try_from(i).map_err(|_| format!("bad message index {i}"))?);
    }
    Ok((indexes, &bytes[at..]))
}

fn is_timestamp(message: &MessageDescriptor) -> bool {
    message.full_name() == "google.protobuf.Timestamp"
}

/// The Arrow type a field's values are read as, `None` for fields a column cannot hold.
fn natural_type(field: &FieldDescriptor) -> Option<DataType> {
    if field.is_list() || field.is_map() {
        return None;
    }
    Some(match field.kind() {
        Kind::Double => DataType::Float64,
        Kind::Float => DataType::Float32,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => DataType::Int64,
        Kind::Uint32 | Kind::Fixed32 => DataType::UInt32,
        Kind::Uint64 | Kind::Fixed64 => DataType::UInt64,
        Kind::Bool => DataType::Boolean,
        Kind::String | Kind::Enum(_) => DataType::Utf8,
        Kind::Bytes => DataType::Binary,
        Kind::Message(m) if is_timestamp(&m) => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        Kind::Message(_) => return None,
    })
}

/// One field's value in one message.
fn scalar(message: &DynamicMessage, field: &FieldDescriptor) -> ScalarValue {
    let unset = field.supports_presence() && !message.has_field(field);
    let value = message.get_field(field);
    match (field.kind(), value.as_ref()) {
        (Kind::Message(_), Value::Message(ts)) => {
            let seconds = ts.get_field_by_name("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
            let nanos = ts.get_field_by_name("nanos").and_then(|v| v.as_i32()).unwrap_or(0);
            let micros = (!unset).then(|| seconds.saturating_mul(1_000_000).saturating_add(i64::from(nanos) / 1000));
            ScalarValue::TimestampMicrosecond(micros, Some("+00:00".into()))
        }
        (Kind::Enum(e), Value::EnumNumber(n)) => ScalarValue::Utf8((!unset).then(|| {
            e.get_value(*n).map(|v| v.name().to_string()).unwrap_or_else(|| n.to_string())
        })),
        (_, Value::Bool(v)) => ScalarValue::Boolean((!unset).then_some(*v)),
        (_, Value::I32(v)) => ScalarValue::Int32((!unset).then_some(*v)),
        (_, Value::I64(v)) => ScalarValue::Int64((!unset).then_some(*v)),
        (_, Value::U32(v)) => ScalarValue::UInt32((!unset).then_some(*v)),
        (_, Value::U64(v)) => ScalarValue::UInt64((!unset).then_some(*v)),
        (_, Value::F32(v)) => ScalarValue::Float32((!unset).then_some(*v)),
        (_, Value::F64(v)) => ScalarValue::Float64((!unset).then_some(*v)),
        (_, Value::String(v)) => ScalarValue::Utf8((!unset).then(|| v.clone())),
        (_, Value::Bytes(v)) => ScalarValue::Binary((!unset).then(|| v.to_vec())),
        _ => ScalarValue::Null,
    }
}

/// Declared columns that name a field a column cannot hold are an error at `CREATE`.
fn check_columns(descriptor: &MessageDescriptor, output: &Fields) -> Result<(), String> {
    for out in output {
        let Some(field) = descriptor.get_field_by_name(out.name()) else { continue };
        if field.is_list() || field.is_map() {
            return Err(format!(
                "column \"{}\" names a repeated or map field of {}, which is not supported",
                out.name(),
                descriptor.full_name()
            ));
        }
        match (field.kind(), out.data_type()) {
            (Kind::Message(nested), DataType::Struct(children)) if !is_timestamp(&nested) => check_columns(&nested, children)?,
            (Kind::Message(nested), _) if !is_timestamp(&nested) => {
                return Err(format!(
                    "column \"{}\" names the message field {}.{}, which needs a STRUCT column",
                    out.name(),
                    descriptor.full_name(),
                    field.name()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The columns a message type gives a source declared without any: its fields, nested messages
/// as structs. Repeated and map fields have no column type yet and are left out, as are
/// messages nested deeper than [`MAX_NESTING`] (a recursive message type).
pub fn declared_columns(text: &str, message: Option<&str>) -> Result<SchemaRef, String> {
    let schema = ProtoSchema::compile(text)?;
    let descriptor = schema.by_name(message)?;
    Ok(Arc::new(Schema::new(message_fields(&descriptor, 0))))
}

const MAX_NESTING: usize = 8;

fn message_fields(descriptor: &MessageDescriptor, depth: usize) -> Vec<Field> {
    descriptor
        .fields()
        .filter_map(|f| {
            let data_type = match (f.kind(), natural_type(&f)) {
                (_, Some(DataType::UInt32)) => DataType::Int64,
                (_, Some(DataType::UInt64)) => DataType::Decimal128(20, 0),
                (_, Some(other)) => other,
                (Kind::Message(nested), None) if !f.is_list() && !f.is_map() && depth < MAX_NESTING => {
                    let fields = message_fields(&nested, depth + 1);
                    if fields.is_empty() {
                        return None;
                    }
                    DataType::Struct(fields.into())
                }
                _ => return None,
            };
            Some(Field::new(f.name(), data_type, true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use prost_reflect::prost::Message;

    use super::*;

    const CHAT: &str = r#"syntax = "proto3";
        package weir.test;
        import "google/protobuf/timestamp.proto";
        message Other { string x = 1; }
        message Chat {
            enum Kind { TEXT = 0; EMOTE = 1; }
            string stream_id = 1;
            int64 user_id = 2;
            google.protobuf.Timestamp ts = 3;
            optional string message = 4;
            Kind kind = 5;
            repeated string tags = 6;
            message Nested { int64 n = 1; Nested next = 2; google.protobuf.Timestamp at = 3; }
            Nested nested = 7;
        }"#;

    fn chat(schema: &ProtoSchema, stream: &str, user: i64, seconds: i64, text: Option<&str>) -> Vec<u8> {
        let descriptor = schema.by_name(Some("weir.test.Chat")).unwrap();
        let mut m = DynamicMessage::new(descriptor.clone());
        m.set_field_by_name("stream_id", Value::String(stream.into()));
        m.set_field_by_name("user_id", Value::I64(user));
        let mut ts = DynamicMessage::new(schema.pool.get_message_by_name("google.protobuf.Timestamp").unwrap());
        ts.set_field_by_name("seconds", Value::I64(seconds));
        ts.set_field_by_name("nanos", Value::I32(250_000_000));
        m.set_field_by_name("ts", Value::Message(ts));
        if let Some(t) = text {
            m.set_field_by_name("message", Value::String(t.into()));
        }
        m.set_field_by_name("kind", Value::EnumNumber(1));
        m.encode_to_vec()
    }

    fn output() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("stream_id", DataType::Utf8, true),
            Field::new("user_id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("message", DataType::Utf8, true),
            Field::new("kind", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn inline_schema_bodies_decode_by_field_name() {
        let schema = ProtoSchema::compile(CHAT).unwrap();
        let a = chat(&schema, "s1", 7, 100, Some("hi"));
        let b = chat(&schema, "s2", 8, 200, None);
        let decoder = ProtobufDecoder::new(output(), SchemaSource::Inline(CHAT), Some("weir.test.Chat")).unwrap();
        let batch = decoder.decode(&[&a, &b]).unwrap();
        assert_eq!(batch.column(0).as_string::<i32>().value(1), "s2");
        assert_eq!(batch.column(1).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(batch.column(2).as_primitive::<TimestampMicrosecondType>().value(0), 100_250_000);
        assert_eq!(batch.column(3).as_string::<i32>().value(0), "hi");
        assert!(batch.column(3).is_null(1), "an unset optional field is NULL");
        assert_eq!(batch.column(4).as_string::<i32>().value(0), "EMOTE");
        assert!(decoder.decode(&[&[0xff, 0xff, 0xff]]).is_err());
    }

    #[test]
    fn schemas_and_columns_are_checked() {
        assert!(ProtobufDecoder::new(output(), SchemaSource::Inline("syntax = \"proto3\"; message {"), None).is_err());
        assert!(ProtobufDecoder::new(output(), SchemaSource::Inline(CHAT), Some("weir.test.Nope")).is_err());
        let tags = Arc::new(Schema::new(vec![Field::new("tags", DataType::Utf8, true)]));
        let err = ProtobufDecoder::new(tags, SchemaSource::Inline(CHAT), Some("weir.test.Chat")).unwrap_err().to_string();
        assert!(err.contains("repeated"), "{err}");
        let scalar = Arc::new(Schema::new(vec![Field::new("nested", DataType::Int64, true)]));
        let err = ProtobufDecoder::new(scalar, SchemaSource::Inline(CHAT), Some("weir.test.Chat")).unwrap_err().to_string();
        assert!(err.contains("STRUCT"), "{err}");
        let columns = declared_columns(CHAT, Some("weir.test.Chat")).unwrap();
        let names: Vec<&str> = columns.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["stream_id", "user_id", "ts", "message", "kind", "nested"]);
        // The recursive `next` field stops at MAX_NESTING levels.
        let mut depth = 0;
        let mut t = columns.field(5).data_type().clone();
        while let DataType::Struct(f) = t {
            depth += 1;
            t = f.find("next").map(|(_, f)| f.data_type().clone()).unwrap_or(DataType::Null);
        }
        assert_eq!(depth, MAX_NESTING);
    }

    #[test]
    fn nested_messages_fill_struct_columns() {
        let schema = ProtoSchema::compile(CHAT).unwrap();
        let chat = schema.by_name(Some("weir.test.Chat")).unwrap();
        let nested = schema.by_name(Some("weir.test.Chat.Nested")).unwrap();
        let mut inner = DynamicMessage::new(nested.clone());
        inner.set_field_by_name("n", Value::I64(2));
        let mut outer = DynamicMessage::new(nested);
        outer.set_field_by_name("n", Value::I64(1));
        outer.set_field_by_name("next", Value::Message(inner));
        let mut with = DynamicMessage::new(chat.clone());
        with.set_field_by_name("nested", Value::Message(outer));
        let without = DynamicMessage::new(chat);
        let next = DataType::Struct(vec![Field::new("n", DataType::Int32, true), Field::new("gone", DataType::Utf8, true)].into());
        let declared = DataType::Struct(vec![Field::new("next", next, true), Field::new("n", DataType::Int64, true)].into());
        let output = Arc::new(Schema::new(vec![Field::new("nested", declared, true)]));
        let decoder = ProtobufDecoder::new(output, SchemaSource::Inline(CHAT), Some("weir.test.Chat")).unwrap();
        let batch = decoder.decode(&[&with.encode_to_vec(), &without.encode_to_vec()]).unwrap();
        let nested = batch.column(0).as_struct();
        assert!(nested.is_valid(0) && nested.is_null(1), "an unset message is a NULL struct");
        assert_eq!(nested.column(1).as_primitive::<Int64Type>().value(0), 1);
        let next = nested.column(0).as_struct();
        assert_eq!(next.column(0).as_primitive::<datafusion::arrow::datatypes::Int32Type>().value(0), 2);
        assert!(next.column(1).is_null(0) && next.is_null(1));
    }

    #[test]
    fn message_indexes_follow_confluent() {
        assert_eq!(message_indexes(&[0, 9]).unwrap(), (vec![0], &[9u8][..]));
        // [1, 0] as zigzag varints: count 2 -> 4, 1 -> 2, 0 -> 0.
        assert_eq!(message_indexes(&[4, 2, 0, 9]).unwrap(), (vec![1, 0], &[9u8][..]));
        assert!(message_indexes(&[4, 2]).is_err());
        let schema = ProtoSchema::compile(CHAT).unwrap();
        assert_eq!(schema.by_indexes(&[1]).unwrap().full_name(), "weir.test.Chat");
        assert_eq!(schema.by_indexes(&[1, 0]).unwrap().full_name(), "weir.test.Chat.Nested");
        assert!(schema.by_indexes(&[5]).is_err());
    }
}
