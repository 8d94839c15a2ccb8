//! Errors of sessions and stores, and the log that reports store failures without
//! flooding.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use actix_web::{http::StatusCode, HttpResponse, ResponseError};

/// A boxed error cause, as stores report them.
///
/// ```
/// use actix_kv_session::{BoxError, StoreError};
///
/// // What a store of your own gets from its client library, kept as the cause.
/// fn connect(addr: &str) -> Result<(), BoxError> {
///     Err(format!("connection to {addr} refused").into())
/// }
///
/// let err = StoreError::unavailable(connect("10.0.0.1:6379").unwrap_err());
/// let cause = std::error::Error::source(&err).unwrap();
/// assert_eq!(cause.to_string(), "connection to 10.0.0.1:6379 refused");
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
///
/// Stores report every failure through this type, so the middleware can map it to a
/// response (503 for an unreachable or slow store) without knowing the backend.
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::{SessionError, StoreError};
/// use actix_web::{http::StatusCode, ResponseError};
///
/// let status = |err: StoreError| SessionError::from(err).status_code();
/// let timed_out = StoreError::TimedOut(Duration::from_secs(2));
/// assert_eq!(status(timed_out), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(status(StoreError::Contended(8)), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(status(StoreError::IdInUse), StatusCode::INTERNAL_SERVER_ERROR);
///
/// let err = StoreError::TooLarge { size: 2_000_000, limit: Some(1_000_000) };
/// assert_eq!(
///     err.to_string(),
///     "session of 2000000 bytes is larger than the store accepts (1000000 bytes)"
/// );
/// ```
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
    /// A fresh id was in use already. Two random 122-bit ids do not collide in practice: a
    /// store that reports this is most likely misbehaving.
    #[error("session id already in use")]
    IdInUse,
    /// The session is larger than the store accepts.
    #[error("session of {size} bytes is larger than the store accepts{}", limit_note(*.limit))]
    TooLarge {
        /// Size of the serialized session, in bytes.
        size: usize,
        /// The largest size the store accepts, in bytes; `None` when the server refused the
        /// session by a limit of its own, which the store does not know.
        limit: Option<usize>,
    },
}

fn limit_note(limit: Option<usize>) -> String {
    limit.map_or_else(String::new, |limit| format!(" ({limit} bytes)"))
}

impl StoreError {
    /// Wraps any error as [`StoreError::Unavailable`].
    ///
    /// ```
    /// use std::io;
    ///
    /// use actix_kv_session::StoreError;
    ///
    /// // In a store of your own: the client's error, kept as the cause.
    /// let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
    /// let err = StoreError::unavailable(refused);
    /// assert!(matches!(err, StoreError::Unavailable(_)));
    /// assert_eq!(std::error::Error::source(&err).unwrap().to_string(), "connection refused");
    /// ```
    pub fn unavailable(cause: impl Into<BoxError>) -> Self {
        Self::Unavailable(cause.into())
    }

    /// Wraps any error as [`StoreError::Corrupt`].
    ///
    /// ```
    /// use actix_kv_session::{storage::SessionMap, StoreError};
    ///
    /// // In a store of your own: a stored record that is not a JSON object of strings.
    /// fn decode(stored: &str) -> Result<SessionMap, StoreError> {
    ///     serde_json::from_str(stored).map_err(StoreError::corrupt)
    /// }
    ///
    /// assert!(decode(r#"{"user":"\"ada\""}"#).is_ok());
    /// assert!(matches!(decode("[1, 2]"), Err(StoreError::Corrupt(_))));
    /// ```
    pub fn corrupt(cause: impl Into<BoxError>) -> Self {
        Self::Corrupt(cause.into())
    }
}

