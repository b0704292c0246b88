//! Connector secrets at rest: option values such as `clickhouse.password` or `nats.token` are
//! sealed (AES-256-GCM) in the catalog file, with a key from `--secret-key` /
//! `WEIR_SECRET_KEY`, or else one the server makes in `<data dir>/secret.key` (mode 0600).
//! In memory, definitions keep them in clear: sources and sinks are re-planned from their
//! definitions, and `SHOW CREATE`, logs and `weir_catalog` show them redacted.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use weir_catalog::CatalogError;
use weir_sql::sqlparser::ast::{Expr, Value};

use crate::config::Config;
use crate::error::{Result, WeirError};

/// How a sealed value starts, in the stored SQL.
const SEALED: &str = "weir-sealed:v1:";

pub struct SecretSealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSealer(..)")
    }
}

impl SecretSealer {
    /// The sealer of the configured key, or of the data directory's own key (made on first use).
    pub fn open(config: &Config, data_dir: &Path) -> Result<SecretSealer> {
        let material: Vec<u8> = match &config.secret_key {
            Some(key) => key.0.as_bytes().to_vec(),
            None => {
                let path = data_dir.join("secret.key");
                match std::fs::read(&path) {
                    Ok(key) => key,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let mut key = [0u8; 32];
                        getrandom::fill(&mut key).map_err(|e| WeirError::internal(format!("no randomness for a secret key: {e}")))?;
                        let encoded = STANDARD.encode(key).into_bytes();
                        crate::server::tls::write_private(&path, &encoded)?;
                        encoded
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        // Any text makes a key: its SHA-256.
        let digest = ring::digest::digest(&ring::digest::SHA256, &material);
        let key = UnboundKey::new(&AES_256_GCM, digest.as_ref()).map_err(|_| WeirError::internal("cannot make an AES-256-GCM key"))?;
        Ok(SecretSealer { key: LessSafeKey::new(key) })
    }

    fn seal_value(&self, option: &str, value: &str) -> std::result::Result<String, CatalogError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| CatalogError::Corrupt(format!("no randomness to seal a secret: {e}")))?;
        let mut data = value.as_bytes().to_vec();
        // The option's name is authenticated with the value: a sealed value cannot be moved to
        // another option.
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(option.as_bytes()), &mut data)
            .map_err(|_| CatalogError::Corrupt("cannot seal a secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(format!("{SEALED}{}", STANDARD.encode(out)))
    }

    fn unseal_value(&self, option: &str, sealed: &str) -> std::result::Result<String, CatalogError> {
        let wrong = || {
            CatalogError::Corrupt(format!(
                "the secret in option {option} does not open with this server's secret key (WEIR_SECRET_KEY or <data dir>/secret.key)"
            ))
        };
        let bytes = STANDARD.decode(sealed).map_err(|_| wrong())?;
        if bytes.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, data) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut data = data.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(option.as_bytes()), &mut data).map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }

    /// Applies `f` to the string value of every secret option of `definition`; the text is
    /// returned as it was when nothing changed.
    fn rewrite(
        &self,
        definition: &str,
        f: impl Fn(&str, &str) -> std::result::Result<Option<String>, CatalogError>,
    ) -> std::result::Result<String, CatalogError> {
        let parsed = weir_sql::parse(definition).map_err(|e| CatalogError::Corrupt(format!("a stored definition does not parse: {}", e.message)))?;
        let [one] = <[_; 1]>::try_from(parsed).map_err(|_| CatalogError::Corrupt("a stored definition is not one statement".into()))?;
        let mut statement = one.statement;
        let mut changed = false;
        for option in statement.options_mut() {
            if !weir_sql::is_secret_option(&option.key) {
                continue;
            }
            let Expr::Value(v) = &mut option.value else { continue };
            let Value::SingleQuotedString(text) = &mut v.value else { continue };
            if let Some(new) = f(&option.key, text)? {
                *text = new;
                changed = true;
            }
        }
        Ok(if changed { statement.to_string() } else { definition.to_string() })
    }
}

impl weir_catalog::DefinitionCodec for SecretSealer {
    fn seal(&self, definition: &str) -> std::result::Result<String, CatalogError> {
        // Most definitions hold no option at all: skip parsing those.
        if !definition.contains("WITH") {
            return Ok(definition.to_string());
        }
        self.rewrite(definition, |option, value| {
            if value.starts_with(SEALED) { Ok(None) } else { self.seal_value(option, value).map(Some) }
        })
    }

    fn unseal(&self, stored: &str) -> std::result::Result<String, CatalogError> {
        if !stored.contains(SEALED) {
            return Ok(stored.to_string());
        }
        self.rewrite(stored, |option, value| match value.strip_prefix(SEALED) {
            Some(sealed) => self.unseal_value(option, sealed).map(Some),
            None => Ok(None),
        })
    }
}

#[cfg(test)]
mod tests {
    use weir_catalog::DefinitionCodec;

    use super::*;

    #[test]
    fn secrets_are_sealed_at_rest_and_open_only_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default();
        let sealer = SecretSealer::open(&config, dir.path()).unwrap();
        let definition = "CREATE SINK s FROM v WITH (connector = 'clickhouse', clickhouse.url = 'http://ch:8123', \
                          clickhouse.password = 'pa''ss-w0rd', clickhouse.table = 't')";
        let sealed = sealer.seal(definition).unwrap();
        assert!(!sealed.contains("pa''ss-w0rd") && !sealed.contains("pa'ss-w0rd"), "{sealed}");
        assert!(sealed.contains("clickhouse.url = 'http://ch:8123'") && sealed.contains(SEALED), "{sealed}");
        assert_eq!(sealer.seal(&sealed).unwrap(), sealed, "sealing twice changes nothing");
        let opened = sealer.unseal(&sealed).unwrap();
        assert!(opened.contains("clickhouse.password = 'pa''ss-w0rd'"), "{opened}");
        // The same data directory's key opens it after a restart; another key does not.
        let again = SecretSealer::open(&config, dir.path()).unwrap();
        assert_eq!(again.unseal(&sealed).unwrap(), opened);
        let other = Config { secret_key: Some(crate::config::Secret("another key".into())), ..Config::default() };
        let err = SecretSealer::open(&other, dir.path()).unwrap().unseal(&sealed).unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
        // A value moved to another option does not open either.
        let moved = sealed.replace("clickhouse.password", "clickhouse.user_password");
        assert!(again.unseal(&moved).is_err());
        // Definitions without secrets are stored as they are.
        let plain = "CREATE MATERIALIZED VIEW v AS SELECT 1";
        assert_eq!(sealer.seal(plain).unwrap(), plain);
    }
}
