//! The Redis store's near cache (`RedisStoreBuilder::near_cache`) under attack, against a
//! real `redis-server`: storms of reads and writes from two instances with connections
//! killed meanwhile, a worker blocked or stopped while others read, slow replies and
//! expiry, restarts, a selected database, `FLUSHALL`, eviction, the JSON layout, TLS, an
//! ACL user without `CLIENT TRACKING`, a frozen network path, out-of-range settings.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use actix_kv_session::{
    storage::{
        ConflictPolicy, NearCache, RedisLayout, RedisStore, SaveOutcome, SessionMap, SessionStore,
    },
    SessionId,
};
use deadpool_redis::redis::{self, AsyncCommands};
use tests::counter_session::{counter, set_foo};
use tests::{proxy::Proxy, servers::ServerProcess};

fn near_at(url: &str) -> RedisStore {
    RedisStore::builder(url)
        .near_cache(NearCache::new())
        .build()
        .expect("a valid URL")
}

fn near(server: &ServerProcess) -> RedisStore {
    near_at(&server.redis_url())
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

fn foo_of(loaded: Option<&SessionMap>) -> Option<&str> {
    loaded.and_then(|s| s.get("foo")).map(String::as_str)
}

/// Loads `id` through `store` until `foo` reads `value`; panics after `within`.
async fn until_seen(store: &RedisStore, id: &SessionId, value: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let loaded = store.load(id).await.unwrap();
        if foo_of(loaded.as_ref()) == Some(value) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "after {:?}, this process still reads {loaded:?}; Redis holds foo = {value}",
            started.elapsed()
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// actix-web runs each worker on its own thread and runtime, and the store keeps one
/// connection per thread. The invalidations of a key come only on the connection that read
/// it, and are handled by that worker's runtime. When that worker stops (an `HttpServer`
/// stopped and started again in the process, a worker replaced), its connection closes
/// without redis-rs's `Disconnection` notice (the connection's task is dropped, not
/// failed): the copy it read is never served to another worker, which reads the session
/// anew and sees a change made elsewhere (it was served as it was until `max_age`, when the
/// cache's copies were shared by every worker).
#[test]
fn a_change_elsewhere_is_seen_after_the_worker_that_read_the_session_stopped() {
    let server = ServerProcess::redis();
    let (store, elsewhere) = (near(&server), near(&server));
    let id = SessionId::generate();
    thread::spawn({
        let store = store.clone();
        move || {
            actix_web::rt::System::new().block_on(async {
                store
                    .create(&id, &counter("1"), Duration::from_mins(10))
                    .await
                    .unwrap();
                assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
            });
        }
    })
    .join()
    .unwrap();
    // Another worker of the same store (this thread, its own runtime and connection).
    actix_web::rt::System::new().block_on(async {
        let saved = elsewhere
            .update(&id, &set_foo("2", "1", ConflictPolicy::LastWriteWins))
            .await
            .unwrap();
        assert_eq!(saved, SaveOutcome::Saved);
        assert_eq!(
            foo_of(elsewhere.load(&id).await.unwrap().as_ref()),
            Some("2")
        );
        until_seen(&store, &id, "2", Duration::from_secs(3)).await;
    });
}

/// The same through actix-web: an app that stops its `HttpServer` and starts a new one in
/// the same process (a configuration reload), with the same store. The second server's
/// workers see a change another instance made to a session the first server's read.
#[actix_web::test]
async fn a_change_elsewhere_is_seen_after_the_http_server_restarted_in_process() {
    use actix_kv_session::SessionMiddleware;
    use actix_web::{http::Method, App, HttpServer};

    let server = ServerProcess::redis();
    let (store, elsewhere) = (near(&server), near(&server));
    let serve = |store: RedisStore| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(
                    SessionMiddleware::builder(store.clone())
                        .secure(false)
                        .build(),
                )
                .configure(tests::app::routes)
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        (format!("http://{addr}/get/foo"), handle)
    };
    let id = tests::seed(&elsewhere, &[("foo", "1")]).await;
    let (url, first) = serve(store.clone());
    for _ in 0..4 {
        let reply = tests::races::http("read", Method::GET, url.clone(), Some(id)).await;
        assert_eq!(reply.body, "1");
    }
    first.stop(true).await;

    let (url, _second) = serve(store);
    let saved = elsewhere
        .update(&id, &set_foo("2", "1", ConflictPolicy::LastWriteWins))
        .await
        .unwrap();
    assert_eq!(saved, SaveOutcome::Saved);
    let started = Instant::now();
    loop {
        let reply = tests::races::http("read", Method::GET, url.clone(), Some(id)).await;
        if reply.body == "2" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?} after the save, the restarted server still answers foo = {}",
            started.elapsed(),
            reply.body
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same with the worker that read the session alive but busy (a blocking handler: a
/// password hash, a synchronous file read). Its connection holds the invalidation, unread;
/// the other workers, served only what their own connections read, see a log-out on
/// another instance at once.
#[test]
fn a_change_elsewhere_is_seen_while_the_worker_that_read_the_session_is_busy() {
    let server = ServerProcess::redis();
    let (store, elsewhere) = (near(&server), near(&server));
    let id = SessionId::generate();
    let (cached, wait_cached) = mpsc::channel();
    let (release, busy) = mpsc::channel::<()>();
    let reader = thread::spawn({
        let store = store.clone();
        move || {
            actix_web::rt::System::new().block_on(async {
                store
                    .create(&id, &counter("1"), Duration::from_mins(10))
                    .await
                    .unwrap();
                assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
                cached.send(()).unwrap();
                // A blocking handler on this worker.
                let _ = busy.recv_timeout(Duration::from_secs(10));
            });
        }
    });
    wait_cached.recv().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        actix_web::rt::System::new().block_on(async {
            // Another instance logs the user out.
            elsewhere.delete(&id).await.unwrap();
            assert_eq!(elsewhere.load(&id).await.unwrap(), None);
            let started = Instant::now();
            while let Some(stale) = store.load(&id).await.unwrap() {
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "logged out elsewhere {:?} ago, this process still serves {stale:?}",
                    started.elapsed()
                );
                actix_web::rt::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }));
    release.send(()).unwrap();
    reader.join().unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The cached copy's deadline is `PTTL` counted from when the read was sent, not from when
/// the answer arrived: a reply that took long (a slow link, a busy server) does not keep
/// the session served past its expiry in Redis. Here Redis's answers take 700 ms (a proxy
/// holds them), the session has 1.5 s left when it is read, and it is read again 1.8 s
/// after the read was sent.
#[actix_web::test]
async fn an_expired_session_is_not_served_when_the_reply_was_slow() {
    let server = ServerProcess::redis();
    let proxy = Proxy::with_delay(server.addr(), Duration::from_millis(700)).await;
    let store = RedisStore::builder(format!("redis://{}", proxy.addr()))
        .near_cache(NearCache::new())
        .connect_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let direct = near(&server);
    // Connect first (HELLO and CLIENT TRACKING take their 700 ms each).
    assert_eq!(store.load(&SessionId::generate()).await.unwrap(), None);

    let id = SessionId::generate();
    direct
        .create(&id, &counter("1"), Duration::from_millis(1500))
        .await
        .unwrap();
    let sent = Instant::now();
    assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
    actix_web::rt::time::sleep_until((sent + Duration::from_millis(1800)).into()).await;
    assert_eq!(direct.load(&id).await.unwrap(), None, "expired in Redis");
    assert_eq!(
        store.load(&id).await.unwrap(),
        None,
        "served {:?} after the read was sent, the session had 1.5 s to live",
        sent.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Claims that hold

/// Eight threads (each its own runtime and connection, as actix-web's workers) over two
/// store objects (two instances) load and save forty sessions as fast as they can for two
/// seconds; then the saves stop. Once the last invalidations have had time to arrive,
/// every thread of both instances reads what Redis holds, for every session.
#[test]
fn claim_no_stale_session_survives_a_storm_of_reads_and_writes() {
    storm(false);
}

/// The same storm while every connection of the stores is killed (`CLIENT KILL`) every
/// 50 ms: replies, invalidations and redis-rs's `Disconnection` notices interleave; the
/// operations that fail are ignored. No stale session survives.
#[test]
fn claim_no_stale_session_survives_a_storm_with_connections_killed() {
    storm(true);
}

fn storm(kill: bool) {
    const THREADS: usize = 8;
    const SESSIONS: usize = 40;
    let server = ServerProcess::redis();
    let stores = [near(&server), near(&server)];
    let ids: Arc<Vec<SessionId>> = Arc::new((0..SESSIONS).map(|_| SessionId::generate()).collect());
    actix_web::rt::System::new().block_on(async {
        for id in ids.iter() {
            stores[0]
                .create(id, &counter("0"), Duration::from_mins(10))
                .await
                .unwrap();
        }
    });
    let writing = Arc::new(AtomicBool::new(true));
    let next = Arc::new(AtomicU64::new(1));
    let (checked, wait_checked) = mpsc::channel::<Vec<String>>();
    let go_check = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = stores[t % 2].clone();
            let ids = Arc::clone(&ids);
            let writing = Arc::clone(&writing);
            let next = Arc::clone(&next);
            let checked = checked.clone();
            let check = Arc::clone(&go_check);
            let admin_url = server.redis_url();
            thread::spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let mut i = t;
                    while writing.load(Ordering::SeqCst) {
                        let id = &ids[i % SESSIONS];
                        i = i.wrapping_mul(31).wrapping_add(7);
                        let Ok(seen) = store.load(id).await else {
                            assert!(kill, "a load failed");
                            continue;
                        };
                        if i % 3 == 0 {
                            let value = next.fetch_add(1, Ordering::SeqCst).to_string();
                            let seen = foo_of(seen.as_ref()).unwrap_or("0").to_owned();
                            let saved = store
                                .update(id, &set_foo(&value, &seen, ConflictPolicy::LastWriteWins))
                                .await;
                            assert!(kill || saved.is_ok(), "{saved:?}");
                        }
                    }
                    // Keep this runtime reading its connection until told to check.
                    while !check.load(Ordering::SeqCst) {
                        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
                    }
                    let mut admin = raw(&admin_url).await;
                    let mut stale = Vec::new();
                    for id in ids.iter() {
                        let truth: Option<String> =
                            admin.hget(format!("session:{id}"), "foo").await.unwrap();
                        let cached = store.load(id).await.unwrap();
                        if foo_of(cached.as_ref()) != truth.as_deref() {
                            stale.push(format!(
                                "thread {t}: {cached:?} where Redis holds {truth:?}"
                            ));
                        }
                    }
                    checked.send(stale).unwrap();
                });
            })
        })
        .collect();
    if kill {
        actix_web::rt::System::new().block_on(async {
            let mut admin = raw(&server.redis_url()).await;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) {
                let _: () = redis::cmd("CLIENT")
                    .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"][..])
                    .query_async(&mut admin)
                    .await
                    .unwrap();
                actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            }
        });
    } else {
        thread::sleep(Duration::from_secs(2));
    }
    writing.store(false, Ordering::SeqCst);
    // Saves in flight end; their invalidations arrive.
    thread::sleep(Duration::from_millis(500));
    go_check.store(true, Ordering::SeqCst);
    let mut stale = Vec::new();
    for _ in 0..THREADS {
        stale.extend(wait_checked.recv().unwrap());
    }
    for worker in workers {
        worker.join().unwrap();
    }
    println!("{} saves", next.load(Ordering::SeqCst) - 1);
    assert!(
        stale.is_empty(),
        "stale reads after the storm:\n{}",
        stale.join("\n")
    );
}

