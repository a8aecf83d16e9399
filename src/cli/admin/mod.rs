//! `mcp-oauth-proxy admin ...`: the admin API from the command line.
//!
//! Requests go to `OAUTH_PROXY_ADMIN_URL` (default `http://` and
//! `OAUTH_PROXY_ADMIN_BIND`) with `Authorization: Bearer` and the token of
//! `OAUTH_PROXY_ADMIN_TOKEN` (or the file `OAUTH_PROXY_ADMIN_TOKEN_FILE`
//! names), read from the environment and `.env`. Lists follow `next_cursor`
//! until the last page (or `--limit N` items). Output: aligned tables with
//! UTC dates, or with `--json` the API's JSON (a list as one
//! `{"items": [...], "next_cursor": ...}` holding every page fetched).
//!
//! Exit codes: 0 success; 1 the service unreachable, the token refused
//! (401), the API off (403), an unknown id (404) or any other failure; 2 a
//! usage error (bad arguments, no URL or no token configured). The token is
//! never printed, not even in errors.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use url::Url;

/// The admin API's page size limit: lists ask for this much at a time.
const MAX_PAGE: usize = 500;
/// Every request, connecting included.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Pages fetched at most by one list (a bound on the loop: 10 000 pages of
/// up to 500 items).
const MAX_PAGES: usize = 10_000;
/// Largest answer read (a page of 500 items is far below this).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// `admin --help`.
pub const ADMIN_USAGE: &str = "\
usage:
  mcp-oauth-proxy admin clients list [--name TEXT] [--redirect-host HOST] [--limit N] [--json]
  mcp-oauth-proxy admin clients show ID [--json]
  mcp-oauth-proxy admin clients delete ID [--json]     (revokes the client's grants)
  mcp-oauth-proxy admin grants list [--sub S] [--client C] [--limit N] [--json]
  mcp-oauth-proxy admin grants show ID [--json]
  mcp-oauth-proxy admin grants revoke ID|--sub S [--json]
                                   (--sub: every grant of that user, the kill switch)

Talks to the admin API at OAUTH_PROXY_ADMIN_URL (default http://<OAUTH_PROXY_ADMIN_BIND>)
with the token in OAUTH_PROXY_ADMIN_TOKEN (or the file OAUTH_PROXY_ADMIN_TOKEN_FILE names),
from the environment or .env. Lists fetch every page unless --limit N is given.
--json prints the API's JSON (lists: every item fetched in one {\"items\", \"next_cursor\"}).

exit codes: 0 success; 1 service unreachable, token refused (401), admin API off (403),
not found (404) or another failure; 2 usage error (bad arguments, no URL or token)
";

/// What `admin` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    ClientsList {
        name: Option<String>,
        redirect_host: Option<String>,
    },
    ClientsShow(String),
    ClientsDelete(String),
    GrantsList {
        sub: Option<String>,
        client: Option<String>,
    },
    GrantsShow(String),
    GrantsRevoke(String),
    /// `grants revoke --sub S`: `POST /admin/subjects/{sub}/revoke`.
    SubjectRevoke(String),
}

/// A parsed `admin` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCommand {
    pub action: Action,
    pub json: bool,
    /// Lists: stop after this many items.
    pub limit: Option<usize>,
}

/// Why a command did not succeed, and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Exit 2: the arguments or the CLI's own settings are wrong.
    Usage(String),
    /// Exit 1: the service could not be reached or refused.
    Failed(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Failed(_) => 1,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => m,
        }
    }
}

const HINT: &str = "(see mcp-oauth-proxy admin --help)";

fn usage(problem: impl std::fmt::Display) -> String {
    format!("{problem} {HINT}")
}

