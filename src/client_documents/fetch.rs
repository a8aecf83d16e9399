//! Fetching a document (or a key set) over https under the SSRF rules: the
//! operator's host allow-list before any name lookup, every resolved address
//! checked ([`super::address`]) and only checked addresses connected to (the
//! connector's resolver is [`GuardedResolver`], so there is no second
//! lookup a rebinding DNS server could answer differently), no redirects,
//! 200 only, a JSON content type, a size cap enforced while reading, one
//! timeout over connection, headers and body.

use std::cell::RefCell;
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use actix_tls::connect::{Connector as TcpConnector, Resolve, Resolver};
use actix_web::http::header;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use url::{Host, Url};

use super::address::forbidden_kind;
use crate::config::ClientDocumentSettings;
use crate::oauth::client_document::DocumentError;

/// Largest document read: client documents are a few hundred bytes.
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;

/// Longest a fetch may take by default, connection, headers and body
/// together (`ClientDocumentSettings::fetch_timeout`).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A fetched body and how long it may be cached (`Cache-Control: max-age`;
/// `None`: no usable lifetime, the cache's minimum applies).
pub struct Fetched {
    pub body: actix_web::web::Bytes,
    pub max_age: Option<Duration>,
}

/// What a worker's client was built for: a client is reused only under the
/// same outbound roots and the same address rule.
struct BuiltFor {
    tls: Arc<rustls::ClientConfig>,
    allow_private: bool,
    timeout: Duration,
}

thread_local! {
    static CLIENT: RefCell<Option<(BuiltFor, awc::Client)>> = const { RefCell::new(None) };
}

/// The worker's client for documents (awc clients are not `Send`), trusting
/// this thread's outbound roots (`OAUTH_PROXY_EXTRA_CA_FILE` included) and
/// connecting only through [`GuardedResolver`].
fn http_client(settings: &ClientDocumentSettings) -> awc::Client {
    let tls = crate::tls::client_config();
    CLIENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some((built, client)) = &*slot {
            if Arc::ptr_eq(&built.tls, &tls)
                && built.allow_private == settings.allow_private_networks
                && built.timeout == settings.fetch_timeout
            {
                return client.clone();
            }
        }
        let guarded = TcpConnector::new(Resolver::custom(GuardedResolver {
            allow_private: settings.allow_private_networks,
        }))
        .service();
        let client = awc::Client::builder()
            .disable_redirects()
            .timeout(settings.fetch_timeout)
            .connector(
                awc::Connector::new()
                    .connector(guarded)
                    .timeout(settings.fetch_timeout)
                    .rustls_0_23(tls.clone()),
            )
            .add_default_header((
                header::USER_AGENT,
                concat!("mcp-oauth-proxy/", env!("CARGO_PKG_VERSION")),
            ))
            .finish();
        *slot = Some((
            BuiltFor {
                tls,
                allow_private: settings.allow_private_networks,
                timeout: settings.fetch_timeout,
            },
            client.clone(),
        ));
        client
    })
}

/// The connector's name lookup: resolves once, refuses the host when any of
/// its addresses is not public (unless private networks are allowed), and
/// hands the connector exactly the addresses it checked.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn StdError>>> {
        Box::pin(async move {
            checked_addresses(host, port, self.allow_private)
                .await
                .map_err(|e| Box::new(e) as Box<dyn StdError>)
        })
    }
}

/// `host`'s addresses, each checked. A name with one forbidden address is
/// refused whole: a public name has no business resolving to the intranet.
async fn checked_addresses(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, DocumentError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let name = format!("{bare}:{port}");
            actix_web::rt::task::spawn_blocking(move || name.to_socket_addrs().map(Iterator::collect))
                .await
                .map_err(|_| DocumentError::Unreachable(format!("the name lookup of {bare} was interrupted")))?
                .map_err(|e| DocumentError::Unreachable(format!("{bare} could not be resolved ({e})")))?
        }
    };
    if addresses.is_empty() {
        return Err(DocumentError::Unreachable(format!("{bare} has no address")));
    }
    if !allow_private {
        for address in &addresses {
            check_address(&bare, address.ip())?;
        }
    }
    Ok(addresses)
}

fn check_address(host: &str, ip: IpAddr) -> Result<(), DocumentError> {
    match forbidden_kind(ip) {
        Some(kind) => Err(DocumentError::ForbiddenAddress {
            host: host.to_string(),
            address: ip.to_string(),
            kind,
        }),
        None => Ok(()),
    }
}

/// Whether the operator's allow-list (`OAUTH_PROXY_CIMD_ALLOWED_HOSTS`)
/// admits `host`: a pattern is a host (exact) or `*.` and a domain, which
/// admits that domain's subdomains but not the domain itself. No list: every
/// host.
pub fn host_allowed(host: &str, patterns: Option<&[String]>) -> bool {
    let Some(patterns) = patterns else {
        return true;
    };
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|pattern| match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => *pattern == host,
    })
}

/// Whether a `Content-Type` is JSON: `application/json` or any
/// `application/*+json` (`application/jwk-set+json`), parameters ignored.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.len() > "+json".len() && subtype.ends_with("+json"))
}

