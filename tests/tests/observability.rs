//! What the middleware tells about its work: its `tracing` spans (a span per request that
//! used its session, named by a hash of the id, never the id; one per store operation with
//! its outcome and duration), and its metrics (feature `metrics`) after known traffic.
//!
//! One test: the subscriber and the recorder are this thread's, and tests of one binary
//! run on several threads.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_kv_session::{
    storage::{ConflictPolicy, MemoryStore},
    SessionMiddleware,
};
use actix_web::http::StatusCode;
use metrics_util::{
    debugging::{DebugValue, DebuggingRecorder},
    CompositeKey, MetricKind,
};
use sha2::{Digest, Sha256};
use tests::{
    init_app,
    stores::{Fault, FaultyStore},
    suite::{get, post},
};
use tracing::{
    field::{Field, Visit},
    span::{Attributes, Id, Record},
    Subscriber,
};
use tracing_subscriber::{layer::Context, prelude::*, registry::LookupSpan, Layer};

/// A closed span: its name and fields.
#[derive(Debug, Clone)]
struct Closed {
    name: &'static str,
    fields: HashMap<String, String>,
}

/// Collects every span with its fields when it closes.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Closed>>>);

struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(HashMap::new());
        attrs.record(&mut fields);
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut extensions = span.extensions_mut();
        values.record(extensions.get_mut::<Fields>().unwrap());
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let fields = span.extensions_mut().remove::<Fields>().unwrap().0;
        self.0.lock().unwrap().push(Closed {
            name: span.name(),
            fields,
        });
    }
}

fn short_hash(id: &str) -> String {
    use std::fmt::Write as _;
    Sha256::digest(id.as_bytes())[..6]
        .iter()
        .fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

async fn spans_phase(spans: &Spans) {
    let app = init_app!(SessionMiddleware::new(MemoryStore::default()));
    let created = get(&app, "/counter", None).await.id();
    assert_eq!(
        get(&app, "/counter", Some(created.as_str())).await.body,
        "2"
    );
    get(&app, "/noop", Some(created.as_str())).await;

    let closed = spans.0.lock().unwrap().clone();
    let requests: Vec<&Closed> = closed.iter().filter(|s| s.name == "session").collect();
    assert_eq!(
        requests.len(),
        2,
        "one span per request that used its session: {closed:?}"
    );
    for span in &requests {
        assert_eq!(
            span.fields["session"],
            short_hash(created.as_str()),
            "{span:?}"
        );
        assert_eq!(span.fields["status"], "200");
    }
    let ops: Vec<(&str, &str)> = closed
        .iter()
        .filter(|s| s.name == "session.store")
        .map(|s| (s.fields["op"].as_str(), s.fields["outcome"].as_str()))
        .collect();
    assert_eq!(ops, [("create", "ok"), ("load", "ok"), ("update", "ok")]);
    for span in closed.iter().filter(|s| s.name == "session.store") {
        assert!(span.fields["micros"].parse::<u64>().is_ok(), "{span:?}");
    }
    let everything = format!("{closed:?}");
    assert!(
        !everything.contains(created.as_str()),
        "a span holds the raw id: {everything}"
    );
}

/// The value of a metric: the counter's count, or the histogram's number of samples.
fn value(snapshot: &HashMap<CompositeKey, DebugValue>, name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(key, _)| key.key().name() == name)
        .filter(|(key, _)| {
            labels.iter().all(|(k, v)| {
                key.key()
                    .labels()
                    .any(|label| label.key() == *k && label.value() == *v)
            })
        })
        .map(|(key, v)| match (key.kind(), v) {
            (MetricKind::Counter, DebugValue::Counter(n)) => *n,
            (MetricKind::Histogram, DebugValue::Histogram(samples)) => samples.len() as u64,
            _ => 0,
        })
        .sum()
}

async fn metrics_phase(recorder: &DebuggingRecorder) {
    let store = MemoryStore::default();
    let app = init_app!(SessionMiddleware::builder(store.clone())
        .conflict_policy(ConflictPolicy::Strict)
        .build());
    let id = get(&app, "/counter", None).await.id();
    for _ in 0..3 {
        get(&app, "/counter", Some(id.as_str())).await;
    }
    // An unknown id: a load that finds nothing, then a new session.
    get(&app, "/counter", Some("0123456789abcdef0123456789abcdef")).await;
    // Two increments racing under the strict policy: one 409.
    let (a, b) = futures_util::join!(
        post(&app, "/slow-incr", Some(id.as_str())),
        post(&app, "/slow-incr", Some(id.as_str()))
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    // The store down: a failed load; hanging: a timed-out one.
    let faulty = FaultyStore::new(store.clone());
    let app = init_app!(SessionMiddleware::builder(faulty.clone())
        .store_timeout(Duration::from_millis(50))
        .build());
    faulty.set(Fault::Down);
    assert_eq!(
        get(&app, "/counter", Some(id.as_str())).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    faulty.set(Fault::Hang);
    assert_eq!(
        get(&app, "/counter", Some(id.as_str())).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let snapshot: HashMap<CompositeKey, DebugValue> = recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
    let v = |name: &str, labels: &[(&str, &str)]| value(&snapshot, name, labels);
    assert_eq!(v("kv_session_loads_total", &[("found", "true")]), 5);
    assert_eq!(v("kv_session_loads_total", &[("found", "false")]), 1);
    assert_eq!(v("kv_session_saves_total", &[("outcome", "created")]), 2);
    assert_eq!(v("kv_session_saves_total", &[("outcome", "updated")]), 4);
    assert_eq!(v("kv_session_saves_total", &[("outcome", "conflict")]), 1);
    assert_eq!(v("kv_session_conflicts_total", &[]), 1);
    assert_eq!(
        v(
            "kv_session_store_errors_total",
            &[("op", "load"), ("kind", "unavailable")]
        ),
        1
    );
    assert_eq!(v("kv_session_store_timeouts_total", &[("op", "load")]), 1);
    assert_eq!(
        v("kv_session_store_duration_seconds", &[("op", "load")]),
        8,
        "every load timed, failed ones too"
    );
    assert_eq!(
        v("kv_session_store_duration_seconds", &[("op", "update")]),
        5
    );
}

#[test]
fn spans_and_metrics_after_known_traffic() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(
        spans
            .clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
    );
    tracing::subscriber::with_default(subscriber, || {
        actix_web::rt::System::new().block_on(spans_phase(&spans));
    });

    let recorder = DebuggingRecorder::new();
    metrics::with_local_recorder(&recorder, || {
        actix_web::rt::System::new().block_on(metrics_phase(&recorder));
    });
}
