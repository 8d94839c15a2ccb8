//! The store conformance suite: the rules of `SessionStore`, checked on any store.
//! Instantiate it with [`store_conformance!`](crate::store_conformance).

use std::time::Duration;

use actix_kv_session::{
    storage::{
        ChangeSet, ConflictPolicy, KeyChange, SaveMode, SaveOutcome, SessionMap, SessionStore,
    },
    SessionId,
};
use futures_util::future::join_all;

const TTL: Duration = Duration::from_mins(1);

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

fn changes(mode: SaveMode, policy: ConflictPolicy, list: Vec<KeyChange>) -> ChangeSet {
    ChangeSet::new(mode, list, policy, TTL)
}

fn create(list: Vec<KeyChange>) -> ChangeSet {
    changes(SaveMode::Create, ConflictPolicy::LastWriteWins, list)
}

fn update(list: Vec<KeyChange>) -> ChangeSet {
    changes(SaveMode::Update, ConflictPolicy::LastWriteWins, list)
}

fn strict(list: Vec<KeyChange>) -> ChangeSet {
    changes(SaveMode::Update, ConflictPolicy::Strict, list)
}

/// Creates a session holding `pairs`; returns its id.
async fn seed<S: SessionStore>(store: &S, pairs: &[(&str, &str)]) -> SessionId {
    let id = SessionId::generate();
    let list = pairs.iter().map(|(k, v)| set(k, v, None)).collect();
    assert_eq!(
        store.save(&id, &create(list)).await.unwrap(),
        SaveOutcome::Saved
    );
    id
}

/// An id the store never saw loads as `None`.
pub async fn load_of_unknown_id_is_none<S: SessionStore>(store: S) {
    assert_eq!(store.load(&SessionId::generate()).await.unwrap(), None);
}

/// What is created loads back byte for byte, whatever the JSON holds.
pub async fn create_then_load_round_trips_values<S: SessionStore>(store: S) {
    let big = serde_json::to_string(&"x".repeat(20_000)).unwrap();
    let pairs = [
        ("n", "42"),
        ("s", "\"héllo \\\"wörld\\\" \\n ✓\""),
        ("obj", "{\"a\":[1,2,{\"b\":null}]}"),
        ("key with spaces: and \\ stuff", "true"),
        ("big", big.as_str()),
    ];
    let id = seed(&store, &pairs).await;
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&pairs)));
}

/// A create where a record exists writes nothing.
pub async fn create_on_existing_id_is_refused<S: SessionStore>(store: S) {
    let id = seed(&store, &[("a", "1")]).await;
    let outcome = store
        .save(&id, &create(vec![set("b", "2", None)]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::IdTaken);
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&[("a", "1")])));
}

