//! The client's address: who is on the other end of a request, for the
//! per-address rate limits and the access log.
//!
//! Behind a load balancer or TLS terminator the socket peer is that proxy,
//! not the client. Contract:
//! - Forwarding headers are believed only when the socket peer is one of
//!   `OAUTH_PROXY_TRUSTED_PROXIES`; from any other peer they are ignored, so
//!   a client cannot pick its own address by sending them.
//! - `Forwarded` (RFC 7239) is preferred over `X-Forwarded-For` when both
//!   are present. Several lines of one header are one list, in order
//!   (RFC 9110 §5.3).
//! - The chain is walked right to left, starting next to the peer: each
//!   trusted address is a proxy and the walk goes on; the first address
//!   that is not trusted is the client. A chain of trusted addresses only
//!   makes its leftmost one the client.
//! - A hop that names no address (`unknown`, an obfuscated `_name`
//!   identifier, a `Forwarded` element without `for=`) or that cannot be
//!   read ends the walk there: the client is the last address read before it
//!   (the trusted proxy that reported the bad hop, or the peer itself).
//!   Garbage never becomes a client address, so sending garbage can only put
//!   a client in its proxy's bucket, never in a fresh one.
//! - `X-Forwarded-Proto` (or the `proto=` of the client's `Forwarded`
//!   element) tells the scheme the client used; only from a trusted peer.
//!
//! The rate-limit key ([`RateKey`]) is the IPv4 address, or the /64 prefix of
//! an IPv6 address (one host usually holds a whole /64; IPv4-mapped IPv6
//! addresses count as IPv4).

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderMap, HeaderName, FORWARDED, X_FORWARDED_FOR, X_FORWARDED_PROTO};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use ipnet::IpNet;

