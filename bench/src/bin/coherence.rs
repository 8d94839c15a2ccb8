//! How soon one app instance sees a save made by another, through the Redis store's near
//! cache: two stores (two instances: each its own connection and cache) on one Redis, each
//! driven by a thread of its own. In each trial, instance B has the session cached; A saves
//! a new value; B reads until it sees it. Printed: the time from A's save being
//! acknowledged to B's first read that sees it (negative would mean B saw it before A's
//! acknowledgement arrived), and from A sending the save, over every trial; then the same
//! with B reading without a near cache, which shows what a plain read costs.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p bench --bin coherence -- 2000
//! ```

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Barrier,
    },
    time::{Duration, Instant},
};

use actix_kv_session::{
    storage::{
        ChangeSet, ConflictPolicy, KeyChange, NearCache, RedisStore, SaveOutcome, SessionMap,
        SessionStore,
    },
    SessionId,
};

/// What A publishes for a trial: the value it wrote and when.
struct Trial {
    /// The value of the trial in progress (0 before the first).
    value: AtomicU64,
    /// Nanoseconds since `epoch` at which A sent its save, and at which it was acknowledged.
    sent: AtomicU64,
    acknowledged: AtomicU64,
    epoch: Instant,
}

impl Trial {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn store(url: &str, near: bool) -> RedisStore {
    let builder = RedisStore::builder(url);
    let builder = if near {
        builder.near_cache(NearCache::new())
    } else {
        builder
    };
    builder.build().expect("a Redis URL")
}

fn foo(store_value: Option<SessionMap>) -> u64 {
    store_value
        .and_then(|s| s.get("foo").and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Runs `trials` trials with B's store `b`; the latencies in microseconds, after the
/// acknowledgement and after the send.
fn run(url: &str, b: &RedisStore, trials: u64) -> (Vec<f64>, Vec<f64>) {
    let id = SessionId::generate();
    let trial = Arc::new(Trial {
        value: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        acknowledged: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let a = store(url, true);
    let ready = Arc::new(Barrier::new(2));
    let seen = Arc::new(AtomicU64::new(u64::MAX));
    let seen_at = Arc::new(AtomicU64::new(0));

    let writer = std::thread::spawn({
        let (trial, ready, seen) = (Arc::clone(&trial), Arc::clone(&ready), Arc::clone(&seen));
        move || {
            actix_web::rt::System::new().block_on(async move {
                let ttl = Duration::from_mins(10);
                a.create(&id, &SessionMap::from([("foo".into(), "0".into())]), ttl)
                    .await
                    .expect("create");
                ready.wait();
                for value in 1..=trials {
                    // B has cached the previous value.
                    while seen.load(Ordering::Acquire) != value - 1 {
                        std::thread::yield_now();
                    }
                    let change = KeyChange::new(
                        "foo".to_owned(),
                        Some(value.to_string()),
                        Some((value - 1).to_string()),
                    );
                    let changes = ChangeSet::new(vec![change], ConflictPolicy::Strict, ttl);
                    trial.value.store(value, Ordering::Release);
                    trial.sent.store(trial.now(), Ordering::Release);
                    let outcome = a.update(&id, &changes).await.expect("update");
                    trial.acknowledged.store(trial.now(), Ordering::Release);
                    assert_eq!(outcome, SaveOutcome::Saved);
                }
            });
        }
    });

    let mut after_ack = Vec::new();
    let mut after_send = Vec::new();
    actix_web::rt::System::new().block_on(async {
        ready.wait();
        assert_eq!(foo(b.load(&id).await.expect("load")), 0);
        seen.store(0, Ordering::Release);
        for value in 1..=trials {
            while trial.value.load(Ordering::Acquire) != value {
                std::thread::yield_now();
            }
            loop {
                if foo(b.load(&id).await.expect("load")) == value {
                    seen_at.store(trial.now(), Ordering::Release);
                    break;
                }
                actix_web::rt::task::yield_now().await;
            }
            let at = seen_at.load(Ordering::Acquire);
            // Wait for A's acknowledgement to be recorded.
            let acknowledged = loop {
                let ack = trial.acknowledged.load(Ordering::Acquire);
                if ack >= trial.sent.load(Ordering::Acquire) {
                    break ack;
                }
                std::thread::yield_now();
            };
            #[allow(clippy::cast_precision_loss)]
            let micros = |from: u64, to: u64| (to as f64 - from as f64) / 1000.0;
            after_ack.push(micros(acknowledged, at));
            after_send.push(micros(trial.sent.load(Ordering::Acquire), at));
            seen.store(value, Ordering::Release);
        }
    });
    writer.join().expect("the writer");
    (after_ack, after_send)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    // An index into a few thousand samples: exact in f64, and in range.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn summary(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    println!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        samples.last().copied().unwrap_or(0.0),
    );
}

fn main() {
    let trials: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    println!("| B reads | trials | p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    let (ack, send) = run(&url, &store(&url, true), trials);
    summary("near cache, from A's acknowledgement", ack);
    summary("near cache, from A's send", send);
    let (ack, send) = run(&url, &store(&url, false), trials);
    summary("no cache, from A's acknowledgement", ack);
    summary("no cache, from A's send", send);
}
