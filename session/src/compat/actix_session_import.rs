//! Reads actix-session's sessions, for [`ImportSession`].

use std::fmt;
#[cfg(feature = "redis")]
use std::sync::Arc;

use actix_web::cookie::{Cookie, CookieJar, Key};
use futures_util::future::LocalBoxFuture;

use crate::{storage::SessionMap, ImportSession, StoreError};

/// Takes over the sessions of an app on actix-session, so that its users stay logged in:
/// give it to
/// [`SessionMiddlewareBuilder::import_sessions`](crate::SessionMiddlewareBuilder::import_sessions)
/// with the `Key` the old app was built with. Feature `actix-session-import`.
///
/// actix-session's cookie (named `id` by default) is encrypted with the key (its default,
/// `CookieContentSecurity::Private`) or signed with it ([`signed`](Self::signed)); it holds
/// a random session key that names a record in its store, or, with its
/// `CookieSessionStore`, the whole session. The import checks the cookie with the key (a
/// cookie it cannot decrypt or whose signature fails imports nothing), reads the session,
/// and the middleware stores it as a new session of ours under a fresh id, deletes the old
/// record and removes the old cookie. With Redis, a copy of the old cookie replayed after
/// that finds nothing; the cookie store has no record to delete, and a copy imports again
/// (as it kept working on actix-session).
///
/// ```
/// use actix_kv_session::{compat::ActixSessionImport, storage::RedisStore, SessionMiddleware};
/// use actix_web::cookie::Key;
///
/// # let old_key_bytes = &[7; 64][..];
/// let key = Key::from(old_key_bytes); // the key the actix-session app used
/// let store = RedisStore::new("redis://127.0.0.1:6379")?;
/// let middleware = SessionMiddleware::builder(store.clone())
///     // actix-session's `RedisSessionStore` on the same Redis:
///     .import_sessions(ActixSessionImport::redis(key, &store))
///     .build();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ActixSessionImport {
    key: Key,
    cookie_name: String,
    path: String,
    domain: Option<String>,
    signed: bool,
    source: Source,
}

#[derive(Clone)]
enum Source {
    /// `CookieSessionStore`: the cookie holds the session's JSON.
    Cookie,
    /// `RedisSessionStore`: the cookie holds the key of a JSON string in Redis.
    #[cfg(feature = "redis")]
    Redis {
        store: crate::storage::RedisStore,
        keygen: Arc<dyn Fn(&str) -> String + Send + Sync>,
    },
}

impl fmt::Debug for ActixSessionImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Cookie => "cookie",
            #[cfg(feature = "redis")]
            Source::Redis { .. } => "redis",
        };
        // The key is never printed.
        f.debug_struct("ActixSessionImport")
            .field("cookie_name", &self.cookie_name)
            .field("signed", &self.signed)
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

impl ActixSessionImport {
    fn new(key: Key, source: Source) -> Self {
        Self {
            key,
            cookie_name: "id".to_owned(),
            path: "/".to_owned(),
            domain: None,
            signed: false,
            source,
        }
    }

