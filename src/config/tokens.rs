//! Tokens and their keys: record lifetimes, the JWT algorithm and keys, the
//! keys for records at rest and consent, the claims copied into proxy JWTs,
//! and the introspection secret.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::env::{key, pem, Env};
use super::{bad, ConfigError, StorageSetting};

/// Expiry of each kind of record.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub access_token: Duration,
    pub refresh_token: Duration,
    pub authorization_code: Duration,
    pub transaction: Duration,
    /// A pending authorization that has not been approved on the consent page
    /// yet lives this long (at most `transaction`); the full `transaction`
    /// lifetime starts when the user approves or consent is skipped. Not an
    /// environment variable: two minutes is enough to read the consent page,
    /// and tests shorten it through this field.
    pub unapproved_transaction: Duration,
    /// A registration that never completes a token exchange expires after this.
    pub unused_client: Duration,
    /// Absolute lifetime of a grant from its sign-in, however often it is
    /// refreshed (`OAUTH_PROXY_GRANT_MAX_LIFETIME`).
    pub grant_max: Duration,
}

/// How long an authorization waits on the consent page before it expires.
pub const UNAPPROVED_TRANSACTION_TTL: Duration = Duration::from_secs(120);

/// A key given by the operator, or to be generated at start-up.
#[derive(Debug, Clone)]
pub enum KeySetting {
    Given(SecretString),
    Generate,
}

/// The key for upstream tokens at rest.
#[derive(Debug, Clone)]
pub enum EncryptionSetting {
    Key(KeySetting),
    /// `OAUTH_PROXY_ENCRYPTION_KEY=false`: records are stored in clear.
    Disabled,
}

/// How proxy JWTs are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// A shared secret (`OAUTH_PROXY_JWT_SIGNING_KEY`).
    Hs256,
    /// ECDSA P-256; the public key is served at `/jwks.json`.
    Es256,
    /// Ed25519; the public key is served at `/jwks.json`.
    EdDsa,
}

/// The JWT signing set-up.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret.
    pub signing_key: KeySetting,
    /// ES256 / EdDSA: the private key PEM (from the variable or its file).
    pub private_key_pem: Option<SecretString>,
    /// A previous verification key kept during rotation: the old HS256 secret,
    /// or the old public (or private) key PEM.
    pub previous_key: Option<SecretString>,
}

/// The `OAUTH_PROXY_*_TTL` variables and the grant's absolute lifetime.
pub(super) fn read_lifetimes(env: &Env) -> Result<Lifetimes, ConfigError> {
    Ok(Lifetimes {
        access_token: env.seconds("OAUTH_PROXY_ACCESS_TOKEN_TTL", 3600)?,
        refresh_token: env.seconds("OAUTH_PROXY_REFRESH_TOKEN_TTL", 2_592_000)?,
        authorization_code: env.seconds("OAUTH_PROXY_AUTHORIZATION_CODE_TTL", 300)?,
        transaction: env.seconds("OAUTH_PROXY_TRANSACTION_TTL", 600)?,
        unapproved_transaction: UNAPPROVED_TRANSACTION_TTL,
        unused_client: env.seconds("OAUTH_PROXY_UNUSED_CLIENT_TTL", 86_400)?,
        grant_max: env.seconds("OAUTH_PROXY_GRANT_MAX_LIFETIME", 7_776_000)?,
    })
}

/// The symmetric keys: each given (at least 32 characters) or generated.
pub(super) struct Keys {
    pub(super) jwt_signing_key: KeySetting,
    pub(super) encryption: EncryptionSetting,
    pub(super) consent_signing_key: KeySetting,
}

/// `OAUTH_PROXY_JWT_SIGNING_KEY`, `OAUTH_PROXY_ENCRYPTION_KEY` and
/// `OAUTH_PROXY_CONSENT_SIGNING_KEY` (each or its `_FILE` twin).
pub(super) fn read_keys(env: &Env) -> Result<Keys, ConfigError> {
    let jwt_signing_key = key(env.secret(twin!("OAUTH_PROXY_JWT_SIGNING_KEY"))?)?;
    let encryption = match env.secret(twin!("OAUTH_PROXY_ENCRYPTION_KEY"))? {
        Some(given) if given.value.expose_secret() == "false" => EncryptionSetting::Disabled,
        given => EncryptionSetting::Key(key(given)?),
    };
    let consent_signing_key = key(env.secret(twin!("OAUTH_PROXY_CONSENT_SIGNING_KEY"))?)?;
    Ok(Keys {
        jwt_signing_key,
        encryption,
        consent_signing_key,
    })
}

