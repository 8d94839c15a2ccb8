//! Behaviour of the middleware that does not depend on the store: the lazy rule,
//! malformed cookies, store faults, bad data, and use outside a handler.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use actix_kv_session::{
    storage::{MemoryStore, SessionStore},
    Session, SessionExt, SessionId, SessionMiddleware,
};
use actix_web::{
    dev::Service,
    http::{header::HeaderValue, StatusCode},
    test, web, App, HttpResponse,
};
use tests::{
    init_app,
    server::TestServer,
    session_cookie,
    stores::{CountingStore, Fault, FaultyStore},
    suite::{get, post},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn seeded(store: &MemoryStore, pairs: &[(&str, &str)]) -> SessionId {
    tests::seed(store, pairs).await
}

#[actix_web::test]
async fn routes_that_do_not_use_the_session_touch_no_store_and_set_no_cookie() {
    let store = CountingStore::new(MemoryStore::default());
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    let before = store.calls().total();
    for cookie in [
        None,
        Some(id.as_str()),
        Some("garbage"),
        Some(&*SessionId::generate().to_string()),
    ] {
        let reply = get(&app, "/noop", cookie).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "noop")
        );
        assert!(reply.cookie.is_none(), "{cookie:?} got {:?}", reply.cookie);
    }
    assert_eq!(
        store.calls().total(),
        before,
        "a route without the session made store calls"
    );
}

#[actix_web::test]
async fn malformed_cookies_start_a_fresh_session_and_never_reach_the_store() {
    let store = CountingStore::new(MemoryStore::default());
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let long = "a".repeat(1_000);
    let malformed = [
        "../x",
        long.as_str(),
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "0123456789ABCDEF0123456789ABCDEF",
        "",
        "0123456789abcdef 0123456789abcdef",
        "0123456789abcdef%0D%0A0123456789abcdef",
        "0123456789abcdef0123456789abcdef0",
        "\"0123456789abcdef0123456789abcdef\"",
    ];
    for value in malformed {
        let loads = store.calls().load.load(Ordering::SeqCst);
        let reply = get(&app, "/counter", Some(value)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "1"),
            "{value:?}"
        );
        assert_ne!(reply.cookie.as_ref().unwrap().value(), value);
        // The malformed id was not even looked up.
        assert_eq!(
            store.calls().load.load(Ordering::SeqCst),
            loads,
            "{value:?} was loaded"
        );
        // A read with it stores nothing and sends no cookie.
        let read = get(&app, "/get/foo", Some(value)).await;
        assert_eq!(read.body, "none");
        assert!(read.cookie.is_none(), "{value:?}: {:?}", read.cookie);
    }
}

#[actix_web::test]
async fn the_first_session_cookie_decides_among_many() {
    let store = MemoryStore::default();
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    let req = test::TestRequest::get()
        .uri("/counter")
        .insert_header(("cookie", format!("theme=dark; session={id}; lang=en")))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(test::read_body(res).await, "2");
}

/// CR/LF inside the Cookie header never reaches the app: the HTTP parser refuses it.
#[actix_web::test]
async fn raw_cr_lf_in_the_cookie_header_is_refused() {
    let store = CountingStore::new(MemoryStore::default());
    let server = TestServer::start(SessionMiddleware::new(store.clone()));
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let request = "GET /counter HTTP/1.1\r\nHost: x\r\nCookie: session=0123456789abcdef\r0123456789abcdef\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert_eq!(store.calls().total(), 0);
}

#[actix_web::test]
async fn a_store_that_is_down_gives_503_on_session_routes_only_and_recovers() {
    let store = FaultyStore::new(MemoryStore::default());
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    store.set(Fault::Down);
    let reply = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "Service Unavailable", "the body is opaque");
    assert!(reply.cookie.is_none());
    // A new visitor needs no load, but the save fails: 503 too, and no cookie.
    let new = get(&app, "/counter", None).await;
    assert_eq!(
        (new.status, new.cookie),
        (StatusCode::SERVICE_UNAVAILABLE, None)
    );
    assert_eq!(
        get(&app, "/noop", Some(id.as_str())).await.status,
        StatusCode::OK
    );
    store.set(Fault::None);
    assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "2");
}

#[actix_web::test]
async fn a_store_that_hangs_gives_503_after_the_timeout() {
    let store = FaultyStore::new(MemoryStore::default());
    let timeout = Duration::from_millis(300);
    let mw = SessionMiddleware::builder(store.clone())
        .store_timeout(timeout)
        .build();
    let app = init_app!(mw);
    let id = get(&app, "/counter", None).await.id();
    store.set(Fault::Hang);
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        get(&app, "/counter", Some(id.as_str())),
    )
    .await
    .expect("the request hung instead of timing out");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= timeout);
    assert_eq!(
        get(&app, "/noop", Some(id.as_str())).await.status,
        StatusCode::OK
    );
    store.set(Fault::None);
    assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "2");
}

