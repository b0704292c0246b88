//! How a message connector's payloads become rows: the `FORMAT PLAIN ENCODE ...` clause.
//!
//! * `ENCODE JSON` ([`JsonDecoder`]) - one JSON object per message.
//! * `ENCODE AVRO (schema.registry = '...' | schema = '...')` ([`AvroDecoder`]) - Confluent
//!   wire format with a registry, or bare bodies with an inline schema.
//! * `ENCODE PROTOBUF (schema.registry = '...' | schema = '...', message = '...')`
//!   ([`ProtobufDecoder`]) - the same two ways.
//!
//! A chunk is first [`PayloadDecoder::prepare`]d (async: schemas a registry must be asked for),
//! then decoded synchronously, falling back to one message at a time (`records`).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::avro::{self, AvroDecoder};
use crate::error::ConnectorError;
use crate::json::JsonDecoder;
use crate::protobuf::{self, ProtobufDecoder};
use crate::options::invalid;
use crate::registry::SchemaSource;
use crate::source::{SourceFormat, SourceOptions};

#[derive(Debug)]
pub enum PayloadDecoder {
    Json(JsonDecoder),
    Avro(AvroDecoder),
    Protobuf(ProtobufDecoder),
}

const SUPPORTED: &str = "FORMAT PLAIN ENCODE JSON | AVRO | PROTOBUF";

/// The format clause's `ENCODE`, checked: `FORMAT PLAIN` and a supported encoding.
fn encoding<'a>(connector: &str, format: Option<&'a SourceFormat>) -> Result<&'a SourceFormat, ConnectorError> {
    let Some(f) = format else {
        return Err(invalid("format", format!("connector '{connector}' needs a format: {SUPPORTED}")));
    };
    if !f.format.eq_ignore_ascii_case("plain") || !["json", "avro", "protobuf"].iter().any(|e| f.encode.eq_ignore_ascii_case(e)) {
        return Err(invalid(
            "format",
            format!("FORMAT {} ENCODE {} is not supported by connector '{connector}' (supported: {SUPPORTED})", f.format, f.encode),
        ));
    }
    // The registry's options, then the schema given inline, then Protobuf's message name.
    const OPTIONS: [&str; 6] =
        ["schema.registry", "schema.registry.username", "schema.registry.password", "schema.registry.subject", "schema", "message"];
    let known: &[&str] = match f.encode.to_ascii_lowercase().as_str() {
        "avro" => &OPTIONS[..5],
        "protobuf" => &OPTIONS,
        _ => &[],
    };
    if let Some(unknown) = f.options.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(invalid(unknown, format!("unknown option of ENCODE {}", f.encode.to_uppercase())));
    }
    Ok(f)
}

impl PayloadDecoder {
    /// The decoder of a message connector's `FORMAT` clause into the `output` columns.
    pub fn new(connector: &str, format: Option<&SourceFormat>, output: SchemaRef) -> Result<Self, ConnectorError> {
        let f = encoding(connector, format)?;
        if f.encode.eq_ignore_ascii_case("json") {
            return Ok(PayloadDecoder::Json(JsonDecoder::new(output).with_json_columns(&f.json_columns)));
        }
        let source = schema_source(f)?;
        if f.encode.eq_ignore_ascii_case("protobuf") {
            let message = f.options.get("message").map(String::as_str);
            return Ok(PayloadDecoder::Protobuf(ProtobufDecoder::new(output, source, message)?));
        }
        Ok(PayloadDecoder::Avro(AvroDecoder::new(output, source)?))
    }

    /// Whether [`PayloadDecoder::prepare`] may have work to do (callers outside the runtime
    /// skip entering it otherwise).
    pub fn fetches_schemas(&self) -> bool {
        !matches!(self, PayloadDecoder::Json(_))
    }

    /// Gets what decoding `records` needs from elsewhere (schemas from a registry).
    pub async fn prepare(&self, records: &[&[u8]]) {
        match self {
            PayloadDecoder::Json(_) => {}
            PayloadDecoder::Avro(avro) => avro.prepare(records).await,
            PayloadDecoder::Protobuf(proto) => proto.prepare(records).await,
        }
    }

    pub fn decode(&self, records: &[&[u8]]) -> Result<RecordBatch, String> {
        match self {
            PayloadDecoder::Json(json) => json.decode(records),
            PayloadDecoder::Avro(avro) => avro.decode(records),
            PayloadDecoder::Protobuf(proto) => proto.decode(records),
        }
    }
}

/// Where an `ENCODE AVRO | PROTOBUF` clause's writer schema comes from.
fn schema_source(f: &SourceFormat) -> Result<SchemaSource<'_>, ConnectorError> {
    let inline_form = if f.encode.eq_ignore_ascii_case("protobuf") { "<.proto text>" } else { "<Avro schema JSON>" };
    SchemaSource::from_options(&f.options, &f.encode.to_uppercase(), inline_form)
}

/// Whether the format carries a schema that can give a source its columns (Avro, Protobuf).
pub fn has_writer_schema(format: &SourceFormat) -> bool {
    ["avro", "protobuf"].iter().any(|e| format.encode.eq_ignore_ascii_case(e))
}

/// The columns a schema text gives (the format's options may say which message).
type ColumnsOfSchema = fn(&str, &SourceOptions) -> Result<SchemaRef, String>;

/// The columns of a source declared without any, when its format knows them: the newest schema
/// of the registry subject (`schema.registry.subject`, by default `<default_subject>-value`), or
/// the inline schema. `Ok(None)`: the encoding carries no schema (JSON).
pub async fn declared_columns(
    format: Option<&SourceFormat>,
    default_subject: Option<&str>,
) -> Result<Option<SchemaRef>, ConnectorError> {
    let Some(f) = format else { return Ok(None) };
    let (kind, columns): (&str, ColumnsOfSchema) =
        match f.encode.to_ascii_lowercase().as_str() {
            "avro" => ("AVRO", |text, _| avro::declared_columns(text)),
            "protobuf" => ("PROTOBUF", |text, options| {
                protobuf::declared_columns(text, options.get("message").map(String::as_str))
            }),
            _ => return Ok(None),
        };
    let text = match schema_source(f)? {
        SchemaSource::Inline(text) => text.to_string(),
        SchemaSource::Registry(registry) => {
            let subject = match (f.options.get("schema.registry.subject"), default_subject) {
                (Some(s), _) => s.clone(),
                (None, Some(d)) => format!("{d}-value"),
                (None, None) => {
                    return Err(invalid("schema.registry.subject", "name the registry subject whose schema gives the columns"));
                }
            };
            let latest = registry.latest(&subject).await?;
            if !latest.schema_type.eq_ignore_ascii_case(kind) {
                return Err(invalid("schema.registry", format!("subject \"{subject}\" holds a {} schema, not {kind}", latest.schema_type)));
            }
            latest.schema.clone()
        }
    };
    columns(&text, &f.options).map(Some).map_err(|e| invalid("schema", format!("not a usable {kind} schema: {e}")))
}

/// The registry subject a source's options name by default: the Kafka topic or NATS subject.
pub fn default_subject(options: &SourceOptions) -> Option<&str> {
    options.get("topic").or_else(|| options.get("nats.subject")).or_else(|| options.get("nats.stream")).map(String::as_str)
}
