//! Typed sessions: the `SessionData` trait and the `Typed<T>` extractor.

use std::{
    fmt,
    ops::{Deref, DerefMut},
};

use actix_web::{
    dev::Payload, http::StatusCode, FromRequest, HttpRequest, HttpResponse, ResponseError,
};
use futures_util::future::LocalBoxFuture;

use crate::{
    error::{log_error, opaque_response},
    Session, SessionError, SessionExt,
};

/// A struct whose fields are session keys. Derive it with `#[derive(SessionData)]`
/// (feature `derive`) rather than implementing it: the derive's documentation lists the
/// attributes.
///
/// ```
/// use actix_kv_session::SessionData;
///
/// #[derive(SessionData)]
/// #[session(prefix = "cart.")]
/// struct Cart {
///     items: Vec<String>,
///     coupon: Option<String>,
///     #[session(skip)]
///     scratch: String,
/// }
///
/// assert_eq!(Cart::KEYS, ["cart.items", "cart.coupon"]);
/// ```
pub trait SessionData: Sized {
    /// The session keys the fields are stored under, in field order (skipped fields left
    /// out).
    ///
    /// ```
    /// use actix_kv_session::{Session, SessionData};
    ///
    /// #[derive(SessionData)]
    /// #[session(prefix = "cart.")]
    /// struct Cart {
    ///     items: Vec<String>,
    ///     coupon: Option<String>,
    /// }
    ///
    /// /// Empties the cart, whatever else the session holds.
    /// async fn checkout(session: Session) -> actix_web::Result<&'static str> {
    ///     for key in Cart::KEYS {
    ///         session.remove(key)?;
    ///     }
    ///     Ok("ordered")
    /// }
    /// ```
    const KEYS: &'static [&'static str];

    /// Reads the fields from a loaded session.
    ///
    /// # Errors
    ///
    /// [`TypedError::Missing`] or [`TypedError::Invalid`] for a required field.
    #[doc(hidden)]
    fn read_from(reader: &mut protocol::Reader<'_>) -> Result<Self, TypedError>;

    /// Writes the fields back; the writer skips those whose value did not change.
    #[doc(hidden)]
    fn write_to(&self, writer: &mut protocol::Writer<'_>);
}

/// Why a typed session could not be extracted.
///
/// As a response it is 400 with an opaque body, or the session's own status for a store
/// failure (503). To answer differently, extract `Option<Typed<T>>` (a session without the
/// data is `None`) or `Result<Typed<T>, TypedError>` and decide in the handler.
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, SessionData, SessionMiddleware, Typed, TypedError};
/// use actix_web::{test, web, App};
///
/// #[derive(SessionData)]
/// struct Login {
///     user: String,
/// }
///
/// async fn account(login: Result<Typed<Login>, TypedError>) -> actix_web::Result<String> {
///     match login {
///         Ok(login) => Ok(format!("hello {}", login.user)),
///         Err(TypedError::Missing { .. }) => Ok("please log in".to_owned()),
///         Err(err) => Err(err.into()),
///     }
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let app = test::init_service(
///     App::new()
///         .wrap(SessionMiddleware::new(MemoryStore::default()))
///         .route("/account", web::get().to(account)),
/// )
/// .await;
/// let req = test::TestRequest::get().uri("/account").to_request();
/// assert_eq!(test::call_and_read_body(&app, req).await, "please log in");
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    /// A required field's key is not in the session.
    #[error("session key `{key}` is missing")]
    Missing {
        /// The session key.
        key: &'static str,
    },
    /// A required field's stored value does not fit the field's type (the struct changed
    /// since the session was written, or the value is not JSON).
    #[error("session key `{key}` holds a value that does not fit its field")]
    Invalid {
        /// The session key.
        key: &'static str,
        /// What `serde_json` said.
        #[source]
        source: serde_json::Error,
    },
    /// The session could not be loaded.
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl ResponseError for TypedError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Session(err) => err.status_code(),
            Self::Missing { .. } | Self::Invalid { .. } => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Session(err) => err.error_response(),
            Self::Missing { .. } => opaque_response(self.status_code()),
            Self::Invalid { .. } => {
                log_error(self);
                opaque_response(self.status_code())
            }
        }
    }
}

/// The extractor of a [`SessionData`] struct: loads it from the request's session (the
/// same single load any [`Session`] of the request shares), derefs to it, and after the
/// handler writes back the fields whose value changed, and only those, so two typed views
/// or two concurrent requests that change different fields do not overwrite each other.
///
/// ```
/// use actix_kv_session::{SessionData, Typed};
///
/// #[derive(SessionData)]
/// struct Visits {
///     #[session(key = "foo", default)]
///     count: u64,
/// }
///
/// async fn index(mut visits: Typed<Visits>) -> String {
///     visits.count += 1;
///     visits.count.to_string()
/// }
/// ```
///
/// The write-back happens when the extractor is dropped, at the end of the handler; the
/// middleware then saves. For an owned value, read one with [`Session::get_typed`]: it is
/// a copy, and changes made to it are not saved.
pub struct Typed<T: SessionData> {
    value: T,
    baselines: protocol::Baselines,
    session: Session,
}

