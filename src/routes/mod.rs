//! HTTP endpoints, one module per endpoint family, and the helpers they
//! share (browser cookies, CORS, page security headers).

pub mod authorize;
pub mod callback;
pub mod client_auth;
pub mod errors;
pub mod gateway;
pub mod health;
pub mod introspect;
pub mod register;
pub mod revoke;
pub mod static_files;
pub mod token;
pub mod well_known;

use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};

use crate::crypto::random_token;
use crate::proxy::{BrowserContext, OAuthProxy};

/// Where static assets are served.
pub const STATIC_PREFIX: &str = "/static";

/// Remembered approvals kept per browser (newest first).
const MAX_REMEMBERED_CLIENTS: usize = 20;
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

/// The cookie library's key for the browser cookies, from the key material
/// the proxy derived (`OAUTH_PROXY_CONSENT_SIGNING_KEY`).
pub fn cookie_key(proxy: &OAuthProxy) -> Key {
    Key::from(proxy.consent_key().as_bytes())
}

/// The cookies the browser-facing endpoints use, signed with the consent key.
pub struct BrowserCookies {
    jar: CookieJar,
    secure: bool,
}

impl BrowserCookies {
    fn browser_cookie_name(&self) -> &'static str {
        // `__Host-` pins the cookie to this origin; it requires Secure.
        if self.secure {
            "__Host-mcp_proxy_browser"
        } else {
            "mcp_proxy_browser"
        }
    }

    fn consent_cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-mcp_proxy_consent"
        } else {
            "mcp_proxy_consent"
        }
    }

    /// Reads the signed cookies of a request; a new browser gets a new id.
    pub fn read(req: &HttpRequest, proxy: &OAuthProxy) -> (BrowserCookies, BrowserContext) {
        let mut cookies = BrowserCookies {
            jar: CookieJar::new(),
            secure: proxy.config().secure_cookies(),
        };
        for name in [cookies.browser_cookie_name(), cookies.consent_cookie_name()] {
            if let Some(cookie) = request_cookie(req, name) {
                cookies.jar.add_original(cookie);
            }
        }
        let key = &cookie_key(proxy);
        let signed = cookies.jar.signed(key);
        let browser_id = signed.get(cookies.browser_cookie_name()).map(|c| c.value().to_string());
        let remembered_clients = signed
            .get(cookies.consent_cookie_name())
            .and_then(|c| serde_json::from_str::<Vec<String>>(c.value()).ok())
            .unwrap_or_default();
        let browser_id = match browser_id {
            Some(id) if !id.is_empty() => id,
            _ => {
                let id = random_token(24);
                let cookie = cookies.cookie(cookies.browser_cookie_name(), id.clone());
                cookies.jar.signed_mut(key).add(cookie);
                id
            }
        };
        (
            cookies,
            BrowserContext {
                browser_id,
                remembered_clients,
            },
        )
    }

    fn cookie(&self, name: &'static str, value: String) -> Cookie<'static> {
        Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .finish()
    }

    /// Remembers that the user approved `client_id` in this browser.
    pub fn remember_client(&mut self, proxy: &OAuthProxy, browser: &BrowserContext, client_id: &str) {
        let mut clients = vec![client_id.to_string()];
        clients.extend(browser.remembered_clients.iter().filter(|c| *c != client_id).cloned());
        clients.truncate(MAX_REMEMBERED_CLIENTS);
        let value = serde_json::to_string(&clients).unwrap_or_else(|_| "[]".into());
        let mut cookie = self.cookie(self.consent_cookie_name(), value);
        cookie.set_max_age(actix_web::cookie::time::Duration::days(CONSENT_COOKIE_MAX_AGE_DAYS));
        self.jar.signed_mut(&cookie_key(proxy)).add(cookie);
    }

    /// Adds the cookies set during this request to a response.
    pub fn apply(&self, response: &mut HttpResponseBuilder) {
        for cookie in self.jar.delta() {
            response.cookie(cookie.clone());
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
