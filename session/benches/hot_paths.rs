//! Micro-benchmarks of the per-request hot paths: ids, change sets, and a whole request
//! through the middleware (cookie read, lazy load, save, Set-Cookie) against the same app
//! without it. `cargo bench -p actix-kv-session`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::{collections::HashMap, hint::black_box, time::Duration};

use actix_kv_session::{
    storage::{ChangeSet, ConflictPolicy, KeyChange, MemoryStore},
    Session, SessionId, SessionMiddleware,
};
use actix_web::{test, web, App};
use criterion::{criterion_group, criterion_main, Criterion};

fn ids(c: &mut Criterion) {
    let text = SessionId::generate().to_string();
    c.bench_function("id/generate", |b| b.iter(SessionId::generate));
    c.bench_function("id/parse valid", |b| {
        b.iter(|| SessionId::parse(black_box(&text)));
    });
    let bad = "0123456789abcdef0123456789abcdeX";
    c.bench_function("id/parse invalid", |b| {
        b.iter(|| SessionId::parse(black_box(bad)));
    });
}

fn change_sets(c: &mut Criterion) {
    let record: HashMap<String, String> =
        (0..8).map(|i| (format!("key{i}"), i.to_string())).collect();
    let changes = ChangeSet::new(
        vec![
            KeyChange::new("key1".into(), Some("10".into()), Some("1".into())),
            KeyChange::new("key9".into(), Some("9".into()), None),
        ],
        ConflictPolicy::Strict,
        Duration::from_secs(60),
    );
    c.bench_function("change set/conflicts_with (8 keys)", |b| {
        b.iter(|| black_box(&changes).conflicts_with(black_box(&record)));
    });
    c.bench_function("change set/apply_to (8 keys)", |b| {
        b.iter_batched(
            || record.clone(),
            |mut record| changes.apply_to(&mut record),
            criterion::BatchSize::SmallInput,
        );
    });
}

async fn counter(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

async fn noop() -> &'static str {
    "noop"
}

fn requests(c: &mut Criterion) {
    let rt = actix_web::rt::System::new();
    let (with, without, cookie) = rt.block_on(async {
        let with = test::init_service(
            App::new()
                .wrap(SessionMiddleware::new(MemoryStore::default()))
                .route("/counter", web::get().to(counter))
                .route("/noop", web::get().to(noop)),
        )
        .await;
        let without = test::init_service(App::new().route("/noop", web::get().to(noop))).await;
        let res =
            test::call_service(&with, test::TestRequest::get().uri("/counter").to_request()).await;
        let cookie = res
            .response()
            .cookies()
            .next()
            .expect("a session cookie")
            .into_owned();
        (with, without, cookie)
    });
    let request = |path: &str| {
        test::TestRequest::get()
            .uri(path)
            .cookie(cookie.clone())
            .to_request()
    };
    c.bench_function("request/noop without the middleware", |b| {
        b.iter(|| rt.block_on(test::call_service(&without, request("/noop"))));
    });
    c.bench_function("request/noop with the middleware", |b| {
        b.iter(|| rt.block_on(test::call_service(&with, request("/noop"))));
    });
    c.bench_function("request/counter on the memory store", |b| {
        b.iter(|| rt.block_on(test::call_service(&with, request("/counter"))));
    });
}

criterion_group!(benches, ids, change_sets, requests);
criterion_main!(benches);
