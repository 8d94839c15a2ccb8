//! The Redis store: one hash per session, on redis-rs, for a standalone server (TLS and
//! ACLs included), a Redis Cluster, or a master that Sentinel follows.

mod builder;
mod connections;
mod json;
mod near_cache;

use std::{fmt, future::Future, sync::Arc, time::Duration};

use deadpool_redis::redis::{
    aio::ConnectionLike, from_redis_value, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline,
    RedisError, RedisFuture, Script, ScriptInvocation, Value,
};

#[doc(inline)]
pub use self::builder::{RedisStoreBuilder, RedisStoreError};
use self::connections::{Conn, Managed};
#[doc(inline)]
pub use self::json::RedisLayout;
use self::near_cache::Near;
#[doc(inline)]
pub use self::near_cache::NearCache;
use super::per_thread::Lease;
use super::{
    moved_marker_ttl, ChangeSet, ConflictPolicy, KeyPrefix, SaveOutcome, SessionMap, SessionStore,
};
use crate::{error::StoreError, SessionId};

/// Sessions kept in Redis: one hash per session at `prefix + id`, one field per session
/// key, each value JSON. Every session expires after its TTL (`PEXPIRE`).
///
/// A load is one round-trip (`HGETALL`); an update is one round-trip, a Lua script that
/// applies `HSET`, `HDEL` and `PEXPIRE` atomically and only to a hash that still exists, so
/// concurrent requests that change different keys all persist, and a session deleted
/// meanwhile stays deleted. `renew` moves the hash to the new id in the same script
/// (`RENAME`) and leaves a marker at the old key; on a Cluster, where the new key lives on
/// another node, it takes two steps (see [`RedisStore::cluster`]).
///
/// The store talks to Redis over one multiplexed connection per worker thread (per node, on
/// a Cluster), on which the worker's requests pipeline their commands; opened at the
/// worker's first request, reopened after a broken connection and replaced after a command
/// timed out on it. [`RedisStore::from_pool`] uses an application's deadpool-redis pool
/// instead.
///
/// ```no_run
/// use actix_kv_session::{storage::RedisStore, SessionMiddleware};
/// use actix_web::{web, App, HttpServer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::new("redis://127.0.0.1:6379")?;
/// HttpServer::new(move || App::new().wrap(SessionMiddleware::new(store.clone())))
///     .bind("127.0.0.1:8080")?
///     .run()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Source,
    prefix: KeyPrefix,
    layout: RedisLayout,
    /// The layout's script: `redis/save.lua` for hashes, `redis/json.lua` for JSON.
    script: Arc<Script>,
    /// The near cache ([`RedisStoreBuilder::near_cache`]).
    near: Option<Arc<Near>>,
}

/// The update script: applies a change set atomically, or extends a TTL.
const SAVE_SCRIPT: &str = include_str!("redis/save.lua");

/// The marker a renew leaves at the old key (see
/// [`MOVED_MARKER_TTL`](super::MOVED_MARKER_TTL)): a string with this value, where sessions
/// are hashes; the same value as `MOVED` in the save script.
const MOVED_MARKER: &[u8] = b"\0moved";

/// How a value that is not UTF-8 reaches the app: this prefix (which no JSON text starts
/// with, so reading the key fails with a clear error) and the bytes in hex, which the save
/// script turns back into bytes when a strict save compares what it saw.
const RAW_PREFIX: &str = "\0raw:";

/// Where the store's connections come from.
#[derive(Clone)]
enum Source {
    /// The store's own connections: one per worker thread, opened at its first request.
    Managed(Arc<Managed>),
    /// A pool the application made with deadpool-redis.
    Pool(deadpool_redis::Pool),
}

