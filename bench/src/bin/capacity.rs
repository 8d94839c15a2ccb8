//! Bytes per session in Redis (both layouts) and in memcached, for sessions of 1, 5 and 20
//! keys written through this crate's stores: Redis's own `MEMORY USAGE` of each session's
//! key (averaged) and the growth of `used_memory`; memcached's `bytes` over `curr_items`
//! (item headers, keys and values, without the slab classes' rounding).
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379/9 MEMCACHED_ADDR=127.0.0.1:11211 \
//!     cargo run --release -p bench --bin capacity -- 2000
//! ```
//!
//! It empties Redis's database first (`FLUSHDB`): point it at servers of its own.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    time::Duration,
};

use actix_kv_session::{
    storage::{MemcachedStore, RedisLayout, RedisStore, SessionMap, SessionStore},
    SessionId,
};
use deadpool_redis::redis;

/// A session of `keys` keys, as an app keeps them: who is logged in, a counter, a cart,
/// then preferences.
fn session(keys: usize) -> SessionMap {
    let mut data = SessionMap::new();
    let typical = [
        ("user", r#""ada@example.com""#.to_owned()),
        ("visits", "42".to_owned()),
        ("cart.items", r#"["apple","pear"]"#.to_owned()),
    ];
    for i in 0..keys {
        let (key, value) = typical
            .get(i)
            .cloned()
            .unwrap_or_else(|| ("pref", r#""dark""#.to_owned()));
        let key = if i < typical.len() {
            key.to_owned()
        } else {
            format!("{key}.{i}")
        };
        data.insert(key, value);
    }
    data
}

/// A field of `INFO memory`.
async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

/// A value of memcached's `stats`.
fn memcached_stat(addr: &str, name: &str) -> i64 {
    let mut stream = TcpStream::connect(addr).expect("memcached");
    stream.write_all(b"stats\r\n").expect("stats");
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line.expect("a line");
        if line == "END" {
            break;
        }
        let mut parts = line.split_whitespace().skip(1);
        if parts.next() == Some(name) {
            return parts.next().and_then(|v| v.parse().ok()).expect("a number");
        }
    }
    panic!("no stat {name}")
}

// Averages of a few thousand byte counts: f64 is exact enough.
#[allow(clippy::cast_precision_loss)]
#[actix_web::main]
async fn main() {
    let sessions: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/9".to_owned());
    let memcached = std::env::var("MEMCACHED_ADDR").unwrap_or_else(|_| "127.0.0.1:11211".into());
    let ttl = Duration::from_hours(30 * 24);
    let client = redis::Client::open(redis_url.as_str()).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    println!("| store | keys | JSON bytes | bytes per session (store's own count) | growth of used memory per session |");
    println!("|---|---:|---:|---:|---:|");
    for keys in [1, 5, 20] {
        let data = session(keys);
        let json = serde_json_len(&data);
        for (name, layout) in [
            ("Redis, hash", RedisLayout::Hash),
            ("Redis, JSON", RedisLayout::Json),
        ] {
            let _: () = redis::cmd("FLUSHDB")
                .query_async(&mut conn)
                .await
                .expect("FLUSHDB");
            let store = RedisStore::builder(redis_url.as_str())
                .layout(layout)
                .build()
                .expect("a store");
            let before = used_memory(&mut conn).await;
            let mut usage = 0_i64;
            let expected_type = match layout {
                RedisLayout::Json => "string",
                _ => "hash",
            };
            for _ in 0..sessions {
                let id = SessionId::generate();
                store.create(&id, &data, ttl).await.expect("create");
                let kind: String = redis::cmd("TYPE")
                    .arg(format!("session:{id}"))
                    .query_async(&mut conn)
                    .await
                    .expect("TYPE");
                assert_eq!(kind, expected_type);
                let bytes: i64 = redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(format!("session:{id}"))
                    .arg("SAMPLES")
                    .arg(0)
                    .query_async(&mut conn)
                    .await
                    .expect("MEMORY USAGE");
                usage += bytes;
            }
            let after = used_memory(&mut conn).await;
            let count: usize = redis::cmd("DBSIZE")
                .query_async(&mut conn)
                .await
                .expect("DBSIZE");
            assert_eq!(count, sessions);
            println!(
                "| {name} | {keys} | {json} | {:.0} | {:.0} |",
                usage as f64 / sessions as f64,
                (after - before) as f64 / sessions as f64
            );
        }
        // Deltas: `flush_all` only marks items invalid, and `bytes` counts them until they
        // are reclaimed.
        let store = MemcachedStore::new(&memcached).expect("a store");
        let before = memcached_stat(&memcached, "bytes");
        let items_before = memcached_stat(&memcached, "curr_items");
        for _ in 0..sessions {
            store
                .create(&SessionId::generate(), &data, ttl)
                .await
                .expect("create");
        }
        let after = memcached_stat(&memcached, "bytes");
        let items = memcached_stat(&memcached, "curr_items") - items_before;
        assert_eq!(items, i64::try_from(sessions).expect("a count"));
        println!(
            "| memcached | {keys} | {json} | {:.0} | |",
            (after - before) as f64 / sessions as f64
        );
    }
}

/// The length of the session as one JSON object (the JSON layouts' value).
fn serde_json_len(data: &SessionMap) -> usize {
    // `{` + `"key":value` joined by `,` + `}`.
    2 + data
        .iter()
        .map(|(k, v)| k.len() + 3 + v.len())
        .sum::<usize>()
        + data.len().saturating_sub(1)
}
