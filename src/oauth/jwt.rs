//! The proxy's own tokens in swap mode: signed JWTs whose `jti` maps to the
//! upstream token set in the vault.
//!
//! Verification accepts only the configured algorithm (so no `alg=none` and no
//! HS/RS confusion), checks `iss`, `aud`, `exp`, and the token type: an access
//! token is never accepted as a refresh token, nor the reverse.

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
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

/// The claims of a token being issued, borrowed from its grant: what
/// [`Claims`] reads back. The grant keeps its upstream claims as a JSON
/// object; they are spliced into the payload as they are, not parsed and
/// cloned for each token.
#[derive(Debug, Serialize)]
pub struct IssuedClaims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub sub: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub jti: &'a str,
    pub iat: u64,
    pub exp: u64,
    pub token_use: TokenUse,
    /// A JSON object of claims outside [`RESERVED_CLAIMS`].
    #[serde(skip)]
    pub extra_json: &'a str,
}

/// Appends the members of the JSON object `extra` to the JSON object that
/// ends `payload`.
fn splice_members(payload: &mut Vec<u8>, extra: &str) {
    let members = extra
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .map(str::trim)
        .unwrap_or_default();
    if members.is_empty() || payload.last() != Some(&b'}') {
        return;
    }
    payload.pop();
    payload.push(b',');
    payload.extend_from_slice(members.as_bytes());
    payload.push(b'}');
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token is not valid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("token is a {found:?} token, expected {expected:?}")]
    WrongType { expected: TokenUse, found: TokenUse },
}

impl JwtError {
    /// A short description for clients (`error_description`): what is wrong,
    /// without library internals or the accepted algorithms.
    pub fn public_description(&self) -> &'static str {
        use jsonwebtoken::errors::ErrorKind;
        match self {
            JwtError::WrongType {
                expected: TokenUse::Access,
                ..
            } => "the token is not an access token",
            JwtError::WrongType { .. } => "the token is not a refresh token",
            JwtError::Invalid(e) => match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::InvalidAudience => "the token is meant for another resource",
                ErrorKind::InvalidIssuer => "the token was issued by another server",
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => "the token signature is not valid",
                _ => "the token is malformed",
            },
        }
    }
}

/// Why a signing set-up could not be built.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
}

/// A new PKCS#8 private key PEM for ES256 (P-256) or EdDSA (Ed25519).
pub fn generate_private_pem(algorithm: Algorithm) -> Option<String> {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::Engine;
    let rng = SystemRandom::new();
    let der = match algorithm {
        Algorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .ok()?
            .as_ref()
            .to_vec(),
        // jsonwebtoken reads PKCS#8 v1 Ed25519 keys.
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&rng).ok()?.as_ref().to_vec(),
        _ => return None,
    };
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    Some(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    ))
}

/// A key the proxy accepts signatures from.
#[derive(Clone)]
struct VerificationKey {
    kid: Option<String>,
    key: DecodingKey,
}

/// Signs proxy tokens with the current key and verifies them with the current
/// key or a previous one kept for rotation.
#[derive(Clone)]
pub struct TokenSigner {
    algorithm: Algorithm,
    encoding: EncodingKey,
    /// HS256 signs with this key, set up once: jsonwebtoken sets up an
    /// HMAC key for every token it signs.
    hmac_key: Option<aws_lc_rs::hmac::Key>,
    kid: Option<String>,
    verification: Vec<VerificationKey>,
    validation: Validation,
    /// The public keys (asymmetric algorithms only), served at `/jwks.json`.
    jwks: Option<JwkSet>,
    /// Distinguishes signers (and their keys) in the verified-token cache.
    id: u64,
    /// The encoded JOSE headers of access and refresh tokens, which never
    /// change: built once instead of for every token.
    encoded_headers: EncodedHeaders,
}

/// Base64url JSON headers, by token use (see [`TokenSigner::sign`]).
#[derive(Clone)]
struct EncodedHeaders {
    access: String,
    refresh: String,
}

impl EncodedHeaders {
    fn new(algorithm: Algorithm, kid: Option<&str>) -> Self {
        let encode = |typ: &str| {
            let mut header = Header::new(algorithm);
            header.kid = kid.map(str::to_string);
            header.typ = Some(typ.to_string());
            let json = serde_json::to_vec(&header).expect("a JOSE header serializes");
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, json)
        };
        EncodedHeaders {
            // RFC 9068 §2.1 media type for JWT access tokens.
            access: encode("at+jwt"),
            refresh: encode("JWT"),
        }
    }
}