/// An update of a record that is gone writes nothing: no resurrection.
pub async fn update_of_missing_record_does_not_create_it<S: SessionStore>(store: S) {
    let id = seed(&store, &[("a", "1")]).await;
    store.delete(&id).await.unwrap();
    let outcome = store
        .save(&id, &update(vec![set("a", "2", Some("1"))]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Gone);
    assert_eq!(store.load(&id).await.unwrap(), None);
}

/// An update touches only the keys it names.
pub async fn update_merges_only_changed_keys<S: SessionStore>(store: S) {
    let id = seed(&store, &[("a", "1"), ("b", "1"), ("c", "1")]).await;
    let list = vec![
        set("a", "2", Some("1")),
        unset("b", Some("1")),
        set("d", "4", None),
    ];
    assert_eq!(
        store.save(&id, &update(list)).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.load(&id).await.unwrap(),
        Some(map(&[("a", "2"), ("c", "1"), ("d", "4")]))
    );
}

/// A record left without keys is deleted.
pub async fn removing_every_key_deletes_the_record<S: SessionStore>(store: S) {
    let id = seed(&store, &[("a", "1"), ("b", "2")]).await;
    let list = vec![unset("a", Some("1")), unset("b", Some("2"))];
    assert_eq!(
        store.save(&id, &update(list)).await.unwrap(),
        SaveOutcome::Emptied
    );
    assert_eq!(store.load(&id).await.unwrap(), None);
}

/// Under the strict policy one stale key refuses the whole change set.
pub async fn strict_conflict_refuses_the_whole_save<S: SessionStore>(store: S) {
    let id = seed(&store, &[("a", "1"), ("b", "1")]).await;
    // Another request changed `a` since this one loaded.
    assert_eq!(
        store
            .save(&id, &update(vec![set("a", "5", Some("1"))]))
            .await
            .unwrap(),
        SaveOutcome::Saved
    );
    let list = vec![set("a", "2", Some("1")), set("b", "2", Some("1"))];
    assert_eq!(
        store.save(&id, &strict(list)).await.unwrap(),
        SaveOutcome::Conflict
    );
    assert_eq!(
        store.load(&id).await.unwrap(),
        Some(map(&[("a", "5"), ("b", "1")]))
    );
    // A key added since load is a conflict too.
    let added = vec![set("new", "1", None)];
    store.save(&id, &update(added.clone())).await.unwrap();
    let list = vec![set("new", "2", None)];
    assert_eq!(
        store.save(&id, &strict(list)).await.unwrap(),
        SaveOutcome::Conflict
    );
}

/// Under the strict policy a save whose keys are as seen goes through, whatever happened to
/// other keys.
pub async fn strict_save_passes_when_nothing_changed_since_load<S: SessionStore>(store: S) {
    let id = seed(&store, &[("a", "1"), ("b", "1")]).await;
    store
        .save(&id, &update(vec![set("b", "9", Some("1"))]))
        .await
        .unwrap();
    let list = vec![set("a", "2", Some("1")), set("c", "3", None)];
    assert_eq!(
        store.save(&id, &strict(list)).await.unwrap(),
        SaveOutcome::Saved
    );
    assert_eq!(
        store.load(&id).await.unwrap(),
        Some(map(&[("a", "2"), ("b", "9"), ("c", "3")]))
    );
}

/// The default policy applies changes over whatever is there.
pub async fn last_write_wins_ignores_seen_values<S: SessionStore>(store: S) {
    let id = seed(&store, &[("a", "1")]).await;
    store
        .save(&id, &update(vec![set("a", "5", Some("1"))]))
        .await
        .unwrap();
    let outcome = store
        .save(&id, &update(vec![set("a", "2", Some("1"))]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Saved);
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&[("a", "2")])));
}

/// Renew moves the data, with the changes applied, and the old id stops working.
pub async fn renew_moves_data_and_deletes_old_id<S: SessionStore>(store: S) {
    let old = seed(&store, &[("a", "1"), ("b", "1")]).await;
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

/// After a renew the old id is a marker: a save or renew of it answers `Moved` (a request
/// that loaded before the renew learns that the session moved) and writes nothing, anywhere;
/// a touch is `false`; a load finds nothing; a delete removes the marker, and then the old
/// id is simply gone.
pub async fn renew_leaves_the_old_id_moved<S: SessionStore>(store: S) {
    let old = seed(&store, &[("a", "1")]).await;
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
    assert_eq!(
        store.save(&old, &update(late.clone())).await.unwrap(),
        SaveOutcome::Moved
    );
    assert_eq!(
        store.save(&old, &strict(late.clone())).await.unwrap(),
        SaveOutcome::Moved
    );
    let emptying = vec![unset("a", Some("1"))];
    assert_eq!(
        store.save(&old, &update(emptying)).await.unwrap(),
        SaveOutcome::Moved
    );
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
        store.save(&old, &update(late)).await.unwrap(),
        SaveOutcome::Gone
    );
    assert_eq!(store.load(&old).await.unwrap(), None);
    assert_eq!(store.load(&new).await.unwrap(), renewed);
}

