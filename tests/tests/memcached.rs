//! `MemcachedStore` against a real `memcached` that each test starts on a free loopback
//! port: the conformance and middleware suites, the item layout, TTLs past 30 days, faults
//! (server stopped, server frozen), oversized sessions and corrupt items.

use std::time::Duration;

use actix_kv_session::{
    storage::{MemcachedStore, SessionStore},
    SessionId, SessionMiddleware,
};
use actix_web::{cookie::time, http::StatusCode};
use async_memcached::{AsciiProtocol, Client, MetaProtocol};
use tests::{
    init_app,
    servers::ServerProcess,
    suite::{get, post},
};

fn memcached() -> (MemcachedStore, ServerProcess) {
    let server = ServerProcess::memcached();
    let store = MemcachedStore::new(server.addr()).expect("a valid store");
    (store, server)
}

actix_kv_session::store_conformance!(memcached());
tests::session_suite!(memcached());

#[actix_web::test]
async fn memcached_down_gives_503_on_session_routes_only_and_recovers_by_itself() {
    let (store, mut server) = memcached();
    tests::faults::stopped_server_gives_503_and_recovers(store, &mut server).await;
}

#[actix_web::test]
async fn a_memcached_outage_is_logged_in_a_few_lines() {
    let (store, mut server) = memcached();
    tests::faults::an_outage_is_logged_in_a_few_lines(store, &mut server).await;
}

/// memcached restarted between requests: every pooled connection is dead, and no load
/// fails for it (the sessions themselves are gone with the restart: new visitors).
#[actix_web::test]
async fn connections_dropped_by_a_restart_do_not_fail_loads() {
    let (store, server) = memcached();
    let server = std::cell::RefCell::new(server);
    let restart = async || {
        let mut server = server.borrow_mut();
        server.stop();
        server.start();
    };
    tests::faults::a_dropped_connection_does_not_fail_a_load(store, restart).await;
}

/// A save whose connection broke while it was in flight (memcached frozen, then killed and
/// restarted) is not sent again: 503, "outcome unknown". A retry would have found the item
/// gone and answered 200.
#[actix_web::test]
async fn a_save_on_a_connection_that_breaks_under_it_is_not_retried() {
    let (store, server) = memcached();
    let server = std::cell::RefCell::new(server);
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    // The route loads at once and saves after `IN_FLIGHT`.
    let write = post(&app, "/inflight/write/late", Some(id.as_str()));
    let restart = async {
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
        server.borrow().pause();
        actix_web::rt::time::sleep(tests::app::IN_FLIGHT + Duration::from_millis(200)).await;
        let mut server = server.borrow_mut();
        server.stop();
        server.start();
    };
    let (reply, ()) = futures_util::join!(write, restart);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(get(&app, "/counter", None).await.status, StatusCode::OK);
}

/// Two app instances, each with its own store object, on one memcached (see
/// `tests::instances`).
#[actix_web::test]
async fn two_app_instances_share_sessions() {
    let server = ServerProcess::memcached();
    tests::instances::two_instances_share_sessions(|| {
        MemcachedStore::new(server.addr()).expect("a valid store")
    })
    .await;
}

#[actix_web::test]
async fn a_frozen_memcached_gives_503_within_the_timeout_and_recovers() {
    let (store, server) = memcached();
    tests::faults::frozen_server_gives_503_within_the_timeout_and_recovers(store, &server).await;
}

async fn raw(server: &ServerProcess) -> Client {
    Client::new(format!("tcp://{}", server.addr()))
        .await
        .expect("connect to memcached")
}

async fn item(client: &mut Client, key: &str) -> Option<serde_json::Value> {
    let value = client.get(key).await.unwrap()?;
    Some(serde_json::from_slice(value.data.as_deref().unwrap()).unwrap())
}

/// memcached's own command counters: a `/counter` request is one read (the load) and one
/// write (compare-and-swap with the load's token); a read-only request one read. When the
/// item changed since the load, the save reads it again (two reads) and still lands.
#[actix_web::test]
async fn a_request_is_one_round_trip_to_load_and_one_to_save() {
    let (store, server) = memcached();
    let mut client = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    let counts = async |client: &mut Client| {
        let stats = client.stats().await.unwrap();
        let count = |name: &str| stats[name].parse::<u64>().unwrap();
        (count("cmd_get"), count("cmd_set"))
    };
    let before = counts(&mut client).await;
    for _ in 0..10 {
        get(&app, "/counter", Some(id.as_str())).await;
    }
    get(&app, "/get/foo", Some(id.as_str())).await;
    let after = counts(&mut client).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (11, 10));

    // Changed behind the load's back: the token no longer matches.
    let key = format!("session:{id}");
    let late = post(&app, "/inflight/write/late", Some(id.as_str()));
    let meddle = async {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        raw(&server)
            .await
            .set(&key, "{\"foo\": 100}", Some(3600), None)
            .await
            .unwrap();
    };
    let (reply, ()) = futures_util::join!(late, meddle);
    assert_eq!(reply.status, StatusCode::OK);
    let stored = item(&mut client, &key).await.unwrap();
    assert_eq!(stored, serde_json::json!({"foo": 100, "late": true}));
}