/// Access tokens this thread has fully verified, by signer: a client sends
/// the same token with every MCP request, and signature checking and JSON
/// parsing are the largest part of a guarded request's CPU. Only tokens that
/// passed every check are kept; expiry is checked on every use, and
/// revocation is not cached at all (the vault is asked each time).
const VERIFIED_CACHE_CAPACITY: usize = 4096;

/// Verified claims and the id of the signer that verified them, by token
/// (keyed by the token alone so a lookup needs no copy of it).
/// foldhash, randomly seeded per process: SipHash over a whole JWT was a
/// measurable share of a guarded request, and only verified tokens are ever
/// inserted, so callers cannot choose colliding keys.
type VerifiedTokens = std::collections::HashMap<Box<str>, (u64, std::sync::Arc<Claims>), foldhash::fast::RandomState>;

thread_local! {
    static VERIFIED: std::cell::RefCell<VerifiedTokens> = std::cell::RefCell::new(VerifiedTokens::default());
}

fn next_signer_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish()
    }
}

fn validation(algorithm: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    // The proxy is both issuer and verifier: no clock skew to allow for.
    validation.leeway = 0;
    validation
}

/// A public JWK with its RFC 7638 thumbprint as `kid`, `use: sig` and `alg`.
fn public_jwk(key: &EncodingKey, algorithm: Algorithm) -> Result<(Jwk, String), jsonwebtoken::errors::Error> {
    let mut jwk = Jwk::from_encoding_key(key, algorithm)?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((jwk, kid))
}

