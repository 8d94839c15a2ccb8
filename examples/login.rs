//! Log-in and log-out with a typed session: an `Auth` struct with a required user id, a
//! new session id at log-in (so an id planted before log-in is worthless), the session
//! deleted at log-out, and a page only logged-in users reach.
//!
//! ```sh
//! cargo run --example login
//! curl -c jar -b jar http://127.0.0.1:8080/private              # 401 log in first
//! curl -c jar -b jar -X POST 'http://127.0.0.1:8080/login?user=ann'
//! curl -c jar -b jar http://127.0.0.1:8080/private              # hello ann (visit 1)
//! curl -c jar -b jar -X POST http://127.0.0.1:8080/logout
//! curl -c jar -b jar http://127.0.0.1:8080/private              # 401 log in first
//! ```
//!
//! There is no password check: this example is about the session, not authentication.
//! The listen address comes from `BIND_ADDR` (default `127.0.0.1:8080`).

use actix_kv_session::{storage::MemoryStore, Session, SessionData, SessionMiddleware, Typed};
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;

/// Who is logged in. `user_id` is required: a session without it is not logged in.
#[derive(SessionData)]
#[session(prefix = "auth.")]
struct Auth {
    user_id: String,
    #[session(default)]
    visits: u32,
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, form: web::Query<Login>) -> actix_web::Result<HttpResponse> {
    // A new id for the new privileges: whatever id the browser had before is dead now.
    session.renew()?;
    session.insert_typed(&Auth {
        user_id: form.into_inner().user,
        visits: 0,
    })?;
    Ok(HttpResponse::Ok().body("logged in\n"))
}

async fn logout(session: Session) -> HttpResponse {
    // Deletes the stored session and tells the browser to drop the cookie.
    session.purge();
    HttpResponse::Ok().body("logged out\n")
}

/// Only for logged-in users: a session without `auth.user_id` gets a 401.
async fn private(auth: Option<Typed<Auth>>) -> HttpResponse {
    let Some(mut auth) = auth else {
        return HttpResponse::Unauthorized().body("log in first\n");
    };
    auth.visits += 1;
    HttpResponse::Ok().body(format!("hello {} (visit {})\n", auth.user_id, auth.visits))
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
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/private", web::get().to(private))
    })
    .bind(addr)?
    .run()
    .await
}
