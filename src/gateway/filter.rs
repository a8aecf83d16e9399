//! `tools/list` filtering (`OAUTH_PROXY_MCP_FILTER_TOOLS_LIST=true`): the
//! MCP server's answer to a `tools/list` request is rewritten so
//! `result.tools` holds only the tools the token may call
//! (`OAUTH_PROXY_MCP_TOOL_SCOPES`), so a model is not shown tools it would be
//! refused. Pure: bytes in, bytes out; the HTTP glue is in `gateway.rs`.
//!
//! - Candidates: a request body that is one `tools/list` request with an
//!   id, or a batch holding such requests (each one's answer is filtered,
//!   matched by id). Notifications and every other method are not touched.
//! - A GET stream (SSE) is filtered as a whole: resumed with
//!   `Last-Event-ID`, it replays answers to earlier requests whose ids the
//!   proxy no longer knows, so every answer on it whose `result` holds a
//!   `tools` list is filtered.
//! - Only the `tools` array is rewritten; everything else in the answer
//!   (`nextCursor`, `_meta`, unknown fields, the other messages of a batch
//!   answer, each kept tool) keeps the server's bytes. A JSON-RPC error
//!   answer is left as it is.
//! - Fail closed: an answer the proxy cannot read for sure (not JSON, a
//!   duplicated `id`, `result` or `tools` member that parsers disagree on,
//!   `tools` that is not a list, larger than [`MAX_TOOLS_LIST_ANSWER`]) is
//!   [`Unfilterable`], never passed through: that would show every tool. A
//!   tool without exactly one string `name` is dropped.
//! - SSE (`text/event-stream`): events are cut at their blank line (LF,
//!   CRLF or CR line ends, split anywhere across chunks); the `data` of an
//!   event that answers a candidate id is rewritten, every other event goes
//!   out byte for byte as soon as it is whole. Once every candidate id is
//!   answered the rest of the stream passes through unread.

use std::ops::Range;

use serde::de::IgnoredAny;
use serde_json::Value;

/// The largest `tools/list` answer read to be filtered: a JSON body, or
/// one SSE event (each event before the answer is held until it is whole).
pub const MAX_TOOLS_LIST_ANSWER: usize = 4 * 1024 * 1024;

/// A span of the answer and the bytes that replace it.
type Splice = (Range<usize>, Vec<u8>);

/// Why an answer could not be filtered (for the client's error message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfilterable(pub &'static str);

/// Decides which tools a `tools/list` answer keeps, for one request.
pub struct ToolsListFilter {
    /// The ids of the request's `tools/list` calls.
    ids: Vec<Value>,
    answered: Vec<bool>,
    /// A GET stream: every answer with a `tools` list is filtered, whatever
    /// its id, to the end of the stream.
    every_answer: bool,
    may_call: Box<dyn Fn(&str) -> bool>,
}

impl std::fmt::Debug for ToolsListFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolsListFilter").field("ids", &self.ids).finish()
    }
}

