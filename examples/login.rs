//! A small shop with log-in, as a browser sees it: a cart kept in a typed session before and
//! after log-in, a log-in form (POST) that gives the session a new id (so an id planted
//! before log-in is worthless), a private page only logged-in users reach, and a log-out
//! that deletes the session. `examples/tests/browser/` drives it in headless Chromium.
//!
//! ```sh
//! cargo run --example login        # then open http://127.0.0.1:8080/ in a browser
//! curl -c jar -b jar http://127.0.0.1:8080/private              # 401 log in first
//! curl -c jar -b jar -X POST 'http://127.0.0.1:8080/login?user=ann'
//! curl -c jar -b jar http://127.0.0.1:8080/private              # hello ann (visit 1)
//! curl -c jar -b jar -X POST http://127.0.0.1:8080/logout
//! curl -c jar -b jar http://127.0.0.1:8080/private              # 401 log in first
//! ```
//!
//! Pages answer HTML to browsers (`Accept: text/html`) and plain text to other clients: a
//! browser that is not logged in is sent from `/private` to the log-in form, a script gets
//! a 401. There is no password check: this example is about the session, not
//! authentication.
//!
//! Settings, from the environment:
//!
//! - `BIND_ADDR` (default `127.0.0.1:8080`): where to listen.
//! - `SESSION_STORE`: `memory` (the default), `redis` (with `REDIS_URL`; build with
//!   `--features redis`) or `memcached` (with `MEMCACHED_ADDR`; `--features memcached`).
//! - `COOKIE_NAME` (default `session`) and `COOKIE_SECURE` (default `0`): in production,
//!   behind HTTPS or a proxy that terminates TLS, set `COOKIE_NAME=__Host-session
//!   COOKIE_SECURE=1`. Over plain HTTP, browsers keep a Secure cookie only from loopback
//!   (`localhost`, `127.0.0.1`: secure contexts), so these work on a developer's machine
//!   too, and on no other plain-HTTP host.
//! - `BROWSER_SESSION=1`: the cookie has no Max-Age, so closing the browser logs the user
//!   out; the log-in form then offers "keep me logged in", which gives that session a
//!   persistent cookie.
//! - `API_DELAY_MS` (default `0`): the `/api/` routes wait this long between loading the
//!   session and saving it, like a slow backend, to watch a log-in race the requests a page
//!   still has in flight (they get 409 Conflict, and the browser stays logged in).

use std::{env, error::Error, fmt::Write as _, time::Duration};

use actix_kv_session::{
    storage::{DynStore, MemoryStore},
    Session, SessionData, SessionMiddleware, Typed,
};
use actix_web::{
    http::header, middleware::Logger, rt::time::sleep, web, App, Either, HttpRequest, HttpResponse,
    HttpServer,
};
use serde::{Deserialize, Serialize};

/// Who is logged in. `user_id` is required: a session without it is not logged in.
#[derive(SessionData)]
#[session(prefix = "auth.")]
struct Auth {
    user_id: String,
    #[session(default)]
    visits: u32,
}

/// What a visitor put in the cart, logged in or not: `renew` at log-in keeps it.
#[derive(SessionData)]
#[session(prefix = "cart.")]
struct Cart {
    #[session(default)]
    items: Vec<String>,
}

/// The longest user name and item name accepted, and the most items in a cart.
const MAX_NAME: usize = 40;
const MAX_ITEMS: usize = 20;

/// What the app's pages need from the settings.
#[derive(Clone, Copy)]
struct Config {
    /// The log-in form offers "keep me logged in" (cookies are browser-session ones).
    browser_session: bool,
    /// How long the `/api/` routes hold a loaded session before saving.
    api_delay: Duration,
}

#[derive(Deserialize)]
struct Login {
    user: String,
    next: Option<String>,
    /// The "keep me logged in" box, sent only when ticked.
    remember: Option<String>,
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    item: String,
}

