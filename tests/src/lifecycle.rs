//! Session lifecycle and signed cookies through the middleware, on any store: the absolute
//! timeout, a session's own TTL and cookie kind ("remember me"), throttled TTL extensions,
//! size limits, signing keys with rotation, and log out everywhere. Part of the middleware suite
//! ([`session_suite!`](crate::session_suite)).

use std::{sync::atomic::Ordering, time::Duration};

use actix_kv_session::{
    storage::SessionStore, SessionId, SessionMiddleware, SigningKey, TtlExtension,
};
use actix_web::cookie::time;

use crate::{
    init_app,
    stores::CountingStore,
    suite::{get, post},
};

async fn sleep(duration: Duration) {
    actix_web::rt::time::sleep(duration).await;
}

/// With an absolute timeout, a session ends that long after it was created however active
/// it is: the next request is a new visitor's, the old record is deleted, and a request that
/// stores nothing removes the cookie. The creation time is in the record, and the app never
/// sees it.
pub async fn absolute_timeout_ends_an_active_session<S: SessionStore + Clone>(store: S) {
    let mw = SessionMiddleware::builder(store.clone())
        .ttl(Duration::from_mins(1))
        .absolute_timeout(Duration::from_secs(2))
        .build();
    let app = init_app!(mw);
    let first = get(&app, "/counter", None).await;
    let id = first.id();
    let record = store.load(&id).await.unwrap().expect("stored");
    assert!(
        record.contains_key("\0created"),
        "the creation time is kept with the session: {record:?}"
    );
    assert_eq!(get(&app, "/keys", Some(id.as_str())).await.body, "foo");
    sleep(Duration::from_millis(1100)).await;
    let active = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!((active.body.as_str(), active.id()), ("2", id));
    sleep(Duration::from_secs(1)).await;
    // Two seconds after creation, one after its last use: over.
    let read = get(&app, "/get/foo", Some(id.as_str())).await;
    assert_eq!(read.body, "none");
    let removal = read.cookie.expect("the cookie is removed");
    assert_eq!(removal.max_age(), Some(time::Duration::ZERO));
    assert_eq!(
        store.load(&id).await.unwrap(),
        None,
        "the record is deleted"
    );

    // A request that stores something gets a new session, created now.
    let first = get(&app, "/counter", None).await;
    sleep(Duration::from_millis(2100)).await;
    let after = get(&app, "/counter", Some(first.id().as_str())).await;
    assert_eq!(after.body, "1");
    assert_ne!(after.id(), first.id());
    assert_eq!(store.load(&first.id()).await.unwrap(), None);
}

/// A renew (log-in) starts the absolute timeout again: the session after a privilege change
/// is a new one.
pub async fn renew_starts_the_absolute_timeout_again<S: SessionStore + Clone>(store: S) {
    let mw = SessionMiddleware::builder(store.clone())
        .absolute_timeout(Duration::from_secs(2))
        .build();
    let app = init_app!(mw);
    let id = get(&app, "/counter", None).await.id();
    sleep(Duration::from_millis(1500)).await;
    let renewed = post(&app, "/login/alice", Some(id.as_str())).await.id();
    sleep(Duration::from_secs(1)).await;
    // 2.5 s after creation, 1 s after the log-in: alive.
    assert_eq!(
        get(&app, "/get/user", Some(renewed.as_str())).await.body,
        "\"alice\""
    );
}

