use super::*;

fn trusted(raw: &str) -> TrustedProxies {
    TrustedProxies::parse(raw).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn as_bytes<'a>(lines: &[&'a str]) -> Vec<&'a [u8]> {
    lines.iter().map(|l| l.as_bytes()).collect()
}

fn refs(lines: &[Vec<u8>]) -> Vec<&[u8]> {
    lines.iter().map(Vec::as_slice).collect()
}

/// The client seen from `peer` with these header lines.
fn client(peer: &str, forwarded: &[&str], xff: &[&str], xfp: &[&str], trust: &str) -> ClientAddress {
    let (f, x, p) = (as_bytes(forwarded), as_bytes(xff), as_bytes(xfp));
    resolve_lines(
        Some(ip(peer)),
        ForwardingHeaders {
            forwarded: &f,
            x_forwarded_for: &x,
            x_forwarded_proto: &p,
        },
        &trusted(trust),
    )
}

fn address(peer: &str, forwarded: &[&str], xff: &[&str], trust: &str) -> String {
    client(peer, forwarded, xff, &[], trust).to_string()
}

#[test]
fn trusted_proxies_parse_cidrs_and_bare_addresses_of_both_families() {
    let list = trusted("10.0.0.0/8, 192.0.2.7  2001:db8::/32,::1");
    assert!(list.contains(ip("10.200.0.1")));
    assert!(
        list.contains(ip("192.0.2.7")) && !list.contains(ip("192.0.2.8")),
        "a bare address is a /32"
    );
    assert!(list.contains(ip("2001:db8:ffff::1")));
    assert!(
        list.contains(ip("::1")) && !list.contains(ip("::2")),
        "a bare address is a /128"
    );
    assert!(list.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped peers count as IPv4");
    assert!(trusted("10.1.2.3/8").contains(ip("10.9.9.9")), "host bits are ignored");
    for bad in ["10.0.0.0/33", "example.com", "10.0.0", "2001:db8::/129", "10.0.0.0/8/8"] {
        assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
    }
    assert!(trusted("").is_empty());
}

#[test]
fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    assert_eq!(
        address("203.0.113.9", &["for=198.51.100.1"], &["198.51.100.2"], ""),
        "203.0.113.9"
    );
    assert_eq!(
        address("203.0.113.9", &["for=198.51.100.1"], &["198.51.100.2"], "10.0.0.0/8"),
        "203.0.113.9"
    );
    let answer = client("203.0.113.9", &[], &["198.51.100.2"], &["https"], "10.0.0.0/8");
    assert_eq!(answer.scheme(), None, "nor is X-Forwarded-Proto");
}

#[test]
fn the_client_is_the_rightmost_untrusted_hop_of_the_chain() {
    let trust = "10.0.0.0/8";
    assert_eq!(address("10.0.0.1", &[], &["198.51.100.1"], trust), "198.51.100.1");
    // A spoofed leftmost entry is not believed: the proxy appended the real one.
    assert_eq!(
        address("10.0.0.1", &[], &["6.6.6.6, 198.51.100.1"], trust),
        "198.51.100.1"
    );
    // Trusted hops are walked over.
    assert_eq!(
        address("10.0.0.1", &[], &["6.6.6.6, 198.51.100.1, 10.0.0.5, 10.0.0.6"], trust),
        "198.51.100.1"
    );
    // Every hop trusted: the leftmost one.
    assert_eq!(address("10.0.0.1", &[], &["10.0.0.7, 10.0.0.6"], trust), "10.0.0.7");
    // No header: the peer.
    assert_eq!(address("10.0.0.1", &[], &[], trust), "10.0.0.1");
}

#[test]
fn several_header_lines_are_one_list_in_order() {
    let trust = "10.0.0.0/8";
    assert_eq!(
        address("10.0.0.1", &[], &["6.6.6.6", "198.51.100.1, 10.0.0.9"], trust),
        "198.51.100.1"
    );
    assert_eq!(
        address(
            "10.0.0.1",
            &["for=6.6.6.6", "for=198.51.100.3, for=10.0.0.9"],
            &[],
            trust
        ),
        "198.51.100.3"
    );
}

