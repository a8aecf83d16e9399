//! What the gateway reads of a JSON-RPC request body: each message's
//! method, id, the tool, prompt or resource it names (`params.name`,
//! `params.uri`, or for a completion `params.ref`) and the protocol version
//! it declares
//! (`params._meta["io.modelcontextprotocol/protocolVersion"]`, 2026-07-28).
//! Only those fields are read: strings are borrowed from the body unless
//! escaped, everything else is skipped, not built.
//!
//! Keys are read as JavaScript's `JSON.parse` reads them: unescaped, and the
//! last of duplicate keys counts, so the gateway sees the same name the MCP
//! server acts on. A batch (a JSON array) is read element by element, the
//! first [`MAX_BATCH`] of them; the rest are counted, not read.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The most elements of a batch the gateway reads (a longer batch is
/// refused when anything has to be checked).
pub const MAX_BATCH: usize = 100;

/// The `_meta` key carrying a 2026-07-28 request's protocol version.
pub const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// The method and name of a JSON-RPC request, and the batch length: what
/// the audit trail records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CallSummary {
    pub method: Option<String>,
    pub name: Option<String>,
    /// `Some(n)`: the body was a batch of `n` messages.
    pub batch: Option<usize>,
}

/// A member of `params` the gateway reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Param<'a> {
    /// Not there (or `params` is not an object).
    #[default]
    Absent,
    Text(Cow<'a, str>),
    /// There, and not a string (`null`, a number, an array...).
    Other,
}

impl<'a> Param<'a> {
    pub fn text(&self) -> Option<&str> {
        match self {
            Param::Text(text) => Some(text),
            _ => None,
        }
    }
}

/// A JSON-RPC id: echoed in an error answer when it is a string or number.
#[derive(Debug, Default, Clone, PartialEq)]
pub enum Id<'a> {
    #[default]
    None,
    Number(serde_json::Number),
    Text(Cow<'a, str>),
}

impl Id<'_> {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Id::None => serde_json::Value::Null,
            Id::Number(n) => serde_json::Value::Number(n.clone()),
            Id::Text(t) => serde_json::Value::String(t.to_string()),
        }
    }
}

/// One JSON-RPC message as the gateway reads it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Call<'a> {
    pub method: Option<Cow<'a, str>>,
    pub id: Id<'a>,
    /// `params.name`
    pub name: Param<'a>,
    /// `params.uri`
    pub uri: Param<'a>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`
    pub version: Param<'a>,
    /// `params.ref`
    pub reference: Reference<'a>,
    /// `params` is there but not an object (positional, or a scalar).
    pub params_not_an_object: bool,
}

/// `params.ref` of `completion/complete`: the prompt (`ref/prompt`, by
/// `name`) or resource template (`ref/resource`, by `uri`) whose arguments
/// are completed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reference<'a> {
    /// `type`; [`Param::Other`] too when `ref` is not an object.
    pub kind: Param<'a>,
    pub name: Param<'a>,
    pub uri: Param<'a>,
}

/// What a completion whose `ref` the gateway cannot tell names: nothing it
/// can allow.
static UNREADABLE_TARGET: Param<'static> = Param::Other;

impl<'a> Call<'a> {
    /// What the method is about, for the methods the gateway's policy knows:
    /// the tool (`tools/call`) or prompt (`prompts/get`) by `params.name`,
    /// the resource (`resources/read`, `resources/subscribe`,
    /// `resources/unsubscribe`) by `params.uri`, and the prompt or resource
    /// a completion (`completion/complete`) is for, by `params.ref`, since
    /// completing a prompt's arguments is using it. `None` for other
    /// methods. A call of these methods whose `params` is not an object
    /// names nothing the gateway can allow ([`Param::Other`]).
    pub fn target(&self) -> Option<&Param<'a>> {
        let target = match self.method.as_deref()? {
            "tools/call" | "prompts/get" => &self.name,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => &self.uri,
            "completion/complete" => match self.reference.kind.text() {
                Some("ref/prompt") => &self.reference.name,
                Some("ref/resource") => &self.reference.uri,
                _ => &UNREADABLE_TARGET,
            },
            _ => return None,
        };
        Some(if self.params_not_an_object {
            &UNREADABLE_TARGET
        } else {
            target
        })
    }
}

