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