/// The networks whose forwarding headers are believed
/// (`OAUTH_PROXY_TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// A comma- or space-separated list of CIDRs (`10.0.0.0/8`,
    /// `2001:db8::/32`) or bare addresses (a /32 or a /128).
    pub fn parse(raw: &str) -> Result<TrustedProxies, String> {
        let mut networks = Vec::new();
        for item in raw
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let network = match (item.parse::<IpNet>(), item.parse::<IpAddr>()) {
                // `10.1.2.3/8` means the network it lies in.
                (Ok(network), _) => network.trunc(),
                (_, Ok(address)) => IpNet::from(address),
                _ => {
                    return Err(format!(
                        "`{item}` is not an IP address or a CIDR block (e.g. 10.0.0.0/8, 2001:db8::/32)"
                    ))
                }
            };
            networks.push(network);
        }
        Ok(TrustedProxies(networks))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` (or the IPv4 address it maps) is a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        let canonical = address.to_canonical();
        self.0
            .iter()
            .any(|network| network.contains(&address) || network.contains(&canonical))
    }
}

/// The scheme the client used, as a trusted proxy reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(value: &str) -> Option<Scheme> {
        if value.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else if value.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else {
            None
        }
    }
}

/// What rate limits count by: an IPv4 address, or an IPv6 /64 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateKey(IpAddr);

impl RateKey {
    pub fn of(address: IpAddr) -> RateKey {
        match address.to_canonical() {
            IpAddr::V4(v4) => RateKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                RateKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl fmt::Display for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// Who sent a request, worked out once per request (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    address: Option<IpAddr>,
    scheme: Option<Scheme>,
}

impl ClientAddress {
    /// The client's address; `None` when the socket has none (not over TCP).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address
    }

    /// The scheme a trusted proxy says the client used (`X-Forwarded-Proto`,
    /// or `proto=` in `Forwarded`); `None` when no trusted proxy said.
    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    /// The key rate limits count this client by.
    pub fn rate_key(&self) -> Option<RateKey> {
        self.address.map(RateKey::of)
    }

    /// The client behind `peer`, from the forwarding headers when `peer` is
    /// trusted.
    pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientAddress {
        let lines = |name: &HeaderName| headers.get_all(name).map(|v| v.as_bytes()).collect::<Vec<_>>();
        resolve_lines(
            peer,
            ForwardingHeaders {
                forwarded: &lines(&FORWARDED),
                x_forwarded_for: &lines(&X_FORWARDED_FOR),
                x_forwarded_proto: &lines(&X_FORWARDED_PROTO),
            },
            trusted,
        )
    }

    /// The request's client address, worked out on first use and kept in the
    /// request's extensions (the access log and the handler share it). The
    /// trusted networks come from the app data the routes are mounted with.
    pub fn of(req: &HttpRequest) -> ClientAddress {
        if let Some(known) = req.extensions().get::<ClientAddress>() {
            return *known;
        }
        let peer = req.peer_addr().map(|a| a.ip());
        let address = match req.app_data::<web::Data<TrustedProxies>>() {
            Some(trusted) if !trusted.is_empty() => ClientAddress::resolve(peer, req.headers(), trusted),
            _ => ClientAddress {
                address: peer.map(|p| p.to_canonical()),
                scheme: None,
            },
        };
        req.extensions_mut().insert(address);
        address
    }
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(address) => write!(f, "{address}"),
            None => f.write_str("-"),
        }
    }
}

impl FromRequest for ClientAddress {
    type Error = Infallible;
    type Future = Ready<Result<ClientAddress, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(ClientAddress::of(req)))
    }
}

/// The raw lines of the forwarding headers, in the order received.
#[derive(Debug, Clone, Copy)]
pub struct ForwardingHeaders<'a> {
    pub forwarded: &'a [&'a [u8]],
    pub x_forwarded_for: &'a [&'a [u8]],
    pub x_forwarded_proto: &'a [&'a [u8]],
}

/// One hop of a forwarding chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Address(IpAddr),
    /// `unknown`, an obfuscated identifier, no `for=`, or unreadable.
    Opaque,
}

/// A hop and the scheme its proxy received the request on.
#[derive(Debug, Clone, Copy)]
struct Element {
    hop: Hop,
    proto: Option<Scheme>,
}

const OPAQUE: Element = Element {
    hop: Hop::Opaque,
    proto: None,
};

/// [`ClientAddress::resolve`] over raw header lines (no allocation-free
/// promise; never panics, whatever the bytes).
pub fn resolve_lines(peer: Option<IpAddr>, headers: ForwardingHeaders<'_>, trusted: &TrustedProxies) -> ClientAddress {
    let untrusted = ClientAddress {
        address: peer.map(|p| p.to_canonical()),
        scheme: None,
    };
    let Some(peer) = peer.filter(|p| trusted.contains(*p)) else {
        return untrusted;
    };
    let elements = if !headers.forwarded.is_empty() {
        headers
            .forwarded
            .iter()
            .flat_map(|line| forwarded_elements(line))
            .collect()
    } else {
        let mut elements: Vec<Element> = headers
            .x_forwarded_for
            .iter()
            .flat_map(|line| x_forwarded_for(line))
            .collect();
        let protos: Vec<Option<Scheme>> = headers
            .x_forwarded_proto
            .iter()
            .flat_map(|line| list_items(line))
            .map(|item| item.and_then(Scheme::parse))
            .collect();
        // One scheme per hop when the lists line up; otherwise the rightmost,
        // set by the proxy next to us.
        if protos.len() == elements.len() {
            for (element, proto) in elements.iter_mut().zip(&protos) {
                element.proto = *proto;
            }
        } else if let Some(last) = protos.last() {
            for element in &mut elements {
                element.proto = *last;
            }
        }
        elements
    };
    let mut client = ClientAddress {
        address: Some(peer.to_canonical()),
        scheme: None,
    };
    for element in elements.iter().rev() {
        let Hop::Address(address) = element.hop else {
            // The last address read stays the client (module docs).
            break;
        };
        client = ClientAddress {
            address: Some(address.to_canonical()),
            scheme: element.proto,
        };
        if !trusted.contains(address) {
            break;
        }
    }
    client
}

/// The comma-separated items of one header line, trimmed, empty ones
/// skipped (RFC 9110 §5.6.1); `None` for a line that is not text.
fn list_items(line: &[u8]) -> Vec<Option<&str>> {
    match std::str::from_utf8(line) {
        Ok(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(Some)
            .collect(),
        Err(_) => vec![None],
    }
}

/// The hops of one `X-Forwarded-For` line: addresses, with or without a port
/// (`192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]:443`).
fn x_forwarded_for(line: &[u8]) -> Vec<Element> {
    list_items(line)
        .into_iter()
        .map(|item| Element {
            hop: item.and_then(parse_address).map_or(Hop::Opaque, Hop::Address),
            proto: None,
        })
        .collect()
}

fn parse_address(item: &str) -> Option<IpAddr> {
    if let Ok(address) = item.parse::<IpAddr>() {
        return Some(address);
    }
    if let Ok(socket) = item.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    item.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inside| inside.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The elements of one `Forwarded` line (RFC 7239 §4):
/// `for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711"`.
fn forwarded_elements(line: &[u8]) -> Vec<Element> {
    let Ok(text) = std::str::from_utf8(line) else {
        return vec![OPAQUE];
    };
    split_unquoted(text, ',')
        .into_iter()
        .filter(|element| !element.trim().is_empty())
        .map(forwarded_element)
        .collect()
}

