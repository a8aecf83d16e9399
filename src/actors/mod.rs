//! The actors that own the service's state. Each owns its tables and an
//! expiry timer; handlers reach them only through messages. Store logic lives
//! in plain types (records, tables), so this layer stays thin.

pub mod client_registry;
pub mod codes;
pub mod token_vault;
pub mod transactions;
pub mod upstream_refresher;

use std::time::Duration;

pub use client_registry::ClientRegistry;
pub use codes::CodeStore;
pub use token_vault::TokenVault;
pub use transactions::TransactionStore;
pub use upstream_refresher::UpstreamRefresher;

/// How often an actor sweeps expired records: often enough for short TTLs,
/// at most once a minute.
pub(crate) fn purge_interval(shortest_ttl: Duration) -> Duration {
    (shortest_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
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
            type Result = actix::ResponseFuture<Result<usize, $crate::store::StoreError>>;

            fn handle(&mut self, _: $crate::actors::CountRecords, _: &mut Self::Context) -> Self::Result {
                let table = self.$table.clone();
                Box::pin(async move { table.count().await })
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
