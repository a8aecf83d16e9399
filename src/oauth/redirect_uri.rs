//! Redirect-URI rules for registration and authorization.
//!
//! - Allowed: https, loopback http (`127.0.0.1`, `[::1]`, `localhost`), and
//!   private-use schemes (RFC 8252 §7.1, e.g. `cursor://`), further limited by
//!   the operator's patterns.
//! - Refused: `javascript:`, `data:`, `file:` and similar, userinfo
//!   (`http://localhost:1@evil`), fragments (RFC 6749 §3.1.2).
//! - Matching: loopback URIs match on any port (RFC 8252 §7.3), even when the
//!   registered URI has none; everything else matches exactly, path included.

use url::{Host, Url};

/// Schemes that must never receive an authorization response.
const FORBIDDEN_SCHEMES: [&str; 8] = ["javascript", "data", "file", "vbscript", "about", "blob", "ftp", "ws"];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("`{0}` is not an absolute URI")]
    NotAbsolute(String),
    #[error("`{0}` uses a scheme that cannot receive authorization responses")]
    ForbiddenScheme(String),
    #[error("`{0}` must not contain user information")]
    Userinfo(String),
    #[error("`{0}` must not contain a fragment")]
    Fragment(String),
    #[error("`{0}`: plain http is only allowed for loopback addresses")]
    InsecureHttp(String),
    #[error("`{0}` is not allowed by this server's redirect URI patterns")]
    NotAllowedByPattern(String),
}

/// A redirect URI that passed the registration rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri(Url);