/// Parses the arguments after `admin`; `Ok(None)` asks for the help text.
pub fn parse(args: &[String]) -> Result<Option<AdminCommand>, String> {
    let mut json = false;
    let mut limit = None;
    let mut options: Vec<(&'static str, String)> = Vec::new();
    let mut words: Vec<&str> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        match flag {
            "--help" | "-h" => return Ok(None),
            "--json" if inline.is_none() => json = true,
            "--limit" | "--sub" | "--client" | "--name" | "--redirect-host" => {
                let name: &'static str = match flag {
                    "--limit" => "--limit",
                    "--sub" => "--sub",
                    "--client" => "--client",
                    "--name" => "--name",
                    _ => "--redirect-host",
                };
                let value = match inline {
                    Some(value) => value,
                    None => rest
                        .next()
                        .cloned()
                        .ok_or_else(|| usage(format!("{name} needs a value")))?,
                };
                if value.is_empty() {
                    return Err(usage(format!("{name} needs a value")));
                }
                if name == "--limit" {
                    match value.parse::<usize>() {
                        Ok(n) if n > 0 => limit = Some(n),
                        _ => return Err(usage(format!("--limit `{value}` is not a number above 0"))),
                    }
                } else if options.iter().any(|(n, _)| *n == name) {
                    return Err(usage(format!("{name} given twice")));
                } else {
                    options.push((name, value));
                }
            }
            // Every option is long: a word starting with one `-` is a
            // value (grant and client ids are base64url: `-` is one of
            // their characters, first place included).
            other if other.starts_with("--") => return Err(usage(format!("unknown option `{other}`"))),
            word => words.push(word),
        }
    }
    let mut take = |name: &str| {
        options
            .iter()
            .position(|(n, _)| *n == name)
            .map(|at| options.remove(at).1)
    };
    let action = match words.as_slice() {
        ["clients", "list"] => Action::ClientsList {
            name: take("--name"),
            redirect_host: take("--redirect-host"),
        },
        ["clients", "show", id] => Action::ClientsShow(id.to_string()),
        ["clients", "delete", id] => Action::ClientsDelete(id.to_string()),
        ["grants", "list"] => Action::GrantsList {
            sub: take("--sub"),
            client: take("--client"),
        },
        ["grants", "show", id] => Action::GrantsShow(id.to_string()),
        ["grants", "revoke", id] => Action::GrantsRevoke(id.to_string()),
        ["grants", "revoke"] => match take("--sub") {
            Some(sub) => Action::SubjectRevoke(sub),
            None => return Err(usage("`admin grants revoke` needs a grant ID or --sub SUBJECT")),
        },
        [] => return Err(usage("`admin` needs `clients` or `grants`")),
        ["clients" | "grants"] => return Err(usage(format!("`admin {}` needs a command", words[0]))),
        ["clients" | "grants", "show" | "delete"] => {
            return Err(usage(format!("`admin {} {}` needs an ID", words[0], words[1])))
        }
        ["clients" | "grants", command, ..]
            if matches!(*command, "list" | "show" | "delete" | "revoke") && words.len() > 2 =>
        {
            return Err(usage(format!("unexpected `{}`", words[words.len() - 1])))
        }
        ["clients" | "grants", command, ..] => {
            return Err(usage(format!("unknown command `admin {} {command}`", words[0])))
        }
        [other, ..] => return Err(usage(format!("unknown command `admin {other}`"))),
    };
    if let Some((name, _)) = options.first() {
        return Err(usage(format!("{name} does not apply to this command")));
    }
    let lists = matches!(action, Action::ClientsList { .. } | Action::GrantsList { .. });
    if limit.is_some() && !lists {
        return Err(usage("--limit applies to list commands only"));
    }
    Ok(Some(AdminCommand { action, json, limit }))
}

/// Where the admin API is and the token for it.
pub struct Target {
    /// The admin listener's base URL.
    pub base: Url,
    /// The variable the URL came from (named in errors).
    pub from: &'static str,
    token: SecretString,
}

