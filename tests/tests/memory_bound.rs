//! The memory a full `MemoryStore` takes, in its own test binary so that no other test's
//! allocations are counted: resident memory stays under the store's byte bound plus a
//! stated overhead, however many sessions arrive.

use std::time::Duration;

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

/// 100,000 sessions of 4 KiB (400 MiB of data) through a store bounded at 32 MiB: the
/// process grows by less than the bound plus 16 MiB (moka's batches of not yet evicted
/// entries, allocator slack).
#[actix_web::test]
async fn resident_memory_stays_under_the_byte_bound() {
    const MAX_BYTES: u64 = 32 * 1024 * 1024;
    const OVERHEAD: u64 = 16 * 1024 * 1024;
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
}
