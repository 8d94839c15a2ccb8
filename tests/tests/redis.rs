//! `RedisStore` against a real `redis-server` that each test starts on a free loopback
//! port: the conformance and middleware suites, the key layout, the round-trips, faults
//! (server stopped, server frozen) and bad data.

use std::time::Duration;

use actix_kv_session::{
    storage::{RedisStore, SessionStore},
    SessionId, SessionMiddleware, TtlExtension,
};
use actix_web::http::StatusCode;
use deadpool_redis::redis::{self, AsyncCommands};
use tests::{
    init_app,
    servers::ServerProcess,
    suite::{get, post},
};

fn redis() -> (RedisStore, ServerProcess) {
    let server = ServerProcess::redis();
    let store = RedisStore::new(server.redis_url()).expect("a valid URL");
    (store, server)
}

tests::store_conformance!(redis());
tests::session_suite!(redis());

#[actix_web::test]
async fn redis_down_gives_503_on_session_routes_only_and_recovers_by_itself() {
    let (store, mut server) = redis();
    tests::faults::stopped_server_gives_503_and_recovers(store, &mut server).await;
}

#[actix_web::test]
async fn a_frozen_redis_gives_503_within_the_timeout_and_recovers() {
    let (store, server) = redis();
    tests::faults::frozen_server_gives_503_within_the_timeout_and_recovers(store, &server).await;
}

async fn raw(server: &ServerProcess) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.redis_url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// `INFO commandstats` as (command, calls) pairs.
async fn command_calls(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[actix_web::test]
async fn one_hash_per_session_with_json_fields_and_the_ttl() {
    let (store, server) = redis();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    post(&app, "/set/name/ann", Some(id.as_str())).await;
    let key = format!("session:{id}");
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
    let mut fields: Vec<(String, String)> = conn.hgetall(&key).await.unwrap();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("foo".into(), "1".into()),
            ("name".into(), "\"ann\"".into())
        ]
    );
    let pttl: i64 = conn.pttl(&key).await.unwrap();
    let thirty_days: i64 = 30 * 24 * 3600 * 1000;
    assert!(
        pttl > thirty_days - 60_000 && pttl <= thirty_days,
        "PTTL {pttl}"
    );

    let prefixed = RedisStore::builder(server.redis_url())
        .prefix("app:s:")
        .build()
        .unwrap();
    let app = init_app!(SessionMiddleware::new(prefixed));
    let id = get(&app, "/counter", None).await.id();
    let exists: bool = conn.exists(format!("app:s:{id}")).await.unwrap();
    assert!(exists);
}

#[actix_web::test]
async fn a_request_is_one_round_trip_to_load_and_one_to_save() {
    let (store, server) = redis();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    get(&app, "/counter", Some(id.as_str())).await;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "3");
    let calls = command_calls(&mut conn).await;
    let count = |name: &str| calls.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
    assert_eq!(count("hgetall"), 1, "{calls:?}");
    assert_eq!(count("evalsha") + count("eval"), 1, "{calls:?}");
    assert_eq!(
        count("ping"),
        0,
        "a busy connection is not pinged: {calls:?}"
    );
    // A read-only request under the default policy: one HGETALL and nothing else.
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    get(&app, "/get/foo", Some(id.as_str())).await;
    let calls = command_calls(&mut conn).await;
    let top_level: Vec<_> = calls
        .iter()
        .filter(|(n, _)| n != "info" && n != "config|resetstat")
        .collect();
    assert_eq!(top_level, [&("hgetall".to_owned(), 1)], "{calls:?}");
}

#[actix_web::test]
async fn every_request_policy_extends_in_the_load_round_trip() {
    let (store, server) = redis();
    let mut conn = raw(&server).await;
    let mw = SessionMiddleware::builder(store)
        .ttl(Duration::from_secs(100))
        .ttl_extension(TtlExtension::OnEveryRequest)
        .build();
    let app = init_app!(mw);
    let id = get(&app, "/counter", None).await.id();
    let key = format!("session:{id}");
    let _: bool = conn.pexpire(&key, 5_000).await.unwrap();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let read = get(&app, "/get/foo", Some(id.as_str())).await;
    assert_eq!(read.body, "1");
    assert!(read.cookie.is_some(), "the cookie's expiry moves too");
    let pttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(
        pttl > 90_000,
        "PTTL {pttl}: the read did not extend the TTL"
    );
    let calls = command_calls(&mut conn).await;
    let count = |name: &str| calls.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
    assert_eq!((count("multi"), count("exec")), (1, 1), "{calls:?}");
}

#[actix_web::test]
async fn a_field_that_is_not_json_fails_that_key_only() {
    let (store, server) = redis();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let id = post(&app, "/set/name/ann", None).await.id();
    let key = format!("session:{id}");
    let _: () = conn.hset(&key, "foo", "not json {").await.unwrap();
    let _: () = conn
        .hset(&key, "bytes", &[0xff_u8, 0xfe][..])
        .await
        .unwrap();
    let bad = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!(
        (bad.status, bad.body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    );
    assert_eq!(
        get(&app, "/get/name", Some(id.as_str())).await.body,
        "\"ann\""
    );
    let stored: String = conn.hget(&key, "foo").await.unwrap();
    assert_eq!(stored, "not json {", "the failed request wrote nothing");
}

#[actix_web::test]
async fn a_key_of_another_type_is_a_clear_error_not_a_panic() {
    let (store, server) = redis();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let id = SessionId::generate();
    let _: () = conn
        .set(format!("session:{id}"), "a string, not a hash")
        .await
        .unwrap();
    let reply = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    );
    let err = store.load(&id).await.unwrap_err();
    assert!(
        matches!(err, actix_kv_session::StoreError::Corrupt(_)),
        "{err:?}"
    );
    // The string is left alone, and the app keeps serving.
    let value: String = conn.get(format!("session:{id}")).await.unwrap();
    assert_eq!(value, "a string, not a hash");
    assert_eq!(get(&app, "/counter", None).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn a_store_on_an_application_pool() {
    let server = ServerProcess::redis();
    let pool = deadpool_redis::Config::from_url(server.redis_url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let app = init_app!(SessionMiddleware::new(RedisStore::from_pool(pool)));
    let id = get(&app, "/counter", None).await.id();
    assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "2");
}

#[actix_web::test]
async fn a_bad_url_is_a_clear_error() {
    let err = RedisStore::new("postgres://nope").unwrap_err();
    assert_eq!(err.to_string(), "invalid Redis connection info");
}
