//! HTML views: askama page structs for the consent screen and error pages.
//!
//! Templates live in `templates/` (`base.html`, `consent.html`, `error.html`)
//! and are compiled in by `askama`; HTML escaping is on for every value.
//! The pages use no JavaScript, no inline styles and no external resources,
//! so they work under the proxy's strict Content-Security-Policy. Their only
//! asset is the stylesheet at `{static_prefix}/consent.css`.
use askama::Template;
use url::Url;

/// What the consent page shows as where the user will be sent: the host of
/// an http(s) redirect URI; for a private-use scheme (RFC 8252 §7.1) the
/// scheme too, since `x-app://claude.ai/cb` is not claude.ai: any app can
/// claim the scheme `x-app` (`x-app://claude.ai`, or `x-app:` without a host).
pub fn redirect_display_host(url: &Url) -> String {
    match (url.scheme(), url.host_str()) {
        ("http" | "https", Some(host)) => host.to_string(),
        (scheme, Some(host)) if !host.is_empty() => format!("{scheme}://{host}"),
        (scheme, _) => format!("{scheme}:"),
    }
}

/// The consent screen shown before the proxy forwards a client to the
/// upstream identity provider.
///
/// The form posts `transaction_id`, `csrf_token`, `decision`
/// (`approve` or `deny`) and, when ticked, `remember=true` to `form_action`.
#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    /// URL path prefix under which `consent.css` is served, e.g. `/static`.
    pub static_prefix: &'a str,
    /// Client name as registered by the client (untrusted, shown escaped).
    pub client_name: &'a str,
    pub client_id: &'a str,
    /// A document client's document host (`claude.ai`): the verified origin,
    /// and who claims `client_name`. `None` for a registered client.
    pub document_host: Option<&'a str>,
    /// A document client whose redirect URIs are all loopback: a local app
    /// whose name anyone can claim (the page warns).
    pub local_app: bool,
    /// Full redirect URI the user will be sent back to.
    pub redirect_uri: &'a str,
    /// Host part of `redirect_uri`, shown prominently.
    pub redirect_host: &'a str,
    /// Requested scopes; an empty list renders "No specific scopes requested".
    pub scopes: Vec<&'a str>,
    /// Display name of the upstream identity provider.
    pub provider_name: &'a str,
    /// Where the consent form posts to.
    pub form_action: &'a str,
    pub transaction_id: &'a str,
    pub csrf_token: &'a str,
}