impl Target {
    /// `OAUTH_PROXY_ADMIN_URL` (or `http://` + `OAUTH_PROXY_ADMIN_BIND`) and
    /// `OAUTH_PROXY_ADMIN_TOKEN` (or `_FILE`); every problem is a usage error.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Target, String> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (raw, from) = match (get("OAUTH_PROXY_ADMIN_URL"), get("OAUTH_PROXY_ADMIN_BIND")) {
            (Some(url), _) => (url, "OAUTH_PROXY_ADMIN_URL"),
            (None, Some(bind)) => (format!("http://{}", loopback_for(&bind)), "OAUTH_PROXY_ADMIN_BIND"),
            (None, None) => {
                return Err(
                    "OAUTH_PROXY_ADMIN_URL is not set (nor OAUTH_PROXY_ADMIN_BIND): set it to the service's \
                     admin listener, e.g. http://127.0.0.1:9090"
                        .into(),
                )
            }
        };
        let base = Url::parse(&raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && !u.cannot_be_a_base())
            .ok_or_else(|| format!("{from}: `{raw}` is not an http(s) URL with a host"))?;
        let token = match (get("OAUTH_PROXY_ADMIN_TOKEN"), get("OAUTH_PROXY_ADMIN_TOKEN_FILE")) {
            (Some(_), Some(_)) => {
                return Err(
                    "OAUTH_PROXY_ADMIN_TOKEN and OAUTH_PROXY_ADMIN_TOKEN_FILE are both set: set only one".into(),
                )
            }
            (Some(token), None) => SecretString::from(token),
            (None, Some(path)) => {
                let content = std::fs::read_to_string(&path)
                    .map_err(|e| format!("OAUTH_PROXY_ADMIN_TOKEN_FILE: cannot read {path}: {e}"))?;
                let token = content.strip_suffix('\n').unwrap_or(&content);
                let token = token.strip_suffix('\r').unwrap_or(token);
                if token.is_empty() {
                    return Err(format!("OAUTH_PROXY_ADMIN_TOKEN_FILE: {path} is empty"));
                }
                SecretString::from(token.to_string())
            }
            (None, None) => {
                return Err(
                    "OAUTH_PROXY_ADMIN_TOKEN is not set (nor OAUTH_PROXY_ADMIN_TOKEN_FILE): the admin API needs \
                     the token the service was given"
                        .into(),
                )
            }
        };
        Ok(Target { base, from, token })
    }

    /// The URL of `/admin/<segments...>` under the base, each segment
    /// percent-encoded (an id holding `/` or `?` stays one segment).
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("admin").extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// The base URL as shown in messages (no credentials).
    fn shown(&self) -> String {
        let mut url = self.base.clone();
        let _ = url.set_password(None);
        let _ = url.set_username("");
        url.as_str().trim_end_matches('/').to_string()
    }
}

/// An unspecified bind address (`0.0.0.0:9090`, `[::]:9090`) is reached on
/// the loopback address.
fn loopback_for(bind: &str) -> String {
    match bind.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            let ip = if addr.is_ipv4() { "127.0.0.1" } else { "[::1]" };
            format!("{ip}:{}", addr.port())
        }
        _ => bind.to_string(),
    }
}

/// Runs `admin ...`: prints the result (stdout) or one error line (stderr)
/// and returns the exit code.
pub fn run(args: &[String]) -> u8 {
    let command = match parse(args) {
        Ok(Some(command)) => command,
        Ok(None) => {
            print!("{ADMIN_USAGE}");
            return 0;
        }
        Err(problem) => {
            eprintln!("mcp-oauth-proxy: {problem}");
            return 2;
        }
    };
    let target = match Target::from_lookup(&|name| std::env::var(name).ok()) {
        Ok(target) => target,
        Err(problem) => {
            eprintln!("mcp-oauth-proxy: {problem}");
            return 2;
        }
    };
    let tls = match std::env::var("OAUTH_PROXY_EXTRA_CA_FILE")
        .ok()
        .filter(|p| !p.trim().is_empty())
    {
        None => crate::tls::OutboundTls::default(),
        Some(path) => match std::fs::read(path.trim())
            .map_err(|e| e.to_string())
            .and_then(|pem| crate::tls::OutboundTls::new(Some(&pem)))
        {
            Ok(tls) => tls,
            Err(problem) => {
                eprintln!("mcp-oauth-proxy: OAUTH_PROXY_EXTRA_CA_FILE: {path}: {problem}");
                return 2;
            }
        },
    };
    let outcome = actix_web::rt::System::new().block_on(execute(&command, &target, &tls));
    match outcome {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(failure) => {
            eprintln!("mcp-oauth-proxy: {}", failure.message());
            failure.exit_code()
        }
    }
}