#[test]
fn forwarded_accepts_quoted_ipv6_with_a_port_and_ipv4_with_a_port() {
    let trust = "10.0.0.0/8";
    for (forwarded, expected) in [
        ("for=\"[2001:db8::1]:4711\"", "2001:db8::1"),
        ("For=\"[2001:db8::1]\"", "2001:db8::1"),
        ("for=\"192.0.2.60:8080\"", "192.0.2.60"),
        ("for=192.0.2.43;proto=https;by=10.0.0.1", "192.0.2.43"),
        ("for=\"[2001:db8::1]:_p0rt\"", "2001:db8::1"),
    ] {
        assert_eq!(address("10.0.0.1", &[forwarded], &[], trust), expected, "{forwarded}");
    }
}

#[test]
fn forwarded_is_preferred_over_x_forwarded_for() {
    let trust = "10.0.0.0/8";
    assert_eq!(
        address("10.0.0.1", &["for=198.51.100.7"], &["198.51.100.8"], trust),
        "198.51.100.7"
    );
}

#[test]
fn an_unknown_obfuscated_or_malformed_hop_ends_the_walk_at_the_last_good_address() {
    let trust = "10.0.0.0/8";
    for bad in [
        "for=unknown",
        "for=_hidden",
        "proto=https",
        "for=\"[2001:db8::1\"",
        "for=\"[2001:db8::1]:99999\"",
        "for=300.1.1.1",
        "for=1.2.3.4;for=5.6.7.8",
        "garbage",
    ] {
        // Right next to the peer: the peer (the trusted proxy) is the client.
        assert_eq!(address("10.0.0.1", &[bad], &[], trust), "10.0.0.1", "{bad}");
        // Behind a trusted hop: that hop, never an address left of the bad one.
        let line = format!("for=198.51.100.1, {bad}, for=10.0.0.4");
        assert_eq!(address("10.0.0.1", &[&line], &[], trust), "10.0.0.4", "{bad}");
    }
    // An unterminated quote swallows the rest of the line: one bad hop.
    let line = "for=198.51.100.1, for=10.0.0.4, for=\"unterminated, for=10.0.0.5";
    assert_eq!(address("10.0.0.1", &[line], &[], trust), "10.0.0.1");
    for bad in ["unknown", "not-an-ip", "1.2.3", "[::1", "::1]:80"] {
        let line = format!("198.51.100.1, {bad}");
        assert_eq!(address("10.0.0.1", &[], &[&line], trust), "10.0.0.1", "{bad}");
    }
}

#[test]
fn a_quoted_comma_or_semicolon_does_not_split_an_element() {
    let trust = "10.0.0.0/8";
    assert_eq!(
        address(
            "10.0.0.1",
            &["for=198.51.100.1;host=\"a,b;c\", for=198.51.100.2"],
            &[],
            trust
        ),
        "198.51.100.2"
    );
    assert_eq!(
        address("10.0.0.1", &["for=198.51.100.2;ext=\"x\\\"y,z\""], &[], trust),
        "198.51.100.2"
    );
}

#[test]
fn x_forwarded_for_accepts_ports_and_brackets() {
    let trust = "10.0.0.0/8";
    assert_eq!(address("10.0.0.1", &[], &["198.51.100.1:5555"], trust), "198.51.100.1");
    assert_eq!(address("10.0.0.1", &[], &["[2001:db8::5]:443"], trust), "2001:db8::5");
    assert_eq!(address("10.0.0.1", &[], &["[2001:db8::5]"], trust), "2001:db8::5");
    assert_eq!(
        address("10.0.0.1", &[], &["::ffff:198.51.100.1"], trust),
        "198.51.100.1"
    );
}

#[test]
fn mixed_trust_across_families_stops_at_the_first_untrusted_hop() {
    let trust = "10.0.0.0/8 2001:db8:ffff::/48";
    assert_eq!(
        address(
            "2001:db8:ffff::1",
            &[],
            &["203.0.113.5, 2001:db8:1::9, 10.0.0.2"],
            trust
        ),
        "2001:db8:1::9"
    );
    assert_eq!(
        address(
            "::ffff:10.0.0.1",
            &["for=203.0.113.5, for=\"[2001:db8:ffff::2]\""],
            &[],
            trust
        ),
        "203.0.113.5"
    );
}

