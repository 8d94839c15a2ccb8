//! The session middleware: reads the cookie, saves the changes, sets the cookie.

use std::{
    fmt,
    future::{ready, Future, Ready},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use actix_web::{
    body::{EitherBody, MessageBody},
    cookie::SameSite,
    dev::{Service, ServiceRequest, ServiceResponse, Transform},
    http::{
        header::{HeaderMap, HeaderValue, SET_COOKIE},
        StatusCode,
    },
    Error, ResponseError,
};
use futures_util::future::LocalBoxFuture;
use pin_project_lite::pin_project;
use tracing::Instrument as _;

use crate::{
    config::{SessionConfig, TtlExtension},
    cookie::{cookie_value, read_session_cookie, SetCookie},
    error::{opaque_response, FailureLog, SessionError, StoreError},
    import::ImportSession,
    lifetime,
    observe::{self, Op, StoreOp},
    plan::{CookieAction, CookieRule, Refusal, SavePlan, Write, Written},
    session::{CookieState, Ending, LoadSession},
    session_ext::{Entered, SessionSlot},
    signing::{SignedCookie, Signer, SigningKey},
    storage::{ChangeSet, ConflictPolicy, DynStore, KeyChange, SessionMap, SessionStore},
    users::{self, UserSession},
    SessionId,
};

/// Server-side sessions for an actix-web app: install it with [`App::wrap`].
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
/// use actix_web::{test, web, App};
///
/// async fn index(session: Session) -> actix_web::Result<String> {
///     let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
///     session.insert("foo", &count)?;
///     Ok(count.to_string())
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let store = MemoryStore::default();
/// let app = test::init_service(
///     App::new()
///         .wrap(SessionMiddleware::new(store.clone()))
///         .route("/", web::get().to(index)),
/// )
/// .await;
/// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
/// let cookie = res.response().cookies().next().unwrap().into_owned();
/// assert_eq!(cookie.name(), "session");
/// assert_eq!(test::read_body(res).await, "1");
///
/// let req = test::TestRequest::get().uri("/").cookie(cookie).to_request();
/// assert_eq!(test::call_and_read_body(&app, req).await, "2");
/// # });
/// ```
///
/// The middleware is cheap to clone: a built one can be cloned into every worker.
///
/// [`App::wrap`]: actix_web::App::wrap
pub struct SessionMiddleware<S = DynStore> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: S,
    config: SessionConfig,
    cookies: SetCookie,
    /// Store failures (unreachable, timed out), reported without flooding the log.
    failures: FailureLog,
    /// Records the store holds but cannot read, reported the same way.
    unreadable: FailureLog,
    /// Reads the sessions of the library the app moved from, if set.
    import: Option<Arc<dyn ImportSession>>,
}

impl<S> Clone for SessionMiddleware<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> fmt::Debug for SessionMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMiddleware")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl<S: SessionStore> SessionMiddleware<S> {
    /// Ends every session of `user` ("log out everywhere": after a password change, or
    /// from an admin page); returns how many ended. Sessions are bound to a user with
    /// [`Session::set_user`](crate::Session::set_user). Requests in flight on them cannot
    /// bring them back, and a log-in racing with the purge is caught by reading the user's
    /// index again.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store fails; some sessions may be ended already.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.renew()?;
    ///     session.set_user("alice")?;
    ///     Ok("welcome")
    /// }
    ///
    /// async fn whoami(session: Session) -> actix_web::Result<String> {
    ///     Ok(session.user()?.unwrap_or_else(|| "nobody".to_owned()))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::new(MemoryStore::default());
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(middleware.clone()) // the clone shares the store
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/whoami", web::get().to(whoami)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    ///
    /// // From an admin page, or after a password change.
    /// assert_eq!(middleware.purge_user("alice").await?, 1);
    /// let req = test::TestRequest::get().uri("/whoami").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "nobody");
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    pub async fn purge_user(&self, user: &str) -> Result<usize, StoreError> {
        users::purge(&self.inner.store, user, None).await
    }

    /// The live sessions of `user`, most recently seen first (see
    /// [`Session::user_sessions`](crate::Session::user_sessions)).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store fails.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.renew()?;
    ///     session.set_user("alice")?;
    ///     Ok("welcome")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::new(MemoryStore::default());
    /// let app = test::init_service(
    ///     App::new().wrap(middleware.clone()).route("/login", web::post().to(log_in)),
    /// )
    /// .await;
    /// for _ in 0..2 {
    ///     test::call_service(&app, test::TestRequest::post().uri("/login").to_request()).await;
    /// }
    ///
    /// // An admin page: alice's sessions, none of them the admin's own.
    /// let sessions = middleware.user_sessions("alice").await?;
    /// assert_eq!(sessions.len(), 2);
    /// assert!(sessions.iter().all(|session| !session.current && session.created.is_some()));
    /// assert!(middleware.user_sessions("bob").await?.is_empty());
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    pub async fn user_sessions(&self, user: &str) -> Result<Vec<UserSession>, StoreError> {
        users::list(&self.inner.store, user, None).await
    }

    /// The middleware with the default settings: cookie `session`, HttpOnly, Secure,
    /// SameSite=Lax, Path `/`, a 30-day TTL extended when the session changes, last write
    /// wins per key, a 2-second store timeout.
    ///
    /// ```
    /// use actix_web::cookie::{time, SameSite};
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::new(MemoryStore::default());
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// assert_eq!(cookie.name(), "session");
    /// assert_eq!(cookie.http_only(), Some(true));
    /// assert_eq!(cookie.secure(), Some(true));
    /// assert_eq!(cookie.same_site(), Some(SameSite::Lax));
    /// assert_eq!(cookie.path(), Some("/"));
    /// assert_eq!(cookie.max_age(), Some(time::Duration::days(30)));
    /// # });
    /// ```
    pub fn new(store: S) -> Self {
        Self::builder(store).build()
    }

    /// A builder, to change the settings.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .cookie_name("__Host-session")
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// assert_eq!(cookie.name(), "__Host-session");
    /// # });
    /// ```
    pub fn builder(store: S) -> SessionMiddlewareBuilder<S> {
        SessionMiddlewareBuilder {
            store,
            config: SessionConfig::default(),
            import: None,
        }
    }
}

