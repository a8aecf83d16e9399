//! Cryptographic helpers: random tokens, AES-256-GCM sealing of records,
//! key derivation, hashing and constant-time comparison. Everything here uses
//! well-kept crates (aes-gcm, hkdf, sha2, subtle); nothing is hand-rolled.

use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
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

/// The keys the browser-facing cookies use, derived from
/// `OAUTH_PROXY_CONSENT_SIGNING_KEY` (the cookie library wants 64 bytes).
pub struct CookieKeys {
    /// Signs and encrypts the browser session cookie.
    pub session: [u8; 64],
    /// Signed the browser-binding and remembered-consent cookies of earlier
    /// releases; still read so that those browsers keep their session.
    pub legacy_signed: [u8; 64],
}

impl CookieKeys {
    pub fn derive(secret: &[u8]) -> Self {
        CookieKeys {
            session: derive_key(secret, "browser-session-cookie"),
            legacy_signed: derive_key(secret, "consent-cookie"),
        }
    }
}

impl std::fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKeys(..)")
    }
}

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SEALED_PREFIX: u8 = 1;
const CLEAR_PREFIX: u8 = 0;

/// Seals records at rest with AES-256-GCM (the aes-gcm crate, as the design
/// card says): a random nonce per record and the record's key as associated
/// data, so a ciphertext moved to another key does not open. Layout: a
/// prefix byte, the 12-byte nonce, the ciphertext and its 16-byte tag: the
/// layout earlier releases wrote with aws-lc-rs, so their records open.
/// Encryption and decryption work in place in the record's buffer.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<Arc<Aes256Gcm>>,
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
            cipher: Some(Arc::new(Aes256Gcm::new(&key.into()))),
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
        let mut out = Vec::with_capacity(1 + NONCE_LEN + size_hint + TAG_LEN);
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
        // aes-gcm fails only for a message over 64 GiB.
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), record_key, &mut out[1 + NONCE_LEN..])
            .expect("AES-GCM encryption of an in-memory record cannot fail");
        out.extend_from_slice(&tag);
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
            (Some((&mut SEALED_PREFIX, rest)), Some(cipher)) if rest.len() >= NONCE_LEN + TAG_LEN => {
                let (nonce, sealed_text) = rest.split_at_mut(NONCE_LEN);
                let (ciphertext, tag) = sealed_text.split_at_mut(sealed_text.len() - TAG_LEN);
                cipher
                    .decrypt_in_place_detached(Nonce::from_slice(nonce), record_key, ciphertext, Tag::from_slice(tag))
                    .map_err(|_| OpenError)?;
                Ok(ciphertext)
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

    /// How the previous release sealed records (aws-lc-rs, kept here only to
    /// prove the format did not change).
    fn seal_as_the_aws_lc_rs_release(secret: &[u8], record_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
        let key: [u8; 32] = derive_key(secret, "token-vault aes-256-gcm");
        let cipher = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let nonce = [7u8; NONCE_LEN];
        let mut sealed = vec![SEALED_PREFIX];
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record_key),
                &mut sealed[1 + NONCE_LEN..],
            )
            .unwrap();
        sealed.extend_from_slice(tag.as_ref());
        sealed
    }

    /// Records sealed by the aws-lc-rs release open with the aes-gcm sealer,
    /// and records it seals open with aws-lc-rs (a downgrade reads them).
    #[test]
    fn records_sealed_by_the_aws_lc_rs_release_open_and_the_other_way_round() {
        use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
        let secret = b"0123456789abcdef0123456789abcdef";
        let sealer = Sealer::new(secret);
        let old = seal_as_the_aws_lc_rs_release(secret, b"grant:1", b"upstream-token");
        assert_eq!(sealer.open(b"grant:1", &old).unwrap(), b"upstream-token");
        assert!(sealer.open(b"grant:2", &old).is_err(), "bound to its record key");

        let key: [u8; 32] = derive_key(secret, "token-vault aes-256-gcm");
        let cipher = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let mut new = sealer.seal(b"grant:1", b"upstream-token");
        let (prefix, rest) = new.split_at_mut(1);
        assert_eq!(prefix, [SEALED_PREFIX]);
        let (nonce, ciphertext) = rest.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).unwrap();
        let plain = cipher.open_in_place(nonce, Aad::from(b"grant:1"), ciphertext).unwrap();
        assert_eq!(plain, b"upstream-token");
    }

    /// A record the aws-lc-rs release sealed (captured from it before the
    /// switch: secret `0123456789abcdef0123456789abcdef`, record key
    /// `grant:1`) opens with the aes-gcm sealer.
    #[test]
    fn a_record_captured_from_the_aws_lc_rs_release_opens() {
        const SEALED_BY_THE_AWS_LC_RS_RELEASE: &str = "0153f68584c9db5cd5c226c89d35c287be221854b693599e3518df283901b576d4deaa92283263aaab2b3c3dbb0ab8e454df37953890db3d4ad63ea1eed87b";
        let mut sealed: Vec<u8> = (0..SEALED_BY_THE_AWS_LC_RS_RELEASE.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&SEALED_BY_THE_AWS_LC_RS_RELEASE[i..i + 2], 16).unwrap())
            .collect();
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        assert_eq!(
            sealer.open_in_place(b"grant:1", &mut sealed).unwrap(),
            b"upstream-token sealed by aws-lc-rs"
        );
    }

    #[test]
    fn a_record_too_short_to_hold_a_nonce_and_tag_does_not_open() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        for len in 0..1 + NONCE_LEN + TAG_LEN {
            let mut short = vec![SEALED_PREFIX; len];
            assert!(sealer.open_in_place(b"k", &mut short).is_err());
        }
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
