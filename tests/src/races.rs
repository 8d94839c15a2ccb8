//! Requests in flight while the session is renewed (a log-in) or purged (a log-out), over
//! real HTTP, seen as a browser sees them: every `Set-Cookie` applied to one cookie jar in
//! the order the responses arrive.

use std::{cell::RefCell, time::Duration};

use actix_kv_session::{
    storage::{ConflictPolicy, SessionStore},
    SessionId, SessionMiddleware, TtlExtension,
};
use actix_web::{cookie::Cookie, http::Method, http::StatusCode};
use futures_util::future::join_all;

use crate::{server::TestServer, session_cookie};

/// What a client saw of one response.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Which request this answers.
    pub label: String,
    /// The status.
    pub status: StatusCode,
    /// The body as text.
    pub body: String,
    /// The `session` Set-Cookie, if one was sent.
    pub cookie: Option<Cookie<'static>>,
}

/// Sends `method url` with the `session` cookie `id` over real HTTP.
pub async fn http(label: &str, method: Method, url: String, id: Option<SessionId>) -> HttpReply {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut req = client.request(method, url);
    if let Some(id) = id {
        req = req.insert_header(("cookie", format!("session={id}")));
    }
    let mut res = req.send().await.expect("request");
    let body = res.body().await.expect("body");
    HttpReply {
        label: label.to_owned(),
        status: res.status(),
        body: String::from_utf8_lossy(&body).into_owned(),
        cookie: session_cookie(res.headers()),
    }
}

/// The browser's cookie jar for the session cookie.
#[derive(Debug, Default)]
pub struct Jar(Option<String>);

impl Jar {
    /// A jar holding `id`.
    #[must_use]
    pub fn holding(id: SessionId) -> Self {
        Self(Some(id.to_string()))
    }

    /// Applies a response's `Set-Cookie`, as a browser does: a removal (empty value or
    /// Max-Age=0) forgets the cookie, anything else replaces it.
    pub fn apply(&mut self, reply: &HttpReply) {
        if let Some(cookie) = &reply.cookie {
            let removal = cookie.value().is_empty()
                || cookie.max_age() == Some(actix_web::cookie::time::Duration::ZERO);
            self.0 = (!removal).then(|| cookie.value().to_owned());
        }
    }

    /// The id the jar holds, if any.
    #[must_use]
    pub fn id(&self) -> Option<SessionId> {
        self.0.as_deref().and_then(SessionId::parse)
    }
}

fn json(value: &str) -> String {
    serde_json::to_string(value).unwrap()
}

/// Runs `requests` at once, recording each reply the moment it arrives.
async fn in_arrival_order(
    requests: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = HttpReply> + '_>>>,
) -> Vec<HttpReply> {
    let arrivals = RefCell::new(Vec::new());
    join_all(requests.into_iter().map(|request| {
        let arrivals = &arrivals;
        async move {
            let reply = request.await;
            arrivals.borrow_mut().push(reply);
        }
    }))
    .await;
    arrivals.into_inner()
}

/// `pairs` writers and `pairs` readers on session `old`, and `label`'s request to `path`
/// fired once they have all loaded the session: the browser's view of a page whose XHRs and
/// assets are still loading when the user logs in or out. Each reply as it arrives; the jar
/// updated from them in that order.
async fn with_requests_in_flight(
    site: &Site<'_>,
    old: SessionId,
    pairs: usize,
    (label, path): (&str, &str),
) -> (Vec<HttpReply>, Jar) {
    let mut requests: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = HttpReply>>>> =
        Vec::new();
    for i in 0..pairs {
        let url = site.url(&format!("/inflight/write/w{i}"));
        requests.push(Box::pin(http("writer", Method::POST, url, Some(old))));
        let url = site.url("/inflight/read");
        requests.push(Box::pin(http("reader", Method::GET, url, Some(old))));
    }
    let url = site.url(path);
    requests.push(Box::pin(async move {
        // Every in-flight request has loaded the session by now.
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
        http(label, Method::POST, url, Some(old)).await
    }));
    let replies = in_arrival_order(requests).await;
    let mut jar = Jar::holding(old);
    for reply in &replies {
        jar.apply(reply);
    }
    (replies, jar)
}

