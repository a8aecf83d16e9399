//! The embedded backend's own rules (closing, reopening, flushes, the
//! journal); the `Table` contract itself is the storage conformance suite
//! (tests/api/store_contract.rs).

use super::*;
use crate::store::Table;

const HOUR: Duration = Duration::from_secs(3600);

/// A database in a fresh temporary directory, removed when dropped.
struct TempStore {
    dir: PathBuf,
    db: Option<Database>,
    /// Dropped after the database is closed (see `Drop`).
    _temp: tempfile::TempDir,
}

impl TempStore {
    fn open(name: &str) -> TempStore {
        let temp = tempfile::Builder::new()
            .prefix(&format!("mcp-oauth-proxy-embedded-{name}-"))
            .tempdir()
            .unwrap();
        // A directory the store creates itself, as on a first start.
        let dir = temp.path().join("data");
        let db = Database::open(&dir).unwrap();
        TempStore {
            dir,
            db: Some(db),
            _temp: temp,
        }
    }

    fn table(&self, name: &'static str) -> EmbeddedTable {
        self.table_counted(name, Counting::Kept)
    }

    /// Closes the database (as the proxy's shutdown does) and opens
    /// the directory again at once.
    fn reopen(&mut self) {
        if let Some(db) = self.db.take() {
            db.close();
        }
        self.db = Some(Database::open(&self.dir).unwrap());
    }

    fn table_counted(&self, name: &'static str, counting: Counting) -> EmbeddedTable {
        self.db.as_ref().unwrap().table(name, counting).unwrap()
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            db.close();
        }
    }
}

#[actix_rt::test]
async fn a_closed_database_unlocks_its_directory_at_once_even_while_its_tables_are_held() {
    let mut store = TempStore::open("close");
    let table = store.table("grant");
    table.put("g", b"kept".to_vec(), HOUR).await.unwrap();
    // Queued, not yet committed, when the close begins: committed by it.
    let queued = table.put("late", b"also kept".to_vec(), HOUR);
    store.db.take().unwrap().close();
    queued.await.unwrap();
    // The handle outlives the close: it answers, but no longer reaches the store.
    assert!(matches!(table.get("g").await, Err(StoreError::Unavailable(_))));
    assert!(matches!(
        table.put("after", b"x".to_vec(), HOUR).await,
        Err(StoreError::Unavailable(_))
    ));
    store.db = Some(Database::open(&store.dir).expect("the directory is unlocked once close returns"));
    let reopened = store.table("grant");
    assert_eq!(reopened.get("g").await.unwrap(), Some(b"kept".to_vec()));
    assert_eq!(reopened.get("late").await.unwrap(), Some(b"also kept".to_vec()));
    assert_eq!(reopened.get("after").await.unwrap(), None);
    assert_eq!(reopened.count().await.unwrap(), 2);
}

#[actix_rt::test]
async fn concurrent_takes_of_one_record_in_one_batch_give_it_to_one_caller() {
    let store = TempStore::open("takes");
    let table = store.table("code");
    table.put("code", b"x".to_vec(), HOUR).await.unwrap();
    let takes: Vec<_> = (0..50).map(|_| table.take("code")).collect();
    let won = futures_util::future::join_all(takes)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    assert_eq!(won, 1);
}

#[actix_rt::test]
async fn a_table_counted_on_request_counts_its_live_records_after_every_kind_of_write() {
    let mut store = TempStore::open("count-on-request");
    let table = store.table_counted("grant", Counting::OnRequest);
    for key in ["a", "b", "c", "d"] {
        table.put(key, b"x".to_vec(), HOUR).await.unwrap();
    }
    table.put("a", b"replaced".to_vec(), HOUR).await.unwrap();
    assert_eq!(table.count().await.unwrap(), 4, "a replaced record is counted once");
    assert!(table.take("b").await.unwrap().is_some());
    assert!(table.delete("c").await.unwrap());
    assert!(table
        .compare_and_swap("e", None, Some((b"y".to_vec(), HOUR)))
        .await
        .unwrap());
    table
        .put("short", b"z".to_vec(), Duration::from_millis(1))
        .await
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        table.count().await.unwrap(),
        3,
        "a, d and e; the expired record is not counted"
    );
    drop(table);

    store.reopen();
    let table = store.table_counted("grant", Counting::OnRequest);
    assert_eq!(table.count().await.unwrap(), 3);
    assert_eq!(table.get("a").await.unwrap(), Some(b"replaced".to_vec()));
}

#[actix_rt::test]
async fn touch_extends_a_live_record_only_and_keeps_it_as_it_is() {
    let store = TempStore::open("touch");
    let table = store.table("client");
    table
        .put("a", b"one".to_vec(), Duration::from_millis(30))
        .await
        .unwrap();
    table.put("b", b"two".to_vec(), Duration::from_millis(1)).await.unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(table.touch("a", HOUR).await.unwrap());
    assert!(!table.touch("b", HOUR).await.unwrap(), "expired");
    assert!(!table.touch("c", HOUR).await.unwrap(), "absent");
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(
        table.get("a").await.unwrap(),
        Some(b"one".to_vec()),
        "outlived its first TTL"
    );
    assert_eq!(table.get("b").await.unwrap(), None);
    assert_eq!(
        table.count().await.unwrap(),
        2,
        "touch neither adds nor removes records"
    );
}

