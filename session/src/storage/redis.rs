//! The Redis store, on deadpool-redis.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_redis::{
    redis::{
        aio::{ConnectionLike, MultiplexedConnection},
        from_redis_value, AsyncConnectionConfig, Client, Cmd, FromRedisValue, IntoConnectionInfo,
        RedisError, Script, Value,
    },
    Runtime,
};

use super::{
    moved_marker_ttl, ChangeSet, ConflictPolicy, PoolSettings, SaveMode, SaveOutcome, SessionMap,
    SessionStore, PING_WHEN_IDLE_FOR,
};
use crate::{error::StoreError, SessionId};

const DEFAULT_PREFIX: &str = "session:";

/// Sessions kept in Redis: one hash per session at `prefix + id`, one field per session
/// key, each value JSON. Every session expires after its TTL (`PEXPIRE`).
///
/// A load is one round-trip (`HGETALL`); a save is one round-trip, a Lua script that
/// applies `HSET`, `HDEL` and `PEXPIRE` atomically and only to a hash that still exists
/// (unless the session is new), so concurrent requests that change different keys all
/// persist, and a session deleted meanwhile stays deleted. `renew` moves the hash to the new
/// id in the same script (`RENAME`).
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
    pool: Pool,
    /// The connection requests use while it is healthy and busy, without asking the pool.
    hot: Arc<Mutex<Option<Hot>>>,
    prefix: Arc<str>,
    /// SHA-1 of the save script, for `EVALSHA`.
    script_sha: Arc<str>,
}

/// The last connection the pool handed out, shared by requests until it breaks or idles.
struct Hot {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
    last_used: Instant,
}

/// The save script: applies a change set atomically, or extends a TTL.
const SAVE_SCRIPT: &str = include_str!("redis/save.lua");

/// The hash field of the marker a renew leaves at the old key (see
/// [`MOVED_MARKER_TTL`](super::MOVED_MARKER_TTL)); the same name as `MOVED` in the save
/// script. Session keys cannot start with NUL, so no session has this field.
const MOVED_FIELD: &[u8] = b"\0moved";

/// How a value that is not UTF-8 reaches the app: this prefix (which no JSON text starts
/// with, so reading the key fails with a clear error) and the bytes in hex, which the save
/// script turns back into bytes when a strict save compares what it saw.
const RAW_PREFIX: &str = "\0raw:";

/// What the save script is asked to do.
#[derive(Clone, Copy)]
enum ScriptOp<'a> {
    Save(&'a ChangeSet),
    Touch(Duration),
}

/// Whether a command may be sent again after the connection broke under it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Idempotent (a read, a TTL extension, a delete): once more, on a fresh connection.
    OnceIfDropped,
    /// A save: it may have been applied before the connection broke, so its outcome is
    /// unknown and it must not be applied twice.
    Never,
}

#[derive(Clone)]
enum Pool {
    /// The store's own pool: pings only connections that were idle.
    Own(managed::Pool<Manager>),
    /// A pool the application made with deadpool-redis.
    Given(deadpool_redis::Pool),
}

/// A pooled multiplexed connection, with a flag a request sets when it saw it break.
///
/// Requests do not hold the pool object while they wait for Redis: they clone the
/// connection (clones share one socket and pipeline their commands) and give the object back
/// at once, so a handful of connections serve any number of concurrent requests. A request
/// that sees the connection break sets the flag, and the pool replaces it at its next turn.
struct Pooled {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

/// Makes multiplexed connections; pings only those idle for a while.
struct Manager {
    client: Client,
    config: AsyncConnectionConfig,
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = RedisError;

    async fn create(&self) -> Result<Pooled, RedisError> {
        // Boxed: connecting is a large future, and the pool's `get` future would carry it
        // inline into every request's future.
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config);
        let conn = Box::pin(connect).await?;
        Ok(Pooled {
            conn,
            broken: Arc::default(),
        })
    }

    async fn recycle(&self, pooled: &mut Pooled, metrics: &Metrics) -> RecycleResult<RedisError> {
        if pooled.broken.load(Ordering::Relaxed) {
            return Err(RecycleError::message(
                "the connection broke during a request",
            ));
        }
        if metrics.last_used() >= PING_WHEN_IDLE_FOR {
            pooled
                .conn
                .req_packed_command(&deadpool_redis::redis::cmd("PING"))
                .await?;
        }
        Ok(())
    }
}

/// Why a [`RedisStore`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The URL or connection info is not valid.
    #[error("invalid Redis connection info")]
    InvalidUrl(#[source] RedisError),
    /// The pool could not be built from the settings.
    #[error("cannot build the Redis connection pool")]
    Pool(#[source] managed::BuildError),
}

/// Builds a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    source: Source,
    prefix: String,
    pool: PoolSettings,
}

