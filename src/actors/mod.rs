//! The actors that own the service's state. Each owns its tables and an
//! expiry timer; handlers reach them only through messages. Store logic lives
//! in plain types (records, tables), so this layer stays thin.

pub mod client_registry;
pub mod codes;
pub mod token_vault;
pub mod transactions;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix::dev::{MessageResponse, OneshotSender};

pub use client_registry::ClientRegistry;
pub use codes::CodeStore;
pub use token_vault::TokenVault;
pub use transactions::TransactionStore;

/// How often an actor sweeps expired records: often enough for short TTLs,
/// at most once a minute.
pub(crate) fn purge_interval(shortest_ttl: Duration) -> Duration {
    (shortest_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// A store actor's answer to a message. The memory store (and any store
/// call that needs no I/O) finishes on its first poll, so the answer goes
/// back at once; a call that waits (a directory commit, a Redis round trip)
/// is answered by a task that awaits it, as actix's `ResponseFuture` always
/// does. That task per message (allocated, scheduled, polled, dropped) cost
/// several µs per full flow (README, Performance).
pub enum Answer<T> {
    Now(T),
    Later(Pin<Box<dyn Future<Output = T>>>),
}

impl<T: 'static> Answer<T> {
    /// Polls `work` once here; what is not finished goes on in a task. A
    /// future polled again with another waker registers that one, so the
    /// task's first poll picks up anything that happened in between.
    pub fn of(work: impl Future<Output = T> + 'static) -> Self {
        let mut work = Box::pin(work);
        match work.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(answer) => Answer::Now(answer),
            Poll::Pending => Answer::Later(work),
        }
    }
}

impl<A, M, T> MessageResponse<A, M> for Answer<T>
where
    A: actix::Actor,
    M: actix::Message<Result = T>,
    T: 'static,
{
    fn handle(self, _: &mut A::Context, tx: Option<OneshotSender<T>>) {
        let reply = |answer: T| {
            if let Some(tx) = tx {
                // The sender stopped waiting: nobody to tell.
                let _ = tx.send(answer);
            }
        };
        match self {
            Answer::Now(answer) => reply(answer),
            Answer::Later(work) => {
                actix::spawn(async move { reply(work.await) });
            }
        }
    }
}

/// Stops an actor when asked (the original `destroy`): its timers end with it.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Counts the records an actor holds (for tests and health checks).
#[derive(actix::Message)]
#[rtype(result = "Result<usize, crate::store::StoreError>")]
pub struct CountRecords;

/// Sweeps expired records of `table` every `interval` (errors are logged).
pub(crate) fn sweep_every<T, A>(
    ctx: &mut actix::Context<A>,
    interval: Duration,
    what: &'static str,
    table: crate::store::SealedTable<T>,
) where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
    A: actix::Actor<Context = actix::Context<A>>,
{
    actix::AsyncContext::run_interval(ctx, interval, move |_, ctx| {
        let table = table.clone();
        actix::AsyncContext::spawn(
            ctx,
            actix::fut::wrap_future(async move {
                if let Err(e) = table.purge_expired().await {
                    log::error!("{what} sweep failed: {e}");
                }
            }),
        );
    });
}

/// `CountRecords` and `Shutdown` for an actor whose main table is `$table`.
macro_rules! lifecycle_handlers {
    ($actor:ty, $table:ident) => {
        impl actix::Handler<$crate::actors::CountRecords> for $actor {
            type Result = $crate::actors::Answer<Result<usize, $crate::store::StoreError>>;

            fn handle(&mut self, _: $crate::actors::CountRecords, _: &mut Self::Context) -> Self::Result {
                let table = self.$table.clone();
                $crate::actors::Answer::of(async move { table.count().await })
            }
        }

        impl actix::Handler<$crate::actors::Shutdown> for $actor {
            type Result = ();

            fn handle(&mut self, _: $crate::actors::Shutdown, ctx: &mut Self::Context) {
                actix::ActorContext::stop(ctx);
            }
        }
    };
}
pub(crate) use lifecycle_handlers;

#[cfg(test)]
mod record_format {
    //! The stored records' postcard bytes, pinned: records written by the
    //! current release must open after any refactor of these types.
    use super::codes::{CodeRecord, PreparedTokens, Redemption};
    use super::token_vault::{Grant, IssuedPair, Rotation, UpstreamTokens};
    use super::transactions::Transaction;
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

    const GRANT: &str = "06636c69656e74047573657202036d6370066f70656e69641b68747470733a2f2f6d63702e6578616d706c652e636f6d2f6d6370197b22656d61696c223a2275406578616d706c652e636f6d227d0575702d617406426561726572010575702d7274010269640190fecfaa0601066f70656e69640104672e613104672e723180e2cfaa060a6f70656e6964206d63700104672e7230ffe1cfaa0604672e613104672e723180e2cfaa060a6f70656e6964206d63700104686173680104672e6130e4e2cfaa06f093cfaa06";
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
}
