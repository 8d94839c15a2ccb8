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
//! # Typed sessions
//!
//! [`#[derive(SessionData)]`](derive@SessionData) maps a struct's fields to session keys; the
//! [`Typed`] extractor loads it, derefs to it, and writes back the fields that changed:
//!
//! ```
//! use actix_kv_session::{SessionData, Typed};
//!
//! #[derive(SessionData)]
//! struct Visits {
//!     #[session(key = "foo", default)]
//!     count: u64,
//! }
//!
//! async fn index(mut visits: Typed<Visits>) -> String {
//!     visits.count += 1;
//!     visits.count.to_string()
//! }
//! ```
//!
//! # Choosing a backend
//!
//! | store | cargo feature | for |
//! |---|---|---|
//! | [`MemoryStore`](storage::MemoryStore) | `memory` (default) | development, tests, one process |
//! | `RedisStore` | `redis` | production, many processes |
//! | `MemcachedStore` | `memcached` | production, many processes |
//!
//! ```toml
//! actix-kv-session = { version = "0.1", features = ["redis"] }
//! ```
//!
//! To choose the store at run time (from configuration), box it in a
//! [`DynStore`](storage::DynStore): `SessionMiddleware<DynStore>` serves any store.
//! `examples/counter_any_store.rs` picks one from the env var `SESSION_STORE`.
//!
//! # Writing your own store
//!
//! Implement [`SessionStore`](storage::SessionStore) (load, create, update, renew, touch,
//! delete): the [`storage`] module docs state the rules, and
//! [`ChangeSet::apply_to`](storage::ChangeSet::apply_to) and
//! [`ChangeSet::conflicts_with`](storage::ChangeSet::conflicts_with) implement the merge and
//! conflict rules on a [`SessionMap`](storage::SessionMap). Then check it with the
//! conformance suite the bundled stores pass, feature `testing`:
//!
//! ```toml
//! [dev-dependencies]
//! actix-kv-session = { version = "0.1", features = ["testing"] }
//! ```
//!
//! ```
//! # mod wrapper {
//! # type MyStore = actix_kv_session::storage::MemoryStore;
//! // tests/conformance.rs: one #[test] that runs every case on fresh stores.
//! actix_kv_session::store_conformance!(MyStore::default());
//! # }
//! ```
//!
//! `examples/map_store.rs` is a complete store on a `Mutex<HashMap>` that passes it.
//!
//! # Testing your handlers
//!
//! [`testing::TestSessions`] (features `testing` and `memory`) gives a test the middleware
//! on a memory store, a logged-in visitor's cookie made from the keys the test needs, and
//! what the handler stored, read back: no running store, no hand-made cookies.
//!
//! ```
//! use actix_kv_session::{testing::TestSessions, Session};
//! use actix_web::{test, web, App};
//!
//! async fn whoami(session: Session) -> actix_web::Result<String> {
//!     Ok(session.get::<String>("user")?.unwrap_or_default())
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let sessions = TestSessions::new();
//! let app = test::init_service(
//!     App::new().wrap(sessions.middleware()).route("/", web::get().to(whoami)),
//! )
//! .await;
//! let cookie = sessions.create([("user", "ada")]).await;
//! let req = test::TestRequest::get().uri("/").cookie(cookie).to_request();
//! assert_eq!(test::call_and_read_body(&app, req).await, "ada");
//! # });
//! ```
//!
//! # Errors and what the client sees
//!
//! Every error answers with a plain-text body that names only the status: the cause is
//! logged (through `tracing`), never sent.
//!
//! | error | status | when |
//! |---|---|---|
//! | [`SessionError::Store`] with [`StoreError::Unavailable`], [`StoreError::TimedOut`] or [`StoreError::Contended`] | 503 | the store is down, slower than `store_timeout`, or a save lost its compare-and-swap too often; nothing was saved, or its outcome is unknown |
//! | [`SessionError::Store`], other kinds | 500 | the store refused the data (too large, an id taken) |
//! | [`SessionError::Deserialize`] / [`SessionError::Serialize`] | 500 | a stored value does not fit the type asked for, or a value cannot be JSON |
//! | [`SessionError::ValueTooLarge`], [`SessionError::ReservedKey`] | 500 | `insert` refused the value or the key (the session is left as it was) |
//! | [`SessionError::NotLoaded`], [`SessionError::MissingMiddleware`] | 500 | a programming error: the handle was used before `load`, or no middleware wraps the route |
//! | [`TypedError::Missing`] / [`TypedError::Invalid`] | 400 | a `Typed<T>` whose required field is absent, or does not fit |
//! | a save refused (strict policy, or the session renewed meanwhile) | 409 | the handler's answer is replaced; nothing was saved |
//! | a session over `max_session_bytes` | 500 | the handler's answer is replaced; the stored session is kept |
//!
//! A malformed, forged, unknown or expired cookie is not an error: the visitor gets a new
//! session (and nothing is written under the id the cookie named).
//!
//! # Observability
//!
//! A `tracing` span `session` (DEBUG) covers each request that used its session, named by
//! a short hash of the id (never the id itself), with the response's status; a span
//! `session.store` covers each store operation with its outcome and duration. With the
//! `metrics` feature, loads, saves by outcome, conflicts (409), store errors and
//! timeouts, retries, connection waits and a latency histogram per store operation go
//! through the [`metrics`](https://docs.rs/metrics) facade, to any recorder;
//! `examples/metrics_prometheus.rs` serves them to Prometheus.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `kv_session_loads_total` | counter | `found` |
//! | `kv_session_saves_total` | counter | `outcome`: `created`, `updated`, `renewed`, `emptied`, `touched`, `gone`, `moved`, `conflict` |
//! | `kv_session_conflicts_total` | counter | (the 409s the middleware answers) |
//! | `kv_session_store_errors_total` | counter | `op`, `kind` |
//! | `kv_session_store_timeouts_total` | counter | `op` |
//! | `kv_session_store_retries_total` | counter | `reason`: `cas_lost`, `connection_dropped` |
//! | `kv_session_connection_waits_total` | counter | (connections the Redis and memcached stores open for an operation; none for an application's deadpool pool) |
//! | `kv_session_store_duration_seconds` | histogram | `op`: `load`, `create`, `update`, `renew`, `touch`, `delete`, `index`, `import`, `forget` |
//!
//! # Security
//!
//! The id is 122 random bits from the operating system, sent only in an HttpOnly, Secure,
//! SameSite=Lax cookie, and never logged. Ids that clients send are never written to the
//! store; `renew` at log-in defeats session fixation; `purge` ends a session for good, even
//! with requests in flight. The README's "Security" section has the whole list: signed
//! cookies, `__Host-` names, size limits, log out everywhere.
//!
//! # Performance
//!
//! The README's "Benchmarks" section compares this crate, side by side in one run, with
//! bare actix-web, actix-session and `sanic_session`, in requests per second and in
//! instructions per request; the figures are in the repository's `docs/bench/`.
//!
//! Requests that only read their session can skip the round-trip to Redis: the Redis
//! store's near cache ([`RedisStoreBuilder::near_cache`](storage::RedisStoreBuilder::near_cache),
//! feature `redis`) answers them from this process's memory, kept coherent by Redis's
//! invalidation messages, at about the memory store's cost.
//!
//! # Migrating
//!
//! From `sanic_session`: the same cookie, id format and key prefix; its Redis layout is
//! [`RedisLayout::Json`](storage::RedisLayout) (feature `redis`), its Memcached layout is
//! ours. From actix-session: [`compat`] has its `Session` API, so handlers compile with only
//! their `use` lines changed, and its `ActixSessionImport` (feature `actix-session-import`)
//! takes over the sessions actix-session wrote, through [`ImportSession`]. The repository's
//! `docs/migrating.md` is the whole guide.
//!
//! # Architecture
//!
//! 1. [`SessionMiddleware`] reads the session cookie (`middleware.rs`) and puts an unloaded
//!    [`Session`] handle in the request: no store I/O yet.
//! 2. The first extractor of [`Session`] or [`Typed`] loads the record, once per request
//!    (`session.rs`); the handler's reads and writes change the handle only, which keeps
//!    each changed key's value at load.
//! 3. After the handler, the handle becomes a save plan (`plan.rs`): which store write
//!    (create, update, renew, touch, delete, or none) and how the cookie follows from its
//!    answer. Every cookie and lifecycle rule lives there, testable without a store.
//! 4. The middleware executes the plan on the [`SessionStore`](storage::SessionStore)
//!    (`storage/`), whose contract and conformance suite (`testing.rs`) every store keeps;
//!    each backend file holds only its own I/O.
//! 5. Where a change belongs: a cookie or lifecycle rule in `plan.rs`; a setting in
//!    `config.rs` and the builder; a store rule in the contract (`storage/mod.rs`), the
//!    suite, and each store; the typed view in `typed.rs` and the derive crate.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `memory` | yes | [`storage::MemoryStore`], sharded, bounded, about 140 bytes a small session |
//! | `derive` | yes | [`#[derive(SessionData)]`](derive@SessionData), typed session structs |
//! | `redis` | no | [`storage::RedisStore`], on redis-rs (its connection manager, or your deadpool-redis pool) |
//! | `memcached` | no | [`storage::MemcachedStore`], over the meta protocol, several nodes, TLS |
//! | `testing` | no | the store conformance suite, for a store of your own: `store_conformance!` |
//! | `metrics` | no | metrics through the `metrics` facade (see [Observability](#observability)) |
//! | `actix-session-import` | no | `compat::ActixSessionImport`: takes over actix-session's sessions |

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod compat;
mod config;
mod cookie;
mod error;
mod id;
mod import;
mod lifetime;
mod middleware;
mod observe;
mod plan;
mod session;
mod session_ext;
mod signing;
pub mod storage;
#[cfg(all(feature = "testing", feature = "memory"))]
mod test_sessions;
#[cfg(feature = "testing")]
pub mod testing;
mod typed;
mod users;