/// After `redis-server` restarts, the store's new connection has `CLIENT TRACKING` on: a
/// change made in Redis afterwards is seen.
#[actix_web::test]
async fn claim_connections_made_after_a_restart_track_their_reads() {
    let mut server = ServerProcess::redis();
    let store = near(&server);
    let id = SessionId::generate();
    store
        .create(&id, &counter("1"), Duration::from_mins(10))
        .await
        .unwrap();
    assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
    server.stop();
    server.start();
    // No persistence: the session is written again, by hand.
    let mut admin = raw(&server.redis_url()).await;
    let key = format!("session:{id}");
    let _: () = admin.hset(&key, "foo", "7").await.unwrap();
    let _: () = admin.expire(&key, 600).await.unwrap();
    until_seen(&store, &id, "7", Duration::from_secs(2)).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let store_clients: Vec<&str> = clients.lines().filter(|l| l.contains("resp=3")).collect();
    assert!(!store_clients.is_empty(), "{clients}");
    assert!(
        store_clients.iter().all(|l| l
            .split_whitespace()
            .any(|f| f.starts_with("flags=") && f.contains('t'))),
        "{clients}"
    );
    let _: () = admin.hset(&key, "foo", "8").await.unwrap();
    until_seen(&store, &id, "8", Duration::from_secs(2)).await;
}

