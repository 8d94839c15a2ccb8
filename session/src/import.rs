//! Taking over the sessions of another session library, so that its users stay logged in
//! after the switch: [`ImportSession`].

use actix_web::cookie::Cookie;
use futures_util::future::LocalBoxFuture;

use crate::{storage::SessionMap, StoreError};

/// Reads the sessions of the library an app moves from, given its session cookie;
/// [`SessionMiddlewareBuilder::import_sessions`](crate::SessionMiddlewareBuilder::import_sessions)
/// installs one.
///
/// On a request that carries the old library's cookie and no session of ours, the first
/// load of the session asks [`import`](Self::import) for the old session's keys and makes
/// them a new session of ours: the save stores it under a fresh id and sets our cookie.
/// Once that save succeeded, the middleware calls [`forget`](Self::forget) (the old record
/// goes, so the old cookie works once) and removes the old cookie. A request that does not
/// use its session leaves both alone; one whose save fails (503) too, so the next request
/// imports again.
///
/// [`compat::ActixSessionImport`](crate::compat::ActixSessionImport) (feature
/// `actix-session-import`) reads actix-session's cookies and Redis records. The import
/// for another library is a type of yours:
///
/// ```
/// use actix_kv_session::{storage::SessionMap, ImportSession, StoreError};
/// use futures_util::future::LocalBoxFuture;
///
/// /// An old app kept `user=NAME` in a plain cookie named `who`.
/// struct PlainUserCookie;
///
/// impl ImportSession for PlainUserCookie {
///     fn cookie_name(&self) -> &str {
///         "who"
///     }
///
///     fn import<'a>(
///         &'a self,
///         cookie: &'a str,
///     ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
///         Box::pin(async move {
///             let user = cookie.strip_prefix("user=").map(|name| {
///                 let json = serde_json::to_string(name).expect("a string");
///                 SessionMap::from([("user".to_owned(), json)])
///             });
///             Ok(user)
///         })
///     }
/// }
/// ```
pub trait ImportSession: Send + Sync + 'static {
    /// The name of the old library's session cookie.
    fn cookie_name(&self) -> &str;

    /// The session the old cookie's value names: each key with its value as JSON text.
    /// `None` when the cookie names no session (forged, expired, unknown): the request
    /// goes on as a new visitor's. Keys that start with NUL are left out.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the old store cannot be read; the request answers as for a
    /// failed load (503 when the store is unavailable).
    fn import<'a>(
        &'a self,
        cookie: &'a str,
    ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>>;

    /// Deletes the old session the cookie's value names, once its data is stored as ours
    /// (by default nothing: a cookie that holds the whole session has nothing to delete).
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; it is logged, and the response goes out as it is.
    fn forget<'a>(&'a self, cookie: &'a str) -> LocalBoxFuture<'a, Result<(), StoreError>> {
        let _ = cookie;
        Box::pin(async { Ok(()) })
    }

    /// The cookie that removes the old one from the browser: by default the old name with
    /// `Path=/` (and `Secure` for a `__Host-` or `__Secure-` name, or browsers ignore it).
    /// Override it when the old cookie had another path or a domain.
    fn removal_cookie(&self) -> Cookie<'static> {
        removal(self.cookie_name())
    }
}

/// A removal of the cookie `name` at `Path=/`; `Secure` when its prefix requires it.
pub(crate) fn removal(name: &str) -> Cookie<'static> {
    let secure = name.starts_with("__Host-") || name.starts_with("__Secure-");
    let mut cookie = Cookie::build(name.to_owned(), "")
        .path("/")
        .secure(secure)
        .finish();
    cookie.make_removal();
    cookie
}