#[doc(inline)]
pub use self::{
    config::TtlExtension,
    error::{BoxError, SessionError, StoreError},
    id::SessionId,
    import::ImportSession,
    middleware::{SessionFuture, SessionMiddleware, SessionMiddlewareBuilder, SessionService},
    session::{Session, SessionStatus},
    session_ext::SessionExt,
    signing::{SigningKey, SigningKeyError},
    typed::{SessionData, Typed, TypedError},
    users::UserSession,
};

// What the derive's generated code names. The version is in the name so that a derive and a
// runtime that disagree on the protocol fail to compile on a missing path instead of
// misbehaving: bump it whenever `typed::protocol` or the calls `actix-kv-session-derive`
// generates change incompatibly.
#[doc(hidden)]
pub use self::typed::protocol as __private_v1;

/// Derives [`SessionData`](trait@SessionData): a struct whose fields are session keys,
/// read and written back through the [`Typed`] extractor.
///
/// Each field is one session key holding the field's value as JSON, so a typed view and
/// [`Session::get`] / [`Session::insert`] see the same data. The struct needs named fields
/// whose types are `Serialize + DeserializeOwned`; a generic struct gets those bounds on
/// each type parameter.
///
/// ```
/// use actix_kv_session::{SessionData, Typed};
///
/// #[derive(SessionData, Debug)]
/// #[session(prefix = "cart.")]              // every key starts with `cart.`
/// struct Cart {
///     items: Vec<String>,                   // `cart.items`: required
///     #[session(key = "total_cents")]
///     total: u64,                           // `cart.total_cents`
///     coupon: Option<String>,               // `cart.coupon`: `None` when absent
///     #[session(default)]
///     views: u32,                           // `cart.views`: 0 when absent
///     #[session(skip)]
///     scratch: String,                      // not stored: always `String::default()`
/// }
///
/// async fn add(mut cart: Typed<Cart>) -> String {
///     cart.items.push("apple".to_owned());
///     cart.views += 1;
///     // Only `cart.items` and `cart.views` are written back: the fields that changed.
///     format!("{} items", cart.items.len())
/// }
/// ```
///
/// # Container attributes
///
/// - `#[session(prefix = "p")]`: prepends `p` to every key, explicit `key`s included, to
///   keep the keys of several structs apart in one session.
/// - `#[session(rename_all = "...")]`: derives keys from field names with one of
///   `lowercase`, `UPPERCASE`, `camelCase`, `PascalCase`, `snake_case`,
///   `SCREAMING_SNAKE_CASE`, `kebab-case`, `SCREAMING-KEBAB-CASE` (as serde does). An explicit
///   `key` is taken as it is.
///
/// # Field attributes
///
/// - `#[session(key = "k")]`: stores the field under `k` instead of its name.
/// - `#[session(default)]`: the field takes `Default::default()` when its key is missing,
///   and `#[session(default = "path::to::function")]` the function's result.
/// - `#[session(skip)]`: the field is not stored; it takes `Default::default()`. It cannot be
///   combined with `key` or `default`.
///
/// A field written `Option<T>` is `None` when its key is missing, and setting it to `None`
/// removes the key. Every other field without `default` is required: a session that lacks
/// it rejects [`Typed<T>`] with [`TypedError::Missing`] (extract `Option<Typed<T>>` to
/// accept that).
///
/// # When the struct changes
///
/// A stored value that no longer fits its field's type (the app changed the struct since
/// the session was written, or another version of the app wrote it during a rolling
/// deploy) falls back to the default for `default` and `Option` fields, with a warning
/// logged. The stored value is left as it is: only a field the handler changes is written
/// back, as always, so one version never erases what the other wrote. For a required field
/// it is a rejection, [`TypedError::Invalid`]. Never a panic.
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, SessionData, SessionMiddleware, Typed};
/// use actix_web::{test, web, App};
///
/// #[derive(SessionData)]
/// struct Visits {
///     #[session(key = "foo", default)]
///     count: u64,
/// }
///
/// async fn index(mut visits: Typed<Visits>) -> String {
///     visits.count += 1;
///     visits.count.to_string()
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let app = test::init_service(
///     App::new()
///         .wrap(SessionMiddleware::new(MemoryStore::default()))
///         .route("/", web::get().to(index)),
/// )
/// .await;
/// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
/// let cookie = res.response().cookies().next().unwrap().into_owned();
/// assert_eq!(test::read_body(res).await, "1");
/// let req = test::TestRequest::get().uri("/").cookie(cookie).to_request();
/// assert_eq!(test::call_and_read_body(&app, req).await, "2");
/// # });
/// ```
///
/// Misuse is a compile error on the offending item, all of them in one compile: enums,
/// unions, tuple and unit structs, lifetime parameters, unknown attributes, duplicate keys
/// (after `rename_all` and `prefix`), `skip` with `key` or `default`, empty keys.
#[cfg(feature = "derive")]
pub use actix_kv_session_derive::SessionData;
