//! Where the stores keep their data, and what sharing it between instances
//! asks of the keys.

use super::env::Env;
use super::tokens::Keys;
use super::{bad, ConfigError, EncryptionSetting, KeySetting};

/// Where the stores keep their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSetting {
    /// In this process only (tests, throwaway runs).
    Memory,
    /// The embedded store in this directory; generated keys are kept there.
    Directory(std::path::PathBuf),
    /// Redis, shared by several instances (`redis://` or `rediss://`).
    Redis(String),
}

/// `OAUTH_PROXY_STORAGE`; with Redis, every symmetric key must be given.
pub(super) fn read_storage(env: &Env, keys: &Keys) -> Result<StorageSetting, ConfigError> {
    let storage = match env.get("OAUTH_PROXY_STORAGE") {
        None => StorageSetting::Directory("./data".into()),
        Some(value) if value == "memory" => StorageSetting::Memory,
        Some(value) if value.starts_with("redis://") || value.starts_with("rediss://") => StorageSetting::Redis(value),
        Some(value) if value.contains("://") => {
            return Err(bad(
                "OAUTH_PROXY_STORAGE",
                "use `memory`, a directory path, or a redis:// / rediss:// URL",
            ))
        }
        Some(dir) => StorageSetting::Directory(dir.into()),
    };
    if let StorageSetting::Redis(_) = storage {
        // Every instance must sign and encrypt with the same keys.
        for (name, setting) in [
            ("OAUTH_PROXY_JWT_SIGNING_KEY", Some(&keys.jwt_signing_key)),
            ("OAUTH_PROXY_CONSENT_SIGNING_KEY", Some(&keys.consent_signing_key)),
            (
                "OAUTH_PROXY_ENCRYPTION_KEY",
                match &keys.encryption {
                    EncryptionSetting::Key(key) => Some(key),
                    EncryptionSetting::Disabled => None,
                },
            ),
        ] {
            if let Some(KeySetting::Generate) = setting {
                return Err(bad(
                    name,
                    "is required with Redis storage: every instance needs the same key (e.g. `openssl rand -base64 32`; or the variable's _FILE twin naming a file that holds it)",
                ));
            }
        }
    }
    Ok(storage)
}
