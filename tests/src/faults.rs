//! Fault scenarios against a real server process, the same for every networked store:
//! the server stopped, then started again; the server frozen, then thawed.

use std::time::{Duration, Instant};

use actix_kv_session::{storage::SessionStore, SessionMiddleware};
use actix_web::http::StatusCode;

use crate::{init_app, servers::ServerProcess, suite::get};

/// With the server stopped, session routes answer 503 with an opaque body and routes without
/// the session 200; once it is started again, requests succeed without restarting the app
/// (the restarted server is empty, so the counter starts again).
pub async fn stopped_server_gives_503_and_recovers<S: SessionStore + Clone>(
    store: S,
    server: &mut ServerProcess,
) {
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    server.stop();
    let started = Instant::now();
    let down = get(&app, "/counter", Some(id.as_str())).await;
    println!(
        "server stopped: {} after {:?}",
        down.status,
        started.elapsed()
    );
    assert_eq!(
        (down.status, down.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
    );
    assert!(down.cookie.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        get(&app, "/noop", Some(id.as_str())).await.status,
        StatusCode::OK
    );
    server.start();
    let back = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!((back.status, back.body.as_str()), (StatusCode::OK, "1"));
    assert_eq!(
        get(&app, "/counter", Some(back.id().as_str())).await.body,
        "2"
    );
}

/// With the server frozen (SIGSTOP), session routes answer 503 within the middleware's 2 s
/// timeout and routes without the session 200; once it thaws, requests succeed again.
pub async fn frozen_server_gives_503_within_the_timeout_and_recovers<S: SessionStore + Clone>(
    store: S,
    server: &ServerProcess,
) {
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    server.pause();
    let started = Instant::now();
    let frozen = tokio::time::timeout(
        Duration::from_secs(10),
        get(&app, "/counter", Some(id.as_str())),
    )
    .await
    .expect("the request hung");
    let waited = started.elapsed();
    println!("server frozen: {} after {waited:?}", frozen.status);
    assert_eq!(frozen.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        waited < Duration::from_millis(2_500),
        "took {waited:?}, over the 2 s timeout"
    );
    assert_eq!(
        get(&app, "/noop", Some(id.as_str())).await.status,
        StatusCode::OK
    );
    server.resume();
    let mut body = String::new();
    for _ in 0..20 {
        let reply = get(&app, "/counter", Some(id.as_str())).await;
        if reply.status == StatusCode::OK {
            body = reply.body;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body, "2", "the app did not recover after the server thawed");
}

/// A record the store holds at `id` but cannot read (written there by the caller with the
/// store's own client): every session route of that user still works. A read sees an empty
/// session and gets no cookie; a write starts a new session under a fresh id; the record is
/// never written through (`intact` says whether it is still there, unchanged); a log-out
/// deletes it. Logged, never a 500.
pub async fn an_unreadable_record_is_an_unknown_id<S: SessionStore + Clone>(
    store: S,
    id: actix_kv_session::SessionId,
    intact: impl AsyncFn() -> bool,
) {
    let app = init_app!(SessionMiddleware::new(store));
    let read = get(&app, "/get/foo", Some(id.as_str())).await;
    assert_eq!(
        (read.status, read.body.as_str(), read.cookie.is_none()),
        (StatusCode::OK, "none", true),
        "a read: {read:?}"
    );
    let write = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!((write.status, write.body.as_str()), (StatusCode::OK, "1"));
    assert_ne!(write.id(), id, "the unreadable id was adopted");
    assert_eq!(
        get(&app, "/counter", Some(write.id().as_str())).await.body,
        "2"
    );
    assert!(intact().await, "the unreadable record was written over");
    let logout = crate::suite::post(&app, "/purge", Some(id.as_str())).await;
    assert_eq!(logout.status, StatusCode::OK);
    assert_eq!(
        logout.cookie.map(|c| c.value().to_owned()),
        Some(String::new())
    );
}

/// An outage under load is a few log lines, not one per request: the first failure in full,
/// each cause once, then at most a summary every few seconds, and one line when the store
/// answers again, with the count of failures not reported one by one.
pub async fn an_outage_is_logged_in_a_few_lines<S: SessionStore + Clone>(
    store: S,
    server: &mut ServerProcess,
) {
    let (logs, _guard) = crate::logs::Logs::capture();
    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    server.stop();
    let started = Instant::now();
    for _ in 0..300 {
        let reply = get(&app, "/counter", Some(id.as_str())).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let took = started.elapsed();
    server.start();
    assert_eq!(get(&app, "/counter", None).await.status, StatusCode::OK);
    let errors = logs.errors();
    println!("300 failed requests in {took:?}: {errors:#?}");
    // One line, plus one summary per 5 s the failures went on.
    let most = 1 + usize::try_from(took.as_secs() / 5).unwrap();
    assert!(
        (1..=most).contains(&errors.len()),
        "{} error lines for 300 failures in {took:?}",
        errors.len()
    );
    for line in &errors {
        crate::logs::assert_each_cause_once(line);
    }
    let over: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|line| line.contains("the store answers again"))
        .collect();
    assert_eq!(over.len(), 1, "{:#?}", logs.lines());
    println!("{}", over[0]);
    assert!(over[0].contains("unreported_failures="), "{}", over[0]);
}

/// A connection that the server dropped while idle in the pool (a restart, `CLIENT KILL`,
/// a proxy's idle timeout) does not fail a load: the load is retried once on a fresh
/// connection. `drop_connections` drops every client connection the server has.
pub async fn a_dropped_connection_does_not_fail_a_load<S: SessionStore + Clone>(
    store: S,
    drop_connections: impl AsyncFn(),
) {
    let app = init_app!(SessionMiddleware::new(store));
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(get(&app, "/counter", None).await.id());
    }
    for round in 0..10 {
        drop_connections().await;
        let reads = ids
            .iter()
            .map(|id| get(&app, "/get/foo", Some(id.as_str())));
        for reply in futures_util::future::join_all(reads).await {
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "round {round}: a load failed on a dropped connection"
            );
        }
    }
}
