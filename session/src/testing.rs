//! The store conformance suite (feature `testing`): the rules of
//! [`SessionStore`], checked on any store, ours and yours alike. And [`TestSessions`]
//! (with `memory` too), to test handlers with sessions made for the test.
//!
//! One call checks a store: [`store_conformance!`](crate::store_conformance) makes a
//! `#[test]` of it, or call [`check_store`] from a test of your own. Each case runs on a
//! fresh store from the expression or function given, all cases at once; a failure names
//! every case that failed.
//!
//! ```
//! # mod wrapper {
//! use actix_kv_session::storage::MemoryStore;
//!
//! // In `tests/conformance.rs` of a crate with `actix-kv-session = { features = ["testing"] }`:
//! actix_kv_session::store_conformance!(MemoryStore::default());
//! # }
//! ```
//!
//! The expression may `.await`, and may give a tuple `(store, guard)` whose guard lives as
//! long as the case (a server process, a temporary database):
//! `store_conformance!((MyStore::connect(&db.url()).await, db))`.
//!
//! The cases take about five seconds: some wait for time-to-live expiry. A store may count
//! TTLs in whole seconds (memcached does, so do databases with an integer expiry column):
//! every check stays a second clear of the TTL's end, either way.

#[cfg(feature = "memory")]
pub use crate::test_sessions::TestSessions;

use std::{future::Future, panic::AssertUnwindSafe, time::Duration};

use futures_util::{
    future::{join_all, BoxFuture},
    FutureExt,
};

use crate::{
    storage::{ChangeSet, ConflictPolicy, KeyChange, SaveOutcome, SessionMap, SessionStore},
    SessionId, StoreError,
};

/// What [`check_store`] and [`store_conformance!`](crate::store_conformance) need from the
/// value that makes a store: the store, possibly with a guard that must live as long as the
/// store is used.
///
/// ```
/// use actix_kv_session::{
///     storage::{MemoryStore, SessionStore},
///     testing::{self, Fixture},
///     SessionId,
/// };
///
/// /// A check of your own, on whatever the suite accepts.
/// async fn unknown_ids_load_nothing<X: Fixture>(fixture: X) {
///     let unknown = SessionId::generate();
///     assert_eq!(fixture.store().load(&unknown).await.unwrap(), None);
/// }
///
/// /// Stands for what a store's tests keep alive: a server process, a temporary database.
/// struct Server;
///
/// testing::run(async {
///     unknown_ids_load_nothing(MemoryStore::default()).await;
///     unknown_ids_load_nothing((MemoryStore::default(), Server)).await;
/// });
/// ```
pub trait Fixture {
    /// The store under test.
    type Store: SessionStore;
    /// The store.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, testing::Fixture};
    ///
    /// # struct TempDir;
    /// let fixture = (MemoryStore::default(), TempDir);
    /// let store: &MemoryStore = fixture.store(); // the guard lives on in `fixture`
    /// assert_eq!(store.session_count(), 0);
    /// ```
    fn store(&self) -> &Self::Store;
}

impl<S: SessionStore> Fixture for S {
    type Store = S;
    fn store(&self) -> &S {
        self
    }
}

impl<S: SessionStore, G> Fixture for (S, G) {
    type Store = S;
    fn store(&self) -> &S {
        &self.0
    }
}

/// Makes a `#[test]` that checks a store against every rule of the contract, with
/// [`check_store`]. `$make` is an expression giving a fresh store, or a `(store, guard)`
/// tuple; it is evaluated once per case, in an async context (it may `.await`).
///
/// ```
/// # mod wrapper {
/// actix_kv_session::store_conformance!(actix_kv_session::storage::MemoryStore::default());
/// # }
/// ```
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        #[test]
        fn store_conformance() {
            $crate::testing::run($crate::testing::check_store(|| async { $make }));
        }
    };
}

