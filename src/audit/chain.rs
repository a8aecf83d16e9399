//! The hash chain: how one audit line is laid out and linked to the line
//! before it.
//!
//! A line is one JSON object:
//! `{"time":"2026-12-03T14:05:06.123Z",<the event's fields>,"instance":"…","seq":N,"prev":"<hex>"}`
//! where `seq` counts lines from 1 at the start of the chain (across
//! restarts and rotated files) and `prev` is the hex SHA-256 of the previous
//! line's bytes, without its newline (64 zeros for the first line). So an
//! edited line breaks the `prev` of the line after it, a removed line leaves
//! a gap in `seq`, and swapped lines run `seq` backwards.

use std::io::Write as _;

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// `prev` of a chain's first line.
pub const GENESIS: [u8; 32] = [0; 32];

/// Where the chain stands: the last line's `seq` (0: no line yet) and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainState {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl ChainState {
    /// A chain with no line yet.
    pub fn genesis() -> ChainState {
        ChainState { seq: 0, hash: GENESIS }
    }

    /// The state after `line` (its bytes without the newline), given the
    /// `seq` it carries.
    pub fn after(seq: u64, line: &[u8]) -> ChainState {
        ChainState {
            seq,
            hash: Sha256::digest(line).into(),
        }
    }

    /// The state a chain is in after this line, read back from a file: its
    /// `seq` field and its hash.
    pub fn from_line(line: &[u8]) -> Result<ChainState, String> {
        let seq = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|value| value.get("seq").and_then(serde_json::Value::as_u64))
            .ok_or("is not an audit line (a JSON object with a `seq`)")?;
        Ok(ChainState::after(seq, line))
    }

    /// Appends the next line (and its newline) to `out`: `fields` is a
    /// serialized JSON object with at least one field (an event, or a
    /// checkpoint's fields), spliced between `time` and `instance`.
    pub fn append(&mut self, out: &mut Vec<u8>, time: &str, instance: &str, fields: &[u8]) {
        debug_assert!(fields.len() > 2 && fields.starts_with(b"{") && fields.ends_with(b"}"));
        self.append_with(out, time, instance, |out| {
            out.extend_from_slice(fields);
            true
        });
    }

    /// [`ChainState::append`] with the fields serialized by `write_fields`
    /// straight into `out` (a JSON object of at least one field; `false`:
    /// it failed, and nothing is appended): no buffer per line.
    pub fn append_with(
        &mut self,
        out: &mut Vec<u8>,
        time: &str,
        instance: &str,
        write_fields: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> bool {
        let start = out.len();
        let seq = self.seq + 1;
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(time.as_bytes());
        out.extend_from_slice(b"\",");
        let fields_at = out.len();
        if !write_fields(out) || out.len() < fields_at + 3 || out[fields_at] != b'{' || out.last() != Some(&b'}') {
            out.truncate(start);
            return false;
        }
        // The object's braces go: its fields join the line's.
        out.pop();
        out.remove(fields_at);
        out.extend_from_slice(b",\"instance\":");
        // Written in place (no string per line: the writer lays out tens of
        // thousands of lines a second under load).
        if serde_json::to_writer(&mut *out, instance).is_err() {
            out.extend_from_slice(b"\"\"");
        }
        let _ = write!(out, ",\"seq\":{seq},\"prev\":\"");
        hex_into(out, &self.hash);
        out.extend_from_slice(b"\"}");
        *self = ChainState::after(seq, &out[start..]);
        out.push(b'\n');
        true
    }
}

/// Lower-case hex, appended to `out`.
fn hex_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0xf)]);
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// `time` as UTC RFC 3339 with milliseconds (`2026-12-03T14:05:06.123Z`).
pub fn rfc3339_millis(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, exact for every day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(millis: u64) -> String {
        rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis))
    }

    #[test]
    fn times_are_utc_rfc3339_with_milliseconds() {
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        // A leap day (checked with `date -u -d @951827696`).
        assert_eq!(at(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(at(1_798_761_599_999), "2026-12-31T23:59:59.999Z");
        assert_eq!(at(1_798_761_600_000), "2027-01-01T00:00:00.000Z");
    }

    #[test]
    fn each_line_carries_the_hash_of_the_line_before() {
        let mut state = ChainState::genesis();
        let mut out = Vec::new();
        state.append(&mut out, "T1", "inst", br#"{"event":"a"}"#);
        state.append(&mut out, "T2", "inst", br#"{"event":"b","outcome":"success"}"#);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                r#"{{"time":"T1","event":"a","instance":"inst","seq":1,"prev":"{}"}}"#,
                "0".repeat(64)
            )
        );
        let first_hash = hex(&Sha256::digest(lines[0].as_bytes()));
        assert_eq!(
            lines[1],
            format!(
                r#"{{"time":"T2","event":"b","outcome":"success","instance":"inst","seq":2,"prev":"{first_hash}"}}"#
            )
        );
        assert_eq!(state, ChainState::from_line(lines[1].as_bytes()).unwrap());
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_line_that_is_not_an_audit_line_has_no_chain_state() {
        assert!(ChainState::from_line(b"{\"time\":\"x\"").is_err());
        assert!(ChainState::from_line(b"{\"seq\":\"1\"}").is_err());
    }
}
