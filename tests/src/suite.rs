//! The middleware suite: what a user of actix-web sees, on top of any store.
//! Instantiate it with [`session_suite!`](crate::session_suite).

use std::time::Duration;

use actix_kv_session::{
    storage::{ChangeSet, ConflictPolicy, KeyChange, SessionStore},
    SessionId, SessionMiddleware, TtlExtension,
};
use actix_web::{
    cookie::{time, Cookie, SameSite},
    dev::{Service, ServiceResponse},
    http::{Method, StatusCode},
    test,
};
use futures_util::future::join_all;

pub use crate::lifecycle::{
    a_log_in_racing_log_out_everywhere_does_not_live_on,
    a_session_keeps_its_own_ttl_and_cookie_kind, absolute_timeout_ends_an_active_session,
    bound_sessions_stay_indexed_and_reads_never_conflict,
    log_out_everywhere_ends_every_session_of_the_user, renew_starts_the_absolute_timeout_again,
    signed_cookies_refuse_forgeries_and_rotate_keys,
    size_limits_refuse_a_save_and_keep_the_stored_session,
    ttl_extensions_are_throttled_to_the_interval, update_and_update_or_save_their_changes,
};
pub use crate::races::{
    purge_with_requests_in_flight_stays_final,
    renew_with_requests_in_flight_keeps_the_user_logged_in,
    two_concurrent_renews_leave_one_working_session,
};
use crate::{server::TestServer, session_cookie, stores::CountingStore};

/// What a client sees of one response.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The body as text.
    pub body: String,
    /// The `session` Set-Cookie, if one was sent.
    pub cookie: Option<Cookie<'static>>,
}

impl Reply {
    /// The id the response's cookie carries; fails if there is none or it is not an id.
    #[must_use]
    pub fn id(&self) -> SessionId {
        let cookie = self.cookie.as_ref().expect("a session cookie");
        SessionId::parse(cookie.value()).expect("a well-formed id")
    }
}

/// Sends `method path` with an optional `session` cookie value to a test service.
pub async fn send<Svc, B>(app: &Svc, method: Method, path: &str, cookie: Option<&str>) -> Reply
where
    Svc: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let mut req = test::TestRequest::default().method(method).uri(path);
    if let Some(value) = cookie {
        req = req.insert_header(("cookie", format!("session={value}")));
    }
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status();
    let cookie = session_cookie(res.headers());
    let body = String::from_utf8(test::read_body(res).await.to_vec()).expect("UTF-8 body");
    Reply {
        status,
        body,
        cookie,
    }
}

/// `GET path` with an optional cookie.
pub async fn get<Svc, B>(app: &Svc, path: &str, cookie: Option<&str>) -> Reply
where
    Svc: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    send(app, Method::GET, path, cookie).await
}

/// `POST path` with an optional cookie.
pub async fn post<Svc, B>(app: &Svc, path: &str, cookie: Option<&str>) -> Reply
where
    Svc: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    send(app, Method::POST, path, cookie).await
}

/// A test service: the test routes behind `$middleware`.
#[macro_export]
macro_rules! init_app {
    ($middleware:expr) => {
        actix_web::test::init_service(
            actix_web::App::new()
                .wrap($middleware)
                .configure($crate::app::routes),
        )
        .await
    };
}

fn plain<S: SessionStore + Clone>(store: S) -> SessionMiddleware<S> {
    SessionMiddleware::new(store)
}

fn json(value: &str) -> String {
    serde_json::to_string(value).unwrap()
}

/// The seed's counter: 1, then 2 for the same visitor; 1 for another.
pub async fn counter_counts_per_visitor<S: SessionStore + Clone>(store: S) {
    let app = init_app!(plain(store.clone()));
    let first = get(&app, "/counter", None).await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "1"));
    let id = first.id();
    let second = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!(second.body, "2");
    // The persistent cookie's expiry moves with the session's.
    assert_eq!(second.id(), id);
    let other = get(&app, "/counter", None).await;
    assert_eq!(other.body, "1");
    assert_ne!(other.id(), id);
    assert_eq!(store.load(&id).await.unwrap().unwrap()["foo"], "2");
}