/// The `max-age` of a `Cache-Control` value; `None` when there is none or
/// the response may not be reused as is (`no-store`, `no-cache`).
pub fn parse_max_age(value: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in value.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return None;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            max_age = seconds.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    max_age
}

/// GETs `url` as JSON under the operator's `settings`.
pub async fn fetch_json(url: &Url, settings: &ClientDocumentSettings) -> Result<Fetched, DocumentError> {
    if url.scheme() != "https" {
        return Err(DocumentError::BadUrl("only https URLs are fetched".into()));
    }
    let Some(host) = url.host() else {
        return Err(DocumentError::BadUrl("it has no host".into()));
    };
    let host_name = url.host_str().unwrap_or_default();
    // The allow-list is checked before any lookup: a refused host costs
    // nothing and learns nothing.
    if !host_allowed(host_name, settings.allowed_hosts.as_deref()) {
        return Err(DocumentError::HostNotAllowed {
            host: host_name.to_string(),
        });
    }
    // An address in the URL is checked here too (the connector skips the
    // lookup for addresses it can parse).
    if !settings.allow_private_networks {
        match host {
            Host::Ipv4(ip) => check_address(host_name, IpAddr::V4(ip))?,
            Host::Ipv6(ip) => check_address(host_name, IpAddr::V6(ip))?,
            Host::Domain(_) => {}
        }
    }
    let timeout = settings.fetch_timeout;
    actix_web::rt::time::timeout(timeout, fetch_within(url, settings))
        .await
        .unwrap_or(Err(DocumentError::Timeout(timeout.as_secs().max(1))))
}

async fn fetch_within(url: &Url, settings: &ClientDocumentSettings) -> Result<Fetched, DocumentError> {
    let mut response = http_client(settings)
        .get(url.as_str())
        .insert_header((header::ACCEPT, "application/json"))
        .send()
        .await
        .map_err(|e| send_error(e, settings.fetch_timeout))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(DocumentError::Redirected);
    }
    if status.as_u16() != 200 {
        return Err(DocumentError::Status(status.as_u16()));
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json_content_type(content_type) {
        return Err(DocumentError::ContentType(if content_type.is_empty() {
            "no content type".into()
        } else {
            content_type.chars().take(100).collect()
        }));
    }
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64) {
        return Err(DocumentError::TooLarge(MAX_DOCUMENT_BYTES));
    }
    let max_age = response
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    // Chunked bodies have no length: stop reading as soon as one passes the
    // cap.
    let mut body = actix_web::web::BytesMut::new();
    while let Some(chunk) = response.next().await {
        let chunk = chunk.map_err(|e| DocumentError::Unreachable(format!("reading the document failed ({e})")))?;
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(DocumentError::TooLarge(MAX_DOCUMENT_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        body: body.freeze(),
        max_age,
    })
}

fn send_error(error: awc::error::SendRequestError, timeout: Duration) -> DocumentError {
    use awc::error::{ConnectError, SendRequestError};
    match error {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            DocumentError::Timeout(timeout.as_secs().max(1))
        }
        // The guarded resolver's refusal, as it was said.
        SendRequestError::Connect(ConnectError::Resolver(cause)) => match cause.downcast_ref::<DocumentError>() {
            Some(refused) => refused.clone(),
            None => DocumentError::Unreachable(format!("the name could not be resolved ({cause})")),
        },
        other => DocumentError::Unreachable(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_pattern_admits_the_host_and_a_wildcard_its_subdomains_only() {
        let patterns = vec!["claude.ai".to_string(), "*.example.com".to_string()];
        let allowed = |host| host_allowed(host, Some(&patterns));
        assert!(allowed("claude.ai"));
        assert!(allowed("CLAUDE.AI"));
        assert!(allowed("docs.example.com"));
        assert!(allowed("a.b.example.com"));
        assert!(!allowed("example.com"));
        assert!(!allowed("evilexample.com"));
        assert!(!allowed("claude.ai.evil.com"));
        assert!(!allowed("evil-claude.ai"));
        assert!(!allowed(".example.com"));
        assert!(host_allowed("anything.test", None));
    }

    #[test]
    fn json_content_types_are_application_json_and_the_plus_json_suffix() {
        for good in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/jwk-set+json",
        ] {
            assert!(is_json_content_type(good), "{good}");
        }
        for wrong in [
            "",
            "text/html",
            "text/json",
            "application/+json",
            "application/jsonx",
            "text/plain+json",
        ] {
            assert!(!is_json_content_type(wrong), "{wrong}");
        }
    }

    #[test]
    fn cache_control_max_age_is_read_and_no_store_or_no_cache_give_none() {
        assert_eq!(parse_max_age("max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(parse_max_age("public, MAX-AGE=3600"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_max_age("max-age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(parse_max_age("no-store"), None);
        assert_eq!(parse_max_age("max-age=600, no-cache"), None);
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("max-age=-1"), None);
        assert_eq!(parse_max_age("max-age=soon"), None);
    }
}
