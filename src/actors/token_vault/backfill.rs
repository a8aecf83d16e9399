//! The one-time backfill of the grant indexes.
//!
//! The earlier release stored grants without index entries (there were no
//! indexes), so the admin listings by subject or client, the kill switch
//! and a client's deletion would miss them until they expire. At start-up
//! the primary vault reads every grant, in pages, and files each under its
//! client and subject with [`crate::store::Table::index_add`], which never
//! writes the grant itself: a refresh rotating the grant meanwhile (a
//! compare-and-swap) is not undone. Entries live until the grant's end, as
//! [`super::CreateGrant`] sets them. Adding an entry twice is harmless, so
//! a run cut short is simply run again.
//!
//! A marker record in the `meta` table says the backfill was done, so later
//! starts skip it. Instances sharing a Redis that start together run it
//! once: the first claims the marker (set only when absent) with a lease it
//! renews every page; the others wait until it is done, or take over once a
//! lease lapses (its holder stopped). It runs in the background: start-up
//! and serving never wait for it; a store error (Redis not up yet) is
//! tried again every 30 seconds, for an hour.
//!
//! What it cannot see: grants written by instances of the earlier release
//! still serving after it ran (a rolling upgrade on a shared Redis). Once
//! every instance runs this release, deleting the marker
//! (`mcp-oauth-proxy:{meta}:grant-index-backfill`) and restarting one
//! instance files them too.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::VaultTables;
use crate::oauth::now_secs;
use crate::store::{StoreError, Table};

/// Where the marker is kept: (table, key).
pub const BACKFILL_MARKER: (&str, &str) = ("meta", "grant-index-backfill");

/// The marker's value once the backfill is done.
const DONE: &[u8] = b"done";
/// How long the done marker is kept (a run after it is harmless).
const DONE_FOR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a claim lasts unless renewed (every page renews it).
const LEASE: Duration = Duration::from_secs(60);
/// Grants read per page.
const PAGE: usize = 500;
/// A bound on the pages read (500 million grants).
const MAX_PAGES: usize = 1_000_000;
/// How often an instance that finds another's claim looks again, and how
/// many times (an hour in all) before leaving it to that one.
const WAIT: Duration = Duration::from_secs(5);
const MAX_WAITS: usize = 720;

/// How long to wait after a store error before trying again, and how many
/// times to try (an hour in all).
const RETRY: Duration = Duration::from_secs(30);
const MAX_ATTEMPTS: usize = 120;

/// What a run did.
#[derive(Debug, Default)]
struct Filed {
    /// Live grants read.
    grants: usize,
    /// Of those, the ones that were missing an index entry.
    missing: usize,
}

/// Runs the backfill unless it was done; logs what it did. A store that
/// fails (Redis not up yet) is tried again a little later, for an hour.
pub(super) async fn backfill(tables: VaultTables, meta: Arc<dyn Table>) {
    for attempt in 1..=MAX_ATTEMPTS {
        match run_once(&tables, &*meta).await {
            Ok(()) => return,
            Err(e) if attempt < MAX_ATTEMPTS => {
                log::warn!("grant index backfill interrupted ({e}); trying again in {RETRY:?}");
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => log::warn!("grant index backfill not done ({e}); it runs again at the next start"),
        }
    }
}

async fn run_once(tables: &VaultTables, meta: &dyn Table) -> Result<(), StoreError> {
    let Some(claim) = claimed(meta).await? else {
        return Ok(());
    };
    match fill(tables, meta).await {
        Ok(filed) => {
            meta.put(BACKFILL_MARKER.1, DONE.to_vec(), DONE_FOR).await?;
            log::info!(
                "grant index backfill done: {} grants read, {} of them (stored by the earlier release) \
                 filed by client and subject",
                filed.grants,
                filed.missing
            );
            Ok(())
        }
        Err(e) => {
            // Released, so the next attempt need not wait for the lease.
            let _ = meta.compare_and_swap(BACKFILL_MARKER.1, Some(claim), None).await;
            Err(e)
        }
    }
}

/// Claims the run: `Some(claim)` when this instance is to run it, `None`
/// when it was done (by this store's earlier start, or another instance).
async fn claimed(meta: &dyn Table) -> Result<Option<Vec<u8>>, StoreError> {
    let claim = format!("running {}", crate::crypto::random_token(8)).into_bytes();
    for _ in 0..MAX_WAITS {
        match meta.get(BACKFILL_MARKER.1).await? {
            Some(done) if done == DONE => {
                log::debug!("grant index backfill: done already");
                return Ok(None);
            }
            // Another instance runs it (or its lease, not renewed, lapses).
            Some(_) => tokio::time::sleep(WAIT).await,
            None => {
                // Written only when absent: of instances starting together, one runs it.
                if meta
                    .compare_and_swap(BACKFILL_MARKER.1, None, Some((claim.clone(), LEASE)))
                    .await?
                {
                    return Ok(Some(claim));
                }
            }
        }
    }
    log::info!("grant index backfill: left to the instance that holds it");
    Ok(None)
}

/// Files every live grant under its client and subject, a page at a time,
/// renewing the claim after each page and letting other work run between
/// pages.
async fn fill(tables: &VaultTables, meta: &dyn Table) -> Result<Filed, StoreError> {
    let (mut filed, mut cursor) = (Filed::default(), None::<String>);
    for _ in 0..MAX_PAGES {
        let page = tables.grants.scan(cursor.as_deref(), PAGE).await?;
        let now = now_secs();
        // The page's entries are written together (one commit, or one
        // pipeline, for many).
        for outcome in join_all(page.keys.iter().map(|grant_id| file_one(tables, grant_id, now))).await {
            if let Some(added) = outcome? {
                filed.grants += 1;
                filed.missing += usize::from(added > 0);
            }
        }
        meta.touch(BACKFILL_MARKER.1, LEASE).await?;
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(filed),
        }
        tokio::task::yield_now().await;
    }
    log::warn!("grant index backfill: stopped after {MAX_PAGES} pages");
    Ok(filed)
}