/// Sends the command's requests; returns what to print.
pub async fn execute(
    command: &AdminCommand,
    target: &Target,
    tls: &crate::tls::OutboundTls,
) -> Result<String, Failure> {
    // https admin URLs: rustls needs its crypto provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(TIMEOUT)
        .connector(awc::Connector::new().timeout(TIMEOUT).rustls_0_23(tls.client_config()))
        .add_default_header((
            awc::http::header::USER_AGENT,
            concat!("mcp-oauth-proxy-cli/", env!("CARGO_PKG_VERSION")),
        ))
        .finish();
    let api = Api { client, target };
    let json = command.json;
    match &command.action {
        Action::ClientsList { name, redirect_host } => {
            let mut query = Vec::new();
            if let Some(name) = name {
                query.push(("q", name.as_str()));
            }
            if let Some(host) = redirect_host {
                query.push(("redirect_host", host.as_str()));
            }
            let (items, next) = api.list(&["clients"], &query, command.limit).await?;
            Ok(if json {
                pretty(&json!({"items": items, "next_cursor": next}))
            } else {
                clients_table(&items, next.is_some())
            })
        }
        Action::GrantsList { sub, client } => {
            let mut query = Vec::new();
            if let Some(sub) = sub {
                query.push(("sub", sub.as_str()));
            }
            if let Some(client) = client {
                query.push(("client_id", client.as_str()));
            }
            let (items, next) = api.list(&["grants"], &query, command.limit).await?;
            Ok(if json {
                pretty(&json!({"items": items, "next_cursor": next}))
            } else {
                grants_table(&items, next.is_some())
            })
        }
        Action::ClientsShow(id) => {
            let client = api
                .call(awc::http::Method::GET, &["clients", id], &[], ("client", id))
                .await?;
            Ok(if json {
                pretty(&client)
            } else {
                record(&client, CLIENT_FIELDS)
            })
        }
        Action::GrantsShow(id) => {
            let grant = api
                .call(awc::http::Method::GET, &["grants", id], &[], ("grant", id))
                .await?;
            Ok(if json {
                pretty(&grant)
            } else {
                record(&grant, GRANT_FIELDS)
            })
        }
        Action::ClientsDelete(id) => {
            let answer = api
                .call(awc::http::Method::DELETE, &["clients", id], &[], ("client", id))
                .await?;
            Ok(if json {
                pretty(&answer)
            } else {
                deleted_client(id, &answer)
            })
        }
        Action::GrantsRevoke(id) => {
            let answer = api
                .call(awc::http::Method::DELETE, &["grants", id], &[], ("grant", id))
                .await?;
            Ok(if json {
                pretty(&answer)
            } else {
                format!("revoked grant {}\n", clean(id))
            })
        }
        Action::SubjectRevoke(sub) => {
            let answer = api
                .call(
                    awc::http::Method::POST,
                    &["subjects", sub, "revoke"],
                    &[],
                    ("subject", sub),
                )
                .await?;
            Ok(if json {
                pretty(&answer)
            } else {
                format!(
                    "revoked {} grants of subject {} ({} upstream tokens revoked upstream)\n",
                    number(&answer["grants_revoked"]),
                    clean(sub),
                    number(&answer["upstream_revoked"])
                )
            })
        }
    }
}

mod api;
mod output;

use api::Api;
use output::*;
#[cfg(test)]
mod tests;
