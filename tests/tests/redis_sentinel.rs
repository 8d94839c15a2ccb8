//! `RedisStore` on a master that Sentinel follows: one master, one replica and three
//! Sentinels on loopback. One deployment serves the whole binary, so one test runs every
//! phase in turn: the conformance suite and the middleware suite (without and with the near
//! cache), and the master killed under load.

use std::{
    cell::RefCell,
    time::{Duration, Instant},
};

use actix_kv_session::{
    storage::{NearCache, RedisStore, SessionStore},
    testing, SessionId, SessionMiddleware,
};
use actix_web::http::{Method, StatusCode};
use futures_util::future::join_all;
use tests::{
    races::http,
    redis_topologies::{lost_increments, RedisSentinel},
    server::TestServer,
};

fn store(sentinel: &RedisSentinel) -> RedisStore {
    RedisStore::sentinel(sentinel.sentinel_urls(), sentinel.master_name())
        .build()
        .expect("valid Sentinel URLs")
}

fn near_store(sentinel: &RedisSentinel) -> RedisStore {
    RedisStore::sentinel(sentinel.sentinel_urls(), sentinel.master_name())
        .near_cache(NearCache::new())
        .build()
        .expect("valid Sentinel URLs")
}

#[test]
fn redis_sentinel() {
    let mut sentinel = RedisSentinel::start();
    testing::run(async {
        let started = Instant::now();
        testing::check_store(|| async { store(&sentinel) }).await;
        println!("conformance suite: {:?}", started.elapsed());

        let started = Instant::now();
        middleware_suite(&sentinel, store).await;
        println!("middleware suite: {:?}", started.elapsed());

        let started = Instant::now();
        testing::check_store(|| async { near_store(&sentinel) }).await;
        middleware_suite(&sentinel, near_store).await;
        println!("with the near cache: {:?}", started.elapsed());

        the_master_killed_under_load(&mut sentinel).await;
    });
}

/// The middleware suite, case by case, each on a fresh store object.
async fn middleware_suite(sentinel: &RedisSentinel, store: fn(&RedisSentinel) -> RedisStore) {
    macro_rules! cases {
        ($($case:ident),+ $(,)?) => {
            $(tests::suite::$case(store(sentinel)).await;)+
        };
    }
    cases![
        counter_counts_per_visitor,
        unknown_id_gets_a_fresh_one_and_is_never_written,
        only_changed_keys_are_written,
        emptied_session_is_deleted_and_cookie_removed,
        renew_moves_the_session_to_a_new_id,
        purge_deletes_and_removes_cookie,
        concurrent_requests_on_different_keys_all_persist,
        strict_policy_turns_lost_updates_into_conflicts,
        renew_with_requests_in_flight_keeps_the_user_logged_in,
        purge_with_requests_in_flight_stays_final,
    ];
}

/// The master killed while sessions are in use: requests answer 503 within the timeout
/// (never a hang) while Sentinel promotes the replica, then the store follows the new
/// master without an app restart. Prints how many acknowledged increments the failover lost.
/// A near cache that held a session before the failover reads what the new master holds
/// after it.
async fn the_master_killed_under_load(sentinel: &mut RedisSentinel) {
    let server = TestServer::start(SessionMiddleware::new(store(sentinel)));
    let mut sessions = Vec::new();
    for _ in 0..16 {
        let reply = http("first", Method::GET, server.url("/counter"), None).await;
        sessions.push(SessionId::parse(reply.cookie.as_ref().unwrap().value()).unwrap());
    }
    let near = near_store(sentinel);
    let cached = near.load(&sessions[0]).await.unwrap();
    assert_eq!(cached.as_ref().map(|s| s["foo"].as_str()), Some("1"));
    let done = RefCell::new(false);
    let log = RefCell::new(Vec::new());
    let loops = sessions.iter().map(|id| {
        let (server, done, log) = (&server, &done, &log);
        async move {
            let mut acknowledged = 1;
            while !*done.borrow() {
                let started = Instant::now();
                let reply = http("load", Method::GET, server.url("/counter"), Some(*id)).await;
                if reply.status == StatusCode::OK {
                    acknowledged += 1;
                }
                log.borrow_mut()
                    .push((*id, reply.status, started.elapsed()));
            }
            acknowledged
        }
    });
    let chaos = async {
        actix_web::rt::time::sleep(Duration::from_secs(1)).await;
        let old = sentinel.master_addr();
        sentinel.kill_master();
        let started = Instant::now();
        let new = sentinel.wait_for_promotion().await;
        println!(
            "master {old} killed; {new} promoted after {:?}",
            started.elapsed()
        );
        actix_web::rt::time::sleep(Duration::from_secs(2)).await;
        *done.borrow_mut() = true;
    };
    let (acknowledged, ()) = futures_util::future::join(join_all(loops), chaos).await;

    let log = log.into_inner();
    let slowest = log.iter().map(|entry| entry.2).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(3_500),
        "a request took {slowest:?}: a hang"
    );
    let failed = log.iter().filter(|entry| entry.1 != StatusCode::OK).count();
    println!(
        "{failed} of {} requests failed during the switch",
        log.len()
    );
    assert!(failed > 0, "the kill was not noticed");
    for id in &sessions {
        let last = log.iter().rev().find(|entry| entry.0 == *id).unwrap();
        assert_eq!(
            last.1,
            StatusCode::OK,
            "a session did not recover: {last:?}"
        );
    }

    let (lost, total) = lost_increments(&store(sentinel), &sessions, &acknowledged).await;
    println!("acknowledged increments lost in the failover: {lost} of {total}");

    let now = store(sentinel).load(&sessions[0]).await.unwrap();
    assert_ne!(now, cached);
    let started = Instant::now();
    while near.load(&sessions[0]).await.ok().flatten() != now {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the near cache still serves what the old master held"
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}
