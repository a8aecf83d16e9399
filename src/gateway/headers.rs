//! The 2026-07-28 request metadata headers (MCP transport, "Request
//! Metadata"): `Mcp-Method` mirrors the body's `method`, `Mcp-Name` its
//! `params.name` (`tools/call`, `prompts/get`) or `params.uri`
//! (`resources/read`), in the `=?base64?…?=` form when the value is not
//! plain ASCII, and `MCP-Protocol-Version` the body's
//! `params._meta["io.modelcontextprotocol/protocolVersion"]`. A request whose
//! headers disagree with its body is refused (400, `HeaderMismatch`) so that
//! nothing behind the gateway can route on one value while the MCP server
//! acts on another. The gateway's own decisions read the body.
//!
//! - A request without `Mcp-Method`, `Mcp-Name` and a body protocol version
//!   (protocol versions before 2026-07-28) is not checked, except that an
//!   `MCP-Protocol-Version` of 2026-07-28 or later needs `Mcp-Method`.
//! - A request declaring 2026-07-28 (in `_meta`) needs `MCP-Protocol-Version`
//!   and `Mcp-Method`; one with `Mcp-Method` of `tools/call`, `prompts/get`
//!   or `resources/read` needs `Mcp-Name`.
//! - A batch (no longer part of 2026-07-28) cannot carry `Mcp-Method` or
//!   `Mcp-Name`: one header cannot mirror several messages.
//! - Header values are compared byte for byte (they are case-sensitive).

use std::borrow::Cow;

use actix_web::http::header::HeaderMap;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;

use super::call::{Message, Param};

/// The JSON-RPC error code of a header that disagrees with the body
/// (MCP 2026-07-28 `HeaderMismatch`), answered with 400.
pub const HEADER_MISMATCH: i64 = -32020;

/// The first protocol version whose requests carry the headers.
const HEADERS_SINCE: &str = "2026-07-28";

const METHOD: &str = "mcp-method";
const NAME: &str = "mcp-name";
const VERSION: &str = "mcp-protocol-version";

/// Why the headers disagree with the body (the JSON-RPC error message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

fn mismatch(text: impl Into<String>) -> Mismatch {
    Mismatch(format!("Header mismatch: {}", text.into()))
}

/// The one value of a header: `Ok(None)` when absent; a header sent twice
/// or with bytes that are not visible ASCII is malformed.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Mismatch> {
    let mut values = headers.get_all(name);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(mismatch(format!("{name} is sent more than once")));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| mismatch(format!("{name} has invalid characters")))
}

/// An `Mcp-Name` value: the `=?base64?…?=` form decoded (standard Base64
/// of UTF-8), anything else as is.
fn decode_name(value: &str) -> Result<Cow<'_, str>, Mismatch> {
    let Some(encoded) = value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) else {
        return Ok(Cow::Borrowed(value));
    };
    let bytes = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .map_err(|_| mismatch("Mcp-Name is not valid Base64 in its =?base64?…?= form"))?;
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| mismatch("Mcp-Name does not decode to UTF-8"))
}

/// A protocol version at or after 2026-07-28 (versions are dates,
/// `YYYY-MM-DD`, which order as strings).
fn carries_headers(version: &str) -> bool {
    let is_date = version.len() == 10
        && version.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    is_date && version >= HEADERS_SINCE
}

/// Checks the request's `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version`
/// against its body (see the module docs).
pub fn check(headers: &HeaderMap, message: &Message<'_>) -> Result<(), Mismatch> {
    let method = single(headers, METHOD)?;
    let name = single(headers, NAME)?;
    let version = single(headers, VERSION)?;
    let call = match message {
        Message::Single(call) => Some(call),
        Message::Batch { calls, .. } => {
            if method.is_some() || name.is_some() {
                return Err(mismatch("a batch cannot carry Mcp-Method or Mcp-Name"));
            }
            // Each message that declares a version must agree with the header.
            for call in calls {
                check_version(version, &call.version)?;
            }
            return Ok(());
        }
        Message::Unreadable => None,
    };
    let Some(call) = call else {
        if method.is_some() || name.is_some() {
            return Err(mismatch("the body is not a JSON-RPC request the headers could mirror"));
        }
        return Ok(());
    };
    check_version(version, &call.version)?;
    let modern = call.version.text().is_some() || version.is_some_and(carries_headers);
    let Some(method) = method else {
        if modern {
            return Err(mismatch("Mcp-Method is required from protocol version 2026-07-28"));
        }
        if name.is_some() {
            return Err(mismatch("Mcp-Name is sent without Mcp-Method"));
        }
        return Ok(());
    };
    let body_method = call.method.as_deref();
    if body_method != Some(method) {
        return Err(mismatch(format!(
            "Mcp-Method header value '{}' does not match body value '{}'",
            shown(method),
            shown(body_method.unwrap_or_default())
        )));
    }
    // The body value Mcp-Name mirrors.
    let source = match method {
        "tools/call" | "prompts/get" => Some(&call.name),
        "resources/read" => Some(&call.uri),
        _ => None,
    };
    match (name, source) {
        (None, Some(_)) => Err(mismatch(format!("Mcp-Name is required for {method}"))),
        (None, None) => Ok(()),
        (Some(name), source) => {
            let name = decode_name(name)?;
            // Another method's Mcp-Name must still be the name or uri it has.
            let body = match source {
                Some(param) => param.text(),
                None => call.name.text().or(call.uri.text()),
            };
            if body == Some(name.as_ref()) {
                Ok(())
            } else {
                Err(mismatch(format!(
                    "Mcp-Name header value '{}' does not match body value '{}'",
                    shown(&name),
                    shown(body.unwrap_or_default())
                )))
            }
        }
    }
}