impl RedirectUri {
    /// Parses a redirect URI against the built-in rules and the operator's
    /// patterns (`None`: the default rules only).
    pub fn parse(raw: &str, patterns: Option<&[String]>) -> Result<Self, RedirectUriError> {
        let url = Url::parse(raw).map_err(|_| RedirectUriError::NotAbsolute(raw.to_string()))?;
        let scheme = url.scheme();
        if FORBIDDEN_SCHEMES.contains(&scheme) {
            return Err(RedirectUriError::ForbiddenScheme(raw.to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RedirectUriError::Userinfo(raw.to_string()));
        }
        if url.fragment().is_some() || raw.contains('#') {
            return Err(RedirectUriError::Fragment(raw.to_string()));
        }
        match scheme {
            "https" if url.host().is_none() => return Err(RedirectUriError::NotAbsolute(raw.to_string())),
            "http" if !is_loopback(&url) => return Err(RedirectUriError::InsecureHttp(raw.to_string())),
            _ => {}
        }
        if let Some(patterns) = patterns {
            if !patterns.iter().any(|p| pattern_matches(p, &url)) {
                return Err(RedirectUriError::NotAllowedByPattern(raw.to_string()));
            }
        }
        Ok(RedirectUri(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    /// Whether a redirect URI sent to `/authorize` matches this registered one.
    pub fn matches(&self, requested: &Url) -> bool {
        let registered = &self.0;
        if is_loopback(registered) && is_loopback(requested) {
            // RFC 8252 §7.3: the port is chosen by the client at run time.
            return registered.scheme() == requested.scheme()
                && registered.host() == requested.host()
                && registered.path() == requested.path()
                && registered.query() == requested.query();
        }
        registered == requested
    }
}

/// Loopback per RFC 8252 §7.3 and §8.3 (`localhost` included, as MCP clients use it).
pub fn is_loopback(url: &Url) -> bool {
    if url.scheme() != "http" {
        return false;
    }
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Matches a parsed URI against an operator pattern like
/// `https://*.example.com/callback*` or `http://localhost:*`.
///
/// The pattern is split into scheme, host, port and the rest, and each part is
/// matched on its own, so a `*` in the host can never swallow a `/` or `@` and
/// let another host through.
pub fn pattern_matches(pattern: &str, url: &Url) -> bool {
    let Some((scheme, rest)) = pattern.split_once(':') else {
        return false;
    };
    if !glob(scheme, url.scheme()) {
        return false;
    }
    let Some(rest) = rest.strip_prefix("//") else {
        // An opaque pattern such as `myapp:*`: match everything after the scheme.
        let tail = &url.as_str()[url.scheme().len() + 1..];
        return glob(rest, tail);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/*"),
    };
    let (host_pattern, port_pattern) = split_host_port(authority);
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !glob(&host_pattern.to_ascii_lowercase(), host) {
        return false;
    }
    let port_ok = match (port_pattern, url.port()) {
        (Some("*"), _) => true,
        (None, None) => true,
        // Loopback ports are chosen at run time (RFC 8252 §7.3).
        (None, Some(_)) => is_loopback(url),
        (Some(p), Some(port)) => p == port.to_string(),
        (Some(_), None) => false,
    };
    if !port_ok {
        return false;
    }
    let mut tail = url.path().to_string();
    if let Some(query) = url.query() {
        tail.push('?');
        tail.push_str(query);
    }
    glob(path, &tail) || (path.ends_with("/*") && glob(&path[..path.len() - 2], &tail))
}

/// Whether an operator pattern names its host exactly, so only that host
/// (the operator's own, or loopback) can receive authorization responses.
///
/// Not pinned: a `*` in the scheme or the host (`https://*`,
/// `https://*.example.com/cb`, `cursor://*`), an empty host, or an opaque
/// pattern (`myapp:*`) with a `*` anywhere (any app can claim a private-use
/// scheme). A `*` in the port or path leaves the host pinned. Parsed as
/// [`pattern_matches`] parses it.
pub fn pattern_pins_host(pattern: &str) -> bool {
    let Some((scheme, rest)) = pattern.split_once(':') else {
        return false;
    };
    if scheme.is_empty() || scheme.contains('*') {
        return false;
    }
    let Some(rest) = rest.strip_prefix("//") else {
        return !rest.is_empty() && !rest.contains('*');
    };
    let authority = match rest.find('/') {
        Some(i) => &rest[..i],
        None => rest,
    };
    let (host, _port) = split_host_port(authority);
    !host.is_empty() && !host.contains('*')
}

fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        // [::1]:port
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':'));
        }
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<RedirectUri, RedirectUriError> {
        RedirectUri::parse(raw, None)
    }

    #[test]
    fn https_loopback_and_private_use_schemes_are_accepted() {
        for uri in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1:33418/callback",
            "http://[::1]/cb",
            "http://localhost:6274/oauth/callback/debug",
            "cursor://anysphere.cursor-retrieval/oauth/user-foo/callback",
        ] {
            assert!(parse(uri).is_ok(), "{uri}");
        }
    }

    #[test]
    fn dangerous_uris_are_refused() {
        assert!(matches!(
            parse("javascript:alert(1)"),
            Err(RedirectUriError::ForbiddenScheme(_))
        ));
        assert!(matches!(
            parse("data:text/html,hi"),
            Err(RedirectUriError::ForbiddenScheme(_))
        ));
        assert!(matches!(
            parse("file:///etc/passwd"),
            Err(RedirectUriError::ForbiddenScheme(_))
        ));
        assert!(matches!(
            parse("http://localhost:1@evil.com/cb"),
            Err(RedirectUriError::Userinfo(_))
        ));
        assert!(matches!(
            parse("https://app.example/cb#frag"),
            Err(RedirectUriError::Fragment(_))
        ));
        assert!(matches!(
            parse("http://evil.com/cb"),
            Err(RedirectUriError::InsecureHttp(_))
        ));
        assert!(matches!(parse("/relative"), Err(RedirectUriError::NotAbsolute(_))));
    }

    #[test]
    fn loopback_matches_any_port_but_not_another_path() {
        let registered = parse("http://127.0.0.1/callback").unwrap();
        assert!(registered.matches(&Url::parse("http://127.0.0.1:51234/callback").unwrap()));
        assert!(!registered.matches(&Url::parse("http://127.0.0.1:51234/other").unwrap()));
        assert!(!registered.matches(&Url::parse("http://localhost:51234/callback").unwrap()));
        let debug = parse("http://localhost:6274/oauth/callback/debug").unwrap();
        assert!(!debug.matches(&Url::parse("http://localhost:6274/oauth/callback").unwrap()));
    }

    #[test]
    fn portless_and_fixed_port_loopback_entries_match_an_ephemeral_port_on_the_same_host() {
        for (listed, used) in [
            ("http://localhost/callback", "http://localhost:49152/callback"),
            ("http://localhost:8080/callback", "http://localhost:61000/callback"),
            ("http://127.0.0.1/callback", "http://127.0.0.1:33418/callback"),
            ("http://127.0.0.1:3000/callback", "http://127.0.0.1:54321/callback"),
            ("http://[::1]:3000/callback", "http://[::1]:54321/callback"),
            ("http://localhost/callback", "http://localhost/callback"),
        ] {
            assert!(
                parse(listed).unwrap().matches(&Url::parse(used).unwrap()),
                "{listed} {used}"
            );
        }
        for (listed, used) in [
            // Another loopback host, scheme or path is another URI.
            ("http://localhost:8080/callback", "http://127.0.0.1:8080/callback"),
            ("http://127.0.0.1:3000/callback", "https://127.0.0.1:3000/callback"),
            ("http://localhost/callback", "http://localhost:49152/callback/x"),
        ] {
            assert!(
                !parse(listed).unwrap().matches(&Url::parse(used).unwrap()),
                "{listed} {used}"
            );
        }
    }

    #[test]
    fn non_loopback_uris_match_exactly() {
        let registered = parse("https://app.example/cb").unwrap();
        assert!(registered.matches(&Url::parse("https://app.example/cb").unwrap()));
        assert!(!registered.matches(&Url::parse("https://app.example:8443/cb").unwrap()));
        assert!(!registered.matches(&Url::parse("https://app.example/cb?x=1").unwrap()));
    }

    #[test]
    fn operator_patterns_match_part_by_part() {
        let patterns = vec![
            "https://*.example.com/*".to_string(),
            "http://localhost:*".to_string(),
            "cursor://*".to_string(),
        ];
        let ok = |uri: &str| RedirectUri::parse(uri, Some(&patterns)).is_ok();
        assert!(ok("https://app.example.com/callback"));
        assert!(ok("http://localhost:1234/cb"));
        assert!(ok("cursor://anysphere.cursor-retrieval/oauth/callback"));
        assert!(!ok("https://evil.com/a.example.com/cb"));
        assert!(!ok("https://example.org/cb"));
        assert!(!ok("http://127.0.0.1:1234/cb"));
    }

    #[test]
    fn a_pattern_pins_its_host_only_when_the_host_has_no_wildcard() {
        for pinned in [
            "https://app.example.com/cb",
            "https://app.example.com/callback*",
            "https://app.example.com:8443/*",
            "https://app.example.com",
            "http://127.0.0.1:*",
            "http://localhost:*/callback",
            "http://[::1]:*/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(pattern_pins_host(pinned), "{pinned}");
        }
        for open in [
            "https://*",
            "https://*/cb",
            "https://*.example.com/cb",
            "https://app*.example.com/cb",
            "https://*:443/cb",
            "http://[*]:*/cb",
            "cursor://*",
            "*://app.example.com/cb",
            "myapp:*",
            "https:///cb",
            "no-colon-at-all",
        ] {
            assert!(!pattern_pins_host(open), "{open}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 256,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// Hosts that look alike: the pinned one, its sub- and super-domains,
        /// and hosts that merely contain it.
        fn host() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("app.example.com".to_string()),
                Just("APP.example.com".to_string()),
                Just("evil.app.example.com".to_string()),
                Just("app.example.com.evil.net".to_string()),
                Just("appXexample.com".to_string()),
                Just("example.com".to_string()),
                Just("127.0.0.1".to_string()),
                Just("localhost".to_string()),
                Just("[::1]".to_string()),
                "[a-z0-9.-]{1,20}",
            ]
        }

        /// Redirect URIs built from parts, some of them hostile.
        fn uri() -> impl Strategy<Value = String> {
            (
                prop_oneof![
                    Just("https"),
                    Just("http"),
                    Just("cursor"),
                    Just("javascript"),
                    Just("data"),
                    Just("HTTPS"),
                ],
                proptest::option::of("[a-z:%0-9]{0,8}@"),
                host(),
                proptest::option::of(0u16..=65535),
                "(/[a-zA-Z0-9%._~@:*-]{0,10}){0,3}",
                proptest::option::of("[a-z=&%0-9]{0,10}"),
                proptest::option::of("[a-z%#0-9]{0,6}"),
            )
                .prop_map(|(scheme, userinfo, host, port, path, query, fragment)| {
                    let mut uri = format!("{scheme}://{}{host}", userinfo.unwrap_or_default());
                    if let Some(port) = port {
                        uri.push_str(&format!(":{port}"));
                    }
                    uri.push_str(&path);
                    if let Some(query) = query {
                        uri.push('?');
                        uri.push_str(&query);
                    }
                    if let Some(fragment) = fragment {
                        uri.push('#');
                        uri.push_str(&fragment);
                    }
                    uri
                })
        }

        fn patterns() -> impl Strategy<Value = Vec<String>> {
            proptest::collection::vec(
                prop_oneof![
                    Just("https://app.example.com/*".to_string()),
                    Just("https://*.example.com/*".to_string()),
                    Just("http://127.0.0.1:7777/*".to_string()),
                    Just("http://localhost:*".to_string()),
                    Just("cursor://*".to_string()),
                    Just("*".to_string()),
                    Just("*://*".to_string()),
                    "[a-z*:/.]{0,24}",
                ],
                0..4,
            )
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn parsing_and_matching_never_panic(raw in "\\PC{0,80}", built in uri(), patterns in patterns()) {
                for candidate in [&raw, &built] {
                    let _ = RedirectUri::parse(candidate, None);
                    let _ = RedirectUri::parse(candidate, Some(&patterns));
                    if let Ok(url) = Url::parse(candidate) {
                        for pattern in &patterns {
                            let _ = pattern_matches(pattern, &url);
                        }
                        if let Ok(registered) = RedirectUri::parse(&built, None) {
                            let _ = registered.matches(&url);
                        }
                    }
                }
            }

            #[test]
            fn userinfo_fragments_and_script_schemes_are_never_accepted(
                built in uri(),
                patterns in patterns(),
                prefix in prop_oneof![Just(""), Just("javascript:"), Just("JavaScript:"), Just(" javascript:")],
            ) {
                let candidate = format!("{prefix}{built}");
                for accepted in [RedirectUri::parse(&candidate, None), RedirectUri::parse(&candidate, Some(&patterns))]
                    .into_iter()
                    .flatten()
                {
                    let url = accepted.url();
                    prop_assert!(url.username().is_empty() && url.password().is_none(), "{candidate}");
                    prop_assert!(url.fragment().is_none() && !candidate.contains('#'), "{candidate}");
                    prop_assert!(!FORBIDDEN_SCHEMES.contains(&url.scheme()), "{candidate}");
                    prop_assert!(url.scheme() != "http" || is_loopback(url), "{candidate}");
                }
            }

            #[test]
            fn a_pattern_match_implies_the_host_the_pattern_pins(built in uri()) {
                let Ok(url) = Url::parse(&built) else { return Ok(()) };
                let host = url.host_str().unwrap_or("").to_ascii_lowercase();
                if pattern_matches("https://app.example.com/*", &url) {
                    prop_assert_eq!(&host, "app.example.com");
                    prop_assert_eq!(url.scheme(), "https");
                }
                if pattern_matches("https://*.example.com/*", &url) {
                    prop_assert!(host.ends_with(".example.com"), "{built}");
                }
                if pattern_matches("http://127.0.0.1:7777/*", &url) {
                    prop_assert_eq!(&host, "127.0.0.1");
                    prop_assert_eq!(url.port(), Some(7777));
                }
            }

            #[test]
            fn a_registered_uri_matches_only_its_own_host_and_path(registered in uri(), requested in uri()) {
                let (Ok(registered), Ok(url)) = (RedirectUri::parse(&registered, None), Url::parse(&requested)) else {
                    return Ok(());
                };
                if registered.matches(&url) {
                    prop_assert_eq!(registered.url().host(), url.host());
                    prop_assert_eq!(registered.url().path(), url.path());
                    prop_assert_eq!(registered.url().scheme(), url.scheme());
                    // Only loopback URIs may differ (in the port).
                    prop_assert!(registered.url() == &url || is_loopback(&url), "{registered:?} {requested}");
                }
            }
        }
    }
}