/// One connection, for one operation.
enum Connection {
    Managed(Lease<Conn>),
    Pooled(deadpool_redis::Connection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Managed(lease) => lease.conn.req_packed_command(cmd),
            Self::Pooled(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Managed(lease) => lease.conn.req_packed_commands(cmd, offset, count),
            Self::Pooled(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Managed(lease) => lease.conn.get_db(),
            Self::Pooled(conn) => conn.get_db(),
        }
    }
}

/// What the save script is asked to do (see the top of `redis/save.lua`).
#[derive(Clone, Copy)]
enum ScriptOp<'a> {
    /// Store a new session, where nothing is stored.
    Create(&'a SessionMap, Duration),
    Update(&'a ChangeSet),
    Touch(Duration),
    /// Park a copy, update, then hand the session's fields over and leave the marker.
    MoveOut(&'a ChangeSet),
    /// Store fields moved out at the new key, where nothing is stored.
    Place(&'a [(Vec<u8>, Vec<u8>)], Duration),
    /// Put the parked copy back over the marker.
    Back,
}

/// Whether a command may be sent again after the connection broke under it (the server
/// restarted, `CLIENT KILL`, a proxy cut it): then it runs once more, on the connection the
/// manager makes anew (or another from the pool), so a load does not fail for a connection
/// that was already dead. A timeout is not retried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Idempotent (a read, a TTL extension, a delete): once more, on a fresh connection.
    OnceIfDropped,
    /// A write: it may have been applied before the connection broke, so its outcome is
    /// unknown and it must not be applied twice.
    Never,
}

impl Retry {
    /// Whether to send the command again after `answer`.
    fn again<T>(self, answer: &Result<T, RedisError>) -> bool {
        self == Self::OnceIfDropped && answer.as_ref().is_err_and(connection_broke)
    }
}

impl RedisStore {
    /// A store on the Redis at `url`, with the default settings: `redis://HOST:PORT/DB`,
    /// with `USER:PASSWORD@` for an ACL user, or `rediss://` for TLS (the system's roots
    /// are trusted; [`RedisStoreBuilder::root_certificate`] sets another CA).
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::build`].
    ///
    /// ```
    /// use actix_kv_session::{storage::RedisStore, SessionMiddleware};
    ///
    /// // Succeeds with no Redis running: the store connects at the first request.
    /// let store = RedisStore::new("redis://127.0.0.1:6379/0")?;
    /// let middleware = SessionMiddleware::new(store);
    ///
    /// // An ACL user, over TLS.
    /// let store = RedisStore::new("rediss://sessions:secret@redis.example.com:6380")?;
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    pub fn new(url: impl IntoConnectionInfo) -> Result<Self, RedisStoreError> {
        Self::builder(url).build()
    }

    /// A builder for a store on the Redis at `url`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .prefix("shop:session:")
    ///     .response_timeout(Duration::from_millis(500))
    ///     .build()?;
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    pub fn builder(url: impl IntoConnectionInfo) -> RedisStoreBuilder {
        RedisStoreBuilder::standalone(url)
    }

    /// A builder for a store on a Redis Cluster, found through any of `nodes` (URLs of its
    /// nodes; `rediss://` for TLS). Every operation on one session is one key, one node,
    /// one round-trip, atomic, as on one server. A renew moves the session to a key that
    /// usually lives on another node, so it takes two steps, on a task of their own: on the
    /// old key's node, a copy of the session is parked in the same slot, the changes are
    /// applied, the session read and the marker left, atomically; then the session is
    /// created on the new key's node. Between the two, the session is under neither id (a
    /// request that loads it then is a new visitor; one that saves gets 409, as after any
    /// renew); if either step fails or times out, the parked copy is put back under the old
    /// id, and the log-in gets a 503. The Cluster client never resends a command after an
    /// I/O error. A key prefix may hold `}` only to close a hash tag.
    ///
    /// ```
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// let store = RedisStore::cluster([
    ///     "redis://10.0.0.1:7000",
    ///     "redis://10.0.0.2:7000",
    ///     "redis://10.0.0.3:7000",
    /// ])
    /// .password("secret")
    /// .build()?;
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    pub fn cluster<T: IntoConnectionInfo>(nodes: impl IntoIterator<Item = T>) -> RedisStoreBuilder {
        RedisStoreBuilder::cluster(nodes)
    }

    /// A builder for a store on the master that the Sentinels at `sentinels` (their URLs)
    /// know as `master`. The store asks them for the master when it connects, and asks again
    /// after a connection broke, timed out or found a read-only replica (a failover): the
    /// requests of a failover answer 503, the following ones reach the new master.
    ///
    /// ```
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// let store = RedisStore::sentinel(
    ///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
    ///     "sessions",
    /// )
    /// .password("secret") // the master's; the Sentinels' come from their URLs
    /// .build()?;
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    pub fn sentinel<T: IntoConnectionInfo>(
        sentinels: impl IntoIterator<Item = T>,
        master: impl Into<String>,
    ) -> RedisStoreBuilder {
        RedisStoreBuilder::sentinel(sentinels, master)
    }

    /// A store on a pool the application already has, with the default prefix: each
    /// operation takes a connection from the pool, as its settings say (deadpool-redis
    /// checks each connection it hands out with a `PING`).
    ///
    /// ```
    /// use actix_kv_session::{storage::RedisStore, SessionMiddleware};
    ///
    /// // The pool the application already uses for its own data.
    /// let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
    ///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    /// let store = RedisStore::from_pool(pool.clone());
    /// let middleware = SessionMiddleware::new(store);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn from_pool(pool: deadpool_redis::Pool) -> Self {
        Self::from_pool_with_prefix(pool, KeyPrefix::DEFAULT)
    }

    /// [`RedisStore::from_pool`], with another key prefix.
    ///
    /// ```
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
    ///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    /// let store = RedisStore::from_pool_with_prefix(pool, "shop:session:");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn from_pool_with_prefix(pool: deadpool_redis::Pool, prefix: impl Into<String>) -> Self {
        Self::with(Source::Pool(pool), KeyPrefix::new(prefix))
    }

    fn with(connection: Source, prefix: KeyPrefix) -> Self {
        let near = match &connection {
            Source::Managed(managed) => managed.near().cloned(),
            Source::Pool(_) => None,
        };
        Self {
            connection,
            prefix,
            layout: RedisLayout::Hash,
            script: Arc::new(Script::new(SAVE_SCRIPT)),
            near,
        }
    }

    /// The store with sessions laid out as `layout` (see [`RedisLayout`]), for a store made
    /// from a pool ([`RedisStoreBuilder::layout`] for the others).
    ///
    /// ```no_run
    /// use actix_kv_session::storage::{RedisLayout, RedisStore};
    ///
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
    ///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    /// let store = RedisStore::from_pool(pool).with_layout(RedisLayout::Json);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// [`RedisLayout::Json`] on a Cluster store, which [`RedisStoreBuilder::build`] refuses
    /// for the same reason: a renew crosses nodes, and this layout has no two-step move.
    #[must_use]
    pub fn with_layout(mut self, layout: RedisLayout) -> Self {
        assert!(
            !(layout == RedisLayout::Json && self.is_cluster()),
            "RedisStore: the JSON layout is not available on a Cluster"
        );
        let script = match layout {
            RedisLayout::Hash => SAVE_SCRIPT,
            RedisLayout::Json => json::JSON_SCRIPT,
        };
        self.layout = layout;
        self.script = Arc::new(Script::new(script));
        self
    }

    /// Connects now and sends `PING`: for an application that wants a wrong password, an
    /// untrusted certificate or an unreachable Redis to stop it at start-up rather than
    /// answer 503 to its first requests.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] with the cause.
    ///
    /// ```no_run
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// # async fn start() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = RedisStore::new("rediss://sessions:secret@redis.example.com:6380")?;
    /// // A wrong password or an unreachable Redis stops the app here.
    /// store.ping().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query::<String>(&deadpool_redis::redis::cmd("PING"), Retry::OnceIfDropped)
            .await
            .map(drop)
    }