/// Runs `future` to completion on an actix-web runtime (a tokio runtime, which the bundled
/// stores need), as `#[actix_web::test]` would.
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::{
///     storage::{MemoryStore, SessionMap, SessionStore},
///     testing, SessionId,
/// };
///
/// // In a plain `#[test] fn`.
/// let store = MemoryStore::default();
/// let id = SessionId::generate();
/// let loaded = testing::run(async {
///     let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
///     store.create(&id, &data, Duration::from_secs(60)).await?;
///     store.load(&id).await
/// })?;
/// assert!(loaded.is_some());
/// # Ok::<(), actix_kv_session::StoreError>(())
/// ```
pub fn run<F: Future>(future: F) -> F::Output {
    actix_web::rt::System::new().block_on(future)
}

/// Checks a store against every rule of the contract. `make` gives a fresh store (or a
/// `(store, guard)` tuple) for each case; the cases run at once.
///
/// # Panics
///
/// When a case fails, after all have run, naming each failed case (each case's own panic
/// message is printed as it happens).
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, testing};
///
/// // A test of your own, around the suite (it takes about five seconds).
/// testing::run(async {
///     testing::check_store(|| async { MemoryStore::default() }).await;
/// });
/// ```
pub async fn check_store<F, Fut, X>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = X>,
    X: Fixture,
{
    let cases = cases::<X::Store>();
    let runs = cases.iter().map(|(name, case)| {
        let make = &make;
        async move {
            let fixture = make().await;
            let outcome = AssertUnwindSafe(case(fixture.store())).catch_unwind().await;
            outcome.err().map(|_| *name)
        }
    });
    let failed: Vec<&str> = join_all(runs).await.into_iter().flatten().collect();
    assert!(
        failed.is_empty(),
        "{} of {} store conformance cases failed: {}",
        failed.len(),
        cases.len(),
        failed.join(", ")
    );
}

/// A case: checks one rule on a store.
type Case<S> = for<'a> fn(&'a S) -> BoxFuture<'a, ()>;

/// Every case, by name.
fn cases<S: SessionStore>() -> Vec<(&'static str, Case<S>)> {
    macro_rules! cases {
        ($($case:ident),+ $(,)?) => {
            vec![$((stringify!($case), (|store| Box::pin($case(store))) as Case<S>)),+]
        };
    }
    cases![
        load_of_unknown_id_is_none,
        create_then_load_round_trips_values,
        create_never_writes_over_a_stored_id,
        update_of_missing_record_does_not_create_it,
        update_merges_only_changed_keys,
        update_sets_the_ttl,
        removing_every_key_deletes_the_record,
        strict_conflict_refuses_the_whole_change_set,
        strict_conflict_on_a_key_removed_since_load,
        strict_update_passes_when_nothing_changed_since_load,
        strict_policy_never_checks_bookkeeping_keys,
        last_write_wins_ignores_seen_values,
        renew_moves_data_and_deletes_old_id,
        renew_leaves_the_old_id_moved,
        renew_that_empties_the_session_deletes_it,
        renew_of_missing_record_creates_nothing,
        renew_never_writes_over_a_stored_id,
        strict_renew_with_a_stale_key_writes_nothing,
        renew_is_atomic_with_concurrent_updates,
        renewed_sessions_and_markers_expire_with_the_ttl,
        touch_extends_and_reports_missing,
        delete_removes_and_ignores_unknown,
        records_expire_after_their_ttl,
        concurrent_updates_of_different_keys_all_persist,
        concurrent_strict_increments_lose_nothing,
    ]
}

const TTL: Duration = Duration::from_secs(60);

