//! What the middleware tells about its work: a `tracing` span per request that used its
//! session and one per store operation, and, with the `metrics` feature, counters and
//! histograms through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! # Spans
//!
//! | span | level | fields |
//! |---|---|---|
//! | `session` | DEBUG | `session`: the first 12 hex digits of the SHA-256 of the id (never the id itself, a bearer credential); `status`: the response's status |
//! | `session.store` | DEBUG | `op` (`load`, `create`, `update`, `renew`, `touch`, `delete`, `index`, `import`, `forget`), `outcome` (`ok` or the error's kind), `micros`: how long it took |
//!
//! Nothing is hashed or timed unless a subscriber listens at DEBUG (or the `metrics`
//! feature is on, for the timings).
//!
//! # Metrics (feature `metrics`)
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `kv_session_loads_total` | counter | `found` (`true`, `false`) | sessions loaded from the store, and whether the cookie's id named one (a record the store cannot read counts as not found) |
//! | `kv_session_saves_total` | counter | `outcome` (`created`, `updated`, `renewed`, `emptied`, `touched`, `gone`, `moved`, `conflict`) | what each save did |
//! | `kv_session_conflicts_total` | counter | | saves refused with 409 (strict policy, or a session renewed meanwhile) |
//! | `kv_session_store_errors_total` | counter | `op`, `kind` (`unavailable`, `timed_out`, `corrupt`, `contended`, `id_in_use`, `too_large`) | failed store operations |
//! | `kv_session_store_timeouts_total` | counter | `op` | store operations cut by `store_timeout` |
//! | `kv_session_store_retries_total` | counter | `reason` (`cas_lost`, `connection_dropped`) | operations a store ran again: a compare-and-swap another request won, a read whose connection had broken |
//! | `kv_session_connection_waits_total` | counter | | connections the Redis and memcached stores opened for an operation (one per worker thread and node, again after one broke); an application's deadpool pool counts none |
//! | `kv_session_store_duration_seconds` | histogram | `op` | how long each store operation took |
//! | `kv_session_near_cache_total` | counter | `result` (`hit`, `miss`) | loads the Redis store's near cache answered, and those it sent to Redis |
//! | `kv_session_near_cache_flushes_total` | counter | | times the near cache was emptied: a connection to Redis was lost or replaced, or Redis was flushed |
//!
//! Install any `metrics` recorder (a Prometheus exporter, a `StatsD` one...);
//! `examples/metrics_prometheus.rs` serves them to Prometheus.

use std::{fmt::Write as _, future::Future, time::Instant};

use futures_util::future::Either;
use sha2::{Digest, Sha256};
use tracing::{instrument::Instrumented, Instrument as _, Span};

use crate::{error::StoreError, plan::Written, storage::SaveOutcome, SessionId};

/// A store operation, as spans and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Load,
    Create,
    Update,
    Renew,
    Touch,
    Delete,
    /// An entry in a user's index (log out everywhere).
    Index,
    /// Reading another library's session ([`ImportSession`](crate::ImportSession)).
    Import,
    Forget,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Create => "create",
            Self::Update => "update",
            Self::Renew => "renew",
            Self::Touch => "touch",
            Self::Delete => "delete",
            Self::Index => "index",
            Self::Import => "import",
            Self::Forget => "forget",
        }
    }
}

/// The name of a store error's kind.
fn kind(err: &StoreError) -> &'static str {
    match err {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::TimedOut(_) => "timed_out",
        StoreError::Corrupt(_) => "corrupt",
        StoreError::Contended(_) => "contended",
        StoreError::IdInUse => "id_in_use",
        StoreError::TooLarge { .. } => "too_large",
    }
}

/// The span of one store operation, and its start when something listens.
pub(crate) struct StoreOp {
    op: Op,
    span: Span,
    started: Instant,
}

impl StoreOp {
    /// `None` when nothing listens: no span, no clock.
    pub(crate) fn start(op: Op) -> Option<Self> {
        let listening = listening();
        if !listening && !cfg!(feature = "metrics") {
            return None;
        }
        let span = if listening {
            tracing::debug_span!(
                "session.store",
                op = op.name(),
                outcome = tracing::field::Empty,
                micros = tracing::field::Empty,
            )
        } else {
            Span::none()
        };
        Some(Self {
            op,
            span,
            started: Instant::now(),
        })
    }

