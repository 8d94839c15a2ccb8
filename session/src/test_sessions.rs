//! [`TestSessions`]: sessions for testing handlers, without a running store or hand-made
//! cookies.

use std::time::Duration;

use actix_web::{cookie::Cookie, dev::ServiceResponse};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    storage::{MemoryStore, SessionMap, SessionStore},
    SessionId, SessionMiddleware, SessionMiddlewareBuilder,
};

/// Sessions for testing handlers: a [`MemoryStore`], the middleware on it, sessions made
/// with the keys a test needs, and what the handler stored, read back. Features `testing`
/// and `memory`.
///
/// ```
/// use actix_kv_session::{testing::TestSessions, Session};
/// use actix_web::{http::StatusCode, test, web, App, HttpResponse};
///
/// async fn account(session: Session) -> actix_web::Result<HttpResponse> {
///     let Some(user) = session.get::<String>("user")? else {
///         return Ok(HttpResponse::Unauthorized().finish());
///     };
///     session.insert("visits", session.get::<u32>("visits")?.unwrap_or(0) + 1)?;
///     Ok(HttpResponse::Ok().body(format!("hello {user}")))
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let sessions = TestSessions::new();
/// let app = test::init_service(
///     App::new()
///         .wrap(sessions.middleware())
///         .route("/account", web::get().to(account)),
/// )
/// .await;
///
/// // A logged-in user: a stored session and the cookie that names it.
/// let cookie = sessions.create([("user", "ada")]).await;
/// let req = test::TestRequest::get().uri("/account").cookie(cookie.clone()).to_request();
/// let res = test::call_service(&app, req).await;
/// assert_eq!(res.status(), StatusCode::OK);
///
/// // What the handler stored.
/// assert_eq!(sessions.get::<u32>(&cookie, "visits").await, Some(1));
///
/// // A visitor without a session.
/// let req = test::TestRequest::get().uri("/account").to_request();
/// let res = test::call_service(&app, req).await;
/// assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
/// assert!(sessions.cookie_of(&res).is_none());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct TestSessions {
    store: MemoryStore,
    cookie_name: String,
}

impl Default for TestSessions {
    fn default() -> Self {
        Self::new()
    }
}

