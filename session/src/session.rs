//! The `Session` handle and extractor.

use std::{cell::RefCell, fmt, rc::Rc, sync::Arc, time::Duration};

use actix_web::{
    dev::Payload,
    http::{header::HeaderMap, StatusCode},
    FromRequest, HttpRequest, ResponseError,
};
use futures_util::future::LocalBoxFuture;
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    config::{SessionConfig, TtlExtension},
    error::{SessionError, StoreError},
    lifetime, observe,
    plan::{Ended, SavePlan},
    signing::SignedCookie,
    storage::{is_bookkeeping, KeyChange, SessionMap},
    users::{self, UserSession},
    SessionExt, SessionId,
};

/// Loads a record for the session handle without the handle knowing the store's type.
pub(crate) trait LoadSession {
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>>;

    /// The middleware's absolute timeout, if it has one.
    fn absolute_timeout(&self) -> Option<Duration>;

    /// Which of the middleware's keys signed a signed cookie's id (0: the one that signs),
    /// if any did.
    fn verify(&self, cookie: &SignedCookie) -> Option<usize>;

    /// The largest value, as JSON, that `insert` accepts, if there is a limit.
    fn max_value_bytes(&self) -> Option<usize>;

    /// `user`'s live sessions (see [`crate::users`]).
    fn user_sessions<'a>(
        &'a self,
        user: &'a str,
        current: Option<&'a SessionId>,
    ) -> LocalBoxFuture<'a, Result<Vec<UserSession>, StoreError>>;

    /// Deletes `user`'s sessions but `except`; how many.
    fn purge_user<'a>(
        &'a self,
        user: &'a str,
        except: Option<&'a SessionId>,
    ) -> LocalBoxFuture<'a, Result<usize, StoreError>>;

    /// The middleware's `max_session_bytes`, if it has one.
    fn max_session_bytes(&self) -> Option<usize> {
        None
    }

    /// What a request's `Cookie` headers say of its session: our cookie, and the value of
    /// the cookie of the library sessions are imported from, if any (only when ours is
    /// absent or invalid).
    fn read_cookies(&self, headers: &HeaderMap) -> (CookieState, Option<Box<str>>) {
        let _ = headers;
        (CookieState::Absent, None)
    }

    /// The session another library's cookie names (see
    /// [`ImportSession`](crate::ImportSession)), if the middleware imports any.
    fn import<'a>(
        &'a self,
        cookie: &'a str,
    ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
        let _ = cookie;
        Box::pin(async { Ok(None) })
    }
}

/// What the request's cookie said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieState {
    /// No session cookie.
    Absent,
    /// A session cookie whose value is not a well-formed id (or, signed, whose signature
    /// did not verify).
    Invalid,
    /// A well-formed id, not yet checked against the store.
    Valid(SessionId),
    /// A signed cookie of the right shape, its signature not checked yet: it is checked when
    /// the session is first used, so a request that never uses it does not pay for it.
    Signed(SignedCookie),
}

impl State {
    /// The cookie's id, once it is known to be one (a signature is checked here, once).
    fn cookie_id(&mut self, loader: Option<&Arc<dyn LoadSession>>) -> Option<SessionId> {
        if let CookieState::Signed(signed) = self.cookie {
            let verified = loader.and_then(|loader| loader.verify(&signed));
            self.cookie = match verified {
                Some(key) => {
                    if key == 0 {
                        self.current_signature = Some(signed);
                    }
                    CookieState::Valid(signed.id)
                }
                None => CookieState::Invalid,
            };
        }
        match self.cookie {
            CookieState::Valid(id) => Some(id),
            CookieState::Absent | CookieState::Invalid | CookieState::Signed(_) => None,
        }
    }
}

