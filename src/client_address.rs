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
use std::net::{IpAddr, Ipv6Addr};

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderMap, HeaderName, FORWARDED, X_FORWARDED_FOR, X_FORWARDED_PROTO};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use ipnet::IpNet;
use syntax::{forwarded_elements, list_items, x_forwarded_for, Element, Hop};

mod syntax;
#[cfg(test)]
mod tests;

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
