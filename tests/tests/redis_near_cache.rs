//! `RedisStore` with its near cache, against a real `redis-server`: the conformance and
//! middleware suites (both layouts), and what the cache must keep: a change made through
//! another store object (another app instance) or straight in Redis is seen once its
//! invalidation arrives; a lost connection, `FLUSHDB` and Redis's expiry drop what is
//! cached; the strict policy still refuses a save based on a stale read; and reads of a
//! cached session send nothing to Redis.

use std::time::{Duration, Instant};

use actix_kv_session::{
    storage::{ConflictPolicy, NearCache, RedisLayout, RedisStore, SaveOutcome, SessionStore},
    SessionId, SessionMiddleware,
};
use actix_web::http::StatusCode;
use deadpool_redis::redis::{self, AsyncCommands};
use tests::counter_session::{counter, set_foo};
use tests::{init_app, servers::ServerProcess, suite::get};

fn near(server: &ServerProcess) -> RedisStore {
    RedisStore::builder(server.redis_url())
        .near_cache(NearCache::new())
        .build()
        .expect("a valid URL")
}

fn redis_near() -> (RedisStore, ServerProcess) {
    let server = ServerProcess::redis();
    (near(&server), server)
}

actix_kv_session::store_conformance!(redis_near());
tests::session_suite!(redis_near());

mod json_layout {
    use super::*;

    fn redis_json_near() -> (RedisStore, ServerProcess) {
        let server = ServerProcess::redis();
        let store = RedisStore::builder(server.redis_url())
            .layout(RedisLayout::Json)
            .near_cache(NearCache::new())
            .build()
            .expect("a valid URL");
        (store, server)
    }

    actix_kv_session::store_conformance!(redis_json_near());
}

async fn raw(server: &ServerProcess) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.redis_url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// How many times Redis ran `command`, from `INFO commandstats`.
async fn calls(admin: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// A session of `foo = 1` created through `writer` and read through `reader`, which caches
/// it.
async fn cached(writer: &RedisStore, reader: &RedisStore) -> SessionId {
    let id = SessionId::generate();
    writer
        .create(&id, &counter("1"), Duration::from_mins(10))
        .await
        .unwrap();
    assert_eq!(reader.load(&id).await.unwrap(), Some(counter("1")));
    id
}

/// Loads `id` through `store` until it reads nothing. Panics after two seconds.
async fn until_gone(store: &RedisStore, id: &SessionId) {
    let started = Instant::now();
    while store.load(id).await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(2), "still read");
        actix_web::rt::task::yield_now().await;
    }
}

/// Loads `id` through `store` until `foo` reads `value`; how long that took. Panics after
/// two seconds.
async fn until_seen(store: &RedisStore, id: &SessionId, value: &str) -> Duration {
    let started = Instant::now();
    loop {
        let loaded = store.load(id).await.unwrap();
        if loaded
            .as_ref()
            .and_then(|s| s.get("foo"))
            .map(String::as_str)
            == Some(value)
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still {loaded:?}, not foo = {value}"
        );
        actix_web::rt::task::yield_now().await;
    }
}

#[actix_web::test]
async fn a_cached_session_is_read_without_asking_redis() {
    let (store, server) = redis_near();
    let mut admin = raw(&server).await;
    let id = cached(&store, &store).await;
    let before = calls(&mut admin, "hgetall").await;
    for _ in 0..100 {
        assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
    }
    assert_eq!(calls(&mut admin, "hgetall").await, before);

    // And through the middleware: a read-only route, a hundred times.
    let app = init_app!(SessionMiddleware::new(store));
    for _ in 0..100 {
        let reply = get(&app, "/get/foo", Some(id.as_str())).await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    }
    assert_eq!(calls(&mut admin, "hgetall").await, before);
}

#[actix_web::test]
async fn a_change_made_by_another_instance_or_in_redis_is_seen() {
    let server = ServerProcess::redis();
    let (a, b) = (near(&server), near(&server));
    let mut admin = raw(&server).await;
    let id = cached(&a, &b).await;

    // Another instance saves.
    let saved = a
        .update(&id, &set_foo("2", "1", ConflictPolicy::LastWriteWins))
        .await
        .unwrap();
    assert_eq!(saved, SaveOutcome::Saved);
    until_seen(&b, &id, "2").await;

    // Someone writes to Redis directly.
    let _: () = admin
        .hset(format!("session:{id}"), "foo", "3")
        .await
        .unwrap();
    until_seen(&b, &id, "3").await;

    // Another instance logs the user out.
    a.delete(&id).await.unwrap();
    let started = Instant::now();
    while b.load(&id).await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still logged in"
        );
        actix_web::rt::task::yield_now().await;
    }
}

