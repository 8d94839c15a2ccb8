//! The store conformance suite and the middleware suite on `MemoryStore`, and what is
//! particular to it: the bound.

use actix_kv_session::{
    storage::{ChangeSet, ConflictPolicy, KeyChange, MemoryStore, SaveMode, SessionStore},
    SessionId,
};

tests::store_conformance!((MemoryStore::default(), ()));
tests::session_suite!((MemoryStore::default(), ()));

#[actix_web::test]
async fn the_store_is_bounded() {
    let store = MemoryStore::builder().max_sessions(100).build();
    let mut ids = Vec::new();
    for i in 0..1_000 {
        let id = SessionId::generate();
        let changes = ChangeSet::new(
            SaveMode::Create,
            vec![KeyChange::new("n".into(), Some(i.to_string()), None)],
            ConflictPolicy::LastWriteWins,
            std::time::Duration::from_mins(1),
        );
        store.save(&id, &changes).await.unwrap();
        ids.push(id);
    }
    store.run_pending_tasks();
    assert!(
        store.session_count() <= 100,
        "{} sessions kept",
        store.session_count()
    );
    let mut alive = 0;
    for id in &ids {
        if store.load(id).await.unwrap().is_some() {
            alive += 1;
        }
    }
    assert!(alive <= 100, "{alive} sessions still load");
    assert!(
        alive > 0,
        "the bound keeps sessions, it does not drop them all"
    );
}

#[actix_web::test]
async fn clones_share_one_store() {
    let store = MemoryStore::default();
    let clone = store.clone();
    let id = SessionId::generate();
    let changes = ChangeSet::new(
        SaveMode::Create,
        vec![KeyChange::new("a".into(), Some("1".into()), None)],
        ConflictPolicy::LastWriteWins,
        std::time::Duration::from_mins(1),
    );
    store.save(&id, &changes).await.unwrap();
    assert!(clone.load(&id).await.unwrap().is_some());
}

/// A session evicted between a request's load and its save is not written into: the save
/// answers `Gone`, as for any session deleted meanwhile (the store remembers the slot of the
/// last load on a thread, and eviction must mark it dead).
#[actix_web::test]
async fn a_session_evicted_after_its_load_is_not_saved_into() {
    let store = MemoryStore::builder().max_sessions(2).build();
    let change = |mode, value: &str, seen: Option<&str>| {
        ChangeSet::new(
            mode,
            vec![KeyChange::new(
                "n".into(),
                Some(value.into()),
                seen.map(Into::into),
            )],
            ConflictPolicy::LastWriteWins,
            std::time::Duration::from_mins(1),
        )
    };
    let first = SessionId::generate();
    store
        .save(&first, &change(SaveMode::Create, "1", None))
        .await
        .unwrap();
    assert!(store.load(&first).await.unwrap().is_some());
    // Crowd it out, without loading anything else on this thread: touches count as uses.
    for _ in 0..200 {
        let id = SessionId::generate();
        store
            .save(&id, &change(SaveMode::Create, "1", None))
            .await
            .unwrap();
        for _ in 0..5 {
            store
                .touch(&id, std::time::Duration::from_mins(1))
                .await
                .unwrap();
        }
        store.run_pending_tasks();
    }
    let outcome = store
        .save(&first, &change(SaveMode::Update, "2", Some("1")))
        .await
        .unwrap();
    let after = store.load(&first).await.unwrap();
    assert_eq!(after, None, "the first session should have been evicted");
    assert_eq!(outcome, actix_kv_session::storage::SaveOutcome::Gone);
}
