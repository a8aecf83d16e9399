//! Resource indicators (RFC 8707): which `resource` a client may ask for.

/// Whether a requested `resource` names the proxy's MCP resource
/// (`canonical`): the same URI, with one trailing slash ignored on either
/// side (RFC 8707 §2 compares the URI as given; `https://h/mcp` and
/// `https://h/mcp/` are the same resource to MCP clients). More than one
/// extra trailing slash is another resource.
pub fn resource_matches(requested: &str, canonical: &str) -> bool {
    requested.trim_end_matches('/') == canonical.trim_end_matches('/') && requested.len() <= canonical.len() + 1
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
            ("with a query", "https://proxy.example.com/mcp?x=1", mcp, false),
            ("with a fragment", "https://proxy.example.com/mcp#f", mcp, false),
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
