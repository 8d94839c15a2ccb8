//! `RedisStore` with `RedisLayout::Json`, `sanic_session`'s layout, against a real
//! `redis-server`: the conformance and middleware suites, what is stored (read with the
//! redis crate), sessions a `sanic_session` app wrote, and data of the other layout.

use std::time::Duration;

use actix_kv_session::{
    storage::{RedisLayout, RedisStore, SessionStore},
    SessionId, SessionMiddleware,
};
use actix_web::http::StatusCode;
use deadpool_redis::redis::{self, AsyncCommands};
use serde_json::Value;
use tests::{
    init_app,
    servers::ServerProcess,
    suite::{get, post},
};

fn redis_json() -> (RedisStore, ServerProcess) {
    let server = ServerProcess::redis();
    let store = RedisStore::builder(server.redis_url())
        .layout(RedisLayout::Json)
        .build()
        .expect("a valid URL");
    (store, server)
}

actix_kv_session::store_conformance!(redis_json());
tests::session_suite!(redis_json());

async fn raw(server: &ServerProcess) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.redis_url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

async fn stored(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Value {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await.unwrap();
    assert_eq!(kind, "string", "{key}");
    let text: String = conn.get(key).await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"))
}

#[actix_web::test]
async fn one_json_object_per_session_with_the_ttl() {
    let (store, server) = redis_json();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    post(&app, "/set/name/ann", Some(id.as_str())).await;
    let key = format!("session:{id}");
    assert_eq!(
        stored(&mut conn, &key).await,
        serde_json::json!({"foo": 1, "name": "ann"})
    );
    let pttl: i64 = conn.pttl(&key).await.unwrap();
    let thirty_days: i64 = 30 * 24 * 3600 * 1000;
    assert!(
        pttl > thirty_days - 60_000 && pttl <= thirty_days,
        "PTTL {pttl}"
    );
}

/// What `sanic_session`'s Redis interface writes (`SETEX session:<id> 2592000 <json>`, the
/// JSON from `ujson.dumps`) is read, changed key by key, and stays a JSON string with every
/// key the Sanic app set, numbers exact.
#[actix_web::test]
async fn a_session_sanic_session_wrote_goes_on_with_every_key_kept() {
    let (store, server) = redis_json();
    let mut conn = raw(&server).await;
    let id = "0f6c5d1a4b3e4a2f9c8d7e6f5a4b3c2d";
    let key = format!("session:{id}");
    let written = r#"{"foo":41,"user":"ada","cart":[1,2.5,"x"],"big":12345678901234567890,"empty":[],"nested":{"a":null}}"#;
    let _: () = conn.set_ex(&key, written, 2_592_000).await.unwrap();
    let app = init_app!(SessionMiddleware::new(store));
    let reply = get(&app, "/counter", Some(id)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "42"));
    assert_eq!(get(&app, "/get/user", Some(id)).await.body, "\"ada\"");
    let text: String = conn.get(&key).await.unwrap();
    let mut expected: serde_json::Map<String, Value> = serde_json::from_str(written).unwrap();
    expected.insert("foo".into(), 42.into());
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        Value::Object(expected)
    );
    assert!(
        text.contains("12345678901234567890") && text.contains("\"empty\":[]"),
        "values not kept as written: {text}"
    );
}

