//! The store conformance suite and the middleware suite on `MemoryStore`, and what is
//! particular to it: the bound.

use actix_kv_session::{
    storage::{ChangeSet, ConflictPolicy, KeyChange, MemoryStore, SaveOutcome, SessionStore},
    SessionId, SessionMiddleware, StoreError,
};
use actix_web::http::StatusCode;
use tests::{
    init_app,
    suite::{get, post},
};

actix_kv_session::store_conformance!(MemoryStore::default());
tests::session_suite!((MemoryStore::default(), ()));

/// A small store keeps all its sessions in one shard: a renew moves a session within it.
mod one_shard {
    use actix_kv_session::storage::MemoryStore;

    actix_kv_session::store_conformance!(MemoryStore::builder().max_sessions(1_000).build());
}

#[actix_web::test]
async fn the_store_is_bounded() {
    let store = MemoryStore::builder().max_sessions(100).build();
    let mut ids = Vec::new();
    for i in 0..1_000 {
        ids.push(tests::seed(&store, &[("n", &i.to_string())]).await);
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
    let id = tests::seed(&store, &[("a", "1")]).await;
    assert!(clone.load(&id).await.unwrap().is_some());
}

/// A session evicted between a request's load and its save is not written into: the save
/// answers `Gone`, as for any session deleted meanwhile (the store remembers the slot of the
/// last load on a thread, and eviction must mark it dead).
#[actix_web::test]
async fn a_session_evicted_after_its_load_is_not_saved_into() {
    let store = MemoryStore::builder().max_sessions(2).build();
    let first = tests::seed(&store, &[("n", "1")]).await;
    assert!(store.load(&first).await.unwrap().is_some());
    // Crowd it out, without loading anything else on this thread: touches count as uses.
    for _ in 0..200 {
        let id = tests::seed(&store, &[("n", "1")]).await;
        for _ in 0..5 {
            store
                .touch(&id, std::time::Duration::from_mins(1))
                .await
                .unwrap();
        }
        store.run_pending_tasks();
    }
    let changes = ChangeSet::new(
        vec![KeyChange::new(
            "n".into(),
            Some("2".into()),
            Some("1".into()),
        )],
        ConflictPolicy::LastWriteWins,
        std::time::Duration::from_mins(1),
    );
    let outcome = store.update(&first, &changes).await.unwrap();
    let after = store.load(&first).await.unwrap();
    assert_eq!(after, None, "the first session should have been evicted");
    assert_eq!(outcome, SaveOutcome::Gone);
}

/// A store full of one-request visitors evicts the least recently used sessions and never
/// refuses a new one: each of 3,000 visitors through a store bounded at 1,000 finds its
/// session on its next request, and a visitor who keeps coming back through the flood keeps
/// its session.
#[actix_web::test]
async fn a_full_store_evicts_the_least_recently_used_and_keeps_every_new_session() {
    let store = MemoryStore::builder().max_sessions(1_000).build();
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let regular = get(&app, "/counter", None).await.id();
    let mut visits = 1;
    let mut lost = 0;
    for i in 0..3_000 {
        let id = get(&app, "/counter", None).await.id();
        if get(&app, "/counter", Some(id.as_str())).await.body != "2" {
            lost += 1;
        }
        if i % 300 == 0 {
            visits += 1;
            let reply = get(&app, "/counter", Some(regular.as_str())).await;
            assert_eq!(
                reply.body,
                visits.to_string(),
                "the regular visitor lost its session"
            );
        }
    }
    assert_eq!(lost, 0, "new sessions refused or evicted at once");
    let newcomer = get(&app, "/counter", None).await.id();
    for visit in 2..=11 {
        for _ in 0..200 {
            get(&app, "/counter", None).await;
        }
        let reply = get(&app, "/counter", Some(newcomer.as_str())).await;
        assert_eq!(reply.body, visit.to_string());
    }
    store.run_pending_tasks();
    assert!(store.session_count() <= 1_000, "{}", store.session_count());
}

/// The bound in bytes holds for large sessions, and a session over the size limit is
/// refused with the stored one left as it was.
#[actix_web::test]
async fn the_store_is_bounded_in_bytes_and_refuses_oversized_sessions() {
    let max_bytes = 1024 * 1024;
    let store = MemoryStore::builder()
        .max_bytes(max_bytes)
        .max_session_bytes(64 * 1024)
        .build();
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let mut ids = Vec::new();
    for _ in 0..1_000 {
        let reply = post(&app, "/big/4", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        ids.push(reply.id());
    }
    store.run_pending_tasks();
    assert!(
        store.weighted_bytes() <= max_bytes,
        "{}",
        store.weighted_bytes()
    );
    let kept = store.session_count();
    assert!(
        (150..=250).contains(&kept),
        "{kept} sessions of 4 KiB in 1 MiB"
    );
    let last = *ids.last().unwrap();
    assert!(
        store.load(&last).await.unwrap().is_some(),
        "the newest was evicted"
    );

    let id = get(&app, "/counter", None).await.id();
    let big = post(&app, "/big/100", Some(id.as_str())).await;
    assert_eq!(
        (big.status, big.body.as_str(), big.cookie.is_none()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            true
        )
    );
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        record.len(),
        1,
        "the session is as it was: {:?}",
        record.keys()
    );
    let new = post(&app, "/big/100", None).await;
    assert_eq!(
        (new.status, new.cookie),
        (StatusCode::INTERNAL_SERVER_ERROR, None)
    );
    let big = [("big".to_owned(), "x".repeat(70_000))]
        .into_iter()
        .collect();
    let err = store
        .create(
            &SessionId::generate(),
            &big,
            std::time::Duration::from_mins(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                limit: Some(65_536),
                ..
            }
        ),
        "{err:?}"
    );

    // A session heavier than the whole bound is still kept once stored (it evicts the
    // others): it counts as the whole bound, not as more.
    let tiny = MemoryStore::builder().max_bytes(64 * 1024).build();
    let app = init_app!(SessionMiddleware::new(tiny.clone()));
    let big = post(&app, "/big/100", None).await;
    assert_eq!(big.status, StatusCode::OK);
    tiny.run_pending_tasks();
    let after = get(&app, "/get/big", Some(big.id().as_str())).await;
    assert_ne!(after.body, "none", "a session just stored was dropped");
}

