//! A Confluent Schema Registry client: the writer schemas of `ENCODE AVRO` and `ENCODE PROTOBUF`
//! messages in the Confluent wire format (a zero byte, a 4-byte big-endian schema id, the body).
//!
//! Two of the registry's documented endpoints are used: `GET /schemas/ids/{id}` (the schema a
//! message names) and `GET /subjects/{subject}/versions/latest` (the schema whose columns a
//! source declared without columns gets, and the one decoding starts with). Schemas never change
//! under an id, so each is fetched once and kept.
//!
//! Options (in `FORMAT ... ENCODE ... (...)`): `schema.registry` (the base URL; several
//! comma-separated URLs are tried in order), `schema.registry.username` and
//! `schema.registry.password` (HTTP basic auth; never logged or shown in errors).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConnectorError;
use crate::options::{invalid, without_credentials};
use crate::source::SourceOptions;

/// The magic byte that starts a message in the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A schema as the registry stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredSchema {
    pub id: u32,
    /// `AVRO`, `PROTOBUF` or `JSON` (the registry leaves the field out for Avro).
    pub schema_type: String,
    /// The schema text: Avro JSON, or a `.proto` file.
    pub schema: String,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    id: Option<u32>,
}

#[derive(Debug)]
pub struct SchemaRegistry {
    urls: Vec<String>,
    auth: Option<(String, String)>,
    client: reqwest::Client,
    by_id: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
}

/// The schema id of a message in the Confluent wire format.
pub fn confluent_schema_id(message: &[u8]) -> Result<u32, String> {
    match message {
        [CONFLUENT_MAGIC, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        [CONFLUENT_MAGIC, ..] => Err(format!("message of {} bytes is too short for the Confluent wire format", message.len())),
        _ => Err("message does not start with the Confluent wire format's magic byte 0".into()),
    }
}

impl SchemaRegistry {
    /// The registry named by the format options, if any.
    pub fn from_options(options: &SourceOptions) -> Result<Option<Self>, ConnectorError> {
        let Some(urls) = options.get("schema.registry") else { return Ok(None) };
        let urls: Vec<String> = urls.split(',').map(|u| u.trim().trim_end_matches('/').to_string()).filter(|u| !u.is_empty()).collect();
        for url in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "schema.registry",
                    format!("\"{}\" is not an http:// or https:// URL", without_credentials(url)),
                ));
            }
        }
        if urls.is_empty() {
            return Err(invalid("schema.registry", "no URL given"));
        }
        let auth = match (options.get("schema.registry.username"), options.get("schema.registry.password")) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "schema.registry.username",
                    "schema.registry.username and schema.registry.password go together",
                ));
            }
        };
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| invalid("schema.registry", format!("cannot build an HTTP client: {e}")))?;
        Ok(Some(SchemaRegistry { urls, auth, client, by_id: Mutex::new(HashMap::new()) }))
    }

    fn cached(&self, id: u32) -> Option<Arc<RegisteredSchema>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    fn remember(&self, schema: RegisteredSchema) -> Arc<RegisteredSchema> {
        let schema = Arc::new(schema);
        self.by_id.lock().unwrap_or_else(|p| p.into_inner()).insert(schema.id, schema.clone());
        schema
    }

    /// `GET path` on the first registry URL that answers. `Ok(None)` when it answers 404.
    async fn get(&self, path: &str) -> Result<Option<SchemaResponse>, ConnectorError> {
        let mut last_error = String::new();
        for url in &self.urls {
            // Credentials in the URL itself never reach a message.
            let shown = without_credentials(url);
            let mut request = self.client.get(format!("{url}{path}")).header("Accept", "application/vnd.schemaregistry.v1+json");
            if let Some((user, password)) = &self.auth {
                request = request.basic_auth(user, Some(password));
            }
            let response = match request.send().await {
                Ok(r) => r,
                // reqwest's error names the URL, never the credentials (they are a header).
                Err(e) => {
                    last_error = format!("{shown}: {}", without_url(&e));
                    continue;
                }
            };
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                last_error = format!("{shown}{path} answered {status}");
                continue;
            }
            let body = response.bytes().await.map_err(|e| unavailable(format!("{shown}{path}: {}", without_url(&e))))?;
            return serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| unavailable(format!("{shown}{path} answered something that is not a registry schema: {e}")));
        }
        Err(unavailable(last_error))
    }

    /// The schema registered under `id` (fetched once).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>, ConnectorError> {
        if let Some(schema) = self.cached(id) {
            return Ok(schema);
        }
        let response = self
            .get(&format!("/schemas/ids/{id}"))
            .await?
            .ok_or_else(|| invalid("schema.registry", format!("the registry has no schema with id {id}")))?;
        Ok(self.remember(RegisteredSchema {
            id,
            schema_type: response.schema_type.unwrap_or_else(|| "AVRO".into()),
            schema: response.schema,
        }))
    }

    /// The newest schema of `subject`.
    pub async fn latest(&self, subject: &str) -> Result<Arc<RegisteredSchema>, ConnectorError> {
        let path = format!("/subjects/{}/versions/latest", percent_encode_path_segment(subject));
        let response = self
            .get(&path)
            .await?
            .ok_or_else(|| invalid("schema.registry", format!("the registry has no subject \"{subject}\"")))?;
        let id = response.id.ok_or_else(|| unavailable(format!("the registry's answer for subject \"{subject}\" has no id")))?;
        Ok(self.remember(RegisteredSchema {
            id,
            schema_type: response.schema_type.unwrap_or_else(|| "AVRO".into()),
            schema: response.schema,
        }))
    }
}

