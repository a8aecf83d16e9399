//! What the audit trail records of a JSON-RPC request body: the method and
//! the tool, prompt or resource it names (`params.name` for `tools/call`
//! and `prompts/get`, `params.uri` for `resources/read` and the resource
//! subscriptions). Only those fields are read: strings are borrowed from
//! the body unless escaped, everything else is skipped, not built.
//!
//! A batch (a JSON array) is recorded by its first request's method and
//! name, with its length. A body that is not JSON-RPC is recorded without
//! a method.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The method and name of a JSON-RPC request, and the batch length.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CallSummary {
    pub method: Option<String>,
    pub name: Option<String>,
    /// `Some(n)`: the body was a batch of `n` messages.
    pub batch: Option<usize>,
}

#[derive(Deserialize)]
struct Call<'a> {
    #[serde(borrow, default)]
    method: Option<Text<'a>>,
    #[serde(borrow, default)]
    params: Option<Named<'a>>,
}

#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// `params.name` or `params.uri`, when `params` is an object (positional
/// params and other values are skipped).
#[derive(Default)]
struct Named<'a> {
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Key {
    Name,
    Uri,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Named<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NamedVisitor(std::marker::PhantomData))
    }
}

struct NamedVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for NamedVisitor<'a> {
    type Value = Named<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<'a>, A::Error> {
        let mut named = Named::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                // A name that is not a string is not recorded.
                Key::Name => named.name = map.next_value::<Option<Loose<'a>>>()?.and_then(|l| l.0),
                Key::Uri => named.uri = map.next_value::<Option<Loose<'a>>>()?.and_then(|l| l.0),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(named)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Named<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Named::default())
    }
}

/// A string (borrowed when it can be), or any other value, skipped.
struct Loose<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LooseVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
            type Value = Loose<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Loose<'a>, E> {
                Ok(Loose(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose<'a>, E> {
                Ok(Loose(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Loose<'a>, E> {
                Ok(Loose(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose(None))
            }
        }
        deserializer.deserialize_any(LooseVisitor(std::marker::PhantomData))
    }
}

/// The longest method or name recorded (a client chooses them).
const MAX_RECORDED: usize = 200;

fn recorded(text: Cow<'_, str>) -> String {
    text.chars().take(MAX_RECORDED).collect()
}

impl Call<'_> {
    fn summary(self, batch: Option<usize>) -> CallSummary {
        let (name, uri) = match self.params {
            Some(named) => (named.name, named.uri),
            None => (None, None),
        };
        CallSummary {
            method: self.method.map(|m| recorded(m.0)),
            name: name.or(uri).map(recorded),
            batch,
        }
    }
}

/// Reads the method and name of a JSON-RPC body (see the module docs).
pub fn summarize(body: &[u8]) -> CallSummary {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') => serde_json::from_slice::<Call<'_>>(body)
            .map(|call| call.summary(None))
            .unwrap_or_default(),
        Some(b'[') => match serde_json::from_slice::<Vec<Call<'_>>>(body) {
            Ok(calls) => {
                let count = calls.len();
                match calls.into_iter().next() {
                    Some(call) => call.summary(Some(count)),
                    None => CallSummary {
                        batch: Some(0),
                        ..CallSummary::default()
                    },
                }
            }
            Err(_) => CallSummary::default(),
        },
        _ => CallSummary::default(),
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
}