impl ToolsListFilter {
    /// A filter when `body` is a `tools/list` request with an id (or a batch
    /// with some); `None` for every other body. Duplicate members are read
    /// as JSON parsers in MCP servers read them (the last one counts).
    pub fn for_request(body: &[u8], may_call: impl Fn(&str) -> bool + 'static) -> Option<ToolsListFilter> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first != b'{' && *first != b'[' {
            return None;
        }
        let value: Value = serde_json::from_slice(body).ok()?;
        let requests = match &value {
            Value::Array(batch) => batch.iter().collect(),
            single => vec![single],
        };
        let ids: Vec<Value> = requests
            .into_iter()
            .filter(|r| r.get("method").and_then(Value::as_str) == Some("tools/list"))
            .filter_map(|r| r.get("id").filter(|id| !id.is_null()).cloned())
            .collect();
        if ids.is_empty() {
            return None;
        }
        Some(ToolsListFilter {
            answered: vec![false; ids.len()],
            ids,
            every_answer: false,
            may_call: Box::new(may_call),
        })
    }

    /// A filter for a GET stream (see the module docs).
    pub fn for_stream(may_call: impl Fn(&str) -> bool + 'static) -> ToolsListFilter {
        ToolsListFilter {
            ids: Vec::new(),
            answered: Vec::new(),
            every_answer: true,
            may_call: Box::new(may_call),
        }
    }

    /// Whether this filters a GET stream.
    pub fn is_for_stream(&self) -> bool {
        self.every_answer
    }

    /// Whether every `tools/list` call of the request has been answered
    /// (never, on a GET stream).
    pub fn all_answered(&self) -> bool {
        !self.every_answer && self.answered.iter().all(|a| *a)
    }

    /// The id an error about an unfilterable answer names: the first call
    /// not answered yet (JSON-RPC `null` when there is none).
    pub fn pending_id(&self) -> Value {
        self.ids
            .iter()
            .zip(&self.answered)
            .find(|(_, answered)| !**answered)
            .map(|(id, _)| id.clone())
            .unwrap_or(Value::Null)
    }

    /// A JSON answer body (one message or a batch): `Ok(None)` when it stays
    /// as it is, `Ok(Some(bytes))` rewritten.
    pub fn rewrite_json(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, Unfilterable> {
        if body.len() > MAX_TOOLS_LIST_ANSWER {
            return Err(Unfilterable("the tools/list answer is too large to filter"));
        }
        if serde_json::from_slice::<IgnoredAny>(body).is_err() {
            return Err(Unfilterable("the tools/list answer is not JSON"));
        }
        self.rewrite_valid(body)
    }

    /// [`rewrite_json`](Self::rewrite_json) for a body known to be JSON.
    fn rewrite_valid(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, Unfilterable> {
        let mut cursor = Cursor { b: body, at: 0 };
        let Some(top) = cursor.skip_value() else {
            return Ok(None);
        };
        let messages = match body[top.start] {
            b'[' => elements(body, top).unwrap_or_default(),
            _ => vec![top],
        };
        let mut splices = Vec::new();
        for message in messages {
            if let Some(splice) = self.rewrite_message(body, message)? {
                splices.push(splice);
            }
        }
        if splices.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(body.len());
        let mut copied = 0;
        for (range, replacement) in splices {
            out.extend_from_slice(&body[copied..range.start]);
            out.extend_from_slice(&replacement);
            copied = range.end;
        }
        out.extend_from_slice(&body[copied..]);
        Ok(Some(out))
    }

    /// One JSON-RPC message (`span` of `b`): the `tools` array's span and
    /// its replacement when the message answers a candidate and drops tools.
    fn rewrite_message(&mut self, b: &[u8], span: Range<usize>) -> Result<Option<Splice>, Unfilterable> {
        let Some(message) = members(b, span) else {
            return Ok(None);
        };
        let Some(id) = single(b, &message, "id", "the answer's id appears twice")? else {
            return Ok(None);
        };
        let Ok(id) = serde_json::from_slice::<Value>(&b[id]) else {
            return Ok(None);
        };
        if !self.every_answer {
            let Some(index) = self.ids.iter().position(|candidate| *candidate == id) else {
                return Ok(None);
            };
            self.answered[index] = true;
        }
        // An error answer has no result: nothing to filter.
        let Some(result) = single(b, &message, "result", "the answer's result appears twice")? else {
            return Ok(None);
        };
        // On a GET stream, an answer is a tools/list answer by its shape.
        let Some(result) = members(b, result) else {
            return if self.every_answer {
                Ok(None)
            } else {
                Err(Unfilterable("the tools/list result is not an object"))
            };
        };
        let Some(tools) = single(b, &result, "tools", "the tools/list result names tools twice")? else {
            return Ok(None);
        };
        let Some(each) = elements(b, tools.clone()) else {
            return if self.every_answer {
                Ok(None)
            } else {
                Err(Unfilterable("the tools/list result's tools is not a list"))
            };
        };
        let kept: Vec<&Range<usize>> = each
            .iter()
            .filter(|tool| tool_name(b, (*tool).clone()).is_some_and(|name| (self.may_call)(&name)))
            .collect();
        if kept.len() == each.len() {
            return Ok(None);
        }
        let mut replacement = Vec::with_capacity(tools.len());
        replacement.push(b'[');
        for (i, tool) in kept.into_iter().enumerate() {
            if i > 0 {
                replacement.push(b',');
            }
            replacement.extend_from_slice(&b[tool.clone()]);
        }
        replacement.push(b']');
        Ok(Some((tools, replacement)))
    }

    /// Filters an SSE answer chunk by chunk.
    pub fn sse(self) -> SseFilter {
        SseFilter {
            filter: self,
            buf: Vec::new(),
            line_start: 0,
            pos: 0,
            through: false,
        }
    }
}

/// The value of the one member `key` of an object; `Err` when it appears
/// more than once (parsers that keep the first and the last would disagree).
fn single(
    b: &[u8],
    members: &[(Range<usize>, Range<usize>)],
    key: &str,
    twice: &'static str,
) -> Result<Option<Range<usize>>, Unfilterable> {
    let mut found = members.iter().filter(|(k, _)| key_is(b, k.clone(), key));
    let first = found.next().map(|(_, v)| v.clone());
    if found.next().is_some() {
        return Err(Unfilterable(twice));
    }
    Ok(first)
}

fn key_is(b: &[u8], key: Range<usize>, expected: &str) -> bool {
    let raw = &b[key];
    // `"name"`: compared as is unless escaped.
    if !raw.contains(&b'\\') {
        return raw.len() == expected.len() + 2 && &raw[1..raw.len() - 1] == expected.as_bytes();
    }
    serde_json::from_slice::<String>(raw).is_ok_and(|k| k == expected)
}

/// A tool's `name` when it has exactly one that is a string.
fn tool_name(b: &[u8], tool: Range<usize>) -> Option<String> {
    let members = members(b, tool)?;
    let name = single(b, &members, "name", "").ok()??;
    serde_json::from_slice::<String>(&b[name]).ok()
}

/// A position in a JSON text already known to be valid (the parsers here
/// only find spans; every index is checked, so nothing panics on any input).
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Past a string starting at `at` (its opening quote).
    fn skip_string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            match self.b.get(self.at)? {
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                _ => self.at += 1,
            }
        }
    }

