//! Errors of sessions and stores.

use std::time::Duration;

use actix_web::{http::StatusCode, HttpResponse, ResponseError};

/// A boxed error cause, as stores report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
///
/// Stores report every failure through this type, so the middleware can map it to a
/// response (503 for an unreachable or slow store) without knowing the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or failed to answer (connection refused, pool
    /// exhausted, protocol error).
    #[error("session store unavailable")]
    Unavailable(#[source] BoxError),
    /// The store did not answer within the configured time.
    #[error("session store did not answer within {0:?}")]
    TimedOut(Duration),
    /// The store answered, but what it holds for this session cannot be read (a value of
    /// the wrong type, a record that is not a JSON map).
    #[error("stored session data is corrupt")]
    Corrupt(#[source] BoxError),
    /// Other requests kept changing the session while this one tried to save it, more times
    /// than the store retries.
    #[error("session changed by other requests during {0} save attempts")]
    Contended(u32),
    /// The session is larger than the store accepts.
    #[error("session of {size} bytes is larger than the store accepts ({limit} bytes)")]
    TooLarge {
        /// Size of the serialized session, in bytes.
        size: usize,
        /// The largest size the store accepts, in bytes.
        limit: usize,
    },
}

impl StoreError {
    /// Wraps any error as [`StoreError::Unavailable`].
    pub fn unavailable(cause: impl Into<BoxError>) -> Self {
        Self::Unavailable(cause.into())
    }

    /// Wraps any error as [`StoreError::Corrupt`].
    pub fn corrupt(cause: impl Into<BoxError>) -> Self {
        Self::Corrupt(cause.into())
    }
}

/// An error from the [`Session`](crate::Session) API.
///
/// As an actix `ResponseError` it answers with an opaque body: 503 when the store is down
/// or slow, 500 for everything else. The cause is logged, never sent to the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A value could not be serialized to JSON.
    #[error("cannot serialize the value of session key `{key}`")]
    Serialize {
        /// The session key.
        key: String,
        /// What `serde_json` said.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value could not be deserialized into the requested type.
    #[error("cannot deserialize the value of session key `{key}`")]
    Deserialize {
        /// The session key.
        key: String,
        /// What `serde_json` said.
        #[source]
        source: serde_json::Error,
    },
    /// The session store failed.
    #[error("session store error")]
    Store(#[from] StoreError),
    /// The session data was used before it was loaded: a handle from
    /// [`SessionExt::get_session`](crate::SessionExt::get_session) needs
    /// [`Session::load`](crate::Session::load) first (the `Session` extractor does it).
    #[error("the session was used before it was loaded (call `Session::load` first)")]
    NotLoaded,
    /// No [`SessionMiddleware`](crate::SessionMiddleware) wraps this route.
    #[error("`SessionMiddleware` is not installed for this route")]
    MissingMiddleware,
}

impl ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Store(
                StoreError::Unavailable(_) | StoreError::TimedOut(_) | StoreError::Contended(_),
            ) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        log_error(self);
        opaque_response(self.status_code())
    }
}

/// A response that tells the client nothing about the cause.
pub(crate) fn opaque_response(status: StatusCode) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(status.canonical_reason().unwrap_or("Error"))
}

/// Logs an error with its whole cause chain.
pub(crate) fn log_error(err: &(dyn std::error::Error + 'static)) {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::error!(error = %chain, "session error");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_outages_are_503_and_bugs_are_500() {
        let down = SessionError::from(StoreError::unavailable("connection refused"));
        assert_eq!(down.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        let slow = SessionError::from(StoreError::TimedOut(Duration::from_secs(2)));
        assert_eq!(slow.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        let corrupt = SessionError::from(StoreError::corrupt("not a hash"));
        assert_eq!(corrupt.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            SessionError::NotLoaded.status_code(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn causes_are_chained() {
        let err = SessionError::from(StoreError::unavailable("connection refused"));
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), "session store unavailable");
        assert_eq!(source.source().unwrap().to_string(), "connection refused");
    }
}
