//! Client authentication for the token, revocation and introspection
//! endpoints (RFC 6749 §2.3.1), and their form parsing.

use std::borrow::Cow;

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::SecretString;
use url::form_urlencoded;

use crate::error::Error;
use crate::oauth::client_assertion::{claimed_subject, JWT_BEARER_ASSERTION_TYPE};
use crate::proxy::ClientCredentials;

/// Whether the request body is form-encoded (media types are
/// case-insensitive; parameters such as `charset` may follow).
fn is_form(req: &HttpRequest) -> bool {
    const FORM: &str = "application/x-www-form-urlencoded";
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().get(..FORM.len()))
        .is_some_and(|media_type| media_type.eq_ignore_ascii_case(FORM))
}

/// More parameters than any of these endpoints defines (a token request has
/// at most eight): a body with more is refused rather than scanned.
const MAX_FORM_PARAMS: usize = 32;

/// The parameters of a form-encoded request body (RFC 6749 §3.2, RFC 7009
/// §2.1, RFC 7662 §2.1); `endpoint` names it in the error.
pub fn form_params<'a>(req: &HttpRequest, body: &'a [u8], endpoint: &str) -> Result<FormParams<'a>, Error> {
    if !is_form(req) {
        return Err(Error::invalid_request(format!(
            "{endpoint} requests must be application/x-www-form-urlencoded"
        )));
    }
    parse_form(body)
}

/// The `Authorization: Bearer` token of a request, if any.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    // UTF-8 validation is vectorized, unlike `to_str`'s byte-by-byte check;
    // a token that is not plain ASCII fails verification anyway.
    let value = std::str::from_utf8(req.headers().get(header::AUTHORIZATION)?.as_bytes()).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The parameters of a form body, borrowed from it unless percent-decoding
/// changed them. A few, so a list searched in order (no hashing, no table).
#[derive(Debug, Default)]
pub struct FormParams<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl FormParams<'_> {
    /// Takes a parameter out (each is used once).
    pub fn take(&mut self, name: &str) -> Option<String> {
        let index = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.swap_remove(index).1.into_owned())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_ref())
    }
}

/// Parses a form body, refusing repeated parameters (RFC 6749 §3.1) and
/// more than [`MAX_FORM_PARAMS`].
fn parse_form(body: &[u8]) -> Result<FormParams<'_>, Error> {
    let mut params: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::with_capacity(8);
    for (name, value) in form_urlencoded::parse(body) {
        if params.iter().any(|(seen, _)| *seen == name) {
            return Err(Error::invalid_request(format!("parameter `{name}` is repeated")));
        }
        if params.len() == MAX_FORM_PARAMS {
            return Err(Error::invalid_request(format!(
                "more than {MAX_FORM_PARAMS} parameters"
            )));
        }
        params.push((name, value));
    }
    Ok(FormParams(params))
}

/// RFC 6749 §2.3.1: HTTP Basic with form-urlencoded id and secret, or the
/// credentials in the body, but not both; or a JWT client assertion (RFC
/// 7523 §2.2), alone.
pub fn client_credentials(req: &HttpRequest, params: &mut FormParams) -> Result<ClientCredentials, Error> {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")));
    let body_id = params.take("client_id");
    let body_secret = params.take("client_secret");
    let assertion_type = params.take("client_assertion_type");
    let assertion = params.take("client_assertion");
    if assertion_type.is_some() || assertion.is_some() {
        if basic.is_some() || body_secret.is_some() {
            return Err(Error::invalid_request("use one client authentication method, not two"));
        }
        return assertion_credentials(body_id, assertion_type, assertion);
    }
    if let Some(encoded) = basic {
        if body_secret.is_some() {
            return Err(Error::invalid_request("use one client authentication method, not two"));
        }
        let malformed = || Error::invalid_client("malformed HTTP Basic credentials", true);
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
        let unescape = |s: &str| -> String {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default()
        };
        let client_id = unescape(id);
        if body_id.as_deref().is_some_and(|b| b != client_id) {
            return Err(Error::invalid_request(
                "client_id in the body differs from the authenticated client",
            ));
        }
        return Ok(ClientCredentials {
            client_id,
            client_secret: Some(SecretString::from(unescape(secret))),
            via_basic: true,
            client_assertion: None,
        });
    }
    let client_id = body_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Error::invalid_client("client authentication is required (client_id)", false))?;
    Ok(ClientCredentials {
        client_id,
        client_secret: body_secret.map(SecretString::from),
        via_basic: false,
        client_assertion: None,
    })
}

