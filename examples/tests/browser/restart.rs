//! Browser-session cookies across a browser restart: Chromium quit, then started again on
//! the same profile.

use std::rc::Rc;

use crate::{
    apps::{App, Store},
    harness::{run, Chromium, Profile},
    login::log_in_as,
};

/// Logs in on `profile` (ticking "keep me logged in" if `remember`), quits Chromium, starts
/// it again on the profile and opens the private page; returns the cookie's expiry as the
/// first browser kept it and the page the second one shows.
async fn log_in_and_restart(
    chromium: &Chromium,
    app: &App,
    profile: &Rc<Profile>,
    remember: bool,
) -> (bool, String) {
    let before = chromium.browser_on("before-restart", profile).await;
    if remember {
        before.goto(&app.url("/login?next=/private")).await;
        before.fill("#user", "ann").await;
        before.click("#remember").await;
        before.click("#log-in").await;
        before
            .wait_for_page("/private", "hello ann (visit 1)")
            .await;
    } else {
        log_in_as(&before, app, "ann").await;
    }
    let persistent = before
        .cookie("session")
        .await
        .expect("a session cookie")
        .expires_datetime()
        .is_some();
    // A persistent cookie of the page's own: after the restart it shows that the profile
    // was kept and written to disk, whatever happens to ours.
    before
        .script("document.cookie = 'seen=1; max-age=3600; path=/';")
        .await;
    before.close().await;

    let after = chromium.browser_on("after-restart", profile).await;
    after.goto(&app.url("/private")).await;
    after.shot("after-restart").await;
    let kept = after.script("return document.cookie;").await;
    assert!(
        kept.as_str().is_some_and(|c| c.contains("seen=1")),
        "the restarted browser did not keep the profile's cookies: {kept}"
    );
    let shown = format!("{} {}", after.url().await, after.text().await);
    (persistent, shown)
}

#[test]
fn with_browser_session_cookies_a_restarted_browser_is_logged_out() {
    run("restart_browser_session", |chromium| async move {
        let app = App::login(&chromium, Store::Memory, &[("BROWSER_SESSION", "1")]);
        let (persistent, shown) =
            log_in_and_restart(&chromium, &app, &chromium.profile(), false).await;
        assert!(!persistent, "a browser-session cookie has no expiry");
        assert!(shown.contains("/login?next=/private"), "{shown}");
    });
}

#[test]
fn with_persistent_cookies_a_restarted_browser_is_still_logged_in() {
    run("restart_persistent", |chromium| async move {
        let app = App::login(&chromium, Store::Memory, &[]);
        let (persistent, shown) =
            log_in_and_restart(&chromium, &app, &chromium.profile(), false).await;
        assert!(persistent);
        assert!(shown.contains("hello ann (visit 2)"), "{shown}");
    });
}

#[test]
fn keep_me_logged_in_outlives_a_restart_under_browser_session_cookies() {
    run("restart_keep_me_logged_in", |chromium| async move {
        let app = App::login(&chromium, Store::Memory, &[("BROWSER_SESSION", "1")]);
        let (persistent, shown) =
            log_in_and_restart(&chromium, &app, &chromium.profile(), true).await;
        assert!(persistent, "this session's own cookie is persistent");
        assert!(shown.contains("hello ann (visit 2)"), "{shown}");
    });
}

/// What `browser_session` cannot promise: a browser set to "Continue where you left off"
/// keeps browser-session cookies across restarts, so the session lives on until its TTL
/// ends it (`ttl`, `absolute_timeout`). A new profile does not restore, which is what the
/// tests above rely on.
#[test]
fn a_browser_that_continues_where_it_left_off_keeps_browser_session_cookies() {
    run("restart_continue_where_left_off", |chromium| async move {
        let app = App::login(&chromium, Store::Memory, &[("BROWSER_SESSION", "1")]);
        let profile = chromium.profile_continuing_where_it_left_off();
        let (persistent, shown) = log_in_and_restart(&chromium, &app, &profile, false).await;
        assert!(!persistent, "a browser-session cookie has no expiry");
        assert!(shown.contains("hello ann (visit 2)"), "{shown}");
    });
}
