//! The memory a `MemoryStore` takes, in its own test binary so that no other test's
//! allocations are counted: resident memory stays under the store's byte bound plus a
//! stated overhead, however many sessions arrive, and a small session takes little.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use actix_kv_session::{
    storage::{MemoryStore, SessionMap, SessionStore},
    SessionId,
};

/// Resident set size in bytes, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Runs one measurement at a time (each counts the whole process's growth) on an actix-web
/// runtime.
fn measure(test: impl std::future::Future<Output = ()>) {
    static MEASURING: Mutex<()> = Mutex::new(());
    let _alone = MEASURING.lock().unwrap_or_else(PoisonError::into_inner);
    actix_web::rt::System::new().block_on(test);
}

/// 100,000 sessions of 4 KiB (400 MiB of data) through a store bounded at 32 MiB: the
/// process grows by less than the bound plus 16 MiB (allocator slack, the shards' tables).
#[test]
fn resident_memory_stays_under_the_byte_bound() {
    const MAX_BYTES: u64 = 32 * 1024 * 1024;
    const OVERHEAD: u64 = 16 * 1024 * 1024;
    measure(async {
        let store = MemoryStore::builder().max_bytes(MAX_BYTES).build();
        let value = serde_json::to_string(&"x".repeat(4096)).unwrap();
        let before = rss_bytes();
        let mut peak = before;
        for i in 0..100_000 {
            let data: SessionMap = [("big".to_owned(), value.clone())].into_iter().collect();
            store
                .create(&SessionId::generate(), &data, Duration::from_mins(10))
                .await
                .unwrap();
            if i % 1_000 == 0 {
                peak = peak.max(rss_bytes());
            }
        }
        store.run_pending_tasks();
        peak = peak.max(rss_bytes());
        let growth = peak.saturating_sub(before);
        println!(
            "{} sessions kept, {} bytes weighed, peak resident growth {} KiB",
            store.session_count(),
            store.weighted_bytes(),
            growth / 1024
        );
        assert!(
            growth <= MAX_BYTES + OVERHEAD,
            "resident memory grew by {growth} bytes, over {MAX_BYTES} + {OVERHEAD}"
        );
    });
}

/// 200,000 sessions of one small key take under 300 bytes each (on moka, the store took
/// about 610): the figure `cargo run --release -p bench --bin memory` measures at a million.
#[test]
fn a_small_session_takes_under_300_bytes() {
    const SESSIONS: u64 = 200_000;
    measure(async {
        let store = MemoryStore::builder()
            .max_sessions(SESSIONS * 2)
            .max_bytes(SESSIONS * 2 * 1024)
            .build();
        let ids: Vec<SessionId> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
        let before = rss_bytes();
        for id in &ids {
            let data: SessionMap = [("foo".to_owned(), "1".to_owned())].into_iter().collect();
            store
                .create(id, &data, Duration::from_mins(10))
                .await
                .unwrap();
        }
        let per_session = rss_bytes().saturating_sub(before) / store.session_count();
        println!(
            "{} sessions, {per_session} bytes each",
            store.session_count()
        );
        assert_eq!(store.session_count(), SESSIONS);
        assert!(per_session <= 300, "{per_session} bytes per session");
    });
}
