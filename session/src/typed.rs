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
pub trait SessionData: Sized {
    /// The session keys the fields are stored under, in field order (skipped fields left
    /// out).
    const KEYS: &'static [&'static str];

    /// Reads the fields from a loaded session.
    ///
    /// # Errors
    ///
    /// [`TypedError::Missing`] or [`TypedError::Invalid`] for a required field.
    #[doc(hidden)]
    fn read_from(reader: &mut __private::Reader<'_>) -> Result<Self, TypedError>;

    /// Writes the fields back; the writer skips those whose value did not change.
    #[doc(hidden)]
    fn write_to(&self, writer: &mut __private::Writer<'_>);
}

/// Why a typed session could not be extracted.
///
/// As a response it is 400 with an opaque body, or the session's own status for a store
/// failure (503). To answer differently, extract `Option<Typed<T>>` (a session without the
/// data is `None`) or `Result<Typed<T>, TypedError>` and decide in the handler.
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
/// middleware then saves. [`Typed::into_inner`] writes back at once and hands the value
/// over: changes made to it afterwards are not saved.
pub struct Typed<T: SessionData> {
    value: Option<T>,
    baselines: Vec<__private::Baseline>,
    session: Session,
}

impl<T: SessionData> Typed<T> {
    /// Reads `T` from a session that is loaded.
    ///
    /// # Errors
    ///
    /// As [`SessionData`]'s fields require; [`SessionError::NotLoaded`] when `session` is
    /// not loaded.
    pub fn from_session(session: &Session) -> Result<Self, TypedError> {
        let (value, baselines) = session.read(|data| {
            let mut reader = __private::Reader {
                data,
                baselines: Vec::with_capacity(T::KEYS.len()),
            };
            T::read_from(&mut reader).map(|value| (value, reader.baselines))
        })??;
        Ok(Self {
            value: Some(value),
            baselines,
            session: session.clone(),
        })
    }

    /// The session this view belongs to: for [`Session::renew`] and [`Session::purge`].
    #[must_use]
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Writes back the changes now and returns the value.
    #[must_use]
    #[allow(
        clippy::missing_panics_doc,
        reason = "the value is taken only here, once"
    )]
    pub fn into_inner(mut self) -> T {
        self.write_back();
        self.value
            .take()
            .expect("the value is present until into_inner or drop")
    }

    fn write_back(&mut self) {
        let Some(value) = &self.value else { return };
        let mut writer = __private::Writer {
            session: &self.session,
            baselines: &self.baselines,
            next: 0,
        };
        value.write_to(&mut writer);
    }
}

impl<T: SessionData> Deref for Typed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
            .as_ref()
            .expect("the value is present until into_inner or drop")
    }
}

impl<T: SessionData> DerefMut for Typed<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
            .as_mut()
            .expect("the value is present until into_inner or drop")
    }
}

impl<T: SessionData> Drop for Typed<T> {
    fn drop(&mut self) {
        self.write_back();
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

/// Support for the derive. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use serde;

    use serde::{de::DeserializeOwned, Serialize};

    use super::TypedError;
    use crate::{storage::SessionMap, Session};

    /// What a field serialized to when it was read: the writer writes a field back only if
    /// it serializes differently now.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Baseline {
        /// Read as `None`: the key was absent, or held a value that does not fit (left as
        /// it is unless the handler sets the field).
        Absent,
        /// This JSON: the stored value, or the default given for an absent key or for a
        /// value that does not fit.
        Json(String),
        /// Write the field whatever its value (`Session::insert_typed`).
        Force,
    }

    /// Reads fields from a loaded session, remembering what each serialized to.
    #[derive(Debug)]
    pub struct Reader<'a> {
        pub(super) data: &'a SessionMap,
        pub(super) baselines: Vec<Baseline>,
    }

    impl Reader<'_> {
        fn parse<T: DeserializeOwned>(&self, key: &'static str) -> Option<Result<T, TypedError>> {
            self.data.get(key).map(|json| {
                serde_json::from_str(json).map_err(|source| TypedError::Invalid { key, source })
            })
        }

        fn remember<T: Serialize>(&mut self, value: &T) {
            let baseline = serde_json::to_string(value).map_or(Baseline::Force, Baseline::Json);
            self.baselines.push(baseline);
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
            self.remember(&value);
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
                    self.baselines.push(Baseline::Absent);
                    Ok(None)
                }
                Some(Ok(value)) => {
                    self.remember(&value);
                    Ok(Some(value))
                }
                Some(Err(err)) => {
                    fallback_warning(&err);
                    // Not written back unless the handler sets it: during a rolling deploy,
                    // the value may be what the other version of the app wrote.
                    self.baselines.push(Baseline::Absent);
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
            match self.parse(key) {
                None => {
                    let value = default();
                    self.remember(&value);
                    Ok(value)
                }
                Some(Ok(value)) => {
                    self.remember(&value);
                    Ok(value)
                }
                Some(Err(err)) => {
                    fallback_warning(&err);
                    // Not written back unless the handler changes it from the default.
                    let value = default();
                    self.remember(&value);
                    Ok(value)
                }
            }
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
        pub(super) baselines: &'a [Baseline],
        pub(super) next: usize,
    }

    impl Writer<'_> {
        fn baseline(&mut self) -> Option<&Baseline> {
            let baseline = self.baselines.get(self.next);
            self.next += 1;
            baseline
        }

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
            let unchanged = matches!(self.baseline(), Some(Baseline::Json(seen)) if *seen == json);
            if !unchanged {
                self.put(key, Some(json));
            }
        }

        /// An `Option<T>` field: `None` removes the key.
        pub fn optional<T: Serialize>(&mut self, key: &'static str, value: &Option<T>) {
            match value {
                Some(inner) => self.value(key, inner),
                None => {
                    if self.baseline() != Some(&Baseline::Absent) {
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
    /// Reads a [`SessionData`] struct from this session.
    ///
    /// # Errors
    ///
    /// As [`Typed::from_session`].
    pub fn get_typed<T: SessionData>(&self) -> Result<T, TypedError> {
        Typed::from_session(self).map(Typed::into_inner)
    }

    /// Writes every field of a [`SessionData`] struct into this session (an `Option` field
    /// that is `None` removes its key).
    ///
    /// # Errors
    ///
    /// [`SessionError::NotLoaded`] when the session is not loaded.
    pub fn insert_typed<T: SessionData>(&self, value: &T) -> Result<(), SessionError> {
        self.read(|_| ())?;
        let baselines = vec![__private::Baseline::Force; T::KEYS.len()];
        let mut writer = __private::Writer {
            session: self,
            baselines: &baselines,
            next: 0,
        };
        value.write_to(&mut writer);
        Ok(())
    }
}