/// Where an Avro or Protobuf decoder gets its writer schema: exactly one of
/// `schema.registry = 'http://...'` and `schema = '<the schema text>'`.
#[derive(Debug)]
pub enum SchemaSource<'a> {
    Registry(Arc<SchemaRegistry>),
    Inline(&'a str),
}

impl<'a> SchemaSource<'a> {
    /// From a format's options. `encode` and `inline_form` name the encoding and the form of an
    /// inline schema, for the error when neither is given.
    pub fn from_options(options: &'a SourceOptions, encode: &str, inline_form: &str) -> Result<Self, ConnectorError> {
        match (SchemaRegistry::from_options(options)?, options.get("schema")) {
            (Some(registry), None) => Ok(SchemaSource::Registry(Arc::new(registry))),
            (None, Some(text)) => Ok(SchemaSource::Inline(text)),
            (Some(_), Some(_)) => Err(invalid("schema", "give either schema.registry or an inline schema, not both")),
            (None, None) => Err(invalid(
                "schema.registry",
                format!("ENCODE {encode} needs the writer schema: schema.registry = 'http://...' or schema = '{inline_form}'"),
            )),
        }
    }
}

/// Parsed schemas by id, filled from a registry before a chunk is decoded: what the Avro and
/// Protobuf decoders share. An id the registry does not have (or whose schema does not parse)
/// is remembered as an error; an unreachable registry is not, so the next chunk asks again.
#[derive(Debug)]
pub struct SchemaCache<T> {
    registry: Arc<SchemaRegistry>,
    parsed: Mutex<HashMap<u32, Result<T, String>>>,
}

impl<T: Clone> SchemaCache<T> {
    pub fn new(registry: Arc<SchemaRegistry>) -> Self {
        SchemaCache { registry, parsed: Mutex::new(HashMap::new()) }
    }

    /// Fetches and parses the schemas of the ids in `records` not seen yet.
    pub async fn prepare(&self, records: &[&[u8]], parse: impl Fn(&RegisteredSchema) -> Result<T, String>) {
        let ids: std::collections::BTreeSet<u32> = records.iter().filter_map(|r| confluent_schema_id(r).ok()).collect();
        for id in ids {
            if self.parsed.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&id) {
                continue;
            }
            let parsed = match self.registry.schema_by_id(id).await {
                Ok(schema) => parse(&schema),
                Err(ConnectorError::Unavailable { reason, .. }) => {
                    tracing::warn!(id, %reason, "schema registry unreachable");
                    continue;
                }
                Err(e) => Err(e.to_string()),
            };
            self.parsed.lock().unwrap_or_else(|p| p.into_inner()).insert(id, parsed);
        }
    }

    /// The parsed schema of `id`, or why there is none.
    pub fn get(&self, id: u32) -> Result<T, String> {
        self.parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Err(format!("the schema with id {id} could not be fetched from the registry")))
    }
}

fn unavailable(reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Unavailable { connector: "schema registry", reason: reason.into() }
}

/// A reqwest error's reason without its URL (the caller names the URL it tried).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" ({url})"), "").replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Subjects are path segments: `/`, `%`, `?` and `#` must not break the path.
fn percent_encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_prefix_names_the_schema() {
        assert_eq!(confluent_schema_id(&[0, 0, 0, 1, 2, 9, 9]), Ok(258));
        assert!(confluent_schema_id(&[0, 0, 1]).unwrap_err().contains("too short"));
        assert!(confluent_schema_id(b"{\"a\": 1}").unwrap_err().contains("magic byte"));
        assert_eq!(percent_encode_path_segment("chat-value"), "chat-value");
        assert_eq!(percent_encode_path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn options_are_checked() {
        let opts = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<SourceOptions>();
        assert!(SchemaRegistry::from_options(&opts(&[])).unwrap().is_none());
        let err = SchemaRegistry::from_options(&opts(&[("schema.registry", "localhost:8081")])).unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let err = SchemaRegistry::from_options(&opts(&[("schema.registry", "http://r"), ("schema.registry.username", "u")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("go together"), "{err}");
        let r = SchemaRegistry::from_options(&opts(&[("schema.registry", "http://a:1/, http://b:2")])).unwrap().unwrap();
        assert_eq!(r.urls, ["http://a:1", "http://b:2"]);
    }
}
