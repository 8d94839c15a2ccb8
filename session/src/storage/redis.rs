//! The Redis store: one hash per session, on redis-rs's connection manager.

mod connections;

use std::{fmt, sync::Arc, time::Duration};

use deadpool_redis::redis::{
    aio::{ConnectionLike, ConnectionManagerConfig},
    from_redis_value, Client, Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, Script, ScriptInvocation, Value,
};

use self::connections::{Lease, Managed};
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
/// (`RENAME`) and leaves a marker at the old key.
///
/// The store talks to Redis over one multiplexed connection per worker thread
/// (redis-rs's `ConnectionManager`, which pipelines the requests' commands and reconnects
/// after a broken connection), opened at the worker's first request and replaced after a
/// command timed out on it. [`RedisStore::from_pool`] uses an application's deadpool-redis
/// pool instead.
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
    script: Arc<Script>,
}

/// The update script: applies a change set atomically, or extends a TTL.
const SAVE_SCRIPT: &str = include_str!("redis/save.lua");

/// The hash field of the marker a renew leaves at the old key (see
/// [`MOVED_MARKER_TTL`](super::MOVED_MARKER_TTL)); the same name as `MOVED` in the save
/// script. Session keys cannot start with NUL, so no session has this field.
const MOVED_FIELD: &[u8] = b"\0moved";

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
    Managed(Lease),
    Pooled(deadpool_redis::Connection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Managed(lease) => lease.manager.req_packed_command(cmd),
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
            Self::Managed(lease) => lease.manager.req_packed_commands(cmd, offset, count),
            Self::Pooled(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Managed(lease) => lease.manager.get_db(),
            Self::Pooled(conn) => conn.get_db(),
        }
    }
}

