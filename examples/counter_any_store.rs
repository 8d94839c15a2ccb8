//! `sanic_session`'s counter on a store chosen at start-up: the env var `SESSION_STORE` says
//! which (`memory`, the default; `redis`, with `REDIS_URL`; `memcached`, with
//! `MEMCACHED_ADDR`), and `DynStore` lets one `SessionMiddleware` type serve them all.
//!
//! ```sh
//! cargo run --example counter_any_store                                 # memory
//! SESSION_STORE=redis cargo run --example counter_any_store --features redis
//! SESSION_STORE=memcached cargo run --example counter_any_store --features memcached
//! curl -c jar -b jar http://127.0.0.1:8080/   # 1, then 2, ...
//! ```
//!
//! `BIND_ADDR` (default `127.0.0.1:8080`) says where to listen.

use actix_kv_session::{
    storage::{DynStore, MemoryStore},
    Session, SessionMiddleware,
};
use actix_web::{web, App, HttpServer};

async fn index(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

/// The store `SESSION_STORE` names, and where it keeps sessions.
fn store_from_env() -> Result<(DynStore, String), Box<dyn std::error::Error>> {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let kind = env("SESSION_STORE", "memory");
    match kind.as_str() {
        "memory" => Ok((DynStore::new(MemoryStore::default()), "memory".to_owned())),
        #[cfg(feature = "redis")]
        "redis" => {
            let url = env("REDIS_URL", "redis://127.0.0.1:6379");
            let store = actix_kv_session::storage::RedisStore::new(url.as_str())?;
            Ok((DynStore::new(store), url))
        }
        #[cfg(feature = "memcached")]
        "memcached" => {
            let addr = env("MEMCACHED_ADDR", "127.0.0.1:11211");
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
fn not_built(kind: &str) -> Box<dyn std::error::Error> {
    format!("SESSION_STORE={kind} needs the example built with `--features {kind}`").into()
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let (store, place) = store_from_env()?;
    println!("listening on http://{addr}/ with sessions in {place}");
    HttpServer::new(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone())
                    .secure(false)
                    .build(),
            )
            .route("/", web::get().to(index))
    })
    .bind(addr)?
    .run()
    .await?;
    Ok(())
}
