//! The refresh-token rotation decision (RFC 9700 §4.14.2), a pure function
//! of the stored grant, the request and `now`.
//!
//! Refresh tokens rotate on every use. A rotated-out token presented again
//! within [`REFRESH_GRACE`] and before its successor was used gets the same
//! successor (a client that raced two refreshes); any other reuse revokes the
//! whole family. A grant past its end is removed instead.

use std::time::Duration;

use super::grant::{Grant, GrantLifetime, IssuedPair, Rotation};
use crate::store::Change;

/// Clients that race two refreshes get the same answer within this window.
pub const REFRESH_GRACE: Duration = Duration::from_secs(5);

/// A refresh request, as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct RefreshRequest<'a> {
    pub refresh_jti: &'a str,
    pub client_id: &'a str,
    /// The pair to issue if the token is current.
    pub successor: &'a IssuedPair,
}

/// What a refresh token claim decided.
#[derive(Debug)]
pub enum RefreshClaim {
    /// The token was current: it is rotated out and `successor` now current;
    /// `undo` is what undoing the rotation puts back ([`undo_rotation`]).
    Rotated {
        grant_id: String,
        grant: Grant,
        undo: RotationUndo,
    },
    /// A rotated-out token within the grace window: answer with this pair.
    GraceReplay {
        grant: Grant,
        pair: IssuedPair,
    },
    /// Reuse of an old token: the whole family was revoked.
    ReuseDetected,
    /// The grant reached its maximum lifetime: it was removed.
    Ended,
    /// Issued to another client.
    WrongClient,
    Unknown,
}

/// The token pair a rotation replaced: undoing it puts only these back.
#[derive(Debug, Clone)]
pub struct RotationUndo {
    current: Option<IssuedPair>,
    previous: Option<Rotation>,
}

/// What [`claim`] decided: a rotation (the rotated grant is the record
/// written, handed back by the store), or the answer itself. Lives for one
/// call on the stack, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Claimed {
    Rotated { undo: RotationUndo },
    Answer(RefreshClaim),
}

/// RFC 9700 §4.14.2 rotation with reuse detection, decided on the grant as
/// stored at `now`; the store applies the change only if nobody changed it
/// meanwhile. A grant past its end is removed instead.
pub fn claim(
    grant: Option<Grant>,
    request: &RefreshRequest<'_>,
    now: u64,
    lifetime: GrantLifetime,
) -> (Change<Grant>, Claimed) {
    let Some(mut grant) = grant else {
        return (Change::Keep, Claimed::Answer(RefreshClaim::Unknown));
    };
    if grant.client_id != request.client_id {
        return (Change::Keep, Claimed::Answer(RefreshClaim::WrongClient));
    }
    let Some(ttl) = lifetime.ttl(&grant, now) else {
        return (Change::Delete, Claimed::Answer(RefreshClaim::Ended));
    };
    if grant
        .current
        .as_ref()
        .is_some_and(|c| c.refresh_jti == request.refresh_jti)
    {
        let rotation = Rotation {
            old_refresh_jti: request.refresh_jti.to_string(),
            rotated_at: now,
            successor: request.successor.clone(),
        };
        let undo = RotationUndo {
            current: grant.current.replace(request.successor.clone()),
            previous: grant.previous.replace(rotation),
        };
        return (Change::Put(grant, ttl), Claimed::Rotated { undo });
    }
    if let Some(rotation) = &grant.previous {
        let successor_unused = grant.current.as_ref() == Some(&rotation.successor);
        if rotation.old_refresh_jti == request.refresh_jti && within_grace(rotation, now) && successor_unused {
            let pair = rotation.successor.clone();
            return (Change::Keep, Claimed::Answer(RefreshClaim::GraceReplay { grant, pair }));
        }
    }
    (Change::Delete, Claimed::Answer(RefreshClaim::ReuseDetected))
}

fn within_grace(rotation: &Rotation, now: u64) -> bool {
    now.saturating_sub(rotation.rotated_at) <= REFRESH_GRACE.as_secs()
}

