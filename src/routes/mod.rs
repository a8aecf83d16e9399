//! HTTP endpoints, one module per endpoint family, and the helpers they
//! share (the browser session, CORS, page security headers).

pub mod admin;
pub mod authorize;
pub mod callback;
pub mod client_auth;
pub mod context;
pub mod errors;
pub mod gateway;
pub mod health;
pub mod introspect;
pub mod metrics;
pub mod observe;
pub mod register;
pub mod revoke;
pub mod static_files;
pub mod token;
pub mod well_known;

use actix_session::config::{CookieContentSecurity, PersistentSession};
use actix_session::storage::CookieSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::time::Duration;
use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};

use crate::crypto::random_token;
use crate::proxy::{BrowserContext, OAuthProxy};

/// Where static assets are served.
pub const STATIC_PREFIX: &str = "/static";

/// Remembered approvals kept per browser (newest first).
const MAX_REMEMBERED_CLIENTS: usize = 20;
/// The longest remembered entry kept: registered ids are 22 characters and
/// document clients' keys 47 (`doc:` and a hash, see
/// `proxy::authorize::remembered_key`), so 20 entries keep the encrypted
/// session cookie far under browsers' 4 KiB; anything longer is not one
/// this proxy wrote.
const MAX_REMEMBERED_ENTRY: usize = 64;
const CONSENT_COOKIE_MAX_AGE_DAYS: i64 = 30;

/// Headers for every HTML page: no framing (clickjacking of the consent
/// buttons), no caching, no referrer, and a CSP whose `form-action` lists the
/// places the consent form may lead to (browsers apply it to the redirect
/// after the POST too).
pub fn add_page_security_headers(headers: &mut HeaderMap, form_targets: &[String]) {
    let mut form_action = String::from("'self'");
    for target in form_targets {
        // Only plain origins or `scheme:` sources reach here; skip anything odd.
        if target
            .chars()
            .all(|c| c.is_ascii_graphic() && c != ';' && c != ',' && c != '\'')
        {
            form_action.push(' ');
            form_action.push_str(target);
        }
    }
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// CORS for the endpoints browsers' MCP clients call directly (metadata,
/// `/register`, `/token`): any origin, no credentials.
pub fn add_cors_headers(headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, MCP-Protocol-Version"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
}

/// Answers a CORS preflight.
pub async fn preflight() -> HttpResponse {
    let mut response = HttpResponse::NoContent().finish();
    add_cors_headers(response.headers_mut());
    response
}

/// The request cookie called `name`, parsed by the cookie crate as
/// `HttpRequest::cookie` does (pairs split at `;`, percent-decoded), but only
/// the pair with that name: `HttpRequest::cookie` parses and copies every
/// cookie into the request's extension map first.
fn request_cookie(req: &HttpRequest, name: &str) -> Option<Cookie<'static>> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| {
            pair.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .find_map(|pair| {
            Cookie::parse_encoded(pair)
                .ok()
                .filter(|cookie| cookie.name() == name)
                .map(Cookie::into_owned)
        })
}

/// The browser session cookie's name. `__Host-` pins it to this origin (no
/// `Domain`, `Path=/`); browsers accept that prefix only with `Secure`.
pub fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-mcp_proxy_session"
    } else {
        "mcp_proxy_session"
    }
}

/// Session entries: the browser-binding id (a transaction is bound to its
/// hash) and the client ids this browser approved with "remember" (newest
/// first).
const SESSION_BROWSER: &str = "browser";
const SESSION_CONSENT: &str = "consent";