/// Files one grant as [`super::CreateGrant`] would have: the entries it
/// added, or `None` when the grant is gone (or does not open).
async fn file_one(tables: &VaultTables, grant_id: &str, now: u64) -> Result<Option<usize>, StoreError> {
    let Some(grant) = tables.grants.get(grant_id).await? else {
        return Ok(None);
    };
    let adds = tables
        .index_entries(&grant, now)
        .into_iter()
        .map(|entry| async move { tables.grants.index_add(&entry.index, grant_id, entry.ttl).await });
    let mut added = 0;
    for outcome in join_all(adds).await {
        added += usize::from(outcome?);
    }
    Ok(Some(added))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::token_vault::{GrantIndexes, TokenVault};
    use crate::crypto::Sealer;
    use crate::oauth::scope::Scopes;
    use crate::records::{Grant, UpstreamTokens};
    use crate::store::memory::MemoryTable;
    use crate::store::SealedTable;

    const HOUR: Duration = Duration::from_secs(3600);
    const MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

    fn grant(client_id: &str, subject: &str, created_at: u64) -> Grant {
        Grant {
            client_id: client_id.into(),
            subject: subject.into(),
            scopes: Scopes::parse("openid"),
            resource: "https://mcp.example.com/mcp".into(),
            claims: "{}".into(),
            upstream: UpstreamTokens {
                access_token: "up-at".into(),
                token_type: "Bearer".into(),
                refresh_token: None,
                id_token: None,
                expires_at: None,
                scope: None,
            },
            current: None,
            previous: None,
            passthrough_refresh_hash: None,
            revoked_access: Vec::new(),
            created_at,
            sign_in_claims: Some("{}".into()),
        }
    }

    fn vault() -> (TokenVault, Arc<dyn Table>, Arc<dyn Table>) {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let raw: Arc<dyn Table> = Arc::new(MemoryTable::default());
        let vault = TokenVault::new(
            SealedTable::new("grant", raw.clone(), sealer.clone()),
            SealedTable::new("token", Arc::new(MemoryTable::default()), sealer),
            HOUR,
            HOUR,
            MAX_LIFETIME,
            GrantIndexes::new(b"consent-signing-key-consent-signing-key"),
        );
        (vault, raw, Arc::new(MemoryTable::default()))
    }

    async fn filed(raw: &dyn Table, index: &str) -> Vec<String> {
        raw.index_scan(index, None, 100).await.unwrap().keys
    }

    #[actix_rt::test]
    async fn the_backfill_files_each_live_grant_once_and_later_runs_skip_it() {
        let (vault, raw, meta) = vault();
        let tables = &vault.tables;
        let now = now_secs();
        // More grants than one page holds, none filed (the earlier release).
        let count = PAGE + 3;
        for i in 0..count {
            let record = grant(&format!("client-{}", i % 2), &format!("user-{i}"), now);
            tables.grants.put(&format!("g{i:04}"), &record, HOUR).await.unwrap();
        }
        // One filed already (this release), one whose grant has ended.
        let current = grant("client-0", "carol", now);
        let entries = tables.index_entries(&current, now);
        tables
            .grants
            .put_indexed("current", &current, HOUR, &entries)
            .await
            .unwrap();
        let ended = grant("client-0", "dave", now - MAX_LIFETIME.as_secs() - 1);
        tables.grants.put("ended", &ended, HOUR).await.unwrap();

        backfill(tables.clone(), meta.clone()).await;

        let indexes = &tables.indexes;
        assert_eq!(filed(&*raw, &indexes.by_subject("user-0")).await, ["g0000"]);
        assert_eq!(
            filed(&*raw, &indexes.by_subject(&format!("user-{}", count - 1)))
                .await
                .len(),
            1
        );
        assert_eq!(filed(&*raw, &indexes.by_subject("carol")).await, ["current"]);
        assert_eq!(
            filed(&*raw, &indexes.by_subject("dave")).await,
            Vec::<String>::new(),
            "an ended grant"
        );
        let mut by_client = Vec::new();
        let mut cursor = None;
        for _ in 0..10 {
            let page = raw
                .index_scan(&indexes.by_client("client-1"), cursor.as_deref(), 100)
                .await
                .unwrap();
            by_client.extend(page.keys);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(by_client.len(), count / 2, "every other grant is client-1's");
        assert_eq!(meta.get(BACKFILL_MARKER.1).await.unwrap().as_deref(), Some(DONE));
        // The grants are as they were written: the backfill wrote no record.
        assert_eq!(tables.grants.get("g0000").await.unwrap().unwrap().subject, "user-0");

        // A later start skips it: an entry removed stays removed.
        assert!(raw.index_remove(&indexes.by_subject("user-0"), "g0000").await.unwrap());
        backfill(tables.clone(), meta.clone()).await;
        assert_eq!(filed(&*raw, &indexes.by_subject("user-0")).await, Vec::<String>::new());
        // Without its marker (a store of the earlier release), it runs again.
        meta.delete(BACKFILL_MARKER.1).await.unwrap();
        backfill(tables.clone(), meta).await;
        assert_eq!(filed(&*raw, &indexes.by_subject("user-0")).await, ["g0000"]);
    }
}