/// `OAUTH_PROXY_JWT_ALGORITHM` and its keys; with Redis storage an
/// asymmetric key must be given, not generated per instance.
pub(super) fn read_jwt(
    env: &Env,
    jwt_signing_key: KeySetting,
    storage: &StorageSetting,
) -> Result<JwtConfig, ConfigError> {
    let algorithm = match env.get("OAUTH_PROXY_JWT_ALGORITHM").as_deref() {
        None | Some("HS256") => JwtAlgorithm::Hs256,
        Some("ES256") => JwtAlgorithm::Es256,
        Some("EdDSA") => JwtAlgorithm::EdDsa,
        Some(other) => {
            return Err(bad(
                "OAUTH_PROXY_JWT_ALGORITHM",
                format!("`{other}` is not HS256, ES256 or EdDSA"),
            ))
        }
    };
    let private_key_pem = match env.secret(twin!("OAUTH_PROXY_JWT_PRIVATE_KEY"))? {
        None => None,
        Some(given) => Some(pem(given, "OAUTH_PROXY_JWT_PRIVATE_KEY_FILE", "a PEM private key")?),
    };
    let previous_key = match env.secret(twin!("OAUTH_PROXY_JWT_PREVIOUS_KEY"))? {
        None => None,
        Some(given) if algorithm != JwtAlgorithm::Hs256 => Some(pem(
            given,
            "OAUTH_PROXY_JWT_PREVIOUS_KEY_FILE",
            "the previous public (or private) key as PEM",
        )?),
        Some(given) if given.value.expose_secret().len() < 32 => {
            return Err(bad(
                given.variable,
                "must be at least 32 characters: the previous OAUTH_PROXY_JWT_SIGNING_KEY, as it was given",
            ))
        }
        Some(given) => Some(given.value),
    };
    let jwt = JwtConfig {
        algorithm,
        signing_key: jwt_signing_key,
        private_key_pem,
        previous_key,
    };
    if jwt.algorithm != JwtAlgorithm::Hs256
        && jwt.private_key_pem.is_none()
        && matches!(storage, StorageSetting::Redis(_))
    {
        return Err(bad(
            "OAUTH_PROXY_JWT_PRIVATE_KEY",
            "is required with Redis storage: every instance needs the same signing key",
        ));
    }
    if jwt.algorithm == JwtAlgorithm::Hs256 && jwt.private_key_pem.is_some() {
        return Err(bad(
            "OAUTH_PROXY_JWT_PRIVATE_KEY",
            "is only used with OAUTH_PROXY_JWT_ALGORITHM=ES256 or EdDSA",
        ));
    }
    Ok(jwt)
}

/// `OAUTH_PROXY_CUSTOM_CLAIMS`: upstream claims copied into proxy JWTs.
pub(super) fn read_custom_claims(env: &Env) -> Vec<String> {
    match env.get("OAUTH_PROXY_CUSTOM_CLAIMS") {
        Some(_) => env.list("OAUTH_PROXY_CUSTOM_CLAIMS"),
        None => ["sub", "email", "name", "preferred_username"]
            .map(String::from)
            .to_vec(),
    }
}

/// `OAUTH_PROXY_INTROSPECTION_SECRET`: the Bearer secret a resource server
/// presents to `/introspect`.
pub(super) fn read_introspection_secret(env: &Env) -> Result<Option<SecretString>, ConfigError> {
    match env.secret(twin!("OAUTH_PROXY_INTROSPECTION_SECRET"))? {
        Some(given) if given.value.expose_secret().len() < 32 => {
            Err(bad(given.variable, "must be at least 32 characters"))
        }
        other => Ok(other.map(|given| given.value)),
    }
}
