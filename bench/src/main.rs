//! One server of the benchmark, chosen by its first argument, serving the same routes:
//!
//! - `GET /counter`: read `foo`, add one, store it, return it (the seed's counter);
//! - `GET /noop`: the session middleware is installed, the handler does not use it;
//! - `GET /read`: return `foo` without writing the session or extending its TTL (a
//!   read-only request, measured like `/counter`; also sums the counters afterwards);
//! - `GET /stats`: how many `/counter` requests were answered 2xx.
//!
//! Kinds: `bare` (no session library: a cookie and a map lookup by hand), `bare-equivalent`
//! (by hand as well, but doing for its user what our `/counter` does: JSON values, a TTL, the
//! cookie's `Max-Age` sent again on each write), `bare-redis`
//! (the same work on Redis by hand: `HGETALL`, then `HSET` and `PEXPIRE`, through a
//! deadpool-redis pool), `ours-memory`, `ours-memory-signed` (signed cookies), `ours-redis`, `ours-memcached` (each with
//! `--strict` for the strict conflict policy), `as-cookie` and `as-redis` (actix-session
//! 0.11). `BIND_ADDR`, `REDIS_URL`, `MEMCACHED_ADDR` and `WORKERS` configure it.

use std::{
    collections::HashMap,
    env,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use actix_kv_session::{
    storage::{ConflictPolicy, MemcachedStore, MemoryStore, RedisStore, SessionStore},
    Session, SessionMiddleware,
};
use actix_web::{
    body::MessageBody,
    cookie::{Cookie, Key},
    dev::{ServiceRequest, ServiceResponse},
    middleware::{from_fn, Next},
    web, App, HttpRequest, HttpResponse, HttpServer,
};
use deadpool_redis::redis::AsyncCommands;

/// Counts `/counter` requests answered 2xx, after every middleware.
#[derive(Clone, Default)]
struct Stats(Arc<AtomicU64>);

async fn count_ok(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let stats = req.app_data::<web::Data<Stats>>().cloned();
    let is_counter = req.path() == "/counter";
    let res = next.call(req).await?;
    if is_counter && res.status().is_success() {
        if let Some(stats) = stats {
            stats.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(res)
}

async fn stats(stats: web::Data<Stats>) -> String {
    stats.0.load(Ordering::Relaxed).to_string()
}

async fn noop() -> &'static str {
    "noop"
}

// ---- ours ----

async fn ours_counter(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

async fn ours_read(session: Session) -> actix_web::Result<String> {
    Ok(session.get::<u64>("foo")?.unwrap_or(0).to_string())
}

fn serve_ours<S: SessionStore>(
    store: S,
    strict: bool,
    stats: Stats,
) -> std::io::Result<actix_web::dev::Server> {
    serve_ours_with(store, strict, None, stats)
}

/// Our middleware on `store`, with signed cookies when `signing` is given.
fn serve_ours_with<S: SessionStore>(
    store: S,
    strict: bool,
    signing: Option<actix_kv_session::SigningKey>,
    stats: Stats,
) -> std::io::Result<actix_web::dev::Server> {
    let policy = if strict {
        ConflictPolicy::Strict
    } else {
        ConflictPolicy::LastWriteWins
    };
    let mut builder = SessionMiddleware::builder(store)
        .secure(false)
        .conflict_policy(policy);
    if let Some(key) = signing {
        builder = builder.signing_keys([key]);
    }
    let middleware = builder.build();
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(stats.clone()))
            .wrap(middleware.clone())
            .wrap(from_fn(count_ok))
            .route("/counter", web::get().to(ours_counter))
            .route("/read", web::get().to(ours_read))
            .route("/noop", web::get().to(noop))
            .route("/stats", web::get().to(self::stats))
    })
    .workers(workers())
    .bind(bind_addr())?
    .run())
}

// ---- actix-session ----

