//! The Redis example of `sanic_session` in actix-web: the counter, with sessions in Redis.
//!
//! ```sh
//! redis-server --port 6379 &
//! cargo run --example counter_redis --features redis
//! curl -c jar -b jar http://127.0.0.1:8080/   # 1, then 2, ...
//! ```
//!
//! `REDIS_URL` (default `redis://127.0.0.1:6379`) says where Redis is, `BIND_ADDR` (default
//! `127.0.0.1:8080`) where to listen.

use actix_kv_session::{storage::RedisStore, Session, SessionMiddleware};
use actix_web::{web, App, HttpServer};

async fn index(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", &count)?;
    Ok(count.to_string())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    // The pool is made once at start-up and shared by every worker; connections are opened
    // on first use, so the app starts (and answers 503 on session routes) while Redis is down.
    let store = RedisStore::new(url.as_str())?;
    println!("listening on http://{addr}/ with sessions in {url}");
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

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}
