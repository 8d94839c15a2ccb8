//! The In-Memory example of `sanic_session` in actix-web: a counter kept in the session.
//!
//! ```sh
//! cargo run --example counter
//! curl -c jar -b jar http://127.0.0.1:8080/   # 1
//! curl -c jar -b jar http://127.0.0.1:8080/   # 2
//! ```
//!
//! The listen address comes from `BIND_ADDR` (default `127.0.0.1:8080`).

use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
use actix_web::{web, App, HttpServer};

async fn index(session: Session) -> actix_web::Result<String> {
    // Interact with the session like a map of JSON values.
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .init();
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    // One store for every worker: it lives in this process and is lost when it stops.
    let store = MemoryStore::default();
    println!("listening on http://{addr}/");
    HttpServer::new(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone())
                    // Plain HTTP on localhost: a Secure cookie would never come back.
                    .secure(false)
                    .build(),
            )
            .route("/", web::get().to(index))
    })
    .bind(addr)?
    .run()
    .await
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}
