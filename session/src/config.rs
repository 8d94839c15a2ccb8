//! Settings of the session middleware.

use std::time::Duration;

use actix_web::cookie::{time, Cookie, SameSite};

use crate::{signing::Signer, storage::ConflictPolicy, SessionId};

/// When a session's time to live is extended.
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware, TtlExtension};
/// use actix_web::{test, web, App};
///
/// async fn read(session: Session) -> actix_web::Result<String> {
///     Ok(session.get::<String>("user")?.unwrap_or_default())
/// }
/// async fn log_in(session: Session) -> actix_web::Result<&'static str> {
///     session.insert("user", "ada")?;
///     Ok("welcome")
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// for (policy, cookies_on_a_read) in [
///     (TtlExtension::OnChange, 0),
///     (TtlExtension::OnEveryRequest, 1),
/// ] {
///     let middleware = SessionMiddleware::builder(MemoryStore::default())
///         .ttl_extension(policy)
///         .build();
///     let app = test::init_service(
///         App::new()
///             .wrap(middleware)
///             .route("/login", web::post().to(log_in))
///             .route("/", web::get().to(read)),
///     )
///     .await;
///     let req = test::TestRequest::post().uri("/login").to_request();
///     let res = test::call_service(&app, req).await;
///     let cookie = res.response().cookies().next().unwrap().into_owned();
///
///     // A request that only reads: its TTL (and the cookie's Max-Age) is extended only
///     // under `OnEveryRequest`.
///     let req = test::TestRequest::get().uri("/").cookie(cookie).to_request();
///     let res = test::call_service(&app, req).await;
///     assert_eq!(res.response().cookies().count(), cookies_on_a_read);
/// }
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TtlExtension {
    /// When the request changed the session (the default): reading a session costs one
    /// store round-trip, not two. A session that is only read expires one TTL after its last
    /// change.
    #[default]
    OnChange,
    /// On every request that uses the session, as `sanic_session` does: a session expires
    /// one TTL after its last use. Costs a second round-trip on requests that only read.
    OnEveryRequest,
}

/// The settings of a [`SessionMiddleware`](crate::SessionMiddleware).
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub(crate) cookie_name: String,
    pub(crate) ttl: Duration,
    pub(crate) browser_session: bool,
    pub(crate) http_only: bool,
    pub(crate) secure: bool,
    pub(crate) same_site: SameSite,
    pub(crate) domain: Option<String>,
    pub(crate) path: String,
    pub(crate) ttl_extension: TtlExtension,
    pub(crate) conflict_policy: ConflictPolicy,
    pub(crate) store_timeout: Duration,
    /// A session ends this long after it was created or last renewed, however active.
    pub(crate) absolute_timeout: Option<Duration>,
    /// Under [`TtlExtension::OnEveryRequest`], the TTL is extended at most this often.
    pub(crate) extension_interval: Option<Duration>,
    /// Signs and verifies the cookie, if set.
    pub(crate) signer: Option<Signer>,
    /// The largest session a save writes: keys and JSON values, in bytes.
    pub(crate) max_session_bytes: Option<usize>,
    /// The largest value `insert` accepts, as JSON, in bytes.
    pub(crate) max_value_bytes: Option<usize>,
}

/// The longest TTL the middleware accepts: a century, far past what a cookie keeps (browsers
/// cap Max-Age at 400 days) and safely inside what every store can count.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The default [`max_session_bytes`](crate::SessionMiddlewareBuilder::max_session_bytes):
/// under memcached's default 1 MiB item limit (with the JSON object's own bytes), and the
/// memory store's default `max_session_bytes`.
pub(crate) const DEFAULT_MAX_SESSION_BYTES: usize = 1_000_000;

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "session".to_owned(),
            ttl: Duration::from_secs(30 * 24 * 3600),
            browser_session: false,
            http_only: true,
            secure: true,
            same_site: SameSite::Lax,
            domain: None,
            path: "/".to_owned(),
            ttl_extension: TtlExtension::OnChange,
            conflict_policy: ConflictPolicy::LastWriteWins,
            store_timeout: Duration::from_secs(2),
            absolute_timeout: None,
            extension_interval: None,
            signer: None,
            max_session_bytes: Some(DEFAULT_MAX_SESSION_BYTES),
            max_value_bytes: None,
        }
    }
}