/// A request body as the gateway reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// One JSON object.
    Single(Call<'a>),
    /// A JSON array: its first [`MAX_BATCH`] elements, and its length.
    Batch { calls: Vec<Call<'a>>, count: usize },
    /// Not JSON the gateway can read, or JSON that is neither an object nor
    /// an array.
    Unreadable,
}

impl<'a> Message<'a> {
    /// Every message read (a batch's first [`MAX_BATCH`]).
    pub fn calls(&self) -> &[Call<'a>] {
        match self {
            Message::Single(call) => std::slice::from_ref(call),
            Message::Batch { calls, .. } => calls,
            Message::Unreadable => &[],
        }
    }

    /// A batch longer than the gateway reads.
    pub fn too_long(&self) -> bool {
        matches!(self, Message::Batch { count, .. } if *count > MAX_BATCH)
    }

    /// The id to echo in an error answer: a single request's.
    pub fn id(&self) -> serde_json::Value {
        match self {
            Message::Single(call) => call.id.to_json(),
            _ => serde_json::Value::Null,
        }
    }

    /// What the audit trail records: a batch by its first request.
    pub fn summary(&self) -> CallSummary {
        let (first, batch) = match self {
            Message::Single(call) => (Some(call), None),
            Message::Batch { calls, count } => (calls.first(), Some(*count)),
            Message::Unreadable => (None, None),
        };
        let Some(call) = first else {
            return CallSummary {
                batch,
                ..CallSummary::default()
            };
        };
        let name = call
            .target()
            .and_then(Param::text)
            .or(call.name.text())
            .or(call.uri.text());
        CallSummary {
            method: call.method.as_deref().map(recorded),
            name: name.map(recorded),
            batch,
        }
    }
}

/// Reads a request body (see the module docs).
pub fn read(body: &[u8]) -> Message<'_> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') => serde_json::from_slice::<Call<'_>>(body)
            .map(Message::Single)
            .unwrap_or(Message::Unreadable),
        Some(b'[') => serde_json::from_slice::<Batch<'_>>(body)
            .map(|b| Message::Batch {
                calls: b.calls,
                count: b.count,
            })
            .unwrap_or(Message::Unreadable),
        _ => Message::Unreadable,
    }
}

/// Reads the method and name of a JSON-RPC body for the audit trail.
pub fn summarize(body: &[u8]) -> CallSummary {
    read(body).summary()
}

/// The longest method or name recorded (a client chooses them).
const MAX_RECORDED: usize = 200;

fn recorded(text: &str) -> String {
    text.chars().take(MAX_RECORDED).collect()
}

// ---- Deserialization -------------------------------------------------

/// Implements the visits of values that are not the expected kind: the
/// value is consumed and `$none` returned.
macro_rules! skip_other_values {
    ($value:ty, $none:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok($none)
        }
        fn visit_none<E: de::Error>(self) -> Result<$value, E> {
            Ok($none)
        }
    };
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum CallKey {
    Method,
    Id,
    Params,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ParamsKey {
    Name,
    Uri,
    Ref,
    #[serde(rename = "_meta")]
    Meta,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier)]
enum MetaKey {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion")]
    Version,
    #[serde(other)]
    Other,
}

struct CallVisitor;

impl<'de> Visitor<'de> for CallVisitor {
    type Value = Call<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }

    skip_other_values!(Call<'de>, Call::default());

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Call<'de>, A::Error> {
        skip_seq(seq).map(|()| Call::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Call<'de>, A::Error> {
        let mut call = Call::default();
        // The last of duplicate keys counts (`JSON.parse`): each overwrites.
        while let Some(key) = map.next_key::<CallKey>()? {
            match key {
                CallKey::Method => call.method = map.next_value::<Param<'de>>()?.into_text(),
                CallKey::Id => call.id = map.next_value::<Id<'de>>()?,
                CallKey::Params => {
                    let params = map.next_value::<Params<'de>>()?;
                    call.name = params.name;
                    call.uri = params.uri;
                    call.version = params.version;
                    call.reference = params.reference;
                    call.params_not_an_object = params.not_an_object;
                }
                CallKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(call)
    }
}

impl<'de> Deserialize<'de> for Call<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CallVisitor)
    }
}

