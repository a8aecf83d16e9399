//! The storage contract, written once: every rule of [`Table`] (see
//! src/store/mod.rs) as one function over a table, run against every
//! backend (memory; directory, in a fresh temporary directory; Redis, a
//! redis-server of the test's own). The macro at the end makes one test per
//! (backend, rule), so a failure names both:
//! `store_contract::redis::touch_extends_only_live_records`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mcp_oauth_proxy::config::StorageSetting;
use mcp_oauth_proxy::store::{Backend, Counting, IndexEntry, Page, Table};
use mcp_oauth_proxy::tls::OutboundTls;

use crate::redis_server::RedisServer;

const HOUR: Duration = Duration::from_secs(3600);
/// A lifetime that is over by the time [`outlive`] returns.
const BRIEF: Duration = Duration::from_millis(50);
/// A lifetime still running after [`outlive`] (with room for a slow sync),
/// and over when waited for again.
const SHORT: Duration = Duration::from_secs(2);
/// Racers in the concurrency rules.
const TASKS: usize = 32;
/// A bound on every wait for tasks to finish.
const BOUND: Duration = Duration::from_secs(20);

/// Lets every record written with [`BRIEF`] expire.
async fn outlive() {
    actix_rt::time::sleep(BRIEF * 3).await;
}

/// One backend, opened through the proxy's own `Backend::open`, and what it
/// needs to be cleaned up after.
struct Store {
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<RedisServer>,
}

impl Store {
    fn open(storage: StorageSetting) -> Backend {
        let tls = OutboundTls::new(None).unwrap();
        match Backend::open(&storage, &tls) {
            Ok(backend) => backend,
            Err(e) => panic!("the backend opens: {e}"),
        }
    }

    async fn memory() -> Store {
        Store {
            backend: Store::open(StorageSetting::Memory),
            _dir: None,
            _redis: None,
        }
    }

    async fn directory() -> Store {
        let dir = tempfile::tempdir().unwrap();
        // A directory the store creates itself, as on a first start.
        let data = dir.path().join("data");
        Store {
            backend: Store::open(StorageSetting::Directory(data)),
            _dir: Some(dir),
            _redis: None,
        }
    }

    async fn redis() -> Store {
        let redis = RedisServer::start().await;
        Store {
            backend: Store::open(StorageSetting::Redis(redis.url())),
            _dir: None,
            _redis: Some(redis),
        }
    }

    fn table(&self, name: &'static str) -> Arc<dyn Table> {
        self.counted(name, Counting::Kept)
    }

    fn counted(&self, name: &'static str, counting: Counting) -> Arc<dyn Table> {
        match self.backend.table(name, counting) {
            Ok(table) => table,
            Err(e) => panic!("table {name} opens: {e}"),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closed before the fields drop, so the directory goes after the
        // store has released it.
        self.backend.close();
    }
}

fn bytes(text: &str) -> Option<Vec<u8>> {
    Some(text.as_bytes().to_vec())
}

/// Runs every future as a task of its own and waits, bounded, for them all.
async fn race<T: 'static>(futures: Vec<impl std::future::Future<Output = T> + 'static>) -> Vec<T> {
    let tasks: Vec<_> = futures.into_iter().map(actix_rt::spawn).collect();
    let done = actix_rt::time::timeout(BOUND, join_all(tasks))
        .await
        .expect("every task finishes in time");
    done.into_iter().map(|task| task.expect("no task panics")).collect()
}

// ---- The rules ----

async fn a_put_record_reads_back_until_deleted_and_delete_says_whether_it_was_there(store: &Store) {
    let table = store.table("code");
    assert_eq!(table.get("a").await.unwrap(), None);
    table.put("a", b"one".to_vec(), HOUR).await.unwrap();
    assert_eq!(table.get("a").await.unwrap(), bytes("one"));
    table.put("a", b"two".to_vec(), HOUR).await.unwrap();
    assert_eq!(table.get("a").await.unwrap(), bytes("two"), "a put replaces");
    assert!(table.delete("a").await.unwrap());
    assert_eq!(table.get("a").await.unwrap(), None);
    assert!(!table.delete("a").await.unwrap(), "nothing left to delete");
}

