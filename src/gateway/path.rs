//! Which paths below the MCP endpoint are forwarded: [`check_tail`] reads
//! the raw path once and refuses anything a server behind the MCP server's
//! URL could resolve to somewhere else (see the parent module's contract).

/// Why a path below the MCP endpoint is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRefused {
    #[error("a `.` or `..` segment")]
    DotSegment,
    #[error("an encoded `?`, `#`, `/` or `\\`")]
    EncodedDelimiter,
    #[error("a backslash")]
    Backslash,
    #[error("a control character")]
    ControlCharacter,
    #[error("a `%` not followed by two hex digits, or an encoded byte that is never UTF-8")]
    BadEncoding,
    #[error("not below the MCP endpoint")]
    Outside,
}

impl PathRefused {
    pub(super) fn message(self) -> &'static str {
        match self {
            PathRefused::DotSegment => "the path below the MCP endpoint has a `.` or `..` segment",
            PathRefused::EncodedDelimiter => "the path below the MCP endpoint has an encoded `?`, `#`, `/` or `\\`",
            PathRefused::Backslash => "the path below the MCP endpoint has a backslash",
            PathRefused::ControlCharacter => "the path below the MCP endpoint has a control character",
            PathRefused::BadEncoding => "the path below the MCP endpoint has a malformed percent-encoding",
            PathRefused::Outside => "the path is not below the MCP endpoint",
        }
    }
}

pub(super) fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Checks the raw (not percent-decoded) path below the MCP endpoint: empty,
/// or `/` and segments, none of which a server behind the MCP server's URL
/// could resolve to somewhere else (RFC 3986 §5.2.4 dot segments, also
/// encoded, and Tomcat's `..;` form) or read as another delimiter. Reads
/// the bytes once and allocates nothing.
pub fn check_tail(tail: &str) -> Result<(), PathRefused> {
    let bytes = tail.as_bytes();
    if bytes.is_empty() {
        return Ok(());
    }
    if bytes[0] != b'/' {
        return Err(PathRefused::Outside);
    }
    // Per segment: how many decoded bytes came before its first `;`, and
    // whether all of them were dots.
    let (mut name_len, mut all_dots, mut in_params) = (0usize, true, false);
    let mut i = 1;
    loop {
        let byte = match bytes.get(i) {
            None | Some(b'/') => {
                if all_dots && (1..=2).contains(&name_len) {
                    return Err(PathRefused::DotSegment);
                }
                if i >= bytes.len() {
                    return Ok(());
                }
                (name_len, all_dots, in_params) = (0, true, false);
                i += 1;
                continue;
            }
            Some(b'%') => {
                let high = bytes.get(i + 1).copied().and_then(hex_value);
                let low = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(PathRefused::BadEncoding);
                };
                i += 3;
                let decoded = high << 4 | low;
                match decoded {
                    b'?' | b'#' | b'/' | b'\\' => return Err(PathRefused::EncodedDelimiter),
                    0x00..=0x1f | 0x7f => return Err(PathRefused::ControlCharacter),
                    // Never in UTF-8; `%C0%AE` is an overlong `.` that old
                    // decoders accept.
                    0xc0 | 0xc1 | 0xf5..=0xff => return Err(PathRefused::BadEncoding),
                    _ => decoded,
                }
            }
            Some(&raw) => {
                i += 1;
                match raw {
                    b'\\' => return Err(PathRefused::Backslash),
                    b'?' | b'#' => return Err(PathRefused::EncodedDelimiter),
                    0x00..=0x1f | 0x7f => return Err(PathRefused::ControlCharacter),
                    _ => raw,
                }
            }
        };
        if !in_params {
            if byte == b';' {
                in_params = true;
            } else {
                name_len += 1;
                all_dots &= byte == b'.';
            }
        }
    }
}