/// Splits on `separator` outside quoted strings; a quoted string runs to
/// its closing quote (a backslash escapes the next character). An
/// unterminated quote runs to the end, and the piece fails to parse later.
fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            pieces.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// One element: its `for=` node and `proto=`; any malformed pair, a
/// repeated parameter or a missing `for=` makes the hop opaque.
fn forwarded_element(element: &str) -> Element {
    let (mut node, mut proto) = (None, None);
    for pair in split_unquoted(element, ';') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return OPAQUE;
        };
        let Some(value) = unquote(value.trim()) else {
            return OPAQUE;
        };
        let name = name.trim();
        let slot = if name.eq_ignore_ascii_case("for") {
            &mut node
        } else if name.eq_ignore_ascii_case("proto") {
            &mut proto
        } else if is_token(name) {
            // `by`, `host` and extensions: not needed here.
            continue;
        } else {
            return OPAQUE;
        };
        if slot.replace(value).is_some() {
            // RFC 7239 §4: each parameter at most once per element.
            return OPAQUE;
        }
    }
    Element {
        hop: node.as_deref().and_then(parse_node).map_or(Hop::Opaque, Hop::Address),
        proto: proto.as_deref().and_then(Scheme::parse),
    }
}

/// A token, or a quoted string with its escapes resolved (RFC 9110 §5.6.4).
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return is_token(value).then(|| value.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 7239 §6: `nodename [":" node-port]`, where nodename is an IPv4
/// address, a bracketed IPv6 address, `unknown` or an obfuscated `_name`;
/// only real addresses are answered. (A bare IPv6 address is accepted too:
/// some proxies send one.)
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address);
    }
    let (name, port) = match node.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            (IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?), port)
        }
        None => {
            let (name, port) = node.split_once(':')?;
            (IpAddr::V4(name.parse::<Ipv4Addr>().ok()?), Some(port))
        }
    };
    match port {
        None => Some(name),
        Some(port) if port.parse::<u16>().is_ok() || is_obfuscated(port) => Some(name),
        Some(_) => None,
    }
}

/// `obfnode` / `obfport`: `_` then letters, digits, `.`, `_`, `-`.
fn is_obfuscated(value: &str) -> bool {
    value
        .strip_prefix('_')
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
}

#[cfg(test)]
mod tests {
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
}