/// A request that read a cached session just changed elsewhere saves against what Redis
/// holds: the strict policy refuses it, as without the cache.
#[actix_web::test]
async fn the_strict_policy_refuses_a_save_based_on_a_stale_read() {
    let server = ServerProcess::redis();
    let (a, b) = (near(&server), near(&server));
    let id = cached(&a, &b).await;
    let saved = a
        .update(&id, &set_foo("2", "1", ConflictPolicy::Strict))
        .await
        .unwrap();
    assert_eq!(saved, SaveOutcome::Saved);
    // `b` read 1 (whether or not its cache still says so): its increment is refused.
    let stale = b
        .update(&id, &set_foo("2", "1", ConflictPolicy::Strict))
        .await
        .unwrap();
    assert_eq!(stale, SaveOutcome::Conflict);
    assert_eq!(b.load(&id).await.unwrap(), Some(counter("2")));
}

/// A connection that is lost takes its invalidations with it: the cache is emptied, so a
/// change made while this store was not connected is seen.
#[actix_web::test]
async fn a_lost_connection_empties_the_cache() {
    let (store, server) = redis_near();
    let mut admin = raw(&server).await;
    let id = cached(&store, &store).await;
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    // The store's connection learns that it is closed.
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    // Written while no connection of the store tracks the key: no invalidation for it.
    let _: () = admin
        .hset(format!("session:{id}"), "foo", "5")
        .await
        .unwrap();
    assert_eq!(store.load(&id).await.unwrap(), Some(counter("5")));
}

#[actix_web::test]
async fn flushdb_empties_the_cache() {
    let (store, server) = redis_near();
    let mut admin = raw(&server).await;
    let id = cached(&store, &store).await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut admin).await.unwrap();
    until_gone(&store, &id).await;
}

/// A session that Redis expires is not served from the cache, even before Redis gets round
/// to deleting it (and sending the invalidation).
#[actix_web::test]
async fn an_expired_session_is_not_served() {
    let (store, _server) = redis_near();
    let id = SessionId::generate();
    store
        .create(&id, &counter("1"), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
    actix_web::rt::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(store.load(&id).await.unwrap(), None);
}

/// A save on one worker thread is seen at once by the next request on any other, even one
/// whose connection has not yet read the invalidation Redis sent it: here the worker that
/// cached the session is not running at all.
#[test]
fn a_save_is_seen_at_once_by_every_worker() {
    let server = ServerProcess::redis();
    let store = near(&server);
    let id = SessionId::generate();
    let (cached, parked) = std::sync::mpsc::channel();
    let (done, finish) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn({
        let store = store.clone();
        move || {
            let worker = actix_web::rt::System::new();
            worker.block_on(async {
                store
                    .create(&id, &counter("1"), Duration::from_mins(10))
                    .await
                    .unwrap();
                assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
            });
            // This worker's runtime stands still: its connection reads nothing.
            cached.send(()).unwrap();
            finish.recv().unwrap();
        }
    });
    parked.recv().unwrap();
    actix_web::rt::System::new().block_on(async {
        let saved = store
            .update(&id, &set_foo("2", "1", ConflictPolicy::LastWriteWins))
            .await
            .unwrap();
        assert_eq!(saved, SaveOutcome::Saved);
        assert_eq!(store.load(&id).await.unwrap(), Some(counter("2")));
        store.delete(&id).await.unwrap();
        assert_eq!(store.load(&id).await.unwrap(), None);
    });
    done.send(()).unwrap();
    reader.join().unwrap();
}

/// The renew marker is not a session, cached or not; the renewed session is.
#[actix_web::test]
async fn a_renewed_session_is_read_at_its_new_id_only() {
    let server = ServerProcess::redis();
    let (a, b) = (near(&server), near(&server));
    let (old, new) = (cached(&a, &b).await, SessionId::generate());
    let renewed = a
        .renew(
            &old,
            &new,
            &set_foo("2", "1", ConflictPolicy::LastWriteWins),
        )
        .await
        .unwrap();
    assert_eq!(renewed, SaveOutcome::Saved);
    until_gone(&b, &old).await;
    assert_eq!(b.load(&new).await.unwrap(), Some(counter("2")));
}

/// Two app instances with near caches on one Redis (see `tests::instances`): the counter
/// goes on across them, concurrent saves all persist, a log-out on one is seen by the other.
#[actix_web::test]
async fn two_app_instances_share_sessions() {
    let server = ServerProcess::redis();
    tests::instances::two_instances_share_sessions(|| near(&server)).await;
}

#[test]
fn refused_on_a_cluster() {
    let refused = RedisStore::cluster(["redis://127.0.0.1:7000"])
        .near_cache(NearCache::new())
        .build()
        .unwrap_err();
    let chain = tests::error_chain(&refused);
    assert!(chain.contains("near cache is not available"), "{chain}");
}
