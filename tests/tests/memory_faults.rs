//! The sharded `MemoryStore` under attack: its bounds (a byte bound too large for its
//! weights, sessions of very different sizes, concurrent creates over the bound), renews
//! crossing shards, expiry, size limits and merges, under real threads, each with its own
//! actix-web `System` (as actix workers).

use std::{
    collections::HashSet,
    sync::{mpsc, Arc, Barrier, Mutex},
    thread,
    time::Duration,
};

use actix_kv_session::{
    storage::{
        ChangeSet, ConflictPolicy, KeyChange, MemoryStore, SaveOutcome, SessionMap, SessionStore,
    },
    SessionId, StoreError,
};

const HOUR: Duration = Duration::from_hours(1);

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    actix_web::rt::System::new().block_on(future)
}

fn data(key: &str, value: &str) -> SessionMap {
    SessionMap::from([(key.to_owned(), value.to_owned())])
}

/// A JSON string of `len` bytes in all.
fn blob(len: usize) -> String {
    format!("\"{}\"", "x".repeat(len - 2))
}

fn set(key: &str, value: &str, seen: Option<&str>, policy: ConflictPolicy) -> ChangeSet {
    let change = KeyChange::new(key.to_owned(), Some(value.to_owned()), seen.map(Into::into));
    ChangeSet::new(vec![change], policy, HOUR)
}

fn lww(key: &str, value: &str) -> ChangeSet {
    set(key, value, None, ConflictPolicy::LastWriteWins)
}

/// Runs `threads` workers, each on its own actix `System`; fails on a panic, or when they
/// do not all finish within `limit` (a deadlock).
fn workers(threads: usize, limit: Duration, work: impl Fn(usize) + Send + Sync + 'static) {
    let work = Arc::new(work);
    let (done, finished) = mpsc::channel();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (work, done) = (Arc::clone(&work), done.clone());
            thread::spawn(move || {
                work(t);
                let _ = done.send(());
            })
        })
        .collect();
    drop(done);
    for _ in 0..threads {
        match finished.recv_timeout(limit) {
            Ok(()) => {}
            // Every sender gone: a worker panicked, `join` below reports it.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("workers stuck for {limit:?}: deadlock?")
            }
        }
    }
    for handle in handles {
        handle.join().expect("a worker panicked");
    }
}

// ---------------------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------------------

/// `max_sessions` must hold whatever `max_bytes` is: a byte bound large enough not to
/// matter (here `u64::MAX`, "no byte bound") must not switch the session bound off.
#[test]
fn max_sessions_holds_with_an_unlimited_byte_bound() {
    let store = fill(2, u64::MAX, 10);
    assert!(
        store.session_count() <= 2,
        "{} sessions kept, max_sessions is 2 (weighted_bytes {})",
        store.session_count(),
        store.weighted_bytes()
    );
}

/// The same with a plausible byte bound: 64 GiB for a store of at most 4 sessions.
#[test]
fn max_sessions_holds_with_a_byte_bound_above_4_gib() {
    let store = fill(4, 64 * 1024 * 1024 * 1024, 100);
    assert!(
        store.session_count() <= 4,
        "{} sessions kept, max_sessions is 4",
        store.session_count()
    );
}

/// A store of these bounds after `count` one-key sessions were created in it, swept.
fn fill(max_sessions: u64, max_bytes: u64, count: usize) -> MemoryStore {
    let store = MemoryStore::builder()
        .max_sessions(max_sessions)
        .max_bytes(max_bytes)
        .build();
    block(async {
        for _ in 0..count {
            store
                .create(&SessionId::generate(), &data("user", "1"), HOUR)
                .await
                .unwrap();
        }
    });
    store.run_pending_tasks();
    store
}