/// Builds a [`SessionMiddleware`]; [`build`](Self::build) ends it.
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::{storage::MemoryStore, SessionMiddleware, TtlExtension};
/// use actix_web::{web, App, HttpServer};
///
/// let store = MemoryStore::default();
/// let middleware = SessionMiddleware::builder(store)
///     .cookie_name("__Host-session")
///     .ttl(Duration::from_secs(8 * 3600))
///     .ttl_extension(TtlExtension::OnEveryRequest)
///     .ttl_extension_interval(Duration::from_secs(48 * 60))
///     .absolute_timeout(Duration::from_secs(7 * 24 * 3600))
///     .build();
/// // Built once; each worker gets a clone.
/// let _server = HttpServer::new(move || {
///     App::new()
///         .wrap(middleware.clone())
///         .route("/", web::get().to(|| async { "hello" }))
/// });
/// ```
#[must_use]
pub struct SessionMiddlewareBuilder<S> {
    store: S,
    config: SessionConfig,
    import: Option<Arc<dyn ImportSession>>,
}

impl<S> fmt::Debug for SessionMiddlewareBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMiddlewareBuilder")
            .field("config", &self.config)
            .field("import", &self.import.as_ref().map(|i| i.cookie_name()))
            .finish_non_exhaustive()
    }
}