impl TestSessions {
    /// An empty memory store, and the default cookie name `session`.
    ///
    /// ```
    /// use actix_kv_session::{testing::TestSessions, Session};
    /// use actix_web::{test, web, App};
    ///
    /// async fn index(session: Session) -> actix_web::Result<String> {
    ///     Ok(session.get::<String>("user")?.unwrap_or_else(|| "stranger".to_owned()))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let sessions = TestSessions::new();
    /// let app = test::init_service(
    ///     App::new().wrap(sessions.middleware()).route("/", web::get().to(index)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "stranger");
    /// assert_eq!(sessions.store().session_count(), 0);
    /// # });
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self {
            store: MemoryStore::default(),
            cookie_name: "session".to_owned(),
        }
    }

    /// The cookie name the app's middleware uses, if not `session`: the cookies this makes
    /// and reads are named so.
    ///
    /// ```
    /// # use actix_kv_session::testing::TestSessions;
    /// let sessions = TestSessions::new().cookie_name("id");
    /// let _middleware = sessions.builder().cookie_name("id").build();
    /// ```
    #[must_use]
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The middleware on this store, with the default settings but `Secure` off (test
    /// requests are plain HTTP).
    ///
    /// ```
    /// # use actix_kv_session::testing::TestSessions;
    /// let sessions = TestSessions::new();
    /// let _app = actix_web::App::new().wrap(sessions.middleware());
    /// ```
    #[must_use]
    pub fn middleware(&self) -> SessionMiddleware<MemoryStore> {
        self.builder().build()
    }

    /// A builder of the middleware on this store (`Secure` off), for the app's own
    /// settings.
    ///
    /// The cookie name is this value's ([`cookie_name`](Self::cookie_name)): set a
    /// different one there, not on the builder, or [`create`](Self::create) and
    /// [`cookie_of`](Self::cookie_of) look for the wrong cookie. A `__Host-` or `__Secure-`
    /// name needs `.secure(true)` on the builder (the build refuses it otherwise; test
    /// requests are plain HTTP, which actix-web's test harness does not check). Signed
    /// cookies ([`signing_keys`](SessionMiddlewareBuilder::signing_keys)) are not for
    /// this: the cookies [`create`](Self::create) makes are not signed; test handlers on an
    /// unsigned middleware.
    ///
    /// ```
    /// # use actix_kv_session::{testing::TestSessions, TtlExtension};
    /// let sessions = TestSessions::new();
    /// let _middleware = sessions
    ///     .builder()
    ///     .ttl_extension(TtlExtension::OnEveryRequest)
    ///     .build();
    /// ```
    pub fn builder(&self) -> SessionMiddlewareBuilder<MemoryStore> {
        SessionMiddleware::builder(self.store.clone())
            .cookie_name(self.cookie_name.clone())
            .secure(false)
    }

    /// The store, to look at or seed directly.
    ///
    /// ```
    /// # use actix_kv_session::testing::TestSessions;
    /// let sessions = TestSessions::new();
    /// assert_eq!(sessions.store().session_count(), 0);
    /// ```
    #[must_use]
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// Stores a session with `pairs` (each value serialized as JSON) and returns the
    /// cookie a browser would send for it.
    ///
    /// ```
    /// # use actix_kv_session::testing::TestSessions;
    /// # actix_web::rt::System::new().block_on(async {
    /// let sessions = TestSessions::new();
    /// let cookie = sessions
    ///     .create([("user", serde_json::json!("ada")), ("roles", serde_json::json!(["admin"]))])
    ///     .await;
    /// assert_eq!(sessions.get::<Vec<String>>(&cookie, "roles").await, Some(vec!["admin".into()]));
    /// # });
    /// ```
    ///
    /// # Panics
    ///
    /// When a value cannot be serialized to JSON.
    pub async fn create<K, V>(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Cookie<'static>
    where
        K: Into<String>,
        V: Serialize,
    {
        let data: SessionMap = pairs
            .into_iter()
            .map(|(key, value)| {
                let json = serde_json::to_string(&value).expect("a value that serializes");
                (key.into(), json)
            })
            .collect();
        let id = SessionId::generate();
        self.store
            .create(&id, &data, Duration::from_secs(30 * 24 * 3600))
            .await
            .expect("the memory store stores");
        Cookie::new(self.cookie_name.clone(), id.to_string())
    }

    /// Every key of the session `cookie` names, with its value as JSON text (the
    /// middleware's own bookkeeping keys left out); `None` when it names none.
    ///
    /// ```
    /// # use actix_kv_session::testing::TestSessions;
    /// # actix_web::rt::System::new().block_on(async {
    /// let sessions = TestSessions::new();
    /// let cookie = sessions.create([("n", 1)]).await;
    /// let data = sessions.data(&cookie).await.unwrap();
    /// assert_eq!(data["n"], "1");
    /// # });
    /// ```
    pub async fn data(&self, cookie: &Cookie<'_>) -> Option<SessionMap> {
        // A signed cookie's value is `ID.SIGNATURE`.
        let value = cookie.value();
        let id = SessionId::parse(value.split_once('.').map_or(value, |(id, _)| id))?;
        let mut data = self.store.load(&id).await.ok()??;
        data.retain(|key, _| !crate::storage::is_bookkeeping(key));
        Some(data)
    }

    /// The value of `key` in the session `cookie` names; `None` when there is no session,
    /// no such key, or a value that does not fit `T`.
    ///
    /// ```
    /// # use actix_kv_session::testing::TestSessions;
    /// # actix_web::rt::System::new().block_on(async {
    /// let sessions = TestSessions::new();
    /// let cookie = sessions.create([("user", "ada")]).await;
    /// assert_eq!(sessions.get::<String>(&cookie, "user").await.as_deref(), Some("ada"));
    /// assert_eq!(sessions.get::<String>(&cookie, "nope").await, None);
    /// # });
    /// ```
    pub async fn get<T: DeserializeOwned>(&self, cookie: &Cookie<'_>, key: &str) -> Option<T> {
        let data = self.data(cookie).await?;
        serde_json::from_str(data.get(key)?).ok()
    }

    /// The session cookie a response set, for the next request; `None` when it set none or
    /// removed it (log-out).
    ///
    /// ```
    /// use actix_kv_session::{testing::TestSessions, Session};
    /// use actix_web::{test, web, App};
    ///
    /// async fn login(session: Session) -> actix_web::Result<&'static str> {
    ///     session.renew()?;
    ///     session.insert("user", "ada")?;
    ///     Ok("welcome")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let sessions = TestSessions::new();
    /// let app = test::init_service(
    ///     App::new().wrap(sessions.middleware()).route("/login", web::post().to(login)),
    /// )
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::post().uri("/login").to_request()).await;
    /// let cookie = sessions.cookie_of(&res).expect("logged in");
    /// assert_eq!(sessions.get::<String>(&cookie, "user").await.as_deref(), Some("ada"));
    /// # });
    /// ```
    #[must_use]
    pub fn cookie_of<B>(&self, res: &ServiceResponse<B>) -> Option<Cookie<'static>> {
        res.response()
            .cookies()
            .filter(|cookie| cookie.name() == self.cookie_name)
            .last()
            .filter(|cookie| !cookie.value().is_empty())
            .map(Cookie::into_owned)
    }
}
