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

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
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
            other if other.starts_with('-') => return Err(usage(format!("unknown option `{other}`"))),
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
                format!(
                    "deleted client {} ({} grants revoked)\n",
                    clean(id),
                    number(&answer["grants_revoked"])
                )
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

struct Api<'a> {
    client: awc::Client,
    target: &'a Target,
}

impl Api<'_> {
    /// One request; the JSON answer of a 2xx, or the failure its status means.
    /// `what` names the record asked for (in a 404's message).
    async fn call(
        &self,
        method: awc::http::Method,
        segments: &[&str],
        query: &[(&str, &str)],
        what: (&str, &str),
    ) -> Result<Value, Failure> {
        let url = self.target.url(segments, query);
        let shown = self.target.shown();
        let from = self.target.from;
        let unreachable = |e: &dyn std::fmt::Display| {
            Failure::Failed(format!(
                "cannot reach the admin API at {shown} ({e}); check {from} and that the service runs with \
                 OAUTH_PROXY_ADMIN_BIND set"
            ))
        };
        let mut response = self
            .client
            .request(method, url.as_str())
            .bearer_auth(self.target.token.expose_secret())
            .insert_header((awc::http::header::ACCEPT, "application/json"))
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = response.body().limit(MAX_BODY).await.map_err(|e| unreachable(&e))?;
        let answer: Option<Value> = serde_json::from_slice(&body).ok();
        let description = answer
            .as_ref()
            .and_then(|a| a["error_description"].as_str())
            .map(|d| format!(": {}", clean(d)))
            .unwrap_or_default();
        let error = answer.as_ref().and_then(|a| a["error"].as_str()).unwrap_or("");
        match status.as_u16() {
            200..=299 => answer.ok_or_else(|| {
                Failure::Failed(format!(
                    "the admin API at {shown} answered {status} without JSON; is {from} the admin listener?"
                ))
            }),
            401 => Err(Failure::Failed(format!(
                "the admin API at {shown} refused the token (401){description}; check OAUTH_PROXY_ADMIN_TOKEN \
                 (it must be the service's)"
            ))),
            403 => Err(Failure::Failed(format!(
                "the admin API at {shown} is off (403){description}; the service needs OAUTH_PROXY_ADMIN_TOKEN set"
            ))),
            404 if error == "not_found" && !what.1.is_empty() => Err(Failure::Failed(format!(
                "not found: no {} `{}` (404)",
                what.0,
                clean(what.1)
            ))),
            404 => Err(Failure::Failed(format!(
                "{shown} has no admin API (404 for {}); is {from} the admin listener (OAUTH_PROXY_ADMIN_BIND)?",
                url.path()
            ))),
            400 => Err(Failure::Usage(format!(
                "the admin API refused the request (400){description} {HINT}"
            ))),
            _ => Err(Failure::Failed(format!(
                "the admin API at {shown} answered {status}{description}"
            ))),
        }
    }

    /// Every item of a list, page after page (`next_cursor`), or the first
    /// `limit`; also the cursor of the page after the last item returned.
    async fn list(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        limit: Option<usize>,
    ) -> Result<(Vec<Value>, Option<String>), Failure> {
        let mut items: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let wanted = limit.map_or(MAX_PAGE, |l| (l - items.len()).min(MAX_PAGE));
            let wanted = wanted.to_string();
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("limit", &wanted));
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let page = self.call(awc::http::Method::GET, segments, &q, ("list", "")).await?;
            let Some(page_items) = page["items"].as_array() else {
                return Err(Failure::Failed(format!(
                    "the admin API at {} answered a list without `items`",
                    self.target.shown()
                )));
            };
            items.extend(page_items.iter().cloned());
            let next = page["next_cursor"].as_str().map(String::from);
            if let Some(limit) = limit {
                if items.len() >= limit {
                    items.truncate(limit);
                    return Ok((items, next));
                }
            }
            match next {
                None => return Ok((items, None)),
                Some(next) if page_items.is_empty() || cursor.as_deref() == Some(next.as_str()) => {
                    return Err(Failure::Failed(format!(
                        "the admin API at {} answered the same page twice (cursor {})",
                        self.target.shown(),
                        clean(&next)
                    )))
                }
                Some(next) => cursor = Some(next),
            }
        }
        Err(Failure::Failed(format!(
            "more than {MAX_PAGES} pages: stopped; use --limit or a narrower filter"
        )))
    }
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Text from the API made safe for a terminal: client names and redirect
/// URIs are chosen by whoever registers, so control characters (escape
/// sequences) and bidirectional overrides are shown as `?`.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn number(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        _ => "?".into(),
    }
}

/// A field as table text: strings cleaned, lists joined by `sep`, null `-`,
/// `*_at` numbers as UTC dates.
fn cell(item: &Value, key: &str, sep: &str) -> String {
    match &item[key] {
        Value::Null => "-".into(),
        Value::String(s) => clean(s),
        Value::Number(n) if key.ends_with("_at") => n.as_i64().map_or_else(|| n.to_string(), utc),
        Value::Array(list) => {
            let parts: Vec<String> = list
                .iter()
                .map(|v| v.as_str().map_or_else(|| clean(&v.to_string()), clean))
                .collect();
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(sep)
            }
        }
        other => clean(&other.to_string()),
    }
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn footer(count: usize, noun: &str, more: bool) -> String {
    let more = if more { " (more: raise --limit)" } else { "" };
    format!("{count} {noun}{more}\n")
}