/// A handler sets this session's TTL ("remember me"): the cookie's Max-Age follows it on
/// every response that sets the cookie, across requests and across a renew, and the store
/// expires the session by it. Its cookie kind is its own too.
pub async fn a_session_keeps_its_own_ttl_and_cookie_kind<S: SessionStore + Clone>(store: S) {
    let mw = SessionMiddleware::builder(store.clone())
        .ttl(Duration::from_mins(1))
        .build();
    let app = init_app!(mw);
    let id = get(&app, "/counter", None).await.id();
    let max_age = |reply: &crate::suite::Reply| {
        reply
            .cookie
            .as_ref()
            .and_then(actix_web::cookie::Cookie::max_age)
    };
    let remembered = post(&app, "/remember/3600", Some(id.as_str())).await;
    assert_eq!(max_age(&remembered), Some(time::Duration::hours(1)));
    let later = get(&app, "/counter", Some(id.as_str())).await;
    assert_eq!(max_age(&later), Some(time::Duration::hours(1)));
    let renewed = post(&app, "/login/alice", Some(id.as_str())).await;
    assert_eq!(
        max_age(&renewed),
        Some(time::Duration::hours(1)),
        "kept across renew"
    );
    let id = renewed.id();
    assert_eq!(get(&app, "/keys", Some(id.as_str())).await.body, "foo,user");

    let browser = post(&app, "/browser-session/true", Some(id.as_str())).await;
    let cookie = browser.cookie.expect("the cookie, now without Max-Age");
    assert_eq!((cookie.value(), cookie.max_age()), (id.as_str(), None));
    let next = get(&app, "/counter", Some(id.as_str())).await;
    assert!(
        next.cookie.is_none(),
        "a browser-session cookie is not re-sent"
    );

    // A short TTL of its own: the store lets the session go after it.
    let short = get(&app, "/counter", None).await.id();
    let set = post(&app, "/remember/1", Some(short.as_str())).await;
    assert_eq!(max_age(&set), Some(time::Duration::seconds(1)));
    sleep(Duration::from_millis(2100)).await;
    assert_eq!(store.load(&short).await.unwrap(), None);
}

/// Under the every-request policy with an interval, a read-only request extends the TTL
/// (one store write, and the cookie) at most once per interval; in between it writes
/// nothing and sends no cookie, and the session stays alive through the extensions.
pub async fn ttl_extensions_are_throttled_to_the_interval<S: SessionStore + Clone>(store: S) {
    let counting = CountingStore::new(store.clone());
    let mw = SessionMiddleware::builder(counting.clone())
        .ttl(Duration::from_secs(4))
        .ttl_extension(TtlExtension::OnEveryRequest)
        .ttl_extension_interval(Duration::from_secs(2))
        .build();
    let app = init_app!(mw);
    let id = get(&app, "/counter", None).await.id();
    let writes = || {
        let calls = counting.calls();
        calls.update.load(Ordering::SeqCst) + calls.touch.load(Ordering::SeqCst)
    };
    let before = writes();
    for _ in 0..3 {
        let read = get(&app, "/get/foo", Some(id.as_str())).await;
        assert_eq!(read.body, "1");
        assert!(read.cookie.is_none(), "not yet due: {:?}", read.cookie);
    }
    assert_eq!(writes(), before, "no store write within the interval");
    sleep(Duration::from_millis(2100)).await;
    let due = get(&app, "/get/foo", Some(id.as_str())).await;
    let cookie = due.cookie.expect("the extension re-sends the cookie");
    assert_eq!(cookie.max_age(), Some(time::Duration::seconds(4)));
    assert_eq!(writes(), before + 1, "one extension");
    assert!(get(&app, "/get/foo", Some(id.as_str()))
        .await
        .cookie
        .is_none());
    sleep(Duration::from_secs(3)).await;
    // 5.1 s after creation, 3 s after the extension: alive.
    assert_eq!(get(&app, "/get/foo", Some(id.as_str())).await.body, "1");
    assert_eq!(get(&app, "/keys", Some(id.as_str())).await.body, "foo");
}