async fn a_taken_record_is_gone_and_a_second_take_finds_nothing(store: &Store) {
    let table = store.table("code");
    table.put("a", b"one".to_vec(), HOUR).await.unwrap();
    table.put("b", b"two".to_vec(), HOUR).await.unwrap();
    assert_eq!(table.take("a").await.unwrap(), bytes("one"));
    assert_eq!(table.take("a").await.unwrap(), None, "a record is taken once");
    assert_eq!(table.get("a").await.unwrap(), None);
    assert_eq!(table.take_before_write("b").await.unwrap(), bytes("two"));
    assert_eq!(table.take_before_write("b").await.unwrap(), None);
    assert_eq!(table.take("b").await.unwrap(), None);
    assert_eq!(table.take("never").await.unwrap(), None);
}

async fn concurrent_takes_from_many_tasks_give_a_record_to_exactly_one(store: &Store) {
    let table = store.table("transaction");
    for round in 0..5 {
        table
            .put("t", format!("round {round}").into_bytes(), HOUR)
            .await
            .unwrap();
        let takes = (0..TASKS)
            .map(|i| {
                let table = table.clone();
                async move {
                    if i % 2 == 0 {
                        table.take_before_write("t").await
                    } else {
                        table.take("t").await
                    }
                }
            })
            .collect();
        let taken: Vec<Vec<u8>> = race(takes).await.into_iter().filter_map(|r| r.unwrap()).collect();
        assert_eq!(taken, [format!("round {round}").into_bytes()], "round {round}");
        assert_eq!(table.get("t").await.unwrap(), None);
    }
}

/// A compare-and-swap of `k` to `new`, as a caller of
/// `compare_and_swap_before_write` makes it when `before_write`: a swap that
/// is made may answer before it is visible, and that caller makes its durable
/// write next, with which the swap is visible.
async fn swap(table: &dyn Table, before_write: bool, expected: Option<Vec<u8>>, new: Option<&str>) -> bool {
    let new = new.map(|text| (text.as_bytes().to_vec(), HOUR));
    if !before_write {
        return table.compare_and_swap("k", expected, new).await.unwrap();
    }
    let made = table.compare_and_swap_before_write("k", expected, new).await.unwrap();
    if made {
        table.put("next", b"the caller's write".to_vec(), HOUR).await.unwrap();
    }
    made
}

async fn compare_and_swap_writes_only_over_the_expected_value(store: &Store) {
    let table = store.table("grant");
    let table = &*table;
    for before_write in [false, true] {
        let case = if before_write { "before a write" } else { "plain" };
        assert!(
            !swap(table, before_write, bytes("one"), Some("x")).await,
            "{case}: absent is not a value"
        );
        assert_eq!(table.get("k").await.unwrap(), None, "{case}");
        assert!(
            swap(table, before_write, None, Some("one")).await,
            "{case}: absent as expected"
        );
        assert!(
            !swap(table, before_write, None, Some("x")).await,
            "{case}: no longer absent"
        );
        assert!(
            !swap(table, before_write, bytes("other"), Some("x")).await,
            "{case}: another value"
        );
        assert_eq!(
            table.get("k").await.unwrap(),
            bytes("one"),
            "{case}: refused swaps write nothing"
        );
        assert!(swap(table, before_write, bytes("one"), Some("two")).await, "{case}");
        assert_eq!(table.get("k").await.unwrap(), bytes("two"), "{case}");
        assert!(
            !swap(table, before_write, bytes("one"), None).await,
            "{case}: a stale delete"
        );
        assert!(swap(table, before_write, bytes("two"), None).await, "{case}: a delete");
        assert_eq!(table.get("k").await.unwrap(), None, "{case}");
    }
}

