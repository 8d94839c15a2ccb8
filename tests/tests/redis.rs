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

actix_kv_session::store_conformance!(redis());
tests::session_suite!(redis());

#[actix_web::test]
async fn redis_down_gives_503_on_session_routes_only_and_recovers_by_itself() {
    let (store, mut server) = redis();
    tests::faults::stopped_server_gives_503_and_recovers(store, &mut server).await;
}

#[actix_web::test]
async fn a_redis_outage_is_logged_in_a_few_lines() {
    let (store, mut server) = redis();
    tests::faults::an_outage_is_logged_in_a_few_lines(store, &mut server).await;
}

/// `CLIENT KILL` of every client connection but `admin`'s own.
async fn kill_every_client(admin: &redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin.clone())
        .await
        .unwrap();
}

/// `CLIENT KILL` of every connection between requests: no load fails (98 of 175,656 did
/// before loads were retried).
#[actix_web::test]
async fn killed_connections_do_not_fail_loads() {
    let (store, server) = redis();
    let admin = raw(&server).await;
    let kill = async || kill_every_client(&admin).await;
    tests::faults::a_dropped_connection_does_not_fail_a_load(store, kill).await;
}

/// A save whose connection broke between the load and the save is not sent again: it may
/// have been applied, so the request answers 503 ("outcome unknown") and nothing is written
/// twice. Here it never reached Redis, and a retry would have written it.
#[actix_web::test]
async fn a_save_on_a_connection_killed_after_the_load_is_not_retried() {
    let (store, server) = redis();
    let mut admin = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    let write = post(&app, "/inflight/write/late", Some(id.as_str()));
    let kill = async {
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
        kill_every_client(&admin).await;
    };
    let (reply, ()) = futures_util::join!(write, kill);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    let late: Option<String> = admin.hget(format!("session:{id}"), "late").await.unwrap();
    assert_eq!(late, None, "the save was sent again");
    assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "2");
}

/// A connection that goes silent (its peer vanished without a reset: a frozen host, a NAT
/// that dropped the flow) costs one request a 503 after the response timeout; the next
/// request opens a new connection (the old store kept timing out on it for minutes).
#[actix_web::test]
async fn a_connection_that_goes_silent_is_replaced_after_one_timeout() {
    let server = ServerProcess::redis();
    let proxy = tests::proxy::Proxy::start(server.addr()).await;
    let store = RedisStore::builder(format!("redis://{}", proxy.addr()))
        .response_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    proxy.freeze_open_connections();
    let stalled = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!(stalled.status, StatusCode::SERVICE_UNAVAILABLE);
    for visit in 2..5 {
        let reply = get(&app, "/counter", Some(id.as_str())).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, visit.to_string().as_str())
        );
    }
}