impl SessionConfig {
    /// Checks the settings; a message naming the bad one otherwise.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.cookie_name.is_empty() || !self.cookie_name.bytes().all(is_token_byte) {
            return Err(format!(
                "invalid session cookie name {:?}: use letters, digits and !#$%&'*+-.^_`|~",
                self.cookie_name
            ));
        }
        if self.ttl.as_secs() == 0 {
            return Err("the session TTL must be at least one second".to_owned());
        }
        if self.ttl > MAX_TTL {
            return Err(format!(
                "the session TTL must be at most {} days (stores count expiry times in \
                 milliseconds or, memcached, up to 2038)",
                MAX_TTL.as_secs() / 86_400
            ));
        }
        if self.store_timeout.is_zero() {
            return Err("the store timeout must be more than zero".to_owned());
        }
        if self.absolute_timeout.is_some_and(|t| t.as_secs() == 0) {
            return Err("the absolute timeout must be at least one second".to_owned());
        }
        for (what, value) in [("path", Some(&self.path)), ("domain", self.domain.as_ref())] {
            if let Some(value) = value {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
                    return Err(format!("invalid session cookie {what} {value:?}"));
                }
            }
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err("SameSite=None needs Secure: browsers drop such cookies".to_owned());
        }
        self.validate_prefix()
    }

    /// The rules browsers enforce for cookie names that start with `__Secure-` or `__Host-`
    /// (matched without regard to case, as browsers match them): they drop such a cookie
    /// unless it is Secure, and for `__Host-` also Path=/ without Domain.
    fn validate_prefix(&self) -> Result<(), String> {
        let name = &self.cookie_name;
        let starts = |prefix: &str| {
            name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        let prefix = if starts("__Host-") {
            "__Host-"
        } else if starts("__Secure-") {
            "__Secure-"
        } else {
            return Ok(());
        };
        if !self.secure {
            return Err(format!(
                "the session cookie name {name:?} starts with `{prefix}`, which needs \
                 `secure(true)`: browsers drop such a cookie without Secure"
            ));
        }
        if prefix == "__Host-" {
            if self.path != "/" {
                return Err(format!(
                    "the session cookie name {name:?} starts with `__Host-`, which needs \
                     path \"/\" (not {:?}): browsers drop such a cookie otherwise",
                    self.path
                ));
            }
            if let Some(domain) = &self.domain {
                return Err(format!(
                    "the session cookie name {name:?} starts with `__Host-`, which allows no \
                     domain (not {domain:?}): browsers drop such a cookie otherwise"
                ));
            }
        }
        Ok(())
    }

    /// The cookie that carries `id`.
    pub(crate) fn session_cookie(&self, id: &SessionId) -> Cookie<'static> {
        self.cookie_with(id.as_str().to_owned(), self.ttl, self.browser_session)
    }

    /// The session cookie holding `value`, with Max-Age `ttl` unless `browser_session`.
    pub(crate) fn cookie_with(
        &self,
        value: String,
        ttl: Duration,
        browser_session: bool,
    ) -> Cookie<'static> {
        let mut cookie = self.base_cookie(value);
        if !browser_session {
            cookie.set_max_age(ttl_as_cookie_duration(ttl));
        }
        cookie
    }

    /// The cookie that tells the browser to forget the session cookie: same name, Path,
    /// Domain, Secure and SameSite, or the browser would keep the original.
    pub(crate) fn removal_cookie(&self) -> Cookie<'static> {
        let mut cookie = self.base_cookie(String::new());
        cookie.make_removal();
        cookie
    }

    fn base_cookie(&self, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::new(self.cookie_name.clone(), value);
        cookie.set_path(self.path.clone());
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie.set_http_only(self.http_only);
        cookie.set_secure(self.secure);
        cookie.set_same_site(self.same_site);
        cookie
    }
}

fn ttl_as_cookie_duration(ttl: Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

/// RFC 6265 cookie-name bytes (an RFC 7230 token).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_table() {
        let config = SessionConfig::default();
        assert!(config.validate().is_ok());
        let cookie = config.session_cookie(&SessionId::generate());
        assert_eq!(cookie.name(), "session");
        assert_eq!(cookie.max_age(), Some(time::Duration::days(30)));
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        assert_eq!(cookie.path(), Some("/"));
        assert_eq!(cookie.domain(), None);
    }

    #[test]
    fn removal_cookie_keeps_the_scope() {
        let config = SessionConfig {
            domain: Some("example.com".into()),
            path: "/app".into(),
            same_site: SameSite::Strict,
            ..SessionConfig::default()
        };
        let cookie = config.removal_cookie();
        assert_eq!(cookie.value(), "");
        assert_eq!(cookie.max_age(), Some(time::Duration::ZERO));
        assert_eq!(cookie.domain(), Some("example.com"));
        assert_eq!(cookie.path(), Some("/app"));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        assert_eq!(cookie.secure(), Some(true));
    }

    #[test]
    fn bad_settings_are_named() {
        let bad_name = SessionConfig {
            cookie_name: "a b".into(),
            ..SessionConfig::default()
        };
        assert!(bad_name.validate().unwrap_err().contains("cookie name"));
        let bad_path = SessionConfig {
            path: "/;x".into(),
            ..SessionConfig::default()
        };
        assert!(bad_path.validate().unwrap_err().contains("path"));
        let zero = SessionConfig {
            ttl: Duration::ZERO,
            ..SessionConfig::default()
        };
        assert!(zero.validate().unwrap_err().contains("TTL"));
        let endless = SessionConfig {
            ttl: Duration::MAX,
            ..SessionConfig::default()
        };
        assert!(endless.validate().unwrap_err().contains("at most"));
        let none_insecure = SessionConfig {
            same_site: SameSite::None,
            secure: false,
            ..SessionConfig::default()
        };
        assert!(none_insecure.validate().unwrap_err().contains("Secure"));
    }

    #[test]
    fn prefixed_names_need_what_browsers_require() {
        let named = |name: &str| SessionConfig {
            cookie_name: name.into(),
            ..SessionConfig::default()
        };
        for name in [
            "__Host-session",
            "__Secure-session",
            "__host-session",
            "session",
        ] {
            assert_eq!(named(name).validate(), Ok(()), "{name}");
        }
        let insecure = SessionConfig {
            secure: false,
            ..named("__Secure-session")
        };
        assert!(insecure.validate().unwrap_err().contains("secure(true)"));
        let insecure_host = SessionConfig {
            secure: false,
            ..named("__HOST-session")
        };
        assert!(insecure_host.validate().unwrap_err().contains("`__Host-`"));
        let with_domain = SessionConfig {
            domain: Some("example.com".into()),
            ..named("__Host-session")
        };
        assert!(with_domain.validate().unwrap_err().contains("no domain"));
        let with_path = SessionConfig {
            path: "/app".into(),
            ..named("__Host-session")
        };
        assert!(with_path.validate().unwrap_err().contains("path"));
        let secure_with_domain = SessionConfig {
            domain: Some("example.com".into()),
            path: "/app".into(),
            ..named("__Secure-session")
        };
        assert_eq!(secure_with_domain.validate(), Ok(()));
    }
}
