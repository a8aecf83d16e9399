//! Cryptographic helpers: random tokens, AES-256-GCM sealing of records,
//! key derivation, hashing and constant-time comparison. Everything here uses
//! well-kept crates (aws-lc-rs, hkdf, sha2, subtle); nothing is hand-rolled.

use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
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
    // Tokens are short: their random bytes need no allocation of their own.
    let mut buffer = [0u8; 64];
    match buffer.get_mut(..bytes) {
        Some(random) => {
            rand::thread_rng().fill_bytes(random);
            URL_SAFE_NO_PAD.encode(random)
        }
        None => URL_SAFE_NO_PAD.encode(random_bytes(bytes)),
    }
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
/// not open. Layout: a prefix byte, the 12-byte nonce, the ciphertext and its
/// 16-byte tag. AES-GCM comes from aws-lc-rs (already in the tree through
/// rustls and jsonwebtoken): several times faster than the aes-gcm crate on
/// these small records, which every refresh seals and opens five times.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<Arc<LessSafeKey>>,
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
        let key = UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key is a valid AES-256 key");
        Sealer {
            cipher: Some(Arc::new(LessSafeKey::new(key))),
        }
    }

    /// A sealer that stores records in clear (`OAUTH_PROXY_ENCRYPTION_KEY=false`).
    pub fn disabled() -> Self {
        Sealer { cipher: None }
    }

    pub fn seal(&self, record_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let sealed: Result<_, std::convert::Infallible> = self.seal_with(record_key, plaintext.len(), |out| {
            out.extend_from_slice(plaintext);
            Ok(())
        });
        sealed.unwrap_or_else(|never| match never {})
    }

    /// Seals what `write` appends to the buffer: a record serialized
    /// straight into the buffer it is encrypted in, with no copy between.
    /// `size_hint` is the plaintext length (the buffer is sized for it).
    pub fn seal_with<E>(
        &self,
        record_key: &[u8],
        size_hint: usize,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Vec<u8>, E> {
        let mut out = Vec::with_capacity(1 + NONCE_LEN + size_hint + AES_256_GCM.tag_len());
        let Some(cipher) = &self.cipher else {
            out.push(CLEAR_PREFIX);
            write(&mut out)?;
            return Ok(out);
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        out.push(SEALED_PREFIX);
        out.extend_from_slice(&nonce);
        write(&mut out)?;
        let tag = cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record_key),
                &mut out[1 + NONCE_LEN..],
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    pub fn open(&self, record_key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut buffer = sealed.to_vec();
        Ok(self.open_in_place(record_key, &mut buffer)?.to_vec())
    }

    /// Opens a sealed record where it lies (no copy): answers the plaintext,
    /// a part of `sealed`.
    pub fn open_in_place<'a>(&self, record_key: &[u8], sealed: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        match (sealed.split_first_mut(), &self.cipher) {
            (Some((&mut CLEAR_PREFIX, rest)), None) => Ok(rest),
            (Some((&mut SEALED_PREFIX, rest)), Some(cipher)) if rest.len() >= NONCE_LEN + AES_256_GCM.tag_len() => {
                let (nonce, ciphertext) = rest.split_at_mut(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
                let plain = cipher
                    .open_in_place(nonce, Aad::from(record_key), ciphertext)
                    .map_err(|_| OpenError)?;
                Ok(plain)
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
        let sealed = sealer.seal(b"grant:1", b"upstream-token");
        assert!(!sealed.windows(14).any(|w| w == b"upstream-token"));
        assert_eq!(sealer.open(b"grant:1", &sealed).unwrap(), b"upstream-token");
        assert!(sealer.open(b"grant:2", &sealed).is_err());
        let other = Sealer::new(b"another-secret-another-secret-xx");
        assert!(other.open(b"grant:1", &sealed).is_err());
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        assert_ne!(sealer.seal(b"k", b"same"), sealer.seal(b"k", b"same"));
    }

    #[test]
    fn a_tampered_record_does_not_open() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let mut sealed = sealer.seal(b"k", b"secret");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(sealer.open(b"k", &sealed).is_err());
    }

    /// Records sealed before the switch to aws-lc-rs (by the aes-gcm crate)
    /// still open, and the other way round: the format did not change.
    #[test]
    fn records_sealed_by_the_aes_gcm_crate_still_open() {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let secret = b"0123456789abcdef0123456789abcdef";
        let key: [u8; 32] = derive_key(secret, "token-vault aes-256-gcm");
        let old = aes_gcm::Aes256Gcm::new(&key.into());
        let nonce = [7u8; NONCE_LEN];
        let ciphertext = old
            .encrypt(
                aes_gcm::Nonce::from_slice(&nonce),
                Payload {
                    msg: b"upstream-token",
                    aad: b"grant:1",
                },
            )
            .unwrap();
        let mut sealed = vec![SEALED_PREFIX];
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        let sealer = Sealer::new(secret);
        assert_eq!(sealer.open(b"grant:1", &sealed).unwrap(), b"upstream-token");

        let new = sealer.seal(b"grant:1", b"upstream-token");
        let plain = old
            .decrypt(
                aes_gcm::Nonce::from_slice(&new[1..1 + NONCE_LEN]),
                Payload {
                    msg: &new[1 + NONCE_LEN..],
                    aad: b"grant:1",
                },
            )
            .unwrap();
        assert_eq!(plain, b"upstream-token");
    }

    #[test]
    fn disabled_sealing_round_trips_in_clear() {
        let sealer = Sealer::disabled();
        assert_eq!(sealer.open(b"k", &sealer.seal(b"k", b"x")).unwrap(), b"x");
    }

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            sha256_b64url(b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