/// The browser session of `/authorize`, `/consent` and the upstream callback,
/// and of no other route (the token endpoint and the gateway never read a
/// cookie): one cookie, encrypted and authenticated (actix-session's private
/// cookie, AES-256-GCM under a key derived from
/// `OAUTH_PROXY_CONSENT_SIGNING_KEY`), HttpOnly, `SameSite=Lax` (the callback
/// arrives from the upstream as a top-level cross-site navigation, which
/// `Strict` would send without it), `Path=/`, and `Secure` with a `__Host-`
/// name when the public URL is https. It lives as long as a remembered
/// approval: 30 days from its last change.
pub fn browser_session(proxy: &OAuthProxy) -> SessionMiddleware<CookieSessionStore> {
    let secure = proxy.config().secure_cookies();
    SessionMiddleware::builder(CookieSessionStore::default(), Key::from(&proxy.cookie_keys().session))
        .cookie_name(session_cookie_name(secure).to_string())
        .cookie_secure(secure)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_path("/".to_string())
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(PersistentSession::default().session_ttl(Duration::days(CONSENT_COOKIE_MAX_AGE_DAYS)))
        .build()
}

/// The names of the two signed cookies earlier releases wrote instead of the
/// session: the browser-binding id and the remembered approvals.
fn legacy_cookie_names(secure: bool) -> [&'static str; 2] {
    if secure {
        ["__Host-mcp_proxy_browser", "__Host-mcp_proxy_consent"]
    } else {
        ["mcp_proxy_browser", "mcp_proxy_consent"]
    }
}

/// The browser's session as the browser-facing endpoints use it.
pub struct BrowserCookies {
    session: Session,
    secure: bool,
    /// Cookies of an earlier release found on this request: moved into the
    /// session and expired in the answer.
    expired: [Option<&'static str>; 2],
}

impl BrowserCookies {
    /// Reads the browser session; a new browser gets a new id. A browser
    /// that still carries the signed cookies of an earlier release keeps its
    /// binding id and remembered approvals: they move into the session.
    pub fn read(req: &HttpRequest, session: Session, proxy: &OAuthProxy) -> (BrowserCookies, BrowserContext) {
        let mut cookies = BrowserCookies {
            session,
            secure: proxy.config().secure_cookies(),
            expired: [None, None],
        };
        let known = cookies
            .session
            .get::<String>(SESSION_BROWSER)
            .ok()
            .flatten()
            .filter(|id| !id.is_empty());
        let browser = match known {
            Some(browser_id) => BrowserContext {
                browser_id,
                remembered_clients: cookies
                    .session
                    .get::<Vec<String>>(SESSION_CONSENT)
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
            },
            None => {
                let browser = cookies.adopt_legacy_cookies(req, proxy);
                cookies.store(SESSION_BROWSER, &browser.browser_id);
                if !browser.remembered_clients.is_empty() {
                    cookies.store(SESSION_CONSENT, &browser.remembered_clients);
                }
                browser
            }
        };
        (cookies, browser)
    }

    /// What the signed cookies of an earlier release say (checked with the
    /// key that release derived), or a new browser.
    fn adopt_legacy_cookies(&mut self, req: &HttpRequest, proxy: &OAuthProxy) -> BrowserContext {
        let names = legacy_cookie_names(self.secure);
        let mut jar = CookieJar::new();
        for (slot, name) in names.into_iter().enumerate() {
            if let Some(cookie) = request_cookie(req, name) {
                jar.add_original(cookie);
                self.expired[slot] = Some(name);
            }
        }
        let (mut browser_id, mut remembered_clients) = (None, Vec::new());
        if self.expired.iter().any(Option::is_some) {
            let key = Key::from(&proxy.cookie_keys().legacy_signed);
            let signed = jar.signed(&key);
            browser_id = signed
                .get(names[0])
                .map(|c| c.value().to_string())
                .filter(|id| !id.is_empty());
            // As that release did: each cookie counts on its own.
            remembered_clients = signed
                .get(names[1])
                .and_then(|c| serde_json::from_str::<Vec<String>>(c.value()).ok())
                .unwrap_or_default();
            remembered_clients.truncate(MAX_REMEMBERED_CLIENTS);
        }
        BrowserContext {
            browser_id: browser_id.unwrap_or_else(|| random_token(24)),
            remembered_clients,
        }
    }

    fn store<T: serde::Serialize + ?Sized>(&self, entry: &str, value: &T) {
        // Serializing strings to JSON cannot fail; say so if it ever does.
        if let Err(e) = self.session.insert(entry, value) {
            log::error!("the browser session could not be written: {e}");
        }
    }

