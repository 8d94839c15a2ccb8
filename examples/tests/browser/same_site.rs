//! SameSite=Lax as Chromium applies it, seen from another site (`127.0.0.1` is another site
//! than `localhost`), and the `__Host-` prefix with Secure over plain HTTP on `localhost`.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

use crate::{
    apps::{App, Store},
    harness::{run, Chromium},
    login::log_in_as,
};

/// Another site: one page, served on `127.0.0.1` whatever the request, stopped when dropped.
struct OtherSite {
    port: u16,
    server: JoinHandle<()>,
}

impl OtherSite {
    async fn serve(page: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let page = page.clone();
                tokio::spawn(async move {
                    // The request's head is all there is (GETs); its content does not matter.
                    let mut head = vec![0; 8192];
                    let _ = stream.read(&mut head).await;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { port, server }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for OtherSite {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A page on another site with two forms that post to the shop, one to log out and one
/// to add to the cart, and a link to the shop's private page.
fn other_sites_page(app: &App) -> String {
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Another site</title></head><body>\
         <h1>Another site</h1>\
         <form method=post action=\"{}\"><input type=hidden name=next value=/private>\
         <button id=log-out>Claim your prize</button></form>\
         <form method=post action=\"{}\"><input type=hidden name=item value=prize>\
         <button id=add>Add a free prize to your cart</button></form>\
         <p><a id=link href=\"{}\">Your account at the shop</a></p></body></html>",
        app.url("/logout"),
        app.url("/cart"),
        app.url("/private"),
    )
}

#[test]
fn a_cross_site_form_post_comes_without_the_cookie_and_a_link_with_it() {
    run("same_site_lax", |chromium| async move {
        let app = App::login(&chromium, Store::Memory, &[]);
        let site = OtherSite::serve(other_sites_page(&app)).await;
        let browser = chromium.browser("visitor").await;
        log_in_as(&browser, &app, "ann").await;
        let logged_in = browser.cookie("session").await.expect("a session cookie");

        // A top-level GET from another site carries a Lax cookie.
        browser.goto(&site.url()).await;
        browser.click("#link").await;
        browser
            .wait_for_page("/private", "hello ann (visit 2)")
            .await;
        browser.shot("link-from-another-site").await;

        // A cross-site POST does not: the log-out it asks for finds no session to end, and
        // its redirect (a GET) shows the user still logged in.
        browser.goto(&site.url()).await;
        browser.click("#log-out").await;
        browser
            .wait_for_page("/private", "hello ann (visit 3)")
            .await;
        browser.shot("after-a-cross-site-log-out").await;

        // A post that would start a session for a visitor without one (the cookie is not
        // sent) is refused: the new session's cookie would replace the user's.
        browser.goto(&site.url()).await;
        browser.click("#add").await;
        browser.wait_for_page("/cart", "refused").await;
        let log = app.log();
        assert!(log.contains("\"POST /cart HTTP/1.1\" 403"), "{log}");
        let cookie = browser
            .cookie("session")
            .await
            .expect("still a session cookie");
        assert_eq!(cookie.value(), logged_in.value());
        browser.goto(&app.url("/private")).await;
        browser
            .wait_for_page("/private", "hello ann (visit 4)")
            .await;
        assert!(!browser.text().await.contains("prize"));
    });
}

/// Logs in, reloads and logs out with the cookie `__Host-session`, Secure, on `host`.
async fn host_prefixed_flow(chromium: &Chromium, host: &str) {
    let app = App::login(
        chromium,
        Store::Memory,
        &[("COOKIE_NAME", "__Host-session"), ("COOKIE_SECURE", "1")],
    );
    let browser = chromium.browser(host).await;
    browser
        .goto(&app.url_on(host, "/login?next=/private"))
        .await;
    browser.fill("#user", "ann").await;
    browser.click("#log-in").await;
    browser
        .wait_for_page("/private", "hello ann (visit 1)")
        .await;
    let cookie = browser
        .cookie("__Host-session")
        .await
        .expect("the __Host-session cookie");
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.path(), Some("/"));
    browser.reload().await;
    browser
        .wait_for_page("/private", "hello ann (visit 2)")
        .await;
    browser.click("#log-out").await;
    browser.wait_for_page("/", "Not logged in").await;
    assert!(browser.cookie("__Host-session").await.is_none());
}

/// Chromium takes Secure cookies from plain HTTP on loopback (a secure context), so an app
/// configured for production, `__Host-session` and Secure, works as is on a developer's
/// machine.
#[test]
fn host_prefixed_secure_cookie_works_over_plain_http_on_localhost_and_127_0_0_1() {
    run("host_prefix_on_loopback", |chromium| async move {
        host_prefixed_flow(&chromium, "localhost").await;
        host_prefixed_flow(&chromium, "127.0.0.1").await;
    });
}

/// Over plain HTTP on any other host name the browser drops a Secure cookie: the log-in
/// "works" and the next page asks to log in again. This is what a user sees when the app
/// is reached without TLS: behind a TLS-terminating proxy the browser speaks HTTPS to the
/// proxy, and the cookie is kept.
#[test]
fn a_secure_cookie_over_plain_http_on_another_host_name_is_dropped() {
    run("secure_cookie_over_plain_http", |chromium| async move {
        let app = App::login(
            &chromium,
            Store::Memory,
            &[("COOKIE_NAME", "__Host-session"), ("COOKIE_SECURE", "1")],
        );
        // shop.example is the app on loopback, without any DNS lookup.
        let browser = chromium
            .browser_with(
                "shop.example",
                &["--host-resolver-rules=MAP shop.example 127.0.0.1"],
            )
            .await;
        browser
            .goto(&app.url_on("shop.example", "/login?next=/private"))
            .await;
        browser.fill("#user", "ann").await;
        browser.click("#log-in").await;
        browser
            .wait_for_page("/login?next=/private", "Log in")
            .await;
        browser.shot("sent-back-to-log-in").await;
        assert!(browser.cookie("__Host-session").await.is_none());
        assert!(
            app.log().contains("\"POST /login HTTP/1.1\" 303"),
            "the app did log the user in:\n{}",
            app.log()
        );
    });
}