    /// The value of a string at `key`, whatever it is (another library's session).
    #[cfg(feature = "actix-session-import")]
    pub(crate) async fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let get = deadpool_redis::redis::cmd("GET").arg(key).clone();
        self.query(&get, Retry::OnceIfDropped).await
    }

    /// Deletes `key`, whatever it is (another library's session).
    #[cfg(feature = "actix-session-import")]
    pub(crate) async fn delete_raw(&self, key: &str) -> Result<(), StoreError> {
        let del = deadpool_redis::redis::cmd("DEL").arg(key).clone();
        self.query::<i64>(&del, Retry::OnceIfDropped)
            .await
            .map(drop)
    }

    fn is_cluster(&self) -> bool {
        matches!(&self.connection, Source::Managed(managed) if managed.is_cluster())
    }

    /// A connection for one operation.
    async fn connection(&self) -> Result<Connection, StoreError> {
        match &self.connection {
            Source::Managed(managed) => managed
                .lease()
                .await
                .map(Connection::Managed)
                .map_err(StoreError::unavailable),
            // Boxed: deadpool's `get` future is several KiB, and would otherwise sit inline
            // in every request's future.
            Source::Pool(pool) => Box::pin(pool.get())
                .await
                .map(Connection::Pooled)
                .map_err(StoreError::unavailable),
        }
    }

    /// After `err` on `conn`: a connection that must not be used again is dropped (see
    /// `connections.rs`).
    fn after_error(&self, conn: &Connection, err: &RedisError) {
        if let (Source::Managed(managed), Connection::Managed(lease)) = (&self.connection, conn) {
            if managed.must_replace(err) {
                managed.discard(lease.generation);
            }
        }
    }

    /// Sends one command and reads its answer (see [`Retry`]).
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd, retry: Retry) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        let mut answer = conn
            .req_packed_command(cmd)
            .await
            .and_then(Value::extract_error);
        if let Err(err) = &answer {
            self.after_error(&conn, err);
        }
        if retry.again(&answer) {
            crate::observe::retried("connection_dropped");
            conn = self.connection().await?;
            answer = conn
                .req_packed_command(cmd)
                .await
                .and_then(Value::extract_error);
            if let Err(err) = &answer {
                self.after_error(&conn, err);
            }
        }
        let value = answer.map_err(|err| classify(&err)(err))?;
        from_redis_value(value).map_err(|err| StoreError::unavailable(RedisError::from(err)))
    }

    /// Runs the save script (redis-rs sends `EVALSHA`, and loads the script first on a
    /// server that does not have it); its answer as `T`.
    ///
    /// Not `async` itself: it returns [`run_script`](Self::run_script)'s future, so the
    /// save has no future nested in another (callgrind: 400 instructions less on a Redis
    /// `/counter`).
    fn invoke<'a, T: FromRedisValue + 'a>(
        &'a self,
        key: String,
        target: Option<String>,
        op: ScriptOp<'_>,
    ) -> impl Future<Output = Result<T, StoreError>> + 'a {
        let mut invocation = self.script.prepare_invoke();
        fill(&mut invocation, key, target, op);
        // A touch changes nothing but a TTL: it may be sent again if the connection broke.
        let retry = match op {
            ScriptOp::Touch(_) => Retry::OnceIfDropped,
            _ => Retry::Never,
        };
        self.run_script(invocation, retry)
    }

    /// Runs a prepared invocation of the layout's script (see [`Retry`]).
    async fn run_script<T: FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
        retry: Retry,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        let mut answer = invocation.invoke_async(&mut conn).await;
        if let Err(err) = &answer {
            self.after_error(&conn, err);
        }
        if retry.again(&answer) {
            crate::observe::retried("connection_dropped");
            conn = self.connection().await?;
            answer = invocation.invoke_async(&mut conn).await;
            if let Err(err) = &answer {
                self.after_error(&conn, err);
            }
        }
        answer.map_err(|err| classify(&err)(err))
    }

    /// A load that found a key of another type than a hash at `key`: the marker of a renewed
    /// session (a stale id: the id is unknown), or data the store cannot read.
    async fn not_a_hash(
        &self,
        key: &str,
        unreadable: StoreError,
    ) -> Result<Option<SessionMap>, StoreError> {
        let get = deadpool_redis::redis::cmd("GET").arg(key).clone();
        match self
            .query::<Option<Vec<u8>>>(&get, Retry::OnceIfDropped)
            .await
        {
            Ok(Some(value)) if value == MOVED_MARKER => Ok(None),
            _ => Err(unreadable),
        }
    }

    /// The session at `key`, read from Redis with its time to live in one round-trip, and
    /// kept in the near cache.
    async fn load_through(&self, near: &Near, key: &str) -> Result<Option<SessionMap>, StoreError> {
        let ticket = near.ticket(key);
        let read = match self.layout {
            RedisLayout::Hash => "HGETALL",
            RedisLayout::Json => "GET",
        };
        // The connection tracks only reads that follow `CLIENT CACHING YES` (see
        // `connections.rs`).
        let mut pipe = Pipeline::new();
        pipe.cmd("CLIENT")
            .arg("CACHING")
            .arg("YES")
            .ignore()
            .cmd(read)
            .arg(key)
            .cmd("PTTL")
            .arg(key);
        let (answers, reader) = self.query_pipeline(&pipe, 3, Retry::OnceIfDropped).await?;
        let [caching, data, pttl]: [Value; 3] =
            answers.try_into().map_err(|answers: Vec<Value>| {
                StoreError::corrupt(format!("{} answers to a tracked read", answers.len()))
            })?;
        // Refused (a Redis without tracking, an ACL that forbids it): the read still stands.
        let tracked = caching.extract_error().is_ok();
        let data = match data.extract_error() {
            Ok(data) => data,
            Err(err) => {
                let err = classify(&err)(err);
                return match (self.layout, err) {
                    (RedisLayout::Hash, unreadable @ StoreError::Corrupt(_)) => {
                        self.not_a_hash(key, unreadable).await
                    }
                    (_, err) => Err(err),
                };
            }
        };
        let record = match (self.layout, data) {
            (RedisLayout::Hash, fields) => into_record(
                from_redis_value(fields)
                    .map_err(|e| StoreError::unavailable(RedisError::from(e)))?,
            ),
            (RedisLayout::Json, value) => json::stored_session(
                from_redis_value(value)
                    .map_err(|e| StoreError::unavailable(RedisError::from(e)))?,
            )?,
        };
        if let (Some(record), Ok(pttl), true) = (&record, from_redis_value::<i64>(pttl), tracked) {
            near.keep(key, reader, record, pttl, &ticket);
        }
        Ok(record)
    }

    /// Drops `key` from the near cache, before and after this process changes it: a read
    /// that ran meanwhile cannot leave the old session cached.
    fn forget(&self, key: &str) {
        if let Some(near) = &self.near {
            near.forget(key.as_bytes());
        }
    }

    /// Sends a pipeline of `count` commands and reads their answers, errors among them (see
    /// [`Retry`]); with the generation of the connection that answered.
    async fn query_pipeline(
        &self,
        pipe: &Pipeline,
        count: usize,
        retry: Retry,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        let mut conn = self.connection().await?;
        let mut answer = conn.req_packed_commands(pipe, 0, count).await;
        if let Err(err) = &answer {
            self.after_error(&conn, err);
        }
        if retry.again(&answer) {
            crate::observe::retried("connection_dropped");
            conn = self.connection().await?;
            answer = conn.req_packed_commands(pipe, 0, count).await;
            if let Err(err) = &answer {
                self.after_error(&conn, err);
            }
        }
        let generation = match &conn {
            Connection::Managed(lease) => lease.generation,
            Connection::Pooled(_) => 0,
        };
        answer
            .map(|answers| (answers, generation))
            .map_err(|err| classify(&err)(err))
    }

    /// Runs the save script for a status.
    async fn apply(
        &self,
        key: String,
        target: Option<String>,
        op: ScriptOp<'_>,
    ) -> Result<SaveOutcome, StoreError> {
        let status: String = self.invoke(key, target, op).await?;
        outcome(&status)
    }

    /// A renew on a Cluster, in two steps (see [`RedisStore::cluster`]), on a task of its
    /// own: once the session is moved out, the steps that put it in place (or back) run to
    /// their end even if the request that asked is dropped (its client gone, the
    /// middleware's timeout).
    async fn renew_across_nodes(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let (store, from, to, changes) = (self.clone(), *from, *to, changes.clone());
        tokio::spawn(async move { store.move_across_nodes(&from, &to, &changes).await })
            .await
            .unwrap_or_else(|err| Err(StoreError::unavailable(err)))
    }

    async fn move_across_nodes(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let old = self.prefix.key(from);
        let parked = parked_key(&old).ok_or_else(|| {
            StoreError::corrupt("the key prefix leaves no key in the session's Cluster slot")
        })?;
        let answer = self
            .invoke(
                old.clone(),
                Some(parked.clone()),
                ScriptOp::MoveOut(changes),
            )
            .await;
        let after = match answer.and_then(moved_out) {
            Ok(Ok(after)) => after,
            Ok(Err(status)) => return outcome(&status),
            Err(err) => {
                // The first step's outcome is unknown (a timeout): undo it if it was applied.
                self.put_back(old, parked).await;
                return Err(err);
            }
        };
        let created = self
            .apply(
                self.prefix.key(to),
                None,
                ScriptOp::Place(&after, changes.ttl()),
            )
            .await;
        match created {
            Ok(SaveOutcome::Saved) => {
                // The parked copy is not needed any more (it would expire with the marker).
                let store = self.clone();
                tokio::spawn(async move {
                    let del = deadpool_redis::redis::cmd("DEL").arg(&parked).clone();
                    if let Err(err) = store.query::<i64>(&del, Retry::OnceIfDropped).await {
                        crate::error::log_error(&err);
                    }
                });
                Ok(SaveOutcome::Saved)
            }
            failed => {
                // The session is under neither id: put it back under the old one as it was
                // before the renew's changes (which may be a log-in's: never under an id that
                // was not renewed). A create that timed out and is applied later leaves a
                // copy under the new id, which no client was given.
                self.put_back(old, parked).await;
                match failed {
                    Ok(other) => Err(StoreError::corrupt(format!(
                        "the save script answered {other:?} to a create"
                    ))),
                    Err(err) => Err(err),
                }
            }
        }
    }

    /// Puts the copy the first step of a Cluster renew parked back under the old id, if the
    /// marker is still there (not after a purge); logs a failure.
    async fn put_back(&self, old: String, parked: String) {
        if let Err(err) = self.apply(old, Some(parked), ScriptOp::Back).await {
            crate::error::log_error(&err);
        }
    }
}