/// What a request has asked of its session so far: see [`Session::status`].
///
/// It reports calls, as actix-session's status does, not what the store will do: an
/// [`insert`](Session::insert) of the value a key already holds is [`Changed`](Self::Changed),
/// though nothing needs writing, and [`renew`](Session::renew) on a session that was never
/// stored is [`Renewed`](Self::Renewed), though it is simply stored under a fresh id.
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
/// use actix_web::{test, web, App};
///
/// async fn calls(session: Session) -> actix_web::Result<String> {
///     let mut seen = vec![session.status()]; // Unchanged
///     session.insert("theme", "dark")?;
///     seen.push(session.status()); // Changed
///     session.renew()?;
///     session.insert("user", "ada")?;
///     seen.push(session.status()); // Renewed: the insert does not downgrade it
///     session.purge();
///     session.insert("theme", "light")?;
///     seen.push(session.status()); // Purged, whatever comes after
///     Ok(format!("{seen:?}"))
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let app = test::init_service(
///     App::new()
///         .wrap(SessionMiddleware::new(MemoryStore::default()))
///         .route("/", web::get().to(calls)),
/// )
/// .await;
/// let body = test::call_and_read_body(&app, test::TestRequest::get().uri("/").to_request()).await;
/// assert_eq!(body, "[Unchanged, Changed, Renewed, Purged]");
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SessionStatus {
    /// No key was set or removed, and neither `renew` nor `purge` was called (or the session
    /// was never loaded).
    #[default]
    Unchanged,
    /// [`insert`](Session::insert), [`remove`](Session::remove) or
    /// [`clear`](Session::clear) was called (or a [`Typed`](crate::Typed) view wrote a field
    /// back).
    Changed,
    /// [`renew`](Session::renew) was called: the session moves to a new id at the end of the
    /// request. Later inserts leave the status at `Renewed`.
    Renewed,
    /// [`purge`](Session::purge) was called: the session is deleted at the end of the
    /// request. It stays `Purged` whatever is called afterwards.
    Purged,
}

impl SessionStatus {
    /// The status after a call that asks for `next`: `Purged` is final, and `Renewed` is not
    /// downgraded to `Changed`.
    fn after(self, next: Self) -> Self {
        match (self, next) {
            (Self::Purged, _) | (Self::Renewed, Self::Changed) => self,
            _ => next,
        }
    }
}

/// Session keys starting with this character are kept for the library's own bookkeeping
/// (the marker a renew leaves behind is one): [`Session::insert`] refuses them.
pub(crate) const RESERVED_KEY_START: char = '\0';

fn check_key(key: &str) -> Result<(), SessionError> {
    if key.starts_with(RESERVED_KEY_START) {
        return Err(SessionError::ReservedKey {
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// A loaded session.
#[derive(Debug, Default)]
struct Loaded {
    /// The id of the stored record; `None` for a session not stored yet.
    record: Option<SessionId>,
    data: SessionMap,
    /// The record's bookkeeping keys ([`lifetime`]), apart from the app's data.
    meta: SessionMap,
    /// The record outlived the absolute timeout: it is deleted at the end of the request,
    /// and this is a new session.
    outlived: bool,
    /// The session's user index needs its entry (added or refreshed) before the write.
    index: bool,
    /// The value each touched key had at load.
    /// Sessions change a few keys per request: a list beats a map here.
    seen: Vec<(String, Option<String>)>,
    renew: bool,
    /// A record to delete at the end of the request, once purged.
    purge: Option<SessionId>,
    /// What was called, for [`Session::status`].
    status: SessionStatus,
}

impl Loaded {
    /// Sets `key`, remembering what it held at load the first time it changes: the value
    /// the map gives back is that, so nothing is copied.
    fn set(&mut self, key: String, json: String) {
        self.mark(SessionStatus::Changed);
        if self.seen.iter().any(|(k, _)| *k == key) {
            self.data.insert(key, json);
        } else if let Some(value) = self.data.get_mut(&key) {
            // A key the session holds: the value is replaced in place and the key moves to
            // `seen`, with no copy of it (callgrind, `bench/callgrind.py`, with `with_loaded`
            // making its error only when it returns one: 349 instructions of the memory
            // store's `/counter`, 32,257 to 31,908).
            let old = std::mem::replace(value, json);
            self.seen.push((key, Some(old)));
        } else {
            self.data.insert(key.clone(), json);
            self.seen.push((key, None));
        }
    }

    fn mark(&mut self, status: SessionStatus) {
        self.status = self.status.after(status);
    }

    /// Sets (or removes, with `None`) the bookkeeping key `key`, remembering what it held at
    /// load the first time it changes.
    fn set_meta(&mut self, key: &str, json: Option<String>) {
        if !self.seen.iter().any(|(k, _)| k == key) {
            self.seen
                .push((key.to_owned(), self.meta.get(key).cloned()));
        }
        match json {
            Some(json) => self.meta.insert(key.to_owned(), json),
            None => self.meta.remove(key),
        };
    }

    /// Remembers what `key` held at load before a removal.
    fn touch(&mut self, key: &str) {
        self.mark(SessionStatus::Changed);
        if !self.seen.iter().any(|(k, _)| k == key) {
            let old = self.data.get(key).cloned();
            self.seen.push((key.to_owned(), old));
        }
    }

    /// A purged session: `purge` is deleted at the end of the request, and keys set from
    /// now on start a new session.
    fn purged(purge: Option<SessionId>) -> Self {
        Self {
            purge,
            status: SessionStatus::Purged,
            ..Self::default()
        }
    }

    /// Refuses to save a session over `limit` bytes (its keys and JSON values), logging its
    /// size and its largest key: a 500, and the stored session stays as it was. Only a
    /// request that writes is checked, so a session stored before the limit was lowered can
    /// still be read, and emptied.
    fn check_size(&self, limit: usize) -> Result<(), StatusCode> {
        let writes = self.record.is_none() || self.renew || !self.seen.is_empty();
        if !writes || self.data.is_empty() {
            return Ok(());
        }
        let size: usize = self.data.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size <= limit {
            return Ok(());
        }
        let (largest, largest_size) = self
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), k.len() + v.len()))
            .max_by_key(|&(_, size)| size)
            .unwrap_or_default();
        tracing::error!(
            size,
            limit,
            largest_key = largest,
            largest_key_size = largest_size,
            "session not saved: larger than max_session_bytes; the stored session is unchanged"
        );
        Err(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Stamps the bookkeeping the middleware's settings ask for, now that the handler is
    /// done: the creation time of a new or renewed session (absolute timeout), and the time
    /// of a TTL extension (throttled extensions). Returns whether a read-only request
    /// extends the TTL by a plain touch.
    fn stamp(&mut self, config: &SessionConfig, now: u64) -> bool {
        let stored = self.record.is_some();
        let changed_key = |this: &Self, key: &str| {
            this.seen.iter().any(|(k, seen)| {
                k == key
                    && if is_bookkeeping(k) {
                        this.meta.get(k) != seen.as_ref()
                    } else {
                        this.data.get(k) != seen.as_ref()
                    }
            })
        };
        let changed = self.seen.iter().any(|(key, _)| changed_key(self, key));
        let writes = !stored || self.renew || changed;
        let every_request = config.ttl_extension == TtlExtension::OnEveryRequest;
        let ttl = lifetime::ttl(&self.meta).unwrap_or(config.ttl);
        // A session stored before the absolute timeout was set gets its creation time with
        // its first write or TTL extension: one that is only read under `OnEveryRequest`
        // would otherwise never end.
        if config.absolute_timeout.is_some()
            && (!stored
                || self.renew
                || ((writes || every_request) && !self.meta.contains_key(lifetime::CREATED)))
        {
            self.set_meta(lifetime::CREATED, Some(now.to_string()));
        }
        let mut touch = match config.extension_interval {
            Some(interval) if every_request => {
                // Never longer than half the session's own TTL, or a session with a short
                // TTL of its own would expire between two extensions while in use.
                let interval = interval.min(ttl / 2);
                if writes || lifetime::extension_due(&self.meta, interval, now) {
                    self.set_meta(lifetime::EXTENDED, Some(now.to_string()));
                }
                false
            }
            _ => every_request,
        };
        if self.meta.contains_key(users::USER) {
            let user_changed = changed_key(self, users::USER);
            let ttl_changed = changed_key(self, lifetime::TTL);
            let due = users::refresh_due(&self.meta, ttl, now);
            let extends = writes || touch || self.seen.iter().any(|(k, _)| is_bookkeeping(k));
            if extends && (!stored || self.renew || user_changed || ttl_changed || due) {
                self.set_meta(users::INDEXED, Some(now.to_string()));
                self.index = true;
                // The refresh is a write: last seen goes with it.
                touch = false;
            }
            if self.index || writes {
                self.set_meta(users::SEEN, Some(now.to_string()));
            }
        }
        touch
    }

    /// What the save plan needs: the data, and the keys whose value differs from the one
    /// they had at load.
    fn into_ended(mut self, had_cookie: bool, touch: bool) -> Ended {
        let (ttl, browser_session) = if self.meta.is_empty() {
            (None, None)
        } else {
            (
                lifetime::ttl(&self.meta),
                lifetime::browser_session(&self.meta),
            )
        };
        let cookie_changed = !self.meta.is_empty()
            && self.seen.iter().any(|(key, seen)| {
                (key == lifetime::TTL || key == lifetime::BROWSER_SESSION)
                    && self.meta.get(key) != seen.as_ref()
            });
        // A session bound to a user is not empty: the binding is its content.
        let bound = self.meta.contains_key(users::USER);
        let index_user = if self.index {
            users::user_of(&self.meta)
        } else {
            None
        };
        if self.record.is_some() && self.data.is_empty() && !bound {
            // No data left: the bookkeeping goes too, so that the store deletes the record.
            let keys: Vec<String> = self.meta.keys().cloned().collect();
            for key in keys {
                self.set_meta(&key, None);
            }
        }
        // A stored session needs the changes only, a new one its data only: move, not copy.
        let changes = match self.record {
            None => Vec::new(),
            Some(_) => self
                .seen
                .into_iter()
                .filter_map(|(key, seen)| {
                    let now = if is_bookkeeping(&key) {
                        self.meta.remove(&key)
                    } else {
                        self.data.remove(&key)
                    };
                    (now != seen).then(|| KeyChange::new(key, now, seen))
                })
                .collect(),
        };
        // Only the middleware's bookkeeping changed (a TTL extension that records its time,
        // a refresh of the user index): like a touch, it never answers 409.
        let bookkeeping_only = !self.renew
            && !changes.is_empty()
            && changes.iter().all(|change| is_bookkeeping(change.key()));
        let mut data = self.data;
        if self.record.is_none() && (!data.is_empty() || bound) {
            data.extend(self.meta);
        }
        Ended {
            record: self.record,
            data,
            changes,
            renew: self.renew,
            purged: self.status == SessionStatus::Purged || self.outlived,
            purge: self.purge,
            had_cookie,
            touch,
            ttl,
            browser_session,
            cookie_changed,
            index_user,
            bookkeeping_only,
        }
    }
}

/// What the middleware does with a session once the handler answered.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The session was never used: nothing to save.
    Unused,
    /// A failure decides the response, whatever the handler answered: a load that failed
    /// (even if an `Option` extractor swallowed the error), or a typed value that could not
    /// be written back.
    Failed(StatusCode),
    /// Save as planned.
    Save(SavePlan),
}

struct State {
    cookie: CookieState,
    loaded: Option<Loaded>,
    /// Set once the middleware has taken the state to save it.
    finished: bool,
    /// A failure that must decide the response whatever the handler answered: a load that
    /// failed (even if an `Option` extractor swallowed the error), or a typed value that
    /// could not be written back.
    failure: Option<StatusCode>,
    /// The request's signed cookie, once its signature verified with the key that signs:
    /// a response that sets the cookie to the same id sends it again instead of signing.
    current_signature: Option<SignedCookie>,
    /// The value of another library's session cookie, to import the session it names when
    /// the request has no session of ours (only with [`ImportSession`](crate::ImportSession)).
    legacy: Option<Box<str>>,
    /// The request's `session` span, from the first load, if anything listens (see
    /// [`observe`]).
    span: Option<tracing::Span>,
}

struct Cell {
    state: RefCell<State>,
    /// Makes concurrent loads within one request share one store round-trip.
    load_gate: tokio::sync::Mutex<()>,
    /// The middleware's store; `None` where no middleware wraps the route.
    loader: Option<Arc<dyn LoadSession>>,
}

/// The session of the current request.
///
/// Extract it in a handler, or get it with [`SessionExt::get_session`]. Values are stored
/// as JSON, one per key. Changes are kept in the request and written to the store once,
/// after the handler, and only the keys that changed are written.
///
/// ```
/// use actix_kv_session::Session;
///
/// async fn index(session: Session) -> actix_web::Result<String> {
///     let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
///     session.insert("foo", &count)?;
///     Ok(count.to_string())
/// }
/// ```
///
/// Every method that reads or writes data needs the session loaded: the extractor loads
/// it; a handle from [`SessionExt::get_session`] needs [`Session::load`] first, or its
/// methods answer [`SessionError::NotLoaded`].
///
/// # Not `Send`
///
/// A `Session` is the request's own: an `Rc` over a `RefCell`, like actix-web's
/// `HttpRequest`, because actix-web runs a request on one worker thread from start to end
/// and its handlers' futures need not be `Send`. Making it `Send` would put a lock and an
/// atomic count on every read and write of every request, for code that never leaves the
/// thread. A handler whose work must be `Send` (async-graphql and juniper want their
/// context data `Send + Sync`, a `tokio::spawn` wants `Send + 'static`) reads what that work
/// needs from the session first, as owned values, hands it a `Send` place for what it wants
/// to store, and writes that back when it is done:
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// use actix_kv_session::Session;
///
/// /// What the `Send` work may read of the session.
/// #[derive(Clone)]
/// struct Viewer {
///     user: Option<String>,
/// }
///
/// /// Where the `Send` work puts what the session should keep.
/// #[derive(Clone, Default)]
/// struct SessionWrites(Arc<Mutex<Vec<(String, serde_json::Value)>>>);
///
/// /// Stands for `schema.execute(request.data(viewer).data(writes))`: work that must be
/// /// `Send`.
/// async fn send_work(viewer: Viewer, writes: SessionWrites) -> String {
///     let answer = format!("hello {}", viewer.user.as_deref().unwrap_or("stranger"));
///     writes.0.lock().unwrap().push(("greeted".into(), serde_json::json!(true)));
///     answer
/// }
///
/// async fn graphql(session: Session) -> actix_web::Result<String> {
///     let viewer = Viewer { user: session.get("user")? };
///     let writes = SessionWrites::default();
///     // `tokio::spawn` wants `Send + 'static`, as a GraphQL executor's data does.
///     let answer = tokio::spawn(send_work(viewer, writes.clone()))
///         .await
///         .map_err(actix_web::error::ErrorInternalServerError)?;
///     let pending = std::mem::take(&mut *writes.0.lock().unwrap());
///     for (key, value) in pending {
///         session.insert(key, value)?;
///     }
///     Ok(answer)
/// }
/// ```
#[derive(Clone)]
pub struct Session(Rc<Cell>);

impl Session {
    #[cfg(test)]
    pub(crate) fn new(cookie: CookieState, loader: Arc<dyn LoadSession>) -> Self {
        Self::with(cookie, None, Some(loader))
    }

    /// The session of a request with these `headers`, for the middleware `loader`: the
    /// cookie is read now, at the session's first use in the request.
    pub(crate) fn start(loader: &Arc<dyn LoadSession>, headers: &HeaderMap) -> Self {
        let (cookie, legacy) = loader.read_cookies(headers);
        Self::with(cookie, legacy, Some(Arc::clone(loader)))
    }

    /// The handle of a request whose middleware is done with it: loading it fails with
    /// [`SessionError::NotLoaded`], as for a session the middleware has saved.
    pub(crate) fn ended(loader: &Arc<dyn LoadSession>) -> Self {
        let session = Self::with(CookieState::Absent, None, Some(Arc::clone(loader)));
        session.0.state.borrow_mut().finished = true;
        session
    }

    /// A handle for a request that no middleware wraps: loading it fails.
    pub(crate) fn detached() -> Self {
        Self::with(CookieState::Absent, None, None)
    }

    fn with(
        cookie: CookieState,
        legacy: Option<Box<str>>,
        loader: Option<Arc<dyn LoadSession>>,
    ) -> Self {
        Self(Rc::new(Cell {
            state: RefCell::new(State {
                cookie,
                loaded: None,
                finished: false,
                failure: None,
                current_signature: None,
                legacy,
                span: None,
            }),
            load_gate: tokio::sync::Mutex::new(()),
            loader,
        }))
    }

    /// Loads the session from the store, once per request: later calls, and the
    /// extractors of the same request, reuse the first load. A cookie that is malformed or
    /// unknown to the store gives a new, empty session (its id is never reused).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the store fails or times out;
    /// [`SessionError::MissingMiddleware`] when no [`SessionMiddleware`](crate::SessionMiddleware)
    /// wraps the route.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionExt, SessionMiddleware};
    /// use actix_web::{test, web, App, HttpRequest};
    ///
    /// // A handle from the request: no store round-trip until `load`, so a handler that
    /// // needs the session on one branch only pays for it there.
    /// async fn visits(req: HttpRequest) -> actix_web::Result<String> {
    ///     if req.query_string() == "anonymous" {
    ///         return Ok("not counted".to_owned());
    ///     }
    ///     let session = req.get_session();
    ///     session.load().await?;
    ///     let n = session.get::<u32>("visits")?.unwrap_or(0) + 1;
    ///     session.insert("visits", n)?;
    ///     Ok(n.to_string())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/", web::get().to(visits)),
    /// )
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// assert_eq!(test::read_body(res).await, "1");
    /// let req = test::TestRequest::get().uri("/").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "2");
    /// # });
    /// ```
    pub async fn load(&self) -> Result<(), SessionError> {
        let Some(store) = &self.0.loader else {
            return Err(SessionError::MissingMiddleware);
        };
        if self.is_loaded() {
            return Ok(());
        }
        // Uncontended (one extractor, or the first of several): no waiting future, no
        // semaphore round (callgrind: 240 instructions of the memory store's `/counter`).
        let _gate = match self.0.load_gate.try_lock() {
            Ok(gate) => gate,
            Err(_) => self.0.load_gate.lock().await,
        };
        let (id, legacy) = {
            let mut state = self.0.state.borrow_mut();
            if state.loaded.is_some() {
                return Ok(());
            }
            if state.finished {
                return Err(SessionError::NotLoaded);
            }
            let id = state.cookie_id(self.0.loader.as_ref());
            let legacy = if id.is_none() {
                state.legacy.clone()
            } else {
                None
            };
            (id, legacy)
        };
        let span = observe::request_span();
        if let Some(span) = &span {
            self.0.state.borrow_mut().span = Some(span.clone());
        }
        let record = match (&id, legacy) {
            (Some(id), _) => {
                if let Some(span) = &span {
                    observe::name_session(span, id);
                }
                observe::in_span(span.as_ref(), store.load(id)).await
            }
            (None, Some(legacy)) => {
                let import = self.import(store.as_ref(), &legacy);
                return observe::in_span(span.as_ref(), import).await;
            }
            (None, None) => Ok(None),
        };
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                let err = SessionError::Store(err);
                self.fail(err.status_code());
                return Err(err);
            }
        };
        let loaded = match record {
            Some(mut data) => {
                let meta = lifetime::split(&mut data);
                let outlived = store
                    .absolute_timeout()
                    .is_some_and(|limit| lifetime::outlived(&meta, limit, lifetime::now()));
                if outlived {
                    // Past its absolute timeout: deleted at the end of the request, and the
                    // request goes on as a new visitor's.
                    tracing::debug!("session outlived its absolute timeout; it ends");
                    Loaded {
                        purge: id,
                        outlived: true,
                        ..Loaded::default()
                    }
                } else {
                    Loaded {
                        record: id,
                        data,
                        meta,
                        ..Loaded::default()
                    }
                }
            }
            None => Loaded::default(),
        };
        let mut state = self.0.state.borrow_mut();
        if !state.finished {
            state.loaded = Some(loaded);
        }
        Ok(())
    }

    /// Loads the session another library's cookie names as a new session of ours: every
    /// key is a change, so the save creates it under a fresh id.
    async fn import(&self, store: &dyn LoadSession, legacy: &str) -> Result<(), SessionError> {
        let mut imported = match store.import(legacy).await {
            Ok(imported) => imported.unwrap_or_default(),
            Err(err) => {
                let err = SessionError::Store(err);
                self.fail(err.status_code());
                return Err(err);
            }
        };
        // A value that is not JSON could be neither read nor stored as JSON, one over
        // `max_value_bytes` could not be inserted: left out.
        let value_limit = store.max_value_bytes().unwrap_or(usize::MAX);
        imported.retain(|key, json| {
            !is_bookkeeping(key)
                && json.len() <= value_limit
                && serde_json::from_str::<serde::de::IgnoredAny>(json).is_ok()
        });
        // A session over `max_session_bytes` could never be saved: the visitor is new (and
        // the old cookie goes), rather than a 500 on every request.
        let size: usize = imported.iter().map(|(k, v)| k.len() + v.len()).sum();
        if store.max_session_bytes().is_some_and(|limit| size > limit) {
            tracing::warn!(
                size,
                "imported session larger than max_session_bytes; left out"
            );
            imported.clear();
        }
        let mut loaded = Loaded::default();
        for (key, json) in imported {
            loaded.set(key, json);
        }
        let mut state = self.0.state.borrow_mut();
        if !state.finished {
            state.loaded = Some(loaded);
        }
        Ok(())
    }

    /// The request's `session` span, if the session was loaded while something listened.
    pub(crate) fn take_span(&self) -> Option<tracing::Span> {
        self.0.state.borrow_mut().span.take()
    }

    /// The value of another library's session cookie, if the request had one and used its
    /// session: the middleware then removes that cookie and forgets its session.
    pub(crate) fn take_legacy(&self) -> Option<Box<str>> {
        self.0.state.borrow_mut().legacy.take()
    }

    /// Whether the session has been loaded in this request.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionExt, SessionMiddleware};
    /// use actix_web::{test, web, App, HttpRequest};
    ///
    /// async fn handler(req: HttpRequest) -> actix_web::Result<String> {
    ///     let session = req.get_session();
    ///     let before = session.is_loaded();
    ///     session.load().await?;
    ///     Ok(format!("{before} {}", session.is_loaded()))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/", web::get().to(handler)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "false true");
    /// # });
    /// ```
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.0.state.borrow().loaded.is_some()
    }

    fn with_loaded<R>(&self, f: impl FnOnce(&mut Loaded) -> R) -> Result<R, SessionError> {
        let mut state = self.0.state.borrow_mut();
        match state.loaded.as_mut() {
            Some(loaded) => Ok(f(loaded)),
            None => Err(SessionError::NotLoaded),
        }
    }

    /// The value of `key`, deserialized from JSON; `None` when the key is absent.
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] when the stored value is not JSON or does not fit
    /// `T`; [`SessionError::NotLoaded`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn greet(session: Session) -> actix_web::Result<String> {
    ///     let user: Option<String> = session.get("user")?;
    ///     Ok(format!("hello {}", user.as_deref().unwrap_or("stranger")))
    /// }
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("user", "ada")?;
    ///     Ok("welcome")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/", web::get().to(greet)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "hello stranger");
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::get().uri("/").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "hello ada");
    /// # });
    /// ```
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        self.with_loaded(|s| {
            s.data
                .get(key)
                .map(|json| serde_json::from_str(json))
                .transpose()
                .map_err(|source| SessionError::Deserialize {
                    key: key.to_owned(),
                    source,
                })
        })?
    }

    /// Sets `key` to `value`, serialized as JSON. The value may be given by reference or
    /// by value (`insert("n", &n)` or `insert("n", n)`), as with actix-session.
    ///
    /// # Errors
    ///
    /// [`SessionError::Serialize`] when `value` cannot be serialized (the session is left
    /// as it was); [`SessionError::ReservedKey`] for a key that starts with a NUL character;
    /// [`SessionError::NotLoaded`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn add_to_cart(
    ///     session: Session,
    ///     item: web::Path<String>,
    /// ) -> actix_web::Result<String> {
    ///     let mut cart: Vec<String> = session.get("cart")?.unwrap_or_default();
    ///     cart.push(item.into_inner());
    ///     session.insert("cart", &cart)?; // by reference
    ///     session.insert("cart_size", cart.len())?; // or by value
    ///     Ok(cart.join(","))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/cart/{item}", web::post().to(add_to_cart)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/cart/apple").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::post().uri("/cart/pear").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "apple,pear");
    /// # });
    /// ```
    pub fn insert<T: Serialize>(
        &self,
        key: impl Into<String>,
        value: T,
    ) -> Result<(), SessionError> {
        let key = key.into();
        check_key(&key)?;
        let json = match serde_json::to_string(&value) {
            Ok(json) => json,
            Err(source) => return Err(SessionError::Serialize { key, source }),
        };
        self.check_size(&key, &json)?;
        self.with_loaded(|s| s.set(key, json))
    }

    /// Refuses a value over the middleware's `max_value_bytes`.
    fn check_size(&self, key: &str, json: &str) -> Result<(), SessionError> {
        let limit = self.0.loader.as_ref().and_then(|l| l.max_value_bytes());
        match limit {
            Some(limit) if json.len() > limit => Err(SessionError::ValueTooLarge {
                key: key.to_owned(),
                size: json.len(),
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Replaces the value of `key` by `updater` applied to it, if the key has a value; does
    /// nothing otherwise. As actix-session's `update`, except that the change is saved
    /// (actix-session's forgets to mark the session changed).
    ///
    /// ```
    /// use actix_kv_session::Session;
    ///
    /// async fn visit(session: Session) -> actix_web::Result<&'static str> {
    ///     session.update("visits", |n: u64| n + 1)?;
    ///     Ok("counted, if counting")
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] when the stored value does not fit `T`;
    /// [`SessionError::Serialize`], [`SessionError::ValueTooLarge`],
    /// [`SessionError::ReservedKey`] and [`SessionError::NotLoaded`] as for
    /// [`insert`](Self::insert). The session is left as it was on any error.
    pub fn update<T, F>(&self, key: impl Into<String>, updater: F) -> Result<(), SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(T) -> T,
    {
        self.update_with(key.into(), None, updater)
    }

    /// As [`update`](Self::update), but sets `key` to `default` when it has no value.
    ///
    /// ```
    /// use actix_kv_session::Session;
    ///
    /// async fn visit(session: Session) -> actix_web::Result<String> {
    ///     session.update_or("visits", 1_u64, |n| n + 1)?;
    ///     Ok(session.get::<u64>("visits")?.unwrap_or(0).to_string())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`update`](Self::update).
    pub fn update_or<T, F>(
        &self,
        key: impl Into<String>,
        default: T,
        updater: F,
    ) -> Result<(), SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(T) -> T,
    {
        self.update_with(key.into(), Some(default), updater)
    }

    /// `updater` applied to the value of `key`, or `default` when it has none, stored.
    fn update_with<T, F>(
        &self,
        key: String,
        default: Option<T>,
        updater: F,
    ) -> Result<(), SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(T) -> T,
    {
        match (self.get::<T>(&key)?, default) {
            (Some(value), _) => self.insert(key, updater(value)),
            (None, Some(default)) => self.insert(key, default),
            (None, None) => Ok(()),
        }
    }

    /// Removes `key`; returns its value as JSON text, if it had one.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn save(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("flash", "saved")?;
    ///     Ok("ok")
    /// }
    ///
    /// async fn show_flash(session: Session) -> actix_web::Result<String> {
    ///     // The JSON text: `"saved"`, quotes included; shown once.
    ///     Ok(session.remove("flash")?.unwrap_or_default())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/save", web::post().to(save))
    ///         .route("/", web::get().to(show_flash)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/save").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::get().uri("/").cookie(cookie.clone()).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, r#""saved""#);
    /// let req = test::TestRequest::get().uri("/").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "");
    /// # });
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    pub fn remove(&self, key: &str) -> Result<Option<String>, SessionError> {
        self.with_loaded(|s| {
            s.touch(key);
            s.data.remove(key)
        })
    }

    /// Removes `key` and returns its value deserialized, as actix-session's `remove_as`:
    /// `Some(Err(json))` with the JSON text when it does not fit `T` (the key is removed
    /// either way), `None` when the key had no value.
    ///
    /// ```
    /// use actix_kv_session::Session;
    ///
    /// async fn take_flash(session: Session) -> actix_web::Result<String> {
    ///     let flash = session.remove_as::<String>("flash")?.and_then(Result::ok);
    ///     Ok(flash.unwrap_or_default())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    pub fn remove_as<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Result<T, String>>, SessionError> {
        Ok(self
            .remove(key)?
            .map(|json| match serde_json::from_str(&json) {
                Ok(value) => Ok(value),
                Err(_) => Err(json),
            }))
    }

    /// Removes every key. A session left empty is deleted from the store at the end of the
    /// request, and its cookie removed.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("user", "ada")?;
    ///     Ok("welcome")
    /// }
    ///
    /// async fn forget_me(session: Session) -> actix_web::Result<&'static str> {
    ///     session.clear()?;
    ///     Ok("forgotten")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/forget", web::post().to(forget_me)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::post().uri("/forget").cookie(cookie).to_request();
    /// let res = test::call_service(&app, req).await;
    /// let removal = res.response().cookies().next().unwrap();
    /// assert_eq!(removal.value(), "");
    /// assert_eq!(removal.max_age(), Some(actix_web::cookie::time::Duration::ZERO));
    /// # });
    /// ```
    pub fn clear(&self) -> Result<(), SessionError> {
        self.with_loaded(|s| {
            s.mark(SessionStatus::Changed);
            let keys: Vec<String> = s.data.keys().cloned().collect();
            for key in keys {
                s.touch(&key);
            }
            s.data.clear();
        })
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{http::StatusCode, test, web, App, HttpResponse};
    ///
    /// async fn account(session: Session) -> actix_web::Result<HttpResponse> {
    ///     if !session.contains_key("user")? {
    ///         return Ok(HttpResponse::Unauthorized().finish());
    ///     }
    ///     Ok(HttpResponse::Ok().body("your account"))
    /// }
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("user", "ada")?;
    ///     Ok("welcome")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/account", web::get().to(account)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/account").to_request();
    /// assert_eq!(test::call_service(&app, req).await.status(), StatusCode::UNAUTHORIZED);
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::get().uri("/account").cookie(cookie).to_request();
    /// assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    /// # });
    /// ```
    pub fn contains_key(&self, key: &str) -> Result<bool, SessionError> {
        self.with_loaded(|s| s.data.contains_key(key))
    }

    /// The keys that have a value, in no particular order.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn set_prefs(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("theme", "dark")?;
    ///     session.insert("lang", "fr")?;
    ///     Ok("saved")
    /// }
    ///
    /// async fn pref_names(session: Session) -> actix_web::Result<String> {
    ///     let mut keys = session.keys()?;
    ///     keys.sort(); // they come in no particular order
    ///     Ok(keys.join(","))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/prefs", web::post().to(set_prefs))
    ///         .route("/prefs", web::get().to(pref_names)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/prefs").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::get().uri("/prefs").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "lang,theme");
    /// # });
    /// ```
    pub fn keys(&self) -> Result<Vec<String>, SessionError> {
        self.with_loaded(|s| s.data.keys().cloned().collect())
    }

    /// Every key with its value as JSON text.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn set_prefs(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("theme", "dark")?;
    ///     session.insert("lang", "fr")?;
    ///     Ok("saved")
    /// }
    ///
    /// /// Every preference as JSON: `{"lang":"fr","theme":"dark"}`.
    /// async fn export(session: Session) -> actix_web::Result<String> {
    ///     let mut entries: Vec<(String, String)> = session.entries()?.into_iter().collect();
    ///     entries.sort();
    ///     let fields: Vec<String> =
    ///         entries.iter().map(|(key, json)| format!("{key:?}:{json}")).collect();
    ///     Ok(format!("{{{}}}", fields.join(",")))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/prefs", web::post().to(set_prefs))
    ///         .route("/prefs", web::get().to(export)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/prefs").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::get().uri("/prefs").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, r#"{"lang":"fr","theme":"dark"}"#);
    /// # });
    /// ```
    pub fn entries(&self) -> Result<SessionMap, SessionError> {
        self.with_loaded(|s| s.data.clone())
    }

    /// How many keys have a value.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn set_prefs(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("theme", "dark")?;
    ///     session.insert("lang", "fr")?;
    ///     Ok("saved")
    /// }
    ///
    /// async fn count(session: Session) -> actix_web::Result<String> {
    ///     Ok(format!("{} keys", session.len()?))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/prefs", web::post().to(set_prefs))
    ///         .route("/count", web::get().to(count)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/count").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "0 keys");
    /// let req = test::TestRequest::post().uri("/prefs").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::get().uri("/count").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "2 keys");
    /// # });
    /// ```
    pub fn len(&self) -> Result<usize, SessionError> {
        self.with_loaded(|s| s.data.len())
    }

    /// Whether no key has a value.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn index(session: Session) -> actix_web::Result<&'static str> {
    ///     Ok(if session.is_empty()? { "first visit?" } else { "welcome back" })
    /// }
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("user", "ada")?;
    ///     Ok("welcome")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/", web::get().to(index)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "first visit?");
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::get().uri("/").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "welcome back");
    /// # });
    /// ```
    pub fn is_empty(&self) -> Result<bool, SessionError> {
        self.with_loaded(|s| s.data.is_empty())
    }

    /// Moves the session to a new id at the end of the request, with the same data; the
    /// old id stops working. Call it when the user's privileges change (log-in), so an id
    /// planted before log-in is worthless after it (session fixation).
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.renew()?;
    ///     session.insert("user", "ada")?;
    ///     Ok("welcome")
    /// }
    /// async fn whoami(session: Session) -> actix_web::Result<String> {
    ///     Ok(session.get::<String>("user")?.unwrap_or_else(|| "nobody".to_owned()))
    /// }
    ///
    /// async fn browse(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("cart", ["apple"])?;
    ///     Ok("browsing")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/browse", web::get().to(browse))
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/whoami", web::get().to(whoami)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/browse").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let before = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::post().uri("/login").cookie(before.clone()).to_request();
    /// let res = test::call_service(&app, req).await;
    /// let after = res.response().cookies().next().unwrap().into_owned();
    /// assert_ne!(after.value(), before.value());
    ///
    /// // The cookie planted before log-in is worth nothing now.
    /// let req = test::TestRequest::get().uri("/whoami").cookie(before).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "nobody");
    /// let req = test::TestRequest::get().uri("/whoami").cookie(after).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "ada");
    /// # });
    /// ```
    pub fn renew(&self) -> Result<(), SessionError> {
        self.with_loaded(|s| {
            s.mark(SessionStatus::Renewed);
            // A session not stored yet gets a fresh id when it is first saved anyway.
            s.renew = s.record.is_some();
        })
    }

    /// Deletes the session from the store at the end of the request and tells the browser
    /// to drop the cookie (log-out). Keys set after `purge` in the same request start a new
    /// session under a new id. Works without a load, and deletes whatever the store holds
    /// under the cookie's id, even a record it could not read.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn log_out(session: Session) -> &'static str {
    ///     session.purge();
    ///     "bye"
    /// }
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("user", "ada")?;
    ///     Ok("welcome")
    /// }
    /// async fn whoami(session: Session) -> actix_web::Result<String> {
    ///     Ok(session.get::<String>("user")?.unwrap_or_else(|| "nobody".to_owned()))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/logout", web::post().to(log_out))
    ///         .route("/whoami", web::get().to(whoami)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::post().uri("/logout").cookie(cookie.clone()).to_request();
    /// let res = test::call_service(&app, req).await;
    /// assert_eq!(res.response().cookies().next().unwrap().value(), ""); // the browser drops it
    ///
    /// // A copy of the old cookie (another tab, a thief) finds nothing.
    /// let req = test::TestRequest::get().uri("/whoami").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "nobody");
    /// # });
    /// ```
    pub fn purge(&self) {
        let mut state = self.0.state.borrow_mut();
        // The stored record, if any, is the one under the cookie's id.
        let purge = state.cookie_id(self.0.loader.as_ref());
        state.loaded = Some(Loaded::purged(purge));
    }

    /// Sets how long this session lives after its last save (or TTL extension), in place of
    /// the middleware's TTL; it is also its cookie's Max-Age. Kept with the session across
    /// requests and across [`renew`](Self::renew): a "remember me" log-in sets a long one.
    /// A TTL under one second counts as one second, and one over 400 days as 400 days
    /// (browsers cap a cookie's Max-Age there, and stores have limits of their own).
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_kv_session::Session;
    ///
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.renew()?;
    ///     session.insert("user", "alice")?;
    ///     // Remember me: 90 days, and a cookie that outlives the browser.
    ///     session.set_ttl(Duration::from_secs(90 * 24 * 3600))?;
    ///     session.set_browser_session(false)?;
    ///     Ok("welcome")
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    pub fn set_ttl(&self, ttl: Duration) -> Result<(), SessionError> {
        let secs = ttl.as_secs().clamp(1, lifetime::MAX_OWN_TTL.as_secs());
        self.with_loaded(|s| {
            s.mark(SessionStatus::Changed);
            s.set_meta(lifetime::TTL, Some(secs.to_string()));
        })
    }

    /// This session's own TTL, if [`set_ttl`](Self::set_ttl) gave it one.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn remember_me(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("user", "ada")?;
    ///     session.set_ttl(Duration::from_secs(90 * 24 * 3600))?;
    ///     Ok("remembered")
    /// }
    ///
    /// async fn lifetime(session: Session) -> actix_web::Result<String> {
    ///     Ok(match session.ttl()? {
    ///         Some(ttl) => format!("{} days", ttl.as_secs() / (24 * 3600)),
    ///         None => "the middleware's TTL".to_owned(),
    ///     })
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/remember", web::post().to(remember_me))
    ///         .route("/lifetime", web::get().to(lifetime)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/lifetime").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "the middleware's TTL");
    /// let req = test::TestRequest::post().uri("/remember").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::get().uri("/lifetime").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "90 days");
    /// # });
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    pub fn ttl(&self) -> Result<Option<Duration>, SessionError> {
        self.with_loaded(|s| lifetime::ttl(&s.meta))
    }

    /// Whether this session's cookie is a browser-session cookie (no Max-Age: the browser
    /// drops it when it closes), in place of the middleware's
    /// [`browser_session`](crate::SessionMiddlewareBuilder::browser_session) setting. Kept
    /// across requests and across [`renew`](Self::renew). The stored session still expires
    /// after its TTL.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// // "Remember me" unticked on a shared computer: the cookie goes when the browser closes.
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("user", "ada")?;
    ///     session.set_browser_session(true)?;
    ///     Ok("welcome")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(log_in)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// assert_eq!(cookie.max_age(), None);
    /// # });
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    pub fn set_browser_session(&self, on: bool) -> Result<(), SessionError> {
        self.with_loaded(|s| {
            s.mark(SessionStatus::Changed);
            s.set_meta(lifetime::BROWSER_SESSION, Some(on.to_string()));
        })
    }

    /// Binds this session to `user` (call it at log-in, after [`renew`](Self::renew)): the
    /// session is then listed by [`user_sessions`](Self::user_sessions) and ended by
    /// [`purge_other_sessions`](Self::purge_other_sessions) and
    /// [`SessionMiddleware::purge_user`](crate::SessionMiddleware::purge_user) ("log out
    /// everywhere"). The user id is kept with the session, apart from its data.
    ///
    /// ```
    /// use actix_kv_session::Session;
    ///
    /// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
    ///     session.renew()?;
    ///     session.set_user("alice")?;
    ///     session.insert("agent", "Firefox on Linux")?; // shown on the "devices" page
    ///     Ok("welcome")
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    pub fn set_user(&self, user: impl Into<String>) -> Result<(), SessionError> {
        let json = serde_json::Value::String(user.into()).to_string();
        self.with_loaded(|s| {
            s.mark(SessionStatus::Changed);
            if !s.meta.contains_key(lifetime::CREATED) {
                s.set_meta(lifetime::CREATED, Some(lifetime::now().to_string()));
            }
            s.set_meta(users::USER, Some(json));
        })
    }

    /// The user this session is bound to, if any.
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
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/whoami", web::get().to(whoami)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/whoami").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "nobody");
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// let res = test::call_service(&app, req).await;
    /// let cookie = res.response().cookies().next().unwrap().into_owned();
    /// let req = test::TestRequest::get().uri("/whoami").cookie(cookie).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "alice");
    /// # });
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`].
    pub fn user(&self) -> Result<Option<String>, SessionError> {
        self.with_loaded(|s| users::user_of(&s.meta))
    }

    /// The live sessions of this session's user (its devices), most recently seen first,
    /// this one marked [`current`](UserSession::current); empty for a session bound to no
    /// user.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the store fails; [`SessionError::NotLoaded`].
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
    /// async fn devices(session: Session) -> actix_web::Result<String> {
    ///     let devices = session.user_sessions().await?;
    ///     let others = devices.iter().filter(|device| !device.current).count();
    ///     Ok(format!("{} sessions, {others} on other devices", devices.len()))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/devices", web::get().to(devices)),
    /// )
    /// .await;
    /// let mut cookies = Vec::new();
    /// for _ in 0..3 {
    ///     let req = test::TestRequest::post().uri("/login").to_request();
    ///     let res = test::call_service(&app, req).await;
    ///     cookies.push(res.response().cookies().next().unwrap().into_owned());
    /// }
    /// let req = test::TestRequest::get().uri("/devices").cookie(cookies[0].clone()).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "3 sessions, 2 on other devices");
    /// # });
    /// ```
    pub async fn user_sessions(&self) -> Result<Vec<UserSession>, SessionError> {
        let (user, current) = self.user_and_record()?;
        let (Some(user), Some(loader)) = (user, &self.0.loader) else {
            return Ok(Vec::new());
        };
        Ok(loader.user_sessions(&user, current.as_ref()).await?)
    }

    /// Logs this session's user out of every other session ("log out my other devices"),
    /// at once; returns how many sessions ended. Requests in flight on them cannot bring
    /// them back.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] when the store fails; [`SessionError::NotLoaded`].
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
    /// async fn log_out_others(session: Session) -> actix_web::Result<String> {
    ///     let ended = session.purge_other_sessions().await?;
    ///     Ok(format!("{ended} other sessions ended"))
    /// }
    ///
    /// async fn whoami(session: Session) -> actix_web::Result<String> {
    ///     Ok(session.user()?.unwrap_or_else(|| "nobody".to_owned()))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(log_in))
    ///         .route("/others", web::delete().to(log_out_others))
    ///         .route("/whoami", web::get().to(whoami)),
    /// )
    /// .await;
    /// let mut cookies = Vec::new();
    /// for _ in 0..2 {
    ///     let req = test::TestRequest::post().uri("/login").to_request();
    ///     let res = test::call_service(&app, req).await;
    ///     cookies.push(res.response().cookies().next().unwrap().into_owned());
    /// }
    /// let req = test::TestRequest::delete().uri("/others").cookie(cookies[0].clone());
    /// let req = req.to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "1 other sessions ended");
    /// let req = test::TestRequest::get().uri("/whoami").cookie(cookies[0].clone()).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "alice");
    /// let req = test::TestRequest::get().uri("/whoami").cookie(cookies[1].clone()).to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "nobody");
    /// # });
    /// ```
    pub async fn purge_other_sessions(&self) -> Result<usize, SessionError> {
        let (user, current) = self.user_and_record()?;
        let (Some(user), Some(loader)) = (user, &self.0.loader) else {
            return Ok(0);
        };
        Ok(loader.purge_user(&user, current.as_ref()).await?)
    }

    fn user_and_record(&self) -> Result<(Option<String>, Option<SessionId>), SessionError> {
        self.with_loaded(|s| (users::user_of(&s.meta), s.record))
    }

    /// The loaded data, borrowed; an empty map before a load. Holding it across a write
    /// panics, as actix-session's `entries` does.
    pub(crate) fn borrow_data(&self) -> std::cell::Ref<'_, SessionMap> {
        static NOT_LOADED: std::sync::LazyLock<SessionMap> =
            std::sync::LazyLock::new(SessionMap::new);
        std::cell::Ref::map(self.0.state.borrow(), |state| {
            state.loaded.as_ref().map_or(&*NOT_LOADED, |s| &s.data)
        })
    }

    /// What this request has done to the session so far.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware, SessionStatus};
    /// use actix_web::{test, web, App};
    ///
    /// async fn act(
    ///     session: Session,
    ///     action: web::Path<String>,
    /// ) -> actix_web::Result<&'static str> {
    ///     if *action == "vote" {
    ///         session.insert("voted", true)?;
    ///     }
    ///     // For a log line, a metric, a `Cache-Control` header: whether this request wrote.
    ///     Ok(if session.status() == SessionStatus::Unchanged { "read only" } else { "changed" })
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/{action}", web::post().to(act)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/view").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "read only");
    /// let req = test::TestRequest::post().uri("/vote").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "changed");
    /// # });
    /// ```
    #[must_use]
    pub fn status(&self) -> SessionStatus {
        let state = self.0.state.borrow();
        state
            .loaded
            .as_ref()
            .map_or_else(SessionStatus::default, |s| s.status)
    }

    /// Makes the request answer `status`, with nothing saved, whatever the handler does.
    pub(crate) fn fail(&self, status: StatusCode) {
        let mut state = self.0.state.borrow_mut();
        if state.failure.is_none() {
            state.failure = Some(status);
        }
    }

    /// Reads the loaded data.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&SessionMap) -> R) -> Result<R, SessionError> {
        self.with_loaded(|s| f(&s.data))
    }

    /// Sets `key` to a JSON text, or removes it.
    pub(crate) fn put_json(&self, key: &str, json: Option<String>) -> Result<(), SessionError> {
        check_key(key)?;
        if let Some(json) = &json {
            self.check_size(key, json)?;
        }
        self.with_loaded(|s| {
            if let Some(json) = json {
                s.set(key.to_owned(), json);
            } else {
                s.touch(key);
                s.data.remove(key);
            }
        })
    }

    /// Ends the session's part in the request: what the middleware must do now. The
    /// handle is unusable afterwards.
    pub(crate) fn end(&self, config: &SessionConfig) -> Ending {
        let mut state = self.0.state.borrow_mut();
        if state.finished {
            // Ended by a middleware nested inside the one asking now (the same one, wrapped
            // twice): its response holds the outcome already.
            return Ending::Unused;
        }
        state.finished = true;
        if let Some(status) = state.failure {
            return Ending::Failed(status);
        }
        let had_cookie = state.cookie != CookieState::Absent;
        match state.loaded.take() {
            None => Ending::Unused,
            Some(mut loaded) => {
                if let Some(limit) = config.max_session_bytes {
                    if let Err(status) = loaded.check_size(limit) {
                        return Ending::Failed(status);
                    }
                }
                let current_signature = state.current_signature;
                // Without the settings that need bookkeeping, no clock and no scan: this
                // runs on every request that used its session (callgrind: 650 instructions
                // of a 32,000-instruction `/counter` on the memory store).
                let without_bookkeeping = config.absolute_timeout.is_none()
                    && config.extension_interval.is_none()
                    && !loaded.meta.contains_key(users::USER);
                let touch = if without_bookkeeping {
                    config.ttl_extension == TtlExtension::OnEveryRequest
                } else {
                    loaded.stamp(config, lifetime::now())
                };
                let mut plan = SavePlan::new(loaded.into_ended(had_cookie, touch));
                plan.current_signature = current_signature.map(Box::new);
                Ending::Save(plan)
            }
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets: show the shape, not the data.
        let state = self.0.state.borrow();
        f.debug_struct("Session")
            .field("loaded", &state.loaded.is_some())
            .field("keys", &state.loaded.as_ref().map(|s| s.data.len()))
            .finish_non_exhaustive()
    }
}

impl FromRequest for Session {
    type Error = SessionError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req.get_session();
        Box::pin(async move {
            session.load().await?;
            Ok(session)
        })
    }
}