/// Reading an empty session stores nothing and sets no cookie.
pub async fn new_visitor_gets_no_cookie_until_something_is_stored<S: SessionStore + Clone>(
    store: S,
) {
    let counting = CountingStore::new(store);
    let app = init_app!(plain(counting.clone()));
    let reply = get(&app, "/get/foo", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "none")
    );
    assert!(reply.cookie.is_none(), "{:?}", reply.cookie);
    // No cookie, so nothing to load either.
    assert_eq!(counting.calls().total(), 0);
}

/// The defaults on set and on removal, and every setting of the builder.
pub async fn default_cookie_attributes<S: SessionStore + Clone>(store: S) {
    let app = init_app!(plain(store.clone()));
    let set = get(&app, "/counter", None).await;
    let cookie = set.cookie.clone().unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.same_site(), Some(SameSite::Lax));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.domain(), None);
    assert_eq!(cookie.max_age(), Some(time::Duration::days(30)));
    let removed = post(&app, "/clear", Some(cookie.value()))
        .await
        .cookie
        .unwrap();
    assert_eq!(removed.value(), "");
    assert_eq!(removed.max_age(), Some(time::Duration::ZERO));
    assert_eq!(removed.path(), Some("/"));
    assert_eq!(removed.secure(), Some(true));
    assert_eq!(removed.same_site(), Some(SameSite::Lax));

    let custom = SessionMiddleware::builder(store)
        .domain("example.com")
        .path("/")
        .same_site(SameSite::Strict)
        .http_only(false)
        .secure(false)
        .browser_session(true)
        .build();
    let app = init_app!(custom);
    let cookie = get(&app, "/counter", None).await.cookie.unwrap();
    assert_eq!(cookie.domain(), Some("example.com"));
    assert_eq!(cookie.same_site(), Some(SameSite::Strict));
    assert_eq!(cookie.http_only(), None);
    assert_eq!(cookie.secure(), None);
    assert_eq!(
        cookie.max_age(),
        None,
        "a browser-session cookie has no Max-Age"
    );
    // A browser-session cookie is not re-sent when the session changes.
    assert!(get(&app, "/counter", Some(cookie.value()))
        .await
        .cookie
        .is_none());
    let removed = post(&app, "/clear", Some(cookie.value()))
        .await
        .cookie
        .unwrap();
    assert_eq!(removed.domain(), Some("example.com"));
    assert_eq!(removed.same_site(), Some(SameSite::Strict));
    assert_eq!(removed.max_age(), Some(time::Duration::ZERO));
}

/// A well-formed id the store does not know is replaced, never written.
pub async fn unknown_id_gets_a_fresh_one_and_is_never_written<S: SessionStore + Clone>(store: S) {
    let app = init_app!(plain(store.clone()));
    let unknown = SessionId::generate();
    let reply = get(&app, "/counter", Some(unknown.as_str())).await;
    assert_eq!(reply.body, "1");
    assert_ne!(reply.id(), unknown);
    assert_eq!(store.load(&unknown).await.unwrap(), None);
    assert!(store.load(&reply.id()).await.unwrap().is_some());
    // Reading with an unknown id stores nothing and sends no cookie at all: the id may be
    // one a concurrent log-in just renewed, and the browser may hold the new one already.
    let other = SessionId::generate();
    let read = get(&app, "/get/foo", Some(other.as_str())).await;
    assert_eq!((read.status, read.body.as_str()), (StatusCode::OK, "none"));
    assert!(read.cookie.is_none(), "{:?}", read.cookie);
    assert_eq!(store.load(&other).await.unwrap(), None);
}

/// A request writes the keys it changed and nothing else.
pub async fn only_changed_keys_are_written<S: SessionStore + Clone>(store: S) {
    let counting = CountingStore::new(store.clone());
    let app = init_app!(plain(counting.clone()));
    let id = post(&app, "/set/a/1", None).await.id();
    post(&app, "/set/b/1", Some(id.as_str())).await;
    let saves = counting
        .calls()
        .update
        .load(std::sync::atomic::Ordering::SeqCst);
    // Setting a key to the value it has is no change: no save, no cookie.
    let same = post(&app, "/set/a/1", Some(id.as_str())).await;
    assert!(same.cookie.is_none());
    assert_eq!(
        counting
            .calls()
            .update
            .load(std::sync::atomic::Ordering::SeqCst),
        saves
    );
    // Someone else changes `b` between this request's load and save...
    let outside = ChangeSet::new(
        vec![KeyChange::new("b".into(), Some(json("9")), Some(json("1")))],
        ConflictPolicy::LastWriteWins,
        Duration::from_mins(1),
    );
    store.update(&id, &outside).await.unwrap();
    post(&app, "/set/a/2", Some(id.as_str())).await;
    // ...and the request that changed only `a` left `b` alone.
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(record["a"], json("2"));
    assert_eq!(record["b"], json("9"));
}