/// The cart as the `/api/` routes answer it.
#[derive(Serialize)]
struct CartJson<'a> {
    user: Option<&'a str>,
    items: &'a [String],
}

/// Browsers ask for HTML; scripts and `curl` get plain text.
fn wants_html(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// `next` if it is a path on this site: never an open redirect to another one.
fn local_path(next: Option<&str>) -> Option<&str> {
    next.filter(|path| {
        path.starts_with('/')
            && !path.starts_with("//")
            && !path.contains('\\')
            && !path.chars().any(char::is_control)
    })
}

/// Whether the browser says another site sent this request (a form it posted, say).
///
/// SameSite=Lax keeps the session cookie off such a post, so a forged log-out finds no
/// session to end. But the browser stores the cookie its answer sets: a route that starts a
/// session for a visitor without one would let any site replace a logged-in user's session
/// (log them out, or log them in as someone else). Those routes refuse it.
/// `Sec-Fetch-Site` is sent by current browsers; older ones and scripts are let through.
fn from_another_site(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .is_some_and(|site| site == "cross-site")
}

fn refused_from_another_site() -> HttpResponse {
    HttpResponse::Forbidden().body("refused: this form was sent from another site\n")
}

fn see_other(path: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, path))
        .finish()
}

/// A trimmed name of 1 to `MAX_NAME` characters, or `None`.
fn valid_name(name: &str) -> Option<&str> {
    let name = name.trim();
    (!name.is_empty() && name.chars().count() <= MAX_NAME).then_some(name)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html>\n<html lang=en><head><meta charset=utf-8>\
             <meta name=viewport content=\"width=device-width\"><title>{title}</title>\
             <style>body{{font:16px sans-serif;margin:2em auto;max-width:40em}}\
             form.inline{{display:inline}}</style></head>\n<body>\n{body}</body></html>\n"
        ))
}

fn cart_html(cart: &Cart) -> String {
    if cart.items.is_empty() {
        return "<p id=cart>Your cart is empty.</p>\n".to_owned();
    }
    let mut html = "<ul id=cart>".to_owned();
    for item in &cart.items {
        let _ = write!(html, "<li>{}</li>", escape(item));
    }
    html.push_str("</ul>\n");
    html
}

fn log_out_form(next: &str) -> String {
    format!(
        "<form class=inline method=post action=/logout><input type=hidden name=next \
         value=\"{next}\"><button id=log-out>Log out</button></form>"
    )
}

/// The shop: who is logged in, the cart, a form to add to it.
async fn home(auth: Option<Typed<Auth>>, cart: Typed<Cart>) -> HttpResponse {
    let who = match &auth {
        Some(auth) => format!(
            "<div id=who>Logged in as <b>{}</b> · <a id=account href=/private>Your account</a> · {}</div>\n",
            escape(&auth.user_id),
            log_out_form("/")
        ),
        None => "<div id=who>Not logged in · <a id=log-in-link href=\"/login?next=/private\">Log in</a></div>\n"
            .to_owned(),
    };
    page(
        "Tea shop",
        &format!(
            "<h1>Tea shop</h1>\n{who}<h2>Cart</h2>\n{}\
             <form id=add method=post action=/cart><input id=item name=item required \
             maxlength={MAX_NAME}> <button id=add-to-cart>Add to cart</button></form>\n",
            cart_html(&cart)
        ),
    )
}

/// The log-in form; `next` is where a successful log-in goes.
async fn login_form(query: web::Query<Next>, config: web::Data<Config>) -> HttpResponse {
    let next = local_path(query.next.as_deref()).unwrap_or("/");
    let remember = if config.browser_session {
        "<p><label><input type=checkbox id=remember name=remember value=1> Keep me logged in</label></p>\n"
    } else {
        ""
    };
    page(
        "Log in",
        &format!(
            "<h1>Log in</h1>\n<form id=log-in-form method=post action=/login>\n\
             <p><label>User <input id=user name=user required maxlength={MAX_NAME} \
             autocomplete=username></label></p>\n{remember}\
             <input type=hidden name=next value=\"{}\">\n\
             <button id=log-in>Log in</button>\n</form>\n",
            escape(next)
        ),
    )
}