/// What the save script is asked to do.
#[derive(Clone, Copy)]
enum ScriptOp<'a> {
    /// Store a new session, where nothing is stored.
    Create(&'a SessionMap, Duration),
    Update(&'a ChangeSet),
    Touch(Duration),
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

/// Why a [`RedisStore`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The URL or connection info is not valid.
    #[error("invalid Redis connection info")]
    InvalidUrl(#[source] RedisError),
}

/// Builds a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    client: Result<Client, RedisError>,
    prefix: KeyPrefix,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every session's key (default `session:`, as `sanic_session`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = KeyPrefix::new(prefix);
        self
    }

    /// How long connecting to Redis may take (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long Redis may take to answer one command (default 1 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Builds the store. No connection is made until the first request.
    ///
    /// # Errors
    ///
    /// [`RedisStoreError::InvalidUrl`] when the URL does not parse.
    pub fn build(self) -> Result<RedisStore, RedisStoreError> {
        let client = self.client.map_err(RedisStoreError::InvalidUrl)?;
        // One attempt per reconnection: while Redis is down each request fails at once
        // (503), and the first one after it is back reconnects.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(0);
        Ok(RedisStore::with(
            Source::Managed(Arc::new(Managed::new(client, config))),
            self.prefix,
        ))
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (such as `redis://127.0.0.1:6379/0`), with the default
    /// settings.
    ///
    /// # Errors
    ///
    /// [`RedisStoreError::InvalidUrl`] when the URL does not parse.
    pub fn new(url: impl IntoConnectionInfo) -> Result<Self, RedisStoreError> {
        Self::builder(url).build()
    }

    /// A builder for a store on the Redis at `url`.
    pub fn builder(url: impl IntoConnectionInfo) -> RedisStoreBuilder {
        RedisStoreBuilder {
            client: Client::open(url),
            prefix: KeyPrefix::default(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
        }
    }

    /// A store on a pool the application already has, with the default prefix: each
    /// operation takes a connection from the pool, as its settings say (deadpool-redis
    /// checks each connection it hands out with a `PING`).
    #[must_use]
    pub fn from_pool(pool: deadpool_redis::Pool) -> Self {
        Self::from_pool_with_prefix(pool, KeyPrefix::DEFAULT)
    }

    /// [`RedisStore::from_pool`], with another key prefix.
    #[must_use]
    pub fn from_pool_with_prefix(pool: deadpool_redis::Pool, prefix: impl Into<String>) -> Self {
        Self::with(Source::Pool(pool), KeyPrefix::new(prefix))
    }

    fn with(connection: Source, prefix: KeyPrefix) -> Self {
        Self {
            connection,
            prefix,
            script: Arc::new(Script::new(SAVE_SCRIPT)),
        }
    }

    /// A connection for one operation.
    async fn connection(&self) -> Result<Connection, StoreError> {
        match &self.connection {
            Source::Managed(managed) => managed
                .lease()
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

    /// The store error for what Redis answered on `conn`; a connection on which a command
    /// timed out is not used again.
    fn failure(&self, conn: &Connection, err: RedisError) -> StoreError {
        if let (Source::Managed(managed), Connection::Managed(lease)) = (&self.connection, conn) {
            if err.is_timeout() {
                managed.discard(lease.generation);
            }
        }
        classify(&err)(err)
    }

    /// Sends one command and reads its answer (see [`Retry`]).
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd, retry: Retry) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        let mut answer = conn
            .req_packed_command(cmd)
            .await
            .and_then(Value::extract_error);
        if retry.again(&answer) {
            conn = self.connection().await?;
            answer = conn
                .req_packed_command(cmd)
                .await
                .and_then(Value::extract_error);
        }
        let value = answer.map_err(|err| self.failure(&conn, err))?;
        from_redis_value(value).map_err(|err| StoreError::unavailable(RedisError::from(err)))
    }

    /// Runs the save script (redis-rs sends `EVALSHA`, and loads the script first on a
    /// server that does not have it).
    async fn apply(
        &self,
        key: String,
        target: Option<String>,
        op: ScriptOp<'_>,
    ) -> Result<SaveOutcome, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        fill(&mut invocation, key, target, op);
        // A touch changes nothing but a TTL: it may be sent again if the connection broke.
        let retry = match op {
            ScriptOp::Touch(_) => Retry::OnceIfDropped,
            ScriptOp::Create(..) | ScriptOp::Update(_) => Retry::Never,
        };
        let mut conn = self.connection().await?;
        let mut answer = invocation.invoke_async(&mut conn).await;
        if retry.again(&answer) {
            conn = self.connection().await?;
            answer = invocation.invoke_async(&mut conn).await;
        }
        let status: String = answer.map_err(|err| self.failure(&conn, err))?;
        match status.as_str() {
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
}

/// The save script's keys and arguments for `op` (see the top of `redis/save.lua`).
fn fill(
    invocation: &mut ScriptInvocation<'_>,
    key: String,
    target: Option<String>,
    op: ScriptOp<'_>,
) {
    invocation.key(key);
    if let Some(target) = target {
        invocation.key(target);
    }
    let (mode, strict, ttl, count) = match op {
        ScriptOp::Create(data, ttl) => ("c", false, ttl, data.len()),
        ScriptOp::Update(changes) => (
            "u",
            changes.policy() == ConflictPolicy::Strict,
            changes.ttl(),
            changes.changes().len(),
        ),
        ScriptOp::Touch(ttl) => ("t", false, ttl, 0),
    };
    invocation
        .arg(mode)
        .arg(if strict { "1" } else { "0" })
        .arg(millis(ttl))
        .arg(millis(moved_marker_ttl(ttl)))
        .arg(count);
    let mut change = |key: &str, value: Option<&str>, seen: Option<&str>| {
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
                change(key, Some(value), None);
            }
        }
        ScriptOp::Update(changes) => {
            for c in changes.changes() {
                change(c.key(), c.value(), c.seen());
            }
        }
        ScriptOp::Touch(_) => {}
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

/// The session record from `HGETALL`'s answer; `None` for no hash, or the marker a renew
/// left.
fn into_record(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Option<SessionMap> {
    if fields.is_empty() || fields.iter().any(|(name, _)| name == MOVED_FIELD) {
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
            Source::Managed(_) => "connection manager",
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
        let fields: Vec<(Vec<u8>, Vec<u8>)> = self
            .query(
                deadpool_redis::redis::cmd("HGETALL").arg(self.prefix.key(id)),
                Retry::OnceIfDropped,
            )
            .await?;
        Ok(into_record(fields))
    }

    async fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
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
        self.apply(self.prefix.key(id), None, ScriptOp::Update(changes))
            .await
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.apply(
            self.prefix.key(from),
            Some(self.prefix.key(to)),
            ScriptOp::Update(changes),
        )
        .await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let outcome = self
            .apply(self.prefix.key(id), None, ScriptOp::Touch(ttl))
            .await?;
        Ok(outcome == SaveOutcome::Saved)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.query(
            deadpool_redis::redis::cmd("DEL").arg(self.prefix.key(id)),
            Retry::OnceIfDropped,
        )
        .await
    }
}
