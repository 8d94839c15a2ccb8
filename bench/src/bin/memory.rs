//! Bytes per session of `MemoryStore` with many small sessions (a counter each): the growth
//! of this process's resident memory while they are stored, divided by their number.
//!
//! `cargo run --release -p bench --bin memory -- 1000000`

use std::time::{Duration, Instant};

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

// Byte counts of a few GiB at most: f64 is exact for them.
#[allow(clippy::cast_precision_loss)]
#[actix_web::main]
async fn main() {
    let sessions: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let bound = sessions + sessions / 10;
    let store = MemoryStore::builder()
        .max_sessions(bound)
        .max_bytes(bound * 1024)
        .build();
    // Ids made first, so their own memory is not counted.
    let ids: Vec<SessionId> = (0..sessions).map(|_| SessionId::generate()).collect();
    let before = rss_bytes();
    let started = Instant::now();
    for id in &ids {
        let data: SessionMap = [("foo".to_owned(), "1".to_owned())].into_iter().collect();
        store
            .create(id, &data, Duration::from_hours(24 * 30))
            .await
            .expect("memory store saves");
    }
    store.run_pending_tasks();
    let after = rss_bytes();
    let kept = store.session_count();
    let per_session = (after.saturating_sub(before)) as f64 / kept.max(1) as f64;
    println!(
        "memory store: {kept} sessions, {:.1} MiB resident growth, {per_session:.0} bytes per session, {:.2} s to store",
        (after - before) as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
}
