//! `compat::ActixSessionImport` against the real actix-session: an app on actix-session
//! logs a user in, the same browser's next request reaches the app on this crate, which
//! takes the session over (new id, our cookie, the old cookie removed, the old record
//! deleted); the old cookie, replayed, is a new visitor; a cookie of another key imports
//! nothing.

use actix_kv_session::{
    compat::ActixSessionImport,
    storage::{MemoryStore, RedisStore, SessionMap, SessionStore},
    ImportSession, SessionId, SessionMiddleware, StoreError,
};
use actix_session::{config::CookieContentSecurity, storage::CookieSessionStore};
use actix_web::{
    cookie::{Cookie, CookieJar, Key},
    dev::{Service, ServiceResponse},
    http::{header, StatusCode},
    test, web, App, Error, HttpResponse,
};
use deadpool_redis::redis::{self, AsyncCommands};
use futures_util::future::LocalBoxFuture;
use tests::{init_app, servers::ServerProcess};

/// The old app's log-in, as its users wrote it.
async fn old_login(session: actix_session::Session) -> Result<HttpResponse, Error> {
    session.insert("foo", 5)?;
    session.insert("user", "ada")?;
    session.insert("cart", vec!["apple", "pear"])?;
    Ok(HttpResponse::Ok().body("logged in"))
}

/// Logs in on the old app; the value of its `id` cookie.
async fn log_in_on_actix_session<S, B>(app: &S) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = Error>,
{
    let res = test::call_service(app, test::TestRequest::post().uri("/login").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res
        .response()
        .cookies()
        .find(|c| c.name() == "id")
        .expect("actix-session's cookie");
    cookie.value().to_owned()
}

/// What the new app answered: status, body, and its `Set-Cookie` headers.
struct Answer {
    status: StatusCode,
    body: String,
    cookies: Vec<Cookie<'static>>,
}

impl Answer {
    fn cookie(&self, name: &str) -> Option<&Cookie<'static>> {
        self.cookies.iter().find(|c| c.name() == name)
    }

    fn session_id(&self) -> SessionId {
        SessionId::parse(self.cookie("session").expect("our cookie").value()).unwrap()
    }
}

async fn send<S, B>(app: &S, path: &str, cookies: &str) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = Error>,
    B: actix_web::body::MessageBody,
{
    let req = test::TestRequest::get()
        .uri(path)
        .insert_header((header::COOKIE, cookies))
        .to_request();
    let res = test::call_service(app, req).await;
    let status = res.status();
    let cookies = res
        .headers()
        .get_all(header::SET_COOKIE)
        .map(|h| Cookie::parse(h.to_str().unwrap().to_owned()).unwrap())
        .collect();
    let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    Answer {
        status,
        body,
        cookies,
    }
}

