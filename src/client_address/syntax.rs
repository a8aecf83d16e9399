//! Reading the forwarding headers' syntax into hops: `Forwarded` elements
//! (RFC 7239 §4, quoted strings and all), `X-Forwarded-For` items and
//! their addresses. Anything unreadable is an opaque hop, never an error
//! and never a panic; the walk over the hops is in the parent module.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Scheme;

/// One hop of a forwarding chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hop {
    Address(IpAddr),
    /// `unknown`, an obfuscated identifier, no `for=`, or unreadable.
    Opaque,
}

/// A hop and the scheme its proxy received the request on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Element {
    pub(super) hop: Hop,
    pub(super) proto: Option<Scheme>,
}

const OPAQUE: Element = Element {
    hop: Hop::Opaque,
    proto: None,
};

/// The comma-separated items of one header line, trimmed, empty ones
/// skipped (RFC 9110 §5.6.1); `None` for a line that is not text.
pub(super) fn list_items(line: &[u8]) -> Vec<Option<&str>> {
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
pub(super) fn x_forwarded_for(line: &[u8]) -> Vec<Element> {
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
pub(super) fn forwarded_elements(line: &[u8]) -> Vec<Element> {
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