/// The middleware settings the race tests run under: both conflict policies, and both TTL
/// extension policies (under `OnEveryRequest` a read-only request would re-send its cookie).
fn settings() -> [(ConflictPolicy, TtlExtension); 4] {
    [
        (ConflictPolicy::LastWriteWins, TtlExtension::OnChange),
        (ConflictPolicy::Strict, TtlExtension::OnChange),
        (ConflictPolicy::LastWriteWins, TtlExtension::OnEveryRequest),
        (ConflictPolicy::Strict, TtlExtension::OnEveryRequest),
    ]
}

/// One server with the test routes under `/s0` ... `/s3`, one prefix per entry of
/// [`settings`]. One server for them all: its worker threads' runtimes, where the store
/// opens its connections, live as long as the test.
fn server<S: SessionStore + Clone>(store: &S) -> TestServer {
    let scopes = settings()
        .into_iter()
        .enumerate()
        .map(|(n, (policy, extension))| {
            let middleware = SessionMiddleware::builder(store.clone())
                .conflict_policy(policy)
                .ttl_extension(extension)
                .secure(false)
                .build();
            (format!("/s{n}"), middleware)
        })
        .collect();
    TestServer::start_scoped(scopes)
}

/// The URLs of one setting's routes.
struct Site<'a> {
    server: &'a TestServer,
    prefix: String,
}

impl Site<'_> {
    fn url(&self, path: &str) -> String {
        self.server.url(&format!("{}{path}", self.prefix))
    }
}

/// Each setting with the URLs of its routes.
fn sites(server: &TestServer) -> impl Iterator<Item = ((ConflictPolicy, TtlExtension), Site<'_>)> {
    settings().into_iter().enumerate().map(move |(n, setting)| {
        let site = Site {
            server,
            prefix: format!("/s{n}"),
        };
        (setting, site)
    })
}

/// A log-in (renew) while 12 writing and 12 read-only requests of the same session are in
/// flight: the browser ends up holding the new id, the renewed session holds exactly the
/// log-in's data, every in-flight writer gets 409 with nothing applied and no cookie, every
/// reader its normal answer and no cookie, and the old id is a new visitor afterwards.
pub async fn renew_with_requests_in_flight_keeps_the_user_logged_in<S: SessionStore + Clone>(
    store: S,
) {
    let server = server(&store);
    for (setting, server) in sites(&server) {
        let first = http("first", Method::GET, server.url("/counter"), None).await;
        let old = SessionId::parse(
            first
                .cookie
                .as_ref()
                .unwrap_or_else(|| panic!("{setting:?}: {first:?}"))
                .value(),
        )
        .unwrap();
        let (replies, jar) =
            with_requests_in_flight(&server, old, 12, ("login", "/login/ann")).await;

        let login = replies.iter().find(|r| r.label == "login").unwrap();
        assert_eq!(login.status, StatusCode::OK, "{setting:?}: {login:?}");
        let new = SessionId::parse(login.cookie.as_ref().expect("the new id").value()).unwrap();
        assert_ne!(new, old);
        assert_eq!(
            jar.id(),
            Some(new),
            "{setting:?}: the browser lost the new id; replies in arrival order: {replies:#?}"
        );
        for reply in replies.iter().filter(|r| r.label == "writer") {
            assert_eq!(
                (reply.status, reply.cookie.is_none()),
                (StatusCode::CONFLICT, true),
                "{setting:?}: an in-flight writer: {reply:?}"
            );
        }
        for reply in replies.iter().filter(|r| r.label == "reader") {
            assert_eq!(
                (reply.status, reply.body.as_str(), reply.cookie.is_none()),
                (StatusCode::OK, "1", true),
                "{setting:?}: an in-flight reader: {reply:?}"
            );
        }
        let renewed = store
            .load(&new)
            .await
            .unwrap()
            .expect("the renewed session");
        let expected = [
            ("foo".to_owned(), "1".to_owned()),
            ("user".to_owned(), json("ann")),
        ];
        assert_eq!(renewed, expected.into_iter().collect(), "{setting:?}");
        assert_eq!(store.load(&old).await.unwrap(), None, "{setting:?}");

        // A new request with the old id is a new visitor; the new id goes on counting.
        let stale = http("stale", Method::GET, server.url("/counter"), Some(old)).await;
        assert_eq!((stale.status, stale.body.as_str()), (StatusCode::OK, "1"));
        let fresh = SessionId::parse(stale.cookie.as_ref().unwrap().value()).unwrap();
        assert!(fresh != old && fresh != new);
        let next = http("next", Method::GET, server.url("/counter"), Some(new)).await;
        assert_eq!(next.body, "2", "{setting:?}");
    }
}