#[actix_web::test]
async fn a_user_logged_in_on_actix_session_with_redis_stays_logged_in() {
    let server = ServerProcess::redis();
    let key = Key::generate();
    let old_store = actix_session::storage::RedisSessionStore::new(server.redis_url())
        .await
        .unwrap();
    let old = test::init_service(
        App::new()
            .wrap(actix_session::SessionMiddleware::new(
                old_store,
                key.clone(),
            ))
            .route("/login", web::post().to(old_login)),
    )
    .await;
    let old_cookie = log_in_on_actix_session(&old).await;
    let client = redis::Client::open(server.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let old_keys: Vec<String> = conn.keys("*").await.unwrap();
    assert_eq!(old_keys.len(), 1, "{old_keys:?}");

    let store = RedisStore::new(server.redis_url()).unwrap();
    let app = init_app!(SessionMiddleware::builder(store.clone())
        .import_sessions(ActixSessionImport::redis(key.clone(), &store))
        .build());

    // A route that does not use the session leaves everything as it is.
    let noop = send(&app, "/noop", &format!("id={old_cookie}")).await;
    assert!(noop.cookies.is_empty());
    let still: bool = conn.exists(&old_keys[0]).await.unwrap();
    assert!(still);

    let taken = send(&app, "/counter", &format!("id={old_cookie}")).await;
    assert_eq!((taken.status, taken.body.as_str()), (StatusCode::OK, "6"));
    let removal = taken.cookie("id").expect("the old cookie removed");
    assert_eq!(removal.value(), "");
    assert_eq!(
        removal.max_age(),
        Some(actix_web::cookie::time::Duration::ZERO)
    );
    let id = taken.session_id();
    let mut stored = store
        .load(&id)
        .await
        .unwrap()
        .expect("the session, as ours");
    stored.retain(|k, _| !k.starts_with('\0'));
    assert_eq!(
        stored,
        [
            ("foo", "6"),
            ("user", "\"ada\""),
            ("cart", r#"["apple","pear"]"#)
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into()
    );
    let gone: bool = conn.exists(&old_keys[0]).await.unwrap();
    assert!(!gone, "the old record outlived the import");

    // The browser goes on with our cookie.
    let next = send(&app, "/get/user", &format!("session={id}")).await;
    assert_eq!(next.body, "\"ada\"");
    // The old cookie, replayed (stolen), is a new visitor now.
    let replayed = send(&app, "/counter", &format!("id={old_cookie}")).await;
    assert_eq!(replayed.body, "1");
    assert_ne!(replayed.session_id(), id);
    // Our cookie wins over an old one still sent with it.
    let both = send(&app, "/counter", &format!("id={old_cookie}; session={id}")).await;
    assert_eq!(both.body, "7");
    assert!(both.cookie("id").is_none());
}

#[actix_web::test]
async fn a_signed_cookie_store_session_is_taken_over_and_other_keys_import_nothing() {
    let key = Key::generate();
    let old = test::init_service(
        App::new()
            .wrap(
                actix_session::SessionMiddleware::builder(
                    CookieSessionStore::default(),
                    key.clone(),
                )
                .cookie_content_security(CookieContentSecurity::Signed)
                .build(),
            )
            .route("/login", web::post().to(old_login)),
    )
    .await;
    let old_cookie = log_in_on_actix_session(&old).await;

    let store = MemoryStore::default();
    let import = ActixSessionImport::cookie_store(key.clone()).signed();
    let app = init_app!(SessionMiddleware::builder(store.clone())
        .import_sessions(import)
        .build());
    let taken = send(&app, "/counter", &format!("id={old_cookie}")).await;
    assert_eq!(taken.body, "6");
    assert_eq!(
        send(
            &app,
            "/get/cart",
            &format!("session={}", taken.session_id())
        )
        .await
        .body,
        r#"["apple","pear"]"#
    );

    // The same cookie checked with another key (or as encrypted, which it is not): a new
    // visitor, the old cookie removed all the same.
    for import in [
        ActixSessionImport::cookie_store(Key::generate()).signed(),
        ActixSessionImport::cookie_store(key.clone()),
    ] {
        let app = init_app!(SessionMiddleware::builder(MemoryStore::default())
            .import_sessions(import)
            .build());
        let refused = send(&app, "/counter", &format!("id={old_cookie}")).await;
        assert_eq!(refused.body, "1");
        assert!(refused.cookie("id").is_some());
    }
    // A forged cookie, its content edited after signing.
    let forged = old_cookie.replace("ada", "eve");
    assert_ne!(forged, old_cookie);
    let refused = send(&app, "/get/user", &format!("id={forged}")).await;
    assert_eq!(refused.body, "none");
}

#[actix_web::test]
async fn an_encrypted_cookie_under_the_same_cookie_name_is_replaced_by_ours() {
    let key = Key::generate();
    let old = test::init_service(
        App::new()
            .wrap(actix_session::SessionMiddleware::new(
                CookieSessionStore::default(),
                key.clone(),
            ))
            .route("/login", web::post().to(old_login)),
    )
    .await;
    let old_cookie = log_in_on_actix_session(&old).await;
    // The new app keeps the old cookie name: its value becomes our id.
    let app = init_app!(SessionMiddleware::builder(MemoryStore::default())
        .cookie_name("id")
        .import_sessions(ActixSessionImport::cookie_store(key))
        .build());
    let taken = send(&app, "/counter", &format!("id={old_cookie}")).await;
    assert_eq!(taken.body, "6");
    let ours: Vec<_> = taken.cookies.iter().filter(|c| c.name() == "id").collect();
    assert_eq!(
        ours.len(),
        1,
        "one Set-Cookie for `id`: ours, not a removal"
    );
    assert!(SessionId::parse(ours[0].value()).is_some());
}

/// An import whose session ours could never save (over `max_session_bytes`): the visitor
/// is new and the old cookie goes, rather than a 500 on every request. A value over
/// `max_value_bytes` is left out, the other keys imported.
struct LargeImport;

impl ImportSession for LargeImport {
    fn cookie_name(&self) -> &'static str {
        "old"
    }

    fn import<'a>(
        &'a self,
        cookie: &'a str,
    ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
        Box::pin(async move {
            let big = serde_json::to_string(&"x".repeat(2000)).unwrap();
            let mut session = SessionMap::from([("user".to_owned(), "\"ada\"".to_owned())]);
            if cookie == "big" {
                session.insert("history".to_owned(), big);
            }
            Ok(Some(session))
        })
    }
}

#[actix_web::test]
async fn an_import_too_large_to_save_is_a_new_visitor_not_a_500() {
    let app = init_app!(SessionMiddleware::builder(MemoryStore::default())
        .max_session_bytes(Some(1024))
        .import_sessions(LargeImport)
        .build());
    let reply = send(&app, "/get/user", "old=big").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "none")
    );
    assert!(reply.cookie("old").is_some(), "the old cookie not removed");

    let app = init_app!(SessionMiddleware::builder(MemoryStore::default())
        .max_value_bytes(Some(1024))
        .import_sessions(LargeImport)
        .build());
    let reply = send(&app, "/counter", "old=big").await;
    assert_eq!(reply.body, "1");
    let next = send(
        &app,
        "/get/history",
        &format!("session={}", reply.session_id()),
    )
    .await;
    assert_eq!(next.body, "none");
    let next = send(
        &app,
        "/get/user",
        &format!("session={}", reply.session_id()),
    )
    .await;
    assert_eq!(next.body, "\"ada\"");
}

