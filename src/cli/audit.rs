//! `mcp-oauth-proxy audit verify FILE...`: checks the audit trail's hash
//! chain across the files given, in order (rotated ones first), and its
//! signed checkpoints when the key can be derived as the service derives it
//! (from the environment and `.env`: `OAUTH_PROXY_CONSENT_SIGNING_KEY`, or
//! the one kept in the data directory's `keys.json`, read only).
//!
//! Exit codes: 0 the chain is intact; 1 it is broken (the first broken line
//! is named as `FILE:LINE`); 2 a usage error or a file that cannot be read.

use std::process::ExitCode;

use secrecy::ExposeSecret;

use crate::audit::verify::{verify, Summary};
use crate::audit::CheckpointKey;
use crate::config::{Config, KeySetting, StorageSetting};

/// Runs `audit verify` on `files` and prints the verdict.
pub fn run_verify(files: &[String]) -> ExitCode {
    let mut contents = Vec::with_capacity(files.len());
    for file in files {
        match std::fs::read(file) {
            Ok(bytes) => contents.push((file.clone(), bytes)),
            Err(e) => {
                eprintln!("mcp-oauth-proxy: cannot read {file}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let key = checkpoint_key_from_environment();
    match verify(&contents, key.as_ref().ok()) {
        Ok(summary) => {
            println!("{}", describe(&summary, key.as_ref().err().map(String::as_str)));
            if let Some((at, seq)) = &summary.continues {
                eprintln!(
                    "note: {at} continues a chain begun in a file not given (seq {seq}); checked from that line on"
                );
            }
            ExitCode::SUCCESS
        }
        Err(broken) => {
            println!("audit chain broken at {broken}");
            ExitCode::from(1)
        }
    }
}

/// The one-line summary of an intact chain.
fn describe(summary: &Summary, no_key: Option<&str>) -> String {
    let files = match summary.files {
        1 => "1 file".to_string(),
        n => format!("{n} files"),
    };
    let checkpoints = match no_key {
        None => format!("{} checkpoints verified", summary.checkpoints_verified),
        Some(why) => format!(
            "{} checkpoints NOT checked ({why}; the hash chain was checked)",
            summary.checkpoints_unchecked
        ),
    };
    format!(
        "audit chain intact: {} lines in {files}, {checkpoints}, {} lines after the last checkpoint",
        summary.lines, summary.after_last_checkpoint
    )
}

/// The checkpoint key the service uses, derived read-only; `Err` says why
/// it cannot be had.
fn checkpoint_key_from_environment() -> Result<CheckpointKey, String> {
    let config = Config::from_env().map_err(|e| format!("no key: the configuration does not load: {e}"))?;
    match (&config.consent_signing_key, &config.storage) {
        (KeySetting::Given(secret), _) => Ok(CheckpointKey::derive(secret.expose_secret().as_bytes())),
        (KeySetting::Generate, StorageSetting::Directory(dir)) => match crate::keys::kept_consent_key(dir) {
            Ok(Some(secret)) => Ok(CheckpointKey::derive(&secret)),
            Ok(None) => Err(format!(
                "no key: OAUTH_PROXY_CONSENT_SIGNING_KEY is not set and {} holds none",
                dir.join("keys.json").display()
            )),
            Err(e) => Err(format!("no key: {e}")),
        },
        (KeySetting::Generate, _) => Err(
            "no key: OAUTH_PROXY_CONSENT_SIGNING_KEY is not set (the service generated one for its run only)".into(),
        ),
    }
}