impl<S: SessionStore> SessionMiddlewareBuilder<S> {
    /// The cookie's name (default `session`, as in `sanic_session`).
    ///
    /// In production prefer `__Host-session`: browsers accept a cookie so named only if it is
    /// Secure, with Path=/ and no Domain, so a sibling subdomain cannot set one that shadows
    /// it (a browser sends the first of two cookies with one name, and the middleware reads
    /// the first). `__Secure-` asks for Secure only. [`build`](Self::build) checks both.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionMiddleware};
    ///
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .cookie_name("__Host-session")
    ///     .build();
    /// ```
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config.cookie_name = name.into();
        self
    }

    /// How long a session lives after its last save (default 30 days). It is also the
    /// cookie's Max-Age, unless [`browser_session`](Self::browser_session) is on.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_web::cookie::time;
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .ttl(Duration::from_secs(8 * 3600)) // a working day
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// assert_eq!(cookie.max_age(), Some(time::Duration::hours(8)));
    /// # });
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Send the cookie without Max-Age, so the browser drops it when it closes (default
    /// off). The stored session still expires after the TTL.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .browser_session(true)
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// assert_eq!(cookie.max_age(), None);
    /// # });
    /// ```
    pub fn browser_session(mut self, on: bool) -> Self {
        self.config.browser_session = on;
        self
    }

    /// HttpOnly on the cookie (default on): scripts in the page cannot read the id, so an
    /// XSS flaw cannot steal the session.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// // Only if a script of the page must read the id: it then can, and so can an XSS flaw.
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .http_only(false)
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// assert_eq!(cookie.http_only(), None); // no HttpOnly attribute
    /// # });
    /// ```
    pub fn http_only(mut self, on: bool) -> Self {
        self.config.http_only = on;
        self
    }

    /// Secure on the cookie (default on): the browser sends it only over HTTPS, so the id
    /// is not exposed on the network. Turn it off only for plain-HTTP development.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// // Plain-HTTP development only.
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .secure(false)
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// assert_eq!(cookie.secure(), None); // no Secure attribute
    /// # });
    /// ```
    pub fn secure(mut self, on: bool) -> Self {
        self.config.secure = on;
        self
    }

    /// SameSite on the cookie (default Lax): cross-site sub-requests and form posts do not
    /// carry the session, which blocks most cross-site request forgery.
    ///
    /// ```
    /// use actix_web::cookie::SameSite;
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// // Not even top-level navigations from other sites carry the session.
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .same_site(SameSite::Strict)
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// assert_eq!(cookie.same_site(), Some(SameSite::Strict));
    /// # });
    /// ```
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.config.same_site = same_site;
        self
    }

    /// Domain on the cookie (default none: only the host that set it gets it back).
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// // One session for shop.example.com and account.example.com.
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .domain("example.com")
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// assert_eq!(cookie.domain(), Some("example.com"));
    /// # });
    /// ```
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.config.domain = Some(domain.into());
        self
    }

    /// Path on the cookie (default `/`).
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// // An app mounted under /shop: the browser sends the cookie to /shop only.
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .path("/shop")
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// assert_eq!(cookie.path(), Some("/shop"));
    /// # });
    /// ```
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.config.path = path.into();
        self
    }

    /// When the TTL is extended (default [`TtlExtension::OnChange`]).
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware, TtlExtension};
    /// use actix_web::{test, web, App};
    ///
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("user", "ada")?;
    ///     Ok("welcome")
    /// }
    /// async fn read(session: Session) -> actix_web::Result<String> {
    ///     Ok(session.get::<String>("user")?.unwrap_or_default())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// // As `sanic_session`: a session ends one TTL after its last use, not its last change.
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .ttl_extension(TtlExtension::OnEveryRequest)
    ///     .build();
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(middleware)
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/", web::get().to(read)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    ///
    /// // A request that only reads extends the session, and sends the cookie again.
    /// let req = test::TestRequest::get().uri("/").cookie(cookie).to_request();
    /// let res = test::call_service(&app, req).await;
    /// assert_eq!(res.response().cookies().count(), 1);
    /// # });
    /// ```
    pub fn ttl_extension(mut self, policy: TtlExtension) -> Self {
        self.config.ttl_extension = policy;
        self
    }

    /// What happens when two requests change the same key (default
    /// [`ConflictPolicy::LastWriteWins`]).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{storage::{ConflictPolicy, MemoryStore}, Session, SessionMiddleware};
    /// use actix_web::{http::StatusCode, rt::time::sleep, test, web, App};
    ///
    /// async fn withdraw(session: Session, pause: web::Path<u64>) -> actix_web::Result<String> {
    ///     let balance = session.get::<u32>("balance")?.unwrap_or(100);
    ///     sleep(Duration::from_millis(*pause)).await; // another request saves meanwhile
    ///     session.insert("balance", balance - 10)?;
    ///     Ok((balance - 10).to_string())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .conflict_policy(ConflictPolicy::Strict)
    ///     .build();
    /// let app = test::init_service(
    ///     App::new().wrap(middleware).route("/withdraw/{pause}", web::post().to(withdraw)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/withdraw/0").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    ///
    /// // Two requests load balance 90; the slow one saves after the fast one.
    /// let slow = test::TestRequest::post().uri("/withdraw/50").cookie(cookie.clone());
    /// let fast = test::TestRequest::post().uri("/withdraw/0").cookie(cookie);
    /// let (slow, fast) = futures_util::future::join(
    ///     test::call_service(&app, slow.to_request()),
    ///     test::call_service(&app, fast.to_request()),
    /// )
    /// .await;
    /// assert_eq!(fast.status(), StatusCode::OK);
    /// // Its 80 would overwrite the fast one's: refused, nothing saved. The client may retry.
    /// assert_eq!(slow.status(), StatusCode::CONFLICT);
    /// # });
    /// ```
    pub fn conflict_policy(mut self, policy: ConflictPolicy) -> Self {
        self.config.conflict_policy = policy;
        self
    }

    /// Ends every session this long after it was created or last
    /// [renewed](crate::Session::renew), however active it is (default none: a session
    /// lives while it is used within its TTL, the idle timeout). The OWASP session guidance
    /// asks for both. A request on an older session is a new visitor's: the record is
    /// deleted and the cookie removed (or replaced, if the request stores something).
    ///
    /// The creation time is kept with the session (a bookkeeping key the app does not see)
    /// and read with it: the check costs no round-trip. A session stored before this was set
    /// gets its creation time at its next save.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_kv_session::{storage::MemoryStore, SessionMiddleware};
    ///
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .ttl(Duration::from_secs(30 * 60)) // idle timeout
    ///     .absolute_timeout(Duration::from_secs(12 * 3600))
    ///     .build();
    /// ```
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.config.absolute_timeout = Some(timeout);
        self
    }

    /// Under [`TtlExtension::OnEveryRequest`], extends a session's TTL at most once per
    /// `interval` (default: on every request). A request in between that only reads the
    /// session writes nothing to the store and sends no cookie; the cookie's Max-Age is
    /// renewed with each extension. A tenth of the TTL is a good choice: a session then
    /// lives between 90% and 100% of the TTL after its last use. The time of the last
    /// extension is kept with the session (a bookkeeping key the app does not see).
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_kv_session::{storage::MemoryStore, SessionMiddleware, TtlExtension};
    ///
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .ttl(Duration::from_secs(24 * 3600))
    ///     .ttl_extension(TtlExtension::OnEveryRequest)
    ///     .ttl_extension_interval(Duration::from_secs(144 * 60))
    ///     .build();
    /// ```
    pub fn ttl_extension_interval(mut self, interval: Duration) -> Self {
        self.config.extension_interval = Some(interval);
        self
    }

    /// Signs the session cookie (default: unsigned). The cookie then carries the id and an
    /// HMAC-SHA256 of it, `ID.SIGNATURE`; a cookie whose signature does not verify is a new
    /// visitor's, and its id never reaches the store.
    ///
    /// Ids are 122 random bits, so an unsigned cookie is not guessable either; signing adds
    /// that a forged or altered cookie costs no store lookup, and that an id that leaks
    /// without its signature (a log line, a store dump, a backup) cannot be used.
    ///
    /// Rotation: the first key signs, any of them verifies. To rotate, put the new key
    /// first and keep the old one after it while sessions signed with it may live; a cookie
    /// signed with an old key is signed again with the first on the next response that sets
    /// the cookie. Switching from unsigned to signed cookies ends every session.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionMiddleware, SigningKey};
    ///
    /// # let (new_secret, old_secret) = ([1u8; 32], [2u8; 32]);
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .signing_keys([
    ///         SigningKey::from_bytes(&new_secret)?,
    ///         SigningKey::from_bytes(&old_secret)?,
    ///     ])
    ///     .build();
    /// # Ok::<(), actix_kv_session::SigningKeyError>(())
    /// ```
    pub fn signing_keys(mut self, keys: impl IntoIterator<Item = SigningKey>) -> Self {
        self.config.signer = Signer::new(keys.into_iter().collect());
        self
    }

    /// The largest session a request may save, counted as its keys and their JSON values
    /// in bytes (default 1,000,000: under memcached's default 1 MiB item limit, and the
    /// memory store's own limit; Redis has no practical one below it, but sessions that
    /// large are read whole on every request). A request that would save a larger session
    /// answers 500, logs the size, the limit and the largest key, and the stored session
    /// stays as it was. `None` leaves the limit to the store.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionMiddleware};
    ///
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .max_session_bytes(Some(64 * 1024))
    ///     .max_value_bytes(Some(16 * 1024))
    ///     .build();
    /// ```
    pub fn max_session_bytes(mut self, limit: Option<usize>) -> Self {
        self.config.max_session_bytes = limit;
        self
    }

    /// The largest value, as JSON, that [`Session::insert`](crate::Session::insert) (or a
    /// [`Typed`](crate::Typed) write-back) accepts (default none: only the session's limit).
    /// A larger one is refused with [`SessionError::ValueTooLarge`] when it is inserted, so
    /// the handler can answer it; the session is left as it was.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionError, SessionMiddleware};
    /// use actix_web::{http::StatusCode, test, web, App, HttpResponse};
    ///
    /// async fn save_draft(session: Session, draft: String) -> actix_web::Result<HttpResponse> {
    ///     match session.insert("draft", draft) {
    ///         Ok(()) => Ok(HttpResponse::Ok().body("saved")),
    ///         Err(SessionError::ValueTooLarge { .. }) => {
    ///             Ok(HttpResponse::PayloadTooLarge().finish())
    ///         }
    ///         Err(err) => Err(err.into()),
    ///     }
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .max_value_bytes(Some(16 * 1024))
    ///     .build();
    /// let app = test::init_service(
    ///     App::new().wrap(middleware).route("/draft", web::post().to(save_draft)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/draft").set_payload("a short note").to_request();
    /// assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    /// let too_long = "a".repeat(20_000);
    /// let req = test::TestRequest::post().uri("/draft").set_payload(too_long).to_request();
    /// assert_eq!(test::call_service(&app, req).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    /// # });
    /// ```
    pub fn max_value_bytes(mut self, limit: Option<usize>) -> Self {
        self.config.max_value_bytes = limit;
        self
    }

    /// How long one store operation may take before the request gets a 503 (default 2 s).
    ///
    /// A 503 from a save means "outcome unknown": the store may have applied it before its
    /// answer was lost, so saves are never retried. Loads, TTL extensions and deletes, which
    /// can safely run twice, are retried once by the bundled stores when their connection
    /// broke.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// use actix_kv_session::{Session, SessionMiddleware};
    /// use actix_web::{http::StatusCode, test, web, App};
    /// # use std::future::pending;
    /// # use actix_kv_session::{
    /// #     storage::{ChangeSet, SaveOutcome, SessionMap, SessionStore},
    /// #     SessionId, StoreError,
    /// # };
    /// # /// A store that never answers, as one behind a dead network link.
    /// # struct Stalled;
    /// # type Answer<T> = Result<T, StoreError>;
    /// # impl SessionStore for Stalled {
    /// #     async fn load(&self, _: &SessionId) -> Answer<Option<SessionMap>> {
    /// #         pending().await
    /// #     }
    /// #     async fn create(&self, _: &SessionId, _: &SessionMap, _: Duration) -> Answer<()> {
    /// #         pending().await
    /// #     }
    /// #     async fn update(&self, _: &SessionId, _: &ChangeSet) -> Answer<SaveOutcome> {
    /// #         pending().await
    /// #     }
    /// #     async fn renew(
    /// #         &self, _: &SessionId, _: &SessionId, _: &ChangeSet,
    /// #     ) -> Answer<SaveOutcome> {
    /// #         pending().await
    /// #     }
    /// #     async fn touch(&self, _: &SessionId, _: Duration) -> Answer<bool> {
    /// #         pending().await
    /// #     }
    /// #     async fn delete(&self, _: &SessionId) -> Answer<()> {
    /// #         pending().await
    /// #     }
    /// # }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(Stalled)
    ///     .store_timeout(Duration::from_millis(100))
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route(
    ///     "/",
    ///     web::get().to(|session: Session| async move { session.insert("user", "ada") }),
    /// ))
    /// .await;
    /// let started = Instant::now();
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// assert!(started.elapsed() < Duration::from_secs(1));
    /// # });
    /// ```
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// Takes over the sessions of the library the app moved from: a request that carries
    /// its cookie and no session of ours gets the old session's keys as a new session of
    /// ours, under a fresh id, and the old cookie is removed (see [`ImportSession`]).
    /// [`compat::ActixSessionImport`](crate::compat::ActixSessionImport) reads
    /// actix-session's.
    ///
    /// ```
    /// # use actix_kv_session::{storage::{MemoryStore, SessionMap}, ImportSession, StoreError};
    /// # use futures_util::future::LocalBoxFuture;
    /// # struct OldSessions;
    /// # impl ImportSession for OldSessions {
    /// #     fn cookie_name(&self) -> &str { "id" }
    /// #     fn import<'a>(&'a self, _: &'a str)
    /// #         -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
    /// #         Box::pin(async { Ok(None) })
    /// #     }
    /// # }
    /// use actix_kv_session::SessionMiddleware;
    ///
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .import_sessions(OldSessions)
    ///     .build();
    /// ```
    pub fn import_sessions(mut self, import: impl ImportSession) -> Self {
        self.import = Some(Arc::new(import));
        self
    }

    /// Builds the middleware.
    ///
    /// # Panics
    ///
    /// On settings that would produce a cookie browsers reject or a session the stores
    /// cannot keep, with a message naming the setting: a cookie name that is not an RFC 6265
    /// token, an empty or `;`-bearing path or domain, a TTL under one second or over a
    /// century, a zero store timeout or absolute timeout, SameSite=None without Secure, a
    /// `__Secure-` name without Secure, or a `__Host-` name without Secure, with a Domain or
    /// with a Path other than `/`. These are programming errors, caught at start-up, never
    /// per request.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionMiddleware};
    /// use actix_web::cookie::SameSite;
    ///
    /// let middleware = SessionMiddleware::builder(MemoryStore::default()).build();
    ///
    /// // Browsers drop a SameSite=None cookie without Secure: refused at start-up.
    /// let refused = std::panic::catch_unwind(|| {
    ///     SessionMiddleware::builder(MemoryStore::default())
    ///         .same_site(SameSite::None)
    ///         .secure(false)
    ///         .build()
    /// });
    /// assert!(refused.is_err());
    /// ```
    pub fn build(self) -> SessionMiddleware<S> {
        let cookies = self
            .config
            .validate()
            .and_then(|()| SetCookie::new(&self.config))
            .unwrap_or_else(|message| panic!("SessionMiddleware: {message}"));
        SessionMiddleware {
            inner: Arc::new(Inner {
                cookies,
                store: self.store,
                config: self.config,
                failures: FailureLog::new("session store failure"),
                unreadable: FailureLog::new(
                    "a stored session cannot be read; its id is treated as unknown",
                ),
                import: self.import,
            }),
        }
    }
}

impl<S, B, Svc> Transform<Svc, ServiceRequest> for SessionMiddleware<S>
where
    S: SessionStore,
    Svc: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = SessionService<Svc, S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: Svc) -> Self::Future {
        let loader: Arc<dyn LoadSession> = self.inner.clone();
        ready(Ok(SessionService {
            service: Rc::new(service),
            inner: Arc::clone(&self.inner),
            loader,
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around the app's.
///
/// An app never names it: [`App::wrap`](actix_web::App::wrap) makes it. A service of your
/// own, outside an `App`, gets it from the middleware as from any [`Transform`]:
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, SessionExt, SessionMiddleware};
/// use actix_web::{
///     dev::{fn_service, Service, ServiceRequest, Transform},
///     test, HttpResponse,
/// };
///
/// # actix_web::rt::System::new().block_on(async {
/// let counter = fn_service(|req: ServiceRequest| async move {
///     let session = req.get_session();
///     session.load().await?;
///     let n = session.get::<u32>("n")?.unwrap_or(0) + 1;
///     session.insert("n", n)?;
///     Ok(req.into_response(HttpResponse::Ok().body(n.to_string())))
/// });
/// let service = SessionMiddleware::new(MemoryStore::default())
///     .new_transform(counter)
///     .await
///     .unwrap();
/// let res = service.call(test::TestRequest::default().to_srv_request()).await.unwrap();
/// assert_eq!(res.response().cookies().count(), 1);
/// # });
/// ```
pub struct SessionService<Svc, S> {
    service: Rc<Svc>,
    inner: Arc<Inner<S>>,
    /// The middleware's state, as the sessions it makes see it (see [`SessionSlot`]).
    loader: Arc<dyn LoadSession>,
}

impl<Svc, S> fmt::Debug for SessionService<Svc, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S, B, Svc> Service<ServiceRequest> for SessionService<Svc, S>
where
    S: SessionStore,
    Svc: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = SessionFuture<Svc::Future, S, B>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let entered = SessionSlot::enter(&req, &self.loader);
        SessionFuture {
            entered,
            stage: Stage::Handler {
                response: self.service.call(req),
            },
            inner: Arc::clone(&self.inner),
        }
    }
}

pin_project! {
    /// The response future of [`SessionService`]: the app's response, then, only if the
    /// request used its session, the save.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionFuture, SessionMiddleware};
    /// use actix_web::{
    ///     dev::{Service, Transform},
    ///     test,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let service = SessionMiddleware::new(MemoryStore::default())
    ///     .new_transform(test::ok_service())
    ///     .await
    ///     .unwrap();
    /// let req = test::TestRequest::default().to_srv_request();
    /// let future: SessionFuture<_, _, _> = service.call(req);
    /// let res = future.await.unwrap();
    /// // The app's answer; no cookie, since nothing used the session.
    /// assert!(res.status().is_success());
    /// assert_eq!(res.response().cookies().count(), 0);
    /// # });
    /// ```
    pub struct SessionFuture<Fut, S, B> {
        #[pin]
        stage: Stage<Fut, B>,
        entered: Entered,
        inner: Arc<Inner<S>>,
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<Fut, B> {
        Handler { #[pin] response: Fut },
        Saving { save: LocalBoxFuture<'static, ServiceResponse<EitherBody<B>>> },
    }
}

impl<Fut, S, B> fmt::Debug for SessionFuture<Fut, S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionFuture").finish_non_exhaustive()
    }
}

impl<Fut, S, B> Future for SessionFuture<Fut, S, B>
where
    Fut: Future<Output = Result<ServiceResponse<B>, Error>>,
    S: SessionStore,
    B: MessageBody + 'static,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.stage.as_mut().project() {
                StageProj::Handler { response } => {
                    let res = ready!(response.poll(cx))?;
                    let session = match this.entered {
                        // The same middleware, wrapped further out, ends the session.
                        Entered::Outer => None,
                        Entered::Own => {
                            let own = Arc::as_ptr(this.inner).cast::<()>();
                            SessionSlot::leave(res.request(), own)
                        }
                    };
                    let Some(session) = session else {
                        // The session was never made: nothing to save, nothing to allocate.
                        return Poll::Ready(Ok(res.map_into_left_body()));
                    };
                    let ending = session.end(&this.inner.config);
                    if let Ending::Unused = ending {
                        // Made, never loaded: nothing to save either.
                        return Poll::Ready(Ok(res.map_into_left_body()));
                    }
                    let inner = Arc::clone(this.inner);
                    let legacy = match &this.inner.import {
                        Some(_) => session.take_legacy(),
                        None => None,
                    };
                    let span = session.take_span();
                    // The common case, nobody listening and nothing imported: only the store's
                    // part is a future.
                    let save: LocalBoxFuture<'static, _> = match (legacy, span) {
                        (None, None) => match inner.settle(ending, res) {
                            Settled::Done(res) => return Poll::Ready(Ok(res)),
                            Settled::Save(reply, work, res) => inner.save(reply, work, res),
                        },
                        (legacy, span) => Box::pin(
                            async move {
                                let mut res = match inner.settle(ending, res) {
                                    Settled::Done(res) => res,
                                    Settled::Save(reply, work, res) => {
                                        Arc::clone(&inner).save(reply, work, res).await
                                    }
                                };
                                // An import's save fails only with a 5xx (a create cannot
                                // conflict): otherwise the session is ours now.
                                if let Some(legacy) = legacy {
                                    if !res.status().is_server_error() {
                                        inner.retire(&legacy, &mut res).await;
                                    }
                                }
                                tracing::Span::current().record("status", res.status().as_u16());
                                res
                            }
                            .instrument(span.unwrap_or_else(tracing::Span::none)),
                        ),
                    };
                    this.stage.set(Stage::Saving { save });
                }
                StageProj::Saving { save } => return save.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

impl<S: SessionStore> LoadSession for Inner<S> {
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
        Box::pin(async move {
            match self.timed(Op::Load, self.store.load(id)).await {
                // What the store holds cannot be read: the id is unknown, the request gets
                // a fresh session, and the record is left as it is (a purge still deletes it).
                Err(err @ StoreError::Corrupt(_)) => {
                    self.unreadable.failure(&err);
                    observe::loaded(false);
                    Ok(None)
                }
                Err(err) => {
                    self.failures.failure(&err);
                    Err(err)
                }
                Ok(record) => {
                    observe::loaded(record.is_some());
                    Ok(record)
                }
            }
        })
    }

    fn read_cookies(&self, headers: &HeaderMap) -> (CookieState, Option<Box<str>>) {
        let config = &self.config;
        let cookie = read_session_cookie(headers, &config.cookie_name, config.signer.as_ref());
        let legacy = match (&self.import, cookie) {
            (Some(import), CookieState::Absent | CookieState::Invalid) => {
                cookie_value(headers, import.cookie_name())
            }
            _ => None,
        };
        (
            cookie,
            legacy.map(|value| Box::from(String::from_utf8_lossy(value))),
        )
    }

    fn absolute_timeout(&self) -> Option<Duration> {
        self.config.absolute_timeout
    }

    fn verify(&self, cookie: &SignedCookie) -> Option<usize> {
        self.config.signer.as_ref()?.verify(cookie)
    }

    fn max_value_bytes(&self) -> Option<usize> {
        self.config.max_value_bytes
    }

    fn max_session_bytes(&self) -> Option<usize> {
        self.config.max_session_bytes
    }

    fn user_sessions<'a>(
        &'a self,
        user: &'a str,
        current: Option<&'a SessionId>,
    ) -> LocalBoxFuture<'a, Result<Vec<UserSession>, StoreError>> {
        Box::pin(users::list(&self.store, user, current))
    }

    fn purge_user<'a>(
        &'a self,
        user: &'a str,
        except: Option<&'a SessionId>,
    ) -> LocalBoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(users::purge(&self.store, user, except))
    }

    fn import<'a>(
        &'a self,
        cookie: &'a str,
    ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
        Box::pin(async move {
            match &self.import {
                Some(import) => match self.timed(Op::Import, import.import(cookie)).await {
                    Ok(imported) => Ok(imported),
                    // An old record that cannot be read: as for our own, a new visitor.
                    Err(err @ StoreError::Corrupt(_)) => {
                        self.unreadable.failure(&err);
                        Ok(None)
                    }
                    Err(err) => {
                        self.failures.failure(&err);
                        Err(err)
                    }
                },
                None => Ok(None),
            }
        })
    }
}