/// A renew whose changes remove every key deletes the session as a purge would: no marker,
/// nothing under the new id.
pub async fn renew_that_empties_the_session_deletes_it<S: SessionStore>(store: S) {
    let old = seed(&store, &[("a", "1")]).await;
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
            .save(&old, &update(vec![set("a", "2", None)]))
            .await
            .unwrap(),
        SaveOutcome::Gone
    );
}

/// Renewing a session deleted meanwhile creates nothing under either id.
pub async fn renew_of_missing_record_creates_nothing<S: SessionStore>(store: S) {
    let old = seed(&store, &[("a", "1")]).await;
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

/// Touch keeps a record alive past its first TTL and never creates one.
pub async fn touch_extends_and_reports_missing<S: SessionStore>(store: S) {
    let id = SessionId::generate();
    let short = ChangeSet::new(
        SaveMode::Create,
        vec![set("a", "1", None)],
        ConflictPolicy::LastWriteWins,
        Duration::from_secs(2),
    );
    assert_eq!(store.save(&id, &short).await.unwrap(), SaveOutcome::Saved);
    actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    assert!(store.touch(&id, Duration::from_secs(5)).await.unwrap());
    actix_web::rt::time::sleep(Duration::from_millis(1800)).await;
    // 3 s after the save, past its 2 s TTL: alive only thanks to the touch.
    assert_eq!(store.load(&id).await.unwrap(), Some(map(&[("a", "1")])));
    let unknown = SessionId::generate();
    assert!(!store.touch(&unknown, TTL).await.unwrap());
    assert_eq!(store.load(&unknown).await.unwrap(), None);
}

/// Delete removes; deleting twice or an unknown id is fine.
pub async fn delete_removes_and_ignores_unknown<S: SessionStore>(store: S) {
    let id = seed(&store, &[("a", "1")]).await;
    let other = seed(&store, &[("b", "1")]).await;
    store.delete(&id).await.unwrap();
    store.delete(&id).await.unwrap();
    store.delete(&SessionId::generate()).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap(), None);
    assert_eq!(store.load(&other).await.unwrap(), Some(map(&[("b", "1")])));
}

/// A record is gone once its TTL has passed.
pub async fn records_expire_after_their_ttl<S: SessionStore>(store: S) {
    let id = SessionId::generate();
    let short = ChangeSet::new(
        SaveMode::Create,
        vec![set("a", "1", None)],
        ConflictPolicy::LastWriteWins,
        Duration::from_secs(1),
    );
    store.save(&id, &short).await.unwrap();
    assert!(store.load(&id).await.unwrap().is_some());
    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.load(&id).await.unwrap(), None);
    // And an update after expiry does not bring it back.
    let outcome = store
        .save(&id, &update(vec![set("a", "2", Some("1"))]))
        .await
        .unwrap();
    assert_eq!(outcome, SaveOutcome::Gone);
    assert_eq!(store.load(&id).await.unwrap(), None);
}

/// Fifty saves at once, each of another key, all land.
pub async fn concurrent_saves_of_different_keys_all_persist<S: SessionStore>(store: S) {
    let id = seed(&store, &[("base", "0")]).await;
    let saves = (0..50).map(|i| {
        let store = store.clone();
        async move {
            let list = vec![set(&format!("k{i}"), &i.to_string(), None)];
            store.save(&id, &update(list)).await.unwrap()
        }
    });
    let outcomes = join_all(saves).await;
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
pub async fn concurrent_strict_increments_lose_nothing<S: SessionStore>(store: S) {
    let id = seed(&store, &[("n", "0")]).await;
    let increments = (0..50).map(|_| {
        let store = store.clone();
        async move {
            let seen = store.load(&id).await.unwrap().unwrap()["n"].clone();
            let next = (seen.parse::<u64>().unwrap() + 1).to_string();
            store
                .save(&id, &strict(vec![set("n", &next, Some(&seen))]))
                .await
                .unwrap()
        }
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