fn map(pairs: &[(&str, &str)]) -> SessionMap {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn set(key: &str, value: &str, seen: Option<&str>) -> KeyChange {
    KeyChange::new(
        key.to_owned(),
        Some(value.to_owned()),
        seen.map(str::to_owned),
    )
}

fn unset(key: &str, seen: Option<&str>) -> KeyChange {
    KeyChange::new(key.to_owned(), None, seen.map(str::to_owned))
}

fn update(list: Vec<KeyChange>) -> ChangeSet {
    ChangeSet::new(list, ConflictPolicy::LastWriteWins, TTL)
}

fn strict(list: Vec<KeyChange>) -> ChangeSet {
    ChangeSet::new(list, ConflictPolicy::Strict, TTL)
}

async fn sleep(duration: Duration) {
    actix_web::rt::time::sleep(duration).await;
}

/// Creates a session holding `pairs` for `ttl`; returns its id.
async fn seed_for<S: SessionStore>(store: &S, pairs: &[(&str, &str)], ttl: Duration) -> SessionId {
    let id = SessionId::generate();
    store
        .create(&id, &map(pairs), ttl)
        .await
        .expect("create a session");
    id
}

async fn seed<S: SessionStore>(store: &S, pairs: &[(&str, &str)]) -> SessionId {
    seed_for(store, pairs, TTL).await
}

/// An id the store never saw loads as `None`.
async fn load_of_unknown_id_is_none<S: SessionStore>(store: &S) {
    assert_eq!(store.load(&SessionId::generate()).await.unwrap(), None);
}

/// What is created loads back byte for byte, whatever the JSON holds.
async fn create_then_load_round_trips_values<S: SessionStore>(store: &S) {
    let big = serde_json::to_string(&"x".repeat(20_000)).unwrap();
    let pairs = [
        ("n", "42"),
        ("s", "\"héllo \\\"wörld\\\" \\n ✓\""),
        ("obj", "{\"a\":[1,2,{\"b\":null}]}"),
        ("key with spaces: and \\ stuff", "true"),
        ("big", big.as_str()),
    ];
    let id = seed(store, &pairs).await;
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&pairs)));
}

/// A create never writes over what is stored at its id, a session or a renew's marker.
async fn create_never_writes_over_a_stored_id<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1")]).await;
    let err = store
        .create(&id, &map(&[("b", "2")]), TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdInUse), "{err:?}");
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&[("a", "1")])));
    let new = SessionId::generate();
    store.renew(&id, &new, &update(Vec::new())).await.unwrap();
    let err = store
        .create(&id, &map(&[("b", "2")]), TTL)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdInUse), "over a marker: {err:?}");
}

/// An update of a record that is gone writes nothing: no resurrection.
async fn update_of_missing_record_does_not_create_it<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1")]).await;
    store.delete(&id).await.unwrap();
    let outcome = store
        .update(&id, &update(vec![set("a", "2", Some("1"))]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Gone);
    assert_eq!(store.load(&id).await.unwrap(), None);
    let never = SessionId::generate();
    let outcome = store
        .update(&never, &update(vec![set("a", "2", None)]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Gone);
    assert_eq!(store.load(&never).await.unwrap(), None);
}

/// An update touches only the keys it names.
async fn update_merges_only_changed_keys<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1"), ("b", "1"), ("c", "1")]).await;
    let list = vec![
        set("a", "2", Some("1")),
        unset("b", Some("1")),
        set("d", "4", None),
    ];
    assert_eq!(
        store.update(&id, &update(list)).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.load(&id).await.unwrap(),
        Some(map(&[("a", "2"), ("c", "1"), ("d", "4")]))
    );
}

/// An update sets the record's time to live: a session kept alive by updates outlives the
/// TTL it was created with.
async fn update_sets_the_ttl<S: SessionStore>(store: &S) {
    let id = seed_for(store, &[("a", "1")], Duration::from_secs(3)).await;
    sleep(Duration::from_millis(1500)).await;
    let longer = ChangeSet::new(
        vec![set("a", "2", Some("1"))],
        ConflictPolicy::LastWriteWins,
        Duration::from_secs(6),
    );
    assert_eq!(
        store.update(&id, &longer).await.unwrap(),
        SaveOutcome::Saved
    );
    sleep(Duration::from_secs(3)).await;
    // 4.5 s after the create, past its 3 s TTL: alive only thanks to the update.
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&[("a", "2")])));
}

/// A record left without keys is deleted.
async fn removing_every_key_deletes_the_record<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1"), ("b", "2")]).await;
    let list = vec![unset("a", Some("1")), unset("b", Some("2"))];
    assert_eq!(
        store.update(&id, &update(list)).await.unwrap(),
        SaveOutcome::Emptied
    );
    assert_eq!(store.load(&id).await.unwrap(), None);
}

