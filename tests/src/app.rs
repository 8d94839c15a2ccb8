//! The routes the tests drive.

use std::time::Duration;

use actix_kv_session::{Session, SessionData, SessionExt, Typed};
use actix_web::{web, HttpRequest, HttpResponse};

/// Registers every test route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/counter", web::get().to(counter))
        .route("/noop", web::get().to(noop))
        .route("/get/{key}", web::get().to(get))
        .route("/set/{key}/{value}", web::post().to(set))
        .route("/remove/{key}", web::post().to(remove))
        .route("/clear", web::post().to(clear))
        .route("/renew", web::post().to(renew))
        .route("/login/{user}", web::post().to(login))
        .route("/purge", web::post().to(purge))
        .route("/purge-then-set", web::post().to(purge_then_set))
        .route("/fail", web::post().to(fail))
        .route("/slow-set/{key}", web::post().to(slow_set))
        .route("/slow-incr", web::post().to(slow_incr))
        .route("/slow-read", web::get().to(slow_read))
        .route("/inflight/write/{key}", web::post().to(inflight_write))
        .route("/inflight/read", web::get().to(inflight_read))
        .route("/slow-login/{user}", web::post().to(slow_login))
        .route("/two", web::get().to(two_extractors))
        .route("/ext", web::get().to(through_ext))
        .route("/big/{kib}", web::post().to(big))
        .route("/keys", web::get().to(keys))
        .route("/login-as/{user}/{agent}", web::post().to(login_as))
        .route("/devices", web::get().to(devices))
        .route("/logout-others", web::post().to(logout_others))
        .route("/bind/{user}", web::post().to(bind))
        .route("/update/{key}", web::post().to(update))
        .route("/update-or/{key}", web::post().to(update_or))
        .route("/remember/{secs}", web::post().to(remember))
        .route("/browser-session/{on}", web::post().to(browser_session))
        .route("/typed/counter", web::get().to(typed_counter))
        .route("/typed/visit", web::post().to(typed_visit))
        .route("/typed/visit-slow", web::post().to(typed_visit_slow))
        .route("/typed/cart-slow/{item}", web::post().to(typed_cart_slow))
        .route(
            "/typed/theme-slow/{theme}",
            web::post().to(typed_theme_slow),
        )
        .route("/typed/profile", web::get().to(typed_profile));
}

/// The seed's counter: `foo` += 1.
async fn counter(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

async fn noop() -> &'static str {
    "noop"
}

/// The raw JSON of a key, or `none`.
async fn get(session: Session, key: web::Path<String>) -> actix_web::Result<String> {
    let entries = session.entries()?;
    Ok(entries
        .get(key.as_str())
        .cloned()
        .unwrap_or_else(|| "none".to_owned()))
}

async fn set(session: Session, path: web::Path<(String, String)>) -> actix_web::Result<String> {
    let (key, value) = path.into_inner();
    session.insert(key, &value)?;
    Ok("set".to_owned())
}

async fn remove(session: Session, key: web::Path<String>) -> actix_web::Result<String> {
    Ok(session.remove(&key)?.unwrap_or_else(|| "none".to_owned()))
}

async fn clear(session: Session) -> actix_web::Result<&'static str> {
    session.clear()?;
    Ok("cleared")
}

async fn renew(session: Session) -> actix_web::Result<&'static str> {
    session.renew()?;
    Ok("renewed")
}

async fn login(session: Session, user: web::Path<String>) -> actix_web::Result<&'static str> {
    session.renew()?;
    session.insert("user", user.as_str())?;
    Ok("welcome")
}

/// Log-out without loading the session: no store read, one delete.
async fn purge(req: HttpRequest) -> &'static str {
    req.get_session().purge();
    "purged"
}

async fn purge_then_set(session: Session) -> actix_web::Result<&'static str> {
    session.purge();
    session.insert("flash", "logged out")?;
    Ok("purged")
}

/// Changes the session, then fails: the change must not be saved.
async fn fail(session: Session) -> actix_web::Result<HttpResponse> {
    session.insert("foo", 999)?;
    Ok(HttpResponse::InternalServerError().body("boom"))
}

/// Sets a key after a pause, so concurrent requests overlap between load and save.
async fn slow_set(session: Session, key: web::Path<String>) -> actix_web::Result<&'static str> {
    actix_web::rt::time::sleep(Duration::from_millis(30)).await;
    session.insert(key.into_inner(), true)?;
    Ok("set")
}

/// Increments `foo` after a pause, so concurrent increments overlap.
async fn slow_incr(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0);
    actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    session.insert("foo", count + 1)?;
    Ok((count + 1).to_string())
}

/// Reads, waits, then writes: a request still in flight when the session is purged.
async fn slow_read(session: Session) -> actix_web::Result<&'static str> {
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    session.insert("late", true)?;
    Ok("late")
}

/// How long the in-flight routes hold a loaded session before they answer: long enough for a
/// log-in or log-out fired after them to land in between.
pub const IN_FLIGHT: Duration = Duration::from_millis(400);

/// An XHR that loads the session, works a while, then sets a key.
async fn inflight_write(session: Session, key: web::Path<String>) -> actix_web::Result<String> {
    actix_web::rt::time::sleep(IN_FLIGHT).await;
    session.insert(key.into_inner(), true)?;
    Ok("written".to_owned())
}

/// A page asset that loads the session, works a while, then answers with `foo`, reading
/// only.
async fn inflight_read(session: Session) -> actix_web::Result<String> {
    actix_web::rt::time::sleep(IN_FLIGHT).await;
    Ok(session.get::<u64>("foo")?.unwrap_or(0).to_string())
}