/// Removing the last key deletes the record and the cookie.
pub async fn emptied_session_is_deleted_and_cookie_removed<S: SessionStore + Clone>(store: S) {
    let app = init_app!(plain(store.clone()));
    let id = post(&app, "/set/a/1", None).await.id();
    let removed = post(&app, "/remove/a", Some(id.as_str())).await;
    assert_eq!(removed.body, json("1"));
    assert_eq!(
        removed.cookie.unwrap().max_age(),
        Some(time::Duration::ZERO)
    );
    assert_eq!(store.load(&id).await.unwrap(), None);

    let id = get(&app, "/counter", None).await.id();
    post(&app, "/set/b/2", Some(id.as_str())).await;
    let cleared = post(&app, "/clear", Some(id.as_str())).await;
    assert_eq!(cleared.cookie.unwrap().value(), "");
    assert_eq!(store.load(&id).await.unwrap(), None);
}

/// Log-in renews: a new id with the data, the old id dead.
pub async fn renew_moves_the_session_to_a_new_id<S: SessionStore + Clone>(store: S) {
    let app = init_app!(plain(store.clone()));
    let old = get(&app, "/counter", None).await.id();
    get(&app, "/counter", Some(old.as_str())).await;
    let login = post(&app, "/login/ann", Some(old.as_str())).await;
    assert_eq!(login.status, StatusCode::OK);
    let new = login.id();
    assert_ne!(new, old);
    assert_eq!(store.load(&old).await.unwrap(), None);
    let record = store.load(&new).await.unwrap().unwrap();
    assert_eq!(record["foo"], "2");
    assert_eq!(record["user"], json("ann"));
    assert_eq!(get(&app, "/counter", Some(new.as_str())).await.body, "3");
    assert_eq!(get(&app, "/counter", Some(old.as_str())).await.body, "1");
    // Renewing a session that has nothing stored yet just stores it under a fresh id.
    let fresh = post(&app, "/login/bob", None).await;
    assert_eq!(
        store.load(&fresh.id()).await.unwrap().unwrap()["user"],
        json("bob")
    );
}

/// Log-out: record deleted, removal cookie, no load needed.
pub async fn purge_deletes_and_removes_cookie<S: SessionStore + Clone>(store: S) {
    let counting = CountingStore::new(store.clone());
    let app = init_app!(plain(counting.clone()));
    let id = get(&app, "/counter", None).await.id();
    let loads = counting
        .calls()
        .load
        .load(std::sync::atomic::Ordering::SeqCst);
    let purged = post(&app, "/purge", Some(id.as_str())).await;
    assert_eq!(purged.status, StatusCode::OK);
    let removal = purged.cookie.unwrap();
    assert_eq!(
        (removal.value(), removal.max_age()),
        ("", Some(time::Duration::ZERO))
    );
    assert_eq!(removal.path(), Some("/"));
    assert_eq!(
        counting
            .calls()
            .load
            .load(std::sync::atomic::Ordering::SeqCst),
        loads
    );
    assert_eq!(store.load(&id).await.unwrap(), None);
    assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "1");
}

/// Keys set after a purge go to a new session.
pub async fn purge_then_insert_starts_a_new_session<S: SessionStore + Clone>(store: S) {
    let app = init_app!(plain(store.clone()));
    let old = get(&app, "/counter", None).await.id();
    let reply = post(&app, "/purge-then-set", Some(old.as_str())).await;
    let new = reply.id();
    assert_ne!(new, old);
    assert_eq!(store.load(&old).await.unwrap(), None);
    let record = store.load(&new).await.unwrap().unwrap();
    assert_eq!(record.len(), 1, "the old data does not follow: {record:?}");
    assert_eq!(record["flash"], json("logged out"));
}