/// Fields and values, as the save script hands them over.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Where the first step of a Cluster renew parks a copy of the session at `key`: a key in
/// the same Cluster slot (the script touches both), which no session id makes. `None` for
/// a key no other key shares a slot with by a hash tag (a prefix with a `}` outside a tag),
/// which [`RedisStoreBuilder::build`] refuses for a Cluster.
pub(super) fn parked_key(key: &str) -> Option<String> {
    let tagged = key
        .find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|close| close > 0);
    if tagged {
        // Redis hashes the first tag only: a suffix keeps the slot.
        Some(format!("{key}:renewing"))
    } else if key.contains('}') {
        None
    } else {
        // The whole key is hashed: as the tag of a longer one, it keeps the slot.
        Some(format!("{{{key}}}:renewing"))
    }
}

/// The answer of the first step of a Cluster renew (the session's fields after the
/// changes), or the status that ended it.
fn moved_out(answer: Vec<Value>) -> Result<Result<Fields, String>, StoreError> {
    let mut items = answer.into_iter();
    let status: String = items
        .next()
        .map(from_redis_value)
        .transpose()
        .map_err(|err| StoreError::corrupt(RedisError::from(err)))?
        .unwrap_or_default();
    if status != "saved" {
        return Ok(Err(status));
    }
    let bytes: Vec<Vec<u8>> = items
        .map(from_redis_value)
        .collect::<Result<_, _>>()
        .map_err(|err| StoreError::corrupt(RedisError::from(err)))?;
    Ok(Ok(bytes
        .chunks_exact(2)
        .map(|pair| (pair[0].clone(), pair[1].clone()))
        .collect()))
}