#[test]
fn the_scheme_comes_from_the_clients_hop() {
    let trust = "10.0.0.0/8";
    let c = client(
        "10.0.0.1",
        &["for=198.51.100.1;proto=https, for=10.0.0.3;proto=http"],
        &[],
        &[],
        trust,
    );
    assert_eq!(c.scheme(), Some(Scheme::Https));
    let c = client("10.0.0.1", &[], &["198.51.100.1"], &["https"], trust);
    assert_eq!(c.scheme(), Some(Scheme::Https));
    let c = client("10.0.0.1", &[], &["198.51.100.1, 10.0.0.3"], &["https, http"], trust);
    assert_eq!(c.scheme(), Some(Scheme::Https), "aligned with the chain");
    let c = client("10.0.0.1", &[], &["198.51.100.1"], &["gopher"], trust);
    assert_eq!(c.scheme(), None);
}

#[test]
fn rate_keys_are_ipv4_addresses_and_ipv6_slash_64_prefixes() {
    assert_eq!(RateKey::of(ip("192.0.2.1")), RateKey::of(ip("::ffff:192.0.2.1")));
    assert_ne!(RateKey::of(ip("192.0.2.1")), RateKey::of(ip("192.0.2.2")));
    assert_eq!(RateKey::of(ip("2001:db8::1")), RateKey::of(ip("2001:db8::ffff:2")));
    assert_ne!(RateKey::of(ip("2001:db8::1")), RateKey::of(ip("2001:db8:0:1::1")));
    assert_eq!(RateKey::of(ip("2001:db8::1")).to_string(), "2001:db8::/64");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Header bytes: mostly pieces of real syntax, sometimes anything.
    fn header_line() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just("for=".to_string()),
            Just("proto=https".to_string()),
            Just(";".to_string()),
            Just(",".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(":".to_string()),
            Just("unknown".to_string()),
            Just("_obf".to_string()),
            any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
            any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
            "[ -~]{0,6}",
        ];
        prop_oneof![
            4 => proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat().into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..40),
        ]
    }

    /// Every address mentioned anywhere in the lines (as std would parse
    /// any substring between separators): a superset of the hops.
    fn mentions(lines: &[Vec<u8>], address: IpAddr) -> bool {
        lines.iter().any(|line| {
            // Escapes removed: a quoted string may spell an address with them.
            let text = String::from_utf8_lossy(line).replace('\\', "");
            let found = text
                .split(|c: char| ",;=\"[] ".contains(c))
                .flat_map(|piece| {
                    [
                        piece.to_string(),
                        piece.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_default(),
                    ]
                })
                .filter_map(|piece| piece.parse::<IpAddr>().ok())
                .any(|seen| seen.to_canonical() == address);
            found
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_headers_never_panic_and_name_the_peer_or_an_address_they_contain(
            forwarded in proptest::collection::vec(header_line(), 0..3),
            xff in proptest::collection::vec(header_line(), 0..3),
            xfp in proptest::collection::vec(header_line(), 0..2),
            peer_trusted in any::<bool>(),
        ) {
            let peer = ip(if peer_trusted { "10.0.0.1" } else { "203.0.113.1" });
            let (f, x, p) = (refs(&forwarded), refs(&xff), refs(&xfp));
            let trust = trusted("10.0.0.0/8 2001:db8::/32");
            let answer = resolve_lines(
                Some(peer),
                ForwardingHeaders { forwarded: &f, x_forwarded_for: &x, x_forwarded_proto: &p },
                &trust,
            );
            let chosen = answer.ip().expect("a peer was given");
            if !peer_trusted {
                prop_assert_eq!(chosen, peer);
            }
            let source = if forwarded.is_empty() { &xff } else { &forwarded };
            prop_assert!(
                chosen == peer || mentions(source, chosen),
                "{chosen} is neither the peer nor in the headers"
            );
        }
    }
}
