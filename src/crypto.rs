//! Cryptographic helpers: random tokens, AES-256-GCM sealing of records,
//! key derivation, hashing and constant-time comparison. Everything here uses
//! well-kept crates (aes-gcm, hkdf, sha2, subtle); nothing is hand-rolled.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hkdf::Hkdf;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `n` random bytes from the thread's CSPRNG (ChaCha12 seeded and
/// periodically reseeded from the operating system).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// A URL-safe random token carrying `bytes * 8` bits of entropy.
pub fn random_token(bytes: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(bytes))
}

/// base64url(SHA-256(input)) without padding (PKCE S256, token hashes).
pub fn sha256_b64url(input: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(input))
}

/// Compares two secrets in constant time (for equal lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Derives `N` bytes from an operator secret with HKDF-SHA256; `purpose`
/// separates keys derived from the same secret.
pub fn derive_key<const N: usize>(secret: &[u8], purpose: &str) -> [u8; N] {
    let hkdf = Hkdf::<Sha256>::new(Some(b"mcp-oauth-proxy"), secret);
    let mut key = [0u8; N];
    hkdf.expand(purpose.as_bytes(), &mut key)
        .expect("HKDF-SHA256 can expand up to 8160 bytes");
    key
}

const NONCE_LEN: usize = 12;
const SEALED_PREFIX: u8 = 1;
const CLEAR_PREFIX: u8 = 0;

/// Seals records at rest with AES-256-GCM: a random nonce per record and the
/// record's key as associated data, so a ciphertext moved to another key does
/// not open.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<Aes256Gcm>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("encrypted", &self.cipher.is_some())
            .finish()
    }
}

/// A sealed record failed to open: wrong key, tampered, or moved.
#[derive(Debug, thiserror::Error)]
#[error("record could not be decrypted")]
pub struct OpenError;

impl Sealer {
    /// A sealer whose AES-256 key is derived from `secret` with HKDF-SHA256.
    pub fn new(secret: &[u8]) -> Self {
        let key: [u8; 32] = derive_key(secret, "token-vault aes-256-gcm");
        Sealer {
            cipher: Some(Aes256Gcm::new(&key.into())),
        }
    }

    /// A sealer that stores records in clear (`OAUTH_PROXY_ENCRYPTION_KEY=false`).
    pub fn disabled() -> Self {
        Sealer { cipher: None }
    }

    pub fn seal(&self, record_key: &str, plaintext: &[u8]) -> Vec<u8> {
        let Some(cipher) = &self.cipher else {
            let mut out = Vec::with_capacity(plaintext.len() + 1);
            out.push(CLEAR_PREFIX);
            out.extend_from_slice(plaintext);
            return out;
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: record_key.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEALED_PREFIX);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn open(&self, record_key: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        match (sealed.split_first(), &self.cipher) {
            (Some((&CLEAR_PREFIX, rest)), None) => Ok(rest.to_vec()),
            (Some((&SEALED_PREFIX, rest)), Some(cipher)) if rest.len() > NONCE_LEN => {
                let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
                cipher
                    .decrypt(
                        Nonce::from_slice(nonce),
                        Payload {
                            msg: ciphertext,
                            aad: record_key.as_bytes(),
                        },
                    )
                    .map_err(|_| OpenError)
            }
            _ => Err(OpenError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_only_under_its_own_key() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let sealed = sealer.seal("grant:1", b"upstream-token");
        assert!(!sealed.windows(14).any(|w| w == b"upstream-token"));
        assert_eq!(sealer.open("grant:1", &sealed).unwrap(), b"upstream-token");
        assert!(sealer.open("grant:2", &sealed).is_err());
        let other = Sealer::new(b"another-secret-another-secret-xx");
        assert!(other.open("grant:1", &sealed).is_err());
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        assert_ne!(sealer.seal("k", b"same"), sealer.seal("k", b"same"));
    }

    #[test]
    fn a_tampered_record_does_not_open() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let mut sealed = sealer.seal("k", b"secret");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(sealer.open("k", &sealed).is_err());
    }

    #[test]
    fn disabled_sealing_round_trips_in_clear() {
        let sealer = Sealer::disabled();
        assert_eq!(sealer.open("k", &sealer.seal("k", b"x")).unwrap(), b"x");
    }

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            sha256_b64url(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