/// A friendly, self-contained error page.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    /// URL path prefix under which `consent.css` is served, e.g. `/static`.
    pub static_prefix: &'a str,
    /// HTTP status code, shown on the page.
    pub status: u16,
    pub title: &'a str,
    pub message: &'a str,
    /// Optional technical detail (e.g. an OAuth error code), shown in monospace.
    pub detail: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consent<'a>(client_name: &'a str, scopes: Vec<&'a str>) -> ConsentPage<'a> {
        ConsentPage {
            static_prefix: "/static",
            client_name,
            client_id: "client-1234abcd",
            document_host: None,
            local_app: false,
            redirect_uri: "https://app.example.com/oauth/callback?x=1&y=2",
            redirect_host: "app.example.com",
            scopes,
            provider_name: "GitHub",
            form_action: "/consent",
            transaction_id: "txn-5678",
            csrf_token: "csrf-abcdef",
        }
    }

    #[test]
    fn consent_page_shows_request_details() {
        let html = consent("Claude Desktop", vec!["read", "write"]).render().unwrap();

        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>Authorize Claude Desktop"));
        assert!(html.contains("Claude Desktop"));
        assert!(html.contains("client-1234abcd"));
        assert!(html.contains("app.example.com"));
        // The URI is escaped but otherwise verbatim.
        assert!(html.contains("https://app.example.com/oauth/callback?x=1&#38;y=2"));
        assert!(html.contains("<code>read</code>"));
        assert!(html.contains("<code>write</code>"));
        assert!(!html.contains("No specific scopes"));
        assert!(html.contains("You will sign in with <strong>GitHub</strong>"));
        assert!(html.contains("Only approve clients you recognise"));
        assert!(html.contains(r#"href="/static/consent.css""#));
        assert!(html.contains(r#"<meta name="referrer" content="no-referrer">"#));
        assert!(html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#));
    }

    #[test]
    fn a_private_use_scheme_is_shown_with_its_host() {
        let shown = |raw: &str| redirect_display_host(&Url::parse(raw).unwrap());
        assert_eq!(shown("x-app://claude.ai/cb"), "x-app://claude.ai");
        assert_eq!(shown("com.example.app:/oauth/cb"), "com.example.app:");
        assert_eq!(shown("https://claude.ai/api/mcp/auth_callback"), "claude.ai");
        assert_eq!(shown("http://127.0.0.1:33418/callback"), "127.0.0.1");
    }

    #[test]
    fn consent_page_has_the_decision_form() {
        let html = consent("Claude Desktop", vec![]).render().unwrap();

        assert_eq!(html.matches("<form").count(), 1);
        assert!(html.contains(r#"<form class="decision" method="post" action="/consent">"#));
        assert!(html.contains(r#"<input type="hidden" name="transaction_id" value="txn-5678">"#));
        assert!(html.contains(r#"<input type="hidden" name="csrf_token" value="csrf-abcdef">"#));
        assert!(html.contains(r#"<input type="checkbox" name="remember" value="true" checked>"#));
        assert!(html.contains("Remember this decision for this client"));
        assert!(html.contains(r#"name="decision" value="approve""#));
        assert!(html.contains(r#"name="decision" value="deny""#));
        assert!(html.contains(">Approve</button>"));
        assert!(html.contains(">Deny</button>"));
    }

    #[test]
    fn consent_page_without_scopes_says_so() {
        let html = consent("Claude Desktop", vec![]).render().unwrap();
        assert!(html.contains("No specific scopes requested"));
    }

    #[test]
    fn pages_are_csp_friendly() {
        let pages = [
            consent("Claude Desktop", vec!["read"]).render().unwrap(),
            ErrorPage {
                static_prefix: "/static",
                status: 400,
                title: "Bad request",
                message: "Something went wrong.",
                detail: Some("invalid_request"),
            }
            .render()
            .unwrap(),
        ];
        for html in pages {
            assert!(!html.contains("<script"));
            assert!(!html.contains("<style"));
            assert!(!html.contains("style="));
            assert!(!html.contains("http://"));
            assert!(!html.contains("//fonts."));
        }
    }

    #[test]
    fn consent_page_escapes_untrusted_values() {
        let evil = "<script>alert(1)</script>";
        let mut page = consent(evil, vec![r#""><img src=x onerror=alert(2)>"#]);
        page.redirect_uri = "https://evil.example/cb?a=\"><script>alert(3)</script>";
        page.redirect_host = "evil.example";
        page.client_id = "<b>id</b>";
        page.csrf_token = "\"><script>alert(4)</script>";
        let html = page.render().unwrap();

        assert!(!html.contains("<script"));
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>id"));
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
        assert!(html.contains("Authorize <span class=\"client-name\">&#60;script&#62;"));
        assert!(html.contains(r#"value="&#34;&#62;&#60;script&#62;alert(4)"#));
    }

    #[test]
    fn a_document_clients_page_names_its_host_and_warns_for_a_local_app_only() {
        let mut page = consent("Claude Code", vec![]);
        page.client_id = "https://claude.ai/oauth/claude-code-client-metadata";
        page.document_host = Some("claude.ai");
        let web = page.render().unwrap();
        assert!(
            web.contains(r#"Verified: the client's metadata is published at <strong class="host">claude.ai</strong>"#)
        );
        assert!(web.contains(r#"Claude Code — as named by <strong class="host">claude.ai</strong>"#));
        assert!(!web.contains("local-app-warning"));
        page.local_app = true;
        let local = page.render().unwrap();
        assert!(local.contains(r#"<p class="local-app-warning">"#));
        assert!(local.contains("Continue only if you just started Claude Code yourself."));

        let registered = consent("Claude Code", vec![]).render().unwrap();
        assert!(!registered.contains("Verified:"));
        assert!(!registered.contains("as named by"));
    }

    #[test]
    fn a_document_host_and_name_are_escaped() {
        let mut page = consent("<img src=x onerror=alert(1)>", vec![]);
        page.document_host = Some("<b>evil</b>");
        page.local_app = true;
        let html = page.render().unwrap();
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>evil"));
        assert!(html.contains("&#60;b&#62;evil&#60;/b&#62;"));
    }

    #[test]
    fn error_page_with_detail() {
        let html = ErrorPage {
            static_prefix: "/static",
            status: 400,
            title: "Invalid request",
            message: "The redirect URI is not registered for this client.",
            detail: Some("invalid_request"),
        }
        .render()
        .unwrap();

        assert!(html.contains("<title>Invalid request"));
        assert!(html.contains("Error 400"));
        assert!(html.contains("<h1>Invalid request</h1>"));
        assert!(html.contains("The redirect URI is not registered for this client."));
        assert!(html.contains("<code>invalid_request</code>"));
        assert!(html.contains("You can close this window and try again from your application."));
        assert!(html.contains(r#"href="/static/consent.css""#));
    }

    #[test]
    fn error_page_without_detail_and_escaped() {
        let html = ErrorPage {
            static_prefix: "/static",
            status: 500,
            title: "<i>Oops</i>",
            message: "<script>alert(1)</script>",
            detail: None,
        }
        .render()
        .unwrap();

        assert!(html.contains("Error 500"));
        assert!(!html.contains("class=\"detail\""));
        assert!(!html.contains("<script"));
        assert!(!html.contains("<i>"));
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    }
}