    /// The span, to run the operation in.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records how the operation ended.
    pub(crate) fn end<T>(self, result: &Result<T, StoreError>) {
        let elapsed = self.started.elapsed();
        let outcome = result.as_ref().map_or_else(kind, |_| "ok");
        if !self.span.is_disabled() {
            self.span.record("outcome", outcome);
            self.span.record(
                "micros",
                u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            );
        }
        #[cfg(feature = "metrics")]
        {
            let op = self.op.name();
            metrics::histogram!("kv_session_store_duration_seconds", "op" => op)
                .record(elapsed.as_secs_f64());
            if let Err(err) = result {
                metrics::counter!("kv_session_store_errors_total", "op" => op, "kind" => outcome)
                    .increment(1);
                if matches!(err, StoreError::TimedOut(_)) {
                    metrics::counter!("kv_session_store_timeouts_total", "op" => op).increment(1);
                }
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = self.op;
    }
}

/// The span of a request that uses its session, if anything listens; its id's field is
/// filled in once known.
pub(crate) fn request_span() -> Option<Span> {
    listening().then(|| {
        tracing::debug_span!(
            "session",
            session = tracing::field::Empty,
            status = tracing::field::Empty,
        )
    })
}

/// `future`, run in `span` if there is one (no wrapper's cost otherwise).
pub(crate) fn in_span<F: Future>(span: Option<&Span>, future: F) -> Either<F, Instrumented<F>> {
    match span {
        None => Either::Left(future),
        Some(span) => Either::Right(future.instrument(span.clone())),
    }
}

/// Whether a `tracing` subscriber wants this crate's DEBUG spans.
///
/// Asked before each span is made: actix-web turns on `tracing`'s `log` feature, under which
/// a span nobody listens to is still made, with its metadata, and every entry, exit,
/// record and drop of it goes through `log` (callgrind: 1,700 instructions of a memory
/// store `/counter`, 5%; asked first, and with no span and no wrapper made when the answer
/// is no, 40).
pub(crate) fn listening() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// Names the session in its request's span: a short hash of the id.
pub(crate) fn name_session(span: &Span, id: &SessionId) {
    if span.is_disabled() {
        return;
    }
    let digest = Sha256::digest(id.as_str().as_bytes());
    let mut short = String::with_capacity(12);
    for byte in &digest[..6] {
        let _ = write!(short, "{byte:02x}");
    }
    span.record("session", short.as_str());
}

/// A load: whether the cookie's id named a session.
pub(crate) fn loaded(found: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!("kv_session_loads_total", "found" => if found { "true" } else { "false" })
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = found;
}

/// What a save wrote (see the module's table); names a new id in the request's span.
pub(crate) fn saved(written: &Written) {
    if let Written::Created(id) | Written::Renewed(id, SaveOutcome::Saved) = written {
        // Only our own request span: the save runs in the app's span when nothing listens
        // to ours.
        let current = Span::current();
        if current.metadata().is_some_and(|meta| {
            meta.name() == "session" && meta.target().starts_with("actix_kv_session")
        }) {
            name_session(&current, id);
        }
    }
    #[cfg(feature = "metrics")]
    {
        let outcome = match written {
            Written::Nothing => return,
            Written::Touched(_, true) => "touched",
            Written::Created(_) => "created",
            Written::Updated(_, SaveOutcome::Saved) => "updated",
            Written::Renewed(_, SaveOutcome::Saved) => "renewed",
            Written::Updated(_, SaveOutcome::Emptied)
            | Written::Renewed(_, SaveOutcome::Emptied) => "emptied",
            Written::Touched(_, false)
            | Written::Updated(_, SaveOutcome::Gone)
            | Written::Renewed(_, SaveOutcome::Gone) => "gone",
            Written::Updated(_, SaveOutcome::Moved) | Written::Renewed(_, SaveOutcome::Moved) => {
                "moved"
            }
            Written::Updated(_, SaveOutcome::Conflict)
            | Written::Renewed(_, SaveOutcome::Conflict) => "conflict",
        };
        metrics::counter!("kv_session_saves_total", "outcome" => outcome).increment(1);
    }
}

/// A save refused with 409 (strict policy, or the session renewed meanwhile). Not every
/// `conflict` or `moved` save answers 409: one that only carried bookkeeping (a TTL
/// extension's time) is dropped quietly.
pub(crate) fn refused() {
    #[cfg(feature = "metrics")]
    metrics::counter!("kv_session_conflicts_total").increment(1);
}

/// A store ran an operation again.
#[cfg_attr(not(any(feature = "redis", feature = "memcached")), allow(dead_code))]
pub(crate) fn retried(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("kv_session_store_retries_total", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// An operation waited for a connection to open.
#[cfg_attr(not(any(feature = "redis", feature = "memcached")), allow(dead_code))]
pub(crate) fn waited_for_connection() {
    #[cfg(feature = "metrics")]
    metrics::counter!("kv_session_connection_waits_total").increment(1);
}

/// A load on the Redis store's near cache: answered from it, or sent to Redis.
#[cfg(feature = "redis")]
pub(crate) fn near_cache(hit: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!("kv_session_near_cache_total", "result" => if hit { "hit" } else { "miss" })
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = hit;
}

/// The Redis store's near cache was emptied.
#[cfg(feature = "redis")]
pub(crate) fn near_cache_flushed() {
    #[cfg(feature = "metrics")]
    metrics::counter!("kv_session_near_cache_flushes_total").increment(1);
}