impl<T: SessionData> Typed<T> {
    /// Reads `T` from a session that is loaded.
    ///
    /// # Errors
    ///
    /// As [`SessionData`]'s fields require; [`SessionError::NotLoaded`] when `session` is
    /// not loaded.
    ///
    /// ```
    /// use actix_kv_session::{
    ///     storage::MemoryStore, Session, SessionData, SessionMiddleware, Typed,
    /// };
    /// use actix_web::{test, web, App};
    ///
    /// #[derive(SessionData)]
    /// struct Visits {
    ///     #[session(default)]
    ///     count: u64,
    /// }
    ///
    /// async fn index(session: Session) -> actix_web::Result<String> {
    ///     // The `Session` extractor loaded the session.
    ///     let mut visits = Typed::<Visits>::from_session(&session)?;
    ///     visits.count += 1;
    ///     Ok(visits.count.to_string())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/", web::get().to(index)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "1");
    /// # });
    /// ```
    pub fn from_session(session: &Session) -> Result<Self, TypedError> {
        let (value, baselines) = session.read(|data| {
            let mut reader = protocol::Reader::new(data, T::KEYS.len());
            T::read_from(&mut reader).map(|value| (value, reader.baselines))
        })??;
        Ok(Self {
            value,
            baselines,
            session: session.clone(),
        })
    }

    /// The session this view belongs to: for [`Session::renew`] and [`Session::purge`].
    ///
    /// ```
    /// use actix_kv_session::{SessionData, Typed};
    ///
    /// #[derive(SessionData)]
    /// struct Auth {
    ///     user: Option<String>,
    /// }
    ///
    /// async fn login(mut auth: Typed<Auth>) -> actix_web::Result<&'static str> {
    ///     auth.user = Some("ada".to_owned());
    ///     auth.session().renew()?; // a fresh id at log-in
    ///     Ok("logged in")
    /// }
    /// ```
    #[must_use]
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl<T: SessionData> Deref for Typed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: SessionData> DerefMut for Typed<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: SessionData> Drop for Typed<T> {
    fn drop(&mut self) {
        let mut writer = protocol::Writer {
            session: &self.session,
            baselines: &self.baselines,
        };
        self.value.write_to(&mut writer);
    }
}

impl<T: SessionData + fmt::Debug> fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Typed").field(&self.value).finish()
    }
}

impl<T: SessionData + 'static> FromRequest for Typed<T> {
    type Error = TypedError;
    type Future = LocalBoxFuture<'static, Result<Self, TypedError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req.get_session();
        Box::pin(async move {
            session.load().await?;
            let typed = Self::from_session(&session);
            if let Err(err @ TypedError::Invalid { .. }) = &typed {
                tracing::warn!(error = %err, "typed session rejected");
            }
            typed
        })
    }
}

/// What the derive's generated code calls. Not public API: the crate root re-exports it,
/// hidden, under a versioned name (`__private_v1`) that the derive names.
#[doc(hidden)]
pub mod protocol {
    pub use serde;

    use serde::{de::DeserializeOwned, Serialize};

    use super::TypedError;
    use crate::{storage::SessionMap, Session};

