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
        Pipeline, RedisError, Script, Value,
    },
    Runtime,
};

use super::{
    ChangeSet, ConflictPolicy, PoolSettings, SaveMode, SaveOutcome, SessionMap, SessionStore,
    PING_WHEN_IDLE_FOR,
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

/// The save script: applies a change set atomically.
const SAVE_SCRIPT: &str = include_str!("redis/save.lua");

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
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let (mut conn, broken) = self.connection().await?;
        let answer = conn
            .req_packed_command(cmd)
            .await
            .and_then(Value::extract_error);
        let value = answer.map_err(|err| Self::failure(err, Some(&broken)))?;
        from_redis_value(value).map_err(|err| Self::failure(err.into(), None))
    }

    /// Sends a pipeline (only `load_and_touch` does).
    async fn query_pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let (mut conn, broken) = self.connection().await?;
        let answer: Result<T, RedisError> = Box::pin(pipe.query_async(&mut conn)).await;
        answer.map_err(|err| Self::failure(err, Some(&broken)))
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
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let script_cmd = |verb: &str, script: &str| {
            let mut cmd = deadpool_redis::redis::cmd(verb);
            cmd.arg(script)
                .arg(if target.is_some() { 2 } else { 1 })
                .arg(&key);
            if let Some(target) = &target {
                cmd.arg(target);
            }
            let mode = match changes.mode() {
                SaveMode::Create => "c",
                SaveMode::Update => "u",
            };
            let strict = if changes.policy() == ConflictPolicy::Strict {
                "1"
            } else {
                "0"
            };
            cmd.arg(mode)
                .arg(strict)
                .arg(millis(changes.ttl()))
                .arg(changes.changes().len());
            for change in changes.changes() {
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
        let status: String = match self.query(&script_cmd("EVALSHA", &self.script_sha)).await {
            Err(StoreError::Unavailable(err))
                if err
                    .downcast_ref::<RedisError>()
                    .is_some_and(|e| e.code() == Some("NOSCRIPT")) =>
            {
                self.query(&script_cmd("EVAL", SAVE_SCRIPT)).await?
            }
            other => other?,
        };
        match status.as_str() {
            "saved" => Ok(SaveOutcome::Saved),
            "emptied" => Ok(SaveOutcome::Emptied),
            "gone" => Ok(SaveOutcome::Gone),
            "conflict" => Ok(SaveOutcome::Conflict),
            "taken" => Ok(SaveOutcome::IdTaken),
            other => Err(StoreError::corrupt(format!(
                "unexpected answer {other:?} from the save script"
            ))),
        }
    }
}

/// Which [`StoreError`] a Redis error is: data Redis holds but we cannot read, or Redis
/// not doing its job.
fn classify(err: &RedisError) -> fn(RedisError) -> StoreError {
    use deadpool_redis::redis::ErrorKind;
    let unreadable = err.code() == Some("WRONGTYPE")
        || matches!(
            err.kind(),
            ErrorKind::UnexpectedReturnType | ErrorKind::Parse
        );
    if unreadable {
        StoreError::corrupt
    } else {
        StoreError::unavailable
    }
}

/// The session record from `HGETALL`'s answer; `None` for no hash.
fn into_record(fields: Vec<(String, Vec<u8>)>) -> Option<SessionMap> {
    if fields.is_empty() {
        return None;
    }
    // A value that is not UTF-8 is not JSON either: keep it, lossily, so that reading that
    // one key fails with a clear error and the other keys still read.
    let record = fields.into_iter().map(|(key, value)| {
        let value = String::from_utf8(value)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        (key, value)
    });
    Some(record.collect())
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
        let fields: Vec<(String, Vec<u8>)> = self
            .query(deadpool_redis::redis::cmd("HGETALL").arg(self.key(id)))
            .await?;
        Ok(into_record(fields))
    }

    async fn load_and_touch(
        &self,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<Option<SessionMap>, StoreError> {
        let key = self.key(id);
        let mut pipe = deadpool_redis::redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis(ttl));
        let (fields, _): (Vec<(String, Vec<u8>)>, bool) = self.query_pipeline(&pipe).await?;
        Ok(into_record(fields))
    }

    async fn save(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        self.apply(self.key(id), None, changes).await
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
        self.apply(self.key(from), Some(self.key(to)), &update)
            .await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        self.query(
            deadpool_redis::redis::cmd("PEXPIRE")
                .arg(self.key(id))
                .arg(millis(ttl)),
        )
        .await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.query(deadpool_redis::redis::cmd("DEL").arg(self.key(id)))
            .await
    }
}
