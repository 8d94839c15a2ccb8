//! Log-in while the page still has requests in flight on the pre-log-in session: the
//! browser stays logged in. The app's `/api/` routes hold their loaded session for
//! `API_DELAY_MS` before saving, so requests fired just before the log-in are answered after
//! it, with the cookie the log-in replaced.

use std::time::Duration;

use crate::{
    apps::{App, Store},
    harness::{run, Browser, Chromium},
};

/// How long the `/api/` routes hold a loaded session, and how long after firing them the
/// page logs in: ample for the requests to reach the app and load the session first, on a
/// busy two-core machine too.
const API_DELAY_MS: u64 = 1500;
const LOG_IN_AFTER_MS: u64 = 300;

/// An app with the slow `/api/` routes, and a browser whose visitor has a cart (so a
/// session) before logging in.
async fn shopper_with_a_cart(chromium: &Chromium, store: Store) -> (App, Browser<'_>) {
    let delay = API_DELAY_MS.to_string();
    let app = App::login(chromium, store, &[("API_DELAY_MS", &delay)]);
    let browser = chromium.browser("shopper").await;
    browser.goto(&app.url("/")).await;
    browser.fill("#item", "green tea").await;
    browser.click("#add-to-cart").await;
    browser.wait_for_page("/", "green tea").await;
    (app, browser)
}

/// The page logs in with `fetch` while two cart additions and two cart reads it fired just
/// before are still in flight; it stays on the page and sees every answer.
async fn fetches_in_flight_during_a_fetch_log_in(chromium: &Chromium, store: Store) {
    let (app, browser) = shopper_with_a_cart(chromium, store).await;
    let answers = browser
        .script_async(&format!(
            "const add = item => fetch('/api/cart', {{ method: 'POST', body: new URLSearchParams({{ item }}) }}).then(r => r.status);
             const read = () => fetch('/api/cart').then(r => r.status);
             const inFlight = [add('late-1'), add('late-2'), read(), read()];
             setTimeout(async () => {{
               const login = await fetch('/login', {{ method: 'POST', body: new URLSearchParams({{ user: 'ann' }}) }});
               done({{ login: login.status, inFlight: await Promise.all(inFlight) }});
             }}, {LOG_IN_AFTER_MS});"
        ))
        .await;
    assert_eq!(answers["login"], 200, "{answers}");
    // The additions loaded the session before the log-in renewed it: refused, nothing
    // applied (not written into the logged-in session). The reads answer as usual. If they
    // answered 200, they reached the app after the log-in and the race was not run.
    assert_eq!(
        answers["inFlight"],
        serde_json::json!([409, 409, 200, 200]),
        "{answers}"
    );

    browser.goto(&app.url("/private")).await;
    browser
        .wait_for_page("/private", "hello ann (visit 1)")
        .await;
    browser.shot("logged-in-after-the-race").await;
    let page = browser.text().await;
    assert!(page.contains("green tea"), "{page}");
    assert!(
        !page.contains("late-"),
        "refused additions were not applied: {page}"
    );
}

/// A real form post (a navigation) while beacons (`fetch` with `keepalive`, which outlive
/// the page, as analytics and autosave requests do) are in flight: their late answers
/// reach the browser's cookie jar after the log-in's cookie.
async fn beacons_in_flight_during_a_form_log_in(chromium: &Chromium, store: Store) {
    let (app, browser) = shopper_with_a_cart(chromium, store).await;
    browser.goto(&app.url("/login?next=/private")).await;
    browser.fill("#user", "ann").await;
    browser
        .script(&format!(
            "const beacon = init => fetch('/api/cart', {{ keepalive: true, ...init }});
             beacon({{ method: 'POST', body: new URLSearchParams({{ item: 'late-1' }}) }});
             beacon({{ method: 'POST', body: new URLSearchParams({{ item: 'late-2' }}) }});
             beacon({{}});
             setTimeout(() => document.getElementById('log-in').click(), {LOG_IN_AFTER_MS});"
        ))
        .await;
    browser
        .wait_for_page("/private", "hello ann (visit 1)")
        .await;
    let logged_in = browser.cookie("session").await.expect("a session cookie");

    // The app's access log: the additions were answered 409, so they loaded the session
    // before the log-in renewed it and saved after; the read was answered as usual.
    let log = app.wait_for_log("\"POST /api/cart HTTP/1.1\" 409", 2).await;
    app.wait_for_log("\"GET /api/cart HTTP/1.1\" 200", 1).await;
    assert!(!log.contains("\"POST /api/cart HTTP/1.1\" 200"), "{log}");
    // The browser stores a cookie as soon as a response's headers arrive: let it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = browser
        .cookie("session")
        .await
        .expect("still a session cookie");
    assert_eq!(
        after.value(),
        logged_in.value(),
        "a late answer replaced the log-in's cookie"
    );
    browser.reload().await;
    browser
        .wait_for_page("/private", "hello ann (visit 2)")
        .await;
    browser.shot("logged-in-after-the-beacons").await;
    let page = browser.text().await;
    assert!(
        page.contains("green tea") && !page.contains("late-"),
        "{page}"
    );
}

#[test]
fn fetches_in_flight_during_a_log_in_get_409_and_the_browser_stays_logged_in_on_memory() {
    run("race_fetch_on_memory", |chromium| async move {
        fetches_in_flight_during_a_fetch_log_in(&chromium, Store::Memory).await;
    });
}

#[cfg(feature = "redis")]
#[test]
fn fetches_in_flight_during_a_log_in_get_409_and_the_browser_stays_logged_in_on_redis() {
    run("race_fetch_on_redis", |chromium| async move {
        fetches_in_flight_during_a_fetch_log_in(&chromium, Store::Redis).await;
    });
}

#[test]
fn beacons_answered_after_a_form_log_in_leave_the_browser_logged_in_on_memory() {
    run("race_beacons_on_memory", |chromium| async move {
        beacons_in_flight_during_a_form_log_in(&chromium, Store::Memory).await;
    });
}

#[cfg(feature = "redis")]
#[test]
fn beacons_answered_after_a_form_log_in_leave_the_browser_logged_in_on_redis() {
    run("race_beacons_on_redis", |chromium| async move {
        beacons_in_flight_during_a_form_log_in(&chromium, Store::Redis).await;
    });
}
