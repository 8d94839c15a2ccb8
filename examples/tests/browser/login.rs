//! `examples/login.rs` as a person uses it: fill a cart, log in with the form, reach the
//! private page, reload, open it in another tab, log out there; the first tab is logged
//! out too, the old cookie replayed afterwards is worthless, and no script in the page can
//! read the session cookie.

use crate::{
    apps::{App, Store},
    harness::{run, Browser, Chromium},
};

/// Logs in through the form the private page sends a visitor to; ends on the private page.
pub(crate) async fn log_in_as(browser: &Browser<'_>, app: &App, user: &str) {
    browser.goto(&app.url("/private")).await;
    browser
        .wait_for_page("/login?next=/private", "Log in")
        .await;
    browser.fill("#user", user).await;
    browser.click("#log-in").await;
    browser
        .wait_for_page("/private", &format!("hello {user} (visit 1)"))
        .await;
}

async fn log_in_reload_log_out(chromium: &Chromium, store: Store) {
    let app = App::login(chromium, store, &[]);
    let browser = chromium.browser("shopper").await;

    // A visitor fills a cart before logging in: the session exists before the log-in.
    browser.goto(&app.url("/")).await;
    browser.wait_for_page("/", "Not logged in").await;
    browser.fill("#item", "green tea").await;
    browser.click("#add-to-cart").await;
    browser.wait_for_page("/", "green tea").await;
    let visitor = browser.cookie("session").await.expect("a visitor's cookie");

    log_in_as(&browser, &app, "ann").await;
    browser.shot("logged-in").await;
    let logged_in = browser.cookie("session").await.expect("a session cookie");
    assert_ne!(
        logged_in.value(),
        visitor.value(),
        "the log-in gives the session a new id"
    );
    assert!(
        browser.text().await.contains("green tea"),
        "the cart is kept across the log-in"
    );
    assert_eq!(logged_in.http_only(), Some(true));
    assert_eq!(format!("{:?}", logged_in.same_site()), "Some(Lax)");
    assert_eq!(logged_in.path(), Some("/"));
    assert!(
        logged_in.expires_datetime().is_some(),
        "persistent by default"
    );

    // HttpOnly as the browser applies it: a script sees the page's other cookies, not ours.
    let seen_by_scripts = browser
        .script("document.cookie = 'theme=dark; path=/'; return document.cookie;")
        .await;
    assert_eq!(seen_by_scripts.as_str(), Some("theme=dark"));

    browser.reload().await;
    browser
        .wait_for_page("/private", "hello ann (visit 2)")
        .await;

    // Another tab shares the session, and a log-out there ends it in this one too.
    let first_tab = browser.tab().await;
    browser.new_tab().await;
    browser.goto(&app.url("/private")).await;
    browser
        .wait_for_page("/private", "hello ann (visit 3)")
        .await;
    browser.goto(&app.url("/")).await;
    browser.wait_for_page("/", "Logged in as ann").await;
    browser.click("#log-out").await;
    browser.wait_for_page("/", "Not logged in").await;
    browser.shot("logged-out-in-the-second-tab").await;
    assert!(
        browser.text().await.contains("Your cart is empty"),
        "log-out deletes the whole session"
    );
    assert!(
        browser.cookie("session").await.is_none(),
        "log-out removes the cookie"
    );
    browser.switch_to(&first_tab).await;
    browser
        .wait_for_page("/private", "hello ann (visit 2)")
        .await;
    browser.reload().await;
    browser
        .wait_for_page("/login?next=/private", "Log in")
        .await;

    let status = browser
        .script_async("fetch('/private').then(r => done(r.status));")
        .await;
    assert_eq!(status.as_u64(), Some(401), "a script is told 401");

    // Someone who copied the logged-in cookie before the log-out replays it.
    browser.add_cookie(logged_in).await;
    browser.goto(&app.url("/private")).await;
    browser
        .wait_for_page("/login?next=/private", "Log in")
        .await;
    browser.shot("old-cookie-replayed").await;
}

#[test]
fn log_in_reload_log_out_in_another_tab_and_the_old_cookie_is_dead_on_memory() {
    run("login_on_memory", |chromium| async move {
        log_in_reload_log_out(&chromium, Store::Memory).await;
    });
}

#[cfg(feature = "redis")]
#[test]
fn log_in_reload_log_out_in_another_tab_and_the_old_cookie_is_dead_on_redis() {
    run("login_on_redis", |chromium| async move {
        log_in_reload_log_out(&chromium, Store::Redis).await;
    });
}