/// `session_count` never above `max_sessions` once writers stop, whatever they did
/// concurrently, in a store of many shards.
#[test]
fn concurrent_writers_leave_the_store_within_max_sessions() {
    const MAX: u64 = 4_096; // 2 shards
    let store = MemoryStore::builder().max_sessions(MAX).build();
    let shared = store.clone();
    workers(4, Duration::from_mins(1), move |t| {
        block(async {
            for i in 0..5_000 {
                let id = SessionId::generate();
                let value = blob(2 + (i * 7 + t * 13) % 3_000);
                shared.create(&id, &data("v", &value), HOUR).await.unwrap();
                if i % 3 == 0 {
                    shared.update(&id, &lww("w", &blob(500))).await.unwrap();
                }
            }
        });
    });
    store.run_pending_tasks();
    assert!(
        store.session_count() <= MAX,
        "{} > {MAX}",
        store.session_count()
    );
    assert!(store.weighted_bytes() <= 256 * 1024 * 1024);
}

// ---------------------------------------------------------------------------------------
// Eviction order
// ---------------------------------------------------------------------------------------

/// "A session just created is always kept": two workers create, at once, one session each
/// that together do not fit (each over half the bound). One must be evicted, but not both.
#[test]
fn concurrent_creates_of_heavy_sessions_do_not_evict_each_other() {
    const ROUNDS: usize = 3_000;
    let store = MemoryStore::builder()
        .max_sessions(1_000_000)
        .max_bytes(1_000_000)
        .build(); // 8 shards
    let ids = Arc::new(Mutex::new(vec![[None, None]; ROUNDS]));
    let barrier = Arc::new(Barrier::new(2));
    let lost = Arc::new(Mutex::new(Vec::new()));
    let (shared, ids2, lost2) = (store.clone(), Arc::clone(&ids), Arc::clone(&lost));
    workers(2, Duration::from_mins(2), move |t| {
        let heavy = data("v", &blob(600_000));
        block(async {
            for round in 0..ROUNDS {
                barrier.wait();
                let id = SessionId::generate();
                shared.create(&id, &heavy, HOUR).await.unwrap();
                ids2.lock().unwrap()[round][t] = Some(id);
                barrier.wait();
                if t == 0 {
                    let [a, b] = ids2.lock().unwrap()[round];
                    let a_kept = shared.load(&a.unwrap()).await.unwrap().is_some();
                    let b_kept = shared.load(&b.unwrap()).await.unwrap().is_some();
                    if !a_kept && !b_kept {
                        lost2.lock().unwrap().push((round, shared.session_count()));
                    }
                }
                barrier.wait();
            }
        });
    });
    let lost = lost.lock().unwrap();
    assert!(
        lost.is_empty(),
        "{} of {ROUNDS} rounds lost both new sessions (round, sessions left): {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

// ---------------------------------------------------------------------------------------
// Size limit
// ---------------------------------------------------------------------------------------

/// A session that grows past `max_session_bytes` through updates is refused and left as
/// it was.
#[test]
fn a_session_growing_past_the_size_limit_is_refused_and_unchanged() {
    block(async {
        let store = MemoryStore::builder().max_session_bytes(1_000).build();
        let id = SessionId::generate();
        store
            .create(&id, &data("a", &blob(400)), HOUR)
            .await
            .unwrap();
        assert_eq!(
            store.update(&id, &lww("b", &blob(500))).await.unwrap(),
            SaveOutcome::Saved
        );
        let refused = store.update(&id, &lww("c", &blob(200))).await;
        assert!(
            matches!(refused, Err(StoreError::TooLarge { .. })),
            "{refused:?}"
        );
        let stored = store.load(&id).await.unwrap().unwrap();
        assert_eq!(stored.len(), 2);
        // Renewing into a too large session is refused too, and writes nothing.
        let to = SessionId::generate();
        let refused = store.renew(&id, &to, &lww("c", &blob(200))).await;
        assert!(
            matches!(refused, Err(StoreError::TooLarge { .. })),
            "{refused:?}"
        );
        assert_eq!(store.load(&to).await.unwrap(), None);
        assert_eq!(store.load(&id).await.unwrap(), Some(stored));
    });
}

/// A change set that names a key twice (the public `ChangeSet::new` allows it) must not
/// let a session past the size limit: the size estimate subtracts the old value once per
/// mention.
#[test]
fn a_key_removed_twice_does_not_let_a_session_past_the_size_limit() {
    block(async {
        let store = MemoryStore::builder().max_session_bytes(1_200).build();
        let id = SessionId::generate();
        let start = SessionMap::from([("a".to_owned(), blob(500)), ("c".to_owned(), blob(600))]);
        store.create(&id, &start, HOUR).await.unwrap();
        let changes = ChangeSet::new(
            vec![
                KeyChange::new("a".into(), None, None),
                KeyChange::new("a".into(), None, None),
                KeyChange::new("d".into(), Some(blob(900)), None),
            ],
            ConflictPolicy::LastWriteWins,
            HOUR,
        );
        let outcome = store.update(&id, &changes).await;
        let size: usize = store
            .load(&id)
            .await
            .unwrap()
            .unwrap()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert!(
            matches!(outcome, Err(StoreError::TooLarge { .. })),
            "{outcome:?}: the session now holds {size} bytes, the limit is 1200"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Expiry, markers, resurrection
// ---------------------------------------------------------------------------------------

/// A 1 ms session: once expired, nothing brings it back, and its id can be created anew.
#[test]
fn an_expired_session_stays_gone_and_its_id_is_free() {
    block(async {
        let store = MemoryStore::builder().max_sessions(2).build();
        let id = SessionId::generate();
        store
            .create(&id, &data("a", "1"), Duration::from_millis(1))
            .await
            .unwrap();
        thread::sleep(Duration::from_millis(3));
        assert!(!store.touch(&id, HOUR).await.unwrap());
        assert_eq!(
            store.update(&id, &lww("a", "2")).await.unwrap(),
            SaveOutcome::Gone
        );
        let to = SessionId::generate();
        assert_eq!(
            store.renew(&id, &to, &lww("a", "2")).await.unwrap(),
            SaveOutcome::Gone
        );
        assert_eq!(store.load(&id).await.unwrap(), None);
        assert_eq!(store.load(&to).await.unwrap(), None);
        store.create(&id, &data("b", "1"), HOUR).await.unwrap();
        assert_eq!(store.load(&id).await.unwrap(), Some(data("b", "1")));
        store.delete(&id).await.unwrap();
        store.run_pending_tasks();
        assert_eq!((store.session_count(), store.weighted_bytes()), (0, 0));
    });
}

/// A touch of a marker is refused and does not extend it: past the marker's TTL the old
/// id is gone, not moved.
#[test]
fn touching_a_marker_neither_succeeds_nor_extends_it() {
    block(async {
        let store = MemoryStore::default();
        let (from, to) = (SessionId::generate(), SessionId::generate());
        store.create(&from, &data("a", "1"), HOUR).await.unwrap();
        let short = ChangeSet::new(
            Vec::new(),
            ConflictPolicy::LastWriteWins,
            Duration::from_millis(20),
        );
        assert_eq!(
            store.renew(&from, &to, &short).await.unwrap(),
            SaveOutcome::Saved
        );
        assert!(!store.touch(&from, HOUR).await.unwrap());
        assert_eq!(
            store.update(&from, &lww("a", "2")).await.unwrap(),
            SaveOutcome::Moved
        );
        assert!(matches!(
            store.create(&from, &data("a", "1"), HOUR).await,
            Err(StoreError::IdInUse)
        ));
        thread::sleep(Duration::from_millis(30));
        assert_eq!(
            store.update(&from, &lww("a", "2")).await.unwrap(),
            SaveOutcome::Gone
        );
        assert_eq!(
            store.load(&to).await.unwrap(),
            None,
            "the renewed session expired too"
        );
    });
}

/// Updates racing a delete: once the delete has returned, no update succeeds and the
/// session is never seen again.
#[test]
fn updates_racing_a_delete_never_resurrect_the_session() {
    for _ in 0..50 {
        let store = MemoryStore::default();
        let id = SessionId::generate();
        block(store.create(&id, &data("n", "0"), HOUR)).unwrap();
        let deleted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (shared, deleted2) = (store.clone(), Arc::clone(&deleted));
        workers(3, Duration::from_secs(30), move |t| {
            block(async {
                if t == 0 {
                    thread::yield_now();
                    shared.delete(&id).await.unwrap();
                    deleted2.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                for i in 0..2_000 {
                    let after_delete = deleted2.load(std::sync::atomic::Ordering::SeqCst);
                    let outcome = shared
                        .update(&id, &lww(&format!("k{t}"), &i.to_string()))
                        .await
                        .unwrap();
                    if after_delete {
                        assert_eq!(outcome, SaveOutcome::Gone, "an update after the delete");
                    }
                    assert!(!shared.touch(&id, HOUR).await.unwrap() || !after_delete);
                }
            });
        });
        assert_eq!(block(store.load(&id)).unwrap(), None);
        assert_eq!((store.session_count(), store.weighted_bytes()), (0, 0));
    }
}

// ---------------------------------------------------------------------------------------
// Merges, conflicts, renews under concurrency
// ---------------------------------------------------------------------------------------

/// Strict compare-and-set increments from 4 workers: no increment is lost, none counted
/// twice.
#[test]
fn strict_increments_from_many_workers_lose_nothing() {
    let store = MemoryStore::default();
    let id = SessionId::generate();
    block(store.create(&id, &data("n", "0"), HOUR)).unwrap();
    let shared = store.clone();
    workers(4, Duration::from_mins(1), move |_| {
        block(async {
            let mut done = 0;
            while done < 500 {
                let current = shared.load(&id).await.unwrap().unwrap()["n"].clone();
                let next = (current.parse::<u64>().unwrap() + 1).to_string();
                let change = set("n", &next, Some(&current), ConflictPolicy::Strict);
                match shared.update(&id, &change).await.unwrap() {
                    SaveOutcome::Saved => done += 1,
                    SaveOutcome::Conflict => {}
                    other => panic!("{other:?}"),
                }
            }
        });
    });
    let n = &block(store.load(&id)).unwrap().unwrap()["n"];
    assert_eq!(n, "2000");
}

/// Writers on one session while it is renewed: every update answered `Saved` is in the
/// renewed session, none answered `Moved` is, and the old id only ever answers `Moved`
/// after the renew.
#[test]
fn no_update_is_lost_or_leaks_across_a_concurrent_renew() {
    for _ in 0..20 {
        let store = MemoryStore::builder().max_sessions(10_000).build(); // 4 shards
        let (from, to) = (SessionId::generate(), SessionId::generate());
        block(store.create(&from, &data("base", "1"), HOUR)).unwrap();
        let saved = Arc::new(Mutex::new(HashSet::new()));
        let moved = Arc::new(Mutex::new(HashSet::new()));
        let (shared, saved2, moved2) = (store.clone(), Arc::clone(&saved), Arc::clone(&moved));
        workers(4, Duration::from_secs(30), move |t| {
            block(async {
                if t == 0 {
                    thread::sleep(Duration::from_micros(200));
                    let outcome = shared
                        .renew(&from, &to, &lww("renewed", "1"))
                        .await
                        .unwrap();
                    assert_eq!(outcome, SaveOutcome::Saved);
                    return;
                }
                let mut was_moved = false;
                for i in 0..1_000 {
                    let key = format!("k{t}_{i}");
                    match shared.update(&from, &lww(&key, "1")).await.unwrap() {
                        SaveOutcome::Saved => {
                            assert!(!was_moved, "Saved after Moved");
                            saved2.lock().unwrap().insert(key);
                        }
                        SaveOutcome::Moved => {
                            was_moved = true;
                            moved2.lock().unwrap().insert(key);
                        }
                        other => panic!("{other:?}"),
                    }
                }
            });
        });
        let renewed = block(store.load(&to)).unwrap().unwrap();
        for key in saved.lock().unwrap().iter() {
            assert!(
                renewed.contains_key(key),
                "{key} answered Saved but was lost"
            );
        }
        for key in moved.lock().unwrap().iter() {
            assert!(
                !renewed.contains_key(key),
                "{key} answered Moved but was written"
            );
        }
        assert_eq!(block(store.load(&from)).unwrap(), None);
    }
}

/// Renews of one session, into one target, and crossing shards both ways at once: exactly
/// one renew of a session wins, a target is written once, nothing deadlocks, and the
/// weight returns to 0 once everything is deleted.
#[test]
fn crossing_and_competing_renews_neither_deadlock_nor_leak_weight() {
    const SESSIONS: usize = 64;
    let store = MemoryStore::builder().max_sessions(1_000_000).build(); // 64 shards
    let a: Vec<_> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
    let b: Vec<_> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
    for round in 0..20 {
        block(async {
            for (x, y) in a.iter().zip(&b) {
                store.create(x, &data("side", "a"), HOUR).await.unwrap();
                store.create(y, &data("side", "b"), HOUR).await.unwrap();
            }
        });
        // Fresh targets: p for worker 0, q for worker 1, t shared by workers 2 and 3.
        let fresh = || -> Vec<SessionId> { (0..SESSIONS).map(|_| SessionId::generate()).collect() };
        let (p, q, targets) = (fresh(), fresh(), fresh());
        // Saved renews per source (a then b) and per shared target.
        let wins = Arc::new(Mutex::new(vec![0u32; 2 * SESSIONS]));
        let target_wins = Arc::new(Mutex::new(vec![0u32; SESSIONS]));
        let (shared, a2, b2) = (store.clone(), a.clone(), b.clone());
        let (p2, q2, t2) = (p.clone(), q.clone(), targets.clone());
        let (wins2, target_wins2) = (Arc::clone(&wins), Arc::clone(&target_wins));
        workers(4, Duration::from_secs(30), move |t| {
            block(async {
                for i in 0..SESSIONS {
                    let (source, from, to) = match t {
                        0 => (i, &a2[i], &p2[i]),
                        1 => (SESSIONS + i, &b2[i], &q2[i]),
                        2 => ((i + 7) % SESSIONS, &a2[(i + 7) % SESSIONS], &t2[i]),
                        _ => (
                            SESSIONS + (i + 13) % SESSIONS,
                            &b2[(i + 13) % SESSIONS],
                            &t2[i],
                        ),
                    };
                    match shared.renew(from, to, &lww("x", &t.to_string())).await {
                        Ok(SaveOutcome::Saved) => {
                            wins2.lock().unwrap()[source] += 1;
                            if t >= 2 {
                                target_wins2.lock().unwrap()[i] += 1;
                            }
                        }
                        Ok(SaveOutcome::Moved) | Err(StoreError::IdInUse) => {}
                        other => panic!("{other:?}"),
                    }
                }
            });
        });
        for (i, &w) in wins.lock().unwrap().iter().enumerate() {
            assert_eq!(w, 1, "round {round}: source {i} renewed {w} times");
        }
        for (i, &w) in target_wins.lock().unwrap().iter().enumerate() {
            assert!(w <= 1, "round {round}: target {i} written {w} times");
        }
        block(async {
            for id in a.iter().chain(&b).chain(&p).chain(&q).chain(&targets) {
                store.delete(id).await.unwrap();
            }
        });
        store.run_pending_tasks();
        assert_eq!(
            (store.session_count(), store.weighted_bytes()),
            (0, 0),
            "round {round}"
        );
    }
}

/// Random operations from 4 workers on a small pool of ids (creates, updates of very
/// different sizes, renews, touches, deletes, 1 ms TTLs) in a store of 2 sessions and
/// in one of many shards: no panic, no deadlock, the bound kept, and once everything is
/// deleted the count and the weight are exactly 0.
#[test]
fn random_operations_keep_the_bound_and_return_the_weight_to_zero() {
    for max_sessions in [1_u64, 2, 5_000] {
        let store = MemoryStore::builder()
            .max_sessions(max_sessions)
            .max_bytes(4_000_000)
            .max_session_bytes(200_000)
            .build();
        let pool: Arc<Vec<SessionId>> = Arc::new((0..64).map(|_| SessionId::generate()).collect());
        let (shared, pool2) = (store.clone(), Arc::clone(&pool));
        workers(4, Duration::from_mins(2), move |t| {
            let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ (t as u64) << 32;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            block(async {
                for _ in 0..20_000 {
                    let r = next();
                    let id = &pool2[(r % 64) as usize];
                    let other = &pool2[((r >> 8) % 64) as usize];
                    let ttl = if (r >> 20).trailing_zeros() >= 3 {
                        Duration::from_millis(1)
                    } else {
                        HOUR
                    };
                    let len = match r >> 24 & 3 {
                        0 => 3,
                        1 => 100,
                        2 => 5_000,
                        _ => 150_000,
                    };
                    let value = blob(len);
                    let changes = ChangeSet::new(
                        vec![KeyChange::new(
                            format!("k{}", r >> 30 & 3),
                            (r >> 33 & 3 != 0).then(|| value.clone()),
                            None,
                        )],
                        ConflictPolicy::LastWriteWins,
                        ttl,
                    );
                    let result = match r >> 40 & 7 {
                        0 | 1 => shared
                            .create(id, &data("k0", &value), ttl)
                            .await
                            .map(|()| SaveOutcome::Saved),
                        2 | 3 => shared.update(id, &changes).await,
                        4 => shared.renew(id, other, &changes).await,
                        5 => shared.touch(id, ttl).await.map(|_| SaveOutcome::Saved),
                        6 => shared.delete(id).await.map(|()| SaveOutcome::Saved),
                        _ => shared.load(id).await.map(|_| SaveOutcome::Saved),
                    };
                    match result {
                        Ok(_) | Err(StoreError::IdInUse | StoreError::TooLarge { .. }) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
            });
        });
        store.run_pending_tasks();
        assert!(
            store.session_count() <= max_sessions,
            "max_sessions {max_sessions}: {} kept",
            store.session_count()
        );
        assert!(store.weighted_bytes() <= 4_000_000);
        block(async {
            for id in pool.iter() {
                store.delete(id).await.unwrap();
            }
        });
        store.run_pending_tasks();
        assert_eq!(
            (store.session_count(), store.weighted_bytes()),
            (0, 0),
            "max_sessions {max_sessions}"
        );
    }
}

/// A store of one session: each new session replaces the last, a renew keeps the renewed
/// session (not its marker), and the count never passes 1.
#[test]
fn a_store_of_one_session_keeps_the_newest() {
    block(async {
        let store = MemoryStore::builder().max_sessions(1).build();
        let mut last = SessionId::generate();
        store.create(&last, &data("a", "1"), HOUR).await.unwrap();
        for _ in 0..50 {
            let to = SessionId::generate();
            assert_eq!(
                store
                    .renew(&last, &to, &lww("b", &blob(3_000)))
                    .await
                    .unwrap(),
                SaveOutcome::Saved
            );
            assert!(
                store.load(&to).await.unwrap().is_some(),
                "the renewed session evicted"
            );
            assert_eq!(store.session_count(), 1);
            let new = SessionId::generate();
            store.create(&new, &data("a", "1"), HOUR).await.unwrap();
            assert!(store.load(&new).await.unwrap().is_some());
            assert_eq!(store.session_count(), 1);
            last = new;
        }
    });
}
