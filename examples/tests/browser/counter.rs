//! The counter in the browser: each reload counts on, and a second browser with a profile of
//! its own starts a session of its own.

use crate::{
    apps::{App, Store},
    harness::run,
};

async fn reloads_count_and_profiles_are_separate(
    chromium: &crate::harness::Chromium,
    store: Store,
) {
    let app = App::counter(chromium, store);
    let first = chromium.browser("first").await;
    first.goto(&app.url("/")).await;
    assert_eq!(first.text().await, "1");
    for expected in ["2", "3"] {
        first.reload().await;
        assert_eq!(first.text().await, expected);
    }
    first.shot("counter-at-3").await;

    let second = chromium.browser("second").await;
    second.goto(&app.url("/")).await;
    assert_eq!(second.text().await, "1", "a new profile is a new visitor");
    first.reload().await;
    assert_eq!(
        first.text().await,
        "4",
        "the first profile's session goes on"
    );

    let (a, b) = (
        first.cookie("session").await,
        second.cookie("session").await,
    );
    let (a, b) = (a.expect("a session cookie"), b.expect("a session cookie"));
    assert_ne!(a.value(), b.value());
}

#[test]
fn reloads_count_1_2_3_and_a_second_profile_starts_at_1_on_memory() {
    run("counter_on_memory", |chromium| async move {
        reloads_count_and_profiles_are_separate(&chromium, Store::Memory).await;
    });
}

#[cfg(feature = "redis")]
#[test]
fn reloads_count_1_2_3_and_a_second_profile_starts_at_1_on_redis() {
    run("counter_on_redis", |chromium| async move {
        reloads_count_and_profiles_are_separate(&chromium, Store::Redis).await;
    });
}
