//! The Redis example of `sanic_session` in actix-web: the counter, with sessions in Redis,
//! on whichever deployment the environment names.
//!
//! ```sh
//! redis-server --port 6379 &
//! cargo run --example counter_redis --features redis
//! curl -c jar -b jar http://127.0.0.1:8080/   # 1, then 2, ...
//! ```
//!
//! - `REDIS_URL` (default `redis://127.0.0.1:6379`): one server. `rediss://` for TLS,
//!   `redis://USER:PASSWORD@HOST:PORT` for an ACL user (`redis://:PASSWORD@...` for
//!   `requirepass`).
//! - `REDIS_CLUSTER_URLS`: comma-separated URLs of Redis Cluster nodes; cluster mode when set.
//! - `REDIS_SENTINEL_URLS` (comma-separated Sentinel URLs) with `REDIS_SENTINEL_MASTER` (the
//!   master's name): the master Sentinel follows, when set.
//! - `REDIS_CA_FILE`: a PEM CA to trust for TLS, instead of the system's roots;
//!   `REDIS_CLIENT_CERT` and `REDIS_CLIENT_KEY`: a client certificate and key (PEM) to present.
//! - `REDIS_LAYOUT=json`: sessions as one JSON string each, the layout of `sanic_session`'s
//!   Redis interface, to take over (or share) the sessions of a Sanic app; `hash` (the
//!   default) otherwise.
//! - `BIND_ADDR` (default `127.0.0.1:8080`): where to listen.

use std::{env, error::Error, fs};

use actix_kv_session::{
    storage::{RedisLayout, RedisStore, RedisStoreBuilder},
    Session, SessionMiddleware,
};
use actix_web::{web, App, HttpServer};

async fn index(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

/// A URL list from the environment.
fn urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Where a URL points, without its user and password.
fn place(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{host}")
        }
        None => url.to_owned(),
    }
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

/// The store the environment describes, and a line saying where it is.
fn store_from_env() -> Result<(RedisStore, String), Box<dyn Error>> {
    let (mut builder, deployment): (RedisStoreBuilder, String) = if let Ok(nodes) =
        env::var("REDIS_CLUSTER_URLS")
    {
        let nodes = urls(&nodes);
        let places: Vec<String> = nodes.iter().map(|url| place(url)).collect();
        let line = format!("the Redis Cluster at {}", places.join(", "));
        (RedisStore::cluster(nodes), line)
    } else if let Ok(sentinels) = env::var("REDIS_SENTINEL_URLS") {
        let master = env::var("REDIS_SENTINEL_MASTER")
            .map_err(|_| "REDIS_SENTINEL_URLS needs REDIS_SENTINEL_MASTER, the master's name")?;
        let sentinels = urls(&sentinels);
        let places: Vec<String> = sentinels.iter().map(|url| place(url)).collect();
        let line = format!(
            "the master `{master}` of the Sentinels at {}",
            places.join(", ")
        );
        (RedisStore::sentinel(sentinels, master), line)
    } else {
        let url = env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let line = format!("the Redis at {}", place(&url));
        (RedisStore::builder(url), line)
    };
    if let Ok(ca) = env::var("REDIS_CA_FILE") {
        builder = builder
            .root_certificate(fs::read(&ca).map_err(|e| format!("REDIS_CA_FILE {ca}: {e}"))?);
    }
    match (env::var("REDIS_CLIENT_CERT"), env::var("REDIS_CLIENT_KEY")) {
        (Ok(cert), Ok(key)) => {
            let cert = fs::read(&cert).map_err(|e| format!("REDIS_CLIENT_CERT {cert}: {e}"))?;
            let key = fs::read(&key).map_err(|e| format!("REDIS_CLIENT_KEY {key}: {e}"))?;
            builder = builder.client_certificate(cert, key);
        }
        (Err(_), Err(_)) => {}
        _ => return Err("REDIS_CLIENT_CERT and REDIS_CLIENT_KEY go together".into()),
    }
    let layout = match env::var("REDIS_LAYOUT").as_deref() {
        Err(_) | Ok("hash") => RedisLayout::Hash,
        Ok("json") => RedisLayout::Json,
        Ok(other) => return Err(format!("REDIS_LAYOUT {other:?}: `hash` or `json`").into()),
    };
    let deployment = match layout {
        RedisLayout::Json => format!("{deployment}, as JSON strings (sanic_session's layout)"),
        _ => deployment,
    };
    Ok((builder.layout(layout).build()?, deployment))
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .init();
    let addr = env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    // The store is made once at start-up and shared by every worker; connections are
    // opened on first use, so the app starts (and answers 503 on session routes) while
    // Redis is down. A wrong password or certificate is said here, at start-up.
    let (store, deployment) = store_from_env()?;
    if let Err(err) = store.ping().await {
        eprintln!("warning: {deployment} does not answer yet: {}", chain(&err));
    }
    println!("listening on http://{addr}/ with sessions in {deployment}");
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
