//! Which addresses a document may be fetched from (SSRF): only public
//! unicast ones, unless the operator allows private networks
//! (`OAUTH_PROXY_CIMD_ALLOW_PRIVATE_NETWORKS`).
//!
//! A client id is a URL anyone can type, so without this check the proxy
//! would fetch from its own loopback, the cloud metadata service
//! (169.254.169.254) or the intranet on an attacker's behalf. IPv6 forms that
//! carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
//! NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that address.
//! Ranges: RFC 6890 (special-purpose registries), RFC 1918, RFC 6598, RFC 4193,
//! RFC 4291.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why `ip` may not be fetched from (the kind of address, as the error page
/// names it), or `None` for a public unicast address.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        (0, ..) => "reserved (this network)",
        (127, ..) => "loopback",
        (10, ..) => "private",
        (172, 16..=31, _) => "private",
        (192, 168, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "carrier-grade NAT",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        (192, 0, 0) => "reserved (IETF protocol assignments)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (192, 88, 99) => "reserved (6to4 relay)",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated): the
    // connection goes to (or stands for) the IPv4 address.
    if let Some(v4) = ip.to_ipv4() {
        return match v4_kind(v4) {
            Some(kind) => Some(kind),
            None if segments[5] == 0xffff => None,
            None => Some("IPv4-compatible (deprecated)"),
        };
    }
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match segments {
        // NAT64 (RFC 6052): the gateway connects to the embedded address.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => v4_kind(embedded(high, low)),
        [0x64, 0xff9b, 1, ..] => Some("private (local-use NAT64)"),
        // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 stands for AA.BB.CC.DD.
        [0x2002, high, low, ..] => v4_kind(embedded(high, low)),
        [0x2001, 0xdb8, ..] => Some("documentation"),
        [0x2001, 2, 0, ..] => Some("benchmarking"),
        // Teredo tunnels carry an obscured IPv4 address.
        [0x2001, 0, ..] => Some("reserved (Teredo)"),
        [0x100, 0, 0, 0, ..] => Some("reserved (discard-only)"),
        [s, ..] if s & 0xfe00 == 0xfc00 => Some("private"),
        [s, ..] if s & 0xffc0 == 0xfe80 => Some("link-local"),
        [s, ..] if s & 0xffc0 == 0xfec0 => Some("private (site-local)"),
        [s, ..] if s & 0xff00 == 0xff00 => Some("multicast"),
        // Global unicast is 2000::/3; nothing else is routed on the internet.
        [s, ..] if s & 0xe000 != 0x2000 => Some("reserved"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(address: &str) -> Option<&'static str> {
        forbidden_kind(address.parse().unwrap())
    }

    #[test]
    fn public_addresses_are_allowed() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "160.79.104.10",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450:4007:80e::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    #[test]
    fn loopback_private_link_local_and_cgnat_ipv4_addresses_are_refused_by_kind() {
        for (address, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("224.0.0.1", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "reserved (this network)"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
            ("198.18.0.1", "benchmarking"),
        ] {
            assert_eq!(kind(address), Some(expected), "{address}");
        }
    }

    #[test]
    fn ipv6_loopback_unique_local_link_local_and_multicast_are_refused_by_kind() {
        for (address, expected) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "private (site-local)"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "reserved (Teredo)"),
            ("100::1", "reserved (discard-only)"),
            ("4000::1", "reserved"),
        ] {
            assert_eq!(kind(address), Some(expected), "{address}");
        }
    }

    #[test]
    fn ipv6_forms_carrying_a_private_ipv4_address_are_refused_as_that_address() {
        for (address, expected) in [
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("::8.8.8.8", "IPv4-compatible (deprecated)"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b:1::1", "private (local-use NAT64)"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:c0a8:101::1", "private"),
        ] {
            assert_eq!(kind(address), Some(expected), "{address}");
        }
    }
}