impl<S: SessionStore> Inner<S> {
    async fn timed<T>(
        &self,
        kind: Op,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let watch = StoreOp::start(kind);
        let mut op = std::pin::pin!(observe::in_span(watch.as_ref().map(StoreOp::span), op));
        // A store that answers at once (memory) needs no timer: arm one only if it waits.
        let first = std::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx))).await;
        let result = match first {
            Poll::Ready(result) => result,
            Poll::Pending => {
                let limit = self.config.store_timeout;
                tokio::time::timeout(limit, op)
                    .await
                    .unwrap_or(Err(StoreError::TimedOut(limit)))
            }
        };
        if result.is_ok() {
            self.failures.success();
        }
        if let Some(watch) = watch {
            watch.end(&result);
        }
        result
    }

    /// The response, if the request's end needs no store: a server error, a session
    /// failure, or nothing to write (a request that only read); otherwise the store's work
    /// first. A read-only request so answered makes no future: 606 instructions less on the
    /// memory store's `/read` than with an empty save (callgrind, `bench/callgrind.py`:
    /// 27,811 to 27,205).
    fn settle<B>(&self, ending: Ending, res: ServiceResponse<B>) -> Settled<B> {
        if res.status().is_server_error() {
            // The handler failed: whatever it changed is not to be trusted.
            return Settled::Done(res.map_into_left_body());
        }
        match ending {
            Ending::Unused => Settled::Done(res.map_into_left_body()),
            Ending::Failed(status) => {
                // The session could not be loaded or written back: whatever the handler
                // answered was built on a session it did not have.
                tracing::debug!(%status, "session failure overrides the handler's response");
                Settled::Done(replace(res, status))
            }
            Ending::Save(plan) => match self.split(plan) {
                // Nothing to write (a request that only read): no store, no future.
                (reply, None) => Settled::Done(self.reply(&reply, Ok(Written::Nothing), res)),
                (reply, Some(work)) => Settled::Save(reply, work, res),
            },
        }
    }

    /// A plan taken apart: what the response needs, and the store's work, if there is any.
    fn split(&self, plan: SavePlan) -> (Reply, Option<Work>) {
        let SavePlan {
            delete,
            write,
            cookie,
            ttl,
            browser_session,
            index_user,
            current_signature,
        } = plan;
        let own_cookie = (ttl.is_some() || browser_session.is_some()).then(|| {
            (
                ttl.unwrap_or(self.config.ttl),
                browser_session.unwrap_or(self.config.browser_session),
            )
        });
        let reply = Reply {
            rule: cookie,
            current: current_signature,
            own_cookie,
            browser_session: own_cookie.map_or(self.config.browser_session, |(_, b)| b),
        };
        let ttl = ttl.unwrap_or(self.config.ttl);
        let change_set =
            |changes: Vec<KeyChange>| ChangeSet::new(changes, self.config.conflict_policy, ttl);
        let job = match write {
            Write::Nothing if delete.is_none() => return (reply, None),
            Write::Nothing => Job::Nothing,
            Write::Touch(id) => Job::Touch(id),
            Write::Create(data) => Job::Create(data),
            Write::Update(id, changes) => Job::Update(id, change_set(changes)),
            Write::Renew(id, changes) => Job::Renew(id, change_set(changes)),
        };
        let work = Work {
            delete,
            job,
            index_user,
            ttl,
        };
        (reply, Some(work))
    }

    /// Saves what the request changed and fixes up the response.
    ///
    /// The plan was taken apart before the future is made ([`split`](Self::split)), and the
    /// store's part borrows it: that keeps the future, which is boxed, under the 1,032 bytes
    /// that glibc's malloc serves from its per-thread cache (920 bytes on x86-64). Holding the
    /// plan whole, again in each nested future, made it 1,584 bytes, served by malloc's slow
    /// path: about 430 instructions more on the memory store's `/counter` (callgrind,
    /// `bench/callgrind.py`: 32,662, then 32,161 split with the store's timer boxed as well,
    /// which alone was worth 69 and is not boxed).
    fn save<B: 'static>(
        self: Arc<Self>,
        reply: Reply,
        work: Work,
        res: ServiceResponse<B>,
    ) -> LocalBoxFuture<'static, ServiceResponse<EitherBody<B>>> {
        Box::pin(async move {
            let written = self.execute(&work).await;
            self.reply(&reply, written, res)
        })
    }

    /// The response once the store answered the save.
    fn reply<B>(
        &self,
        reply: &Reply,
        written: Result<Written, StoreError>,
        mut res: ServiceResponse<B>,
    ) -> ServiceResponse<EitherBody<B>> {
        let written = match written {
            Ok(written) => written,
            Err(err) => {
                // A save that failed may still have been applied (the answer was lost):
                // the 503 means "outcome unknown", and nothing is retried.
                self.failures.failure(&err);
                return replace(res, SessionError::Store(err).status_code());
            }
        };
        observe::saved(&written);
        let action = match reply.rule.apply(written, reply.browser_session) {
            Ok(action) => action,
            Err(refusal) => {
                match refusal {
                    Refusal::Conflict => tracing::debug!(
                        "session save refused: a changed key was changed by another request"
                    ),
                    Refusal::Moved => tracing::debug!(
                        "session save refused: the session moved to a new id (renewed) since \
                         this request loaded it"
                    ),
                }
                observe::refused();
                return replace(res, StatusCode::CONFLICT);
            }
        };
        let current = reply.current.as_deref();
        let header = match action {
            CookieAction::Keep => return res.map_into_left_body(),
            // A session with its own TTL or cookie kind ("remember me"): rendered for it.
            CookieAction::Set(id) => match reply.own_cookie {
                None => self.cookies.set(&id, current),
                Some((ttl, browser_session)) => HeaderValue::try_from(
                    self.config
                        .cookie_with(self.cookies.value(&id, current), ttl, browser_session)
                        .to_string(),
                ),
            },
            CookieAction::Remove => Ok(self.cookies.removal()),
        };
        match header {
            Ok(header) => {
                res.headers_mut().append(SET_COOKIE, header);
                res.map_into_left_body()
            }
            // The template was checked when the middleware was built, and ids are hex. Should
            // it ever fail, the request fails loudly rather than without its cookie.
            Err(err) => {
                crate::error::log_error(&err);
                replace(res, StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// After a save that took over (or found nothing under) another library's cookie:
    /// forgets its session and removes its cookie, unless the response sets ours under the
    /// same name (which replaces it).
    async fn retire<B>(&self, legacy: &str, res: &mut ServiceResponse<B>) {
        let Some(import) = &self.import else {
            return;
        };
        if let Err(err) = self.timed(Op::Forget, import.forget(legacy)).await {
            crate::error::log_error(&err);
        }
        let name = import.cookie_name();
        // Under our cookie's name, a response that sets ours replaces it.
        let replaced = name == self.config.cookie_name
            && res.headers().get_all(SET_COOKIE).any(|set| {
                set.as_bytes()
                    .strip_prefix(name.as_bytes())
                    .is_some_and(|rest| rest.starts_with(b"="))
            });
        if !replaced {
            match HeaderValue::try_from(import.removal_cookie().to_string()) {
                Ok(removal) => {
                    res.headers_mut().append(SET_COOKIE, removal);
                }
                Err(err) => crate::error::log_error(&err),
            }
        }
    }

    /// Runs the plan's delete and write.
    async fn execute(&self, work: &Work) -> Result<Written, StoreError> {
        let ttl = work.ttl;
        if let Some(old) = &work.delete {
            self.timed(Op::Delete, self.store.delete(old)).await?;
        }
        // A session bound to a user is named in the user's index before it is written
        // under an id, so that "log out everywhere" always finds it.
        // Only for a bound session, and boxed: the index's futures are large. Inline and
        // awaited on every save, they cost the memory store's `/counter` (which binds no
        // user) 491 instructions (callgrind, 32,627 -> 33,118); this way, 264 (32,891), the
        // rest being the plan's larger record.
        let index = |id: SessionId| -> Option<LocalBoxFuture<'_, Result<(), StoreError>>> {
            let user = work.index_user.as_deref()?;
            Some(Box::pin(async move {
                self.timed(
                    Op::Index,
                    users::add(&self.store, user, &id, ttl, lifetime::now()),
                )
                .await
            }))
        };
        Ok(match &work.job {
            Job::Nothing => Written::Nothing,
            // The request has its session already: a failed extension is logged, and the
            // response goes out without a cookie rather than as a 503.
            Job::Touch(id) => match self.timed(Op::Touch, self.store.touch(id, ttl)).await {
                Ok(alive) => Written::Touched(*id, alive),
                Err(err) => {
                    self.failures.failure(&err);
                    Written::Touched(*id, false)
                }
            },
            Job::Create(data) => {
                let new = SessionId::generate();
                if let Some(index) = index(new) {
                    index.await?;
                }
                self.timed(Op::Create, self.store.create(&new, data, ttl))
                    .await?;
                Written::Created(new)
            }
            Job::Update(id, changes) => {
                if let Some(index) = index(*id) {
                    index.await?;
                }
                Written::Updated(
                    *id,
                    self.timed(Op::Update, self.store.update(id, changes))
                        .await?,
                )
            }
            Job::Renew(id, changes) => {
                let new = SessionId::generate();
                if let Some(index) = index(new) {
                    index.await?;
                }
                // The old id stays in the user's index: it holds the moved marker now, which
                // a listing skips and a purge passes over, and it leaves the index when its
                // end passes (pruned by a later log-in). Removing it here would cost two more
                // round-trips on every log-in of a bound session.
                let outcome = self
                    .timed(Op::Renew, self.store.renew(id, &new, changes))
                    .await?;
                Written::Renewed(new, outcome)
            }
        })
    }
}

/// The store's part of a [`SavePlan`], its change set made: the save's future holds it
/// once, and the store's calls borrow it.
struct Work {
    /// A record to delete first: the session was purged.
    delete: Option<SessionId>,
    job: Job,
    /// The user whose index must name the session before it is written.
    index_user: Option<String>,
    ttl: Duration,
}

/// The write of a [`Work`].
enum Job {
    Nothing,
    Touch(SessionId),
    Create(SessionMap),
    Update(SessionId, ChangeSet),
    Renew(SessionId, ChangeSet),
}

/// What the response needs of a [`SavePlan`] once the store answered.
struct Reply {
    rule: CookieRule,
    /// The request's signed cookie, verified with the signing key: set again as it is.
    current: Option<Box<SignedCookie>>,
    /// The session's own TTL and cookie kind, if it has either.
    own_cookie: Option<(Duration, bool)>,
    /// The cookie has no Max-Age.
    browser_session: bool,
}

/// What [`Inner::settle`] found.
enum Settled<B> {
    Done(ServiceResponse<EitherBody<B>>),
    Save(Reply, Work, ServiceResponse<B>),
}

fn replace<B>(res: ServiceResponse<B>, status: StatusCode) -> ServiceResponse<EitherBody<B>> {
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, opaque_response(status)).map_into_right_body()
}

#[cfg(test)]
mod tests {
    use actix_web::{test, HttpResponse};

    use super::*;
    use crate::{plan::Ended, storage::MemoryStore};

    fn response() -> ServiceResponse {
        test::TestRequest::default()
            .to_srv_request()
            .into_response(HttpResponse::Ok().finish())
    }

    fn update() -> Ending {
        Ending::Save(SavePlan::new(Ended {
            record: Some(SessionId::generate()),
            changes: vec![KeyChange::new(
                "a".into(),
                Some("2".into()),
                Some("1".into()),
            )],
            had_cookie: true,
            ..Ended::default()
        }))
    }

    #[actix_web::test]
    async fn a_save_s_future_fits_in_malloc_s_per_thread_cache() {
        let inner = Arc::clone(&SessionMiddleware::new(MemoryStore::default()).inner);
        let Settled::Save(reply, work, res) = inner.settle(update(), response()) else {
            panic!("an update goes to the store");
        };
        let save = Arc::clone(&inner).save(reply, work, res);
        let size = std::mem::size_of_val(&*save);
        assert!(size <= 1032, "the save's future is {size} bytes");
        // The session is not in the store: nothing saved, no cookie.
        let res = save.await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get(SET_COOKIE).is_none());
    }

    #[actix_web::test]
    async fn a_request_with_nothing_to_write_answers_without_a_future() {
        let inner = Arc::clone(&SessionMiddleware::new(MemoryStore::default()).inner);
        let read_only = Ending::Save(SavePlan::new(Ended {
            record: Some(SessionId::generate()),
            had_cookie: true,
            ..Ended::default()
        }));
        let Settled::Done(res) = inner.settle(read_only, response()) else {
            panic!("a read-only request has nothing to save");
        };
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get(SET_COOKIE).is_none());
        // A purge with nothing to write still deletes.
        let purge = Ending::Save(SavePlan::new(Ended {
            purged: true,
            purge: Some(SessionId::generate()),
            had_cookie: true,
            ..Ended::default()
        }));
        assert!(matches!(inner.settle(purge, response()), Settled::Save(..)));
    }
}
