//! SCRAM-SHA-256 (RFC 5802, RFC 7677), the server's side, with Postgres's stored verifier
//! format: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64). The verifier
//! checks a client's proof without being able to produce one, so reading it does not let
//! anyone log in. No channel binding (`-PLUS`): the client's GS2 header must say `n` or `y`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// PBKDF2 iterations of new verifiers (Postgres's default).
pub const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// The client sent something that is not SCRAM: a protocol violation.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// The proof does not match: a wrong password (or an unknown user).
    #[error("password authentication failed")]
    WrongPassword,
}

/// A password verifier: what the catalog stores for a role.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// A verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Result<Verifier, getrandom::Error> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt)?;
        Ok(Verifier::derive(password, &salt, ITERATIONS))
    }

    fn derive(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Parses a stored verifier (ours, or one Postgres produced).
    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let key = |b64: &str| -> Option<[u8; KEY_LEN]> { STANDARD.decode(b64).ok()?.try_into().ok() };
        let iterations: u32 = iterations.parse().ok().filter(|i| *i > 0)?;
        Some(Verifier { iterations, salt: STANDARD.decode(salt).ok()?, stored_key: key(stored)?, server_key: key(server)? })
    }

    /// Whether `password` is the one this verifies (for protocols that send the password
    /// itself, such as HTTP Basic in the Flight handshake).
    pub fn accepts_password(&self, password: &str) -> bool {
        let candidate = Verifier::derive(password, &self.salt, self.iterations);
        bool::from(candidate.stored_key.ct_eq(&self.stored_key))
    }

    /// A verifier no password matches, with a salt derived from the user name and a random
    /// key of this process (as Postgres's mock authentication nonce): an unknown user goes
    /// through the same exchange as a known one, with a salt that stays the same across
    /// attempts and that nobody can compute, so the answer does not tell which names exist.
    pub fn mock(user: &str) -> Verifier {
        static MOCK_KEY: std::sync::OnceLock<[u8; KEY_LEN]> = std::sync::OnceLock::new();
        let key = MOCK_KEY.get_or_init(|| {
            let mut key = [0u8; KEY_LEN];
            // Without OS randomness the salt is merely predictable; the proof still fails.
            let _ = getrandom::fill(&mut key);
            key
        });
        let salt = hmac_sha256(key, user.as_bytes())[..SALT_LEN].to_vec();
        Verifier { iterations: ITERATIONS, salt, stored_key: [0; KEY_LEN], server_key: [0; KEY_LEN] }
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

/// One exchange after the server's first message: what checking the client's final message
/// needs.
pub struct Exchange {
    verifier: Verifier,
    /// The client's GS2 header (`n,,` or `y,,`), which the final message must repeat.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Answers the client's first message (`n,,n=user,r=nonce`) with the server's
    /// (`r=nonce+ours,s=salt,i=iterations`). The user name in the message is ignored, as
    /// Postgres does: the startup message named the user.
    pub fn start(client_first: &[u8], verifier: Verifier) -> Result<(Exchange, String), ScramError> {
        let mut ours = [0u8; 18];
        getrandom::fill(&mut ours).map_err(|_| ScramError::Malformed("no randomness for a nonce"))?;
        Exchange::start_with_nonce(client_first, verifier, &STANDARD.encode(ours))
    }

    fn start_with_nonce(client_first: &[u8], verifier: Verifier, server_nonce: &str) -> Result<(Exchange, String), ScramError> {
        let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (gs2_header, bare) = match text.as_bytes().first() {
            Some(b'n' | b'y') => {
                // `n,,` or `y,,` (an authorization identity between the commas is not used).
                let mut parts = text.splitn(3, ',');
                let (flag, authzid, bare) = (parts.next(), parts.next(), parts.next());
                match (flag, authzid, bare) {
                    (Some(flag), Some(authzid), Some(bare)) => (format!("{flag},{authzid},"), bare),
                    _ => return Err(ScramError::Malformed("client-first-message without a GS2 header")),
                }
            }
            Some(b'p') => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("client-first-message without a GS2 header")),
        };
        let client_nonce = attributes(bare)
            .find_map(|(k, v)| (k == 'r').then_some(v))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b','))
            .ok_or(ScramError::Malformed("client-first-message without a nonce"))?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={}", STANDARD.encode(&verifier.salt), verifier.iterations);
        let exchange = Exchange { verifier, gs2_header, client_first_bare: bare.to_string(), server_first: server_first.clone(), nonce };
        Ok((exchange, server_first))
    }

    /// Checks the client's final message (`c=...,r=...,p=proof`) and returns the server's
    /// (`v=signature`), which proves to the client that the server knows the verifier.
    pub fn finish(&self, client_final: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("client-final-message without a proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for (k, v) in attributes(without_proof) {
            match k {
                'c' => binding = Some(v),
                'r' => nonce = Some(v),
                _ => {}
            }
        }
        let binding = STANDARD.decode(binding.ok_or(ScramError::Malformed("client-final-message without channel binding"))?)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("the nonce does not match"));
        }
        let proof: [u8; KEY_LEN] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("the proof is not 32 bytes of base64"))?;
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let client_signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; KEY_LEN];
        for (i, b) in client_key.iter_mut().enumerate() {
            *b = proof[i] ^ client_signature[i];
        }
        if !bool::from(sha256(&client_key).ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

/// `k=v` attributes of a SCRAM message.
fn attributes(message: &str) -> impl Iterator<Item = (char, &str)> {
    message.split(',').filter_map(|a| {
        let mut chars = a.chars();
        let key = chars.next()?;
        a.get(1..)?.strip_prefix('=').map(|v| (key, v))
    })
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    // SASLprep, as Postgres: a password it rejects is used as given.
    let prepared = stringprep::saslprep(password).map(|p| p.into_owned()).unwrap_or_else(|_| password.to_string());
    let mut out = [0u8; KEY_LEN];
    let iterations = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, prepared.as_bytes(), &mut out);
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exchange of RFC 7677, section 3.
    #[test]
    fn rfc_7677_example() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = Verifier::derive("pencil", &salt, 4096);
        let (exchange, server_first) =
            Exchange::start_with_nonce(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", verifier.clone(), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").unwrap();
        assert_eq!(server_first, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(exchange.finish(client_final.as_bytes()).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // Another password's verifier refuses the same proof.
        let (other, _) =
            Exchange::start_with_nonce(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", Verifier::derive("pen", &salt, 4096), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").unwrap();
        assert_eq!(other.finish(client_final.as_bytes()), Err(ScramError::WrongPassword));
        // A replayed proof under another server nonce is refused.
        let (fresh, _) = Exchange::start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", verifier.clone()).unwrap();
        assert_eq!(fresh.finish(client_final.as_bytes()), Err(ScramError::Malformed("the nonce does not match")));
        assert!(verifier.accepts_password("pencil") && !verifier.accepts_password("Pencil"));
    }

    #[test]
    fn verifiers_round_trip_in_postgres_format() {
        let v = Verifier::new("secret").unwrap();
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(Verifier::parse(&text), Some(v.clone()));
        assert!(!text.contains("secret") && !format!("{v:?}").contains("SCRAM"));
        // Postgres's layout, with a salt that is not 16 bytes (Postgres's own verifiers may
        // come from other tools).
        let pg = "SCRAM-SHA-256$4096:c3BhcnNlLXNhbHQtMDEyMw==$Tp0f0lrXX9iLvWX4x0aQW6d2y6UoZQ5Ck0Pn4i7Fqkg=:8sPdLHpyVBfU8JcHVrhhbOEs+9Xd3Qk0p1VGgrXVH5o=";
        assert!(Verifier::parse(pg).is_some());
        for bad in ["", "SCRAM-SHA-256$", "md5abc", "SCRAM-SHA-256$0:c2FsdA==$a:b", "SCRAM-SHA-256$4096:c2FsdA==$YQ==:YQ=="] {
            assert!(Verifier::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let v = Verifier::mock("nobody");
        for first in [&b""[..], b"x", b"n", b"n,", b"n,,", b"n,,n=u", b"n,,r=", b"p=tls-server-end-point,,n=u,r=abc", b"\xff\xfe"] {
            assert!(Exchange::start(first, v.clone()).is_err(), "{first:?}");
        }
        let (exchange, _) = Exchange::start(b"n,,n=u,r=abc", v).unwrap();
        for last in [&b""[..], b"p=", b"c=biws,r=abc,p=AAAA", b"c=!!,r=x,p=AAAA", b"c=eSws,r=abc,p=AAAA"] {
            assert!(exchange.finish(last).is_err(), "{last:?}");
        }
    }
}
