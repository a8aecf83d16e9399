//! The store actors: [`ClientRegistry`], [`TransactionStore`], [`CodeStore`]
//! and [`TokenVault`].
//!
//! What they are: each holds shared handles to its tables (memory, a data
//! directory or Redis, see [`crate::store`]) and their settings, and its
//! primary instance runs the timers that purge expired records. A handler
//! sends a message; the actor forwards it to the store and answers with the
//! result. An actor keeps no record in memory of its own: the atomicity the
//! protocol needs (a transaction taken once, a code redeemed once, a refresh
//! token rotated once) comes from the store's take and compare-and-swap,
//! with the decision itself a pure function in [`crate::records`]. That is
//! why every worker thread can run a replica of each actor (no timers)
//! sharing the same tables, so a handler's message never crosses threads.
//! Beside the tables, replicas of one process share only in-process
//! counters behind a mutex: the registration rate limit and the cached
//! counts behind the registration and pending-authorization caps.
//!
//! The message/handler pairs are declared with [`store_messages!`]. The
//! upstream refresh is not an actor (see `crate::proxy::upstream_refresh`).

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
/// does: a task per message (allocated, scheduled, polled, dropped) is
/// measurable on the hot path, so it is spent only on calls that wait.
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

/// `CountRecords` and `Shutdown` for an actor whose main table is
/// `self.$table` (a field path, e.g. `tables.grants`).
macro_rules! lifecycle_handlers {
    ($actor:ty, $($table:ident).+) => {
        impl actix::Handler<$crate::actors::CountRecords> for $actor {
            type Result = $crate::actors::Answer<Result<usize, $crate::store::StoreError>>;

            fn handle(&mut self, _: $crate::actors::CountRecords, _: &mut Self::Context) -> Self::Result {
                let table = self.$($table).+.clone();
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

/// Declares the store messages of one actor, each with its handler.
///
/// ```ignore
/// store_messages! {
///     TokenVault: |t = tables, msg|
///
///     /// Looks up a grant by grant id.
///     GetGrant(pub String) -> Result<Option<Grant>, StoreError> {
///         t.grants.get(&msg.0).await
///     }
/// }
/// ```
///
/// Each message becomes a `pub struct` (tuple or named fields, as written)
/// whose `actix::Message` result is the type after `->`. Its handler clones
/// the actor's field (`tables`) into the name given (`t`), binds the message
/// to the other name (`msg`), and answers with the body run as an
/// `async move` block through [`Answer::of`]: what the body does before its
/// first `.await` on something pending runs inside the handler.
macro_rules! store_messages {
    (@handler $actor:ident, $state:ident, $field:ident, $msg:ident, $name:ident, $result:ty, $body:block) => {
        impl actix::Message for $name {
            type Result = $result;
        }

        impl actix::Handler<$name> for $actor {
            type Result = $crate::actors::Answer<$result>;

            fn handle(&mut self, $msg: $name, _: &mut Self::Context) -> Self::Result {
                let $state = self.$field.clone();
                $crate::actors::Answer::of(async move $body)
            }
        }
    };
    ($actor:ident: |$state:ident = $field:ident, $msg:ident|) => {};
    (
        $actor:ident: |$state:ident = $field:ident, $msg:ident|
        $(#[$meta:meta])* $name:ident ( $($fields:tt)* ) -> $result:ty $body:block
        $($rest:tt)*
    ) => {
        $(#[$meta])*
        pub struct $name($($fields)*);

        $crate::actors::store_messages!(@handler $actor, $state, $field, $msg, $name, $result, $body);
        $crate::actors::store_messages!($actor: |$state = $field, $msg| $($rest)*);
    };
    (
        $actor:ident: |$state:ident = $field:ident, $msg:ident|
        $(#[$meta:meta])* $name:ident { $($fields:tt)* } -> $result:ty $body:block
        $($rest:tt)*
    ) => {
        $(#[$meta])*
        pub struct $name { $($fields)* }

        $crate::actors::store_messages!(@handler $actor, $state, $field, $msg, $name, $result, $body);
        $crate::actors::store_messages!($actor: |$state = $field, $msg| $($rest)*);
    };
}
pub(crate) use store_messages;
