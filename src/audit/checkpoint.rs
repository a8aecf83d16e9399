//! Signed checkpoints: now and then the writer adds a line
//! `{"time":…,"event":"audit.checkpoint","outcome":"success","mac":"<hex>",…,"seq":N,"prev":H}`
//! whose `mac` is an HMAC-SHA-256 over the chain state (`seq`, `prev`) and
//! the line's `time` and `instance`. The hash chain alone shows a change
//! to anyone who does not rewrite every later line; a checkpoint also
//! catches a rewritten chain, because forging one needs the key, which is
//! derived from `OAUTH_PROXY_CONSENT_SIGNING_KEY` (configured or kept in the
//! data directory) and never written to the log.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::chain::hex;

/// The `event` of a checkpoint line.
pub const CHECKPOINT_EVENT: &str = "audit.checkpoint";

/// A checkpoint after this many lines: at most this many lines trail the
/// last signature when the process dies (a checkpoint is also written at
/// each stop), at the cost of one extra line per thousand.
pub const CHECKPOINT_EVERY_LINES: u64 = 1000;

/// ... and at least this often while lines are being written, so a quiet
/// service still signs its recent lines within a minute.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// HKDF info for the checkpoint key: distinct from every other key derived
/// from the same secret (the cookie keys).
const KEY_PURPOSE: &str = "mcp-oauth-proxy audit checkpoint v1";

/// The checkpoint key (32 bytes, HKDF-SHA-256 of the consent signing key).
#[derive(Clone)]
pub struct CheckpointKey([u8; 32]);

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointKey(..)")
    }
}

impl CheckpointKey {
    /// Derives the key from the consent signing key's bytes (as the service
    /// resolves them: configured, or kept in `<dir>/keys.json`).
    pub fn derive(consent_signing_key: &[u8]) -> CheckpointKey {
        CheckpointKey(crate::crypto::derive_key::<32>(consent_signing_key, KEY_PURPOSE))
    }

    fn mac(&self, seq: u64, prev_hex: &str, time: &str, instance: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(format!("{KEY_PURPOSE}\n{seq}\n{prev_hex}\n{time}\n{instance}").as_bytes());
        mac
    }

    /// The hex HMAC a checkpoint line with these fields carries.
    pub fn sign(&self, seq: u64, prev_hex: &str, time: &str, instance: &str) -> String {
        hex(&self.mac(seq, prev_hex, time, instance).finalize().into_bytes())
    }

    /// Whether `mac_hex` is the HMAC of these fields (compared in constant time).
    pub fn verify(&self, seq: u64, prev_hex: &str, time: &str, instance: &str, mac_hex: &str) -> bool {
        match decode_hex(mac_hex) {
            Some(given) => self.mac(seq, prev_hex, time, instance).verify_slice(&given).is_ok(),
            None => false,
        }
    }
}

/// The fields of a checkpoint line (a JSON object, for
/// [`super::chain::ChainState::append`]) that will carry `seq` and `prev_hex`.
pub fn checkpoint_fields(key: &CheckpointKey, seq: u64, prev_hex: &str, time: &str, instance: &str) -> Vec<u8> {
    format!(
        r#"{{"event":"{CHECKPOINT_EVENT}","outcome":"success","mac":"{}"}}"#,
        key.sign(seq, prev_hex, time, instance)
    )
    .into_bytes()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_with_the_same_key_and_chain_state() {
        let key = CheckpointKey::derive(b"a consent signing key of 32 chars!");
        let prev = "ab".repeat(32);
        let mac = key.sign(7, &prev, "T", "inst");
        assert!(key.verify(7, &prev, "T", "inst", &mac));
        assert!(!key.verify(8, &prev, "T", "inst", &mac), "another seq");
        assert!(!key.verify(7, &"cd".repeat(32), "T", "inst", &mac), "another prev");
        assert!(!key.verify(7, &prev, "T2", "inst", &mac), "another time");
        assert!(!key.verify(7, &prev, "T", "other", &mac), "another instance");
        let other = CheckpointKey::derive(b"another consent signing key, 32+");
        assert!(!other.verify(7, &prev, "T", "inst", &mac), "another key");
        assert!(!key.verify(7, &prev, "T", "inst", "zz"), "not hex");
    }

    #[test]
    fn the_checkpoint_key_is_not_the_cookie_key() {
        let secret = b"a consent signing key of 32 chars!";
        let key = CheckpointKey::derive(secret);
        let cookies = crate::crypto::CookieKeys::derive(secret);
        assert_ne!(&key.0[..], &cookies.session[..32]);
        assert_ne!(&key.0[..], &cookies.legacy_signed[..32]);
        assert_ne!(&key.0[..], &secret[..32]);
    }
}