/// The outcome a save script's status names.
fn outcome(status: &str) -> Result<SaveOutcome, StoreError> {
    match status {
        "saved" => Ok(SaveOutcome::Saved),
        "emptied" => Ok(SaveOutcome::Emptied),
        "gone" => Ok(SaveOutcome::Gone),
        "moved" => Ok(SaveOutcome::Moved),
        "conflict" => Ok(SaveOutcome::Conflict),
        "taken" => Err(StoreError::IdInUse),
        other => Err(StoreError::corrupt(format!(
            "unexpected answer {other:?} from the save script"
        ))),
    }
}

/// The save script's keys and arguments for `op` (see the top of `redis/save.lua`).
fn fill(
    invocation: &mut ScriptInvocation<'_>,
    key: String,
    target: Option<String>,
    op: ScriptOp<'_>,
) {
    invocation.key(key);
    // A last-write-wins update (not a renew) that only sets keys takes the script's fast
    // path, with the fewest arguments (each costs Redis about 0.14 µs to hand to the script).
    if let (ScriptOp::Update(changes), None) = (op, &target) {
        // (An empty change set is an update of the TTL alone: HSET needs a field.)
        let sets_only =
            !changes.changes().is_empty() && changes.changes().iter().all(|c| c.value().is_some());
        if changes.policy() == ConflictPolicy::LastWriteWins && sets_only {
            invocation.arg("f").arg(millis(changes.ttl()));
            for c in changes.changes() {
                invocation.arg(c.key()).arg(c.value().unwrap_or_default());
            }
            return;
        }
    }
    if let Some(target) = target {
        invocation.key(target);
    }
    let (mode, strict, ttl, count) = match op {
        ScriptOp::Create(data, ttl) => ("c", false, ttl, data.len()),
        ScriptOp::Update(changes) | ScriptOp::MoveOut(changes) => (
            if matches!(op, ScriptOp::MoveOut(_)) {
                "o"
            } else {
                "u"
            },
            changes.policy() == ConflictPolicy::Strict,
            changes.ttl(),
            changes.changes().len(),
        ),
        ScriptOp::Touch(ttl) => ("t", false, ttl, 0),
        ScriptOp::Place(fields, ttl) => ("c", false, ttl, fields.len()),
        // The parked copy holds its own TTL.
        ScriptOp::Back => ("b", false, Duration::ZERO, 0),
    };
    invocation
        .arg(mode)
        .arg(if strict { "1" } else { "0" })
        .arg(millis(ttl))
        .arg(millis(moved_marker_ttl(ttl)))
        .arg(count);
    let mut change = |key: &[u8], value: Option<&[u8]>, seen: Option<&str>| {
        invocation
            .arg(key)
            .arg(if value.is_some() { "s" } else { "d" })
            .arg(value.unwrap_or_default())
            .arg(if seen.is_some() { "1" } else { "0" })
            .arg(seen.unwrap_or_default());
    };
    match op {
        ScriptOp::Create(data, _) => {
            for (key, value) in data {
                change(key.as_bytes(), Some(value.as_bytes()), None);
            }
        }
        ScriptOp::Update(changes) | ScriptOp::MoveOut(changes) => {
            for c in changes.changes() {
                change(c.key().as_bytes(), c.value().map(str::as_bytes), c.seen());
            }
        }
        ScriptOp::Place(fields, _) => {
            for (key, value) in fields {
                change(key, Some(value), None);
            }
        }
        ScriptOp::Touch(_) | ScriptOp::Back => {}
    }
}

