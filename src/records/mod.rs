//! The records the service stores, and the protocol decisions taken on them.
//!
//! Records are postcard-encoded and sealed (see [`crate::store::SealedTable`]):
//! their field order is their format. A field is only ever appended last
//! (see [`crate::store::appended_time`]), and the bytes of each record are
//! pinned by a test below, so a record written by the current release
//! always opens after a change here.
//!
//! The decisions ([`rotation::claim`], [`redemption::redeem`]) are pure
//! functions of the stored record, the request and `now`: the actors read
//! the clock once and hand them to the store's compare-and-swap, which
//! applies the decided change only if nobody changed the record meanwhile.

pub mod code;
pub mod grant;
pub mod redemption;
pub mod rotation;
pub mod transaction;

pub use code::{CodeRecord, CodeRefusal, PreparedTokens, Redemption};
pub use grant::{bounded_exp, bounded_ttl, grant_id_of, Grant, GrantLifetime, IssuedPair, Rotation, UpstreamTokens};
pub use redemption::{redeem, CodeOutcome, RedeemRequest, DUPLICATE_WINDOW};
pub use rotation::{claim, undo_rotation, RefreshClaim, RefreshRequest, RotationUndo, REFRESH_GRACE};
pub use transaction::Transaction;

#[cfg(test)]
mod tests {
    //! The stored records' postcard bytes, pinned: records written by the
    //! current release must open after any refactor of these types.
    use super::*;
    use crate::oauth::pkce::CodeChallenge;
    use crate::oauth::scope::Scopes;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn challenge() -> CodeChallenge {
        CodeChallenge::parse(Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"), Some("S256")).unwrap()
    }

    fn pair(tag: &str) -> IssuedPair {
        IssuedPair {
            access_jti: format!("g.a{tag}"),
            refresh_jti: format!("g.r{tag}"),
            issued_at: 1_700_000_000,
            scope: "openid mcp".into(),
        }
    }

    fn grant() -> Grant {
        Grant {
            client_id: "client".into(),
            subject: "user".into(),
            scopes: Scopes::parse("openid mcp"),
            resource: "https://mcp.example.com/mcp".into(),
            claims: r#"{"email":"u@example.com"}"#.into(),
            upstream: UpstreamTokens {
                access_token: "up-at".into(),
                token_type: "Bearer".into(),
                refresh_token: Some("up-rt".into()),
                id_token: Some("id".into()),
                expires_at: Some(1_700_003_600),
                scope: Some("openid".into()),
            },
            current: Some(pair("1")),
            previous: Some(Rotation {
                old_refresh_jti: "g.r0".into(),
                rotated_at: 1_699_999_999,
                successor: pair("1"),
            }),
            passthrough_refresh_hash: Some("hash".into()),
            revoked_access: vec![("g.a0".into(), 1_700_000_100)],
            created_at: 1_699_990_000,
            sign_in_claims: Some(r#"{"groups":["staff"]}"#.into()),
        }
    }

    fn code() -> CodeRecord {
        CodeRecord {
            client_id: "client".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            code_challenge: challenge(),
            scopes: Scopes::parse("openid"),
            resource: "https://mcp.example.com/mcp".into(),
            grant_id: "g".into(),
            pending_upstream_code: Some("up-code".into()),
            prepared: Some(PreparedTokens {
                access_nonce: "an".into(),
                refresh_nonce: "rn".into(),
                subject: "user".into(),
                claims: "{}".into(),
            }),
            redemption: Some(Redemption {
                at: 1_700_000_000,
                verifier_hash: "vh".into(),
                access_jti: "g.an".into(),
                refresh_jti: "g.rn".into(),
            }),
            grant_created_at: 1_699_990_000,
        }
    }

    fn transaction() -> Transaction {
        Transaction {
            client_id: "client".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            state: Some("xyz".into()),
            scopes: Scopes::parse("openid"),
            resource: "https://mcp.example.com/mcp".into(),
            code_challenge: challenge(),
            upstream_verifier: Some("verifier".into()),
            csrf_token: "csrf".into(),
            browser_hash: "bh".into(),
            approved: true,
        }
    }

    /// A grant as the release before `sign_in_claims` wrote it.
    const GRANT_BEFORE_SIGN_IN_CLAIMS: &str = "06636c69656e74047573657202036d6370066f70656e69641b68747470733a2f2f6d63702e6578616d706c652e636f6d2f6d6370197b22656d61696c223a2275406578616d706c652e636f6d227d0575702d617406426561726572010575702d7274010269640190fecfaa0601066f70656e69640104672e613104672e723180e2cfaa060a6f70656e6964206d63700104672e7230ffe1cfaa0604672e613104672e723180e2cfaa060a6f70656e6964206d63700104686173680104672e6130e4e2cfaa06f093cfaa06";
    const GRANT: &str = "06636c69656e74047573657202036d6370066f70656e69641b68747470733a2f2f6d63702e6578616d706c652e636f6d2f6d6370197b22656d61696c223a2275406578616d706c652e636f6d227d0575702d617406426561726572010575702d7274010269640190fecfaa0601066f70656e69640104672e613104672e723180e2cfaa060a6f70656e6964206d63700104672e7230ffe1cfaa0604672e613104672e723180e2cfaa060a6f70656e6964206d63700104686173680104672e6130e4e2cfaa06f093cfaa0601147b2267726f757073223a5b227374616666225d7d";
    const CODE: &str = "06636c69656e7413687474703a2f2f3132372e302e302e312f63622b45394d656c686f61324f77764672454d544a67754348616f654b3174385552576275474a537374772d634d01066f70656e69641b68747470733a2f2f6d63702e6578616d706c652e636f6d2f6d63700167010775702d636f64650102616e02726e0475736572027b7d0180e2cfaa0602766804672e616e04672e726ef093cfaa06";
    const TRANSACTION: &str = "06636c69656e7413687474703a2f2f3132372e302e302e312f6362010378797a01066f70656e69641b68747470733a2f2f6d63702e6578616d706c652e636f6d2f6d63702b45394d656c686f61324f77764672454d544a67754348616f654b3174385552576275474a537374772d634d01087665726966696572046373726602626801";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `record` encodes to `pinned`, and `pinned` decodes to a record that
    /// encodes to the same bytes again.
    fn same_bytes<T: serde::Serialize + serde::de::DeserializeOwned>(record: &T, pinned: &str) {
        assert_eq!(hex(&postcard::to_allocvec(record).unwrap()), pinned);
        let read: T = postcard::from_bytes(&unhex(pinned)).unwrap();
        assert_eq!(hex(&postcard::to_allocvec(&read).unwrap()), pinned);
    }

    #[test]
    fn grants_codes_and_transactions_keep_their_stored_bytes() {
        same_bytes(&grant(), GRANT);
        same_bytes(&code(), CODE);
        same_bytes(&transaction(), TRANSACTION);
    }

    #[test]
    fn a_grant_of_the_release_before_sign_in_claims_reads_them_as_absent() {
        let read: Grant = postcard::from_bytes(&unhex(GRANT_BEFORE_SIGN_IN_CLAIMS)).unwrap();
        let expected = Grant {
            sign_in_claims: None,
            ..grant()
        };
        assert_eq!(format!("{read:?}"), format!("{expected:?}"));
    }
}
