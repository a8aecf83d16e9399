//! The proxy's own tokens in swap mode: signed JWTs whose `jti` maps to the
//! upstream token set in the vault.
//!
//! Verification accepts only the configured algorithm (so no `alg=none` and no
//! HS/RS confusion), checks `iss`, `aud`, `exp`, and the token type: an access
//! token is never accepted as a refresh token, nor the reverse.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Access or refresh: carried in the `token_use` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenUse {
    Access,
    Refresh,
}

/// Claims the proxy sets itself; custom claims never override them.
pub const RESERVED_CLAIMS: [&str; 11] = [
    "iss",
    "aud",
    "sub",
    "client_id",
    "scope",
    "jti",
    "iat",
    "exp",
    "nbf",
    "token_use",
    "gid",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub client_id: String,
    pub scope: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    pub token_use: TokenUse,
    /// Upstream claims copied per `OAUTH_PROXY_CUSTOM_CLAIMS`.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token is not valid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token is a {found:?} token, expected {expected:?}")]
    WrongType { expected: TokenUse, found: TokenUse },
}

/// Signs and verifies proxy tokens with one key.
#[derive(Clone)]
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    algorithm: Algorithm,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl TokenSigner {
    /// An HS256 signer keyed by the secret's UTF-8 bytes, as given, so a
    /// resource server holding the same string can verify the tokens.
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        // The proxy is both issuer and verifier: no clock skew to allow for.
        validation.leeway = 0;
        TokenSigner {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            algorithm: Algorithm::HS256,
        }
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.algorithm);
        // RFC 9068 §2.1 media type for JWT access tokens.
        header.typ = Some(match claims.token_use {
            TokenUse::Access => "at+jwt".into(),
            TokenUse::Refresh => "JWT".into(),
        });
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and type.
    pub fn verify(&self, token: &str, expected: TokenUse) -> Result<Claims, JwtError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        if data.claims.token_use != expected {
            return Err(JwtError::WrongType {
                expected,
                found: data.claims.token_use,
            });
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn signer() -> TokenSigner {
        TokenSigner::hs256(
            b"a-test-signing-key-of-at-least-32-bytes",
            "https://proxy",
            "https://proxy/mcp",
        )
    }

    fn claims(token_use: TokenUse) -> Claims {
        let now = crate::oauth::now_secs();
        Claims {
            iss: "https://proxy".into(),
            aud: "https://proxy/mcp".into(),
            sub: "user".into(),
            client_id: "client".into(),
            scope: "read".into(),
            jti: "jti-1".into(),
            iat: now,
            exp: now + 60,
            token_use,
            extra: Map::new(),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_keeps_its_claims() {
        let token = signer().sign(&claims(TokenUse::Access)).unwrap();
        assert_eq!(
            signer().verify(&token, TokenUse::Access).unwrap(),
            claims(TokenUse::Access)
        );
    }

    #[test]
    fn access_and_refresh_tokens_are_not_interchangeable() {
        let access = signer().sign(&claims(TokenUse::Access)).unwrap();
        let refresh = signer().sign(&claims(TokenUse::Refresh)).unwrap();
        assert!(matches!(
            signer().verify(&access, TokenUse::Refresh),
            Err(JwtError::WrongType { .. })
        ));
        assert!(matches!(
            signer().verify(&refresh, TokenUse::Access),
            Err(JwtError::WrongType { .. })
        ));
    }

    #[test]
    fn alg_none_and_edited_payloads_are_refused() {
        let token = signer().sign(&claims(TokenUse::Access)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(signer()
            .verify(&format!("{none_header}.{}.", parts[1]), TokenUse::Access)
            .is_err());
        let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = "admin".into();
        let edited = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert!(signer()
            .verify(&format!("{}.{edited}.{}", parts[0], parts[2]), TokenUse::Access)
            .is_err());
    }

    #[test]
    fn expired_and_foreign_audience_tokens_are_refused() {
        let mut expired = claims(TokenUse::Access);
        expired.exp = expired.iat - 1;
        let token = signer().sign(&expired).unwrap();
        assert!(signer().verify(&token, TokenUse::Access).is_err());
        let mut foreign = claims(TokenUse::Access);
        foreign.aud = "https://other/mcp".into();
        let token = signer().sign(&foreign).unwrap();
        assert!(signer().verify(&token, TokenUse::Access).is_err());
    }
}