/// A store on database 3 (`redis://host/3`): changes there are seen; `FLUSHALL` empties it.
#[actix_web::test]
async fn claim_a_selected_database_is_tracked_and_flushall_empties_the_cache() {
    let server = ServerProcess::redis();
    let url = format!("{}/3", server.redis_url());
    let store = near_at(&url);
    let mut admin = raw(&url).await;
    let id = SessionId::generate();
    store
        .create(&id, &counter("1"), Duration::from_mins(10))
        .await
        .unwrap();
    assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
    let _: () = admin
        .hset(format!("session:{id}"), "foo", "2")
        .await
        .unwrap();
    until_seen(&store, &id, "2", Duration::from_secs(2)).await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let started = Instant::now();
    while store.load(&id).await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(2), "still cached");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A session that `maxmemory` evicts leaves the cache.
#[actix_web::test]
async fn claim_an_evicted_session_leaves_the_cache() {
    let server = ServerProcess::redis();
    let store = near(&server);
    let mut admin = raw(&server.redis_url()).await;
    let id = SessionId::generate();
    store
        .create(&id, &counter("1"), Duration::from_mins(10))
        .await
        .unwrap();
    assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-random")
        .query_async(&mut admin)
        .await
        .unwrap();
    let used: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut admin)
        .await
        .unwrap();
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 2 * 1024 * 1024)
        .query_async(&mut admin)
        .await
        .unwrap();
    let filler = "x".repeat(1024);
    let key = format!("session:{id}");
    for i in 0..20_000 {
        let _: () = admin.set(format!("filler:{i}"), &filler).await.unwrap();
        if !admin.exists::<_, bool>(&key).await.unwrap() {
            break;
        }
    }
    assert!(!admin.exists::<_, bool>(&key).await.unwrap(), "not evicted");
    let started = Instant::now();
    while store.load(&id).await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(2), "still cached");
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The JSON layout under the cache: a renew elsewhere leaves the old id unknown here, the
/// new one readable.
#[actix_web::test]
async fn claim_the_json_layout_sees_a_renew_elsewhere() {
    let server = ServerProcess::redis();
    let json = || {
        RedisStore::builder(server.redis_url())
            .layout(RedisLayout::Json)
            .near_cache(NearCache::new())
            .build()
            .unwrap()
    };
    let (a, b) = (json(), json());
    let (old, new) = (SessionId::generate(), SessionId::generate());
    a.create(&old, &counter("1"), Duration::from_mins(10))
        .await
        .unwrap();
    assert_eq!(b.load(&old).await.unwrap(), Some(counter("1")));
    let renewed = a
        .renew(&old, &new, &set_foo("2", "1", ConflictPolicy::Strict))
        .await
        .unwrap();
    assert_eq!(renewed, SaveOutcome::Saved);
    let started = Instant::now();
    while b.load(&old).await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "old id still read"
        );
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(b.load(&new).await.unwrap(), Some(counter("2")));
    // A stale save on the old id is refused, cache or not.
    let late = b
        .update(&old, &set_foo("3", "1", ConflictPolicy::LastWriteWins))
        .await
        .unwrap();
    assert_ne!(late, SaveOutcome::Saved);
}