impl TokenSigner {
    /// An HS256 signer keyed by the secret's UTF-8 bytes, as given, so a
    /// resource server holding the same string can verify the tokens.
    pub fn hs256(secret: &[u8], issuer: &str, audience: &str) -> Self {
        TokenSigner {
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            hmac_key: Some(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret)),
            kid: None,
            verification: vec![VerificationKey {
                kid: None,
                key: DecodingKey::from_secret(secret),
            }],
            validation: validation(Algorithm::HS256, issuer, audience),
            jwks: None,
            id: next_signer_id(),
            encoded_headers: EncodedHeaders::new(Algorithm::HS256, None),
        }
    }

    /// An ES256 or EdDSA signer from a PKCS#8 private key PEM.
    pub fn asymmetric(
        algorithm: Algorithm,
        private_pem: &[u8],
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyError> {
        let invalid = |e: jsonwebtoken::errors::Error| KeyError::Invalid("OAUTH_PROXY_JWT_PRIVATE_KEY", e.to_string());
        let encoding = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem),
            _ => {
                return Err(KeyError::Invalid(
                    "OAUTH_PROXY_JWT_ALGORITHM",
                    "not an asymmetric algorithm".into(),
                ))
            }
        }
        .map_err(invalid)?;
        Self::from_asymmetric_key(algorithm, encoding, issuer, audience).map_err(invalid)
    }

    /// An ES256 or EdDSA signer with a freshly generated key.
    pub fn generated(algorithm: Algorithm, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let pem = generate_private_pem(algorithm)
            .ok_or_else(|| KeyError::Invalid("OAUTH_PROXY_JWT_PRIVATE_KEY", "key generation failed".into()))?;
        Self::asymmetric(algorithm, pem.as_bytes(), issuer, audience)
    }

    fn from_asymmetric_key(
        algorithm: Algorithm,
        encoding: EncodingKey,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        let (jwk, kid) = public_jwk(&encoding, algorithm)?;
        let decoding = DecodingKey::from_jwk(&jwk)?;
        Ok(TokenSigner {
            algorithm,
            encoding,
            hmac_key: None,
            encoded_headers: EncodedHeaders::new(algorithm, Some(&kid)),
            kid: Some(kid.clone()),
            verification: vec![VerificationKey {
                kid: Some(kid),
                key: decoding,
            }],
            validation: validation(algorithm, issuer, audience),
            jwks: Some(JwkSet { keys: vec![jwk] }),
            id: next_signer_id(),
        })
    }

    /// Keeps accepting tokens signed with a previous key (rotation overlap):
    /// the old HS256 secret, or the old public or private key PEM.
    pub fn with_previous_key(mut self, previous: &[u8]) -> Result<Self, KeyError> {
        let invalid = |e: jsonwebtoken::errors::Error| KeyError::Invalid("OAUTH_PROXY_JWT_PREVIOUS_KEY", e.to_string());
        let (key, jwk) = match self.algorithm {
            Algorithm::HS256 => (DecodingKey::from_secret(previous), None),
            algorithm => {
                let is_private = previous.windows(11).any(|w| w == b"PRIVATE KEY");
                let jwk = if is_private {
                    let encoding = match algorithm {
                        Algorithm::ES256 => EncodingKey::from_ec_pem(previous),
                        _ => EncodingKey::from_ed_pem(previous),
                    }
                    .map_err(invalid)?;
                    public_jwk(&encoding, algorithm).map_err(invalid)?.0
                } else {
                    let decoding = match algorithm {
                        Algorithm::ES256 => DecodingKey::from_ec_pem(previous),
                        _ => DecodingKey::from_ed_pem(previous),
                    }
                    .map_err(invalid)?;
                    let mut jwk = Jwk::from_decoding_key(&decoding, Some(algorithm)).map_err(invalid)?;
                    jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256).map_err(invalid)?);
                    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
                    jwk
                };
                (DecodingKey::from_jwk(&jwk).map_err(invalid)?, Some(jwk))
            }
        };
        let kid = jwk.as_ref().and_then(|j| j.common.key_id.clone());
        self.verification.push(VerificationKey { kid, key });
        if let (Some(jwks), Some(jwk)) = (self.jwks.as_mut(), jwk) {
            jwks.keys.push(jwk);
        }
        Ok(self)
    }

    /// The JWK Set to publish, for asymmetric algorithms.
    pub fn jwks(&self) -> Option<&JwkSet> {
        self.jwks.as_ref()
    }

    /// A compact JWS (RFC 7515 §7.1) of the claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let extra_json = serde_json::to_string(&claims.extra)?;
        self.sign_issued(&IssuedClaims {
            iss: &claims.iss,
            aud: &claims.aud,
            sub: &claims.sub,
            client_id: &claims.client_id,
            scope: &claims.scope,
            jti: &claims.jti,
            iat: claims.iat,
            exp: claims.exp,
            token_use: claims.token_use,
            extra_json: &extra_json,
        })
    }

    /// A compact JWS (RFC 7515 §7.1) of a token being issued: what
    /// `jsonwebtoken::encode` builds, with the header encoded once per
    /// signer and, for HS256, the HMAC key set up once.
    pub fn sign_issued(&self, claims: &IssuedClaims) -> Result<String, jsonwebtoken::errors::Error> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let header = match claims.token_use {
            TokenUse::Access => &self.encoded_headers.access,
            TokenUse::Refresh => &self.encoded_headers.refresh,
        };
        let mut payload = serde_json::to_vec(claims)?;
        splice_members(&mut payload, claims.extra_json);
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        match &self.hmac_key {
            Some(key) => {
                let tag = aws_lc_rs::hmac::sign(key, token.as_bytes());
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
            }
            None => {
                let signature = jsonwebtoken::crypto::sign(token.as_bytes(), &self.encoding, self.algorithm)?;
                token.push('.');
                token.push_str(&signature);
            }
        }
        Ok(token)
    }

    /// [`TokenSigner::verify`] for access tokens, remembering tokens that
    /// passed on this thread so a repeated token costs a map lookup and an
    /// expiry check.
    pub fn verify_access(&self, token: &str) -> Result<std::sync::Arc<Claims>, JwtError> {
        let now = super::now_secs();
        let cached = VERIFIED.with(|cache| {
            cache
                .borrow()
                .get(token)
                .filter(|(signer, _)| *signer == self.id)
                .map(|(_, claims)| claims.clone())
        });
        if let Some(claims) = cached {
            if claims.exp > now {
                return Ok(claims);
            }
            VERIFIED.with(|cache| cache.borrow_mut().remove(token));
            return Err(JwtError::Invalid(
                jsonwebtoken::errors::ErrorKind::ExpiredSignature.into(),
            ));
        }
        let claims = std::sync::Arc::new(self.verify(token, TokenUse::Access)?);
        VERIFIED.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() >= VERIFIED_CACHE_CAPACITY {
                cache.retain(|_, (_, c)| c.exp > now);
                if cache.len() >= VERIFIED_CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(token.into(), (self.id, claims.clone()));
        });
        Ok(claims)
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and type, with
    /// the key the header names (or each key in turn when it names none).
    pub fn verify(&self, token: &str, expected: TokenUse) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token)?;
        let mut last_error = None;
        for candidate in &self.verification {
            if header.kid.is_some() && candidate.kid.is_some() && header.kid != candidate.kid {
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, &candidate.key, &self.validation) {
                Ok(data) => {
                    if data.claims.token_use != expected {
                        return Err(JwtError::WrongType {
                            expected,
                            found: data.claims.token_use,
                        });
                    }
                    return Ok(data.claims);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(JwtError::Invalid(last_error.unwrap_or_else(|| {
            jsonwebtoken::errors::ErrorKind::InvalidSignature.into()
        })))
    }
}

#[cfg(test)]
mod tests;
