//! The service's secret keys: from configuration, or generated.
//!
//! Generated keys must survive a restart whenever the storage does: with the
//! directory store they are created once and kept in `<dir>/keys.json`
//! (mode 0600, fsynced); with the memory store they live for one run; with
//! Redis the configuration must give them all (checked at start-up).

use std::io::Write;
use std::path::Path;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::{Config, EncryptionSetting, JwtAlgorithm, KeySetting, StorageSetting};
use crate::crypto::random_token;

/// The key file's content: only what was generated.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct KeyFile {
    jwt_signing_key: Option<String>,
    encryption_key: Option<String>,
    consent_signing_key: Option<String>,
    /// PKCS#8 PEM of a generated ES256 / EdDSA key, by algorithm name.
    #[serde(default)]
    jwt_private_keys: std::collections::BTreeMap<String, String>,
}

/// The keys the proxy runs with.
pub struct Keys {
    pub jwt_secret: Vec<u8>,
    /// `None`: encryption disabled.
    pub encryption: Option<Vec<u8>>,
    pub consent: Vec<u8>,
    /// ES256 / EdDSA: the private key PEM (configured or kept), if any.
    pub jwt_private_pem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("key file {path}: {problem}")]
pub struct KeyFileError {
    path: String,
    problem: String,
}

fn algorithm_name(algorithm: JwtAlgorithm) -> &'static str {
    match algorithm {
        JwtAlgorithm::Hs256 => "HS256",
        JwtAlgorithm::Es256 => "ES256",
        JwtAlgorithm::EdDsa => "EdDSA",
    }
}

impl Keys {
    /// Resolves every key; `generate_pem` makes a private key PEM for an
    /// asymmetric algorithm that has none.
    pub fn resolve(
        config: &Config,
        generate_pem: impl Fn(JwtAlgorithm) -> Option<String>,
    ) -> Result<Keys, KeyFileError> {
        let dir = match &config.storage {
            StorageSetting::Directory(dir) => Some(dir.as_path()),
            _ => None,
        };
        let mut file = match dir {
            Some(dir) => load(dir)?,
            None => KeyFile::default(),
        };
        let before = serde_json::to_string(&file).unwrap_or_default();
        let mut generated = Vec::new();
        let mut pick = |setting: &KeySetting, slot: &mut Option<String>, name: &'static str| -> Vec<u8> {
            match setting {
                KeySetting::Given(secret) => secret.expose_secret().as_bytes().to_vec(),
                KeySetting::Generate => slot
                    .get_or_insert_with(|| {
                        generated.push(name);
                        random_token(32)
                    })
                    .as_bytes()
                    .to_vec(),
            }
        };
        let jwt_secret = pick(
            &config.jwt.signing_key,
            &mut file.jwt_signing_key,
            "OAUTH_PROXY_JWT_SIGNING_KEY",
        );
        let encryption = match &config.encryption {
            EncryptionSetting::Key(setting) => {
                Some(pick(setting, &mut file.encryption_key, "OAUTH_PROXY_ENCRYPTION_KEY"))
            }
            EncryptionSetting::Disabled => None,
        };
        let consent = pick(
            &config.consent_signing_key,
            &mut file.consent_signing_key,
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
        );
        let jwt_private_pem = match (&config.jwt.private_key_pem, config.jwt.algorithm) {
            (Some(pem), _) => Some(pem.expose_secret().to_string()),
            (None, JwtAlgorithm::Hs256) => None,
            (None, algorithm) => {
                let name = algorithm_name(algorithm).to_string();
                if !file.jwt_private_keys.contains_key(&name) {
                    if let Some(pem) = generate_pem(algorithm) {
                        generated.push("OAUTH_PROXY_JWT_PRIVATE_KEY");
                        file.jwt_private_keys.insert(name.clone(), pem);
                    }
                }
                file.jwt_private_keys.get(&name).cloned()
            }
        };
        match dir {
            Some(dir) if serde_json::to_string(&file).unwrap_or_default() != before => {
                save(dir, &file)?;
                log::info!(
                    "generated {} and kept them in {}",
                    generated.join(", "),
                    dir.join("keys.json").display()
                );
            }
            None if !generated.is_empty() => log::warn!(
                "generated {} for this run only (memory storage): tokens will not survive a restart",
                generated.join(", ")
            ),
            _ => {}
        }
        Ok(Keys {
            jwt_secret,
            encryption,
            consent,
            jwt_private_pem,
        })
    }
}

/// The consent signing key kept in `<dir>/keys.json`, if one was generated
/// there: read only (`audit verify` derives the checkpoint key from it and
/// must never create or change the key file).
pub fn kept_consent_key(dir: &Path) -> Result<Option<Vec<u8>>, KeyFileError> {
    Ok(load(dir)?.consent_signing_key.map(String::into_bytes))
}

fn load(dir: &Path) -> Result<KeyFile, KeyFileError> {
    let path = dir.join("keys.json");
    let error = |problem: String| KeyFileError {
        path: path.display().to_string(),
        problem,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| error(format!("is not valid ({e}); restore it from a backup")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
        Err(e) => Err(error(e.to_string())),
    }
}

/// Writes the key file readable by its owner only, atomically (temp + rename)
/// and durably (fsync of the file, then of the directory).
///
/// The temporary file is always a new file: a stale one (a crash between
/// write and rename) or a symlink planted in its place is removed first
/// (removing a symlink removes the link, not its target), and the open
/// neither reuses an existing file (`create_new`, so its old mode cannot
/// survive) nor follows a symlink (`O_NOFOLLOW`).
fn save(dir: &Path, file: &KeyFile) -> Result<(), KeyFileError> {
    let path = dir.join("keys.json");
    let error = |e: std::io::Error| KeyFileError {
        path: path.display().to_string(),
        problem: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(error)?;
    let temporary = dir.join("keys.json.tmp");
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(error(e)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
        #[cfg(target_os = "linux")]
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let mut out = options.open(&temporary).map_err(error)?;
    out.write_all(&serde_json::to_vec_pretty(file).unwrap_or_default())
        .map_err(error)?;
    out.sync_all().map_err(error)?;
    std::fs::rename(&temporary, &path).map_err(error)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(error)?;
    Ok(())
}
