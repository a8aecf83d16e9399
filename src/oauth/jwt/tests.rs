use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

fn signer() -> TokenSigner {
    TokenSigner::hs256(
        b"a-test-signing-key-of-at-least-32-bytes",
        "https://proxy",
        "https://proxy/mcp",
    )
}

fn claims(token_use: TokenUse) -> Claims {
    let now = crate::oauth::now_secs();
    Claims {
        iss: "https://proxy".into(),
        aud: "https://proxy/mcp".into(),
        sub: "user".into(),
        client_id: "client".into(),
        scope: "read".into(),
        jti: "jti-1".into(),
        iat: now,
        exp: now + 60,
        token_use,
        extra: Map::new(),
    }
}

#[test]
fn a_signed_token_verifies_and_keeps_its_claims() {
    let token = signer().sign(&claims(TokenUse::Access)).unwrap();
    assert_eq!(
        signer().verify(&token, TokenUse::Access).unwrap(),
        claims(TokenUse::Access)
    );
}

#[test]
fn upstream_claims_kept_as_json_are_spliced_into_the_token() {
    let mut expected = claims(TokenUse::Access);
    expected.extra.insert("email".into(), "user@example.com".into());
    expected.extra.insert("groups".into(), serde_json::json!(["a", "b"]));
    let issued = IssuedClaims {
        iss: &expected.iss,
        aud: &expected.aud,
        sub: &expected.sub,
        client_id: &expected.client_id,
        scope: &expected.scope,
        jti: &expected.jti,
        iat: expected.iat,
        exp: expected.exp,
        token_use: expected.token_use,
        extra_json: r#"{"email":"user@example.com","groups":["a","b"]}"#,
    };
    let token = signer().sign_issued(&issued).unwrap();
    assert_eq!(signer().verify(&token, TokenUse::Access).unwrap(), expected);
    // No upstream claims: the payload is the reserved claims alone.
    let token = signer()
        .sign_issued(&IssuedClaims {
            extra_json: "{}",
            ..issued
        })
        .unwrap();
    assert!(signer().verify(&token, TokenUse::Access).unwrap().extra.is_empty());
}

#[test]
fn hs256_tokens_match_what_jsonwebtoken_encodes() {
    let claims = claims(TokenUse::Refresh);
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    let key = EncodingKey::from_secret(b"a-test-signing-key-of-at-least-32-bytes");
    assert_eq!(
        signer().sign(&claims).unwrap(),
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    );
}

#[test]
fn access_and_refresh_tokens_are_not_interchangeable() {
    let access = signer().sign(&claims(TokenUse::Access)).unwrap();
    let refresh = signer().sign(&claims(TokenUse::Refresh)).unwrap();
    assert!(matches!(
        signer().verify(&access, TokenUse::Refresh),
        Err(JwtError::WrongType { .. })
    ));
    assert!(matches!(
        signer().verify(&refresh, TokenUse::Access),
        Err(JwtError::WrongType { .. })
    ));
}

#[test]
fn alg_none_and_edited_payloads_are_refused() {
    let token = signer().sign(&claims(TokenUse::Access)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    assert!(signer()
        .verify(&format!("{none_header}.{}.", parts[1]), TokenUse::Access)
        .is_err());
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = "admin".into();
    let edited = URL_SAFE_NO_PAD.encode(payload.to_string());
    assert!(signer()
        .verify(&format!("{}.{edited}.{}", parts[0], parts[2]), TokenUse::Access)
        .is_err());
}

#[test]
fn expired_and_foreign_audience_tokens_are_refused() {
    let mut expired = claims(TokenUse::Access);
    expired.exp = expired.iat - 1;
    let token = signer().sign(&expired).unwrap();
    assert!(signer().verify(&token, TokenUse::Access).is_err());
    let mut foreign = claims(TokenUse::Access);
    foreign.aud = "https://other/mcp".into();
    let token = signer().sign(&foreign).unwrap();
    assert!(signer().verify(&token, TokenUse::Access).is_err());
}

#[test]
fn es256_and_eddsa_tokens_verify_with_the_published_key() {
    for algorithm in [Algorithm::ES256, Algorithm::EdDSA] {
        let signer = TokenSigner::generated(algorithm, "https://proxy", "https://proxy/mcp").unwrap();
        let token = signer.sign(&claims(TokenUse::Access)).unwrap();
        let jwks = signer.jwks().unwrap();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        let jwk = jwks.find(&kid).expect("the token's kid is published");
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&["https://proxy/mcp"]);
        let key = DecodingKey::from_jwk(jwk).unwrap();
        assert!(jsonwebtoken::decode::<Claims>(&token, &key, &validation).is_ok());
        assert!(signer.verify(&token, TokenUse::Access).is_ok());
    }
}