    /// Sessions of actix-session's `CookieSessionStore`: the whole session is in the
    /// cookie, encrypted or signed with `key`.
    ///
    /// ```
    /// use actix_kv_session::{
    ///     compat::ActixSessionImport, storage::MemoryStore, Session, SessionMiddleware,
    /// };
    /// use actix_web::{
    ///     cookie::{Cookie, CookieJar, Key},
    ///     http::header,
    ///     test, web, App,
    /// };
    ///
    /// async fn whoami(session: Session) -> actix_web::Result<String> {
    ///     Ok(session.get::<String>("user")?.unwrap_or_default())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let key = Key::generate(); // the old app's: `Key::from(&its_secret)`
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .import_sessions(ActixSessionImport::cookie_store(key.clone()))
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route("/", web::get().to(whoami)))
    ///     .await;
    ///
    /// // A cookie as actix-session's `CookieSessionStore` wrote it: each value as JSON text.
    /// let mut jar = CookieJar::new();
    /// jar.private_mut(&key).add(Cookie::new("id", r#"{"user":"\"ada\""}"#));
    /// let old_cookie = format!("id={}", jar.get("id").unwrap().value());
    /// let req = test::TestRequest::get()
    ///     .uri("/")
    ///     .insert_header((header::COOKIE, old_cookie))
    ///     .to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "ada");
    /// # });
    /// ```
    #[must_use]
    pub fn cookie_store(key: Key) -> Self {
        Self::new(key, Source::Cookie)
    }

    /// Sessions of actix-session's `RedisSessionStore`, read through `store`'s connections
    /// (a store on the Redis the old app used, of either layout): a JSON string at the
    /// session key, as its default `cache_keygen` names it. Feature `redis` too.
    ///
    /// ```
    /// use actix_kv_session::{compat::ActixSessionImport, storage::RedisStore, SessionMiddleware};
    /// use actix_web::cookie::Key;
    ///
    /// # let old_key = Key::generate();
    /// // Neither store connects before the first request.
    /// let store = RedisStore::new("redis://sessions.example.com:6379")?;
    /// let old_redis = RedisStore::new("redis://old-app.example.com:6379")?;
    /// let middleware = SessionMiddleware::builder(store)
    ///     .import_sessions(ActixSessionImport::redis(old_key, &old_redis))
    ///     .build();
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn redis(key: Key, store: &crate::storage::RedisStore) -> Self {
        Self::new(
            key,
            Source::Redis {
                store: store.clone(),
                keygen: Arc::new(str::to_owned),
            },
        )
    }

    /// The old app's `cache_keygen`: the Redis key of a session key (for
    /// [`redis`](Self::redis) only: the cookie store has no keys).
    ///
    /// ```
    /// use actix_kv_session::{compat::ActixSessionImport, storage::RedisStore};
    /// use actix_web::cookie::Key;
    ///
    /// # let old_key = Key::generate();
    /// let store = RedisStore::new("redis://127.0.0.1:6379")?;
    /// // The old app had
    /// // `RedisSessionStore::builder(url).cache_keygen(|key| format!("app:{key}"))`.
    /// let import =
    ///     ActixSessionImport::redis(old_key, &store).cache_keygen(|key| format!("app:{key}"));
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn cache_keygen(mut self, keygen: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        if let Source::Redis { keygen: old, .. } = &mut self.source {
            *old = Arc::new(keygen);
        }
        self
    }

    /// The old cookie's name (actix-session's default: `id`).
    ///
    /// ```
    /// use actix_kv_session::{compat::ActixSessionImport, ImportSession};
    /// use actix_web::cookie::Key;
    ///
    /// # let old_key = Key::generate();
    /// // The old app had `.cookie_name("sid".to_owned())`.
    /// let import = ActixSessionImport::cookie_store(old_key).cookie_name("sid");
    /// assert_eq!(ImportSession::cookie_name(&import), "sid");
    /// ```
    #[must_use]
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The old cookie's path (default `/`) and domain (default none), to remove it.
    ///
    /// ```
    /// use actix_kv_session::{compat::ActixSessionImport, ImportSession};
    /// use actix_web::cookie::Key;
    ///
    /// # let old_key = Key::generate();
    /// // The old app had `.cookie_path("/app".to_owned())` and
    /// // `.cookie_domain(Some("example.com".to_owned()))`.
    /// let import = ActixSessionImport::cookie_store(old_key)
    ///     .cookie_scope("/app", Some("example.com".to_owned()));
    /// let removal = import.removal_cookie();
    /// assert_eq!(removal.path(), Some("/app"));
    /// assert_eq!(removal.domain(), Some("example.com"));
    /// ```
    #[must_use]
    pub fn cookie_scope(mut self, path: impl Into<String>, domain: Option<String>) -> Self {
        self.path = path.into();
        self.domain = domain;
        self
    }

    /// The old app used `CookieContentSecurity::Signed` (signed, not encrypted).
    ///
    /// ```
    /// use actix_kv_session::{compat::ActixSessionImport, storage::MemoryStore, SessionMiddleware};
    /// use actix_web::cookie::Key;
    ///
    /// # let old_key = Key::generate();
    /// // The old app had `.cookie_content_security(CookieContentSecurity::Signed)`.
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .import_sessions(ActixSessionImport::cookie_store(old_key).signed())
    ///     .build();
    /// ```
    #[must_use]
    pub fn signed(mut self) -> Self {
        self.signed = true;
        self
    }

    /// The cookie's content, if `key` decrypts it (or its signature verifies).
    fn open(&self, value: &str) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(self.cookie_name.clone(), value.to_owned()));
        let opened = if self.signed {
            jar.signed(&self.key).get(&self.cookie_name)
        } else {
            jar.private(&self.key).get(&self.cookie_name)
        };
        if opened.is_none() {
            tracing::debug!("an actix-session cookie failed its check with the key; not imported");
        }
        opened.map(|cookie| cookie.value().to_owned())
    }
}

/// Whether a checked cookie's content is a session key as actix-session makes them (64
/// ASCII letters and digits). With a signed cookie, any other cookie the old app signed
/// with the same key also passes the check (the signature does not cover the name): only
/// a session key may name a record to read and delete.
#[cfg(feature = "redis")]
fn is_session_key(content: &str) -> bool {
    content.len() == 64 && content.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// actix-session's session state: each key with its value as JSON text, in a JSON object.
fn state(json: &[u8]) -> Option<SessionMap> {
    serde_json::from_slice(json).ok()
}

impl ImportSession for ActixSessionImport {
    fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    fn import<'a>(
        &'a self,
        cookie: &'a str,
    ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
        Box::pin(async move {
            let Some(content) = self.open(cookie) else {
                return Ok(None);
            };
            match &self.source {
                Source::Cookie => Ok(state(content.as_bytes())),
                #[cfg(feature = "redis")]
                Source::Redis { store, keygen } => {
                    if !is_session_key(&content) {
                        return Ok(None);
                    }
                    let stored = store.get_raw(&keygen(&content)).await?;
                    Ok(stored.as_deref().and_then(state))
                }
            }
        })
    }

    fn forget<'a>(&'a self, cookie: &'a str) -> LocalBoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            match (&self.source, self.open(cookie)) {
                #[cfg(feature = "redis")]
                (Source::Redis { store, keygen }, Some(content)) if is_session_key(&content) => {
                    store.delete_raw(&keygen(&content)).await
                }
                _ => Ok(()),
            }
        })
    }

    fn removal_cookie(&self) -> Cookie<'static> {
        let mut cookie = crate::import::removal(&self.cookie_name);
        cookie.set_path(self.path.clone());
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie
    }
}