fn clients_table(items: &[Value], more: bool) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            vec![
                cell(c, "client_id", " "),
                cell(c, "client_name", " "),
                cell(c, "redirect_uris", " "),
                cell(c, "token_endpoint_auth_method", " "),
                cell(c, "registered_at", " "),
                cell(c, "last_used_at", " "),
            ]
        })
        .collect();
    let headers = ["CLIENT ID", "NAME", "REDIRECT URIS", "AUTH", "REGISTERED", "LAST USED"];
    format!("{}{}", table(&headers, &rows), footer(items.len(), "clients", more))
}

fn grants_table(items: &[Value], more: bool) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|g| {
            vec![
                cell(g, "grant_id", " "),
                cell(g, "client_id", " "),
                cell(g, "subject", " "),
                cell(g, "scopes", " "),
                cell(g, "created_at", " "),
                cell(g, "last_refreshed_at", " "),
                cell(g, "expires_at", " "),
            ]
        })
        .collect();
    let headers = [
        "GRANT ID",
        "CLIENT ID",
        "SUBJECT",
        "SCOPES",
        "CREATED",
        "LAST REFRESHED",
        "EXPIRES",
    ];
    format!("{}{}", table(&headers, &rows), footer(items.len(), "grants", more))
}

const CLIENT_FIELDS: &[&str] = &[
    "client_id",
    "client_name",
    "redirect_uris",
    "grant_types",
    "token_endpoint_auth_method",
    "registered_at",
    "last_used_at",
];

const GRANT_FIELDS: &[&str] = &[
    "grant_id",
    "client_id",
    "subject",
    "scopes",
    "resource",
    "created_at",
    "last_refreshed_at",
    "expires_at",
];

/// One record as `field  value` lines: the known fields in order, then any
/// other field the API added.
fn record(item: &Value, fields: &[&str]) -> String {
    let mut keys: Vec<&str> = fields.to_vec();
    if let Some(object) = item.as_object() {
        keys.extend(object.keys().map(String::as_str).filter(|k| !fields.contains(k)));
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| vec![(*k).to_string(), cell(item, k, " ")])
        .collect();
    let text = table(&["FIELD", "VALUE"], &rows);
    // No header for a single record.
    text.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or(text)
}

/// Unix seconds as an ISO 8601 UTC date (`2024-03-05T06:07:08Z`).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn utc_dates_match_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_709_618_828), "2024-03-05T06:07:08Z");
        assert_eq!(utc(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn the_admin_command_line_parses_each_form() {
        let parsed = |line: &str| parse(&args(line)).unwrap().unwrap();
        assert_eq!(
            parsed("grants list --sub alice --client=c1 --json --limit 10"),
            AdminCommand {
                action: Action::GrantsList {
                    sub: Some("alice".into()),
                    client: Some("c1".into())
                },
                json: true,
                limit: Some(10)
            }
        );
        assert_eq!(
            parsed("grants revoke --sub bob").action,
            Action::SubjectRevoke("bob".into())
        );
        assert_eq!(parsed("grants revoke g1").action, Action::GrantsRevoke("g1".into()));
        assert_eq!(parsed("clients delete c1").action, Action::ClientsDelete("c1".into()));
        assert_eq!(parse(&args("clients list --help")).unwrap(), None);
    }

    #[test]
    fn the_admin_command_line_refuses_what_does_not_fit() {
        for line in [
            "",
            "clients",
            "clients show",
            "clients list --sub alice",
            "grants revoke g1 --sub bob",
            "grants show g1 --limit 3",
            "grants list --limit 0",
            "grants list --sub",
            "grants list --sub a --sub b",
            "grants list --bogus",
            "users list",
        ] {
            let error = parse(&args(line)).expect_err(line);
            assert!(error.contains("--help"), "{line}: {error}");
        }
    }

    #[test]
    fn terminal_control_characters_are_neutralised() {
        assert_eq!(clean("a\u{1b}[31mb\u{202E}c\n"), "a?[31mb?c?");
    }

    #[test]
    fn urls_keep_each_id_one_segment_under_a_base_path() {
        let target = Target::from_lookup(&|name| match name {
            "OAUTH_PROXY_ADMIN_URL" => Some("https://ops.example/proxy/".into()),
            "OAUTH_PROXY_ADMIN_TOKEN" => Some("t".repeat(20)),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            target.url(&["subjects", "a/b?c", "revoke"], &[]).as_str(),
            "https://ops.example/proxy/admin/subjects/a%2Fb%3Fc/revoke"
        );
        let bind = Target::from_lookup(&|name| match name {
            "OAUTH_PROXY_ADMIN_BIND" => Some("0.0.0.0:9090".into()),
            "OAUTH_PROXY_ADMIN_TOKEN" => Some("t".repeat(20)),
            _ => None,
        })
        .unwrap();
        assert_eq!(bind.base.as_str(), "http://127.0.0.1:9090/");
        assert_eq!(bind.from, "OAUTH_PROXY_ADMIN_BIND");
    }

    #[test]
    fn tables_align_every_column_but_the_last() {
        let text = table(
            &["A", "BB"],
            &[vec!["long value".into(), "x".into()], vec!["s".into(), "y".into()]],
        );
        assert_eq!(text, "A           BB\nlong value  x\ns           y\n");
    }
}
