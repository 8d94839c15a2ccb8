//! A user's actix-session handlers compile against `actix_kv_session::compat` with only
//! their `use` lines changed, and answer as they did: `actix_session_api/handlers.rs` is
//! compiled once against the real actix-session and once against this crate, and the same
//! visit is played on both. Where the two differ on purpose (`update` saves here, a cleared
//! session is deleted here), the test says which answer each gives.

use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    http::{header, StatusCode},
    test, App, Error,
};

mod with_actix_session {
    use actix_session::{SessionExt, SessionGetError, SessionInsertError, SessionStatus};
    use actix_web::{guard, guard::GuardContext, web, Error, HttpRequest, HttpResponse};

    type Session = actix_session::Session;

    include!("actix_session_api/handlers.rs");
}

mod with_ours {
    use actix_kv_session::compat::{
        Session, SessionExt, SessionGetError, SessionInsertError, SessionStatus,
    };
    use actix_web::{guard, guard::GuardContext, web, Error, HttpRequest, HttpResponse};

    include!("actix_session_api/handlers.rs");
}

/// The session cookie a browser would hold, following each response's `Set-Cookie`.
#[derive(Default)]
struct Browser {
    cookie: Option<String>,
}

struct Answer {
    status: StatusCode,
    body: String,
    /// Whether the response set or removed the session cookie.
    set_cookie: bool,
}

impl Browser {
    async fn send<S, B>(&mut self, app: &S, method: &str, path: &str) -> Answer
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = Error>,
        B: MessageBody,
    {
        let mut req = match method {
            "POST" => test::TestRequest::post(),
            _ => test::TestRequest::get(),
        }
        .uri(path);
        if path == "/login" {
            req = req.set_form([("user", "ada")]);
        }
        if let Some(value) = &self.cookie {
            req = req.insert_header((header::COOKIE, format!("session={value}")));
        }
        let res = test::call_service(app, req.to_request()).await;
        let status = res.status();
        let mut set_cookie = false;
        for cookie in res.response().cookies() {
            if cookie.name() == "session" {
                set_cookie = true;
                let removed = cookie.value().is_empty()
                    || cookie
                        .max_age()
                        .is_some_and(actix_web::cookie::time::Duration::is_zero);
                self.cookie = (!removed).then(|| cookie.value().to_owned());
            }
        }
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        Answer {
            status,
            body,
            set_cookie,
        }
    }
}

/// What differs between the two libraries in the visit below.
struct Expected {
    /// The third `/visit`: actix-session's `update` does not mark the session changed, so
    /// its second visit is not saved.
    third_visit: &'static str,
}