/// Under the strict policy one stale key refuses the whole change set.
async fn strict_conflict_refuses_the_whole_change_set<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1"), ("b", "1")]).await;
    // Another request changed `a` since this one loaded.
    assert_eq!(
        store
            .update(&id, &update(vec![set("a", "5", Some("1"))]))
            .await
            .unwrap(),
        SaveOutcome::Saved
    );
    let list = vec![set("a", "2", Some("1")), set("b", "2", Some("1"))];
    assert_eq!(
        store.update(&id, &strict(list)).await.unwrap(),
        SaveOutcome::Conflict
    );
    assert_eq!(
        store.load(&id).await.unwrap(),
        Some(map(&[("a", "5"), ("b", "1")]))
    );
    // A key added since load is a conflict too.
    store
        .update(&id, &update(vec![set("new", "1", None)]))
        .await
        .unwrap();
    assert_eq!(
        store
            .update(&id, &strict(vec![set("new", "2", None)]))
            .await
            .unwrap(),
        SaveOutcome::Conflict
    );
}

/// Under the strict policy a key removed by another request since the load is a conflict,
/// for a set and for a removal alike.
async fn strict_conflict_on_a_key_removed_since_load<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1"), ("keep", "1")]).await;
    store
        .update(&id, &update(vec![unset("a", Some("1"))]))
        .await
        .unwrap();
    for change in [set("a", "2", Some("1")), unset("a", Some("1"))] {
        assert_eq!(
            store.update(&id, &strict(vec![change])).await.unwrap(),
            SaveOutcome::Conflict
        );
    }
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&[("keep", "1")])));
}

/// Under the strict policy an update whose keys are as seen goes through, whatever happened
/// to other keys.
async fn strict_update_passes_when_nothing_changed_since_load<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1"), ("b", "1")]).await;
    store
        .update(&id, &update(vec![set("b", "9", Some("1"))]))
        .await
        .unwrap();
    let list = vec![set("a", "2", Some("1")), set("c", "3", None)];
    assert_eq!(
        store.update(&id, &strict(list)).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.load(&id).await.unwrap(),
        Some(map(&[("a", "2"), ("b", "9"), ("c", "3")]))
    );
}

/// Keys that start with NUL are the middleware's bookkeeping (when the TTL was last
/// extended, say): the strict policy checks the app's keys only, and the last write sets
/// them.
async fn strict_policy_never_checks_bookkeeping_keys<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1"), ("\0touched", "100")]).await;
    store
        .update(&id, &update(vec![set("\0touched", "200", Some("100"))]))
        .await
        .unwrap();
    let list = vec![
        set("a", "2", Some("1")),
        set("\0touched", "300", Some("100")),
    ];
    assert_eq!(
        store.update(&id, &strict(list)).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.load(&id).await.unwrap(),
        Some(map(&[("a", "2"), ("\0touched", "300")]))
    );
    // The app's keys are still checked beside them.
    let list = vec![
        set("a", "3", Some("1")),
        set("\0touched", "400", Some("300")),
    ];
    assert_eq!(
        store.update(&id, &strict(list)).await.unwrap(),
        SaveOutcome::Conflict
    );
}

/// The default policy applies changes over whatever is there.
async fn last_write_wins_ignores_seen_values<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1")]).await;
    store
        .update(&id, &update(vec![set("a", "5", Some("1"))]))
        .await
        .unwrap();
    let outcome = store
        .update(&id, &update(vec![set("a", "2", Some("1"))]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Saved);
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&[("a", "2")])));
}