    /// Past the next value; its span. Nesting is counted, not recursed.
    fn skip_value(&mut self) -> Option<Range<usize>> {
        self.ws();
        let start = self.at;
        match self.b.get(self.at)? {
            b'"' => self.skip_string()?,
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.b.get(self.at)? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => depth -= 1,
                        _ => {}
                    }
                    self.at += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            _ => {
                while self
                    .b
                    .get(self.at)
                    .is_some_and(|c| !matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                {
                    self.at += 1;
                }
            }
        }
        (self.at > start).then_some(start..self.at)
    }
}

/// The (key, value) spans of the object at `span`; `None` when it is not an
/// object.
fn members(b: &[u8], span: Range<usize>) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    let mut cursor = Cursor { b, at: span.start };
    if !cursor.eat(b'{') {
        return None;
    }
    let mut members = Vec::new();
    if cursor.eat(b'}') {
        return Some(members);
    }
    loop {
        cursor.ws();
        if cursor.b.get(cursor.at) != Some(&b'"') {
            return None;
        }
        let key = cursor.skip_value()?;
        if !cursor.eat(b':') {
            return None;
        }
        let value = cursor.skip_value()?;
        members.push((key, value));
        if cursor.eat(b',') {
            continue;
        }
        return cursor.eat(b'}').then_some(members);
    }
}

/// The element spans of the array at `span`; `None` when it is not one.
fn elements(b: &[u8], span: Range<usize>) -> Option<Vec<Range<usize>>> {
    let mut cursor = Cursor { b, at: span.start };
    if !cursor.eat(b'[') {
        return None;
    }
    let mut elements = Vec::new();
    if cursor.eat(b']') {
        return Some(elements);
    }
    loop {
        elements.push(cursor.skip_value()?);
        if cursor.eat(b',') {
            continue;
        }
        return cursor.eat(b']').then_some(elements);
    }
}

/// An SSE answer being filtered: holds the event being received until it is
/// whole (at most [`MAX_TOOLS_LIST_ANSWER`] bytes).
pub struct SseFilter {
    filter: ToolsListFilter,
    /// The bytes of the event not yet whole.
    buf: Vec<u8>,
    /// Where the line being read starts in `buf`.
    line_start: usize,
    /// How far `buf` has been scanned.
    pos: usize,
    /// Every call is answered: the rest passes through unread.
    through: bool,
}

impl SseFilter {
    /// Whether every call is answered: the rest of the stream needs no look.
    pub fn passes_through(&self) -> bool {
        self.through
    }

