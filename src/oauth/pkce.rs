//! PKCE (RFC 7636) with `S256` only: OAuth 2.1 §4.1.1 and the MCP
//! authorization spec require S256; `plain` and missing challenges are refused.

use crate::crypto::{constant_time_eq, random_token, sha256_b64url};

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
fn is_pkce_string(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A validated S256 code challenge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodeChallenge(String);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("code_challenge is required (PKCE with S256)")]
    Missing,
    #[error("code_challenge_method must be S256")]
    UnsupportedMethod,
    #[error("code_challenge is malformed")]
    Malformed,
}

impl CodeChallenge {
    /// Parses a challenge and its method; the method defaults to `plain` in
    /// RFC 7636 when absent, so an absent method is refused too.
    pub fn parse(challenge: Option<&str>, method: Option<&str>) -> Result<Self, PkceError> {
        let challenge = challenge.filter(|c| !c.is_empty()).ok_or(PkceError::Missing)?;
        if method != Some("S256") {
            return Err(PkceError::UnsupportedMethod);
        }
        // A SHA-256 digest in base64url without padding is exactly 43 characters.
        if challenge.len() != 43 || !is_pkce_string(challenge) {
            return Err(PkceError::Malformed);
        }
        Ok(CodeChallenge(challenge.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 7636 §4.6: BASE64URL(SHA256(verifier)) == challenge, compared in
    /// constant time.
    pub fn is_satisfied_by(&self, verifier: &str) -> bool {
        is_pkce_string(verifier) && constant_time_eq(sha256_b64url(verifier.as_bytes()).as_bytes(), self.0.as_bytes())
    }
}

/// A PKCE pair the proxy uses for its own leg to the upstream.
#[derive(Debug, Clone)]
pub struct PkcePair {
    pub verifier: String,
    pub challenge: String,
}

impl PkcePair {
    pub fn generate() -> Self {
        // 48 random bytes give a 64-character verifier (RFC 7636 §4.1: 43-128).
        let verifier = random_token(48);
        let challenge = sha256_b64url(verifier.as_bytes());
        PkcePair { verifier, challenge }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn s256_challenge_is_verified_per_rfc_7636_appendix_b() {
        let challenge = CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap();
        assert!(challenge.is_satisfied_by(VERIFIER));
        assert!(!challenge.is_satisfied_by("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK"));
    }

    #[test]
    fn plain_and_missing_methods_are_refused() {
        assert_eq!(
            CodeChallenge::parse(Some(CHALLENGE), Some("plain")),
            Err(PkceError::UnsupportedMethod)
        );
        assert_eq!(
            CodeChallenge::parse(Some(CHALLENGE), None),
            Err(PkceError::UnsupportedMethod)
        );
        assert_eq!(CodeChallenge::parse(None, Some("S256")), Err(PkceError::Missing));
        assert_eq!(
            CodeChallenge::parse(Some("short"), Some("S256")),
            Err(PkceError::Malformed)
        );
    }

    #[test]
    fn generated_pairs_verify() {
        let pair = PkcePair::generate();
        let challenge = CodeChallenge::parse(Some(&pair.challenge), Some("S256")).unwrap();
        assert!(challenge.is_satisfied_by(&pair.verifier));
    }
}