/// Logs in from the form (a POST body) or from the query string (`?user=ann`, for scripts).
async fn login(
    req: HttpRequest,
    session: Session,
    form: Either<web::Form<Login>, web::Query<Login>>,
) -> actix_web::Result<HttpResponse> {
    if from_another_site(&req) {
        return Ok(refused_from_another_site());
    }
    let form = match form {
        Either::Left(form) => form.into_inner(),
        Either::Right(query) => query.into_inner(),
    };
    let Some(user) = valid_name(&form.user) else {
        return Ok(HttpResponse::BadRequest().body("a user name of 1 to 40 characters\n"));
    };
    // A new id for the new privileges: whatever id the browser had before is dead now, and
    // requests still in flight on it cannot write into the logged-in session.
    session.renew()?;
    session.insert_typed(&Auth {
        user_id: user.to_owned(),
        visits: 0,
    })?;
    if form.remember.is_some() {
        // "Keep me logged in": this session's cookie outlives the browser.
        session.set_browser_session(false)?;
    }
    Ok(match local_path(form.next.as_deref()) {
        Some(next) => see_other(next),
        None => HttpResponse::Ok().body("logged in\n"),
    })
}

async fn logout(session: Session, form: Option<web::Form<Next>>) -> HttpResponse {
    // Deletes the stored session and tells the browser to drop the cookie.
    session.purge();
    match form
        .as_ref()
        .and_then(|form| local_path(form.next.as_deref()))
    {
        Some(next) => see_other(next),
        None => HttpResponse::Ok().body("logged out\n"),
    }
}

/// Only for logged-in users: a browser is sent to the log-in form, a script gets a 401.
async fn private(req: HttpRequest, auth: Option<Typed<Auth>>, cart: Typed<Cart>) -> HttpResponse {
    let html = wants_html(&req);
    let Some(mut auth) = auth else {
        return if html {
            see_other("/login?next=/private")
        } else {
            HttpResponse::Unauthorized().body("log in first\n")
        };
    };
    auth.visits += 1;
    let greeting = format!("hello {} (visit {})", auth.user_id, auth.visits);
    if !html {
        return HttpResponse::Ok().body(format!("{greeting}\n"));
    }
    page(
        "Your account",
        &format!(
            "<h1>Your account</h1>\n<p id=greeting>{}</p>\n<h2>Cart</h2>\n{}<div><a href=/>Shop</a> · {}</div>\n",
            escape(&greeting),
            cart_html(&cart),
            log_out_form("/")
        ),
    )
}

async fn add_to_cart(
    req: HttpRequest,
    mut cart: Typed<Cart>,
    form: web::Form<Item>,
) -> HttpResponse {
    if from_another_site(&req) {
        return refused_from_another_site();
    }
    if let Some(item) = valid_name(&form.item) {
        if cart.items.len() < MAX_ITEMS {
            cart.items.push(item.to_owned());
        }
    }
    see_other("/")
}

fn cart_json(auth: Option<&Auth>, cart: &Cart) -> HttpResponse {
    HttpResponse::Ok().json(CartJson {
        user: auth.map(|auth| auth.user_id.as_str()),
        items: &cart.items,
    })
}

/// The cart for scripts: reads the session only.
async fn api_cart(
    auth: Option<Typed<Auth>>,
    cart: Typed<Cart>,
    config: web::Data<Config>,
) -> HttpResponse {
    sleep(config.api_delay).await;
    cart_json(auth.as_deref(), &cart)
}

