//! actix-session's `Session` API, for handlers moved from actix-session with only their `use`
//! lines changed.
//!
//! ```
//! // Was: use actix_session::{Session, SessionExt};
//! use actix_kv_session::compat::{Session, SessionExt};
//! use actix_web::{HttpRequest, Responder};
//!
//! async fn index(session: Session) -> actix_web::Result<impl Responder> {
//!     if let Some(count) = session.get::<i32>("counter")? {
//!         session.insert("counter", count + 1)?;
//!     } else {
//!         session.insert("counter", 1)?;
//!     }
//!     if session.contains_key("flash") {
//!         let _shown = session.remove("flash");
//!     }
//!     Ok(format!("Counter: {}", session.get::<i32>("counter")?.unwrap_or(0)))
//! }
//!
//! async fn logout(req: HttpRequest) -> &'static str {
//!     req.get_session().purge();
//!     "bye"
//! }
//! ```
//!
//! [`Session`] here derefs to the crate's [`Session`](crate::Session), so everything else
//! (`set_user`, `set_ttl`, `load`…) is there too; the methods below differ only in their
//! return types: `contains_key`, `entries`, `remove`, `remove_as`, `clear` and `renew`
//! answer without a `Result`, as actix-session's do. `insert`, `get`, `update`,
//! `update_or`, `purge` and `status` are the crate's own, which already have actix-session's
//! signatures (`update` and `update_or` also mark the session changed, which
//! actix-session's forget). The error types `SessionGetError` and `SessionInsertError` are
//! aliases of [`SessionError`].
//!
//! # Loading before the handler
//!
//! actix-session reads the store on every request that carries a cookie, before any
//! handler runs; this crate reads it only when something extracts the session. A handler
//! that takes [`Session`] as an argument gets it loaded either way. Code that reaches the
//! session through [`SessionExt::get_session`] without extracting it (a handler taking only
//! `HttpRequest`, a guard, a `wrap_fn` middleware) needs the session loaded first: add
//! [`load_session`] inside the [`SessionMiddleware`](crate::SessionMiddleware) to load it on
//! every request, as actix-session does.
//!
//! On a session that was not loaded, the methods without a `Result` answer as for an empty
//! session (`contains_key` is `false`, `remove` is `None`) and change nothing, with a
//! warning logged; those with one fail with [`SessionError::NotLoaded`].
//!
//! # Keeping users logged in
//!
//! [`ActixSessionImport`] (feature `actix-session-import`) takes over the sessions the
//! actix-session app wrote, given its key: see
//! [`SessionMiddlewareBuilder::import_sessions`](crate::SessionMiddlewareBuilder::import_sessions).
//!
//! # Setting up the middleware
//!
//! The builder differs; each actix-session call has an equivalent:
//!
//! | actix-session | actix-kv-session |
//! |---|---|
//! | `SessionMiddleware::new(store, key)` | `SessionMiddleware::new(store)`: the cookie holds a random id, nothing to encrypt; `.signing_keys([SigningKey::from_bytes(&secret)?])` adds a signature |
//! | `.cookie_name("id")` (its default) | `.cookie_name("id")` (ours is `session`) |
//! | `.cookie_secure(b)` | `.secure(b)` |
//! | `.cookie_http_only(b)` | `.http_only(b)` |
//! | `.cookie_same_site(s)` | `.same_site(s)` |
//! | `.cookie_domain(Some(d))` / `.cookie_path(p)` | `.domain(d)` / `.path(p)` |
//! | `.session_lifecycle(BrowserSession::default())` (its default) | `.browser_session(true)` (ours is a persistent cookie) |
//! | `.session_lifecycle(PersistentSession::default().session_ttl(t))` | `.ttl(t)` |
//! | `TtlExtensionPolicy::OnEveryRequest` / `OnStateChanges` (its default) | `.ttl_extension(TtlExtension::OnEveryRequest)` / [`TtlExtension::OnChange`](crate::TtlExtension) (ours too) |
//! | `.cookie_content_security(CookieContentSecurity::Private)` | none: the cookie holds only a random id, there is nothing to hide |
//! | `RedisSessionStore::new(url)` | `RedisStore::new(url)` (feature `redis`) |
//! | `CookieSessionStore` | none: sessions stay on the server |
//!
//! `docs/migrating.md` in the repository is the whole guide: cookies, TTLs, what carries
//! over.

#[cfg(feature = "actix-session-import")]
mod actix_session_import;

use std::{cell::Ref, ops::Deref};

use actix_web::{
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    guard::GuardContext,
    middleware::Next,
    Error, FromRequest, HttpRequest,
};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

