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
        header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE},
        StatusCode,
    },
    Error, HttpMessage, ResponseError,
};
use futures_util::future::LocalBoxFuture;
use pin_project_lite::pin_project;

use crate::{
    config::{SessionConfig, TtlExtension},
    error::{opaque_response, FailureLog, SessionError, StoreError},
    plan::{CookieAction, Refusal, SavePlan, Write, Written},
    session::{CookieState, LoadSession, Loaded},
    storage::{
        ChangeSet, ConflictPolicy, KeyChange, SaveMode, SaveOutcome, SessionMap, SessionStore,
    },
    Session, SessionId,
};

/// How many fresh ids a save tries before it gives up on a taken one. A collision of two
/// random 122-bit ids does not happen in practice; the bound only keeps a broken store from
/// looping forever.
const ID_ATTEMPTS: usize = 3;

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
pub struct SessionMiddleware<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: S,
    config: SessionConfig,
    cookies: CookieHeaders,
    /// Store failures (unreachable, timed out), reported without flooding the log.
    failures: FailureLog,
    /// Records the store holds but cannot read, reported the same way.
    unreadable: FailureLog,
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
    /// The middleware with the default settings: cookie `session`, HttpOnly, Secure,
    /// SameSite=Lax, Path `/`, a 30-day TTL extended when the session changes, last write
    /// wins per key, a 2-second store timeout.
    pub fn new(store: S) -> Self {
        Self::builder(store).build()
    }

    /// A builder, to change the settings.
    pub fn builder(store: S) -> SessionMiddlewareBuilder<S> {
        SessionMiddlewareBuilder {
            store,
            config: SessionConfig::default(),
        }
    }
}

/// Builds a [`SessionMiddleware`]; [`build`](Self::build) ends it.
#[must_use]
pub struct SessionMiddlewareBuilder<S> {
    store: S,
    config: SessionConfig,
}

