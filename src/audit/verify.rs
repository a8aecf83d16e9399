//! `audit verify`: checks that files, given in order (rotated ones first),
//! hold one unbroken chain, and that each checkpoint's HMAC is right when
//! the key is at hand.
//!
//! What is named, at the first line where the chain breaks:
//! - an edited line: its hash is not the `prev` of the line after it (an
//!   edit of the very last line shows only in a checkpoint written after
//!   it; a clean stop ends with one);
//! - a removed line: `seq` jumps;
//! - reordered lines: `seq` jumps to a line that is found later;
//! - a bad checkpoint: its HMAC does not match (the lines before it were
//!   rewritten with their hashes, or signed with another key);
//! - a line cut short, or one that is not an audit line.
//!
//! A first line that does not start a chain (`seq` 1) continues one from a
//! file not given: it is accepted, and the summary says so.

use sha2::{Digest, Sha256};

use super::chain::{hex, GENESIS};
use super::checkpoint::{CheckpointKey, CHECKPOINT_EVENT};

/// A chain that holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub files: usize,
    pub checkpoints_verified: u64,
    /// Checkpoints whose HMAC was not checked (no key).
    pub checkpoints_unchecked: u64,
    /// Lines after the last checkpoint (not covered by a signature).
    pub after_last_checkpoint: u64,
    /// `FILE:LINE` and `seq` of a first line that continues a chain begun
    /// in a file not given.
    pub continues: Option<(String, u64)>,
}

/// The first line where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub file: String,
    /// 1-based.
    pub line: usize,
    pub problem: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.problem)
    }
}

/// The fields of a line the chain needs.
struct Parsed {
    seq: u64,
    prev: String,
    event: Option<String>,
    time: Option<String>,
    instance: Option<String>,
    mac: Option<String>,
}

struct Line<'a> {
    file: usize,
    number: usize,
    bytes: &'a [u8],
    parsed: Result<Parsed, String>,
}

fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|_| "not an audit line: not a JSON object (edited, or cut short)".to_string())?;
    let text = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let seq = value
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .ok_or("not an audit line: no `seq`")?;
    let prev = text("prev")
        .filter(|prev| prev.len() == 64 && prev.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("not an audit line: no `prev` hash")?;
    Ok(Parsed {
        seq,
        prev,
        event: text("event"),
        time: text("time"),
        instance: text("instance"),
        mac: text("mac"),
    })
}

fn lines<'a>(files: &'a [(String, Vec<u8>)]) -> Vec<Line<'a>> {
    let mut out = Vec::new();
    for (file, (_, bytes)) in files.iter().enumerate() {
        if bytes.is_empty() {
            continue;
        }
        let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        // A file of whole lines ends with a newline: the last piece is empty.
        let cut_short = pieces.last().is_some_and(|last| !last.is_empty());
        if !cut_short {
            pieces.pop();
        }
        let count = pieces.len();
        for (index, piece) in pieces.into_iter().enumerate() {
            let parsed = if index + 1 == count && cut_short {
                Err("cut short: the last line does not end with a newline (a truncated write or an edit)".into())
            } else if piece.is_empty() {
                Err("an empty line where an audit line should be".into())
            } else {
                parse(piece)
            };
            out.push(Line {
                file,
                number: index + 1,
                bytes: piece,
                parsed,
            });
        }
    }
    out
}