async fn concurrent_compare_and_swaps_from_many_tasks_let_exactly_one_win_per_round(store: &Store) {
    let table = store.table("grant");
    table.put("k", b"start".to_vec(), HOUR).await.unwrap();
    for round in 0..10 {
        let expected = table.get("k").await.unwrap();
        assert!(expected.is_some(), "round {round}");
        let swaps = (0..TASKS)
            .map(|i| {
                let (table, expected) = (table.clone(), expected.clone());
                let new = format!("round {round} task {i}").into_bytes();
                async move {
                    let swap = if i % 2 == 0 {
                        table.compare_and_swap("k", expected, Some((new.clone(), HOUR)))
                    } else {
                        table.compare_and_swap_before_write("k", expected, Some((new.clone(), HOUR)))
                    };
                    swap.await.unwrap().then_some(new)
                }
            })
            .collect();
        let winners: Vec<Vec<u8>> = race(swaps).await.into_iter().flatten().collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one swap from the same value is made"
        );
        assert_eq!(table.get("k").await.unwrap().as_ref(), winners.first(), "round {round}");
    }
}

async fn a_refused_swap_before_a_write_is_answered_only_once_the_winner_is_visible(store: &Store) {
    let table = store.table("code");
    table.put("c", b"fresh".to_vec(), HOUR).await.unwrap();
    let swaps = (0..TASKS)
        .map(|i| {
            let table = table.clone();
            let new = format!("rotated {i}").into_bytes();
            async move {
                let made = table
                    .compare_and_swap_before_write("c", bytes("fresh"), Some((new.clone(), HOUR)))
                    .await
                    .unwrap();
                // What a caller that lost reads before trying again.
                (made.then_some(new), table.get("c").await.unwrap())
            }
        })
        .collect();
    let outcomes = race(swaps).await;
    let winners: Vec<&Vec<u8>> = outcomes.iter().filter_map(|(won, _)| won.as_ref()).collect();
    assert_eq!(winners.len(), 1);
    for (won, seen) in &outcomes {
        if won.is_none() {
            assert_eq!(seen.as_ref(), Some(winners[0]), "a refused swap sees the winner");
        }
    }
}

async fn touch_extends_only_live_records(store: &Store) {
    let table = store.table("client");
    table.put("live", b"one".to_vec(), SHORT).await.unwrap();
    table.put("expired", b"two".to_vec(), BRIEF).await.unwrap();
    outlive().await;
    assert!(table.touch("live", HOUR).await.unwrap());
    assert!(!table.touch("expired", HOUR).await.unwrap(), "expired");
    assert!(!table.touch("absent", HOUR).await.unwrap(), "absent");
    assert_eq!(table.get("expired").await.unwrap(), None, "a touch revives nothing");
    assert_eq!(table.get("absent").await.unwrap(), None, "a touch creates nothing");
    actix_rt::time::sleep(SHORT).await;
    assert_eq!(
        table.get("live").await.unwrap(),
        bytes("one"),
        "outlived its first lifetime, as it was"
    );
}

async fn an_expired_record_is_absent_before_any_purge(store: &Store) {
    let table = store.table("transaction");
    for key in ["get", "take", "swap", "replace", "listed"] {
        table.put(key, b"old".to_vec(), BRIEF).await.unwrap();
    }
    outlive().await;
    assert_eq!(table.get("get").await.unwrap(), None);
    assert_eq!(table.take("take").await.unwrap(), None);
    assert!(
        !table
            .compare_and_swap("swap", bytes("old"), Some((b"new".to_vec(), HOUR)))
            .await
            .unwrap(),
        "an expired value is not there to be swapped"
    );
    assert!(
        table
            .compare_and_swap("replace", None, Some((b"new".to_vec(), HOUR)))
            .await
            .unwrap(),
        "an expired record swaps as absent"
    );
    assert_eq!(table.get("replace").await.unwrap(), bytes("new"));
    assert_eq!(table.soonest_expiring(10).await.unwrap(), ["replace"]);
}

async fn purge_removes_only_expired_records_and_says_how_many(store: &Store) {
    let table = store.table("transaction");
    for key in ["old1", "old2", "old3"] {
        table.put(key, b"old".to_vec(), BRIEF).await.unwrap();
    }
    table.put("new1", b"new".to_vec(), HOUR).await.unwrap();
    table.put("new2", b"new".to_vec(), SHORT).await.unwrap();
    outlive().await;
    assert_eq!(table.purge_expired().await.unwrap(), 3);
    assert_eq!(table.purge_expired().await.unwrap(), 0, "nothing left to purge");
    assert_eq!(table.count().await.unwrap(), 2);
    assert_eq!(table.get("new1").await.unwrap(), bytes("new"));
    assert_eq!(table.get("new2").await.unwrap(), bytes("new"));
}