    /// What a field serialized to when it was read: the writer writes a field back only if
    /// it serializes differently now.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Baseline {
        /// Read as `None`: the key was absent, or held a value that does not fit (left as
        /// it is unless the handler sets the field).
        Absent,
        /// This JSON: the stored value, or the default given for an absent key or for a
        /// value that does not fit.
        Json(String),
    }

    /// The baselines of one read, by session key, so that the writer finds a field's
    /// baseline whatever order the fields are written in. A key without a baseline is
    /// written whatever its value: [`Session::insert_typed`] writes with none, and a value
    /// that could not be serialized when it was read gets none.
    ///
    /// A struct has a handful of fields: a list searched in order beats a map.
    #[derive(Debug, Default)]
    pub(crate) struct Baselines(Vec<(&'static str, Baseline)>);

    impl Baselines {
        fn get(&self, key: &str) -> Option<&Baseline> {
            self.0
                .iter()
                .find(|(seen, _)| *seen == key)
                .map(|(_, baseline)| baseline)
        }
    }

    /// Reads fields from a loaded session, remembering what each serialized to.
    #[derive(Debug)]
    pub struct Reader<'a> {
        data: &'a SessionMap,
        pub(super) baselines: Baselines,
    }

    impl<'a> Reader<'a> {
        /// A reader of `data` for a struct of `fields` stored fields.
        pub(super) fn new(data: &'a SessionMap, fields: usize) -> Self {
            Self {
                data,
                baselines: Baselines(Vec::with_capacity(fields)),
            }
        }
    }

    impl Reader<'_> {
        fn parse<T: DeserializeOwned>(&self, key: &'static str) -> Option<Result<T, TypedError>> {
            self.data.get(key).map(|json| {
                serde_json::from_str(json).map_err(|source| TypedError::Invalid { key, source })
            })
        }

        fn remember<T: Serialize>(&mut self, key: &'static str, value: &T) {
            if let Ok(json) = serde_json::to_string(value) {
                self.baselines.0.push((key, Baseline::Json(json)));
            }
        }

        fn remember_absent(&mut self, key: &'static str) {
            self.baselines.0.push((key, Baseline::Absent));
        }

        /// A field that must be present and fit.
        ///
        /// # Errors
        ///
        /// [`TypedError::Missing`], [`TypedError::Invalid`].
        pub fn required<T: Serialize + DeserializeOwned>(
            &mut self,
            key: &'static str,
        ) -> Result<T, TypedError> {
            let value = self.parse(key).ok_or(TypedError::Missing { key })??;
            self.remember(key, &value);
            Ok(value)
        }

        /// An `Option<T>` field: `None` when absent, or when the stored value does not fit.
        ///
        /// # Errors
        ///
        /// Never; `Result` for the derive's uniformity.
        pub fn optional<T: Serialize + DeserializeOwned>(
            &mut self,
            key: &'static str,
        ) -> Result<Option<T>, TypedError> {
            match self.parse(key) {
                None => {
                    self.remember_absent(key);
                    Ok(None)
                }
                Some(Ok(value)) => {
                    self.remember(key, &value);
                    Ok(Some(value))
                }
                Some(Err(err)) => {
                    fallback_warning(&err);
                    // Not written back unless the handler sets it: during a rolling deploy,
                    // the value may be what the other version of the app wrote.
                    self.remember_absent(key);
                    Ok(None)
                }
            }
        }

        /// A field that takes `default()` when absent, or when the stored value does not fit.
        ///
        /// # Errors
        ///
        /// Never; `Result` for the derive's uniformity.
        pub fn or_else<T: Serialize + DeserializeOwned>(
            &mut self,
            key: &'static str,
            default: impl FnOnce() -> T,
        ) -> Result<T, TypedError> {
            let value = match self.parse(key) {
                None => default(),
                Some(Ok(value)) => value,
                Some(Err(err)) => {
                    fallback_warning(&err);
                    // Not written back unless the handler changes it from the default.
                    default()
                }
            };
            self.remember(key, &value);
            Ok(value)
        }
    }

    fn fallback_warning(err: &TypedError) {
        if let TypedError::Invalid { key, source } = err {
            tracing::warn!(
                key,
                error = %source,
                "stored session value does not fit its field; using the default, and leaving \
                 the stored value as it is unless the handler sets the field"
            );
        }
    }

    /// Writes changed fields back into the session.
    #[derive(Debug)]
    pub struct Writer<'a> {
        pub(super) session: &'a Session,
        pub(super) baselines: &'a Baselines,
    }

    impl Writer<'_> {
        /// A required or defaulted field.
        pub fn value<T: Serialize>(&mut self, key: &'static str, value: &T) {
            let json = match serde_json::to_string(value) {
                Ok(json) => json,
                Err(source) => {
                    return self.failed(&crate::SessionError::Serialize {
                        key: key.to_owned(),
                        source,
                    })
                }
            };
            let unchanged =
                matches!(self.baselines.get(key), Some(Baseline::Json(seen)) if *seen == json);
            if !unchanged {
                self.put(key, Some(json));
            }
        }

        /// An `Option<T>` field: `None` removes the key.
        pub fn optional<T: Serialize>(&mut self, key: &'static str, value: &Option<T>) {
            match value {
                Some(inner) => self.value(key, inner),
                None => {
                    if self.baselines.get(key) != Some(&Baseline::Absent) {
                        self.put(key, None);
                    }
                }
            }
        }

        fn put(&self, key: &'static str, json: Option<String>) {
            if let Err(err) = self.session.put_json(key, json) {
                self.failed(&err);
            }
        }

        fn failed(&self, err: &crate::SessionError) {
            crate::error::log_error(err);
            self.session
                .fail(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
}

impl Session {
    /// Reads a [`SessionData`] struct from this session: an owned copy, not written back
    /// (the [`Typed`] extractor is the view whose changes are saved). A `Typed` view still
    /// alive has not written its changes back yet: drop it first to see them here.
    ///
    /// # Errors
    ///
    /// As [`Typed::from_session`].
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionData, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// #[derive(SessionData)]
    /// struct Cart {
    ///     items: Vec<String>,
    /// }
    ///
    /// async fn index(session: Session) -> actix_web::Result<String> {
    ///     session.insert("items", ["apple", "pear"])?;
    ///     let cart: Cart = session.get_typed()?;
    ///     Ok(cart.items.join(","))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/", web::get().to(index)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "apple,pear");
    /// # });
    /// ```
    pub fn get_typed<T: SessionData>(&self) -> Result<T, TypedError> {
        self.read(|data| T::read_from(&mut protocol::Reader::new(data, T::KEYS.len())))?
    }

    /// Writes every field of a [`SessionData`] struct into this session (an `Option` field
    /// that is `None` removes its key).
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`] when the session is not loaded.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionData, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// #[derive(SessionData)]
    /// struct Profile {
    ///     user: String,
    ///     theme: Option<String>,
    /// }
    ///
    /// async fn login(session: Session) -> actix_web::Result<String> {
    ///     let profile = Profile { user: "ada".to_owned(), theme: None };
    ///     session.insert_typed(&profile)?;
    ///     // The same keys as `Session::get` and `insert` see.
    ///     Ok(session.get::<String>("user")?.unwrap_or_default())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/login", web::post().to(login)),
    /// )
    /// .await;
    /// let req = test::TestRequest::post().uri("/login").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "ada");
    /// # });
    /// ```
    pub fn insert_typed<T: SessionData>(&self, value: &T) -> Result<(), SessionError> {
        self.read(|_| ())?;
        // No baselines: every field is written.
        let mut writer = protocol::Writer {
            session: self,
            baselines: &protocol::Baselines::default(),
        };
        value.write_to(&mut writer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::future::LocalBoxFuture;

    use super::{protocol, SessionData, Typed, TypedError};
    use crate::{
        session::{CookieState, LoadSession},
        storage::SessionMap,
        Session, SessionId, SessionStatus, StoreError,
    };

    /// A store that holds one record.
    struct OneRecord(SessionMap);

    impl LoadSession for OneRecord {
        fn load<'a>(
            &'a self,
            _id: &'a SessionId,
        ) -> LocalBoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
            Box::pin(async { Ok(Some(self.0.clone())) })
        }

        fn absolute_timeout(&self) -> Option<std::time::Duration> {
            None
        }

        fn verify(&self, _cookie: &crate::signing::SignedCookie) -> Option<usize> {
            None
        }

        fn max_value_bytes(&self) -> Option<usize> {
            None
        }

        fn user_sessions<'a>(
            &'a self,
            _user: &'a str,
            _current: Option<&'a SessionId>,
        ) -> LocalBoxFuture<'a, Result<Vec<crate::UserSession>, StoreError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn purge_user<'a>(
            &'a self,
            _user: &'a str,
            _except: Option<&'a SessionId>,
        ) -> LocalBoxFuture<'a, Result<usize, StoreError>> {
            Box::pin(async { Ok(0) })
        }
    }

    /// Writes its fields in the opposite order to the one it reads them in.
    struct Swapped {
        a: u8,
        b: u8,
    }

    impl SessionData for Swapped {
        const KEYS: &'static [&'static str] = &["a", "b"];

        fn read_from(reader: &mut protocol::Reader<'_>) -> Result<Self, TypedError> {
            Ok(Self {
                a: reader.required("a")?,
                b: reader.required("b")?,
            })
        }

        fn write_to(&self, writer: &mut protocol::Writer<'_>) {
            writer.value("b", &self.b);
            writer.value("a", &self.a);
        }
    }

    #[actix_web::test]
    async fn fields_are_matched_to_what_was_read_by_key_whatever_the_order() {
        let record = [("a", "1"), ("b", "2")]
            .map(|(key, json)| (key.to_owned(), json.to_owned()))
            .into();
        let session = Session::new(
            CookieState::Valid(SessionId::generate()),
            Arc::new(OneRecord(record)),
        );
        session.load().await.unwrap();

        drop(Typed::<Swapped>::from_session(&session).unwrap());
        assert_eq!(
            session.status(),
            SessionStatus::Unchanged,
            "nothing changed"
        );

        let mut typed = Typed::<Swapped>::from_session(&session).unwrap();
        // What `b` was read as: matched by position, `a` would look unchanged and be lost.
        typed.a = 2;
        drop(typed);
        assert_eq!(session.get::<u8>("a").unwrap(), Some(2));
        assert_eq!(session.get::<u8>("b").unwrap(), Some(2));
    }
}