/// Two app instances, each with its own store object, on one Redis (see
/// `tests::instances`).
#[actix_web::test]
async fn two_app_instances_share_sessions() {
    let server = ServerProcess::redis();
    tests::instances::two_instances_share_sessions(|| {
        RedisStore::new(server.redis_url()).expect("a valid URL")
    })
    .await;
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

/// Under the every-request policy a read is two round-trips: the load, then the extension,
/// which also tells whether the session is still there (a concurrent log-in may have
/// renewed it, and then the response must not send the old id).
#[actix_web::test]
async fn every_request_policy_extends_after_the_read_in_one_script() {
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
    assert_eq!(
        (count("hgetall"), count("evalsha"), count("pexpire")),
        (1, 1, 1),
        "{calls:?}"
    );
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
    // A field whose name is not UTF-8 is no key the app can name: left out, left alone.
    let _: () = conn.hset(&key, &[0xc3_u8, 0x28][..], "1").await.unwrap();
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
    // The other keys work, reading and writing.
    post(&app, "/set/name/bob", Some(id.as_str())).await;
    assert_eq!(
        get(&app, "/get/name", Some(id.as_str())).await.body,
        "\"bob\""
    );
    let odd: Option<String> = conn.hget(&key, &[0xc3_u8, 0x28][..]).await.unwrap();
    assert_eq!(odd.as_deref(), Some("1"));

    // Under the strict policy the value that is not UTF-8 can still be overwritten (the
    // save compares the bytes it saw), and a clear deletes the session.
    let strict = SessionMiddleware::builder(RedisStore::new(server.redis_url()).unwrap())
        .conflict_policy(actix_kv_session::storage::ConflictPolicy::Strict)
        .build();
    let app = init_app!(strict);
    let fixed = post(&app, "/set/bytes/fixed", Some(id.as_str())).await;
    assert_eq!(fixed.status, StatusCode::OK);
    let stored: String = conn.hget(&key, "bytes").await.unwrap();
    assert_eq!(stored, "\"fixed\"");
    let _: () = conn
        .hset(&key, "bytes", &[0xff_u8, 0xfe][..])
        .await
        .unwrap();
    let cleared = post(&app, "/clear", Some(id.as_str())).await;
    assert_eq!(cleared.status, StatusCode::OK, "{cleared:?}");
}

#[actix_web::test]
async fn a_key_of_another_type_is_an_unknown_id_and_a_purge_deletes_it() {
    let (store, server) = redis();
    let mut conn = raw(&server).await;
    for kind in ["string", "list", "set"] {
        let id = SessionId::generate();
        let key = format!("session:{id}");
        let _: () = match kind {
            "string" => conn.set(&key, "a string, not a hash").await.unwrap(),
            "list" => conn.rpush(&key, "x").await.unwrap(),
            _ => conn.sadd(&key, "x").await.unwrap(),
        };
        let err = store.load(&id).await.unwrap_err();
        assert!(
            matches!(err, actix_kv_session::StoreError::Corrupt(_)),
            "{err:?}"
        );
        let intact = async || {
            let mut conn = raw(&server).await;
            let now: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            now == kind
        };
        tests::faults::an_unreadable_record_is_an_unknown_id(store.clone(), id, intact).await;
        let exists: bool = conn.exists(&key).await.unwrap();
        assert!(!exists, "{kind}: the purge left it");
    }
}

/// A save that finds the key turned into something else since its load neither fails with
/// a 500 nor writes over it: the session is gone.
#[actix_web::test]
async fn a_key_that_changed_type_after_the_load_is_never_written_over() {
    use actix_kv_session::storage::{ChangeSet, ConflictPolicy, KeyChange, SaveOutcome};
    let (store, server) = redis();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    let key = format!("session:{id}");
    let _: () = conn.del(&key).await.unwrap();
    let _: () = conn.set(&key, "not a hash").await.unwrap();
    let changes = ChangeSet::new(
        vec![KeyChange::new(
            "foo".into(),
            Some("2".into()),
            Some("1".into()),
        )],
        ConflictPolicy::LastWriteWins,
        Duration::from_mins(1),
    );
    assert_eq!(
        store.update(&id, &changes).await.unwrap(),
        SaveOutcome::Gone
    );
    assert!(!store.touch(&id, Duration::from_mins(1)).await.unwrap());
    let value: String = conn.get(&key).await.unwrap();
    assert_eq!(value, "not a hash");
}

/// Redis refusing a write (out of memory under `noeviction`, an ACL without `hset`) is a
/// 503 with the cause, never a session silently "gone" with the changes dropped; an empty
/// last-writer-wins change set extends the TTL.
#[actix_web::test]
async fn a_write_redis_refuses_is_an_error_not_a_lost_session() {
    use actix_kv_session::storage::{ChangeSet, ConflictPolicy, KeyChange, SaveOutcome};
    let (store, server) = redis();
    let mut conn = raw(&server).await;
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    let set = |value: &str| {
        ChangeSet::new(
            vec![KeyChange::new("foo".into(), Some(value.into()), None)],
            ConflictPolicy::LastWriteWins,
            Duration::from_mins(1),
        )
    };
    let empty = ChangeSet::new(
        vec![],
        ConflictPolicy::LastWriteWins,
        Duration::from_mins(3),
    );
    assert_eq!(store.update(&id, &empty).await.unwrap(), SaveOutcome::Saved);
    let ttl: i64 = conn.ttl(format!("session:{id}")).await.unwrap();
    assert!(ttl > 120, "the empty update set the TTL: {ttl}");

    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "nohset", "on", ">pw", "~*", "+@all", "-hset"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let limited =
        RedisStore::new(format!("redis://nohset:pw@127.0.0.1:{}", server.port())).unwrap();
    let err = limited.update(&id, &set("2")).await.unwrap_err();
    assert!(
        format!("{err:?}").contains("can't run this command"),
        "{err:?}"
    );

    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = store.update(&id, &set("3")).await.unwrap_err();
    assert!(format!("{err:?}").contains("OOM"), "{err:?}");
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored: String = conn.hget(format!("session:{id}"), "foo").await.unwrap();
    assert_eq!(stored, "1", "nothing was written");
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