/// Renew moves the data, with the changes applied, and the old id stops working.
async fn renew_moves_data_and_deletes_old_id<S: SessionStore>(store: &S) {
    let old = seed(store, &[("a", "1"), ("b", "1")]).await;
    let new = SessionId::generate();
    let list = vec![set("user", "\"ann\"", None), unset("b", Some("1"))];
    assert_eq!(
        store.renew(&old, &new, &update(list)).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(store.load(&old).await.unwrap(), None);
    assert_eq!(
        store.load(&new).await.unwrap(),
        Some(map(&[("a", "1"), ("user", "\"ann\"")]))
    );
}

/// After a renew the old id is a marker: an update or renew of it answers `Moved` (a
/// request that loaded before the renew learns that the session moved) and writes nothing,
/// anywhere; a touch is `false`; a load finds nothing; a delete removes the marker, and then
/// the old id is simply gone.
async fn renew_leaves_the_old_id_moved<S: SessionStore>(store: &S) {
    let old = seed(store, &[("a", "1")]).await;
    let new = SessionId::generate();
    assert_eq!(
        store
            .renew(&old, &new, &update(vec![set("user", "\"ann\"", None)]))
            .await
            .unwrap(),
        SaveOutcome::Saved
    );
    let renewed = Some(map(&[("a", "1"), ("user", "\"ann\"")]));
    let late = vec![set("a", "2", Some("1")), set("late", "1", None)];
    for changes in [
        update(late.clone()),
        strict(late.clone()),
        update(vec![unset("a", Some("1"))]),
    ] {
        assert_eq!(
            store.update(&old, &changes).await.unwrap(),
            SaveOutcome::Moved
        );
    }
    let other = SessionId::generate();
    assert_eq!(
        store
            .renew(&old, &other, &update(late.clone()))
            .await
            .unwrap(),
        SaveOutcome::Moved,
        "a second, concurrent renew"
    );
    assert!(!store.touch(&old, TTL).await.unwrap());
    assert_eq!(store.load(&old).await.unwrap(), None);
    assert_eq!(store.load(&other).await.unwrap(), None);
    assert_eq!(store.load(&new).await.unwrap(), renewed);
    store.delete(&old).await.unwrap();
    assert_eq!(
        store.update(&old, &update(late)).await.unwrap(),
        SaveOutcome::Gone
    );
    assert_eq!(store.load(&old).await.unwrap(), None);
    assert_eq!(store.load(&new).await.unwrap(), renewed);
}

/// A renew whose changes remove every key deletes the session as a purge would: no marker,
/// nothing under the new id.
async fn renew_that_empties_the_session_deletes_it<S: SessionStore>(store: &S) {
    let old = seed(store, &[("a", "1")]).await;
    let new = SessionId::generate();
    assert_eq!(
        store
            .renew(&old, &new, &update(vec![unset("a", Some("1"))]))
            .await
            .unwrap(),
        SaveOutcome::Emptied
    );
    assert_eq!(store.load(&new).await.unwrap(), None);
    assert_eq!(
        store
            .update(&old, &update(vec![set("a", "2", None)]))
            .await
            .unwrap(),
        SaveOutcome::Gone
    );
}

/// Renewing a session deleted meanwhile creates nothing under either id.
async fn renew_of_missing_record_creates_nothing<S: SessionStore>(store: &S) {
    let old = seed(store, &[("a", "1")]).await;
    store.delete(&old).await.unwrap();
    let new = SessionId::generate();
    let outcome = store
        .renew(&old, &new, &update(vec![set("b", "1", None)]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Gone);
    assert_eq!(store.load(&old).await.unwrap(), None);
    assert_eq!(store.load(&new).await.unwrap(), None);
}

/// A renew under the strict policy with a key changed since the load writes nothing: the
/// session stays where it was, as it was.
async fn strict_renew_with_a_stale_key_writes_nothing<S: SessionStore>(store: &S) {
    let old = seed(store, &[("a", "1")]).await;
    store
        .update(&old, &update(vec![set("a", "5", Some("1"))]))
        .await
        .unwrap();
    let new = SessionId::generate();
    let outcome = store
        .renew(&old, &new, &strict(vec![set("a", "2", Some("1"))]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Conflict);
    assert_eq!(store.load(&old).await.unwrap(), Some(map(&[("a", "5")])));
    assert_eq!(store.load(&new).await.unwrap(), None);
    assert_eq!(
        store
            .update(&old, &update(vec![set("a", "6", Some("5"))]))
            .await
            .unwrap(),
        SaveOutcome::Saved,
        "still a session, not a marker"
    );
}

/// A renewed session lives the TTL of its renew, and the marker it leaves lives no longer
/// than that, a touch does not extend it: once the TTL has passed, the old id is gone rather
/// than moved.
async fn renewed_sessions_and_markers_expire_with_the_ttl<S: SessionStore>(store: &S) {
    let old = seed(store, &[("a", "1")]).await;
    let new = SessionId::generate();
    let short = ChangeSet::new(
        Vec::new(),
        ConflictPolicy::LastWriteWins,
        Duration::from_secs(2),
    );
    assert_eq!(
        store.renew(&old, &new, &short).await.unwrap(),
        SaveOutcome::Saved
    );
    assert!(store.load(&new).await.unwrap().is_some());
    assert!(
        !store.touch(&old, TTL).await.unwrap(),
        "a marker is not a session"
    );
    sleep(Duration::from_millis(3200)).await;
    assert_eq!(store.load(&new).await.unwrap(), None);
    assert_eq!(
        store
            .update(&old, &update(vec![set("a", "2", Some("1"))]))
            .await
            .unwrap(),
        SaveOutcome::Gone,
        "the marker outlived the session's TTL"
    );
}

/// A renew never writes over a session stored at its new id (two random ids collide only if
/// something is wrong): `IdInUse`, and both sessions stay as they were.
async fn renew_never_writes_over_a_stored_id<S: SessionStore>(store: &S) {
    let old = seed(store, &[("a", "1")]).await;
    let taken = seed(store, &[("b", "2")]).await;
    let short = ChangeSet::new(
        vec![set("c", "3", None)],
        ConflictPolicy::LastWriteWins,
        Duration::from_secs(1),
    );
    let err = store.renew(&old, &taken, &short).await.unwrap_err();
    assert!(matches!(err, StoreError::IdInUse), "{err:?}");
    assert_eq!(store.load(&taken).await.unwrap(), Some(map(&[("b", "2")])));
    // Not even the renew's TTL reached the old session.
    sleep(Duration::from_millis(2200)).await;
    assert_eq!(store.load(&old).await.unwrap(), Some(map(&[("a", "1")])));
    assert_eq!(
        store
            .update(&old, &update(vec![set("a", "2", Some("1"))]))
            .await
            .unwrap(),
        SaveOutcome::Saved,
        "still a session, not a marker"
    );
}

/// A renew is atomic with the updates around it: of forty strict increments racing a renew,
/// each one answered `Saved` happened before the renew and is in the renewed session, the
/// others answered `Conflict` or `Moved`. A renew that reads, then writes, loses an update
/// saved in between.
async fn renew_is_atomic_with_concurrent_updates<S: SessionStore>(store: &S) {
    let id = seed(store, &[("n", "0")]).await;
    let new = SessionId::generate();
    let increments = (0..40).map(|i| async move {
        for _ in 0..i % 8 {
            actix_web::rt::task::yield_now().await;
        }
        // Loaded after the renew: the session moved, nothing to do.
        let seen = store.load(&id).await.unwrap()?["n"].clone();
        let next = (seen.parse::<u64>().unwrap() + 1).to_string();
        let changes = strict(vec![set("n", &next, Some(&seen))]);
        Some(store.update(&id, &changes).await.unwrap())
    });
    let renew = async {
        for _ in 0..4 {
            actix_web::rt::task::yield_now().await;
        }
        store.renew(&id, &new, &update(Vec::new())).await.unwrap()
    };
    let (outcomes, renewed) = futures_util::future::join(join_all(increments), renew).await;
    assert_eq!(renewed, SaveOutcome::Saved);
    let outcomes: Vec<SaveOutcome> = outcomes.into_iter().flatten().collect();
    let saved = outcomes
        .iter()
        .filter(|o| **o == SaveOutcome::Saved)
        .count();
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            SaveOutcome::Saved | SaveOutcome::Conflict | SaveOutcome::Moved
        )),
        "{outcomes:?}"
    );
    let record = store
        .load(&new)
        .await
        .unwrap()
        .expect("the renewed session");
    assert_eq!(
        record["n"],
        saved.to_string(),
        "{saved} increments answered Saved: {outcomes:?}"
    );
}