/// Two log-ins of one session at once: one renews (200, a new cookie), the other is told
/// the session moved (409, no cookie); the browser holds one working session.
pub async fn two_concurrent_renews_leave_one_working_session<S: SessionStore + Clone>(store: S) {
    let server = server(&store);
    for (setting, server) in sites(&server) {
        let first = http("first", Method::GET, server.url("/counter"), None).await;
        let old = SessionId::parse(first.cookie.as_ref().unwrap().value()).unwrap();
        let mut jar = Jar::holding(old);
        let replies = in_arrival_order(vec![
            Box::pin(http(
                "ann",
                Method::POST,
                server.url("/slow-login/ann"),
                Some(old),
            )),
            Box::pin(http(
                "bob",
                Method::POST,
                server.url("/slow-login/bob"),
                Some(old),
            )),
        ])
        .await;
        for reply in &replies {
            jar.apply(reply);
        }
        let mut statuses: Vec<_> = replies.iter().map(|r| r.status).collect();
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "{setting:?}: {replies:?}"
        );
        let winner = replies.iter().find(|r| r.status == StatusCode::OK).unwrap();
        let loser = replies.iter().find(|r| r.status != StatusCode::OK).unwrap();
        assert!(loser.cookie.is_none(), "{setting:?}: {loser:?}");
        let new = jar.id().expect("a session cookie");
        assert_eq!(
            winner.cookie.as_ref().map(Cookie::value),
            Some(new.as_str())
        );
        let record = store.load(&new).await.unwrap().unwrap();
        assert_eq!(record["user"], json(&winner.label), "{setting:?}");
        assert_eq!(record["foo"], "1");
        let next = http("next", Method::GET, server.url("/counter"), Some(new)).await;
        assert_eq!(next.body, "2", "{setting:?}");
    }
}

/// A log-out (purge) while writing and read-only requests are in flight: the session stays
/// deleted, the writers' changes are dropped, and none of them sends a cookie, so the
/// removal stands.
pub async fn purge_with_requests_in_flight_stays_final<S: SessionStore + Clone>(store: S) {
    let server = server(&store);
    for (setting, server) in sites(&server) {
        let first = http("first", Method::GET, server.url("/counter"), None).await;
        let old = SessionId::parse(first.cookie.as_ref().unwrap().value()).unwrap();
        let (replies, jar) = with_requests_in_flight(&server, old, 5, ("logout", "/purge")).await;
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::OK, "{setting:?}: {reply:?}");
            if reply.label != "logout" {
                assert!(reply.cookie.is_none(), "{setting:?}: {reply:?}");
            }
        }
        assert_eq!(jar.id(), None, "{setting:?}: the log-out was undone");
        assert_eq!(store.load(&old).await.unwrap(), None, "{setting:?}");
    }
}