/// An error from the [`Session`](crate::Session) API.
///
/// As an actix `ResponseError` it answers with an opaque body: 503 when the store is down
/// or slow, or a save lost its compare-and-swap too often ([`StoreError::Contended`]), 500
/// for everything else. The cause is logged, never sent to the client.
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, Session, SessionError, SessionMiddleware};
/// use actix_web::{http::StatusCode, test, web, App, HttpResponse};
///
/// async fn set_bio(session: Session, bio: String) -> Result<HttpResponse, SessionError> {
///     match session.insert("bio", bio) {
///         Ok(()) => Ok(HttpResponse::Ok().finish()),
///         // The one error this handler answers itself; the others become a 500 or a 503.
///         Err(SessionError::ValueTooLarge { .. }) => Ok(HttpResponse::PayloadTooLarge().finish()),
///         Err(err) => Err(err),
///     }
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let middleware = SessionMiddleware::builder(MemoryStore::default())
///     .max_value_bytes(Some(100))
///     .build();
/// let app = test::init_service(App::new().wrap(middleware).route("/bio", web::post().to(set_bio)))
///     .await;
/// let req = test::TestRequest::post().uri("/bio").set_payload("a".repeat(200)).to_request();
/// assert_eq!(test::call_service(&app, req).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
/// # });
/// ```
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
    /// A value is larger than the middleware's
    /// [`max_value_bytes`](crate::SessionMiddlewareBuilder::max_value_bytes): it was not
    /// set, and the session is as it was. A handler that lets it through answers 500.
    #[error("the value of session key `{key}` is {size} bytes as JSON, over the limit of {limit}")]
    ValueTooLarge {
        /// The session key.
        key: String,
        /// The value's size as JSON text, in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The key starts with a NUL character: such keys are kept for the library's own
    /// bookkeeping in the stored record.
    #[error("session key {key:?} is reserved: keys may not start with a NUL character")]
    ReservedKey {
        /// The key given.
        key: String,
    },
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
        // Store failures were logged where they happened, through the middleware's
        // `FailureLog`, which keeps an outage from writing one line per request.
        if !matches!(self, Self::Store(_)) {
            log_error(self);
        }
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
    tracing::error!(error = %cause_chain(err), "session error");
}

/// An error and its causes on one line, each cause once: many errors (redis-rs', deadpool's)
/// repeat their source's message in their own, which a plain walk down `source()` would
/// print two or three times.
pub(crate) fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !chain.contains(&text) {
            let _ = write!(chain, ": {text}");
        }
        source = cause.source();
    }
    chain
}

/// How often a [`FailureLog`] writes a line while failures go on; also how long without a
/// failure ends an episode.
const FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Reports the failures of one store without flooding the log. An episode starts with a
/// failure after at least [`FAILURE_REPORT_INTERVAL`] without one, logged in full; while
/// failures go on, at most one line per interval says how many happened since the last line,
/// with the latest cause; the first success after failures says the store answers again,
/// once, until failures go on long enough for another summary. An outage of a minute under
/// load is about a dozen lines, not one per request (about 90,000 in the fault benchmark
/// before this), and a store that fails every other request (a flapping one) is a line or
/// two per interval.
#[derive(Debug)]
pub(crate) struct FailureLog {
    /// What a line says happened.
    what: &'static str,
    /// Set from a failure to the next success: a success only reads this flag otherwise.
    failing: AtomicBool,
    state: Mutex<FailureState>,
}

#[derive(Debug, Default)]
struct FailureState {
    /// The last failure; `None` before the first.
    last_failure: Option<Instant>,
    /// When the last line of the episode was written.
    last_line: Option<Instant>,
    /// Failures since the last line.
    unreported: u64,
    /// The episode's recovery was logged, and no summary came since.
    recovery_logged: bool,
}

/// What a [`FailureLog`] decided to write.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// The first failure of an episode, in full.
    First,
    /// A summary: this many failures since the last line, this one included.
    Summary(u64),
    /// The store answers again; this many failures were not reported one by one.
    Recovered(u64),
    /// Counted, not written.
    Quiet,
}