#[actix_rt::test]
async fn records_written_past_several_memtables_survive_flushes_and_a_reopen() {
    let mut store = TempStore::open("flushes");
    let table = store.table("grant");
    let record = vec![7u8; 1024];
    let written = 3 * MEMTABLE_BYTES as usize / record.len();
    for chunk in (0..written).collect::<Vec<_>>().chunks(256) {
        let puts: Vec<_> = chunk
            .iter()
            .map(|i| table.put(&format!("g{i}"), record.clone(), HOUR))
            .collect();
        for put in futures_util::future::join_all(puts).await {
            put.unwrap();
        }
    }
    assert_eq!(table.take("g0").await.unwrap(), Some(record.clone()));
    drop(table);
    let flushed_tables: usize = std::fs::read_dir(store.dir.join("store/keyspaces"))
        .unwrap()
        .filter_map(|keyspace| std::fs::read_dir(keyspace.ok()?.path().join("tables")).ok())
        .map(|tables| tables.count())
        .sum();
    assert!(flushed_tables >= 2, "the memtable was flushed to disk tables");

    store.reopen();
    let table = store.table("grant");
    assert_eq!(table.count().await.unwrap(), written - 1);
    assert_eq!(table.get("g0").await.unwrap(), None, "the take outlived the reopen");
    for i in [1, written / 2, written - 1] {
        assert_eq!(table.get(&format!("g{i}")).await.unwrap(), Some(record.clone()));
    }
}

/// The vendored fjall writes the journal's blocks ahead of its records
/// (vendor/README.md): a commit's fdatasync then allocates no blocks and
/// writes no inode. Without the patch the journal is a 64 MiB hole with
/// one block of records.
#[actix_rt::test]
async fn the_journal_is_written_ahead_of_its_records() {
    use std::os::unix::fs::MetadataExt;

    let store = TempStore::open("journal");
    let table = store.table("code");
    table.put("a", b"one".to_vec(), HOUR).await.unwrap();
    let journals: Vec<_> = std::fs::read_dir(store.dir.join("store"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jnl"))
        .map(|path| path.metadata().unwrap())
        .collect();
    assert_eq!(journals.len(), 1);
    let allocated = journals[0].blocks() * 512;
    assert!(allocated >= 512 * 1024, "{allocated} bytes of the journal allocated");
    assert!(allocated < journals[0].len(), "the rest is still a hole");
}

#[actix_rt::test]
async fn a_take_answered_before_its_sync_is_still_single_use_and_kept_after_the_next_write() {
    let mut store = TempStore::open("early");
    let table = store.table("transaction");
    table.put("t", b"x".to_vec(), HOUR).await.unwrap();
    let takes: Vec<_> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                table.take_before_write("t")
            } else {
                table.take("t")
            }
        })
        .collect();
    let won = futures_util::future::join_all(takes)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    assert_eq!(won, 1, "early or not, a record is taken once");
    assert_eq!(table.count().await.unwrap(), 0);
    table.put("code", b"c".to_vec(), HOUR).await.unwrap();
    drop(table);

    store.reopen();
    let table = store.table("transaction");
    assert_eq!(table.get("t").await.unwrap(), None);
    assert_eq!(table.get("code").await.unwrap(), Some(b"c".to_vec()));
}

#[actix_rt::test]
async fn a_swap_answered_before_its_sync_is_made_once_and_a_refused_one_sees_the_winner() {
    let mut store = TempStore::open("early-swap");
    let table = store.table("code");
    table.put("c", b"fresh".to_vec(), HOUR).await.unwrap();
    let fresh = Some(b"fresh".to_vec());
    // A large write keeps the writer busy while the swaps queue up, so
    // they share one batch: the winner is decided before the others.
    let slow = table.put("large", vec![0; 8 << 20], HOUR);
    let swaps: Vec<_> = (0..20u8)
        .map(|i| {
            let new = Some((vec![b'r', i], HOUR));
            let swap = table.compare_and_swap_before_write("c", fresh.clone(), new);
            let table = table.clone();
            async move {
                let made = swap.await.unwrap();
                // What a caller that lost would read before trying again.
                (made, table.get("c").await.unwrap())
            }
        })
        .collect();
    let outcomes = futures_util::future::join_all(swaps).await;
    slow.await.unwrap();
    let winners: Vec<u8> = (0..20u8).filter(|&i| outcomes[i as usize].0).collect();
    assert_eq!(winners.len(), 1, "early or not, one swap from the same value is made");
    let winner = Some(vec![b'r', winners[0]]);
    for (made, seen) in &outcomes {
        if !made {
            assert_eq!(
                seen, &winner,
                "a refused swap resolves only once the winning one is visible"
            );
        }
    }
    table.put("grant", b"g".to_vec(), HOUR).await.unwrap();
    drop(table);

    store.reopen();
    let table = store.table("code");
    assert_eq!(
        table.get("c").await.unwrap(),
        winner,
        "durable with the caller's next write"
    );
    assert_eq!(table.get("grant").await.unwrap(), Some(b"g".to_vec()));
}
