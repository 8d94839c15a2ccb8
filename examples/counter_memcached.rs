//! The Memcache example of `sanic_session` in actix-web: the counter, with sessions in
//! memcached, on one node or a pool of them.
//!
//! ```sh
//! memcached -p 11211 &
//! cargo run --example counter_memcached --features memcached
//! curl -c jar -b jar http://127.0.0.1:8080/   # 1, then 2, ...
//! ```
//!
//! - `MEMCACHED_ADDR` (default `127.0.0.1:11211`): the nodes, comma-separated `HOST:PORT`
//!   (each optionally `:WEIGHT`); sessions are spread over them by libmemcached's weighted
//!   ketama.
//! - `MEMCACHED_CA_FILE`: connect over TLS (memcached's `-Z`), trusting this PEM CA instead
//!   of the system's roots; `MEMCACHED_TLS=1` for TLS with the system's roots;
//!   `MEMCACHED_CLIENT_CERT` and `MEMCACHED_CLIENT_KEY`: a client certificate and key (PEM)
//!   to present.
//! - `BIND_ADDR` (default `127.0.0.1:8080`): where to listen.

use std::{env, error::Error, fs};

use actix_kv_session::{storage::MemcachedStore, Session, SessionMiddleware};
use actix_web::{web, App, HttpServer};

async fn index(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

/// An error with its causes, on one line.
fn chain(err: &dyn Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line = format!("{line}: {cause}");
        source = cause.source();
    }
    line
}

/// The store the environment describes.
fn store_from_env(nodes: &str) -> Result<MemcachedStore, Box<dyn Error>> {
    let mut builder = MemcachedStore::builder(nodes);
    if env::var("MEMCACHED_TLS").is_ok_and(|on| on == "1") {
        builder = builder.tls();
    }
    if let Ok(ca) = env::var("MEMCACHED_CA_FILE") {
        builder = builder
            .root_certificate(fs::read(&ca).map_err(|e| format!("MEMCACHED_CA_FILE {ca}: {e}"))?);
    }
    match (
        env::var("MEMCACHED_CLIENT_CERT"),
        env::var("MEMCACHED_CLIENT_KEY"),
    ) {
        (Ok(cert), Ok(key)) => {
            let cert = fs::read(&cert).map_err(|e| format!("MEMCACHED_CLIENT_CERT {cert}: {e}"))?;
            let key = fs::read(&key).map_err(|e| format!("MEMCACHED_CLIENT_KEY {key}: {e}"))?;
            builder = builder.client_certificate(cert, key);
        }
        (Err(_), Err(_)) => {}
        _ => return Err("MEMCACHED_CLIENT_CERT and MEMCACHED_CLIENT_KEY go together".into()),
    }
    Ok(builder.build()?)
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .init();
    let nodes = env::var("MEMCACHED_ADDR").unwrap_or_else(|_| "127.0.0.1:11211".to_owned());
    let addr = env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    // One store for every worker; each worker opens its connections to the nodes on first
    // use, so the app starts (and answers 503 on the sessions of a node that is down) while
    // memcached is not there yet.
    let store = store_from_env(&nodes)?;
    if let Err(err) = store.ping().await {
        eprintln!("warning: memcached does not answer yet: {}", chain(&err));
    }
    println!("listening on http://{addr}/ with sessions in memcached at {nodes}");
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
