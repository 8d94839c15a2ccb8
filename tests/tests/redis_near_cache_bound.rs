//! The near cache's memory bound, in resident memory: the only test of this binary, as
//! resident memory is the whole process's.

use actix_kv_session::{
    storage::{NearCache, RedisStore, SessionStore},
    SessionId,
};
use deadpool_redis::redis;
use tests::servers::ServerProcess;

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Resident set size in bytes, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// 75,000 small sessions (a user id, a CSRF token, the last-seen time: a typical log-in)
/// read through a near cache bounded at 16 MiB. Each such session takes about 930 bytes
/// (the map's table, six small strings and allocator slack, the copy, moka's entry, key and
/// deque nodes), which `near_cache.rs`'s `weight` now counts (it counted 460: the process
/// grew by twice the bound). Held to the memory store's standard (`memory_bound.rs`: the
/// bound plus 16 MiB).
#[actix_web::test]
async fn resident_memory_of_a_full_near_cache_stays_near_its_bound() {
    const MAX_BYTES: u64 = 16 * 1024 * 1024;
    const OVERHEAD: u64 = 16 * 1024 * 1024;
    const SESSIONS: usize = 75_000;
    let server = ServerProcess::redis();
    let store = RedisStore::builder(server.redis_url())
        .near_cache(NearCache::new().max_bytes(MAX_BYTES))
        .build()
        .unwrap();
    let mut admin = raw(&server.redis_url()).await;
    let ids: Vec<SessionId> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            let key = format!("session:{id}");
            pipe.hset_multiple(
                &key,
                &[
                    ("user_id", "\"u-1234567\"".to_owned()),
                    ("csrf", format!("\"{}\"", SessionId::generate())),
                    ("\u{0}seen", "1764190000000".to_owned()),
                ],
            )
            .ignore()
            .expire(&key, 600)
            .ignore();
        }
        let _: () = pipe.query_async(&mut admin).await.unwrap();
    }
    assert!(store.load(&ids[0]).await.unwrap().is_some());
    let before = rss_bytes();
    let mut peak = before;
    for (i, id) in ids.iter().enumerate() {
        assert!(store.load(id).await.unwrap().is_some());
        if i % 1000 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    peak = peak.max(rss_bytes());
    let growth = peak.saturating_sub(before);
    println!(
        "peak resident growth {} KiB for a bound of {} KiB",
        growth / 1024,
        MAX_BYTES / 1024
    );
    assert!(
        growth <= MAX_BYTES + OVERHEAD,
        "resident memory grew by {} MiB, over {} + {} MiB",
        growth / 1024 / 1024,
        MAX_BYTES / 1024 / 1024,
        OVERHEAD / 1024 / 1024
    );
}
