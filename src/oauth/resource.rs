//! Resource indicators (RFC 8707): which `resource` a client may ask for.

use url::Url;

/// Whether a requested `resource` names the proxy's MCP resource
/// (`canonical`): the same scheme, host, port and path, with one trailing
/// slash ignored on either side (`https://h/mcp` and `https://h/mcp/` are the
/// same resource to MCP clients; more than one extra slash is another
/// resource). A query is ignored: ChatGPT sends `https://h/mcp?kb_name=...`
/// for the MCP server at `https://h/mcp`, and the token's audience stays the
/// canonical URI. A fragment is refused (RFC 8707 §2: the indicator "MUST NOT
/// include a fragment component"), as is anything that is not an absolute URI.
pub fn resource_matches(requested: &str, canonical: &str) -> bool {
    if requested.contains('#') {
        return false;
    }
    let (Ok(requested), Ok(canonical)) = (Url::parse(requested), Url::parse(canonical)) else {
        return false;
    };
    let path = |url: &Url| url.path().strip_suffix('/').unwrap_or(url.path()).to_string();
    requested.scheme() == canonical.scheme()
        && requested.host() == canonical.host()
        && requested.port_or_known_default() == canonical.port_or_known_default()
        && requested.username().is_empty()
        && requested.password().is_none()
        && path(&requested) == path(&canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_matches_only_the_canonical_uri_with_at_most_one_trailing_slash() {
        let mcp = "https://proxy.example.com/mcp";
        // (case, requested, canonical) → matches
        let rows = [
            ("the canonical URI itself", mcp, mcp, true),
            ("with one trailing slash", "https://proxy.example.com/mcp/", mcp, true),
            (
                "with two trailing slashes",
                "https://proxy.example.com/mcp//",
                mcp,
                false,
            ),
            (
                "without the slash a canonical URI ends with",
                mcp,
                "https://proxy.example.com/mcp/",
                true,
            ),
            ("another path", "https://proxy.example.com/other", mcp, false),
            ("a longer path", "https://proxy.example.com/mcp/tools", mcp, false),
            ("a prefix of the path", "https://proxy.example.com/mc", mcp, false),
            ("another host", "https://evil.example.com/mcp", mcp, false),
            ("another scheme", "http://proxy.example.com/mcp", mcp, false),
            ("another port", "https://proxy.example.com:8443/mcp", mcp, false),
            (
                "with a query (ChatGPT)",
                "https://proxy.example.com/mcp?kb_name=docs",
                mcp,
                true,
            ),
            (
                "with a query after a trailing slash",
                "https://proxy.example.com/mcp/?x=1",
                mcp,
                true,
            ),
            ("with an empty query", "https://proxy.example.com/mcp?", mcp, true),
            (
                "another path with a query",
                "https://proxy.example.com/other?kb_name=docs",
                mcp,
                false,
            ),
            (
                "another host with a query",
                "https://evil.example.com/mcp?kb_name=docs",
                mcp,
                false,
            ),
            ("with a fragment", "https://proxy.example.com/mcp#f", mcp, false),
            (
                "with a query and a fragment",
                "https://proxy.example.com/mcp?x=1#f",
                mcp,
                false,
            ),
            ("with an empty fragment", "https://proxy.example.com/mcp#", mcp, false),
            (
                "the default port spelled out",
                "https://proxy.example.com:443/mcp",
                mcp,
                true,
            ),
            ("the host in capitals", "https://PROXY.example.com/mcp", mcp, true),
            (
                "with user information",
                "https://user@proxy.example.com/mcp",
                mcp,
                false,
            ),
            ("a relative reference", "/mcp", mcp, false),
            (
                "different case in the path",
                "https://proxy.example.com/MCP",
                mcp,
                false,
            ),
            ("empty", "", mcp, false),
            ("a lone slash", "/", mcp, false),
        ];
        for (case, requested, canonical, matches) in rows {
            assert_eq!(resource_matches(requested, canonical), matches, "{case}");
        }
    }
}