async fn count_counts_live_records(store: &Store) {
    for (name, counting) in [
        ("count_kept", Counting::Kept),
        ("count_on_request", Counting::OnRequest),
    ] {
        let table = store.counted(name, counting);
        assert_eq!(table.count().await.unwrap(), 0, "{counting:?}");
        for key in ["a", "b", "c", "d"] {
            table.put(key, b"x".to_vec(), HOUR).await.unwrap();
        }
        table.put("a", b"replaced".to_vec(), HOUR).await.unwrap();
        assert_eq!(
            table.count().await.unwrap(),
            4,
            "{counting:?}: a replaced record counts once"
        );
        assert!(table.take("b").await.unwrap().is_some());
        assert!(table.delete("c").await.unwrap());
        assert_eq!(table.count().await.unwrap(), 2, "{counting:?}: a and d");
        assert!(table
            .compare_and_swap("e", None, Some((b"y".to_vec(), HOUR)))
            .await
            .unwrap());
        assert!(table
            .compare_and_swap("a", bytes("replaced"), Some((b"z".to_vec(), HOUR)))
            .await
            .unwrap());
        assert!(table.touch("d", HOUR).await.unwrap());
        assert_eq!(table.count().await.unwrap(), 3, "{counting:?}: a, d and e");
        assert!(table.compare_and_swap("e", bytes("y"), None).await.unwrap());
        table.put("brief", b"x".to_vec(), BRIEF).await.unwrap();
        outlive().await;
        table.purge_expired().await.unwrap();
        assert_eq!(
            table.count().await.unwrap(),
            2,
            "{counting:?}: a and d; neither the deleted nor the expired one"
        );
    }
}