/// Touch keeps a record alive past its first TTL and never creates one.
async fn touch_extends_and_reports_missing<S: SessionStore>(store: &S) {
    let id = seed_for(store, &[("a", "1")], Duration::from_secs(3)).await;
    sleep(Duration::from_millis(1500)).await;
    assert!(store.touch(&id, Duration::from_secs(6)).await.unwrap());
    sleep(Duration::from_secs(3)).await;
    // 4.5 s after the create, past its 3 s TTL: alive only thanks to the touch.
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&[("a", "1")])));
    let unknown = SessionId::generate();
    assert!(!store.touch(&unknown, TTL).await.unwrap());
    assert_eq!(store.load(&unknown).await.unwrap(), None);
}

/// Delete removes; deleting twice or an unknown id is fine.
async fn delete_removes_and_ignores_unknown<S: SessionStore>(store: &S) {
    let id = seed(store, &[("a", "1")]).await;
    let other = seed(store, &[("b", "1")]).await;
    store.delete(&id).await.unwrap();
    store.delete(&id).await.unwrap();
    store.delete(&SessionId::generate()).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap(), None);
    assert_eq!(store.load(&other).await.unwrap(), Some(map(&[("b", "1")])));
}

/// A record is gone once its TTL has passed, and an update then does not bring it back.
async fn records_expire_after_their_ttl<S: SessionStore>(store: &S) {
    let id = seed_for(store, &[("a", "1")], Duration::from_secs(2)).await;
    assert!(store.load(&id).await.unwrap().is_some());
    sleep(Duration::from_millis(3200)).await;
    assert_eq!(store.load(&id).await.unwrap(), None);
    let outcome = store
        .update(&id, &update(vec![set("a", "2", Some("1"))]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Gone);
    assert_eq!(store.load(&id).await.unwrap(), None);
}

/// Fifty updates at once, each of another key, all land.
async fn concurrent_updates_of_different_keys_all_persist<S: SessionStore>(store: &S) {
    let id = seed(store, &[("base", "0")]).await;
    let updates = (0..50).map(|i| async move {
        let list = vec![set(&format!("k{i}"), &i.to_string(), None)];
        store.update(&id, &update(list)).await.unwrap()
    });
    let outcomes = join_all(updates).await;
    assert!(
        outcomes.iter().all(|o| *o == SaveOutcome::Saved),
        "{outcomes:?}"
    );
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(record.len(), 51);
    for i in 0..50 {
        assert_eq!(record[&format!("k{i}")], i.to_string());
    }
}

/// Fifty read-modify-write increments at once under the strict policy: every increment
/// that was accepted is in the final value, the rest were refused.
async fn concurrent_strict_increments_lose_nothing<S: SessionStore>(store: &S) {
    let id = seed(store, &[("n", "0")]).await;
    let increments = (0..50).map(|_| async move {
        let seen = store.load(&id).await.unwrap().unwrap()["n"].clone();
        let next = (seen.parse::<u64>().unwrap() + 1).to_string();
        store
            .update(&id, &strict(vec![set("n", &next, Some(&seen))]))
            .await
            .unwrap()
    });
    let outcomes = join_all(increments).await;
    let saved = outcomes
        .iter()
        .filter(|o| **o == SaveOutcome::Saved)
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| **o == SaveOutcome::Conflict)
        .count();
    assert_eq!(saved + refused, 50, "{outcomes:?}");
    assert!(saved >= 1);
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(record["n"], saved.to_string());
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    /// A store that forgets every write: the suite must fail it, naming the cases.
    #[derive(Debug, Default)]
    struct Forgetful(MemoryStore);

    impl SessionStore for Forgetful {
        async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
            self.0.load(id).await
        }
        async fn create(
            &self,
            _: &SessionId,
            _: &SessionMap,
            _: Duration,
        ) -> Result<(), StoreError> {
            Ok(())
        }
        async fn update(&self, _: &SessionId, _: &ChangeSet) -> Result<SaveOutcome, StoreError> {
            Ok(SaveOutcome::Saved)
        }
        async fn renew(
            &self,
            _: &SessionId,
            _: &SessionId,
            _: &ChangeSet,
        ) -> Result<SaveOutcome, StoreError> {
            Ok(SaveOutcome::Saved)
        }
        async fn touch(&self, _: &SessionId, _: Duration) -> Result<bool, StoreError> {
            Ok(true)
        }
        async fn delete(&self, _: &SessionId) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn a_store_that_breaks_the_rules_fails_naming_the_cases() {
        let failed =
            std::panic::catch_unwind(|| run(check_store(|| async { Forgetful::default() })));
        let message = *failed.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.contains("store conformance cases failed"),
            "{message}"
        );
        assert!(
            message.contains("create_then_load_round_trips_values"),
            "{message}"
        );
        assert!(!message.contains("load_of_unknown_id_is_none"), "{message}");
    }

    crate::store_conformance!(MemoryStore::default());
}
