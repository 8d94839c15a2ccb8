//! The cost of the memory store's update path against moka's own atomic update, for
//! callgrind: each mode repeats one sequence of operations on one session `n` times, so the
//! instructions per sequence are `(I(n2) - I(n1)) / (n2 - n1)`.
//!
//! `bench/memory_ops.sh` runs every mode under callgrind and writes
//! `docs/bench/memory-ops.txt`.
//!
//! Modes:
//! - `load`: `MemoryStore::load`;
//! - `load-update`: a load, then an update of the session it loaded;
//! - `load-load`: two loads of two sessions;
//! - `load-load-update`: two loads, then an update of the first (the store keeps no memo
//!   of the last load: this update costs as much as the one above);
//! - `moka-get`: moka `get` of a session kept as an immutable value;
//! - `moka-get-compute`: that `get`, then `entry().and_compute_with` that copies the
//!   session, applies the change and puts it back: the update moka offers, for comparison
//!   (the store ran on moka until its memory per session was cut).

use std::{sync::Arc, time::Duration};

use actix_kv_session::{
    storage::{ChangeSet, ConflictPolicy, KeyChange, MemoryStore, SessionMap, SessionStore},
    SessionId,
};
use moka::{ops::compute::Op, policy::EvictionPolicy, sync::Cache};

const TTL: Duration = Duration::from_hours(1);

fn change(value: u64) -> ChangeSet {
    let key_change = KeyChange::new("foo".into(), Some(value.to_string()), None);
    ChangeSet::new(vec![key_change], ConflictPolicy::LastWriteWins, TTL)
}

fn session() -> SessionMap {
    [("foo".to_owned(), "0".to_owned())].into_iter().collect()
}

async fn store_mode(mode: &str, n: u64) {
    let store = MemoryStore::default();
    let (id, other) = (SessionId::generate(), SessionId::generate());
    store.create(&id, &session(), TTL).await.unwrap();
    store.create(&other, &session(), TTL).await.unwrap();
    for i in 0..n {
        match mode {
            "load" => drop(store.load(&id).await),
            "load-update" => {
                drop(store.load(&id).await);
                drop(store.update(&id, &change(i)).await);
            }
            "load-load" => {
                drop(store.load(&id).await);
                drop(store.load(&other).await);
            }
            "load-load-update" => {
                drop(store.load(&id).await);
                drop(store.load(&other).await);
                drop(store.update(&id, &change(i)).await);
            }
            other => panic!("unknown mode {other}"),
        }
    }
}

fn moka_mode(mode: &str, n: u64) {
    let cache: Cache<SessionId, Arc<SessionMap>, foldhash::fast::RandomState> = Cache::builder()
        .max_capacity(100_000)
        .eviction_policy(EvictionPolicy::lru())
        .time_to_live(TTL)
        .build_with_hasher(foldhash::fast::RandomState::default());
    let id = SessionId::generate();
    cache.insert(id, Arc::new(session()));
    for i in 0..n {
        let loaded = cache.get(&id).map(|data| (*data).clone());
        drop(loaded);
        if mode == "moka-get-compute" {
            let changes = change(i);
            cache.entry(id).and_compute_with(|entry| match entry {
                Some(entry) => {
                    let mut data = (**entry.value()).clone();
                    changes.apply_to(&mut data);
                    Op::Put(Arc::new(data))
                }
                None => Op::Nop,
            });
        }
    }
}

#[actix_web::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().expect("a mode: see the file's docs");
    let n: u64 = args.next().and_then(|n| n.parse().ok()).expect("a count");
    if mode.starts_with("moka") {
        moka_mode(&mode, n);
    } else {
        store_mode(&mode, n).await;
    }
}
