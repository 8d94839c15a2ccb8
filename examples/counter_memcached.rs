//! The Memcache example of `sanic_session` in actix-web: the counter, with sessions in
//! memcached.
//!
//! ```sh
//! memcached -p 11211 &
//! cargo run --example counter_memcached --features memcached
//! curl -c jar -b jar http://127.0.0.1:8080/   # 1, then 2, ...
//! ```
//!
//! `MEMCACHED_ADDR` (default `127.0.0.1:11211`) says where memcached is, `BIND_ADDR`
//! (default `127.0.0.1:8080`) where to listen.

use actix_kv_session::{storage::MemcachedStore, Session, SessionMiddleware};
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
    let server = std::env::var("MEMCACHED_ADDR").unwrap_or_else(|_| "127.0.0.1:11211".to_owned());
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    // One pool of memcached clients for every worker; connections open on first use.
    let store = MemcachedStore::new(server.as_str())?;
    println!("listening on http://{addr}/ with sessions in memcached at {server}");
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