/// With signing keys the cookie is `ID.SIGNATURE` and works as the id did; a cookie whose
/// signature does not verify (altered, another id's, unsigned, another key's) is a new
/// visitor's and never reaches the store. Rotation: a middleware whose first key is new and
/// second is old accepts the old cookie, and the next response that sets the cookie signs
/// it with the new key, which a middleware with the new key alone accepts.
pub async fn signed_cookies_refuse_forgeries_and_rotate_keys<S: SessionStore + Clone>(store: S) {
    let (old_key, new_key) = (SigningKey::generate(), SigningKey::generate());
    let counting = CountingStore::new(store.clone());
    let signed = |keys: Vec<SigningKey>| {
        SessionMiddleware::builder(counting.clone())
            .signing_keys(keys)
            .build()
    };
    let app = init_app!(signed(vec![old_key.clone()]));
    let first = get(&app, "/counter", None).await;
    let value = first.cookie.expect("a cookie").value().to_owned();
    let (id, signature) = value.split_once('.').expect("ID.SIGNATURE");
    let id = SessionId::parse(id).expect("an id before the dot");
    assert_eq!(signature.len(), 43, "{value}");
    assert!(signature
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(get(&app, "/counter", Some(&value)).await.body, "2");

    let loads = || counting.calls().load.load(Ordering::SeqCst);
    let before = loads();
    let mut altered = value.clone().into_bytes();
    let at = altered.len() - 3;
    altered[at] = if altered[at] == b'x' { b'y' } else { b'x' };
    let altered = String::from_utf8(altered).unwrap();
    let other_id = format!("{}.{signature}", SessionId::generate());
    let stranger = SessionMiddleware::builder(store.clone())
        .signing_keys([SigningKey::generate()])
        .build();
    let strangers = init_app!(stranger);
    let foreign = get(&strangers, "/counter", None)
        .await
        .cookie
        .expect("a cookie")
        .value()
        .to_owned();
    for forged in [altered, other_id, id.as_str().to_owned(), foreign] {
        let reply = get(&app, "/get/foo", Some(&forged)).await;
        assert_eq!(reply.body, "none", "{forged}");
        assert!(reply.cookie.is_none(), "{forged}");
    }
    assert_eq!(loads(), before, "a forged cookie never reaches the store");
    // A log-out with a forged signature over a real id deletes nothing.
    let deletes = counting.calls().delete.load(Ordering::SeqCst);
    let forged_purge = format!("{id}.{}", "A".repeat(43));
    post(&app, "/purge", Some(&forged_purge)).await;
    assert_eq!(counting.calls().delete.load(Ordering::SeqCst), deletes);
    assert_eq!(get(&app, "/get/foo", Some(&value)).await.body, "2");

    let rotated = init_app!(signed(vec![new_key.clone(), old_key]));
    let resigned = get(&rotated, "/counter", Some(&value)).await;
    assert_eq!(resigned.body, "3", "the old key still verifies");
    let new_value = resigned.cookie.expect("a cookie").value().to_owned();
    assert!(new_value.starts_with(id.as_str()) && new_value != value);
    let new_only = init_app!(signed(vec![new_key]));
    assert_eq!(get(&new_only, "/get/foo", Some(&new_value)).await.body, "3");
    assert_eq!(get(&new_only, "/get/foo", Some(&value)).await.body, "none");
}

/// Size limits: a value over `max_value_bytes` is refused when it is inserted (the handler
/// answers 500 through `?`), a save over `max_session_bytes` answers 500 with the size, the
/// limit and the largest key logged; either way the stored session is as it was.
pub async fn size_limits_refuse_a_save_and_keep_the_stored_session<S: SessionStore + Clone>(
    store: S,
) {
    let (logs, _capture) = crate::logs::Logs::capture();
    let mw = SessionMiddleware::builder(store.clone())
        .max_session_bytes(Some(4000))
        .max_value_bytes(Some(3000))
        .build();
    let app = init_app!(mw);
    let stored = post(&app, "/big/2", None).await;
    assert_eq!(stored.body, "stored");
    let id = stored.id();
    let before = store.load(&id).await.unwrap().expect("stored");

    let value = post(&app, "/big/3", Some(id.as_str())).await;
    assert_eq!(
        value.status,
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(value.cookie.is_none());
    assert_eq!(store.load(&id).await.unwrap().as_ref(), Some(&before));
    let lines = logs.lines().join("\n");
    assert!(lines.contains("over the limit of 3000"), "{lines}");

    let second = format!("/set/second/{}", "y".repeat(2500));
    let session = post(&app, &second, Some(id.as_str())).await;
    assert_eq!(
        session.status,
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(store.load(&id).await.unwrap().as_ref(), Some(&before));
    let lines = logs.lines().join("\n");
    assert!(
        lines.contains("larger than max_session_bytes") && lines.contains("largest_key=\"second\""),
        "{lines}"
    );
    // Within the limits the session works on.
    assert_eq!(
        post(&app, "/set/small/1", Some(id.as_str())).await.body,
        "set"
    );
}

/// Sessions bound to a user: each device's session is listed on the "devices" page (the
/// current one marked, what the app stored shown, the index's bookkeeping not), "log out my
/// other devices" ends the others at once (also one with a request in flight, which cannot
/// bring it back), and `SessionMiddleware::purge_user` ends the rest; another user's session
/// is untouched.
pub async fn log_out_everywhere_ends_every_session_of_the_user<S: SessionStore + Clone>(store: S) {
    let mw = SessionMiddleware::new(store.clone());
    let app = init_app!(mw.clone());
    let login = async |user: &str, agent: &str| {
        let reply = post(&app, &format!("/login-as/{user}/{agent}"), None).await;
        assert_eq!(reply.body, "welcome");
        reply.id()
    };
    let phone = login("alice", "phone").await;
    // A visitor who had a session already (a cart) logs in from it: renewed and bound.
    let cart = get(&app, "/counter", None).await.id();
    let laptop = post(&app, "/login-as/alice/laptop", Some(cart.as_str()))
        .await
        .id();
    assert_ne!(laptop, cart);
    assert_eq!(get(&app, "/get/foo", Some(laptop.as_str())).await.body, "1");
    let tablet = login("alice", "tablet").await;
    let bob = login("bob", "desk").await;

    let mut listed: Vec<String> = get(&app, "/devices", Some(phone.as_str()))
        .await
        .body
        .split(',')
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(listed, ["*phone", "laptop", "tablet"]);
    assert_eq!(get(&app, "/keys", Some(phone.as_str())).await.body, "agent");

    // A request on the tablet is in flight while the phone logs the others out.
    let server = crate::server::TestServer::start(SessionMiddleware::new(store.clone()));
    let in_flight = actix_web::rt::spawn(crate::races::http(
        "in flight",
        actix_web::http::Method::POST,
        server.url("/inflight/write/late"),
        Some(tablet),
    ));
    sleep(crate::app::IN_FLIGHT / 4).await;
    let ended = post(&app, "/logout-others", Some(phone.as_str())).await;
    assert_eq!(ended.body, "2");
    let _ = in_flight.await;
    assert_eq!(store.load(&laptop).await.unwrap(), None);
    assert_eq!(store.load(&tablet).await.unwrap(), None, "not brought back");
    assert_eq!(
        get(&app, "/get/agent", Some(laptop.as_str())).await.body,
        "none"
    );
    assert_eq!(
        get(&app, "/devices", Some(phone.as_str())).await.body,
        "*phone"
    );

    // Log out everywhere, from outside a request (a password change, an admin page).
    assert_eq!(mw.purge_user("alice").await.unwrap(), 1);
    assert_eq!(store.load(&phone).await.unwrap(), None);
    assert!(mw.user_sessions("alice").await.unwrap().is_empty());
    assert_eq!(mw.user_sessions("bob").await.unwrap().len(), 1);
    assert_eq!(
        get(&app, "/get/agent", Some(bob.as_str())).await.body,
        "\"desk\""
    );
}

/// What the review of log-out-everywhere found, kept fixed: a log-in that only binds the
/// user is saved and listed; a TTL set after log-in ("remember me" on a later page) keeps
/// the session in the index past the old TTL; and a read-only request in flight while the
/// session is renewed gets 200 even when its TTL extension is a write (due under a
/// throttle), never 409.
pub async fn bound_sessions_stay_indexed_and_reads_never_conflict<S: SessionStore + Clone>(
    store: S,
) {
    let mw = SessionMiddleware::builder(store.clone())
        .ttl(Duration::from_secs(2))
        .ttl_extension(TtlExtension::OnEveryRequest)
        .ttl_extension_interval(Duration::from_secs(1))
        .build();
    let app = init_app!(mw.clone());
    let bound = post(&app, "/bind/carol", None).await;
    assert_eq!(bound.body, "bound");
    let id = bound.id();
    assert_eq!(mw.user_sessions("carol").await.unwrap().len(), 1);

    // Remember me, chosen later: the index must outlive the old two-second TTL.
    let remembered = post(&app, "/remember/3600", Some(id.as_str())).await;
    assert_eq!(remembered.body, "remembered");
    sleep(Duration::from_millis(4500)).await;
    assert_eq!(mw.user_sessions("carol").await.unwrap().len(), 1);

    // A read in flight (its extension due: a write) while the session is renewed.
    let server = crate::server::TestServer::start(mw.clone());
    let read = actix_web::rt::spawn(crate::races::http(
        "read",
        actix_web::http::Method::GET,
        server.url("/inflight/read"),
        Some(id),
    ));
    sleep(crate::app::IN_FLIGHT / 4).await;
    let renewed = post(&app, "/login-as/carol/phone", Some(id.as_str())).await;
    assert_eq!(renewed.body, "welcome");
    let read = read.await.expect("the request ran");
    assert_eq!(read.status, actix_web::http::StatusCode::OK, "{read:?}");

    assert_eq!(mw.purge_user("carol").await.unwrap(), 1);
    assert_eq!(store.load(&renewed.id()).await.unwrap(), None);
}

/// "Log out everywhere" while a log-in is between indexing its new id and writing its
/// session: the purge leaves a placeholder at that id, so the log-in's write fails (a 500
/// the user retries) instead of leaving a session the index no longer names, which no
/// later purge would find.
pub async fn a_log_in_racing_log_out_everywhere_does_not_live_on<S: SessionStore + Clone>(
    store: S,
) {
    let held = crate::stores::HeldCreate::new(store);
    let mw = SessionMiddleware::new(held.clone());
    let server = crate::server::TestServer::start(mw.clone());
    held.arm();
    let login = actix_web::rt::spawn(crate::races::http(
        "log-in",
        actix_web::http::Method::POST,
        server.url("/login-as/dave/phone"),
        None,
    ));
    held.entered().await;
    assert_eq!(mw.purge_user("dave").await.unwrap(), 1, "the indexed id");
    held.release();
    let login = login.await.expect("the log-in ran");
    assert!(login.status.is_server_error(), "{login:?}");
    assert!(mw.user_sessions("dave").await.unwrap().is_empty());
    assert_eq!(mw.purge_user("dave").await.unwrap(), 0);
}

/// actix-session's `update` and `update_or`, with the change saved: `update` of an absent
/// key writes nothing and sends no cookie; `update_or` sets the default, then updates; an
/// update is stored (actix-session's forgets to mark the session changed); a stored value
/// of another type is an error that leaves the session as it was.
pub async fn update_and_update_or_save_their_changes<S: SessionStore + Clone>(store: S) {
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let nothing = post(&app, "/update/visits", None).await;
    assert_eq!(
        (nothing.body.as_str(), nothing.cookie.is_none()),
        ("updated", true)
    );
    let first = post(&app, "/update-or/visits", None).await;
    let id = first.id();
    assert_eq!(get(&app, "/get/visits", Some(id.as_str())).await.body, "1");
    post(&app, "/update-or/visits", Some(id.as_str())).await;
    post(&app, "/update/visits", Some(id.as_str())).await;
    let record = store.load(&id).await.unwrap().expect("stored");
    assert_eq!(record.get("visits").map(String::as_str), Some("3"));
    post(&app, "/set/word/abc", Some(id.as_str())).await;
    let wrong = post(&app, "/update/word", Some(id.as_str())).await;
    assert_eq!(
        wrong.status,
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get(&app, "/get/word", Some(id.as_str())).await.body,
        "\"abc\""
    );
}
