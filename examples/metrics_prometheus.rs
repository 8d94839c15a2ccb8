//! The counter, with the middleware's metrics served to Prometheus at `/metrics`.
//!
//! ```sh
//! cargo run --example metrics_prometheus --features metrics
//! curl -c jar -b jar http://127.0.0.1:8080/        # 1, then 2, ...
//! curl http://127.0.0.1:8080/metrics               # kv_session_saves_total{outcome="created"} 1 ...
//! ```
//!
//! Any `metrics` recorder works: the library records through the `metrics` facade (feature
//! `metrics`), and the app installs the recorder it wants, here Prometheus's.
//! `BIND_ADDR` (default `127.0.0.1:8080`): where to listen.

use std::{env, error::Error};

use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
use actix_web::{web, App, HttpResponse, HttpServer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

async fn index(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

/// The metrics in Prometheus's text format.
async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let addr = env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let store = MemoryStore::default();
    println!("listening on http://{addr}/ (metrics at /metrics)");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(handle.clone()))
            .route("/metrics", web::get().to(metrics))
            .service(
                web::scope("")
                    .wrap(
                        SessionMiddleware::builder(store.clone())
                            .secure(false)
                            .build(),
                    )
                    .route("/", web::get().to(index)),
            )
    })
    .bind(addr)?
    .run()
    .await?;
    Ok(())
}
