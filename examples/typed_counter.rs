//! The seed's counter as a typed session struct: `#[derive(SessionData)]` maps the field to
//! the `foo` key, and `Typed<Visits>` reads it and writes it back after the handler.
//!
//! ```sh
//! cargo run --example typed_counter
//! curl -c jar -b jar http://127.0.0.1:8080/   # 1, then 2, ...
//! ```
//!
//! The listen address comes from `BIND_ADDR` (default `127.0.0.1:8080`).

use actix_kv_session::{storage::MemoryStore, SessionData, SessionMiddleware, Typed};
use actix_web::{web, App, HttpServer};

#[derive(SessionData)]
struct Visits {
    /// Stored under `foo`, as in the untyped example; 0 for a new visitor.
    #[session(key = "foo", default)]
    count: u64,
}

async fn index(mut visits: Typed<Visits>) -> String {
    visits.count += 1;
    visits.count.to_string()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let store = MemoryStore::default();
    println!("listening on http://{addr}/");
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
    .await
}
