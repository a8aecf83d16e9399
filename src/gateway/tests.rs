use super::path::hex_value;
use super::*;

fn gateway(backend: &str) -> Gateway {
    Gateway {
        backend: Some(Url::parse(backend).unwrap()).as_ref().map(|url| Backend {
            base: url.as_str().trim_end_matches('/').to_string(),
            path: url.path().trim_end_matches('/').to_string(),
            below: format!("{}/", url.path().trim_end_matches('/')),
        }),
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        max_body: 1024,
    }
}

fn target(g: &Gateway, tail: &str, query: &str) -> Result<String, GatewayError> {
    g.target(tail, query).map(|uri| uri.to_string())
}

#[test]
fn paths_below_the_mcp_path_map_below_the_backend_url() {
    let g = gateway("http://127.0.0.1:3000/mcp");
    assert_eq!(target(&g, "", "").unwrap(), "http://127.0.0.1:3000/mcp");
    assert_eq!(target(&g, "/x", "a=1").unwrap(), "http://127.0.0.1:3000/mcp/x?a=1");
    assert_eq!(
        target(&g, "/caf%C3%A9/a%20b/...x/.well", "q=%3F").unwrap(),
        "http://127.0.0.1:3000/mcp/caf%C3%A9/a%20b/...x/.well?q=%3F",
        "forwarded as sent, not decoded"
    );
    let root = gateway("http://127.0.0.1:3000");
    assert_eq!(target(&root, "", "").unwrap(), "http://127.0.0.1:3000/");
    assert_eq!(target(&root, "/a", "").unwrap(), "http://127.0.0.1:3000/a");
    let slash = gateway("http://127.0.0.1:3000/mcp/");
    assert_eq!(target(&slash, "/a", "").unwrap(), "http://127.0.0.1:3000/mcp/a");
}

#[test]
fn dot_segments_are_refused_plain_encoded_in_any_case_and_before_parameters() {
    for tail in [
        "/.",
        "/..",
        "/./x",
        "/../x",
        "/a/..",
        "/a/../b",
        "/%2e",
        "/%2E",
        "/%2e%2e",
        "/%2E%2e",
        "/.%2e",
        "/%2e.",
        "/%2e%2E/etc",
        "/..;/admin",
        "/.;x",
        "/%2e%2e;jsessionid=1/x",
        "/..%3b/x",
        "/a/%2e/",
    ] {
        assert_eq!(check_tail(tail), Err(PathRefused::DotSegment), "{tail}");
    }
}

#[test]
fn encoded_delimiters_backslashes_and_control_characters_are_refused() {
    for (tail, why) in [
        ("/a%3Fx=1", PathRefused::EncodedDelimiter),
        ("/a%3fx=1", PathRefused::EncodedDelimiter),
        ("/a%23b", PathRefused::EncodedDelimiter),
        ("/a%2Fb", PathRefused::EncodedDelimiter),
        ("/a%2fb", PathRefused::EncodedDelimiter),
        ("/a%5Cb", PathRefused::EncodedDelimiter),
        ("/a%5cb", PathRefused::EncodedDelimiter),
        ("/a?b", PathRefused::EncodedDelimiter),
        ("/a\\b", PathRefused::Backslash),
        ("/a%00", PathRefused::ControlCharacter),
        ("/a%0d%0aX:1", PathRefused::ControlCharacter),
        ("/a%1F", PathRefused::ControlCharacter),
        ("/a%7f", PathRefused::ControlCharacter),
        ("/a\tb", PathRefused::ControlCharacter),
        ("/a\u{7f}", PathRefused::ControlCharacter),
        ("/a%", PathRefused::BadEncoding),
        ("/a%2", PathRefused::BadEncoding),
        ("/a%zz", PathRefused::BadEncoding),
        ("/%C0%AE%C0%AE/x", PathRefused::BadEncoding),
        ("/%ff", PathRefused::BadEncoding),
        ("x", PathRefused::Outside),
    ] {
        assert_eq!(check_tail(tail), Err(why), "{tail}");
    }
}

#[test]
fn ordinary_segments_pass() {
    for tail in [
        "",
        "/",
        "/a",
        "/a/b/",
        "//a",
        "/...",
        "/.a",
        "/a.",
        "/%2e%2e%2e",
        "/;x",
        "/a;b=1",
        "/caf%C3%A9",
        "/%25",
    ] {
        assert_eq!(check_tail(tail), Ok(()), "{tail}");
    }
}

#[test]
fn a_refused_path_answers_400_with_a_json_rpc_error() {
    let g = gateway("http://127.0.0.1:3000/mcp");
    let error = g.target("/%2e%2e/admin", "").unwrap_err();
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    let public = error.public_message();
    assert!(public.contains("`.` or `..`"), "{public}");
}

/// RFC 3986 §5.2.4 on the percent-decoded path, as a lenient server
/// behind the gateway could resolve it: `\` read as `/`, `;`
/// parameters ignored when naming a segment.
fn resolved_by_a_lenient_server(path: &str) -> (Vec<String>, bool) {
    let mut decoded = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                decoded.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    let text = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let clean = !text.chars().any(|c| c.is_control() || c == '?' || c == '#');
    let mut out: Vec<String> = Vec::new();
    for segment in text.split('/').skip(1) {
        match segment.split(';').next().unwrap_or_default() {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(segment.to_string()),
        }
    }
    (out, clean)
}

fn fragment() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        proptest::sample::select(vec![
            "/", "/", "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%3f", "%3F", "%23", "%5c", "%5C", "\\", "?", "#",
            ";", "a", "mcp", "%", "%0", "%00", "%0a", "%7f", "%C0%AE", "%c3%a9", "%25", "%252e", "~", "@", ":", "%3b",
            "%20",
        ])
        .prop_map(String::from),
        "[ -~]{0,4}",
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever the client sends below the MCP path, the URL built is
    /// refused or stays below the backend's path even after a lenient
    /// server decodes and resolves it, and carries only the client's
    /// real query.
    #[test]
    fn a_built_target_never_leaves_the_backend_path_nor_gains_a_query(
        parts in proptest::collection::vec(fragment(), 0..10),
        query in proptest::sample::select(vec!["", "x=1", "a=%3F&b=/..", "q=%2e%2e"]),
    ) {
        let tail = format!("/{}", parts.concat());
        for (base, path) in [("http://127.0.0.1:3000/mcp", &["mcp"][..]), ("http://127.0.0.1:3000/a/mcp/", &["a", "mcp"][..])] {
            let g = gateway(base);
            let Ok(uri) = g.target(&tail, query) else { continue };
            proptest::prop_assert_eq!(uri.authority().map(|a| a.as_str()), Some("127.0.0.1:3000"));
            proptest::prop_assert_eq!(uri.query().unwrap_or_default(), query);
            let text = uri.to_string();
            proptest::prop_assert_eq!(text.matches('?').count(), usize::from(!query.is_empty()) + query.matches('?').count());
            let (segments, clean) = resolved_by_a_lenient_server(uri.path());
            proptest::prop_assert!(clean, "{} decodes to a control character or delimiter", uri);
            proptest::prop_assert!(segments.len() >= path.len() && segments[..path.len()] == *path, "{} resolves to {:?}", uri, segments);
        }
    }
}
