//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, RFC 7521
//! §4.2): what a client assertion must be for the proxy to take it as the
//! client's proof of identity. No I/O here: the keys are given (fetching a
//! `jwks_uri` is `crate::client_documents`), and single use of `jti` is the
//! caller's (it needs the shared store).
//!
//! The rules:
//! - `alg` is one of [`ALLOWED_ALGORITHMS`]; `none`, the HMAC family and
//!   anything else are refused before a key is looked at, so an assertion
//!   "signed" with the client's public key as an HMAC secret never verifies;
//! - the key is chosen by `kid` (a set of one key may be used without it),
//!   and its type and curve must fit `alg` (a `kty: oct` key never does);
//! - `iss` and `sub` are the client id; `aud` is the token endpoint or the
//!   issuer (RFC 7523 §3 and draft-ietf-oauth-rfc7523bis), a string or an
//!   array holding one of them;
//! - `exp` is required, not past and at most [`MAX_ASSERTION_LIFETIME`]
//!   ahead; `nbf` and `iat` are honoured; all with [`CLOCK_LEEWAY`];
//! - `jti` is required (its single use is checked by the caller).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The signing algorithms accepted (and advertised in
/// `token_endpoint_auth_signing_alg_values_supported`).
pub const ALLOWED_ALGORITHMS: [Algorithm; 4] = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256];

/// Their names, as advertised.
pub const ALLOWED_ALGORITHM_NAMES: [&str; 4] = ["ES256", "EdDSA", "RS256", "PS256"];

/// How far in the future an assertion's `exp` may be, in seconds: an
/// assertion is made for one request and used at once (RFC 7523 §3 lets the
/// server limit it), and its `jti` must be remembered until it expires.
pub const MAX_ASSERTION_LIFETIME: u64 = 5 * 60;

/// Clock skew tolerated between the client and the proxy, in seconds, for
/// `exp`, `nbf` and `iat`.
pub const CLOCK_LEEWAY: u64 = 30;

/// Longest assertion read, in bytes (a signed JWT with an RSA-4096
/// signature is under 1.5 KiB).
pub const MAX_ASSERTION_LEN: usize = 8 * 1024;

/// Longest `jti` accepted, in bytes.
pub const MAX_JTI_LEN: usize = 256;

/// Why an assertion is refused. The message is the `error_description` of a
/// 401 `invalid_client`: it names the rule, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the client assertion is not a readable JWT")]
    Malformed,
    #[error("the client assertion is longer than {MAX_ASSERTION_LEN} bytes")]
    TooLong,
    #[error("the client assertion's alg `{0}` is not accepted (use ES256, EdDSA, RS256 or PS256)")]
    AlgorithmNotAllowed(String),
    #[error("the client assertion has a `crit` header, which is not supported")]
    CriticalHeader,
    #[error("the client assertion has no kid, and the client's key set has several keys")]
    KidRequired,
    #[error("no key of the client's key set matches the client assertion's kid")]
    UnknownKey,
    #[error("the client's key for this kid cannot verify {0} signatures")]
    KeyDoesNotFitAlgorithm(&'static str),
    #[error("the client assertion's signature does not verify")]
    BadSignature,
    #[error("the client assertion has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the client assertion's `{0}` claim is not the client id")]
    NotTheClient(&'static str),
    #[error("the client assertion's aud is neither this server's token endpoint nor its issuer")]
    WrongAudience,
    #[error("the client assertion has expired")]
    Expired,
    #[error("the client assertion's exp is more than {MAX_ASSERTION_LIFETIME} seconds ahead")]
    LivesTooLong,
    #[error("the client assertion is not valid yet (nbf or iat is in the future)")]
    NotYetValid,
    #[error("the client assertion's jti is longer than {MAX_JTI_LEN} bytes")]
    JtiTooLong,
}

/// What a verified assertion leaves for the caller: its `jti` (to be used
/// once) and its `exp` (how long to remember the `jti`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub jti: String,
    pub exp: u64,
}

/// What the assertion must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub client_id: &'a str,
    /// Accepted `aud` values: the token endpoint URL and the issuer.
    pub audiences: &'a [&'a str],
    pub now: u64,
}

/// The protected header fields read before choosing a key.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

fn segments(assertion: &str) -> Result<[&str; 3], AssertionError> {
    if assertion.len() > MAX_ASSERTION_LEN {
        return Err(AssertionError::TooLong);
    }
    let mut parts = assertion.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed);
    };
    Ok([header, payload, signature])
}

fn json_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, AssertionError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| AssertionError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AssertionError::Malformed)
}

/// The header's algorithm (if allowed) and `kid`.
fn header(assertion: &str) -> Result<(Algorithm, Option<String>), AssertionError> {
    let [header, _, _] = segments(assertion)?;
    let header: RawHeader = json_segment(header)?;
    if header.crit.is_some() {
        // RFC 7515 §4.1.11: a recipient that does not understand a critical
        // extension must refuse the JWS.
        return Err(AssertionError::CriticalHeader);
    }
    let name = header.alg.ok_or(AssertionError::Malformed)?;
    let algorithm = ALLOWED_ALGORITHM_NAMES
        .iter()
        .position(|allowed| *allowed == name)
        .map(|i| ALLOWED_ALGORITHMS[i])
        .ok_or_else(|| AssertionError::AlgorithmNotAllowed(name.chars().take(20).collect()))?;
    Ok((algorithm, header.kid))
}