/// Whether a command failed because its connection broke (rather than timing out, or Redis
/// answering with an error).
fn connection_broke(err: &RedisError) -> bool {
    !err.is_timeout()
        && (err.is_connection_dropped() || err.is_io_error() || err.is_unrecoverable_error())
}

/// Which [`StoreError`] a Redis error is: data Redis holds but we cannot read (a key of
/// another type), or Redis not doing its job (everything else, protocol errors included:
/// redis-rs reconnects after those).
fn classify(err: &RedisError) -> fn(RedisError) -> StoreError {
    if err.code() == Some("WRONGTYPE") {
        StoreError::corrupt
    } else {
        StoreError::unavailable
    }
}

/// The session record from `HGETALL`'s answer; `None` for no hash.
fn into_record(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Option<SessionMap> {
    if fields.is_empty() {
        return None;
    }
    let record = fields.into_iter().filter_map(|(name, value)| {
        // A field whose name is not UTF-8 is no key a session can name: it is left out (and
        // left alone in Redis), and the other keys read.
        let name = String::from_utf8(name).ok()?;
        // A value that is not UTF-8 is not JSON either: reading that one key fails with a
        // clear error, the other keys still read, and a strict save can still overwrite it.
        let value = String::from_utf8(value).unwrap_or_else(|e| raw_form(e.as_bytes()));
        Some((name, value))
    });
    Some(record.collect())
}

/// The app's form of a value that is not UTF-8: [`RAW_PREFIX`] and the bytes in hex.
fn raw_form(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(RAW_PREFIX.len() + 2 * bytes.len());
    text.push_str(RAW_PREFIX);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A TTL as Redis milliseconds: at least 1, as 0 would delete the key at once.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.connection {
            Source::Managed(managed) => managed.describe(),
            Source::Pool(_) => "application pool",
        };
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("connection", &source)
            .finish_non_exhaustive()
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        let key = self.prefix.key(id);
        // Bookkeeping records (a user's index of sessions, ids that start with `;`) are
        // always read from Redis: logging a user out everywhere reads the index as it is.
        if let Some(near) = self.near.as_ref().filter(|_| !id.as_str().starts_with(';')) {
            let reader = match &self.connection {
                Source::Managed(managed) => managed.generation_here(),
                Source::Pool(_) => None,
            };
            if let Some(hit) = reader.and_then(|reader| near.get(&key, reader)) {
                return Ok(Some(hit));
            }
            // Boxed: a miss is the rarer case, and its future would otherwise make every
            // load's larger.
            return Box::pin(self.load_through(near, &key)).await;
        }
        if self.layout == RedisLayout::Json {
            return self.load_json(&key).await;
        }
        let hgetall = deadpool_redis::redis::cmd("HGETALL").arg(&key).clone();
        match self
            .query::<Vec<(Vec<u8>, Vec<u8>)>>(&hgetall, Retry::OnceIfDropped)
            .await
        {
            Ok(fields) => Ok(into_record(fields)),
            Err(unreadable @ StoreError::Corrupt(_)) => self.not_a_hash(&key, unreadable).await,
            Err(err) => Err(err),
        }
    }

    async fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if self.layout == RedisLayout::Json {
            return self.create_json(&self.prefix.key(id), data, ttl).await;
        }
        match self
            .apply(self.prefix.key(id), None, ScriptOp::Create(data, ttl))
            .await?
        {
            SaveOutcome::Saved => Ok(()),
            other => Err(StoreError::corrupt(format!(
                "the save script answered {other:?} to a create"
            ))),
        }
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        if self.near.is_some() {
            // Boxed, as a load's miss.
            return Box::pin(self.update_near(self.prefix.key(id), changes)).await;
        }
        if self.layout == RedisLayout::Json {
            return self.merge_json(&self.prefix.key(id), None, changes).await;
        }
        self.apply(self.prefix.key(id), None, ScriptOp::Update(changes))
            .await
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        if self.near.is_some() {
            let (from_key, to_key) = (self.prefix.key(from), self.prefix.key(to));
            self.forget(&from_key);
            self.forget(&to_key);
            let outcome = self.renew_keys(from, to, changes).await;
            self.forget(&from_key);
            self.forget(&to_key);
            return outcome;
        }
        self.renew_keys(from, to, changes).await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        // The near cache keeps the session: the invalidation Redis sends for the new TTL
        // drops it, and until then it expires earlier here than in Redis, never later.
        if self.layout == RedisLayout::Json {
            return self.touch_json(&self.prefix.key(id), ttl).await;
        }
        let outcome = self
            .apply(self.prefix.key(id), None, ScriptOp::Touch(ttl))
            .await?;
        Ok(outcome == SaveOutcome::Saved)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = self.prefix.key(id);
        self.forget(&key);
        let deleted = self
            .query(
                deadpool_redis::redis::cmd("DEL").arg(&key),
                Retry::OnceIfDropped,
            )
            .await;
        self.forget(&key);
        deleted
    }
}

impl RedisStore {
    /// An update under the near cache: `key` is dropped from it before and after.
    async fn update_near(
        &self,
        key: String,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.forget(&key);
        let outcome = if self.layout == RedisLayout::Json {
            self.merge_json(&key, None, changes).await
        } else {
            self.apply(key.clone(), None, ScriptOp::Update(changes))
                .await
        };
        self.forget(&key);
        outcome
    }

    /// A renew, without the near cache's bookkeeping.
    async fn renew_keys(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        if self.layout == RedisLayout::Json {
            let to = self.prefix.key(to);
            return self
                .merge_json(&self.prefix.key(from), Some(&to), changes)
                .await;
        }
        if self.is_cluster() {
            return self.renew_across_nodes(from, to, changes).await;
        }
        self.apply(
            self.prefix.key(from),
            Some(self.prefix.key(to)),
            ScriptOp::Update(changes),
        )
        .await
    }
}