/// `MCP-Protocol-Version` against the body's `_meta` version: when the body
/// declares one, the header must be there and equal.
fn check_version(header: Option<&str>, body: &Param<'_>) -> Result<(), Mismatch> {
    match (header, body) {
        (_, Param::Absent) => Ok(()),
        (Some(header), Param::Text(body)) if header == body => Ok(()),
        (None, _) => Err(mismatch(
            "MCP-Protocol-Version is required with a protocol version in _meta",
        )),
        (Some(header), Param::Text(body)) => Err(mismatch(format!(
            "MCP-Protocol-Version header value '{}' does not match body value '{}'",
            shown(header),
            shown(body)
        ))),
        (Some(_), Param::Other) => Err(mismatch("the protocol version in _meta is not a string")),
    }
}

/// A client-chosen value in an error message: short, without quotes or
/// control characters.
fn shown(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control() && *c != '\'')
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;
    use crate::gateway::call::read;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn checked(pairs: &[(&str, &str)], body: &str) -> Result<(), Mismatch> {
        check(&headers(pairs), &read(body.as_bytes()))
    }

    #[test]
    fn the_base64_form_is_decoded_and_only_it() {
        assert_eq!(decode_name("=?base64?bcOpdMOpbw==?=").unwrap(), "météo");
        assert_eq!(decode_name("=?base64?bcOpdMOpbw?=").unwrap(), "météo");
        assert_eq!(decode_name("plain").unwrap(), "plain");
        assert!(decode_name("=?base64?!!?=").is_err());
        assert!(decode_name("=?base64?/w==?=").is_err(), "not UTF-8");
        // The markers are lowercase.
        assert_eq!(decode_name("=?BASE64?eA==?=").unwrap(), "=?BASE64?eA==?=");
    }

    #[test]
    fn versions_from_2026_07_28_carry_the_headers() {
        assert!(carries_headers("2026-07-28"));
        assert!(carries_headers("2027-01-01"));
        assert!(!carries_headers("2025-11-25"));
        assert!(!carries_headers("DRAFT-2026"));
        assert!(!carries_headers("2026-7-28"));
    }

    #[test]
    fn headers_are_checked_against_the_body() {
        let call = r#"{"id":1,"method":"tools/call","params":{"name":"a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let v = ("MCP-Protocol-Version", "2026-07-28");
        assert!(checked(&[v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "a")], call).is_ok());
        assert!(checked(&[v, ("Mcp-Method", "tools/call"), ("Mcp-Name", "b")], call).is_err());
        assert!(checked(&[v, ("Mcp-Method", "tools/call")], call).is_err());
        assert!(checked(&[("Mcp-Method", "tools/call"), ("Mcp-Name", "a")], call).is_err());
        assert!(checked(&[v], call).is_err());
        let twice = [
            v,
            ("Mcp-Method", "tools/call"),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "a"),
        ];
        assert!(checked(&twice, call).is_err());
        // Earlier versions: nothing to check.
        let legacy = r#"{"id":1,"method":"tools/call","params":{"name":"a"}}"#;
        assert!(checked(&[("MCP-Protocol-Version", "2025-06-18")], legacy).is_ok());
        assert!(checked(&[], legacy).is_ok());
        assert!(checked(&[], "not json").is_ok());
        assert!(checked(&[("Mcp-Method", "ping")], "not json").is_err());
        // A stray Mcp-Name on another method must still be its name.
        let ping = r#"{"method":"ping"}"#;
        assert!(checked(&[("Mcp-Method", "ping"), ("Mcp-Name", "x")], ping).is_err());
    }
}