#[actix_web::test]
async fn one_json_item_per_session_as_sanic_session_writes_it() {
    let (store, server) = memcached();
    let mut client = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    post(&app, "/set/name/ann", Some(id.as_str())).await;
    let stored = item(&mut client, &format!("session:{id}")).await.unwrap();
    assert_eq!(stored, serde_json::json!({"foo": 1, "name": "ann"}));

    // A session a Python app wrote, in sanic_session's layout, reads and updates here.
    let python_id = SessionId::generate();
    let key = format!("session:{python_id}");
    client
        .set(&key, "{\"foo\": 41, \"user\": \"bob\"}", Some(3600), None)
        .await
        .unwrap();
    assert_eq!(
        get(&app, "/counter", Some(python_id.as_str())).await.body,
        "42"
    );
    let stored = item(&mut client, &key).await.unwrap();
    assert_eq!(stored, serde_json::json!({"foo": 42, "user": "bob"}));
}

/// The seconds memcached says a session's item has left (meta get, `t` flag).
async fn ttl_left(client: &mut Client, id: SessionId) -> i64 {
    let key = format!("session:{id}");
    let meta = client
        .meta_get(&key, false, None, Some(&["t"]))
        .await
        .unwrap()
        .unwrap();
    meta.ttl_remaining.unwrap()
}

#[actix_web::test]
async fn the_thirty_day_default_and_longer_ttls_work_end_to_end() {
    let (store, server) = memcached();
    let mut client = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let first = get(&app, "/counter", None).await;
    assert_eq!(
        first.cookie.as_ref().unwrap().max_age(),
        Some(time::Duration::days(30))
    );
    assert_eq!(
        get(&app, "/counter", Some(first.id().as_str())).await.body,
        "2"
    );
    let remaining = ttl_left(&mut client, first.id()).await;
    assert!(
        (2_591_000..=2_592_000).contains(&remaining),
        "TTL left: {remaining}"
    );

    // Past 30 days memcached wants an absolute time; sent as seconds the item would be dead
    // on arrival (a time in 1970).
    let long = SessionMiddleware::builder(store)
        .ttl(Duration::from_hours(90 * 24))
        .build();
    let app = init_app!(long);
    let first = get(&app, "/counter", None).await;
    assert_eq!(
        get(&app, "/counter", Some(first.id().as_str())).await.body,
        "2"
    );
    let remaining = ttl_left(&mut client, first.id()).await;
    assert!(
        (90 * 24 * 3600 - 1_000..=90 * 24 * 3600).contains(&remaining),
        "TTL left: {remaining}"
    );
}

/// memcached keeps times as 32-bit numbers: an absolute expiry past 2038 wraps to the past,
/// and the item is stored expired. A session with a TTL of 20 years (a "remember me" taken
/// literally) lives, and is saved and extended, until memcached's last time.
#[actix_web::test]
async fn a_ttl_past_2038_keeps_the_session_until_memcached_s_last_time() {
    let (store, server) = memcached();
    let mut client = raw(&server).await;
    let endless = SessionMiddleware::builder(store.clone())
        .ttl(Duration::from_hours(20 * 365 * 24))
        .ttl_extension(actix_kv_session::TtlExtension::OnEveryRequest)
        .build();
    let app = init_app!(endless);
    let first = get(&app, "/counter", None).await;
    let id = first.id();
    assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "2");
    assert_eq!(get(&app, "/get/foo", Some(id.as_str())).await.body, "2");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until_2038 = i64::from(i32::MAX) - i64::try_from(now).unwrap();
    let remaining = ttl_left(&mut client, id).await;
    assert!(
        (until_2038 - 100..=until_2038).contains(&remaining),
        "TTL left: {remaining}, until 2038: {until_2038}"
    );
}

/// A memcached started with `-C` has no compare-and-swap, which every save needs: the save
/// answers 503 with a cause that says so, not "contended" after 64 attempts.
#[actix_web::test]
async fn a_memcached_without_cas_is_a_clear_error() {
    let server = ServerProcess::memcached_with(&["-C"]);
    let store = MemcachedStore::new(server.addr()).expect("a valid store");
    let (logs, _capture) = tests::logs::Logs::capture();
    let app = init_app!(SessionMiddleware::new(store));
    let first = get(&app, "/counter", None).await;
    assert_eq!(first.status, StatusCode::OK, "a new session is added");
    let second = get(&app, "/counter", Some(first.id().as_str())).await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    let logged = logs.lines().join("\n");
    assert!(logged.contains("without CAS"), "{logged}");
}

