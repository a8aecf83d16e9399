//! The authorization code redemption decision (OAuth 2.1 §4.1.3), a pure
//! function of the stored code record, the token request and `now`.
//!
//! A code is bound to its client, redirect URI and PKCE challenge, and is
//! redeemed once. An immediate duplicate request (same client, redirect URI
//! and verifier within [`DUPLICATE_WINDOW`]) gets the same tokens again; any
//! other second redemption is refused and reported, so the tokens issued
//! from the code can be revoked.

use std::time::Duration;

use super::code::{CodeRecord, CodeRefusal, PreparedTokens, Redemption};
use crate::crypto::constant_time_eq;
use crate::store::Change;

/// Some clients send the token request twice in a row.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(5);

/// A token request for a code, as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct RedeemRequest<'a> {
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub verifier: &'a str,
    /// Hash of `verifier`, as a redemption records it.
    pub verifier_hash: &'a str,
    /// Random parts of the token ids to issue if this is the first
    /// redemption of a code without prepared ids; the ids are
    /// `<grant id>.<random>`.
    pub access_nonce: &'a str,
    pub refresh_nonce: &'a str,
    pub issued_at: u64,
}

#[derive(Debug)]
pub enum CodeOutcome {
    /// First redemption: issue tokens with the ids of the record's
    /// redemption; the verifier is handed back for a forwarded-PKCE upstream
    /// exchange, and what the callback prepared, taken out of the record.
    Redeemed(CodeRecord, String, Option<PreparedTokens>),
    /// An immediate duplicate: answer with the tokens of the first redemption.
    Duplicate(CodeRecord, Redemption),
    /// The code was already used: refuse and revoke this grant.
    Replayed {
        grant_id: String,
    },
    Refused(CodeRefusal),
}

/// What a redemption attempt decided, besides the record it writes.
#[derive(Debug)]
pub enum Decided {
    /// Refusals, duplicates and replays (boxed: rare, and large).
    Outcome(Box<CodeOutcome>),
    /// A first redemption, whose outcome is the record written, with what
    /// the callback prepared (taken out of that record).
    FirstRedemption(Option<PreparedTokens>),
}