    /// Takes the next chunk of the stream; returns what can be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Unfilterable> {
        if self.through {
            return Ok(chunk.to_vec());
        }
        self.buf.extend_from_slice(chunk);
        let out = self.drain(false)?;
        if !self.through && self.buf.len() > MAX_TOOLS_LIST_ANSWER {
            return Err(Unfilterable("an event of the tools/list answer is too large to filter"));
        }
        Ok(out)
    }

    /// The stream ended: what is left (an event without its blank line is
    /// filtered too, for a client that would read it).
    pub fn finish(&mut self) -> Result<Vec<u8>, Unfilterable> {
        if self.through {
            return Ok(Vec::new());
        }
        let mut out = self.drain(true)?;
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            out.extend_from_slice(&self.event(&rest)?);
        }
        Ok(out)
    }

    /// An SSE event with a JSON-RPC error for the call left unanswered
    /// (sent in place of an answer that could not be filtered).
    pub fn error_event(&self, why: Unfilterable) -> Vec<u8> {
        let error = serde_json::json!({
            "jsonrpc": "2.0",
            "id": self.filter.pending_id(),
            "error": { "code": -32603, "message": why.0 },
        });
        format!("event: message\ndata: {error}\n\n").into_bytes()
    }

    /// Sends every whole event in `buf`.
    fn drain(&mut self, at_end: bool) -> Result<Vec<u8>, Unfilterable> {
        let mut out = Vec::new();
        while let Some(end) = self.event_end(at_end) {
            let event: Vec<u8> = self.buf.drain(..end).collect();
            self.line_start = 0;
            self.pos = 0;
            out.extend_from_slice(&self.event(&event)?);
            if self.filter.all_answered() {
                self.through = true;
                out.append(&mut self.buf);
                break;
            }
        }
        Ok(out)
    }

    /// Where the first event in `buf` ends (past its blank line), scanning
    /// on from where the last call stopped.
    fn event_end(&mut self, at_end: bool) -> Option<usize> {
        let b = &self.buf;
        while self.pos < b.len() {
            match b[self.pos] {
                b'\n' => {
                    let blank = self.pos == self.line_start;
                    self.pos += 1;
                    if blank {
                        return Some(self.pos);
                    }
                    self.line_start = self.pos;
                }
                b'\r' => {
                    // A CR at the end of the chunk may be the first half of CRLF.
                    if self.pos + 1 == b.len() && !at_end {
                        return None;
                    }
                    let blank = self.pos == self.line_start;
                    self.pos += 1;
                    if b.get(self.pos) == Some(&b'\n') {
                        self.pos += 1;
                    }
                    if blank {
                        return Some(self.pos);
                    }
                    self.line_start = self.pos;
                }
                _ => self.pos += 1,
            }
        }
        None
    }

    /// One whole event: as it came, or with its `data` rewritten.
    fn event(&mut self, raw: &[u8]) -> Result<Vec<u8>, Unfilterable> {
        let lines = split_lines(raw);
        let mut data: Option<Vec<u8>> = None;
        let mut first_data = None;
        for (i, (line, _)) in lines.iter().enumerate() {
            let (name, value) = field(line);
            if name == b"data" {
                let data = data.get_or_insert_with(Vec::new);
                if first_data.is_some() {
                    data.push(b'\n');
                }
                first_data.get_or_insert(i);
                data.extend_from_slice(value);
            }
        }
        let (Some(data), Some(first_data)) = (data, first_data) else {
            return Ok(raw.to_vec());
        };
        // Data that is not JSON is no JSON-RPC answer: passed as it is.
        if serde_json::from_slice::<IgnoredAny>(&data).is_err() {
            return Ok(raw.to_vec());
        }
        let Some(rewritten) = self.filter.rewrite_valid(&data)? else {
            return Ok(raw.to_vec());
        };
        let end = lines[first_data].1;
        let mut out = Vec::with_capacity(raw.len());
        for (i, (line, line_end)) in lines.iter().enumerate() {
            if i == first_data {
                for piece in rewritten.split(|c| *c == b'\n') {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(piece);
                    out.extend_from_slice(end);
                }
            } else if field(line).0 != b"data" {
                out.extend_from_slice(line);
                out.extend_from_slice(line_end);
            }
        }
        // The blank line (or nothing, for an event cut short by the end).
        let consumed: usize = lines.iter().map(|(l, e)| l.len() + e.len()).sum();
        out.extend_from_slice(&raw[consumed..]);
        Ok(out)
    }
}

/// The non-blank lines of an event, each with its line end (`\r\n`, `\n`,
/// `\r`, or empty for a last line without one); the blank line is left out.
fn split_lines(raw: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < raw.len() {
        let end = match raw[i] {
            b'\n' => i + 1,
            b'\r' if raw.get(i + 1) == Some(&b'\n') => i + 2,
            b'\r' => i + 1,
            _ => {
                i += 1;
                continue;
            }
        };
        if i == start {
            return lines;
        }
        lines.push((&raw[start..i], &raw[i..end]));
        start = end;
        i = end;
    }
    if start < raw.len() {
        lines.push((&raw[start..], &raw[raw.len()..]));
    }
    lines
}

/// An SSE line's field name and value (one leading space of the value
/// dropped); a comment line has an empty name.
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    if line.first() == Some(&b':') {
        return (b"", line);
    }
    match line.iter().position(|c| *c == b':') {
        Some(colon) => {
            let value = &line[colon + 1..];
            (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, b""),
    }
}

#[cfg(test)]
mod tests;