async fn as_counter(session: actix_session::Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

async fn as_read(session: actix_session::Session) -> actix_web::Result<String> {
    Ok(session.get::<u64>("foo")?.unwrap_or(0).to_string())
}

fn serve_actix_session<S, F>(make_store: F, stats: Stats) -> std::io::Result<actix_web::dev::Server>
where
    S: actix_session::storage::SessionStore + 'static,
    F: Fn() -> S + Clone + Send + 'static,
{
    let key = Key::generate();
    Ok(HttpServer::new(move || {
        let middleware = actix_session::SessionMiddleware::builder(make_store(), key.clone())
            .cookie_name("session".to_owned())
            .cookie_secure(false)
            .build();
        App::new()
            .app_data(web::Data::new(stats.clone()))
            .wrap(middleware)
            .wrap(from_fn(count_ok))
            .route("/counter", web::get().to(as_counter))
            .route("/read", web::get().to(as_read))
            .route("/noop", web::get().to(noop))
            .route("/stats", web::get().to(self::stats))
    })
    .workers(workers())
    .bind(bind_addr())?
    .run())
}

// ---- bare actix-web ----

type Counters = Arc<Mutex<HashMap<String, u64>>>;

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn cookie_of(req: &HttpRequest) -> Option<String> {
    req.cookie("session").map(|c| c.value().to_owned())
}

fn with_cookie(id: &str, body: String) -> HttpResponse {
    let mut cookie = Cookie::new("session", id.to_owned());
    cookie.set_path("/");
    cookie.set_http_only(true);
    HttpResponse::Ok().cookie(cookie).body(body)
}

async fn bare_counter(req: HttpRequest, map: web::Data<Counters>) -> HttpResponse {
    let existing = cookie_of(&req);
    let mut map = map.lock().expect("not poisoned");
    if let Some(count) = existing.and_then(|id| map.get_mut(&id)) {
        *count += 1;
        return HttpResponse::Ok().body(count.to_string());
    }
    let id = new_id();
    map.insert(id.clone(), 1);
    with_cookie(&id, "1".to_owned())
}

async fn bare_read(req: HttpRequest, map: web::Data<Counters>) -> String {
    let count = cookie_of(&req).and_then(|id| map.lock().expect("not poisoned").get(&id).copied());
    count.unwrap_or(0).to_string()
}

/// `bare-equivalent`: what our `/counter` does for its user, written by hand for this one
/// route: the value kept as JSON text under its key in a map of the session's keys, a
/// deadline per session (30 minutes, pushed back by each write, checked on each read), and the
/// cookie sent again with its `Max-Age` on each write so that the browser keeps it as long as
/// the server does. No library: what the session features cost when written for one route.
type Sessions = Arc<Mutex<HashMap<String, (std::time::Instant, HashMap<String, String>)>>>;

const EQUIVALENT_TTL: std::time::Duration = std::time::Duration::from_hours(30 * 24);

fn equivalent_cookie(id: String) -> Cookie<'static> {
    let mut cookie = Cookie::new("session", id);
    cookie.set_path("/");
    cookie.set_http_only(true);
    cookie.set_same_site(actix_web::cookie::SameSite::Lax);
    cookie.set_max_age(actix_web::cookie::time::Duration::days(30));
    cookie
}

async fn equivalent_counter(req: HttpRequest, map: web::Data<Sessions>) -> HttpResponse {
    let now = std::time::Instant::now();
    let existing = cookie_of(&req);
    let mut map = map.lock().expect("not poisoned");
    let live = existing.filter(|id| map.get(id).is_some_and(|(deadline, _)| *deadline > now));
    let id = live.unwrap_or_else(new_id);
    let (deadline, data) = map
        .entry(id.clone())
        .or_insert_with(|| (now, HashMap::new()));
    let count = data
        .get("foo")
        .and_then(|text| serde_json::from_str::<u64>(text).ok())
        .unwrap_or(0)
        + 1;
    data.insert(
        "foo".to_owned(),
        serde_json::to_string(&count).expect("a number"),
    );
    *deadline = now + EQUIVALENT_TTL;
    HttpResponse::Ok()
        .cookie(equivalent_cookie(id))
        .body(count.to_string())
}

async fn equivalent_read(req: HttpRequest, map: web::Data<Sessions>) -> String {
    let now = std::time::Instant::now();
    let map = map.lock().expect("not poisoned");
    let count = cookie_of(&req)
        .and_then(|id| map.get(&id))
        .filter(|(deadline, _)| *deadline > now)
        .and_then(|(_, data)| data.get("foo"))
        .and_then(|text| serde_json::from_str::<u64>(text).ok());
    count.unwrap_or(0).to_string()
}