/// Over TLS (`rediss://`), as over TCP: another instance's save is seen.
#[actix_web::test]
async fn claim_tls_connections_track_their_reads() {
    let tls =
        tests::redis_topologies::TlsRedis::start(tests::certificates::ClientAuth::NotRequested);
    let store = || {
        RedisStore::builder(tls.url())
            .root_certificate(tls.ca_pem())
            .near_cache(NearCache::new())
            .build()
            .unwrap()
    };
    let (a, b) = (store(), store());
    let id = SessionId::generate();
    a.create(&id, &counter("1"), Duration::from_mins(10))
        .await
        .unwrap();
    assert_eq!(b.load(&id).await.unwrap(), Some(counter("1")));
    let saved = a
        .update(&id, &set_foo("2", "1", ConflictPolicy::LastWriteWins))
        .await
        .unwrap();
    assert_eq!(saved, SaveOutcome::Saved);
    until_seen(&b, &id, "2", Duration::from_secs(2)).await;
}

/// An ACL user that may not run `CLIENT TRACKING`: every load fails (503 through the
/// middleware), and the error names the command; the same user without the cache works.
#[actix_web::test]
async fn claim_an_acl_user_without_client_tracking_gets_a_clear_error() {
    let server = ServerProcess::redis();
    let mut admin = raw(&server.redis_url()).await;
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "limited",
                "on",
                ">pw",
                "~*",
                "&*",
                "+@all",
                "-client|tracking",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://limited:pw@127.0.0.1:{}", server.port());
    let store = near_at(&url);
    let err = store.load(&SessionId::generate()).await.unwrap_err();
    let chain = tests::error_chain(&err);
    println!("{err:?}\n{chain}");
    let plain = RedisStore::new(url).unwrap();
    assert_eq!(plain.load(&SessionId::generate()).await.unwrap(), None);
    assert!(chain.to_lowercase().contains("tracking"), "{chain}");
}