/// A log-in that checks a password for a while before it renews.
async fn slow_login(session: Session, user: web::Path<String>) -> actix_web::Result<String> {
    session.load().await?;
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    session.renew()?;
    session.insert("user", user.as_str())?;
    Ok(format!("welcome {user}"))
}

async fn two_extractors(a: Session, b: Session) -> actix_web::Result<String> {
    a.insert("x", 1)?;
    Ok(b.get::<u32>("x")?.unwrap_or(0).to_string())
}

async fn through_ext(req: HttpRequest) -> actix_web::Result<String> {
    let session = req.get_session();
    session.load().await?;
    Ok(session.get::<u64>("foo")?.unwrap_or(0).to_string())
}

/// Stores a string of `kib` KiB under `big`.
async fn big(session: Session, kib: web::Path<usize>) -> actix_web::Result<&'static str> {
    session.insert("big", "x".repeat(kib.into_inner() * 1024))?;
    Ok("stored")
}

/// The seed's counter as a typed struct: the same `foo` key as `/counter`.
#[derive(SessionData, Debug)]
pub struct Counter {
    /// `foo`, 0 when absent.
    #[session(key = "foo", default)]
    pub count: u64,
}

/// A logged-in user's profile: `user` is required.
#[derive(SessionData, Debug)]
pub struct Profile {
    /// Set by `/login/{user}`.
    #[session(key = "user")]
    pub name: String,
    /// Visits counted by `/typed/visit`.
    #[session(default)]
    pub visits: u64,
    /// Absent until chosen.
    pub theme: Option<String>,
    /// Never stored.
    #[session(skip)]
    pub scratch: u8,
}

/// A cart, namespaced.
#[derive(SessionData, Debug)]
#[session(prefix = "cart.")]
pub struct Cart {
    /// `cart.items`.
    #[session(default)]
    pub items: Vec<String>,
}

async fn typed_counter(mut counter: Typed<Counter>) -> String {
    counter.count += 1;
    counter.count.to_string()
}

async fn typed_visit(profile: Option<Typed<Profile>>) -> String {
    match profile {
        Some(mut profile) => {
            profile.visits += 1;
            profile.scratch = 7;
            format!("{} {}", profile.name, profile.visits)
        }
        None => "anonymous".to_owned(),
    }
}

async fn typed_visit_slow(mut profile: Typed<Profile>) -> String {
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    profile.visits += 1;
    profile.visits.to_string()
}

async fn typed_theme_slow(mut profile: Typed<Profile>, theme: web::Path<String>) -> String {
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    profile.theme = Some(theme.into_inner());
    "themed".to_owned()
}

async fn typed_cart_slow(mut cart: Typed<Cart>, item: web::Path<String>) -> String {
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    cart.items.push(item.into_inner());
    cart.items.len().to_string()
}

async fn typed_profile(profile: Typed<Profile>) -> String {
    format!("{:?}", *profile)
}

/// The session's keys as the app sees them, sorted, comma-separated.
async fn keys(session: Session) -> actix_web::Result<String> {
    let mut keys = session.keys()?;
    keys.sort();
    Ok(keys.join(","))
}

/// "Remember me": this session's own TTL, in seconds.
async fn remember(session: Session, secs: web::Path<u64>) -> actix_web::Result<&'static str> {
    session.set_ttl(Duration::from_secs(*secs))?;
    Ok("remembered")
}

/// This session's own cookie kind.
async fn browser_session(session: Session, on: web::Path<bool>) -> actix_web::Result<&'static str> {
    session.set_browser_session(*on)?;
    Ok("set")
}

/// Logs in as `user` from a device named `agent`: renew, bind, and keep the agent for the
/// "devices" page.
async fn login_as(
    session: Session,
    path: web::Path<(String, String)>,
) -> actix_web::Result<&'static str> {
    let (user, agent) = path.into_inner();
    session.renew()?;
    session.set_user(user)?;
    session.insert("agent", &agent)?;
    Ok("welcome")
}

/// The user's sessions as `agent` names, comma-separated in the listed order, the current one
/// starred.
async fn devices(session: Session) -> actix_web::Result<String> {
    let sessions = session.user_sessions().await?;
    Ok(sessions
        .iter()
        .map(|s| {
            let agent: String = s
                .data
                .get("agent")
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default();
            if s.current {
                format!("*{agent}")
            } else {
                agent
            }
        })
        .collect::<Vec<_>>()
        .join(","))
}

/// "Log out my other devices": how many sessions ended.
async fn logout_others(session: Session) -> actix_web::Result<String> {
    Ok(session.purge_other_sessions().await?.to_string())
}

/// Binds the session to `user` and stores nothing else.
async fn bind(session: Session, user: web::Path<String>) -> actix_web::Result<&'static str> {
    session.renew()?;
    session.set_user(user.into_inner())?;
    Ok("bound")
}

/// actix-session's `update`: adds one to the number at `key`, if there is one.
async fn update(session: Session, key: web::Path<String>) -> actix_web::Result<&'static str> {
    session.update(key.into_inner(), |n: u64| n + 1)?;
    Ok("updated")
}

/// actix-session's `update_or`: adds one to the number at `key`, or sets it to 1.
async fn update_or(session: Session, key: web::Path<String>) -> actix_web::Result<&'static str> {
    session.update_or(key.into_inner(), 1_u64, |n| n + 1)?;
    Ok("updated")
}