impl<S> fmt::Debug for SessionMiddlewareBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMiddlewareBuilder")
            .field("config", &self.config)
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
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Send the cookie without Max-Age, so the browser drops it when it closes (default
    /// off). The stored session still expires after the TTL.
    pub fn browser_session(mut self, on: bool) -> Self {
        self.config.browser_session = on;
        self
    }

    /// HttpOnly on the cookie (default on): scripts in the page cannot read the id, so an
    /// XSS flaw cannot steal the session.
    pub fn http_only(mut self, on: bool) -> Self {
        self.config.http_only = on;
        self
    }

    /// Secure on the cookie (default on): the browser sends it only over HTTPS, so the id
    /// is not exposed on the network. Turn it off only for plain-HTTP development.
    pub fn secure(mut self, on: bool) -> Self {
        self.config.secure = on;
        self
    }

    /// SameSite on the cookie (default Lax): cross-site sub-requests and form posts do not
    /// carry the session, which blocks most cross-site request forgery.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.config.same_site = same_site;
        self
    }

    /// Domain on the cookie (default none: only the host that set it gets it back).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.config.domain = Some(domain.into());
        self
    }

    /// Path on the cookie (default `/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.config.path = path.into();
        self
    }

    /// When the TTL is extended (default [`TtlExtension::OnChange`]).
    pub fn ttl_extension(mut self, policy: TtlExtension) -> Self {
        self.config.ttl_extension = policy;
        self
    }

    /// What happens when two requests change the same key (default
    /// [`ConflictPolicy::LastWriteWins`]).
    pub fn conflict_policy(mut self, policy: ConflictPolicy) -> Self {
        self.config.conflict_policy = policy;
        self
    }

    /// How long one store operation may take before the request gets a 503 (default 2 s).
    ///
    /// A 503 from a save means "outcome unknown": the store may have applied it before its
    /// answer was lost, so saves are never retried. Loads, TTL extensions and deletes, which
    /// can safely run twice, are retried once by the bundled stores when their connection
    /// broke.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// Builds the middleware.
    ///
    /// # Panics
    ///
    /// On settings that would produce a cookie browsers reject, with a message naming the
    /// setting: a cookie name that is not an RFC 6265 token, an empty or `;`-bearing path or
    /// domain, a TTL under one second, a zero store timeout, SameSite=None without Secure,
    /// a `__Secure-` name without Secure, or a `__Host-` name without Secure, with a Domain
    /// or with a Path other than `/`. These are programming errors, caught at start-up,
    /// never per request.
    pub fn build(self) -> SessionMiddleware<S> {
        if let Err(message) = self.config.validate() {
            panic!("SessionMiddleware: {message}");
        }
        SessionMiddleware {
            inner: Arc::new(Inner {
                cookies: CookieHeaders::new(&self.config),
                store: self.store,
                config: self.config,
                failures: FailureLog::new("session store failure"),
                unreadable: FailureLog::new(
                    "a stored session cannot be read; its id is treated as unknown",
                ),
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
        ready(Ok(SessionService {
            service: Rc::new(service),
            inner: Arc::clone(&self.inner),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around the app's.
pub struct SessionService<Svc, S> {
    service: Rc<Svc>,
    inner: Arc<Inner<S>>,
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
        let cookie = read_cookie(req.headers(), &self.inner.config.cookie_name);
        let loader: Arc<dyn LoadSession> = self.inner.clone();
        let session = Session::new(cookie, loader);
        req.extensions_mut().insert(session.clone());
        SessionFuture {
            stage: Stage::Handler {
                response: self.service.call(req),
            },
            session,
            inner: Arc::clone(&self.inner),
        }
    }
}

pin_project! {
    /// The response future of [`SessionService`]: the app's response, then, only if the
    /// request used its session, the save.
    pub struct SessionFuture<Fut, S, B> {
        #[pin]
        stage: Stage<Fut, B>,
        session: Session,
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
                    let (cookie, loaded, failure) = this.session.take_state();
                    if loaded.is_none() && failure.is_none() {
                        // The session was never used: nothing to save, nothing to allocate.
                        return Poll::Ready(Ok(res.map_into_left_body()));
                    }
                    let inner = Arc::clone(this.inner);
                    let save =
                        Box::pin(async move { inner.finish(cookie, loaded, failure, res).await });
                    this.stage.set(Stage::Saving { save });
                }
                StageProj::Saving { save } => return save.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// The session cookie's value in the request, checked. Works on bytes, without parsing
/// the other cookies: the first cookie with our name decides.
fn read_cookie(headers: &HeaderMap, name: &str) -> CookieState {
    let name = name.as_bytes();
    for header in headers.get_all(COOKIE) {
        let mut rest = header.as_bytes();
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
            let pair = rest[..end].trim_ascii_start();
            rest = rest.get(end + 1..).unwrap_or_default();
            if pair.len() > name.len() && pair.starts_with(name) && pair[name.len()] == b'=' {
                let value = pair[name.len() + 1..].trim_ascii_end();
                return SessionId::parse_bytes(value)
                    .map_or(CookieState::Invalid, CookieState::Valid);
            }
        }
    }
    CookieState::Absent
}

impl<S: SessionStore> LoadSession for Inner<S> {
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
        Box::pin(async move {
            match self.timed(self.store.load(id)).await {
                // What the store holds cannot be read: the id is unknown, the request gets
                // a fresh session, and the record is left as it is (a purge still deletes it).
                Err(err @ StoreError::Corrupt(_)) => {
                    self.unreadable.failure(&err);
                    Ok(None)
                }
                Err(err) => {
                    self.failures.failure(&err);
                    Err(err)
                }
                Ok(record) => Ok(record),
            }
        })
    }
}

impl<S: SessionStore> Inner<S> {
    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut op = std::pin::pin!(op);
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
        result
    }

    /// Saves what the request changed and fixes up the response.
    async fn finish<B>(
        &self,
        cookie: CookieState,
        loaded: Option<Loaded>,
        failure: Option<StatusCode>,
        mut res: ServiceResponse<B>,
    ) -> ServiceResponse<EitherBody<B>> {
        if res.status().is_server_error() {
            // The handler failed: whatever it changed is not to be trusted.
            return res.map_into_left_body();
        }
        if let Some(status) = failure {
            // The session could not be loaded or written back: whatever the handler
            // answered was built on a session it did not have.
            tracing::debug!(%status, "session failure overrides the handler's response");
            return replace(res, status);
        }
        let Some(loaded) = loaded else {
            return res.map_into_left_body();
        };
        let mut plan = SavePlan::new(cookie, loaded, self.config.ttl_extension);
        let written = match self.execute(&mut plan).await {
            Ok(written) => written,
            Err(err) => {
                // A save that failed may still have been applied (the answer was lost):
                // the 503 means "outcome unknown", and nothing is retried.
                self.failures.failure(&err);
                return replace(res, SessionError::Store(err).status_code());
            }
        };
        let action = match plan.cookie(written, self.config.browser_session) {
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
                return replace(res, StatusCode::CONFLICT);
            }
        };
        let header = match action {
            CookieAction::Keep => None,
            CookieAction::Set(id) => self.cookies.set(&id),
            CookieAction::Remove => Some(self.cookies.removal.clone()),
        };
        if let Some(header) = header {
            res.headers_mut().append(SET_COOKIE, header);
        }
        res.map_into_left_body()
    }

    fn change_set(&self, mode: SaveMode, changes: Vec<KeyChange>) -> ChangeSet {
        ChangeSet::new(mode, changes, self.config.conflict_policy, self.config.ttl)
    }

    /// Runs the plan's delete and write (taking its changes).
    async fn execute(&self, plan: &mut SavePlan) -> Result<Written, StoreError> {
        if let Some(old) = &plan.delete {
            self.timed(self.store.delete(old)).await?;
        }
        Ok(match &mut plan.write {
            Write::Nothing => Written::Nothing,
            // The request has its session already: a failed extension is logged, and the
            // response goes out without a cookie rather than as a 503.
            Write::Touch(id) => match self.timed(self.store.touch(id, self.config.ttl)).await {
                Ok(alive) => Written::Touched(alive),
                Err(err) => {
                    self.failures.failure(&err);
                    Written::Touched(false)
                }
            },
            Write::Update(id, changes) => {
                let changes = self.change_set(SaveMode::Update, std::mem::take(changes));
                Written::Saved(*id, self.timed(self.store.save(id, &changes)).await?)
            }
            Write::Create(changes) => {
                let changes = self.change_set(SaveMode::Create, std::mem::take(changes));
                self.with_fresh_id(|new| {
                    let changes = &changes;
                    async move { self.store.save(&new, changes).await }
                })
                .await?
            }
            Write::Renew(id, changes) => {
                let changes = self.change_set(SaveMode::Update, std::mem::take(changes));
                let id = *id;
                self.with_fresh_id(|new| {
                    let changes = &changes;
                    async move { self.store.renew(&id, &new, changes).await }
                })
                .await?
            }
        })
    }

    /// Runs a write to a fresh id, with another fresh id if the first is taken.
    async fn with_fresh_id<F, Fut>(&self, write: F) -> Result<Written, StoreError>
    where
        F: Fn(SessionId) -> Fut,
        Fut: Future<Output = Result<SaveOutcome, StoreError>>,
    {
        for _ in 0..ID_ATTEMPTS {
            let new = SessionId::generate();
            match self.timed(write(new)).await? {
                SaveOutcome::IdTaken => {}
                outcome => return Ok(Written::Saved(new, outcome)),
            }
        }
        Err(StoreError::unavailable(format!(
            "the store reported {ID_ATTEMPTS} fresh session ids as taken"
        )))
    }
}

/// The `Set-Cookie` headers, rendered once when the middleware is built: a session cookie
/// is the head, the id and the tail; the removal cookie never changes.
struct CookieHeaders {
    head: String,
    tail: String,
    removal: HeaderValue,
}

impl CookieHeaders {
    fn new(config: &SessionConfig) -> Self {
        let placeholder = SessionId::generate();
        let rendered = config.session_cookie(&placeholder).to_string();
        let (head, tail) = rendered
            .split_once(placeholder.as_str())
            .map(|(head, tail)| (head.to_owned(), tail.to_owned()))
            .unwrap_or_default();
        let removal = HeaderValue::from_str(&config.removal_cookie().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Self {
            head,
            tail,
            removal,
        }
    }

    /// The header that sets the cookie to `id`.
    fn set(&self, id: &SessionId) -> Option<HeaderValue> {
        let mut header = String::with_capacity(self.head.len() + 32 + self.tail.len());
        header.push_str(&self.head);
        header.push_str(id.as_str());
        header.push_str(&self.tail);
        match HeaderValue::try_from(header) {
            Ok(value) => Some(value),
            // The settings were validated at build time and ids are hex: this cannot happen.
            Err(err) => {
                tracing::error!(error = %err, "cannot encode the session cookie");
                None
            }
        }
    }
}

fn replace<B>(res: ServiceResponse<B>, status: StatusCode) -> ServiceResponse<EitherBody<B>> {
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, opaque_response(status)).map_into_right_body()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderName;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static("cookie"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_our_cookie_among_others() {
        let id = SessionId::parse(ID).unwrap();
        let got = read_cookie(&headers(&[&format!("a=1; session={ID}; b=2")]), "session");
        assert_eq!(got, CookieState::Valid(id));
        let got = read_cookie(&headers(&["a=1", &format!("session={ID}")]), "session");
        assert_eq!(got, CookieState::Valid(id));
        assert_eq!(
            read_cookie(&headers(&["sessionx=1; xsession=2"]), "session"),
            CookieState::Absent
        );
        assert_eq!(read_cookie(&headers(&[]), "session"), CookieState::Absent);
    }

    #[test]
    fn malformed_values_are_invalid() {
        for value in [
            "",
            "../x",
            "ABCDEF0123456789ABCDEF0123456789",
            "\"x\"",
            "%0D%0A",
        ] {
            let got = read_cookie(&headers(&[&format!("session={value}")]), "session");
            assert_eq!(got, CookieState::Invalid, "{value:?}");
        }
        let spaced = format!("session={} {}", &ID[..16], &ID[16..]);
        assert_eq!(
            read_cookie(&headers(&[&spaced]), "session"),
            CookieState::Invalid
        );
    }
}