enum Source {
    Info(Result<Client, RedisError>),
    Pool(deadpool_redis::Pool),
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every session's key (default `session:`, as `sanic_session`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most connections the pool holds (default 16). Connections are multiplexed and
    /// shared: requests pipeline their commands on them, and a new one is opened only while
    /// all are being checked or connected, so a busy app usually needs very few.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool.size = size;
        self
    }

    /// How long a request waits for a free connection (default 500 ms).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.pool.wait = timeout;
        self
    }

    /// How long connecting to Redis may take (default 1 s).
    pub fn create_timeout(mut self, timeout: Duration) -> Self {
        self.pool.create = timeout;
        self
    }

    /// How long Redis may take to answer one command (default 1 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.pool.response = timeout;
        self
    }

    /// Builds the store. No connection is made until the first request.
    ///
    /// # Errors
    ///
    /// [`RedisStoreError::InvalidUrl`] when the URL does not parse.
    pub fn build(self) -> Result<RedisStore, RedisStoreError> {
        let pool = match self.source {
            Source::Pool(pool) => Pool::Given(pool),
            Source::Info(client) => {
                let client = client.map_err(RedisStoreError::InvalidUrl)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.pool.create))
                    .set_response_timeout(Some(self.pool.response));
                let pool = managed::Pool::builder(Manager { client, config })
                    .max_size(self.pool.size)
                    .timeouts(self.pool.timeouts())
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(RedisStoreError::Pool)?;
                Pool::Own(pool)
            }
        };
        Ok(RedisStore {
            pool,
            hot: Arc::default(),
            prefix: self.prefix.into(),
            script_sha: Script::new(SAVE_SCRIPT).get_hash().into(),
        })
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
        Self::builder_from(Source::Info(Client::open(url)))
    }

    /// A builder for a store on a pool the application already has. The pool's own size
    /// and timeouts apply; the builder's pool settings are ignored.
    pub fn builder_with_pool(pool: deadpool_redis::Pool) -> RedisStoreBuilder {
        Self::builder_from(Source::Pool(pool))
    }

    /// A store on a pool the application already has, with the default prefix.
    #[must_use]
    pub fn from_pool(pool: deadpool_redis::Pool) -> Self {
        match Self::builder_with_pool(pool).build() {
            Ok(store) => store,
            // A given pool needs no URL parsing: building cannot fail.
            Err(err) => unreachable!("{err}"),
        }
    }

    fn builder_from(source: Source) -> RedisStoreBuilder {
        RedisStoreBuilder {
            source,
            prefix: DEFAULT_PREFIX.to_owned(),
            pool: PoolSettings::default(),
        }
    }

    /// The Redis key of a session.
    fn key(&self, id: &SessionId) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 32);
        key.push_str(&self.prefix);
        key.push_str(id.as_str());
        key
    }

    /// A connection to run one command on, and the flag to set if it breaks.
    ///
    /// Multiplexed connections are shared: requests take the hot one, without the pool,
    /// while it is healthy and in use. The pool is asked (and pings, and replaces broken
    /// connections) only when there is none, it broke, or it idled past a second.
    async fn connection(&self) -> Result<(MultiplexedConnection, Arc<AtomicBool>), StoreError> {
        let now = Instant::now();
        if let Some(hot) = self
            .hot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            let fresh = now.saturating_duration_since(hot.last_used) < PING_WHEN_IDLE_FOR;
            if fresh && !hot.broken.load(Ordering::Relaxed) {
                hot.last_used = now;
                return Ok((hot.conn.clone(), Arc::clone(&hot.broken)));
            }
        }
        // Boxed: deadpool's `get` future is several KiB, and would otherwise sit inline in
        // every request's future.
        let (conn, broken) = match &self.pool {
            Pool::Own(pool) => {
                let pooled = Box::pin(pool.get())
                    .await
                    .map_err(StoreError::unavailable)?;
                (pooled.conn.clone(), Arc::clone(&pooled.broken))
            }
            // deadpool-redis checks its connections itself; the flag only retires the hot one.
            Pool::Given(pool) => {
                let conn = Box::pin(pool.get())
                    .await
                    .map_err(StoreError::unavailable)?;
                (MultiplexedConnection::clone(&conn), Arc::default())
            }
        };
        let hot = Hot {
            conn: conn.clone(),
            broken: Arc::clone(&broken),
            last_used: now,
        };
        *self.hot.lock().unwrap_or_else(PoisonError::into_inner) = Some(hot);
        Ok((conn, broken))
    }

    /// Sends one command and reads its answer. The connection's own future is boxed, so
    /// this future stays small: the middleware holds it across a request.
    ///
    /// With [`Retry::OnceIfDropped`], a command whose connection broke under it (the server
    /// restarted, `CLIENT KILL`, a proxy cut it) is sent once more on a fresh connection
    /// (the pool's idle ones are dropped first), so a load does not fail for a connection
    /// that was already dead; a timeout is not retried.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd, retry: Retry) -> Result<T, StoreError> {
        let (mut conn, mut broken) = self.connection().await?;
        let mut answer = conn
            .req_packed_command(cmd)
            .await
            .and_then(Value::extract_error);
        if let Err(err) = &answer {
            if retry == Retry::OnceIfDropped && connection_broke(err) {
                broken.store(true, Ordering::Relaxed);
                self.drop_idle_connections();
                let (mut conn, fresh) = self.connection().await?;
                broken = fresh;
                answer = conn
                    .req_packed_command(cmd)
                    .await
                    .and_then(Value::extract_error);
            }
        }
        let value = answer.map_err(|err| Self::failure(err, Some(&broken)))?;
        from_redis_value(value).map_err(|err| Self::failure(err.into(), None))
    }

    /// Drops the pool's idle connections: what broke one (a server restart, `CLIENT KILL`)
    /// most likely broke them all, and a retry must not pick another dead one.
    fn drop_idle_connections(&self) {
        match &self.pool {
            Pool::Own(pool) => drop(pool.retain(|_, _| false)),
            Pool::Given(pool) => drop(pool.retain(|_, _| false)),
        }
    }

    /// The store error for a Redis error; flags the connection when the error broke it.
    fn failure(err: RedisError, broken: Option<&AtomicBool>) -> StoreError {
        if err.is_unrecoverable_error() || err.is_io_error() || err.is_timeout() {
            if let Some(broken) = broken {
                broken.store(true, Ordering::Relaxed);
            }
        }
        classify(&err)(err)
    }

    /// Runs the save script: `EVALSHA`, or `EVAL` once when the server does not have it
    /// (a fresh or restarted Redis).
    async fn apply(
        &self,
        key: String,
        target: Option<String>,
        op: ScriptOp<'_>,
    ) -> Result<SaveOutcome, StoreError> {
        let script_cmd = |verb: &str, script: &str| {
            let mut cmd = deadpool_redis::redis::cmd(verb);
            cmd.arg(script)
                .arg(if target.is_some() { 2 } else { 1 })
                .arg(&key);
            if let Some(target) = &target {
                cmd.arg(target);
            }
            let (mode, strict, ttl, changes) = match op {
                ScriptOp::Touch(ttl) => ("t", false, ttl, &[][..]),
                ScriptOp::Save(changes) => (
                    match changes.mode() {
                        SaveMode::Create => "c",
                        SaveMode::Update => "u",
                    },
                    changes.policy() == ConflictPolicy::Strict,
                    changes.ttl(),
                    changes.changes(),
                ),
            };
            cmd.arg(mode)
                .arg(if strict { "1" } else { "0" })
                .arg(millis(ttl))
                .arg(millis(moved_marker_ttl(ttl)))
                .arg(changes.len());
            for change in changes {
                let (op, value) = match change.value() {
                    Some(value) => ("s", value),
                    None => ("d", ""),
                };
                let (seen_flag, seen) = match change.seen() {
                    Some(seen) => ("1", seen),
                    None => ("0", ""),
                };
                cmd.arg(change.key())
                    .arg(op)
                    .arg(value)
                    .arg(seen_flag)
                    .arg(seen);
            }
            cmd
        };
        // A touch changes nothing but a TTL: it may be sent again if the connection broke.
        let retry = match op {
            ScriptOp::Touch(_) => Retry::OnceIfDropped,
            ScriptOp::Save(_) => Retry::Never,
        };
        let sha = script_cmd("EVALSHA", &self.script_sha);
        let status: String = match self.query(&sha, retry).await {
            Err(StoreError::Unavailable(err))
                if err
                    .downcast_ref::<RedisError>()
                    .is_some_and(|e| e.code() == Some("NOSCRIPT")) =>
            {
                self.query(&script_cmd("EVAL", SAVE_SCRIPT), retry).await?
            }
            other => other?,
        };
        match status.as_str() {
            "saved" => Ok(SaveOutcome::Saved),
            "emptied" => Ok(SaveOutcome::Emptied),
            "gone" => Ok(SaveOutcome::Gone),
            "moved" => Ok(SaveOutcome::Moved),
            "conflict" => Ok(SaveOutcome::Conflict),
            "taken" => Ok(SaveOutcome::IdTaken),
            other => Err(StoreError::corrupt(format!(
                "unexpected answer {other:?} from the save script"
            ))),
        }
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
        let status = match &self.pool {
            Pool::Own(pool) => pool.status(),
            Pool::Given(pool) => pool.status(),
        };
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("pool", &status)
            .finish_non_exhaustive()
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = self
            .query(
                deadpool_redis::redis::cmd("HGETALL").arg(self.key(id)),
                Retry::OnceIfDropped,
            )
            .await?;
        Ok(into_record(fields))
    }

    async fn save(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        self.apply(self.key(id), None, ScriptOp::Save(changes))
            .await
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let update = ChangeSet::new(
            SaveMode::Update,
            changes.changes().to_vec(),
            changes.policy(),
            changes.ttl(),
        );
        self.apply(self.key(from), Some(self.key(to)), ScriptOp::Save(&update))
            .await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let outcome = self.apply(self.key(id), None, ScriptOp::Touch(ttl)).await?;
        Ok(outcome == SaveOutcome::Saved)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.query(
            deadpool_redis::redis::cmd("DEL").arg(self.key(id)),
            Retry::OnceIfDropped,
        )
        .await
    }
}