/// Verifies `files` (name and content, in chain order). `key`: the
/// checkpoint key, when it can be derived.
pub fn verify(files: &[(String, Vec<u8>)], key: Option<&CheckpointKey>) -> Result<Summary, Broken> {
    let lines = lines(files);
    let name = |line: &Line| files[line.file].0.clone();
    let broken = |line: &Line, problem: String| Broken {
        file: name(line),
        line: line.number,
        problem,
    };
    let mut summary = Summary {
        lines: 0,
        files: files.len(),
        checkpoints_verified: 0,
        checkpoints_unchecked: 0,
        after_last_checkpoint: 0,
        continues: None,
    };
    // The previous line: its seq, its hash and its index.
    let mut previous: Option<(u64, [u8; 32], usize)> = None;
    for (index, line) in lines.iter().enumerate() {
        let parsed = line.parsed.as_ref().map_err(|problem| broken(line, problem.clone()))?;
        match previous {
            None => {
                if parsed.seq != 1 || parsed.prev != hex(&GENESIS) {
                    summary.continues = Some((format!("{}:{}", name(line), line.number), parsed.seq));
                }
            }
            Some((seq, hash, before)) => {
                if parsed.seq <= seq {
                    return Err(broken(
                        line,
                        format!(
                            "reordered: seq {} comes after seq {seq} (lines moved or repeated)",
                            parsed.seq
                        ),
                    ));
                }
                if parsed.seq > seq + 1 {
                    let expected = seq + 1;
                    let later = lines[index + 1..]
                        .iter()
                        .find(|other| other.parsed.as_ref().is_ok_and(|p| p.seq == expected));
                    return Err(broken(
                        line,
                        match later {
                            Some(other) => format!(
                                "reordered: seq {} here, but seq {expected} comes later at {}:{}",
                                parsed.seq,
                                name(other),
                                other.number
                            ),
                            None => format!(
                                "removed: {} line(s) missing before this one (seq jumps from {seq} to {})",
                                parsed.seq - expected,
                                parsed.seq
                            ),
                        },
                    ));
                }
                if !parsed.prev.eq_ignore_ascii_case(&hex(&hash)) {
                    let edited = &lines[before];
                    return Err(broken(
                        edited,
                        format!(
                            "edited: its hash is not the `prev` that the next line ({}:{}) carries",
                            name(line),
                            line.number
                        ),
                    ));
                }
            }
        }
        if parsed.event.as_deref() == Some(CHECKPOINT_EVENT) {
            match key {
                Some(key) => {
                    let signed = match (&parsed.time, &parsed.instance, &parsed.mac) {
                        (Some(time), Some(instance), Some(mac)) => {
                            key.verify(parsed.seq, &parsed.prev, time, instance, mac)
                        }
                        _ => false,
                    };
                    if !signed {
                        return Err(broken(
                            line,
                            "bad checkpoint: its HMAC does not match (lines before it rewritten, or \
                             signed with another key)"
                                .into(),
                        ));
                    }
                    summary.checkpoints_verified += 1;
                }
                None => summary.checkpoints_unchecked += 1,
            }
            summary.after_last_checkpoint = 0;
        } else {
            summary.after_last_checkpoint += 1;
        }
        summary.lines += 1;
        previous = Some((parsed.seq, Sha256::digest(line.bytes).into(), index));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::super::chain::ChainState;
    use super::super::checkpoint::checkpoint_fields;
    use super::*;

    fn key() -> CheckpointKey {
        CheckpointKey::derive(b"a consent signing key of 32 chars!")
    }

    /// `events` event lines, a checkpoint after every `every` of them and
    /// one at the end; returns the lines (each without its newline).
    fn chain_from(state: &mut ChainState, events: usize, every: usize) -> Vec<String> {
        let mut out = Vec::new();
        for n in 1..=events {
            state.append(
                &mut out,
                "2026-01-01T00:00:00.000Z",
                "inst",
                format!(r#"{{"event":"e{n}"}}"#).as_bytes(),
            );
            if n % every == 0 || n == events {
                let fields = checkpoint_fields(&key(), state.seq + 1, &hex(&state.hash), "T", "inst");
                state.append(&mut out, "T", "inst", &fields);
            }
        }
        String::from_utf8(out).unwrap().lines().map(str::to_string).collect()
    }

    fn chain(events: usize, every: usize) -> Vec<String> {
        chain_from(&mut ChainState::genesis(), events, every)
    }

    fn file(name: &str, lines: &[String]) -> (String, Vec<u8>) {
        (
            name.to_string(),
            lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect(),
        )
    }

    fn check(files: &[(String, Vec<u8>)]) -> Result<Summary, Broken> {
        verify(files, Some(&key()))
    }

    #[test]
    fn an_intact_chain_verifies_with_its_checkpoints() {
        let lines = chain(10, 4);
        let summary = check(&[file("a", &lines)]).unwrap();
        assert_eq!(summary.lines, 13);
        assert_eq!(summary.checkpoints_verified, 3);
        assert_eq!(summary.after_last_checkpoint, 0);
        assert_eq!(summary.continues, None);
    }

    #[test]
    fn an_edited_line_is_named() {
        let mut lines = chain(10, 100);
        lines[3] = lines[3].replace(r#""event":"e4""#, r#""event":"e9""#);
        let broken = check(&[file("a", &lines)]).unwrap_err();
        assert_eq!((broken.file.as_str(), broken.line), ("a", 4));
        assert!(broken.problem.starts_with("edited"), "{broken}");
    }

    #[test]
    fn an_edited_line_with_the_chain_rehashed_fails_at_the_next_checkpoint() {
        // Edit line 2 and recompute every later line's `prev` and hash, as
        // someone without the key would.
        let lines = chain(6, 100);
        let mut state = ChainState::genesis();
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut fields = value.as_object().unwrap().clone();
            let time = fields.remove("time").unwrap();
            let instance = fields.remove("instance").unwrap();
            fields.remove("seq");
            fields.remove("prev");
            if i == 1 {
                fields.insert("event".into(), "forged".into());
            }
            let body = serde_json::to_vec(&fields).unwrap();
            state.append(&mut out, time.as_str().unwrap(), instance.as_str().unwrap(), &body);
        }
        let forged: Vec<String> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
        let broken = check(&[file("a", &forged)]).unwrap_err();
        assert_eq!(broken.line, 7, "the checkpoint after the edit: {broken}");
        assert!(broken.problem.starts_with("bad checkpoint"), "{broken}");
        // Without the key, the rewritten chain cannot be caught.
        let summary = verify(&[file("a", &forged)], None).unwrap();
        assert_eq!(summary.checkpoints_unchecked, 1);
    }

    #[test]
    fn a_removed_line_is_named() {
        let mut lines = chain(10, 100);
        lines.remove(4);
        let broken = check(&[file("a", &lines)]).unwrap_err();
        assert_eq!(broken.line, 5);
        assert!(broken.problem.starts_with("removed: 1 line(s) missing"), "{broken}");
    }

    #[test]
    fn two_lines_swapped_are_named_as_reordered() {
        let mut lines = chain(10, 100);
        lines.swap(4, 5);
        let broken = check(&[file("a", &lines)]).unwrap_err();
        assert_eq!(broken.line, 5);
        assert!(broken.problem.starts_with("reordered"), "{broken}");
        assert!(broken.problem.contains("a:6"), "{broken}");
    }

    #[test]
    fn a_bad_checkpoint_is_named() {
        let lines = chain(4, 2);
        let other = CheckpointKey::derive(b"another consent signing key, 32+");
        let broken = verify(&[file("a", &lines)], Some(&other)).unwrap_err();
        assert_eq!(broken.line, 3);
        assert!(broken.problem.starts_with("bad checkpoint"), "{broken}");
    }

    #[test]
    fn a_truncated_last_line_is_named() {
        let lines = chain(3, 100);
        let (name, mut bytes) = file("a", &lines);
        bytes.truncate(bytes.len() - 10);
        let broken = check(&[(name, bytes)]).unwrap_err();
        assert_eq!(broken.line, 4);
        assert!(broken.problem.starts_with("cut short"), "{broken}");
    }

    #[test]
    fn files_given_in_order_form_one_chain() {
        let mut state = ChainState::genesis();
        let old = chain_from(&mut state, 5, 100);
        let new = chain_from(&mut state, 5, 100);
        let summary = check(&[file("old", &old), file("new", &new)]).unwrap();
        assert_eq!(summary.lines, 12);
        assert_eq!(summary.files, 2);
        assert_eq!(summary.checkpoints_verified, 2);
        // In the wrong order, the break is named in the first file given.
        let broken = check(&[file("new", &new), file("old", &old)]).unwrap_err();
        assert_eq!((broken.file.as_str(), broken.line), ("old", 1));
        assert!(broken.problem.starts_with("reordered"), "{broken}");
        // The last line of one file edited: named in that file.
        let mut edited = old.clone();
        let last = edited.len() - 1;
        edited[last] = edited[last].replace("\"T\"", "\"T0\"");
        let broken = check(&[file("old", &edited), file("new", &new)]).unwrap_err();
        assert_eq!((broken.file.as_str(), broken.line), ("old", 6));
    }

    #[test]
    fn a_file_continuing_a_chain_from_a_file_not_given_is_accepted_and_said() {
        let mut state = ChainState::genesis();
        let _old = chain_from(&mut state, 5, 100);
        let new = chain_from(&mut state, 5, 100);
        let summary = check(&[file("new", &new)]).unwrap();
        assert_eq!(summary.continues, Some(("new:1".to_string(), 7)));
        assert_eq!(summary.lines, 6);
    }

    #[test]
    fn a_line_that_is_not_json_is_named() {
        let mut lines = chain(3, 100);
        lines.insert(1, "garbage".into());
        let broken = check(&[file("a", &lines)]).unwrap_err();
        assert_eq!(broken.line, 2);
        assert!(broken.problem.starts_with("not an audit line"), "{broken}");
    }
}