impl<'a> Param<'a> {
    fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            Param::Text(text) => Some(text),
            _ => None,
        }
    }
}

struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = Param<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Param<'de>, E> {
        Ok(Param::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Param<'de>, E> {
        Ok(Param::Text(Cow::Owned(v.to_string())))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Param<'de>, E> {
        Ok(Param::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Param<'de>, E> {
        Ok(Param::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Param<'de>, E> {
        Ok(Param::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Param<'de>, E> {
        Ok(Param::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Param<'de>, E> {
        Ok(Param::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Param<'de>, A::Error> {
        skip_seq(seq).map(|()| Param::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Param<'de>, A::Error> {
        skip_map(map).map(|()| Param::Other)
    }
}

impl<'de> Deserialize<'de> for Param<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParamVisitor)
    }
}

struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = Id<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC id")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Id<'de>, E> {
        Ok(Id::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Id<'de>, E> {
        Ok(Id::Text(Cow::Owned(v.to_string())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id<'de>, E> {
        Ok(Id::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id<'de>, E> {
        Ok(Id::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Id<'de>, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Id::None, Id::Number))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Id<'de>, E> {
        Ok(Id::None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Id<'de>, E> {
        Ok(Id::None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Id<'de>, A::Error> {
        skip_seq(seq).map(|()| Id::None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Id<'de>, A::Error> {
        skip_map(map).map(|()| Id::None)
    }
}

impl<'de> Deserialize<'de> for Id<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IdVisitor)
    }
}

/// The members of `params` the gateway reads (all absent when `params` is
/// not an object).
#[derive(Default)]
struct Params<'a> {
    name: Param<'a>,
    uri: Param<'a>,
    version: Param<'a>,
    reference: Reference<'a>,
    /// Positional (an array) or a scalar: names nothing the gateway reads.
    not_an_object: bool,
}

impl Params<'_> {
    fn not_an_object() -> Self {
        Params {
            not_an_object: true,
            ..Params::default()
        }
    }
}

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Params<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }

    skip_other_values!(Params<'de>, Params::not_an_object());

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Params<'de>, A::Error> {
        skip_seq(seq).map(|()| Params::not_an_object())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params<'de>, A::Error> {
        let mut params = Params::default();
        while let Some(key) = map.next_key::<ParamsKey>()? {
            match key {
                ParamsKey::Name => params.name = map.next_value()?,
                ParamsKey::Uri => params.uri = map.next_value()?,
                ParamsKey::Ref => params.reference = map.next_value()?,
                ParamsKey::Meta => params.version = map.next_value::<Meta<'de>>()?.0,
                ParamsKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(params)
    }
}

impl<'de> Deserialize<'de> for Params<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParamsVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ReferenceKey {
    Type,
    Name,
    Uri,
    #[serde(other)]
    Other,
}

struct ReferenceVisitor;

impl<'de> Visitor<'de> for ReferenceVisitor {
    type Value = Reference<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a completion reference")
    }

    skip_other_values!(Reference<'de>, Reference::not_an_object());

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Reference<'de>, A::Error> {
        skip_seq(seq).map(|()| Reference::not_an_object())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reference<'de>, A::Error> {
        let mut reference = Reference::default();
        while let Some(key) = map.next_key::<ReferenceKey>()? {
            match key {
                ReferenceKey::Type => reference.kind = map.next_value()?,
                ReferenceKey::Name => reference.name = map.next_value()?,
                ReferenceKey::Uri => reference.uri = map.next_value()?,
                ReferenceKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(reference)
    }
}

impl Reference<'_> {
    fn not_an_object() -> Self {
        Reference {
            kind: Param::Other,
            ..Reference::default()
        }
    }
}

impl<'de> Deserialize<'de> for Reference<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ReferenceVisitor)
    }
}

/// `params._meta`'s protocol version.
struct Meta<'a>(Param<'a>);