/// A renew in this layout leaves a marker that is itself a JSON object (a Sanic app on the
/// old id reads an empty-looking session, not an error), and the old id is unknown to us.
#[actix_web::test]
async fn renew_leaves_a_json_marker_that_no_one_takes_for_the_session() {
    let (store, server) = redis_json();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let old = get(&app, "/counter", None).await.id();
    let new = post(&app, "/login/ann", Some(old.as_str())).await.id();
    assert_ne!(old, new);
    let marker = stored(&mut conn, &format!("session:{old}")).await;
    assert_eq!(marker, serde_json::json!({"\u{0}moved": 1}));
    // A request that loads the old id afterwards is a new visitor (requests in flight
    // during the renew get 409: the middleware suite's renew cases).
    let stale = post(&app, "/set/x/1", Some(old.as_str())).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert!(stale.id() != old && stale.id() != new);
    assert_eq!(get(&app, "/counter", Some(new.as_str())).await.body, "2");
    // A Sanic app that wrote its own keys next to the marker leaves it a marker.
    let _: () = conn
        .set(format!("session:{old}"), r#"{"\u0000moved":1,"foo":7}"#)
        .await
        .unwrap();
    let reply = get(&app, "/counter", Some(old.as_str())).await;
    assert_eq!(reply.body, "1", "the marker was read as a session");
    assert_ne!(reply.id(), old);
}

/// A hash (the other layout) or a value that is not a JSON object at a session's key: the
/// visitor gets a fresh session, and the data is never written over.
#[actix_web::test]
async fn data_of_the_other_layout_starts_a_fresh_session_and_is_left_alone() {
    let (store, server) = redis_json();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let hashed = "1f6c5d1a4b3e4a2f9c8d7e6f5a4b3c2d";
    let _: () = conn
        .hset(format!("session:{hashed}"), "foo", "5")
        .await
        .unwrap();
    let garbage = "2f6c5d1a4b3e4a2f9c8d7e6f5a4b3c2d";
    let _: () = conn
        .set(format!("session:{garbage}"), "[1, 2]")
        .await
        .unwrap();
    for id in [hashed, garbage] {
        let reply = get(&app, "/counter", Some(id)).await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
        assert_ne!(reply.id().to_string(), id);
        let purged = post(&app, "/purge", Some(id)).await;
        assert_eq!(purged.status, StatusCode::OK, "log-out must work");
    }
}

/// The hash layout meeting a session `sanic_session` wrote: a fresh session, never a 500.
#[actix_web::test]
async fn the_hash_layout_meeting_a_json_session_starts_a_fresh_one() {
    let server = ServerProcess::redis();
    let mut conn = raw(&server).await;
    let store = RedisStore::new(server.redis_url()).unwrap();
    let app = init_app!(SessionMiddleware::new(store));
    let id = "3f6c5d1a4b3e4a2f9c8d7e6f5a4b3c2d";
    let key = format!("session:{id}");
    let _: () = conn.set_ex(&key, r#"{"foo":41}"#, 600).await.unwrap();
    let reply = get(&app, "/counter", Some(id)).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    let kept: String = conn.get(&key).await.unwrap();
    assert_eq!(kept, r#"{"foo":41}"#);
}

#[test]
fn the_json_layout_is_refused_on_a_cluster() {
    let err = RedisStore::cluster(["redis://127.0.0.1:7000"])
        .layout(RedisLayout::Json)
        .build()
        .unwrap_err();
    assert!(
        tests::error_chain(&err).contains("not available on a Cluster"),
        "{}",
        tests::error_chain(&err)
    );
}

/// A user's index (log out everywhere) is a record of the store too, under an id no cookie
/// can carry: `sanic_session`, which takes any cookie value as an id, cannot be made to read
/// it while both apps share the store (its keys are the user's live session ids).
#[actix_web::test]
async fn user_indexes_live_under_ids_no_cookie_can_name() {
    let (store, server) = redis_json();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let id = post(&app, "/login-as/ann/laptop", None).await.id();
    let keys: Vec<String> = conn.keys("session:*").await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        let name = key.strip_prefix("session:").unwrap();
        if name != id.as_str() {
            assert!(name.starts_with(';'), "a cookie can name the index {key:?}");
        }
    }
}

/// A touch (a read under `TtlExtension::OnEveryRequest`) of a string that is not a JSON
/// object: no session, and its TTL is left alone, as in the hash layout.
#[actix_web::test]
async fn a_touch_extends_only_a_json_session() {
    let (store, server) = redis_json();
    let mut conn = raw(&server).await;
    let id = SessionId::generate();
    let key = format!("session:{id}");
    let _: () = conn.set_ex(&key, "not json", 60).await.unwrap();
    let touched = store.touch(&id, Duration::from_hours(1)).await.unwrap();
    let ttl: i64 = conn.ttl(&key).await.unwrap();
    assert!(!touched && ttl <= 60, "touched {touched}, TTL {ttl}");
}