/// A server that names a memcached older than 1.6.10, whose meta protocol took a set's size
/// as a flag and answered each of this store's sets twice: the store refuses it on
/// connecting, before any session command. (A scripted server: no such memcached is
/// installed here.)
#[actix_web::test]
async fn a_memcached_too_old_for_the_meta_protocol_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut asked = Vec::new();
        while !asked.ends_with(b"\r\n") {
            let mut buf = [0; 64];
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            asked.extend_from_slice(&buf[..n]);
        }
        socket.write_all(b"VERSION 1.6.9\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
        (asked, rest)
    });
    let store = MemcachedStore::new(addr.to_string()).expect("a valid store");
    let err = store.ping().await.expect_err("refused");
    let cause = tests::error_chain(&err);
    assert!(cause.contains("1.6.9 is too old"), "{cause}");
    drop(store);
    let (asked, rest) = server.await.unwrap();
    assert_eq!(asked, b"version\r\n");
    assert!(rest.is_empty(), "nothing sent after the version: {rest:?}");
}

#[actix_web::test]
async fn a_session_over_the_item_limit_is_a_clear_error_not_a_silent_loss() {
    let (store, server) = memcached();
    let mut client = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    let big = post(&app, "/big/1500", Some(id.as_str())).await;
    assert_eq!(
        (big.status, big.body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    );
    // The session is as it was, and still works.
    let stored = item(&mut client, &format!("session:{id}")).await.unwrap();
    assert_eq!(stored, serde_json::json!({"foo": 1}));
    assert_eq!(
        post(&app, "/big/100", Some(id.as_str())).await.status,
        StatusCode::OK
    );
    let new = post(&app, "/big/1500", None).await;
    assert_eq!(
        (new.status, new.cookie),
        (StatusCode::INTERNAL_SERVER_ERROR, None)
    );
}

#[actix_web::test]
async fn the_server_item_limit_is_reported_as_too_large_as_well() {
    let (_, server) = memcached();
    // The store believes items up to 4 MB fit; the server (-I 1m) refuses.
    let store = MemcachedStore::builder(server.addr())
        .max_item_size(4_000_000)
        .build()
        .unwrap();
    // The middleware's own limit (1,000,000 bytes by default) would refuse it first.
    let unlimited = SessionMiddleware::builder(store.clone())
        .max_session_bytes(None)
        .build();
    let app = init_app!(unlimited);
    let id = get(&app, "/counter", None).await.id();
    let big = post(&app, "/big/1500", Some(id.as_str())).await;
    assert_eq!(big.status, StatusCode::INTERNAL_SERVER_ERROR);
    // memcached deletes the item it refused to overwrite: that is why the store checks the
    // size itself, under the server's limit, by default.
    assert_eq!(store.load(&id).await.unwrap(), None);
}

#[actix_web::test]
async fn an_item_that_is_not_a_session_is_an_unknown_id_and_a_purge_deletes_it() {
    let (store, server) = memcached();
    let mut client = raw(&server).await;
    let garbage: [&[u8]; 5] = [
        b"not a JSON object",
        b"[1, 2]",
        b"{\"foo\": 1",
        b"\xff\xfe{}",
        b"",
    ];
    for value in garbage {
        let id = SessionId::generate();
        let key = format!("session:{id}");
        client.set(&key, value, Some(3600), None).await.unwrap();
        let intact = async || {
            let mut client = raw(&server).await;
            let stored = client.get(&key).await.unwrap();
            stored.and_then(|v| v.data).as_deref() == Some(value)
        };
        tests::faults::an_unreadable_record_is_an_unknown_id(store.clone(), id, intact).await;
        assert!(
            client.get(&key).await.unwrap().is_none(),
            "{value:?}: the purge left it"
        );
    }
}

/// The marker a renew leaves at the old key is a JSON object with client flags 0: a
/// `sanic_session` app (whose memcached client refuses items with flags) that meets it reads
/// a session without keys instead of answering 500. A touch of it is refused and leaves its
/// time to live alone; a session of exactly the marker's size is still touched.
#[actix_web::test]
async fn the_renew_marker_is_a_json_object_any_client_reads() {
    let (store, server) = memcached();
    let mut client = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let old = get(&app, "/counter", None).await.id();
    let new = post(&app, "/login/ann", Some(old.as_str())).await.id();
    assert_ne!(old, new);
    let key = format!("session:{old}");
    let marker = client.get(&key).await.unwrap().expect("the marker");
    assert_eq!(
        marker.flags.unwrap_or(0),
        0,
        "flags a Sanic app cannot read"
    );
    assert_eq!(
        item(&mut client, &key).await,
        Some(serde_json::json!({"\u{0}moved": 1}))
    );
    assert!(!store.touch(&old, Duration::from_hours(1)).await.unwrap());
    let left = client
        .meta_get(&key, false, None, Some(&["t"]))
        .await
        .unwrap()
        .and_then(|answer| answer.ttl_remaining);
    assert!(matches!(left, Some(1..=300)), "the marker's TTL: {left:?}");

    // `{"foo":1234567890}` is as long as the marker.
    let same_size = SessionId::generate();
    let data = [("foo".to_owned(), "1234567890".to_owned())].into();
    store
        .create(&same_size, &data, Duration::from_mins(1))
        .await
        .unwrap();
    assert!(store
        .touch(&same_size, Duration::from_hours(1))
        .await
        .unwrap());
}
