//! Reading variables: trimming, defaults, typed parsing, and secrets from a
//! variable or its `_FILE` twin. Every error names the variable.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{bad, ConfigError, KeySetting};

/// The variables, through the lookup `Config::from_lookup` was given.
pub(super) struct Env<'a> {
    pub(super) lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    /// The trimmed value; an empty value counts as unset.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| bad(name, "is required"))
    }

    pub(super) fn parsed<T>(
        &self,
        name: &'static str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => parse(&raw)
                .map(Some)
                .ok_or_else(|| bad(name, format!("`{raw}` is not {expected}"))),
        }
    }

    pub(super) fn url(&self, name: &'static str) -> Result<Option<Url>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => parse_http_url(name, &raw).map(Some),
        }
    }

    pub(super) fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|raw| {
                raw.split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn boolean(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        Ok(self
            .parsed(name, "true or false", |v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            })?
            .unwrap_or(default))
    }

    pub(super) fn number<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError> {
        Ok(self
            .parsed(name, "a whole number", |v| v.parse::<T>().ok())?
            .unwrap_or(default))
    }

    pub(super) fn seconds(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        let secs = self.number(name, default)?;
        if secs == 0 {
            return Err(bad(name, "must be at least 1 second"));
        }
        Ok(Duration::from_secs(secs))
    }

    /// A secret from `name`, or from the file its `_FILE` twin names; an
    /// error when both are set. The variable's value is used as given; a
    /// file's content loses one trailing newline (`echo` writes one).
    pub(super) fn secret(&self, (name, file_name): (&'static str, &'static str)) -> Result<Option<Given>, ConfigError> {
        match (self.get(name), self.get(file_name)) {
            (Some(_), Some(_)) => Err(bad(name, format!("and {file_name} are both set: set only one of them"))),
            (Some(value), None) => Ok(Some(Given {
                value: SecretString::from(value),
                variable: name,
            })),
            (None, Some(path)) => Ok(Some(Given {
                value: read_secret_file(file_name, &path)?,
                variable: file_name,
            })),
            (None, None) => Ok(None),
        }
    }
}

/// A secret as configured, and the variable that gave it (for errors).
pub(super) struct Given {
    pub(super) value: SecretString,
    pub(super) variable: &'static str,
}

/// The content of a secrets file, less one trailing `\n` or `\r\n`.
fn read_secret_file(variable: &'static str, path: &str) -> Result<SecretString, ConfigError> {
    let mut content = std::fs::read_to_string(path).map_err(|e| bad(variable, format!("cannot read {path}: {e}")))?;
    if content.ends_with("\r\n") {
        content.truncate(content.len() - 2);
    } else if content.ends_with('\n') {
        content.truncate(content.len() - 1);
    }
    if content.is_empty() {
        return Err(bad(variable, format!("{path} is empty")));
    }
    Ok(SecretString::from(content))
}

/// A key given (at least 32 characters) or to be generated.
pub(super) fn key(given: Option<Given>) -> Result<KeySetting, ConfigError> {
    match given {
        None => Ok(KeySetting::Generate),
        Some(given) if given.value.expose_secret().len() < 32 => Err(bad(
            given.variable,
            "must be at least 32 characters (e.g. `openssl rand -base64 32`)",
        )),
        Some(given) => Ok(KeySetting::Given(given.value)),
    }
}

/// A PEM secret. Given in the variable itself, `\n` written literally (as
/// environment files often carry PEMs) stands for a line break.
pub(super) fn pem(given: Given, file_variable: &'static str, what: &str) -> Result<SecretString, ConfigError> {
    let text = given.value.expose_secret();
    if !text.contains("-----BEGIN") {
        let hint = if given.variable == file_variable {
            String::new()
        } else {
            format!("; to read it from a file, set {file_variable} to the file's path instead")
        };
        return Err(bad(given.variable, format!("must be {what} (`-----BEGIN ...`){hint}")));
    }
    if given.variable == file_variable {
        Ok(given.value)
    } else {
        Ok(SecretString::from(text.replace("\\n", "\n")))
    }
}

pub(super) fn parse_http_url(name: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| bad(name, format!("`{raw}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(name, format!("`{raw}` must be an http(s) URL with a host")));
    }
    Ok(url)
}

pub(super) fn check_path(name: &'static str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(bad(name, format!("`{path}` must be a path starting with `/`")));
    }
    Ok(())
}