async fn bare_redis_counter(
    req: HttpRequest,
    pool: web::Data<deadpool_redis::Pool>,
) -> actix_web::Result<HttpResponse> {
    let mut conn = pool
        .get()
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    let id = cookie_of(&req).unwrap_or_else(new_id);
    let key = format!("session:{id}");
    let fields: HashMap<String, String> = conn
        .hgetall(&key)
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    let count = fields
        .get("foo")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let (): () = deadpool_redis::redis::pipe()
        .hset(&key, "foo", count)
        .ignore()
        .pexpire(&key, 30 * 24 * 3600 * 1000)
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    Ok(if fields.is_empty() {
        with_cookie(&id, count.to_string())
    } else {
        HttpResponse::Ok().body(count.to_string())
    })
}

async fn bare_redis_read(
    req: HttpRequest,
    pool: web::Data<deadpool_redis::Pool>,
) -> actix_web::Result<String> {
    let mut conn = pool
        .get()
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    let key = format!("session:{}", cookie_of(&req).unwrap_or_default());
    // The whole hash, as `/counter` and a session library load it, so that `/read` compares
    // the same read; no write and no PEXPIRE.
    let fields: HashMap<String, String> = conn
        .hgetall(&key)
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    let count = fields.get("foo").and_then(|v| v.parse::<u64>().ok());
    Ok(count.unwrap_or(0).to_string())
}

fn bind_addr() -> String {
    env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
}

fn workers() -> usize {
    env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1)
}

fn redis_url() -> String {
    env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    let kind = args.first().map_or("", String::as_str);
    let strict = args.iter().any(|a| a == "--strict");
    let stats = Stats::default();
    let server = match kind {
        "ours-memory" => {
            let store = MemoryStore::builder().max_sessions(1_000_000).build();
            serve_ours(store, strict, stats)?
        }
        "ours-memory-signed" => {
            let store = MemoryStore::builder().max_sessions(1_000_000).build();
            serve_ours_with(
                store,
                strict,
                Some(actix_kv_session::SigningKey::generate()),
                stats,
            )?
        }
        "ours-redis" => serve_ours(RedisStore::new(redis_url())?, strict, stats)?,
        "ours-redis-near" => {
            let store = RedisStore::builder(redis_url())
                .near_cache(actix_kv_session::storage::NearCache::new())
                .build()?;
            serve_ours(store, strict, stats)?
        }
        "ours-redis-json" => {
            let store = RedisStore::builder(redis_url())
                .layout(actix_kv_session::storage::RedisLayout::Json)
                .build()?;
            serve_ours(store, strict, stats)?
        }
        "ours-memcached" => {
            let addr = env::var("MEMCACHED_ADDR").unwrap_or_else(|_| "127.0.0.1:11211".to_owned());
            serve_ours(MemcachedStore::new(addr)?, strict, stats)?
        }
        "as-cookie" => {
            serve_actix_session(actix_session::storage::CookieSessionStore::default, stats)?
        }
        "as-redis" => {
            let store = actix_session::storage::RedisSessionStore::new(redis_url()).await?;
            serve_actix_session(move || store.clone(), stats)?
        }
        "bare" => {
            let map: Counters = Arc::default();
            HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(map.clone()))
                    .app_data(web::Data::new(stats.clone()))
                    .wrap(from_fn(count_ok))
                    .route("/counter", web::get().to(bare_counter))
                    .route("/read", web::get().to(bare_read))
                    .route("/noop", web::get().to(noop))
                    .route("/stats", web::get().to(self::stats))
            })
            .workers(workers())
            .bind(bind_addr())?
            .run()
        }
        "bare-equivalent" => {
            let map: Sessions = Arc::default();
            HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(map.clone()))
                    .app_data(web::Data::new(stats.clone()))
                    .wrap(from_fn(count_ok))
                    .route("/counter", web::get().to(equivalent_counter))
                    .route("/read", web::get().to(equivalent_read))
                    .route("/noop", web::get().to(noop))
                    .route("/stats", web::get().to(self::stats))
            })
            .workers(workers())
            .bind(bind_addr())?
            .run()
        }
        "bare-redis" => {
            let pool = deadpool_redis::Config::from_url(redis_url())
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
            HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(pool.clone()))
                    .app_data(web::Data::new(stats.clone()))
                    .wrap(from_fn(count_ok))
                    .route("/counter", web::get().to(bare_redis_counter))
                    .route("/read", web::get().to(bare_redis_read))
                    .route("/noop", web::get().to(noop))
                    .route("/stats", web::get().to(self::stats))
            })
            .workers(workers())
            .bind(bind_addr())?
            .run()
        }
        other => return Err(format!("unknown kind {other:?}").into()),
    };
    server.await?;
    Ok(())
}
