//! Server-side sessions for [actix-web](https://actix.rs), kept in Redis, Memcached or
//! process memory.
//!
//! A random id (a UUID v4 in simple form, 32 lowercase hex characters) travels in a cookie
//! named `session`; the data stays on the server, one JSON value per key, in a
//! [`SessionStore`](storage::SessionStore). It is what `sanic_session` does for Sanic, with
//! the same cookie, id format and defaults, plus what that library and the others miss:
//! concurrent requests that change different keys of one session all persist, a strict
//! mode that refuses (409) instead of losing an update, a logged-out session that a request
//! still in flight cannot bring back, ids from clients never written to the store, no store
//! round-trip on routes that do not use the session, and a 503 within a timeout, not a hang,
//! when the store is down.
//!
//! # Getting started
//!
//! ```
//! use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
//! use actix_web::{web, App, HttpServer};
//!
//! async fn index(session: Session) -> actix_web::Result<String> {
//!     let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
//!     session.insert("foo", &count)?;
//!     Ok(count.to_string())
//! }
//!
//! let store = MemoryStore::default(); // one store, shared by every worker
//! let _server = HttpServer::new(move || {
//!     App::new()
//!         .wrap(SessionMiddleware::new(store.clone()))
//!         .route("/", web::get().to(index))
//! });
//! ```
//!
//! The middleware sets the cookie only when there is something to keep, saves only the keys
//! a request changed, deletes a session that became empty, and removes the cookie then.
//! [`SessionMiddleware::builder`] changes the cookie's attributes, the TTL, when the TTL is
//! extended and how conflicting saves are resolved.
//!
//! # Choosing a backend
//!
//! | store | cargo feature | for |
//! |---|---|---|
//! | [`MemoryStore`](storage::MemoryStore) | `memory` (default) | development, tests, one process |
//!
//! ```toml
//! actix-kv-session = "0.1"
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `memory` | yes | [`storage::MemoryStore`], on moka |
//! | `derive` | yes | the `SessionData` derive (in progress) |

mod config;
mod error;
mod id;
mod middleware;
mod session;
mod session_ext;
pub mod storage;

#[doc(inline)]
pub use self::{
    config::TtlExtension,
    error::{BoxError, SessionError, StoreError},
    id::SessionId,
    middleware::{SessionMiddleware, SessionMiddlewareBuilder, SessionService},
    session::{Session, SessionStatus},
    session_ext::SessionExt,
};
