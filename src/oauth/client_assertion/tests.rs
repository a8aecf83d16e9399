use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

#[path = "test_keys.rs"]
mod test_keys;
use test_keys::{b64, TestKey};

const CLIENT: &str = "https://chatgpt.com/oauth/abc/client.json";
const TOKEN_ENDPOINT: &str = "https://proxy.example/token";
const ISSUER: &str = "https://proxy.example";
const NOW: u64 = 1_800_000_000;

fn set(keys: &[&TestKey]) -> JwkSet {
    serde_json::from_value(json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})).unwrap()
}

fn claims() -> Value {
    json!({
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": TOKEN_ENDPOINT,
        "exp": NOW + 60,
        "iat": NOW,
        "jti": "jti-1",
    })
}

fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key.signing).unwrap()
}

fn expected() -> Expected<'static> {
    Expected {
        client_id: CLIENT,
        audiences: &[TOKEN_ENDPOINT, ISSUER],
        now: NOW,
    }
}

/// A JWT with this header and claims, and `signature` as its signature.
fn forged(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

#[test]
fn an_assertion_signed_with_each_allowed_algorithm_verifies() {
    for key in [
        TestKey::es256("k1"),
        TestKey::ed25519("k1"),
        TestKey::rsa("k1", Algorithm::RS256),
        TestKey::rsa("k1", Algorithm::PS256),
    ] {
        let assertion = sign(&key, Some("k1"), &claims());
        let verified =
            verify(&assertion, &set(&[&key]), expected()).unwrap_or_else(|e| panic!("{:?}: {e}", key.algorithm));
        assert_eq!(
            verified,
            VerifiedAssertion {
                jti: "jti-1".into(),
                exp: NOW + 60
            }
        );
    }
}

#[test]
fn the_issuer_and_an_audience_array_holding_the_token_endpoint_are_accepted() {
    let key = TestKey::es256("k1");
    for aud in [json!(ISSUER), json!(["https://other.example", TOKEN_ENDPOINT])] {
        let mut claims = claims();
        claims["aud"] = aud;
        verify(&sign(&key, Some("k1"), &claims), &set(&[&key]), expected()).unwrap();
    }
}

#[test]
fn a_wrong_audience_is_refused() {
    let key = TestKey::es256("k1");
    for aud in [
        json!("https://other.example/token"),
        json!(["https://other.example"]),
        json!([]),
    ] {
        let mut claims = claims();
        claims["aud"] = aud;
        let refused = verify(&sign(&key, Some("k1"), &claims), &set(&[&key]), expected());
        assert_eq!(refused, Err(AssertionError::WrongAudience));
    }
}

#[test]
fn alg_none_and_hmac_signed_with_the_public_key_are_refused() {
    let key = TestKey::es256("k1");
    let keys = set(&[&key]);
    let none = forged(&json!({"alg": "none", "kid": "k1"}), &claims(), b"");
    assert_eq!(
        verify(&none, &keys, expected()),
        Err(AssertionError::AlgorithmNotAllowed("none".into()))
    );
    // The classic confusion: the verifier's public key (as its JWK JSON, or
    // its coordinates) used as an HMAC secret.
    for secret in [
        key.jwk.to_string().into_bytes(),
        key.jwk["x"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hmac = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
        assert_eq!(
            verify(&hmac, &keys, expected()),
            Err(AssertionError::AlgorithmNotAllowed("HS256".into()))
        );
    }
    for alg in ["HS384", "ES384", "RS512", "ES256K"] {
        let other = forged(&json!({"alg": alg, "kid": "k1"}), &claims(), b"x");
        assert!(
            matches!(
                verify(&other, &keys, expected()),
                Err(AssertionError::AlgorithmNotAllowed(_))
            ),
            "{alg}"
        );
    }
}

#[test]
fn a_symmetric_key_in_the_set_is_never_used() {
    // Even if a key set carries a `kty: oct` key, no allowed algorithm fits it.
    let keys: JwkSet =
        serde_json::from_value(json!({"keys": [{"kty": "oct", "k": b64(b"secret"), "kid": "k1"}]})).unwrap();
    let key = TestKey::es256("k1");
    assert_eq!(
        verify(&sign(&key, Some("k1"), &claims()), &keys, expected()),
        Err(AssertionError::KeyDoesNotFitAlgorithm("ES256"))
    );
}

#[test]
fn the_key_type_must_fit_the_algorithm() {
    let ec = TestKey::es256("k1");
    let ed = TestKey::ed25519("k1");
    // An EdDSA assertion with kid k1 when k1 is an EC key.
    assert_eq!(
        verify(&sign(&ed, Some("k1"), &claims()), &set(&[&ec]), expected()),
        Err(AssertionError::KeyDoesNotFitAlgorithm("EdDSA"))
    );
    // A key whose declared alg or use says otherwise.
    let mut declared = TestKey::es256("k1");
    declared.jwk["alg"] = json!("ES384");
    assert!(verify(&sign(&declared, Some("k1"), &claims()), &set(&[&declared]), expected()).is_err());
    let mut encryption = TestKey::es256("k1");
    encryption.jwk["use"] = json!("enc");
    assert!(verify(
        &sign(&encryption, Some("k1"), &claims()),
        &set(&[&encryption]),
        expected()
    )
    .is_err());
}

#[test]
fn a_key_is_chosen_by_kid_and_one_key_may_be_used_without_it() {
    let one = TestKey::es256("k1");
    let two = TestKey::ed25519("k2");
    let both = set(&[&one, &two]);
    verify(&sign(&two, Some("k2"), &claims()), &both, expected()).unwrap();
    assert_eq!(
        verify(&sign(&two, None, &claims()), &both, expected()),
        Err(AssertionError::KidRequired)
    );
    verify(&sign(&two, None, &claims()), &set(&[&two]), expected()).unwrap();
    let unknown = verify(&sign(&two, Some("k3"), &claims()), &both, expected()).unwrap_err();
    assert!(names_unknown_key(&unknown), "{unknown}");
    // Signed by k2's private key but naming k1 (a key of the same type).
    let other_ec = TestKey::es256("k1");
    assert_eq!(
        verify(&sign(&other_ec, Some("k1"), &claims()), &both, expected()),
        Err(AssertionError::BadSignature)
    );
}

#[test]
fn iss_and_sub_must_both_be_the_client_id() {
    let key = TestKey::es256("k1");
    for (claim, value) in [("iss", "https://evil.example/c.json"), ("sub", "someone-else")] {
        let mut claims = claims();
        claims[claim] = json!(value);
        assert_eq!(
            verify(&sign(&key, Some("k1"), &claims), &set(&[&key]), expected()),
            Err(AssertionError::NotTheClient(if claim == "iss" { "iss" } else { "sub" }))
        );
    }
}

#[test]
fn exp_is_required_not_past_and_not_too_far_ahead() {
    let key = TestKey::es256("k1");
    let keys = set(&[&key]);
    let with = |exp: Option<u64>| {
        let mut claims = claims();
        match exp {
            Some(exp) => claims["exp"] = json!(exp),
            None => {
                claims.as_object_mut().unwrap().remove("exp");
            }
        }
        verify(&sign(&key, Some("k1"), &claims), &keys, expected())
    };
    assert_eq!(with(None), Err(AssertionError::MissingClaim("exp")));
    assert_eq!(with(Some(NOW - CLOCK_LEEWAY - 1)), Err(AssertionError::Expired));
    assert!(with(Some(NOW - CLOCK_LEEWAY + 1)).is_ok(), "within the leeway");
    assert!(with(Some(NOW + MAX_ASSERTION_LIFETIME)).is_ok());
    assert_eq!(
        with(Some(NOW + MAX_ASSERTION_LIFETIME + CLOCK_LEEWAY + 1)),
        Err(AssertionError::LivesTooLong)
    );
}

#[test]
fn nbf_and_iat_in_the_future_are_refused_beyond_the_leeway() {
    let key = TestKey::es256("k1");
    for claim in ["nbf", "iat"] {
        let mut claims = claims();
        claims[claim] = json!(NOW + CLOCK_LEEWAY + 10);
        assert_eq!(
            verify(&sign(&key, Some("k1"), &claims), &set(&[&key]), expected()),
            Err(AssertionError::NotYetValid),
            "{claim}"
        );
        claims[claim] = json!(NOW + 5);
        assert!(verify(&sign(&key, Some("k1"), &claims), &set(&[&key]), expected()).is_ok());
    }
}

#[test]
fn jti_is_required() {
    let key = TestKey::es256("k1");
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove("jti");
    assert_eq!(
        verify(&sign(&key, Some("k1"), &claims), &set(&[&key]), expected()),
        Err(AssertionError::MissingClaim("jti"))
    );
}

#[test]
fn a_tampered_payload_fails_the_signature() {
    let key = TestKey::es256("k1");
    let assertion = sign(&key, Some("k1"), &claims());
    let mut parts: Vec<String> = assertion.split('.').map(str::to_string).collect();
    let mut other = claims();
    other["jti"] = json!("jti-2");
    parts[1] = b64(other.to_string().as_bytes());
    assert_eq!(
        verify(&parts.join("."), &set(&[&key]), expected()),
        Err(AssertionError::BadSignature)
    );
}

#[test]
fn the_claimed_subject_is_read_without_verification() {
    let key = TestKey::es256("k1");
    assert_eq!(claimed_subject(&sign(&key, None, &claims())).as_deref(), Ok(CLIENT));
    assert_eq!(claimed_subject("a.b"), Err(AssertionError::Malformed));
    assert_eq!(
        claimed_subject(&"a".repeat(MAX_ASSERTION_LEN + 1)),
        Err(AssertionError::TooLong)
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any string: refused (never a panic, never accepted).
        #[test]
        fn any_string_is_refused_without_panicking(assertion in ".{0,300}") {
            let key = TestKey::es256("k1");
            prop_assert!(verify(&assertion, &set(&[&key]), expected()).is_err());
            let _ = claimed_subject(&assertion);
        }
    }
}
