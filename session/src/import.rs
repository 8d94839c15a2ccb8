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
    ///
    /// ```
    /// use actix_kv_session::{storage::SessionMap, ImportSession, StoreError};
    /// use futures_util::future::LocalBoxFuture;
    ///
    /// struct OldApp;
    ///
    /// impl ImportSession for OldApp {
    ///     fn cookie_name(&self) -> &str {
    ///         "legacy_sid" // what the old app named its cookie
    ///     }
    /// #
    /// #   fn import<'a>(
    /// #       &'a self,
    /// #       _: &'a str,
    /// #   ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
    /// #       Box::pin(async { Ok(None) })
    /// #   }
    /// }
    ///
    /// assert_eq!(OldApp.cookie_name(), "legacy_sid");
    /// ```
    fn cookie_name(&self) -> &str;

    /// The session the old cookie's value names: each key with its value as JSON text.
    /// `None` when the cookie names no session (forged, expired, unknown): the request
    /// goes on as a new visitor's. Keys that start with NUL are left out.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the old store cannot be read; the request answers as for a
    /// failed load (503 when the store is unavailable).
    ///
    /// Test an import of your own by calling it with cookie values the old app wrote:
    ///
    /// ```
    /// use actix_kv_session::{storage::SessionMap, ImportSession, StoreError};
    /// use futures_util::future::LocalBoxFuture;
    ///
    /// /// An old app kept `user=NAME` in a plain cookie named `who`.
    /// struct PlainUserCookie;
    ///
    /// impl ImportSession for PlainUserCookie {
    /// #   fn cookie_name(&self) -> &str {
    /// #       "who"
    /// #   }
    /// #
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
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let session = PlainUserCookie.import("user=ada").await?.unwrap();
    /// assert_eq!(session["user"], r#""ada""#); // JSON text
    /// assert_eq!(PlainUserCookie.import("garbage").await?, None);
    /// # Ok::<(), StoreError>(())
    /// # }).unwrap();
    /// ```
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
    ///
    /// ```
    /// use std::{collections::HashMap, sync::Mutex};
    ///
    /// use actix_kv_session::{storage::SessionMap, ImportSession, StoreError};
    /// use futures_util::future::LocalBoxFuture;
    ///
    /// /// The old app's store: sessions by the id its cookie holds.
    /// struct OldStore(Mutex<HashMap<String, SessionMap>>);
    ///
    /// impl ImportSession for OldStore {
    /// #   fn cookie_name(&self) -> &str {
    /// #       "sid"
    /// #   }
    /// #
    ///     fn import<'a>(
    ///         &'a self,
    ///         cookie: &'a str,
    ///     ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
    ///         Box::pin(async move { Ok(self.0.lock().unwrap().get(cookie).cloned()) })
    ///     }
    ///
    ///     fn forget<'a>(&'a self, cookie: &'a str) -> LocalBoxFuture<'a, Result<(), StoreError>> {
    ///         Box::pin(async move {
    ///             self.0.lock().unwrap().remove(cookie);
    ///             Ok(())
    ///         })
    ///     }
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let old = OldStore(Mutex::new(HashMap::from([("abc".to_owned(), SessionMap::new())])));
    /// assert!(old.import("abc").await?.is_some());
    /// old.forget("abc").await?;
    /// assert_eq!(old.import("abc").await?, None); // the old cookie works once
    /// # Ok::<(), StoreError>(())
    /// # }).unwrap();
    /// ```
    fn forget<'a>(&'a self, cookie: &'a str) -> LocalBoxFuture<'a, Result<(), StoreError>> {
        let _ = cookie;
        Box::pin(async { Ok(()) })
    }

    /// The cookie that removes the old one from the browser: by default the old name with
    /// `Path=/` (and `Secure` for a `__Host-` or `__Secure-` name, or browsers ignore it).
    /// Override it when the old cookie had another path or a domain.
    ///
    /// ```
    /// use actix_kv_session::{storage::SessionMap, ImportSession, StoreError};
    /// use actix_web::cookie::Cookie;
    /// use futures_util::future::LocalBoxFuture;
    ///
    /// /// The old app set its cookie for every subdomain of `example.com`.
    /// struct OldApp;
    ///
    /// impl ImportSession for OldApp {
    ///     fn cookie_name(&self) -> &str {
    ///         "sid"
    ///     }
    /// #
    /// #   fn import<'a>(
    /// #       &'a self,
    /// #       _: &'a str,
    /// #   ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
    /// #       Box::pin(async { Ok(None) })
    /// #   }
    ///
    ///     fn removal_cookie(&self) -> Cookie<'static> {
    ///         let mut cookie = Cookie::build("sid", "").path("/").domain("example.com").finish();
    ///         cookie.make_removal();
    ///         cookie
    ///     }
    /// }
    ///
    /// let removal = OldApp.removal_cookie();
    /// assert_eq!(removal.domain(), Some("example.com"));
    /// assert_eq!(removal.value(), "");
    /// ```
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