/// Whether `refresh_jti` is the grant's current refresh token, or the one
/// it replaced within the grace window (a lookup: [`claim`] decides).
pub fn refresh_token_is_live(grant: &Grant, refresh_jti: &str, now: u64) -> bool {
    let current = grant.current.as_ref().is_some_and(|c| c.refresh_jti == refresh_jti);
    let in_grace = grant
        .previous
        .as_ref()
        .is_some_and(|r| r.old_refresh_jti == refresh_jti && within_grace(r, now));
    current || in_grace
}

/// Undoing a rotation, decided on the grant as stored now: only the token
/// pair goes back, and only if `successor` is still current; whatever else
/// changed since the claim stays, and a grant revoked since stays revoked.
pub fn undo_rotation(grant: Option<Grant>, successor: &IssuedPair, undo: &RotationUndo) -> Option<Grant> {
    let mut grant = grant.filter(|grant| grant.current.as_ref() == Some(successor))?;
    grant.current = undo.current.clone();
    grant.previous = undo.previous.clone();
    Some(grant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::scope::Scopes;
    use crate::records::UpstreamTokens;

    const DAY: u64 = 86_400;
    const NOW: u64 = 1_700_000_000;

    fn lifetime() -> GrantLifetime {
        GrantLifetime {
            refresh_ttl: Duration::from_secs(30 * DAY),
            max_lifetime: Duration::from_secs(90 * DAY),
        }
    }

    fn pair(tag: &str) -> IssuedPair {
        IssuedPair {
            access_jti: format!("g.access-{tag}"),
            refresh_jti: format!("g.refresh-{tag}"),
            issued_at: 1_000,
            scope: "openid".into(),
        }
    }

    fn grant(created_at: u64) -> Grant {
        Grant {
            client_id: "client".into(),
            subject: "user".into(),
            scopes: Scopes::parse("openid"),
            resource: "https://mcp.example.com/mcp".into(),
            claims: "{}".into(),
            upstream: UpstreamTokens {
                access_token: "up-at".into(),
                token_type: "Bearer".into(),
                refresh_token: Some("up-rt".into()),
                id_token: None,
                expires_at: None,
                scope: None,
            },
            current: Some(pair("0")),
            previous: None,
            passthrough_refresh_hash: None,
            revoked_access: Vec::new(),
            created_at,
            sign_in_claims: Some("{}".into()),
        }
    }

    /// A grant whose token `from` was rotated out at `at`, replaced by `to`.
    fn rotated(from: &str, to: &str, at: u64) -> Grant {
        Grant {
            current: Some(pair(to)),
            previous: Some(Rotation {
                old_refresh_jti: format!("g.refresh-{from}"),
                rotated_at: at,
                successor: pair(to),
            }),
            ..grant(NOW - DAY)
        }
    }

    fn request<'a>(refresh_jti: &'a str, successor: &'a IssuedPair) -> RefreshRequest<'a> {
        RefreshRequest {
            refresh_jti,
            client_id: "client",
            successor,
        }
    }

    /// The decision, reduced to what a row can state.
    #[derive(Debug, PartialEq)]
    enum Decision {
        /// Rotated: the written grant's current pair and the rotated-out token.
        Rotated {
            current: IssuedPair,
            rotated_out: String,
        },
        GraceReplay(IssuedPair),
        ReuseDetected,
        Ended,
        WrongClient,
        Unknown,
    }

    #[derive(Debug, PartialEq)]
    enum Write {
        Keep,
        Put,
        Delete,
    }

    fn decide(grant: Option<Grant>, jti: &str, client_id: &str, now: u64) -> (Write, Decision) {
        let successor = pair("new");
        let request = RefreshRequest {
            client_id,
            ..request(jti, &successor)
        };
        let (change, claimed) = claim(grant, &request, now, lifetime());
        match (change, claimed) {
            (Change::Put(written, _), Claimed::Rotated { .. }) => {
                let previous = written.previous.expect("a rotation records what it replaced");
                assert_eq!(previous.rotated_at, now, "rotated at the `now` it was given");
                let current = written.current.expect("a rotation makes the successor current");
                (
                    Write::Put,
                    Decision::Rotated {
                        current,
                        rotated_out: previous.old_refresh_jti,
                    },
                )
            }
            (_, Claimed::Rotated { .. }) => panic!("a rotation writes the grant"),
            (change, Claimed::Answer(answer)) => {
                let write = match change {
                    Change::Keep => Write::Keep,
                    Change::Put(..) => Write::Put,
                    Change::Delete => Write::Delete,
                };
                let decision = match answer {
                    RefreshClaim::Rotated { .. } => panic!("the store builds `Rotated`, not the decision"),
                    RefreshClaim::GraceReplay { pair, .. } => Decision::GraceReplay(pair),
                    RefreshClaim::ReuseDetected => Decision::ReuseDetected,
                    RefreshClaim::Ended => Decision::Ended,
                    RefreshClaim::WrongClient => Decision::WrongClient,
                    RefreshClaim::Unknown => Decision::Unknown,
                };
                (write, decision)
            }
        }
    }

    #[test]
    fn the_rotation_decision_follows_rfc_9700() {
        let grace = REFRESH_GRACE.as_secs();
        // (case, stored grant, presented token, client, now) → (write, decision)
        type Row = (
            &'static str,
            Option<Grant>,
            &'static str,
            &'static str,
            u64,
            Write,
            Decision,
        );
        let rows: Vec<Row> = vec![
            (
                "the current token rotates to the successor",
                Some(grant(NOW - DAY)),
                "g.refresh-0",
                "client",
                NOW,
                Write::Put,
                Decision::Rotated {
                    current: pair("new"),
                    rotated_out: "g.refresh-0".into(),
                },
            ),
            (
                "a rotated-out token at once, successor unused: the same successor (grace replay)",
                Some(rotated("0", "1", NOW)),
                "g.refresh-0",
                "client",
                NOW,
                Write::Keep,
                Decision::GraceReplay(pair("1")),
            ),
            (
                "a rotated-out token at the end of the grace window: still a grace replay",
                Some(rotated("0", "1", NOW)),
                "g.refresh-0",
                "client",
                NOW + grace,
                Write::Keep,
                Decision::GraceReplay(pair("1")),
            ),
            (
                "a rotated-out token after its successor was used: reuse, the family is revoked",
                Some(rotated("1", "2", NOW)),
                "g.refresh-0",
                "client",
                NOW,
                Write::Delete,
                Decision::ReuseDetected,
            ),
            (
                "a rotated-out token whose successor is no longer current: reuse",
                Some(Grant {
                    current: Some(pair("other")),
                    ..rotated("0", "1", NOW)
                }),
                "g.refresh-0",
                "client",
                NOW,
                Write::Delete,
                Decision::ReuseDetected,
            ),
            (
                "a rotated-out token after the grace window: reuse, the family is revoked",
                Some(rotated("0", "1", NOW)),
                "g.refresh-0",
                "client",
                NOW + grace + 1,
                Write::Delete,
                Decision::ReuseDetected,
            ),
            (
                "a token the grant never issued: reuse, the family is revoked",
                Some(grant(NOW - DAY)),
                "g.refresh-forged",
                "client",
                NOW,
                Write::Delete,
                Decision::ReuseDetected,
            ),
            (
                "the current token from another client: refused, nothing written",
                Some(grant(NOW - DAY)),
                "g.refresh-0",
                "other-client",
                NOW,
                Write::Keep,
                Decision::WrongClient,
            ),
            (
                "another client's token on an ended grant: refused before the end is checked",
                Some(grant(NOW - 90 * DAY)),
                "g.refresh-0",
                "other-client",
                NOW,
                Write::Keep,
                Decision::WrongClient,
            ),
            (
                "a token whose grant is gone: unknown, nothing written",
                None,
                "g.refresh-0",
                "client",
                NOW,
                Write::Keep,
                Decision::Unknown,
            ),
            (
                "the current token of a grant past its end: ended, the grant removed",
                Some(grant(NOW - 90 * DAY)),
                "g.refresh-0",
                "client",
                NOW,
                Write::Delete,
                Decision::Ended,
            ),
            (
                "a rotated-out token of a grant past its end: ended, not a replay",
                Some(Grant {
                    created_at: NOW - 90 * DAY,
                    ..rotated("0", "1", NOW)
                }),
                "g.refresh-0",
                "client",
                NOW,
                Write::Delete,
                Decision::Ended,
            ),
        ];
        for (case, grant, jti, client_id, now, write, decision) in rows {
            assert_eq!(decide(grant, jti, client_id, now), (write, decision), "{case}");
        }
    }

    #[test]
    fn a_refresh_token_is_live_while_current_or_within_the_grace_window() {
        let grace = REFRESH_GRACE.as_secs();
        let grant = rotated("0", "1", NOW);
        // (case, presented token, now) → live
        let rows = [
            ("the current token", "g.refresh-1", NOW + 10 * grace, true),
            (
                "the rotated-out token within the window",
                "g.refresh-0",
                NOW + grace,
                true,
            ),
            (
                "the rotated-out token after the window",
                "g.refresh-0",
                NOW + grace + 1,
                false,
            ),
            ("a token the grant never issued", "g.refresh-9", NOW, false),
        ];
        for (case, jti, now, live) in rows {
            assert_eq!(refresh_token_is_live(&grant, jti, now), live, "{case}");
        }
    }

    #[test]
    fn a_refresh_after_the_grants_end_removes_it_and_one_before_rotates() {
        let now = NOW;
        let successor = pair("1");
        let ended = grant(now - 90 * DAY);
        let (change, claimed) = claim(Some(ended), &request("g.refresh-0", &successor), now, lifetime());
        assert!(matches!(change, Change::Delete));
        assert!(matches!(claimed, Claimed::Answer(RefreshClaim::Ended)));

        // Two hours before the end: rotated, the record kept only that long.
        let ending = grant(now - 90 * DAY + 7200);
        let (change, claimed) = claim(Some(ending), &request("g.refresh-0", &successor), now, lifetime());
        let Change::Put(written, kept_for) = change else {
            panic!("a rotation writes the grant")
        };
        assert!(kept_for <= Duration::from_secs(7200) && kept_for > Duration::from_secs(7100));
        assert_eq!(written.current, Some(pair("1")));
        assert_eq!(
            written.previous.map(|r| r.old_refresh_jti).as_deref(),
            Some("g.refresh-0")
        );
        assert!(matches!(claimed, Claimed::Rotated { .. }));
    }

    #[test]
    fn undoing_a_rotation_keeps_what_changed_since_and_a_revoked_grant_stays_revoked() {
        let now = NOW;
        let successor = pair("1");
        let (change, claimed) = claim(Some(grant(now)), &request("g.refresh-0", &successor), now, lifetime());
        let (Change::Put(mut stored, _), Claimed::Rotated { undo }) = (change, claimed) else {
            panic!("a rotation")
        };
        // Meanwhile: an access token revoked and the upstream tokens refreshed.
        stored.revoked_access.push(("g.access-0".into(), now + 3600));
        stored.upstream.access_token = "up-at-2".into();
        let restored = undo_rotation(Some(stored.clone()), &successor, &undo).expect("the rotation is undone");
        assert_eq!(restored.current, Some(pair("0")));
        assert!(restored.previous.is_none());
        assert!(restored.access_revoked("g.access-0"), "the revocation stays");
        assert_eq!(
            restored.upstream.access_token, "up-at-2",
            "the newer upstream tokens stay"
        );
        // A grant revoked meanwhile stays revoked; one rotated again is left alone.
        assert!(undo_rotation(None, &successor, &undo).is_none());
        stored.current = Some(pair("2"));
        assert!(undo_rotation(Some(stored), &successor, &undo).is_none());
    }
}