/// A checked cookie whose record cannot be read (a hash where actix-session keeps a string):
/// a new visitor, as for an unreadable record of ours; never a 500.
#[actix_web::test]
async fn an_unreadable_actix_session_record_is_a_new_visitor() {
    let server = ServerProcess::redis();
    let key = Key::generate();
    let session_key = "a".repeat(64);
    let client = redis::Client::open(server.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn.hset(&session_key, "f", "v").await.unwrap();
    let mut jar = CookieJar::new();
    jar.private_mut(&key)
        .add(Cookie::new("id", session_key.clone()));
    let value = jar.get("id").unwrap().value().to_owned();
    let store = RedisStore::new(server.redis_url()).unwrap();
    let app = init_app!(SessionMiddleware::builder(store.clone())
        .import_sessions(ActixSessionImport::redis(key, &store))
        .build());
    let reply = send(&app, "/counter", &format!("id={value}")).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
}

/// With `.signed()`, any cookie the old app signed with the same key passes the check (the
/// signature does not cover the cookie's name): only a session key as actix-session makes
/// them (64 letters and digits) may name a Redis key to read and delete.
#[actix_web::test]
async fn a_signed_cookie_of_another_kind_reads_and_deletes_nothing() {
    let server = ServerProcess::redis();
    let key = Key::generate();
    let client = redis::Client::open(server.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn
        .set("config:flags", r#"{"admin":"true"}"#)
        .await
        .unwrap();
    let mut jar = CookieJar::new();
    jar.signed_mut(&key)
        .add(Cookie::new("lang", "config:flags"));
    let value = jar.get("lang").unwrap().value().to_owned();
    let store = RedisStore::new(server.redis_url()).unwrap();
    let app = init_app!(SessionMiddleware::builder(store.clone())
        .import_sessions(ActixSessionImport::redis(key, &store).signed())
        .build());
    let reply = send(&app, "/get/admin", &format!("id={value}")).await;
    assert_eq!(reply.body, "none");
    let kept: bool = conn.exists("config:flags").await.unwrap();
    assert!(kept, "the import deleted a key it was not given");
}

/// Under the old cookie's name, a request that sets no cookie of ours still removes the
/// old one, so it is not imported again on every request; a `__Host-` name's removal is
/// Secure, or browsers would ignore it.
#[actix_web::test]
async fn an_old_cookie_that_imports_nothing_is_removed_once() {
    let app = init_app!(SessionMiddleware::builder(MemoryStore::default())
        .cookie_name("id")
        .import_sessions(ActixSessionImport::cookie_store(Key::generate()))
        .build());
    let reply = send(&app, "/get/user", "id=garbage").await;
    assert_eq!(reply.body, "none");
    let removal = reply.cookie("id").expect("the old cookie removed");
    assert_eq!(removal.value(), "");

    let host = ActixSessionImport::cookie_store(Key::generate()).cookie_name("__Host-id");
    assert_eq!(host.removal_cookie().secure(), Some(true));
}