struct MetaVisitor;

impl<'de> Visitor<'de> for MetaVisitor {
    type Value = Meta<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("_meta")
    }

    skip_other_values!(Meta<'de>, Meta(Param::Absent));

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Meta<'de>, A::Error> {
        skip_seq(seq).map(|()| Meta(Param::Absent))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta<'de>, A::Error> {
        let mut version = Param::Absent;
        while let Some(key) = map.next_key::<MetaKey>()? {
            match key {
                MetaKey::Version => version = map.next_value()?,
                MetaKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Meta(version))
    }
}

impl<'de> Deserialize<'de> for Meta<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MetaVisitor)
    }
}

/// A batch: its first [`MAX_BATCH`] messages, and its length.
struct Batch<'a> {
    calls: Vec<Call<'a>>,
    count: usize,
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Batch<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC batch")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch<'de>, A::Error> {
        let mut calls = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH));
        while calls.len() < MAX_BATCH {
            match seq.next_element::<Call<'de>>()? {
                Some(call) => calls.push(call),
                None => {
                    let count = calls.len();
                    return Ok(Batch { calls, count });
                }
            }
        }
        let mut count = calls.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(Batch { calls, count })
    }
}

impl<'de> Deserialize<'de> for Batch<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(BatchVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(body: &str) -> (Option<String>, Option<String>, Option<usize>) {
        let s = summarize(body.as_bytes());
        (s.method, s.name, s.batch)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn the_tool_prompt_or_resource_a_request_names_is_read() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"not this","n":[1,{"a":2}]},"name":"search"}}"#,
                (some("tools/call"), some("search"), None),
            ),
            (
                r#"{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"summarize"}}"#,
                (some("prompts/get"), some("summarize"), None),
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///a%20b.txt"}}"#,
                (some("resources/read"), some("file:///a%20b.txt"), None),
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#,
                (some("ping"), None, None),
            ),
            // Escaped strings are unescaped (owned, not borrowed).
            (
                r#"{"method":"tools\/call","params":{"name":"caf\u00e9"}}"#,
                (some("tools/call"), some("café"), None),
            ),
            // Positional params, a name that is no string.
            (r#"{"method":"x","params":[1,2]}"#, (some("x"), None, None)),
            (r#"{"method":"x","params":{"name":7}}"#, (some("x"), None, None)),
            (r#"{"method":"x","params":null}"#, (some("x"), None, None)),
        ];
        for (body, expected) in cases {
            assert_eq!(summary(body), expected, "{body}");
        }
    }

    #[test]
    fn a_completion_names_the_prompt_or_resource_of_its_reference() {
        let target = |body: &str| -> Option<Param<'static>> {
            let message = read(body.as_bytes());
            message.calls()[0].target().map(|param| match param {
                Param::Text(text) => Param::Text(Cow::Owned(text.to_string())),
                Param::Absent => Param::Absent,
                Param::Other => Param::Other,
            })
        };
        let prompt = r#"{"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"deploy"},"argument":{"name":"env","value":"p"}}}"#;
        assert_eq!(target(prompt), Some(Param::Text("deploy".into())));
        assert_eq!(summary(prompt), (some("completion/complete"), some("deploy"), None));
        let resource =
            r#"{"method":"completion/complete","params":{"ref":{"uri":"file:///{path}","type":"ref/resource"}}}"#;
        assert_eq!(target(resource), Some(Param::Text("file:///{path}".into())));
        // A reference the gateway cannot tell apart names nothing it can allow.
        for unreadable in [
            r#"{"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"x"}}}"#,
            r#"{"method":"completion/complete","params":{"ref":"deploy"}}"#,
            r#"{"method":"completion/complete","params":{}}"#,
        ] {
            assert_eq!(target(unreadable), Some(Param::Other), "{unreadable}");
        }
        let no_name = r#"{"method":"completion/complete","params":{"ref":{"type":"ref/prompt"}}}"#;
        assert_eq!(target(no_name), Some(Param::Absent));
        // Positional or scalar params name nothing the gateway can allow.
        for positional in [
            r#"{"method":"tools/call","params":["delete_repo",{}]}"#,
            r#"{"method":"resources/read","params":"file:///secret/a"}"#,
            r#"{"method":"prompts/get","params":null}"#,
        ] {
            assert_eq!(target(positional), Some(Param::Other), "{positional}");
        }
        // Absent params: no name (the MCP server refuses the call).
        assert_eq!(target(r#"{"method":"tools/call"}"#), Some(Param::Absent));
    }

    #[test]
    fn a_batch_is_recorded_by_its_first_request_and_its_length() {
        let body = r#" [{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
        assert_eq!(summary(body), (some("tools/call"), some("a"), Some(2)));
        assert_eq!(summary("[]"), (None, None, Some(0)));
    }

    #[test]
    fn a_body_that_is_not_json_rpc_has_no_method() {
        for body in ["", "not json", "{\"method\":", "42", "{\"method\":5}"] {
            assert_eq!(summary(body), (None, None, None), "{body}");
        }
    }

    #[test]
    fn a_long_name_is_cut() {
        let body = format!(
            r#"{{"method":"tools/call","params":{{"name":"{}"}}}}"#,
            "n".repeat(1000)
        );
        assert_eq!(summarize(body.as_bytes()).name.map(|n| n.len()), Some(MAX_RECORDED));
    }

    #[test]
    fn every_element_of_a_batch_is_read_up_to_the_cap() {
        let body = r#"[{"id":1,"method":"tools/call","params":{"name":"a"}},7,{"id":"x","method":"resources/read","params":{"uri":"file:///b"}}]"#;
        let message = read(body.as_bytes());
        let calls = message.calls();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0].target(), Some(&Param::Text("a".into())));
        assert_eq!(calls[1], Call::default());
        assert_eq!(calls[2].target(), Some(&Param::Text("file:///b".into())));
        assert_eq!(message.id(), serde_json::Value::Null);
        assert!(!message.too_long());
        let long = format!("[{}]", vec![r#"{"method":"ping"}"#; MAX_BATCH + 5].join(","));
        let message = read(long.as_bytes());
        assert_eq!(message.calls().len(), MAX_BATCH);
        assert!(message.too_long());
        assert_eq!(message.summary().batch, Some(MAX_BATCH + 5));
    }

    #[test]
    fn the_last_of_duplicate_keys_counts_as_in_json_parse() {
        let body = r#"{"method":"ping","method":"tools/call","params":{"name":"a","name":"delete_all"},"params":{"name":"b","name":"delete_repo"}}"#;
        let message = read(body.as_bytes());
        let call = &message.calls()[0];
        assert_eq!(call.method.as_deref(), Some("tools/call"));
        assert_eq!(call.target(), Some(&Param::Text("delete_repo".into())));
        // An escaped key is the key it spells.
        let body = r#"{"m\u0065thod":"tools/call","params":{"n\u0061me":"delete_repo"}}"#;
        let call = &read(body.as_bytes()).calls()[0].clone();
        assert_eq!(call.target(), Some(&Param::Text("delete_repo".into())));
    }

    #[test]
    fn the_id_a_name_that_is_no_string_and_the_protocol_version_are_read() {
        let body = r#"{"id":"abc","method":"tools/call","params":{"name":["x"],"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let message = read(body.as_bytes());
        assert_eq!(message.id(), serde_json::json!("abc"));
        let call = &message.calls()[0];
        assert_eq!(call.target(), Some(&Param::Other));
        assert_eq!(call.version, Param::Text("2026-07-28".into()));
        assert_eq!(read(br#"{"id":7}"#).id(), serde_json::json!(7));
        assert_eq!(read(br#"{"id":{"a":1}}"#).id(), serde_json::Value::Null);
        // Unreadable: what JSON.parse would take but serde_json does not.
        assert_eq!(
            read(br#"{"method":"x","params":{"name":"\ud800"}}"#),
            Message::Unreadable
        );
    }
}