/// What a redemption attempt at `now` does to the code record (kept for
/// `ttl` once redeemed), and its outcome.
pub fn redeem(
    record: Option<CodeRecord>,
    request: &RedeemRequest<'_>,
    ttl: Duration,
    now: u64,
) -> (Change<CodeRecord>, Decided) {
    let refused = |outcome| (Change::Keep, Decided::Outcome(Box::new(outcome)));
    let Some(mut record) = record else {
        return refused(CodeOutcome::Refused(CodeRefusal::Unknown));
    };
    if let Some(redemption) = record.redemption.clone() {
        let immediate = now.saturating_sub(redemption.at) <= DUPLICATE_WINDOW.as_secs();
        let same_request = record.client_id == request.client_id
            && constant_time_eq(redemption.verifier_hash.as_bytes(), request.verifier_hash.as_bytes())
            && record.redirect_uri.as_str() == request.redirect_uri.unwrap_or_default();
        if immediate && same_request {
            return refused(CodeOutcome::Duplicate(record, redemption));
        }
        let grant_id = record.grant_id;
        return refused(CodeOutcome::Replayed { grant_id });
    }
    if let Err(refusal) = record.check(request.client_id, request.redirect_uri, request.verifier) {
        return refused(CodeOutcome::Refused(refusal));
    }
    // The ids the callback already wrote into the grant, if it prepared them.
    let prepared = record.prepared.take();
    let (access_nonce, refresh_nonce) = match &prepared {
        Some(p) => (p.access_nonce.as_str(), p.refresh_nonce.as_str()),
        None => (request.access_nonce, request.refresh_nonce),
    };
    record.redemption = Some(Redemption {
        at: request.issued_at,
        verifier_hash: request.verifier_hash.to_string(),
        access_jti: format!("{}.{access_nonce}", record.grant_id),
        refresh_jti: format!("{}.{refresh_nonce}", record.grant_id),
    });
    // Kept until it expires, to recognise duplicates and replays.
    (Change::Put(record, ttl), Decided::FirstRedemption(prepared))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sha256_b64url;
    use crate::oauth::pkce::CodeChallenge;
    use crate::oauth::scope::Scopes;

    const NOW: u64 = 1_700_000_000;
    const TTL: Duration = Duration::from_secs(300);
    /// RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const OTHER_VERIFIER: &str = "another-verifier-another-verifier-another-verifier";
    const REDIRECT: &str = "http://127.0.0.1:9/callback";

    fn fresh(prepared: bool) -> CodeRecord {
        CodeRecord {
            client_id: "client".into(),
            redirect_uri: REDIRECT.into(),
            code_challenge: CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap(),
            scopes: Scopes::parse("openid"),
            resource: "https://mcp.example.com/mcp".into(),
            grant_id: "g".into(),
            pending_upstream_code: None,
            prepared: prepared.then(|| PreparedTokens {
                access_nonce: "prepared-a".into(),
                refresh_nonce: "prepared-r".into(),
                subject: "user".into(),
                claims: "{}".into(),
            }),
            redemption: None,
            grant_created_at: NOW - 10,
        }
    }

    /// A code first redeemed at `at` with [`VERIFIER`].
    fn redeemed(at: u64) -> CodeRecord {
        CodeRecord {
            redemption: Some(Redemption {
                at,
                verifier_hash: sha256_b64url(VERIFIER.as_bytes()),
                access_jti: "g.first-a".into(),
                refresh_jti: "g.first-r".into(),
            }),
            ..fresh(false)
        }
    }

    /// The decision, reduced to what a row can state.
    #[derive(Debug, PartialEq)]
    enum Decision {
        /// First redemption: the token ids recorded, and whether what the
        /// callback prepared was handed back.
        Redeemed {
            access_jti: String,
            refresh_jti: String,
            prepared: bool,
        },
        /// The first redemption's token ids again.
        Duplicate {
            access_jti: String,
            refresh_jti: String,
        },
        Replayed {
            grant_id: String,
        },
        Refused(CodeRefusal),
    }

    /// (client id, redirect URI, verifier)
    type Request = (&'static str, Option<&'static str>, &'static str);

    fn decide(record: Option<CodeRecord>, (client_id, redirect_uri, verifier): Request, now: u64) -> (bool, Decision) {
        let verifier_hash = sha256_b64url(verifier.as_bytes());
        let request = RedeemRequest {
            client_id,
            redirect_uri,
            verifier,
            verifier_hash: &verifier_hash,
            access_nonce: "nonce-a",
            refresh_nonce: "nonce-r",
            issued_at: now,
        };
        match redeem(record, &request, TTL, now) {
            (Change::Put(written, ttl), Decided::FirstRedemption(prepared)) => {
                assert_eq!(ttl, TTL);
                assert!(written.prepared.is_none(), "what was prepared leaves the record");
                let redemption = written.redemption.expect("a redemption is recorded");
                assert_eq!(redemption.at, now);
                assert_eq!(redemption.verifier_hash, verifier_hash);
                let decision = Decision::Redeemed {
                    access_jti: redemption.access_jti,
                    refresh_jti: redemption.refresh_jti,
                    prepared: prepared.is_some(),
                };
                (true, decision)
            }
            (Change::Keep, Decided::Outcome(outcome)) => {
                let decision = match *outcome {
                    CodeOutcome::Duplicate(_, first) => Decision::Duplicate {
                        access_jti: first.access_jti,
                        refresh_jti: first.refresh_jti,
                    },
                    CodeOutcome::Replayed { grant_id } => Decision::Replayed { grant_id },
                    CodeOutcome::Refused(refusal) => Decision::Refused(refusal),
                    CodeOutcome::Redeemed(..) => panic!("the store builds `Redeemed`, not the decision"),
                };
                (false, decision)
            }
            _ => panic!("a first redemption writes the record; nothing else does"),
        }
    }

    #[test]
    fn the_code_redemption_decision_follows_oauth_2_1() {
        let window = DUPLICATE_WINDOW.as_secs();
        let good: Request = ("client", Some(REDIRECT), VERIFIER);
        let replayed = || Decision::Replayed { grant_id: "g".into() };
        let first = || Decision::Duplicate {
            access_jti: "g.first-a".into(),
            refresh_jti: "g.first-r".into(),
        };
        // (case, stored record, request, now) → (record written, decision)
        type Row = (&'static str, Option<CodeRecord>, Request, u64, bool, Decision);
        let rows: Vec<Row> = vec![
            (
                "a first redemption issues the ids the callback prepared",
                Some(fresh(true)),
                good,
                NOW,
                true,
                Decision::Redeemed {
                    access_jti: "g.prepared-a".into(),
                    refresh_jti: "g.prepared-r".into(),
                    prepared: true,
                },
            ),
            (
                "a first redemption without prepared ids issues the request's",
                Some(fresh(false)),
                good,
                NOW,
                true,
                Decision::Redeemed {
                    access_jti: "g.nonce-a".into(),
                    refresh_jti: "g.nonce-r".into(),
                    prepared: false,
                },
            ),
            (
                "a duplicate POST at once with the same verifier gets the same tokens",
                Some(redeemed(NOW)),
                good,
                NOW,
                false,
                first(),
            ),
            (
                "a duplicate POST at the end of the window still gets the same tokens",
                Some(redeemed(NOW)),
                good,
                NOW + window,
                false,
                first(),
            ),
            (
                "a duplicate POST with another verifier is a replay",
                Some(redeemed(NOW)),
                ("client", Some(REDIRECT), OTHER_VERIFIER),
                NOW,
                false,
                replayed(),
            ),
            (
                "a duplicate POST from another client is a replay",
                Some(redeemed(NOW)),
                ("other-client", Some(REDIRECT), VERIFIER),
                NOW,
                false,
                replayed(),
            ),
            (
                "a duplicate POST with another redirect URI is a replay",
                Some(redeemed(NOW)),
                ("client", Some("http://127.0.0.1:9/other"), VERIFIER),
                NOW,
                false,
                replayed(),
            ),
            (
                "the same request after the window is a replay",
                Some(redeemed(NOW)),
                good,
                NOW + window + 1,
                false,
                replayed(),
            ),
            (
                "a code issued to another client is refused",
                Some(fresh(true)),
                ("other-client", Some(REDIRECT), VERIFIER),
                NOW,
                false,
                Decision::Refused(CodeRefusal::WrongClient),
            ),
            (
                "a code presented with another redirect URI is refused",
                Some(fresh(true)),
                ("client", Some("http://127.0.0.1:9/other"), VERIFIER),
                NOW,
                false,
                Decision::Refused(CodeRefusal::WrongRedirectUri),
            ),
            (
                "a code presented without its redirect URI is refused",
                Some(fresh(true)),
                ("client", None, VERIFIER),
                NOW,
                false,
                Decision::Refused(CodeRefusal::WrongRedirectUri),
            ),
            (
                "a code presented with the wrong verifier is refused",
                Some(fresh(true)),
                ("client", Some(REDIRECT), OTHER_VERIFIER),
                NOW,
                false,
                Decision::Refused(CodeRefusal::WrongVerifier),
            ),
            (
                "an unknown (or expired) code is refused",
                None,
                good,
                NOW,
                false,
                Decision::Refused(CodeRefusal::Unknown),
            ),
        ];
        for (case, record, request, now, written, decision) in rows {
            assert_eq!(decide(record, request, now), (written, decision), "{case}");
        }
    }
}
