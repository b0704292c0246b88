//! TLS for the Postgres wire and Flight SQL, from PEM files (`--tls-cert`, `--tls-key`) or a
//! self-signed certificate for development (`--tls-self-signed`).
//!
//! The Postgres wire answers a client's SSLRequest with `S` and continues over TLS (pgwire's
//! rustls acceptor); a client that does not ask for TLS still connects in clear, as with a
//! Postgres `host` line (`sslmode=require` is the client's choice). Flight SQL then speaks only
//! TLS (gRPC over HTTPS).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::error::{Result, SqlState, WeirError};

/// A certificate chain and its private key, as PEM.
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(..)")
    }
}

fn tls_error(message: String) -> WeirError {
    WeirError::new(SqlState::InvalidParameterValue, message)
}

/// The identity the configuration names, if any. A self-signed one is kept in
/// `<data dir>/tls/` and reused, so that clients can trust it once (`sslrootcert`).
pub fn identity(config: &Config) -> Result<Option<TlsIdentity>> {
    if config.tls_required && config.tls_cert.is_none() && !config.tls_self_signed {
        return Err(tls_error("--tls-required needs a certificate: --tls-cert and --tls-key, or --tls-self-signed".into()));
    }
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &Path| std::fs::read(path).map_err(|e| tls_error(format!("cannot read {}: {e}", path.display())));
            Ok(Some(TlsIdentity { cert_pem: read(cert)?, key_pem: read(key)? }))
        }
        (Some(_), None) | (None, Some(_)) => Err(tls_error("--tls-cert and --tls-key go together".into())),
        (None, None) if config.tls_self_signed => self_signed(&config.data_dir.join("tls")).map(Some),
        (None, None) => Ok(None),
    }
}

/// A certificate for `localhost` and `127.0.0.1`, made once per data directory.
fn self_signed(dir: &Path) -> Result<TlsIdentity> {
    let (cert_path, key_path) = (dir.join("self-signed.crt"), dir.join("self-signed.key"));
    if let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) {
        return Ok(TlsIdentity { cert_pem, key_pem });
    }
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| tls_error(format!("cannot make a self-signed certificate: {e}")))?;
    let identity = TlsIdentity { cert_pem: made.cert.pem().into_bytes(), key_pem: made.key_pair.serialize_pem().into_bytes() };
    std::fs::create_dir_all(dir)?;
    write_private(&key_path, &identity.key_pem)?;
    std::fs::write(&cert_path, &identity.cert_pem)?;
    tracing::warn!(cert = %cert_path.display(), "TLS with a self-signed certificate (for development): clients cannot verify who they talk to unless they trust this file");
    Ok(identity)
}

/// Writes a file readable by its owner only (private keys).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(data)?;
    Ok(())
}

/// The acceptor the Postgres wire hands TLS connections to.
pub fn pg_acceptor(identity: &TlsIdentity) -> Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(format!("the TLS certificate is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error("the TLS certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|e| tls_error(format!("the TLS key is not a PEM private key: {e}")))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(format!("the TLS certificate and key do not fit: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Flight SQL's TLS settings.
pub fn flight_config(identity: &TlsIdentity) -> tonic::transport::ServerTlsConfig {
    tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(&identity.cert_pem, &identity.key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_required_needs_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().to_path_buf(), tls_required: true, ..Config::default() };
        let Err(refused) = identity(&config) else { panic!("no certificate: an error at start") };
        assert!(refused.message.contains("--tls-required"), "{}", refused.message);
        config.tls_self_signed = true;
        assert!(identity(&config).unwrap().is_some());
    }

    #[test]
    fn a_self_signed_identity_is_made_once_and_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path()).unwrap();
        let again = self_signed(dir.path()).unwrap();
        assert_eq!(first.cert_pem, again.cert_pem, "reused, so clients can trust it once");
        pg_acceptor(&first).unwrap();
        let bad = TlsIdentity { cert_pem: b"not pem".to_vec(), key_pem: first.key_pem.clone() };
        assert!(pg_acceptor(&bad).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("self-signed.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
    }
}
