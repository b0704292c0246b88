//! Shared by the Avro and Protobuf broker tests (in `kafka.rs` and `nats.rs`): chat events as
//! Avro messages (written by arrow-avro's writer: Confluent wire format, or bare bodies) and as
//! Protobuf messages (prost-reflect, from a schema protox compiles), and a small schema
//! registry. No Confluent or Karapace registry is installable here, so [`Registry`] serves the
//! two documented endpoints Weir uses (`GET /schemas/ids/{id}`,
//! `GET /subjects/{subject}/versions/latest`) over real HTTP, with real schemas, and counts the
//! requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_avro::schema::{FingerprintStrategy, SCHEMA_METADATA_KEY};
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::AvroSoeFormat;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::chat::Event;

/// The chat schema, first version.
pub const CHAT_V1: &str = r#"{"type":"record","name":"Chat","namespace":"weir.test","fields":[{"name":"stream_id","type":"string"},{"name":"user_id","type":"long"},{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}}]}"#;

/// The second version: a `message` field added (older messages read it as NULL).
pub const CHAT_V2: &str = r#"{"type":"record","name":"Chat","namespace":"weir.test","fields":[{"name":"stream_id","type":"string"},{"name":"user_id","type":"long"},{"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},{"name":"message","type":"string","default":""}]}"#;

/// One event as an Avro message: with `Some(id)` in the Confluent wire format, else a bare body.
/// `with_message` writes version 2 (with a `message` field).
pub fn avro_message(event: &Event, id: Option<u32>, with_message: bool) -> Vec<u8> {
    let (schema_json, mut fields, mut columns): (&str, Vec<Field>, Vec<ArrayRef>) = (
        if with_message { CHAT_V2 } else { CHAT_V1 },
        vec![
            Field::new("stream_id", DataType::Utf8, false),
            Field::new("user_id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), false),
        ],
        vec![
            Arc::new(StringArray::from(vec![event.0.clone()])),
            Arc::new(Int64Array::from(vec![event.1])),
            Arc::new(TimestampMicrosecondArray::from(vec![event.2]).with_timezone("+00:00")),
        ],
    );
    if with_message {
        fields.push(Field::new("message", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(vec![format!("hello from {}", event.1)])));
    }
    let metadata = HashMap::from([(SCHEMA_METADATA_KEY.to_string(), schema_json.to_string())]);
    let schema = Schema::new_with_metadata(fields, metadata);
    let batch = RecordBatch::try_new(Arc::new(schema.clone()), columns).expect("batch");
    let mut writer = WriterBuilder::new(schema)
        .with_fingerprint_strategy(FingerprintStrategy::Id(id.unwrap_or(0)))
        .build::<_, AvroSoeFormat>(Vec::new())
        .expect("Avro writer");
    writer.write(&batch).expect("write");
    writer.finish().expect("finish");
    let framed = writer.into_inner();
    if id.is_some() { framed } else { framed[5..].to_vec() }
}

/// Messages an Avro source must skip, counted: not in the wire format, a schema id the
/// registry does not know, a cut-off body.
pub fn bad_avro_messages(good: &[u8]) -> Vec<Vec<u8>> {
    let mut unknown_id = good.to_vec();
    unknown_id[1..5].copy_from_slice(&99u32.to_be_bytes());
    vec![b"{\"not\": \"avro\"}".to_vec(), unknown_id, good[..good.len() - 3].to_vec()]
}

/// A schema registry over HTTP: schemas by id, each under a subject.
pub struct Registry {
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Registry {
    /// Serves `schemas` (id, subject, Avro schema JSON); a subject's latest is its highest id.
    pub async fn start(schemas: Vec<(u32, String, &'static str)>) -> Registry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let schemas = Arc::new(schemas);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (schemas, seen) = (schemas.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut read = 0;
                    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    let request = String::from_utf8_lossy(&buf[..read]).to_string();
                    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                    seen.lock().unwrap().push(path.clone());
                    let (status, body) = answer(&schemas, &path);
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Registry { url, requests }
    }

    /// How many times `path` was asked for.
    pub fn requests_for(&self, path: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|p| *p == path).count()
    }
}

fn answer(schemas: &[(u32, String, &str)], path: &str) -> (&'static str, String) {
    let not_found = ("404 Not Found", serde_json::json!({"error_code": 40403, "message": "Schema not found"}).to_string());
    if let Some(id) = path.strip_prefix("/schemas/ids/") {
        return match schemas.iter().find(|(i, _, _)| id.parse() == Ok(*i)) {
            Some((_, _, schema)) => ("200 OK", serde_json::json!({"schema": schema, "schemaType": schema_type(schema)}).to_string()),
            None => not_found,
        };
    }
    if let Some(subject) = path.strip_prefix("/subjects/").and_then(|p| p.strip_suffix("/versions/latest")) {
        let versions: Vec<_> = schemas.iter().filter(|(_, s, _)| s == subject).collect();
        return match versions.iter().max_by_key(|(id, _, _)| *id) {
            Some((id, _, schema)) => (
                "200 OK",
                serde_json::json!({"subject": subject, "version": versions.len(), "id": id, "schema": schema, "schemaType": schema_type(schema)})
                    .to_string(),
            ),
            None => not_found,
        };
    }
    not_found
}

/// What the registry says a schema is: Avro schemas are JSON, Protobuf ones `.proto` text.
fn schema_type(schema: &str) -> &'static str {
    if schema.trim_start().starts_with('{') { "AVRO" } else { "PROTOBUF" }
}

/// The chat message as Protobuf; `Chat` is the second message (Confluent index path `[1]`).
pub const CHAT_PROTO: &str = r#"syntax = "proto3";
package weir.test;
import "google/protobuf/timestamp.proto";
message Ping { string from = 1; }
message Chat {
    string stream_id = 1;
    int64 user_id = 2;
    google.protobuf.Timestamp ts = 3;
}
"#;

/// One event as a Protobuf `Chat` in the Confluent wire format under schema `id`.
pub fn protobuf_message(event: &Event, id: u32) -> Vec<u8> {
    use prost_reflect::prost::Message;
    use prost_reflect::{DynamicMessage, Value};
    let mut files = protox::file::ChainFileResolver::new();
    files.add(InlineProto);
    files.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(files);
    compiler.open_file("chat.proto").expect("compile chat.proto");
    let pool = compiler.descriptor_pool();
    let mut chat = DynamicMessage::new(pool.get_message_by_name("weir.test.Chat").expect("Chat"));
    chat.set_field_by_name("stream_id", Value::String(event.0.clone()));
    chat.set_field_by_name("user_id", Value::I64(event.1));
    let mut ts = DynamicMessage::new(pool.get_message_by_name("google.protobuf.Timestamp").expect("Timestamp"));
    ts.set_field_by_name("seconds", Value::I64(event.2.div_euclid(1_000_000)));
    ts.set_field_by_name("nanos", Value::I32((event.2.rem_euclid(1_000_000) * 1000) as i32));
    chat.set_field_by_name("ts", Value::Message(ts));
    // Magic byte, schema id, message indexes [1] (count 1 and index 1, zigzag: 2, 2), body.
    let mut framed = vec![0];
    framed.extend_from_slice(&id.to_be_bytes());
    framed.extend_from_slice(&[2, 2]);
    framed.extend_from_slice(&chat.encode_to_vec());
    framed
}

struct InlineProto;

impl protox::file::FileResolver for InlineProto {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == "chat.proto" {
            protox::file::File::from_source(name, CHAT_PROTO)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}