/// Adds to the cart for scripts: the session is loaded, then (after `API_DELAY_MS`) changed.
async fn api_add_to_cart(
    req: HttpRequest,
    auth: Option<Typed<Auth>>,
    mut cart: Typed<Cart>,
    form: web::Form<Item>,
    config: web::Data<Config>,
) -> HttpResponse {
    if from_another_site(&req) {
        return refused_from_another_site();
    }
    sleep(config.api_delay).await;
    let Some(item) = valid_name(&form.item) else {
        return HttpResponse::BadRequest().body("an item name of 1 to 40 characters\n");
    };
    if cart.items.len() < MAX_ITEMS {
        cart.items.push(item.to_owned());
    }
    cart_json(auth.as_deref(), &cart)
}

/// A yes/no setting: `1`/`true` or `0`/`false`, `default` when unset.
fn flag(name: &str, default: bool) -> Result<bool, Box<dyn Error>> {
    match env::var(name).as_deref() {
        Err(_) => Ok(default),
        Ok("1" | "true") => Ok(true),
        Ok("0" | "false" | "") => Ok(false),
        Ok(other) => Err(format!("{name}={other:?}: use 1 or 0").into()),
    }
}

/// The store `SESSION_STORE` names, and where it keeps sessions.
fn store_from_env() -> Result<(DynStore, String), Box<dyn Error>> {
    let var = |name: &str, default: &str| env::var(name).unwrap_or_else(|_| default.to_owned());
    match var("SESSION_STORE", "memory").as_str() {
        "memory" => Ok((DynStore::new(MemoryStore::default()), "memory".to_owned())),
        #[cfg(feature = "redis")]
        "redis" => {
            let url = var("REDIS_URL", "redis://127.0.0.1:6379");
            let store = actix_kv_session::storage::RedisStore::new(url.as_str())?;
            Ok((DynStore::new(store), url))
        }
        #[cfg(feature = "memcached")]
        "memcached" => {
            let addr = var("MEMCACHED_ADDR", "127.0.0.1:11211");
            let store = actix_kv_session::storage::MemcachedStore::new(addr.as_str())?;
            Ok((DynStore::new(store), format!("memcached at {addr}")))
        }
        #[cfg(not(feature = "redis"))]
        "redis" => Err(not_built("redis")),
        #[cfg(not(feature = "memcached"))]
        "memcached" => Err(not_built("memcached")),
        other => {
            Err(format!("unknown SESSION_STORE {other:?}: use memory, redis or memcached").into())
        }
    }
}

/// The error for a store this build of the example does not have.
#[cfg(not(all(feature = "redis", feature = "memcached")))]
fn not_built(kind: &str) -> Box<dyn Error> {
    format!("SESSION_STORE={kind} needs the example built with `--features {kind}`").into()
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let addr = env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let (store, place) = store_from_env()?;
    let config = Config {
        browser_session: flag("BROWSER_SESSION", false)?,
        api_delay: Duration::from_millis(env::var("API_DELAY_MS").map_or(Ok(0), |ms| {
            ms.parse().map_err(|e| format!("API_DELAY_MS: {e}"))
        })?),
    };
    // Built once, here: a setting browsers would reject (`__Host-session` without Secure)
    // stops the app at start-up with a message naming it.
    let sessions = SessionMiddleware::builder(store)
        .cookie_name(env::var("COOKIE_NAME").unwrap_or_else(|_| "session".to_owned()))
        // Plain HTTP by default: a Secure cookie set by http://127.0.0.1 would be refused.
        .secure(flag("COOKIE_SECURE", false)?)
        .browser_session(config.browser_session)
        .build();
    println!("listening on http://{addr}/ with sessions in {place}");
    HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            // Outermost: each request's line shows the status the session middleware left.
            .wrap(Logger::default())
            .app_data(web::Data::new(config))
            .route("/", web::get().to(home))
            .route("/login", web::get().to(login_form))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/private", web::get().to(private))
            .route("/cart", web::post().to(add_to_cart))
            .route("/api/cart", web::get().to(api_cart))
            .route("/api/cart", web::post().to(api_add_to_cart))
    })
    .bind(addr)?
    .run()
    .await?;
    Ok(())
}