/// The `sub` an assertion claims, unverified: which client to look up when
/// the request names none (RFC 7521 §4.2: `client_id` is optional). The
/// verification that follows requires it to be that client's id.
pub fn claimed_subject(assertion: &str) -> Result<String, AssertionError> {
    #[derive(Deserialize)]
    struct Subject {
        sub: Option<String>,
    }
    let [_, payload, _] = segments(assertion)?;
    let claims: Subject = json_segment(payload)?;
    claims
        .sub
        .filter(|s| !s.is_empty())
        .ok_or(AssertionError::MissingClaim("sub"))
}

/// Whether the header names no key the set has (a rotated key: the caller
/// may fetch the `jwks_uri` again and retry).
pub fn names_unknown_key(error: &AssertionError) -> bool {
    matches!(error, AssertionError::UnknownKey)
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    ALLOWED_ALGORITHMS
        .iter()
        .position(|a| *a == algorithm)
        .map_or("these", |i| ALLOWED_ALGORITHM_NAMES[i])
}

/// Whether `jwk` may verify `algorithm` signatures: its type and curve fit,
/// and its `alg`, `use` and `key_ops`, when given, allow it.
fn key_fits(jwk: &Jwk, algorithm: Algorithm) -> bool {
    let type_fits = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => ec.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => okp.curve == EllipticCurve::Ed25519,
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::PS256) => true,
        _ => false,
    };
    let common = &jwk.common;
    let alg_fits = common
        .key_algorithm
        .is_none_or(|declared| declared.to_string() == algorithm_name(algorithm));
    let use_fits = common
        .public_key_use
        .as_ref()
        .is_none_or(|key_use| *key_use == PublicKeyUse::Signature);
    let ops_fit = common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    type_fits && alg_fits && use_fits && ops_fit
}

/// The key of `keys` to verify with: the one named by `kid`, or the only one.
fn choose_key<'k>(keys: &'k JwkSet, kid: Option<&str>, algorithm: Algorithm) -> Result<&'k Jwk, AssertionError> {
    let named: Vec<&Jwk> = match kid {
        Some(kid) => keys
            .keys
            .iter()
            .filter(|k| k.common.key_id.as_deref() == Some(kid))
            .collect(),
        None if keys.keys.len() > 1 => return Err(AssertionError::KidRequired),
        None => keys.keys.iter().collect(),
    };
    if named.is_empty() {
        return Err(AssertionError::UnknownKey);
    }
    named
        .into_iter()
        .find(|k| key_fits(k, algorithm))
        .ok_or(AssertionError::KeyDoesNotFitAlgorithm(algorithm_name(algorithm)))
}

/// `aud`: one string or an array of them (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A NumericDate (RFC 7519 §2): seconds, possibly with a fraction.
#[derive(Deserialize)]
struct NumericDate(f64);

impl NumericDate {
    fn seconds(&self) -> Result<u64, AssertionError> {
        let value = self.0;
        if value.is_finite() && value >= 0.0 && value < u64::MAX as f64 {
            Ok(value as u64)
        } else {
            Err(AssertionError::Malformed)
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
    iat: Option<NumericDate>,
    jti: Option<String>,
}

/// Verifies a client assertion against the client's key set: signature,
/// then claims (see the module docs). The `jti` is not checked for reuse
/// here.
pub fn verify(assertion: &str, keys: &JwkSet, expected: Expected<'_>) -> Result<VerifiedAssertion, AssertionError> {
    let (algorithm, kid) = header(assertion)?;
    let jwk = choose_key(keys, kid.as_deref(), algorithm)?;
    let key =
        DecodingKey::from_jwk(jwk).map_err(|_| AssertionError::KeyDoesNotFitAlgorithm(algorithm_name(algorithm)))?;
    // The signature with exactly this algorithm; the claims are checked
    // below against `expected.now` (one clock, clear refusals).
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => AssertionError::BadSignature,
            jsonwebtoken::errors::ErrorKind::Json(_) | jsonwebtoken::errors::ErrorKind::Base64(_) => {
                AssertionError::Malformed
            }
            _ => AssertionError::BadSignature,
        })?
        .claims;
    check_claims(claims, expected)
}

fn check_claims(claims: Claims, expected: Expected<'_>) -> Result<VerifiedAssertion, AssertionError> {
    let iss = claims.iss.ok_or(AssertionError::MissingClaim("iss"))?;
    if iss != expected.client_id {
        return Err(AssertionError::NotTheClient("iss"));
    }
    let sub = claims.sub.ok_or(AssertionError::MissingClaim("sub"))?;
    if sub != expected.client_id {
        return Err(AssertionError::NotTheClient("sub"));
    }
    let audience_fits = |aud: &String| expected.audiences.contains(&aud.as_str());
    match claims.aud.ok_or(AssertionError::MissingClaim("aud"))? {
        Audience::One(aud) if audience_fits(&aud) => {}
        Audience::Many(auds) if auds.iter().any(audience_fits) => {}
        _ => return Err(AssertionError::WrongAudience),
    }
    let now = expected.now;
    let exp = claims.exp.ok_or(AssertionError::MissingClaim("exp"))?.seconds()?;
    if exp.saturating_add(CLOCK_LEEWAY) <= now {
        return Err(AssertionError::Expired);
    }
    if exp > now.saturating_add(MAX_ASSERTION_LIFETIME + CLOCK_LEEWAY) {
        return Err(AssertionError::LivesTooLong);
    }
    for not_before in [claims.nbf, claims.iat].into_iter().flatten() {
        if not_before.seconds()? > now.saturating_add(CLOCK_LEEWAY) {
            return Err(AssertionError::NotYetValid);
        }
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty())
        .ok_or(AssertionError::MissingClaim("jti"))?;
    if jti.len() > MAX_JTI_LEN {
        return Err(AssertionError::JtiTooLong);
    }
    Ok(VerifiedAssertion { jti, exp })
}

#[cfg(test)]
mod tests;