#[actix_web::test]
async fn a_corrupt_value_is_an_error_for_that_key_not_a_panic() {
    let store = MemoryStore::default();
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let id = seeded(&store, &[("foo", "not json {"), ("other", "\"fine\"")]).await;
    let reply = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "Internal Server Error");
    // The other keys still read, and the failed request changed nothing.
    assert_eq!(
        get(&app, "/get/other", Some(id.as_str())).await.body,
        "\"fine\""
    );
    assert_eq!(store.load(&id).await.unwrap().unwrap()["foo"], "not json {");
    // Overwriting the bad value repairs the session.
    post(&app, "/set/foo/1", Some(id.as_str())).await;
    assert_eq!(store.load(&id).await.unwrap().unwrap()["foo"], "\"1\"");
}

#[actix_web::test]
async fn values_that_cannot_be_serialized_are_a_500_and_change_nothing() {
    async fn bad(session: Session) -> actix_web::Result<&'static str> {
        session.insert("ok", 1)?;
        // JSON object keys must be strings.
        let map: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        session.insert("bad", &map)?;
        Ok("unreachable")
    }
    let store = MemoryStore::default();
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(store.clone()))
            .route("/bad", web::get().to(bad)),
    )
    .await;
    let res = test::call_service(&app, test::TestRequest::get().uri("/bad").to_request()).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        session_cookie(res.headers()).is_none(),
        "a 5xx saves nothing"
    );
    assert_eq!(store.session_count(), 0);
}

#[actix_web::test]
async fn without_the_middleware_the_extractor_fails_clearly() {
    let app = test::init_service(App::new().configure(tests::app::routes)).await;
    let reply = get(&app, "/counter", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "Internal Server Error");
}

#[actix_web::test]
async fn another_middleware_can_use_the_session_through_session_ext() {
    let store = MemoryStore::default();
    let app = test::init_service(
        App::new()
            .wrap_fn(|req, srv| {
                let session = req.get_session();
                let response = srv.call(req);
                async move {
                    session.load().await?;
                    let visits = session.get::<u64>("foo")?.unwrap_or(0);
                    let mut res = response.await?;
                    let value = HeaderValue::from_str(&visits.to_string()).unwrap();
                    res.headers_mut()
                        .insert("x-visits-before".parse().unwrap(), value);
                    Ok(res)
                }
            })
            .wrap(SessionMiddleware::new(store.clone()))
            .configure(tests::app::routes),
    )
    .await;
    let first =
        test::call_service(&app, test::TestRequest::get().uri("/counter").to_request()).await;
    assert_eq!(first.headers().get("x-visits-before").unwrap(), "0");
    let id = session_cookie(first.headers()).unwrap();
    let req = test::TestRequest::get()
        .uri("/counter")
        .cookie(id)
        .to_request();
    let second = test::call_service(&app, req).await;
    assert_eq!(second.headers().get("x-visits-before").unwrap(), "1");
    assert_eq!(test::read_body(second).await, "2");
}

#[actix_web::test]
async fn a_handle_used_before_load_says_so() {
    async fn unloaded(req: actix_web::HttpRequest) -> HttpResponse {
        let session = req.get_session();
        let err = session.get::<u64>("foo").unwrap_err();
        // Every handle of the request is the one session: loading one loads them all.
        session.load().await.unwrap();
        assert!(req.get_session().is_loaded());
        HttpResponse::Ok().body(err.to_string())
    }
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(MemoryStore::default()))
            .route("/", web::get().to(unloaded)),
    )
    .await;
    let body = test::call_and_read_body(&app, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(
        body,
        "the session was used before it was loaded (call `Session::load` first)"
    );
}

#[actix_web::test]
#[should_panic(expected = "invalid session cookie name")]
async fn a_bad_cookie_name_is_caught_at_build_time() {
    let _ = SessionMiddleware::builder(MemoryStore::default())
        .cookie_name("bad name")
        .build();
}

