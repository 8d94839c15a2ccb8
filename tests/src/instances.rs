//! Several app instances on one shared store: two servers, each with a store of its own
//! (its own connections), and clients whose requests go to either, as behind a load
//! balancer.

use std::time::Duration;

use actix_kv_session::{
    storage::{ConflictPolicy, SessionStore},
    SessionId, SessionMiddleware,
};
use actix_web::http::{Method, StatusCode};
use futures_util::future::join_all;

use crate::{races::http, server::TestServer};

fn middleware<S: SessionStore + Clone>(store: S, policy: ConflictPolicy) -> SessionMiddleware<S> {
    SessionMiddleware::builder(store)
        .conflict_policy(policy)
        .secure(false)
        .build()
}

/// Two instances, `a` and `b`, each made with `make()` (a new store object on the same
/// backend), serving one client in turn: the counter goes on across them; fifty requests
/// that set different keys, spread over both, all persist; fifty strict increments spread
/// over both lose nothing (the refused ones are 409s); a log-out on one is seen by the other
/// at once.
pub async fn two_instances_share_sessions<S: SessionStore + Clone>(make: impl Fn() -> S) {
    let (a, b) = (
        TestServer::start(middleware(make(), ConflictPolicy::LastWriteWins)),
        TestServer::start(middleware(make(), ConflictPolicy::LastWriteWins)),
    );
    let at = |n: usize, path: &str| {
        if n.is_multiple_of(2) {
            a.url(path)
        } else {
            b.url(path)
        }
    };

    // The counter, alternately on each instance.
    let first = http("first", Method::GET, a.url("/counter"), None).await;
    let id = SessionId::parse(first.cookie.as_ref().expect("a cookie").value()).unwrap();
    for visit in 2..=6 {
        let reply = http("visit", Method::GET, at(visit, "/counter"), Some(id)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, visit.to_string().as_str()),
            "visit {visit}"
        );
    }

    // Fifty requests at once, each setting its own key, over both instances.
    let sets = (0..50).map(|i| {
        http(
            "set",
            Method::POST,
            at(i, &format!("/slow-set/k{i}")),
            Some(id),
        )
    });
    let replies = join_all(sets).await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::OK),
        "{replies:?}"
    );
    let read = |n: usize, key: String| {
        let url = at(n, &format!("/get/{key}"));
        async move { http("get", Method::GET, url, Some(id)).await.body }
    };
    let values = join_all((0..50).map(|i| read(i + 1, format!("k{i}")))).await;
    let missing: Vec<_> = (0..50).filter(|i| values[*i] != "true").collect();
    assert!(
        missing.is_empty(),
        "lost the keys {missing:?} across instances"
    );

    // The strict policy across instances: every accepted increment is in the count.
    let (sa, sb) = (
        TestServer::start(middleware(make(), ConflictPolicy::Strict)),
        TestServer::start(middleware(make(), ConflictPolicy::Strict)),
    );
    let strict_at = |n: usize| {
        if n.is_multiple_of(2) {
            sa.url("/slow-incr")
        } else {
            sb.url("/slow-incr")
        }
    };
    let increments = (0..50).map(|i| http("incr", Method::POST, strict_at(i), Some(id)));
    let replies = join_all(increments).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let conflicts = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .count();
    assert_eq!(ok + conflicts, 50, "{replies:?}");
    let count = http("count", Method::GET, a.url("/get/foo"), Some(id))
        .await
        .body;
    assert_eq!(count, (6 + ok).to_string(), "{ok} increments were accepted");

    // A log-out on one instance holds on the other at once.
    let logout = http("logout", Method::POST, b.url("/purge"), Some(id)).await;
    assert_eq!(logout.status, StatusCode::OK);
    let after = http("after", Method::GET, a.url("/get/foo"), Some(id)).await;
    assert_eq!(
        (after.status, after.body.as_str(), after.cookie.is_none()),
        (StatusCode::OK, "none", true),
        "the other instance still had the session"
    );
    // And neither brings it back.
    actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    let fresh = http("fresh", Method::GET, a.url("/counter"), Some(id)).await;
    assert_eq!(fresh.body, "1");
    assert_ne!(
        fresh.cookie.as_ref().map(|c| c.value().to_owned()),
        Some(id.to_string())
    );
}