    /// Remembers that the user approved `client_id` (a registered client's
    /// id, or a document client's key) in this browser (at most
    /// `MAX_REMEMBERED_CLIENTS`, newest first, so the cookie stays small).
    pub fn remember_client(&self, browser: &BrowserContext, client_id: &str) {
        if client_id.len() > MAX_REMEMBERED_ENTRY {
            log::warn!("a remembered approval of {} bytes was not kept", client_id.len());
            return;
        }
        let mut clients = Vec::with_capacity(MAX_REMEMBERED_CLIENTS);
        clients.push(client_id);
        clients.extend(
            browser
                .remembered_clients
                .iter()
                .map(String::as_str)
                .filter(|c| *c != client_id && c.len() <= MAX_REMEMBERED_ENTRY)
                .take(MAX_REMEMBERED_CLIENTS - 1),
        );
        self.store(SESSION_CONSENT, &clients);
    }

    /// Adds to a response the removal of the earlier release's cookies this
    /// request carried (the session cookie is the middleware's).
    pub fn apply(&self, response: &mut HttpResponseBuilder) {
        for name in self.expired.iter().flatten() {
            let mut cookie = Cookie::build(*name, "")
                .path("/")
                .http_only(true)
                .secure(self.secure)
                .same_site(SameSite::Lax)
                .finish();
            cookie.make_removal();
            response.cookie(cookie);
        }
    }
}

/// A 302 redirect that is never cached.
pub fn redirect(location: &str, cookies: Option<&BrowserCookies>) -> HttpResponse {
    let mut response = HttpResponse::Found();
    response
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(cookies) = cookies {
        cookies.apply(&mut response);
    }
    response.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use proptest::prelude::*;

    fn request_with_cookies(values: &[String]) -> HttpRequest {
        let mut request = TestRequest::default();
        for value in values {
            request = request.append_header((header::COOKIE, value.as_str()));
        }
        request.to_http_request()
    }

    #[test]
    fn the_named_cookie_is_found_among_others_and_not_by_prefix() {
        let req = request_with_cookies(&["a=1; mcp_proxy_browser_x=2; mcp_proxy_browser=abc%20d".into()]);
        assert_eq!(request_cookie(&req, "mcp_proxy_browser").unwrap().value(), "abc d");
        assert!(request_cookie(&req, "mcp_proxy").is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any `Cookie` header lines (printable ASCII, as a header value must
        /// be): an answer, never a panic, and a cookie found is the one named.
        #[test]
        fn any_cookie_header_is_read_without_panicking(values in proptest::collection::vec("[ -~]{0,200}", 0..4)) {
            let req = request_with_cookies(&values);
            if let Some(cookie) = request_cookie(&req, "mcp_proxy_browser") {
                prop_assert_eq!(cookie.name(), "mcp_proxy_browser");
            }
        }

        /// The proxy's cookie is found whatever other cookies surround it,
        /// including ones whose names start with its name.
        #[test]
        fn the_proxy_cookie_is_found_among_any_other_cookies(
            before in proptest::collection::vec(("[a-z_]{1,20}", "[A-Za-z0-9]{0,20}"), 0..5),
            after in proptest::collection::vec(("[a-z_]{1,20}", "[A-Za-z0-9]{0,20}"), 0..5),
            value in "[A-Za-z0-9+/=_-]{1,60}",
        ) {
            let name = "mcp_proxy_browser";
            let pairs = |list: &[(String, String)]| -> Vec<String> {
                list.iter().filter(|(n, _)| n != name).map(|(n, v)| format!("{n}={v}")).collect()
            };
            let mut all = pairs(&before);
            all.push(format!("{name}={value}"));
            all.extend(pairs(&after));
            let req = request_with_cookies(&[all.join("; ")]);
            let cookie = request_cookie(&req, name);
            prop_assert_eq!(cookie.map(|c| c.value().to_string()), Some(value));
        }
    }
}