/// A 5xx response saves nothing the handler changed.
pub async fn server_error_discards_changes<S: SessionStore + Clone>(store: S) {
    let app = init_app!(plain(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    let failed = post(&app, "/fail", Some(id.as_str())).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.cookie.is_none());
    assert_eq!(store.load(&id).await.unwrap().unwrap()["foo"], "1");
    let new = post(&app, "/fail", None).await;
    assert!(
        new.cookie.is_none(),
        "no session for a failed first request"
    );
}

/// Past its TTL a session is gone: the counter starts again under a new id.
pub async fn session_expires_after_ttl<S: SessionStore + Clone>(store: S) {
    let mw = SessionMiddleware::builder(store.clone())
        .ttl(Duration::from_secs(1))
        .build();
    let app = init_app!(mw);
    let first = get(&app, "/counter", None).await;
    assert_eq!(
        first.cookie.as_ref().unwrap().max_age(),
        Some(time::Duration::seconds(1))
    );
    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
    let after = get(&app, "/counter", Some(first.id().as_str())).await;
    assert_eq!(after.body, "1");
    assert_ne!(after.id(), first.id());
    assert_eq!(store.load(&first.id()).await.unwrap(), None);
}

/// With the every-request policy a read extends the TTL and re-sends the cookie; with the
/// default policy a read does neither.
pub async fn every_request_policy_extends_ttl_and_cookie<S: SessionStore + Clone>(store: S) {
    let ttl = Duration::from_secs(2);
    let mw = SessionMiddleware::builder(store.clone())
        .ttl(ttl)
        .ttl_extension(TtlExtension::OnEveryRequest)
        .build();
    let app = init_app!(mw);
    let id = get(&app, "/counter", None).await.id();
    actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    let read = get(&app, "/get/foo", Some(id.as_str())).await;
    assert_eq!(read.body, "1");
    let cookie = read.cookie.expect("the cookie's expiry is extended too");
    assert_eq!(
        (cookie.value(), cookie.max_age()),
        (id.as_str(), Some(time::Duration::seconds(2)))
    );
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    // 2.7 s after the last write, past the TTL: alive because the read extended it.
    assert_eq!(get(&app, "/get/foo", Some(id.as_str())).await.body, "1");

    let app = init_app!(SessionMiddleware::new(store));
    let id = get(&app, "/counter", None).await.id();
    assert!(get(&app, "/get/foo", Some(id.as_str()))
        .await
        .cookie
        .is_none());
}

/// Two `Session` arguments of one handler are one session, loaded once.
pub async fn two_extractors_share_one_load<S: SessionStore + Clone>(store: S) {
    let counting = CountingStore::new(store);
    let app = init_app!(plain(counting.clone()));
    let id = get(&app, "/counter", None).await.id();
    let before = counting
        .calls()
        .load
        .load(std::sync::atomic::Ordering::SeqCst);
    let reply = get(&app, "/two", Some(id.as_str())).await;
    assert_eq!(
        reply.body, "1",
        "the second handle sees the first one's insert"
    );
    assert_eq!(
        counting
            .calls()
            .load
            .load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
    assert_eq!(get(&app, "/ext", Some(id.as_str())).await.body, "1");
}

async fn http_request(url: String, method: Method, id: SessionId) -> (StatusCode, String) {
    let client = awc::Client::default();
    let mut res = client
        .request(method, url)
        .insert_header(("cookie", format!("session={id}")))
        .send()
        .await
        .expect("request");
    let body = res.body().await.expect("body");
    (res.status(), String::from_utf8_lossy(&body).into_owned())
}

/// Real HTTP, two workers: fifty requests at once on one session, each setting another key.
pub async fn concurrent_requests_on_different_keys_all_persist<S>(store: S)
where
    S: SessionStore + Clone,
{
    let server = TestServer::start(plain(store.clone()));
    let app = init_app!(plain(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    let requests =
        (0..50).map(|i| http_request(server.url(&format!("/slow-set/k{i}")), Method::POST, id));
    let replies = join_all(requests).await;
    assert!(
        replies.iter().all(|(status, _)| *status == StatusCode::OK),
        "{replies:?}"
    );
    let record = store.load(&id).await.unwrap().unwrap();
    let missing: Vec<_> = (0..50)
        .filter(|i| !record.contains_key(&format!("k{i}")))
        .collect();
    assert!(missing.is_empty(), "lost the writes of keys {missing:?}");
    assert_eq!(record["foo"], "1");
}

/// Real HTTP: fifty concurrent increments under the strict policy lose nothing; the
/// refused ones are 409s.
pub async fn strict_policy_turns_lost_updates_into_conflicts<S>(store: S)
where
    S: SessionStore + Clone,
{
    let strict = SessionMiddleware::builder(store.clone())
        .conflict_policy(ConflictPolicy::Strict)
        .build();
    let server = TestServer::start(strict);
    let app = init_app!(plain(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    let requests = (0..50).map(|_| http_request(server.url("/slow-incr"), Method::POST, id));
    let replies = join_all(requests).await;
    let ok = replies.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let conflicts = replies
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!(ok + conflicts, 50, "{replies:?}");
    assert!(ok >= 1);
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        record["foo"],
        (1 + ok).to_string(),
        "{ok} increments answered 200"
    );
    println!("strict: {ok} accepted, {conflicts} refused with 409");
}

/// A logout while a slow request on the same session is still running: the slow request's
/// save does not bring the session back.
pub async fn purge_during_slow_request_stays_purged<S>(store: S)
where
    S: SessionStore + Clone,
{
    let server = TestServer::start(plain(store.clone()));
    let app = init_app!(plain(store.clone()));
    let id = get(&app, "/counter", None).await.id();
    let slow = http_request(server.url("/slow-read"), Method::GET, id);
    let logout = async {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        http_request(server.url("/purge"), Method::POST, id).await
    };
    let (slow, logout) = futures_util::join!(slow, logout);
    assert_eq!(logout.0, StatusCode::OK);
    assert_eq!(slow.0, StatusCode::OK);
    assert_eq!(
        store.load(&id).await.unwrap(),
        None,
        "the purged session came back"
    );
    assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "1");
}

/// Typed structs through the middleware: the same keys as the untyped API, only changed
/// fields written, skipped and absent optional fields not stored, and two typed views
/// changed by concurrent requests both kept.
pub async fn typed_structs_round_trip_and_write_only_changed_fields<S: SessionStore + Clone>(
    store: S,
) {
    let app = init_app!(plain(store.clone()));
    let id = get(&app, "/typed/counter", None).await.id();
    assert_eq!(
        get(&app, "/typed/counter", Some(id.as_str())).await.body,
        "2"
    );
    assert_eq!(
        get(&app, "/counter", Some(id.as_str())).await.body,
        "3",
        "one `foo` key"
    );

    assert_eq!(post(&app, "/typed/visit", None).await.body, "anonymous");
    let id = post(&app, "/login/ann", None).await.id();
    assert_eq!(
        post(&app, "/typed/visit", Some(id.as_str())).await.body,
        "ann 1"
    );
    let record = store.load(&id).await.unwrap().unwrap();
    let mut keys: Vec<_> = record.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["user", "visits"],
        "no `theme` (None) and no `scratch` (skipped)"
    );
    assert_eq!(record["visits"], "1");

    // Two requests at once, one changing the profile, one the cart: both changes stay.
    let server = TestServer::start(plain(store.clone()));
    let (visits, items) = futures_util::join!(
        http_request(server.url("/typed/visit-slow"), Method::POST, id),
        http_request(server.url("/typed/cart-slow/apple"), Method::POST, id),
    );
    assert_eq!((visits.0, items.0), (StatusCode::OK, StatusCode::OK));
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(record["visits"], "2");
    assert_eq!(record["cart.items"], "[\"apple\"]");
    assert_eq!(record["user"], json("ann"));
    // Two requests at once on two fields of the same struct: neither rewrites the other's.
    let (visits, theme) = futures_util::join!(
        http_request(server.url("/typed/visit-slow"), Method::POST, id),
        http_request(server.url("/typed/theme-slow/dark"), Method::POST, id),
    );
    assert_eq!((visits.0, theme.0), (StatusCode::OK, StatusCode::OK));
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        (record["visits"].as_str(), record["theme"].as_str()),
        ("3", "\"dark\"")
    );
}