/// `NearCache::max_age(Duration::MAX)` ("no age bound") builds: the age is cut to a century
/// (moka refuses a time to live over 1,000 years, with a panic).
#[test]
fn a_max_age_too_long_is_refused_not_a_panic() {
    let built = std::panic::catch_unwind(|| {
        RedisStore::builder("redis://127.0.0.1:6379")
            .near_cache(NearCache::new().max_age(Duration::MAX))
            .build()
            .map(|_| ())
    });
    assert!(built.is_ok(), "build() panicked");
}

/// The network path goes silent (a proxy freezes the store's connection): a change made
/// meanwhile sends an invalidation that never arrives. The next read that misses times out,
/// the connection is replaced and the cache emptied: the change is seen right after.
#[actix_web::test]
async fn claim_a_timed_out_connection_empties_the_cache() {
    let server = ServerProcess::redis();
    let proxy = Proxy::start(server.addr()).await;
    let store = RedisStore::builder(format!("redis://{}", proxy.addr()))
        .near_cache(NearCache::new())
        .response_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut admin = raw(&server.redis_url()).await;
    let id = SessionId::generate();
    store
        .create(&id, &counter("1"), Duration::from_mins(10))
        .await
        .unwrap();
    assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
    proxy.freeze_open_connections();
    let _: () = admin
        .hset(format!("session:{id}"), "foo", "2")
        .await
        .unwrap();
    // Served from the cache: nothing tells this process yet.
    assert_eq!(store.load(&id).await.unwrap(), Some(counter("1")));
    // A read that misses times out...
    assert!(store.load(&SessionId::generate()).await.is_err());
    // ...and the cache is gone with the connection.
    assert_eq!(store.load(&id).await.unwrap(), Some(counter("2")));
}