async fn visit<S, B>(app: &S, expected: &Expected)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    let mut browser = Browser::default();
    let ok = |answer: Answer| {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body
    };
    assert_eq!(ok(browser.send(app, "GET", "/counter").await), "1");
    assert_eq!(ok(browser.send(app, "GET", "/counter").await), "2");
    let before_login = browser.cookie.clone();
    assert_eq!(
        browser.send(app, "GET", "/whoami").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        browser.send(app, "GET", "/private").await.status,
        StatusCode::FORBIDDEN
    );

    assert_eq!(
        ok(browser.send(app, "POST", "/login").await),
        "welcome ada renewed=true"
    );
    assert_ne!(browser.cookie, before_login, "log-in kept the cookie");
    assert_eq!(ok(browser.send(app, "GET", "/whoami").await), "ada");
    assert_eq!(ok(browser.send(app, "GET", "/private").await), "private");
    assert_eq!(
        ok(browser.send(app, "GET", "/keys").await),
        "counter,roles,user_id"
    );
    assert_eq!(ok(browser.send(app, "GET", "/has/user_id").await), "true");
    assert_eq!(ok(browser.send(app, "GET", "/has/nope").await), "false");
    assert_eq!(
        browser.send(app, "GET", "/get-error").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    assert_eq!(ok(browser.send(app, "POST", "/flash").await), "set");
    assert_eq!(
        ok(browser.send(app, "GET", "/flash").await),
        r#"saved | not a string: 7 | ["reader"]"#
    );
    assert_eq!(
        ok(browser.send(app, "GET", "/flash").await),
        "none | none | "
    );
    assert_eq!(
        ok(browser.send(app, "GET", "/keys").await),
        "counter,user_id"
    );

    assert_eq!(ok(browser.send(app, "GET", "/visit").await), "1");
    assert_eq!(ok(browser.send(app, "GET", "/visit").await), "2");
    assert_eq!(
        ok(browser.send(app, "GET", "/visit").await),
        expected.third_visit
    );

    assert_eq!(ok(browser.send(app, "POST", "/reset").await), "cleared");
    assert_eq!(ok(browser.send(app, "GET", "/keys").await), "");
    assert_eq!(
        browser.send(app, "GET", "/whoami").await.status,
        StatusCode::UNAUTHORIZED
    );

    ok(browser.send(app, "POST", "/login").await);
    let logged_in = browser.cookie.clone();
    let bye = browser.send(app, "POST", "/logout").await;
    assert!(bye.set_cookie, "log-out left the cookie");
    assert_eq!(ok(bye), "bye purged=true");
    assert_eq!(browser.cookie, None);
    assert_eq!(
        browser.send(app, "GET", "/whoami").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(logged_in.is_some());
}

#[actix_web::test]
async fn handlers_written_for_actix_session_answer_the_same_on_actix_session() {
    use actix_session::{storage::CookieSessionStore, SessionMiddleware};
    use actix_web::cookie::Key;

    let middleware = SessionMiddleware::builder(CookieSessionStore::default(), Key::generate())
        .cookie_name("session".to_owned())
        .build();
    let app = test::init_service(
        App::new()
            .wrap(middleware)
            .configure(with_actix_session::routes),
    )
    .await;
    visit(&app, &Expected { third_visit: "2" }).await;
}

#[actix_web::test]
async fn handlers_written_for_actix_session_run_on_ours_with_only_the_use_lines_changed() {
    use actix_kv_session::{compat, storage::MemoryStore, SessionMiddleware};
    use actix_web::middleware::from_fn;

    let store = MemoryStore::default();
    let app = test::init_service(
        App::new()
            .wrap(from_fn(compat::load_session))
            .wrap(SessionMiddleware::new(store.clone()))
            .configure(with_ours::routes),
    )
    .await;
    // `update` and `update_or` save here.
    visit(&app, &Expected { third_visit: "3" }).await;
}

#[actix_web::test]
async fn a_logged_out_cookie_replayed_finds_nothing() {
    use actix_kv_session::{compat, storage::MemoryStore, SessionMiddleware};
    use actix_web::middleware::from_fn;

    let app = test::init_service(
        App::new()
            .wrap(from_fn(compat::load_session))
            .wrap(SessionMiddleware::new(MemoryStore::default()))
            .configure(with_ours::routes),
    )
    .await;
    let mut browser = Browser::default();
    browser.send(&app, "POST", "/login").await;
    let stolen = browser.cookie.clone();
    browser.send(&app, "POST", "/logout").await;
    browser.cookie = stolen;
    assert_eq!(
        browser.send(&app, "GET", "/whoami").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn without_load_session_the_request_only_handlers_fail_loudly_and_change_nothing() {
    use actix_kv_session::{storage::MemoryStore, SessionMiddleware};

    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(MemoryStore::default()))
            .configure(with_ours::routes),
    )
    .await;
    let mut browser = Browser::default();
    assert_eq!(
        browser.send(&app, "POST", "/login").await.status,
        StatusCode::OK
    );
    // `req.get_session()` on a session nothing loaded: the read fails (500), it is not
    // taken for a logged-out user; the guard, which cannot fail, sees no user.
    assert_eq!(
        browser.send(&app, "GET", "/whoami").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        browser.send(&app, "GET", "/private").await.status,
        StatusCode::FORBIDDEN
    );
    // The handlers that extract the session are unaffected.
    assert_eq!(browser.send(&app, "GET", "/counter").await.body, "1");
}