#[test]
fn a_previous_key_keeps_verifying_during_rotation() {
    let old = TokenSigner::hs256(
        b"the-old-signing-key-of-32-bytes-or-more",
        "https://proxy",
        "https://proxy/mcp",
    );
    let token = old.sign(&claims(TokenUse::Access)).unwrap();
    assert!(signer().verify(&token, TokenUse::Access).is_err());
    let rotated = signer()
        .with_previous_key(b"the-old-signing-key-of-32-bytes-or-more")
        .unwrap();
    assert!(rotated.verify(&token, TokenUse::Access).is_ok());
}

#[test]
fn an_hs256_token_is_refused_by_an_es256_signer() {
    let es = TokenSigner::generated(Algorithm::ES256, "https://proxy", "https://proxy/mcp").unwrap();
    let hs_token = signer().sign(&claims(TokenUse::Access)).unwrap();
    assert!(es.verify(&hs_token, TokenUse::Access).is_err());
}

#[test]
fn cached_access_tokens_still_expire_and_stay_per_signer() {
    let mut short = claims(TokenUse::Access);
    short.exp = crate::oauth::now_secs() + 1;
    let token = signer().sign(&short).unwrap();
    let verifier = signer();
    assert!(verifier.verify_access(&token).is_ok());
    assert!(verifier.verify_access(&token).is_ok(), "served from the cache");
    let other = TokenSigner::hs256(
        b"another-key-another-key-another-key-0",
        "https://proxy",
        "https://proxy/mcp",
    );
    assert!(
        other.verify_access(&token).is_err(),
        "another signer verifies for itself"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(verifier.verify_access(&token).is_err(), "expired while cached");
    let refresh = signer().sign(&claims(TokenUse::Refresh)).unwrap();
    assert!(verifier.verify_access(&refresh).is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        ProptestConfig::with_cases(256)
    }

    proptest! {
        #![proptest_config(config())]

        /// Whatever arrives as a bearer token, verification answers
        /// (never panics) and refuses anything it did not sign.
        #[test]
        fn arbitrary_strings_are_refused_without_panicking(token in ".{0,300}") {
            prop_assert!(signer().verify(&token, TokenUse::Access).is_err());
            prop_assert!(signer().verify_access(&token).is_err());
        }

        /// Three dot-separated base64url parts of anything: still refused.
        #[test]
        fn arbitrary_compact_jws_shapes_are_refused(
            header in proptest::collection::vec(any::<u8>(), 0..80),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            signature in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let token = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(signature)
            );
            prop_assert!(signer().verify(&token, TokenUse::Access).is_err());
        }

        /// Changing any one character of a valid token (header, payload or
        /// signature) makes it invalid, even after the original was
        /// verified and remembered on this thread.
        #[test]
        fn a_token_with_any_character_changed_is_refused(
            position in any::<prop::sample::Index>(),
            replacement in "[A-Za-z0-9_.-]",
        ) {
            let token = signer().sign(&claims(TokenUse::Access)).unwrap();
            prop_assert!(signer().verify_access(&token).is_ok());
            let index = position.index(token.len());
            let mut edited = token.clone();
            edited.replace_range(index..index + 1, &replacement);
            prop_assume!(edited != token);
            prop_assert!(signer().verify(&edited, TokenUse::Access).is_err(), "accepted {edited}");
            prop_assert!(signer().verify_access(&edited).is_err(), "accepted {edited}");
        }

        /// A header naming any other algorithm (`none`, HS/RS/ES/PS
        /// variants) over a validly signed payload is refused: only the
        /// configured algorithm is accepted (no algorithm confusion).
        #[test]
        fn a_header_naming_another_algorithm_is_refused(
            alg in prop::sample::select(vec![
                "none", "None", "NONE", "HS384", "HS512", "RS256", "PS256", "ES256", "ES384", "EdDSA", "",
            ]),
            keep_signature in any::<bool>(),
        ) {
            let token = signer().sign(&claims(TokenUse::Access)).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let signature = if keep_signature { parts[2] } else { "" };
            let forged = format!("{header}.{}.{signature}", parts[1]);
            prop_assert!(signer().verify(&forged, TokenUse::Access).is_err());
        }
    }
}