/// RFC 7521 §4.2: `client_assertion_type` and `client_assertion`, with
/// `client_id` optional. The client is the assertion's `sub` (verified
/// later, with the client's keys); a `client_id` given must be the same.
fn assertion_credentials(
    body_id: Option<String>,
    assertion_type: Option<String>,
    assertion: Option<String>,
) -> Result<ClientCredentials, Error> {
    let (Some(assertion_type), Some(assertion)) = (assertion_type, assertion.filter(|a| !a.is_empty())) else {
        return Err(Error::invalid_request(
            "client_assertion_type and client_assertion go together",
        ));
    };
    if assertion_type != JWT_BEARER_ASSERTION_TYPE {
        return Err(Error::invalid_client(
            format!("unsupported client_assertion_type (use {JWT_BEARER_ASSERTION_TYPE})"),
            false,
        ));
    }
    let subject = claimed_subject(&assertion).map_err(|e| Error::invalid_client(e.to_string(), false))?;
    if body_id.as_deref().is_some_and(|id| !id.is_empty() && id != subject) {
        return Err(Error::invalid_request(
            "client_id in the body differs from the client assertion's sub",
        ));
    }
    Ok(ClientCredentials {
        client_id: subject,
        client_secret: None,
        via_basic: false,
        client_assertion: Some(SecretString::from(assertion)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_parameter_is_refused() {
        // RFC 6749 §3.2: parameters MUST NOT be included more than once.
        let refused = parse_form(b"grant_type=refresh_token&scope=a&scope=b").unwrap_err();
        assert!(refused.to_string().contains("`scope` is repeated"), "{refused}");
    }

    #[test]
    fn parameters_are_percent_decoded_and_each_taken_once() {
        let mut params = parse_form(b"redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&code=abc&state=a+b").unwrap();
        assert_eq!(params.get("state"), Some("a b"));
        assert_eq!(params.take("redirect_uri").as_deref(), Some("http://127.0.0.1/cb"));
        assert_eq!(params.take("redirect_uri"), None);
        assert_eq!(params.take("code").as_deref(), Some("abc"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any body: an answer (never a panic); when accepted, no name
            /// appears twice and there are at most `MAX_FORM_PARAMS`.
            #[test]
            fn any_body_parses_or_is_refused_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..600)) {
                if let Ok(params) = parse_form(&body) {
                    prop_assert!(params.0.len() <= MAX_FORM_PARAMS);
                    for (i, (name, _)) in params.0.iter().enumerate() {
                        prop_assert!(params.0[..i].iter().all(|(seen, _)| seen != name), "`{name}` twice");
                    }
                }
            }

            /// Distinct names with any values, encoded as a browser or client
            /// library would, come back exactly as they were sent.
            #[test]
            fn distinct_parameters_round_trip_through_their_encoding(
                pairs in proptest::collection::btree_map(".{1,12}", ".{0,40}", 0..MAX_FORM_PARAMS),
            ) {
                let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
                let mut params = parse_form(body.as_bytes()).unwrap();
                for (name, value) in &pairs {
                    let taken = params.take(name);
                    prop_assert_eq!(taken.as_deref(), Some(value.as_str()));
                }
            }

            /// RFC 6749 §3.1: a repeated parameter is refused, however each
            /// copy is percent-encoded (`scope` and `sc%6Fpe` are one name).
            #[test]
            fn a_repeated_parameter_is_refused_in_any_encoding(
                name in "[a-z_]{1,12}",
                encode_mask in any::<u16>(),
                first in "[a-z0-9 ]{0,10}",
                second in "[a-z0-9 ]{0,10}",
            ) {
                let encoded: String = name
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if encode_mask & (1 << (i % 16)) != 0 { format!("%{:02X}", c as u32) } else { c.to_string() })
                    .collect();
                let body = format!("{name}={first}&other=1&{encoded}={second}");
                prop_assert!(parse_form(body.as_bytes()).is_err(), "{body} accepted");
            }
        }
    }
}