/// `status()` reports the calls a handler made, as actix-session's does, whatever the store
/// will have to write.
#[actix_web::test]
async fn status_reports_calls_not_writes() {
    async fn steps(session: Session, path: web::Path<String>) -> actix_web::Result<String> {
        let mut seen = vec![format!("{:?}", session.status())];
        for step in path.split(',') {
            match step {
                "same" => session.insert("foo", 1)?,
                "set" => session.insert("x", 1)?,
                "remove" => drop(session.remove("x")?),
                "remove-absent" => drop(session.remove("absent")?),
                "clear" => session.clear()?,
                "renew" => session.renew()?,
                "purge" => session.purge(),
                _ => {}
            }
            seen.push(format!("{:?}", session.status()));
        }
        Ok(seen.join(" "))
    }
    async fn purge_unloaded(req: actix_web::HttpRequest) -> String {
        let session = req.get_session();
        session.purge();
        format!("{:?}", session.status())
    }
    let store = MemoryStore::default();
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(store.clone()))
            .route("/steps/{steps}", web::post().to(steps))
            .route("/purge", web::post().to(purge_unloaded))
            .configure(tests::app::routes),
    )
    .await;
    let stored = get(&app, "/counter", None).await.id();
    let cases: [(&str, Option<SessionId>, &str); 10] = [
        ("read", Some(stored), "Unchanged Unchanged"),
        ("same", Some(stored), "Unchanged Changed"),
        ("set,remove", Some(stored), "Unchanged Changed Changed"),
        ("remove-absent", Some(stored), "Unchanged Changed"),
        ("clear", None, "Unchanged Changed"),
        ("renew", None, "Unchanged Renewed"),
        ("renew,set", Some(stored), "Unchanged Renewed Renewed"),
        ("set,renew", None, "Unchanged Changed Renewed"),
        ("purge", None, "Unchanged Purged"),
        (
            "purge,set,renew",
            Some(stored),
            "Unchanged Purged Purged Purged",
        ),
    ];
    for (steps, cookie, expected) in cases {
        let id = cookie.map(|id| id.to_string());
        let reply = post(&app, &format!("/steps/{steps}"), id.as_deref()).await;
        assert_eq!(reply.body, expected, "{steps}");
    }
    assert_eq!(post(&app, "/purge", None).await.body, "Purged");
}

/// `__Host-session` works end to end: the cookie is Secure, Path=/ and has no Domain, so
/// browsers accept it, and its removal carries the same attributes.
#[actix_web::test]
async fn a_host_prefixed_cookie_round_trips() {
    let mw = SessionMiddleware::builder(MemoryStore::default())
        .cookie_name("__Host-session")
        .build();
    let app = init_app!(mw);
    let res = test::call_service(&app, test::TestRequest::get().uri("/counter").to_request()).await;
    let cookies = tests::set_cookies(res.headers());
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let cookie = cookies[0].clone();
    assert_eq!(cookie.name(), "__Host-session");
    assert_eq!(
        (cookie.secure(), cookie.path(), cookie.domain()),
        (Some(true), Some("/"), None)
    );
    let req = test::TestRequest::post()
        .uri("/clear")
        .insert_header(("cookie", format!("__Host-session={}", cookie.value())))
        .to_request();
    let res = test::call_service(&app, req).await;
    let removal = tests::set_cookies(res.headers()).pop().unwrap();
    assert_eq!(
        (
            removal.name(),
            removal.value(),
            removal.secure(),
            removal.path()
        ),
        ("__Host-session", "", Some(true), Some("/"))
    );
}

#[actix_web::test]
#[should_panic(expected = "starts with `__Host-`, which allows no domain")]
async fn a_host_prefixed_cookie_with_a_domain_is_caught_at_build_time() {
    let _ = SessionMiddleware::builder(MemoryStore::default())
        .cookie_name("__Host-session")
        .domain("example.com")
        .build();
}

#[actix_web::test]
#[should_panic(expected = "starts with `__Secure-`, which needs `secure(true)`")]
async fn a_secure_prefixed_cookie_without_secure_is_caught_at_build_time() {
    let _ = SessionMiddleware::builder(MemoryStore::default())
        .cookie_name("__Secure-session")
        .secure(false)
        .build();
}

/// `testing::TestSessions` reads back what a handler stored behind a signed cookie
/// (`ID.SIGNATURE`), as a test of an app that signs its cookies gets it.
#[actix_web::test]
async fn test_sessions_read_a_signed_cookie_back() {
    let sessions = actix_kv_session::testing::TestSessions::new();
    let signed = sessions
        .builder()
        .signing_keys([actix_kv_session::SigningKey::generate()])
        .build();
    let app = init_app!(signed);
    let reply = get(&app, "/counter", None).await;
    let cookie = reply.cookie.expect("a signed cookie");
    assert!(cookie.value().contains('.'), "{cookie}");
    assert_eq!(sessions.get::<u64>(&cookie, "foo").await, Some(1));
}