#[cfg(feature = "actix-session-import")]
pub use self::actix_session_import::ActixSessionImport;
pub use crate::SessionStatus;
use crate::{storage::SessionMap, SessionError};

/// actix-session's error from `get`: here the crate's [`SessionError`].
///
/// ```
/// use actix_kv_session::compat::{Session, SessionGetError};
///
/// fn visits(session: &Session) -> Result<u32, SessionGetError> {
///     Ok(session.get::<u32>("visits")?.unwrap_or(0))
/// }
/// ```
pub type SessionGetError = SessionError;
/// actix-session's error from `insert`: here the crate's [`SessionError`].
///
/// ```
/// use actix_kv_session::compat::{Session, SessionInsertError};
///
/// fn remember(session: &Session, user: &str) -> Result<(), SessionInsertError> {
///     session.insert("user", user)
/// }
/// ```
pub type SessionInsertError = SessionError;

/// The session of a request with actix-session's method signatures; derefs to the crate's
/// [`Session`](crate::Session). An extractor: it loads the session, as the crate's does.
///
/// ```
/// use actix_kv_session::compat::Session;
///
/// async fn forget(session: Session) -> String {
///     match session.remove_as::<String>("name") {
///         Some(Ok(name)) => format!("forgot {name}"),
///         Some(Err(json)) => format!("forgot {json}, not a string"),
///         None => "nothing to forget".to_owned(),
///     }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Session(crate::Session);

impl Session {
    /// The crate's handle, with `Result`s on every method.
    ///
    /// ```
    /// use actix_kv_session::compat::Session;
    ///
    /// async fn has_user(session: Session) -> actix_web::Result<String> {
    ///     let session = session.into_inner();
    ///     // The crate's `contains_key`: a session not loaded is an error, not `false`.
    ///     Ok(session.contains_key("user")?.to_string())
    /// }
    /// ```
    #[must_use]
    pub fn into_inner(self) -> crate::Session {
        self.0
    }

    /// Whether `key` has a value; `false` on a session not loaded.
    ///
    /// ```
    /// # use actix_kv_session::compat::Session;
    /// async fn greet(session: Session) -> &'static str {
    ///     if session.contains_key("user") { "welcome back" } else { "hello" }
    /// }
    /// ```
    #[must_use]
    pub fn contains_key(&self, key: &str) -> bool {
        self.loaded("contains_key")
            .is_some_and(|()| self.0.contains_key(key).unwrap_or(false))
    }

    /// Every key with its value as JSON text, borrowed: drop it before writing to the
    /// session, or the write panics (as with actix-session).
    ///
    /// ```
    /// # use actix_kv_session::compat::Session;
    /// async fn keys(session: Session) -> String {
    ///     let mut keys: Vec<String> = session.entries().keys().cloned().collect();
    ///     keys.sort();
    ///     keys.join(",")
    /// }
    /// ```
    #[must_use]
    pub fn entries(&self) -> Ref<'_, SessionMap> {
        self.loaded("entries");
        self.0.borrow_data()
    }

    /// Removes `key`; returns its value as JSON text, if it had one.
    ///
    /// ```
    /// # use actix_kv_session::compat::Session;
    /// async fn drop_cart(session: Session) -> String {
    ///     session.remove("cart").unwrap_or_default()
    /// }
    /// ```
    #[allow(clippy::must_use_candidate)] // as actix-session: removing is reason enough
    pub fn remove(&self, key: &str) -> Option<String> {
        self.loaded("remove")?;
        self.0.remove(key).ok().flatten()
    }

    /// Removes `key` and returns its value deserialized: `Some(Err(json))` with the JSON
    /// text when it does not fit `T`, `None` when the key had no value.
    ///
    /// ```
    /// # use actix_kv_session::compat::Session;
    /// async fn take_flash(session: Session) -> String {
    ///     session.remove_as::<String>("flash").and_then(Result::ok).unwrap_or_default()
    /// }
    /// ```
    #[allow(clippy::must_use_candidate)] // as actix-session: removing is reason enough
    pub fn remove_as<T: DeserializeOwned>(&self, key: &str) -> Option<Result<T, String>> {
        self.loaded("remove_as")?;
        self.0.remove_as(key).ok().flatten()
    }

    /// Removes every key; the session is deleted at the end of the request.
    ///
    /// ```
    /// # use actix_kv_session::compat::Session;
    /// async fn reset(session: Session) -> &'static str {
    ///     session.clear();
    ///     "cleared"
    /// }
    /// ```
    pub fn clear(&self) {
        if self.loaded("clear").is_some() {
            let _ = self.0.clear();
        }
    }

    /// Moves the session to a new id at the end of the request (call it at log-in).
    ///
    /// ```
    /// # use actix_kv_session::compat::Session;
    /// async fn login(session: Session) -> actix_web::Result<&'static str> {
    ///     session.renew();
    ///     session.insert("user", "ada")?;
    ///     Ok("logged in")
    /// }
    /// ```
    pub fn renew(&self) {
        if self.loaded("renew").is_some() {
            let _ = self.0.renew();
        }
    }

    /// `Some` when loaded; otherwise logs that `method` did nothing.
    fn loaded(&self, method: &str) -> Option<()> {
        if self.0.is_loaded() {
            Some(())
        } else {
            tracing::warn!(
                method,
                "session not loaded: extract `Session` or wrap the routes in \
                 `compat::load_session`; the call did nothing"
            );
            None
        }
    }
}