impl FailureLog {
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            failing: AtomicBool::new(false),
            state: Mutex::default(),
        }
    }

    /// Records a failure, and writes a line if one is due.
    pub(crate) fn failure(&self, err: &(dyn std::error::Error + 'static)) {
        match self.record_failure(Instant::now()) {
            Report::First => tracing::error!(error = %cause_chain(err), "{}", self.what),
            Report::Summary(count) => tracing::error!(
                failures = count,
                error = %cause_chain(err),
                "{}: {count} times since the last report",
                self.what
            ),
            Report::Recovered(_) | Report::Quiet => {}
        }
    }

    /// Records a success: after failures, writes that the store answers again, once per
    /// episode (see the type's docs). One relaxed load otherwise.
    pub(crate) fn success(&self) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        if let Report::Recovered(unreported) = self.record_success() {
            tracing::info!(
                unreported_failures = unreported,
                "{}: over, the store answers again",
                self.what
            );
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FailureState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record_failure(&self, now: Instant) -> Report {
        self.failing.store(true, Ordering::Relaxed);
        let mut state = self.state();
        let quiet_since_last = state
            .last_failure
            .is_none_or(|last| now.duration_since(last) >= FAILURE_REPORT_INTERVAL);
        state.last_failure = Some(now);
        if quiet_since_last {
            *state = FailureState {
                last_failure: Some(now),
                last_line: Some(now),
                ..FailureState::default()
            };
            return Report::First;
        }
        state.unreported += 1;
        let due = state
            .last_line
            .is_none_or(|last| now.duration_since(last) >= FAILURE_REPORT_INTERVAL);
        if !due {
            return Report::Quiet;
        }
        state.last_line = Some(now);
        state.recovery_logged = false;
        Report::Summary(std::mem::take(&mut state.unreported))
    }

    fn record_success(&self) -> Report {
        if !self.failing.swap(false, Ordering::Relaxed) {
            return Report::Quiet;
        }
        let mut state = self.state();
        if state.recovery_logged {
            return Report::Quiet;
        }
        state.recovery_logged = true;
        Report::Recovered(std::mem::take(&mut state.unreported))
    }
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

    /// An error that prints its source's message in its own, as redis-rs and deadpool do.
    #[derive(Debug, thiserror::Error)]
    #[error("pool error: {0}")]
    struct Echoing(#[source] std::io::Error);

    #[test]
    fn each_cause_appears_once_per_line() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = SessionError::from(StoreError::unavailable(Echoing(io)));
        let line = cause_chain(&err);
        assert_eq!(
            line,
            "session store error: session store unavailable: pool error: refused"
        );
        assert_eq!(line.matches("refused").count(), 1);
    }

    #[test]
    fn repeated_failures_are_summarised_at_most_every_interval() {
        let log = FailureLog::new("test");
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(log.record_failure(start), Report::First);
        for i in 1..1_000 {
            assert_eq!(log.record_failure(at(i)), Report::Quiet);
        }
        assert_eq!(log.record_failure(at(5_000)), Report::Summary(1_000));
        assert_eq!(log.record_failure(at(6_000)), Report::Quiet);
        assert_eq!(log.record_success(), Report::Recovered(1));
        assert_eq!(
            log.record_success(),
            Report::Quiet,
            "a success after a success"
        );
        assert_eq!(
            log.record_failure(at(12_000)),
            Report::First,
            "a new outage, after a quiet interval, is reported in full again"
        );
    }

    #[test]
    fn a_flapping_store_is_a_line_or_two_per_interval() {
        let log = FailureLog::new("test");
        let start = Instant::now();
        let mut reports = Vec::new();
        // A failure and a success every 10 ms for 12 s.
        for i in 0..1_200 {
            reports.push(log.record_failure(start + Duration::from_millis(i * 10)));
            reports.push(log.record_success());
        }
        reports.retain(|r| *r != Report::Quiet);
        assert_eq!(reports.len(), 6, "{reports:?}");
        assert_eq!(reports[..2], [Report::First, Report::Recovered(0)]);
        assert_eq!(reports[2..4], [Report::Summary(500), Report::Recovered(0)]);
    }
}