/// Threads that truly run at once (the conformance suite interleaves tasks on one thread)
/// lose no update: strict increments of a few shared sessions, each retried on conflict,
/// all land, and last-write-wins writes of each thread's own key all persist.
#[test]
fn parallel_threads_lose_no_update() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 300;
    let store = MemoryStore::default();
    let ids: Vec<SessionId> = actix_web::rt::System::new().block_on(async {
        let mut ids = Vec::new();
        for _ in 0..8 {
            ids.push(tests::seed(&store, &[("n", "0")]).await);
        }
        ids
    });
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (store, ids) = (&store, &ids);
            scope.spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    for round in 0..ROUNDS {
                        let id = &ids[(round + thread) % ids.len()];
                        let own = format!("t{thread}");
                        loop {
                            let record = store.load(id).await.unwrap().unwrap();
                            let seen = record["n"].clone();
                            let next = (seen.parse::<usize>().unwrap() + 1).to_string();
                            let changes = ChangeSet::new(
                                vec![
                                    KeyChange::new("n".into(), Some(next), Some(seen)),
                                    KeyChange::new(
                                        own.clone(),
                                        Some(round.to_string()),
                                        record.get(&own).cloned(),
                                    ),
                                ],
                                ConflictPolicy::Strict,
                                std::time::Duration::from_mins(1),
                            );
                            match store.update(id, &changes).await.unwrap() {
                                SaveOutcome::Saved => break,
                                SaveOutcome::Conflict => {}
                                other => panic!("{other:?}"),
                            }
                        }
                    }
                });
            });
        }
    });
    actix_web::rt::System::new().block_on(async {
        let mut total = 0;
        for id in &ids {
            let record = store.load(id).await.unwrap().unwrap();
            total += record["n"].parse::<usize>().unwrap();
            assert_eq!(
                record.len(),
                1 + THREADS,
                "every thread's own key: {record:?}"
            );
        }
        assert_eq!(total, THREADS * ROUNDS, "increments lost");
    });
}