impl Deref for Session {
    type Target = crate::Session;

    fn deref(&self) -> &crate::Session {
        &self.0
    }
}

impl From<crate::Session> for Session {
    fn from(session: crate::Session) -> Self {
        Self(session)
    }
}

impl FromRequest for Session {
    type Error = SessionError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let inner = crate::Session::from_request(req, payload);
        Box::pin(async move { inner.await.map(Self) })
    }
}

/// actix-session's `SessionExt`: the session of a request, response or guard context.
///
/// The handle is loaded only if something loaded it already in this request (see
/// [Loading before the handler](self#loading-before-the-handler)).
///
/// ```
/// use actix_kv_session::compat::SessionExt;
/// use actix_web::HttpRequest;
///
/// async fn logout(req: HttpRequest) -> &'static str {
///     req.get_session().purge();
///     "logged out"
/// }
/// ```
pub trait SessionExt {
    /// The session of this request.
    ///
    /// In a guard, with [`load_session`] inside the middleware so that the session is loaded
    /// before the guards run:
    ///
    /// ```
    /// use actix_kv_session::{compat, storage::MemoryStore, SessionMiddleware};
    /// use actix_web::{guard, middleware::from_fn, test, web, App};
    /// use compat::SessionExt;
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let logged_in = guard::fn_guard(|ctx| ctx.get_session().contains_key("user"));
    /// let app = test::init_service(
    ///     App::new()
    ///         .route("/", web::get().guard(logged_in).to(|| async { "welcome back" }))
    ///         .route("/", web::get().to(|| async { "hello" }))
    ///         .wrap(from_fn(compat::load_session))
    ///         .wrap(SessionMiddleware::new(MemoryStore::default())),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "hello");
    /// # });
    /// ```
    fn get_session(&self) -> Session;
}

impl SessionExt for HttpRequest {
    fn get_session(&self) -> Session {
        Session(crate::SessionExt::get_session(self))
    }
}

impl SessionExt for ServiceRequest {
    fn get_session(&self) -> Session {
        Session(crate::SessionExt::get_session(self))
    }
}

impl<B> SessionExt for ServiceResponse<B> {
    fn get_session(&self) -> Session {
        Session(crate::SessionExt::get_session(self))
    }
}

impl SessionExt for GuardContext<'_> {
    fn get_session(&self) -> Session {
        Session(crate::SessionExt::get_session(self))
    }
}

/// Loads the session before the routes it wraps, as actix-session does on every request:
/// then `req.get_session()`, guards and inner middleware see it loaded. Costs one store
/// read per request that carries a session cookie, whether the route uses it or not.
///
/// Register it with [`from_fn`](actix_web::middleware::from_fn) before the
/// [`SessionMiddleware`](crate::SessionMiddleware), so it runs inside it:
///
/// ```
/// use actix_kv_session::{compat, storage::MemoryStore, SessionMiddleware};
/// use actix_web::{middleware::from_fn, web, App, HttpRequest};
/// use compat::SessionExt;
///
/// async fn whoami(req: HttpRequest) -> String {
///     req.get_session().get::<String>("user").ok().flatten().unwrap_or_default()
/// }
///
/// let _app = App::new()
///     .wrap(from_fn(compat::load_session))
///     .wrap(SessionMiddleware::new(MemoryStore::default()))
///     .route("/", web::get().to(whoami));
/// ```
///
/// # Errors
///
/// The load's [`SessionError`] (a 503 when the store fails), and whatever the inner service
/// answers.
pub async fn load_session(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    crate::SessionExt::get_session(&req).load().await?;
    next.call(req).await
}