async fn soonest_expiring_lists_live_keys_by_expiry(store: &Store) {
    let table = store.table("client");
    table.put("late", b"1".to_vec(), Duration::from_secs(90)).await.unwrap();
    table.put("soon", b"2".to_vec(), Duration::from_secs(30)).await.unwrap();
    table.put("gone", b"3".to_vec(), BRIEF).await.unwrap();
    table
        .put("middle", b"4".to_vec(), Duration::from_secs(60))
        .await
        .unwrap();
    table
        .put("taken", b"5".to_vec(), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(table.take("taken").await.unwrap().is_some());
    outlive().await;
    assert_eq!(table.soonest_expiring(2).await.unwrap(), ["soon", "middle"]);
    assert_eq!(table.soonest_expiring(10).await.unwrap(), ["soon", "middle", "late"]);
    assert!(table.touch("soon", Duration::from_secs(120)).await.unwrap());
    assert_eq!(
        table.soonest_expiring(10).await.unwrap(),
        ["middle", "late", "soon"],
        "a touch moves a record back"
    );
    assert!(table.soonest_expiring(0).await.unwrap().is_empty());
}

async fn tables_of_different_names_keep_their_records_apart(store: &Store) {
    let (codes, grants) = (store.table("code"), store.table("grant"));
    codes.put("k", b"code".to_vec(), HOUR).await.unwrap();
    assert_eq!(grants.get("k").await.unwrap(), None);
    assert_eq!(grants.count().await.unwrap(), 0);
    grants.put("k", b"grant".to_vec(), HOUR).await.unwrap();
    assert_eq!(codes.take("k").await.unwrap(), bytes("code"));
    assert_eq!(grants.get("k").await.unwrap(), bytes("grant"));
    assert_eq!(codes.count().await.unwrap(), 0);
    assert_eq!(grants.count().await.unwrap(), 1);
}

/// A table whose reads are remembered has a generation (Redis: once it
/// follows the server's invalidations), and it moves on after every write.
async fn the_generation_of_a_remembered_table_moves_on_after_every_write(store: &Store) {
    let table = store.backend.remembered_table("grant", Counting::Kept).unwrap();
    let started = Instant::now();
    while table.generation().is_none() {
        assert!(started.elapsed() < BOUND, "the table gets a generation");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen = table.generation();
    let mut moved_on = |write: &str| {
        let now = table.generation();
        assert!(now.is_some() && now != seen, "{write}: {seen:?} then {now:?}");
        seen = now;
    };
    table.put("g", b"one".to_vec(), HOUR).await.unwrap();
    moved_on("put");
    assert!(table
        .compare_and_swap("g", bytes("one"), Some((b"two".to_vec(), HOUR)))
        .await
        .unwrap());
    moved_on("compare_and_swap");
    // A swap before a write may answer before it is visible; the caller's
    // write comes next.
    assert!(table
        .compare_and_swap_before_write("g", bytes("two"), Some((b"three".to_vec(), HOUR)))
        .await
        .unwrap());
    table.put("next", b"the caller's write".to_vec(), HOUR).await.unwrap();
    moved_on("compare_and_swap_before_write, then a put");
    assert_eq!(table.take("g").await.unwrap(), bytes("three"));
    moved_on("take");
    table.put("g", b"four".to_vec(), HOUR).await.unwrap();
    moved_on("put");
    assert_eq!(table.take_before_write("g").await.unwrap(), bytes("four"));
    table.put("next", b"the caller's write".to_vec(), HOUR).await.unwrap();
    moved_on("take_before_write, then a put");
    table.put("g", b"five".to_vec(), HOUR).await.unwrap();
    moved_on("put");
    assert!(table.delete("g").await.unwrap());
    moved_on("delete");
    let entry = [IndexEntry {
        index: "client/a".into(),
        ttl: HOUR,
    }];
    table.put_indexed("g", b"six".to_vec(), HOUR, &entry).await.unwrap();
    moved_on("put_indexed");
}

/// Every page of a scan with `limit`, following cursors (bounded).
async fn all_pages(limit: usize, mut read: impl AsyncFnMut(Option<String>) -> Page) -> Vec<Vec<String>> {
    let (mut pages, mut cursor) = (Vec::new(), None);
    for _ in 0..100 {
        let page = read(cursor.take()).await;
        assert!(page.keys.len() <= limit, "a page holds at most {limit}: {page:?}");
        pages.push(page.keys);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return pages,
        }
    }
    panic!("the scan never ended: {pages:?}");
}

fn sorted(pages: &[Vec<String>]) -> Vec<String> {
    let mut keys: Vec<String> = pages.concat();
    keys.sort();
    keys
}

fn names(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

async fn scan_pages_through_every_live_key_once(store: &Store) {
    let table = store.table("client");
    for key in ["e", "a", "d", "b", "c"] {
        table.put(key, b"x".to_vec(), HOUR).await.unwrap();
    }
    table.put("gone", b"x".to_vec(), BRIEF).await.unwrap();
    outlive().await;
    let pages = all_pages(2, async |cursor| table.scan(cursor.as_deref(), 2).await.unwrap()).await;
    assert_eq!(sorted(&pages), names(&["a", "b", "c", "d", "e"]), "{pages:?}");
    assert!(pages.len() >= 3, "five keys in pages of two: {pages:?}");
    let one_page = table.scan(None, 10).await.unwrap();
    assert_eq!(one_page.keys.len(), 5);
    assert_eq!(one_page.next, None, "a page that is not full is the last");
    assert_eq!(store.table("code").scan(None, 10).await.unwrap(), Page::default());
}

fn entries(indexes: &[&str], ttl: Duration) -> Vec<IndexEntry> {
    indexes
        .iter()
        .map(|index| IndexEntry {
            index: index.to_string(),
            ttl,
        })
        .collect()
}

async fn put_indexed_files_the_record_under_each_index_and_index_scan_pages_through_them(store: &Store) {
    let table = store.table("grant");
    for (key, indexes) in [
        ("g1", &["client/a", "sub/x"][..]),
        ("g2", &["client/a", "sub/y"]),
        ("g3", &["client/b", "sub/x"]),
        ("g4", &["client/a", "sub/x"]),
        ("g5", &["client/a"]),
    ] {
        table
            .put_indexed(key, key.as_bytes().to_vec(), HOUR, &entries(indexes, HOUR))
            .await
            .unwrap();
        assert_eq!(table.get(key).await.unwrap(), bytes(key), "the record is a record");
    }
    // Written again: filed once, not twice.
    table
        .put_indexed("g1", b"g1".to_vec(), HOUR, &entries(&["client/a", "sub/x"], HOUR))
        .await
        .unwrap();
    let scan = |index: &'static str| {
        let table = table.clone();
        async move {
            all_pages(2, async |cursor| {
                table.index_scan(index, cursor.as_deref(), 2).await.unwrap()
            })
            .await
        }
    };
    assert_eq!(sorted(&scan("client/a").await), names(&["g1", "g2", "g4", "g5"]));
    assert_eq!(sorted(&scan("sub/x").await), names(&["g1", "g3", "g4"]));
    assert_eq!(sorted(&scan("client/b").await), names(&["g3"]));
    assert_eq!(sorted(&scan("client/c").await), Vec::<String>::new());
    // A prefix of another index's name is another index.
    assert_eq!(sorted(&scan("client/").await), Vec::<String>::new());
    assert_eq!(table.count().await.unwrap(), 5, "entries are not records");
    let listed = all_pages(10, async |cursor| table.scan(cursor.as_deref(), 10).await.unwrap()).await;
    assert_eq!(
        sorted(&listed),
        names(&["g1", "g2", "g3", "g4", "g5"]),
        "nor listed as records"
    );
}

async fn index_entries_live_by_their_own_lifetime_until_removed(store: &Store) {
    let table = store.table("grant");
    table
        .put_indexed("short", b"s".to_vec(), HOUR, &entries(&["client/a"], BRIEF))
        .await
        .unwrap();
    table
        .put_indexed("long", b"l".to_vec(), HOUR, &entries(&["client/a"], HOUR))
        .await
        .unwrap();
    outlive().await;
    let page = table.index_scan("client/a", None, 10).await.unwrap();
    assert_eq!(page.keys, names(&["long"]), "an expired entry is not listed");
    assert_eq!(table.get("short").await.unwrap(), bytes("s"), "its record lives on");
    // A record that goes leaves its entry, for the reader to remove.
    assert!(table.delete("long").await.unwrap());
    assert_eq!(
        table.index_scan("client/a", None, 10).await.unwrap().keys,
        names(&["long"])
    );
    assert!(table.index_remove("client/a", "long").await.unwrap());
    assert!(!table.index_remove("client/a", "long").await.unwrap(), "removed once");
    assert_eq!(table.index_scan("client/a", None, 10).await.unwrap(), Page::default());
    table.purge_expired().await.unwrap();
    assert_eq!(table.get("short").await.unwrap(), bytes("s"));
}

/// A record and its entries are one write: a reader that finds a key in an
/// index, while other tasks write, always finds its record.
async fn an_index_entry_is_never_visible_before_its_record(store: &Store) {
    let table = store.table("grant");
    let writers = (0..TASKS).map(|i| {
        let table = table.clone();
        async move {
            let key = format!("g{i:02}");
            table
                .put_indexed(&key, key.as_bytes().to_vec(), HOUR, &entries(&["client/racing"], HOUR))
                .await
                .unwrap();
        }
    });
    let writing = actix_rt::spawn(join_all(writers));
    let mut seen = 0;
    while seen < TASKS {
        let page = table.index_scan("client/racing", None, TASKS).await.unwrap();
        for key in &page.keys {
            assert_eq!(
                table.get(key).await.unwrap(),
                bytes(key),
                "{key} listed before its record"
            );
        }
        seen = page.keys.len();
        actix_rt::task::yield_now().await;
    }
    actix_rt::time::timeout(BOUND, writing).await.unwrap().unwrap();
}

/// A record written without its entries (by the earlier release) is filed
/// afterwards: `index_add` writes only the entry, never the record (so a
/// concurrent compare-and-swap of the record is not undone), says whether
/// the key was newly filed, and never shortens an entry's life.
async fn index_add_files_a_key_without_touching_its_record_and_never_shortens_an_entry(store: &Store) {
    let table = store.table("grant");
    table.put("old", b"v1".to_vec(), HOUR).await.unwrap();
    assert_eq!(table.index_scan("client/a", None, 10).await.unwrap(), Page::default());
    assert!(table.index_add("client/a", "old", HOUR).await.unwrap(), "newly filed");
    assert!(
        !table.index_add("client/a", "old", HOUR).await.unwrap(),
        "filed already"
    );
    assert_eq!(
        table.index_scan("client/a", None, 10).await.unwrap().keys,
        names(&["old"])
    );
    assert_eq!(table.index_scan("sub/x", None, 10).await.unwrap(), Page::default());
    assert_eq!(table.get("old").await.unwrap(), bytes("v1"), "the record is as it was");
    assert_eq!(table.count().await.unwrap(), 1, "an entry is not a record");
    // The record's bytes are unchanged: a swap over them still succeeds.
    assert!(table
        .compare_and_swap("old", bytes("v1"), Some((b"v2".to_vec(), HOUR)))
        .await
        .unwrap());
    // Adding an entry that lives longer already does not shorten it.
    assert!(!table.index_add("client/a", "old", BRIEF).await.unwrap());
    outlive().await;
    assert_eq!(
        table.index_scan("client/a", None, 10).await.unwrap().keys,
        names(&["old"]),
        "the longer life stays"
    );
    // An expired entry is filed again, as new.
    assert!(table.index_add("sub/x", "old", BRIEF).await.unwrap());
    outlive().await;
    assert_eq!(table.index_scan("sub/x", None, 10).await.unwrap(), Page::default());
    assert!(
        table.index_add("sub/x", "old", HOUR).await.unwrap(),
        "its entry had expired"
    );
    assert_eq!(table.index_scan("sub/x", None, 10).await.unwrap().keys, names(&["old"]));
    // Entries added while the record is rewritten concurrently leave every
    // write of the record in place.
    let racers = (0..TASKS).map(|i| {
        let table = table.clone();
        async move {
            if i % 2 == 0 {
                table.index_add("client/racing", "old", HOUR).await.unwrap();
                None
            } else {
                Some(
                    table
                        .compare_and_swap("old", bytes("v2"), Some((format!("v{i}").into_bytes(), HOUR)))
                        .await
                        .unwrap(),
                )
            }
        }
    });
    let swaps: Vec<bool> = race(racers.collect()).await.into_iter().flatten().collect();
    assert_eq!(swaps.iter().filter(|won| **won).count(), 1, "one swap over v2 wins");
    let last = table.get("old").await.unwrap().unwrap();
    assert!(last != b"v2" && last.starts_with(b"v"), "the winner's write stays");
    assert_eq!(
        table.index_scan("client/racing", None, 10).await.unwrap().keys,
        names(&["old"])
    );
}

// ---- One test per (backend, rule) ----

macro_rules! backend {
    ($backend:ident: $($rule:ident),* $(,)?) => {
        mod $backend {
            $(
                #[actix_web::test]
                async fn $rule() {
                    let store = super::Store::$backend().await;
                    super::$rule(&store).await;
                }
            )*
        }
    };
}

macro_rules! contract {
    ($($rule:ident),* $(,)?) => {
        backend!(memory: $($rule),*);
        backend!(directory: $($rule),*);
        backend!(redis: $($rule),*);
    };
}

contract!(
    a_put_record_reads_back_until_deleted_and_delete_says_whether_it_was_there,
    a_taken_record_is_gone_and_a_second_take_finds_nothing,
    concurrent_takes_from_many_tasks_give_a_record_to_exactly_one,
    compare_and_swap_writes_only_over_the_expected_value,
    concurrent_compare_and_swaps_from_many_tasks_let_exactly_one_win_per_round,
    a_refused_swap_before_a_write_is_answered_only_once_the_winner_is_visible,
    touch_extends_only_live_records,
    an_expired_record_is_absent_before_any_purge,
    purge_removes_only_expired_records_and_says_how_many,
    count_counts_live_records,
    soonest_expiring_lists_live_keys_by_expiry,
    tables_of_different_names_keep_their_records_apart,
    the_generation_of_a_remembered_table_moves_on_after_every_write,
    scan_pages_through_every_live_key_once,
    put_indexed_files_the_record_under_each_index_and_index_scan_pages_through_them,
    index_entries_live_by_their_own_lifetime_until_removed,
    an_index_entry_is_never_visible_before_its_record,
    index_add_files_a_key_without_touching_its_record_and_never_shortens_an_entry,
);
