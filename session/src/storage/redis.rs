//! The Redis store, on deadpool-redis.

use std::{fmt, sync::Arc, time::Duration};

use deadpool::managed::{self, Metrics, Object, RecycleResult};
use deadpool_redis::{
    redis::{
        aio::MultiplexedConnection, AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError,
        Script,
    },
    Runtime, Timeouts,
};

use super::{
    ChangeSet, ConflictPolicy, SaveMode, SaveOutcome, SessionMap, SessionStore, PING_WHEN_IDLE_FOR,
};
use crate::{error::StoreError, SessionId};

const DEFAULT_PREFIX: &str = "session:";
const DEFAULT_POOL_SIZE: usize = 16;
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(500);
const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

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
    prefix: Arc<str>,
    script: Arc<Script>,
}

#[derive(Clone)]
enum Pool {
    /// The store's own pool: pings only connections that were idle.
    Own(managed::Pool<Manager>),
    /// A pool the application made with deadpool-redis.
    Given(deadpool_redis::Pool),
}

enum Connection {
    Own(Object<Manager>),
    Given(deadpool_redis::Connection),
}

impl Connection {
    fn multiplexed(&mut self) -> &mut MultiplexedConnection {
        match self {
            Self::Own(conn) => conn,
            Self::Given(conn) => conn,
        }
    }

    /// Keeps the connection out of the pool after an error that leaves it unusable.
    fn discard_if_broken(self, err: &RedisError) {
        if err.is_unrecoverable_error() || err.is_io_error() || err.is_timeout() {
            match self {
                Self::Own(conn) => drop(Object::take(conn)),
                Self::Given(conn) => drop(deadpool_redis::Connection::take(conn)),
            }
        }
    }
}

/// Makes multiplexed connections; pings only those idle for a while.
struct Manager {
    client: Client,
    config: AsyncConnectionConfig,
}

impl managed::Manager for Manager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        metrics: &Metrics,
    ) -> RecycleResult<RedisError> {
        if metrics.last_used() >= PING_WHEN_IDLE_FOR {
            deadpool_redis::redis::cmd("PING")
                .query_async::<()>(conn)
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
    pool_size: usize,
    wait_timeout: Duration,
    create_timeout: Duration,
    response_timeout: Duration,
}

enum Source {
    Info(Result<Client, RedisError>),
    Pool(deadpool_redis::Pool),
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("pool_size", &self.pool_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("create_timeout", &self.create_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every session's key (default `session:`, as `sanic_session`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most connections the pool holds (default 16). Each is multiplexed: a
    /// connection carries one request at a time from the pool's point of view, but is
    /// never blocked by a slow one of another connection.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long a request waits for a free connection (default 500 ms).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How long connecting to Redis may take (default 1 s).
    pub fn create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = timeout;
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
        let pool = match self.source {
            Source::Pool(pool) => Pool::Given(pool),
            Source::Info(client) => {
                let client = client.map_err(RedisStoreError::InvalidUrl)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.create_timeout))
                    .set_response_timeout(Some(self.response_timeout));
                let pool = managed::Pool::builder(Manager { client, config })
                    .max_size(self.pool_size)
                    .timeouts(Timeouts {
                        wait: Some(self.wait_timeout),
                        create: Some(self.create_timeout),
                        recycle: Some(self.response_timeout),
                    })
                    .runtime(Runtime::Tokio1)
                    .build()
                    .map_err(RedisStoreError::Pool)?;
                Pool::Own(pool)
            }
        };
        Ok(RedisStore {
            pool,
            prefix: self.prefix.into(),
            script: Arc::new(Script::new(include_str!("redis/save.lua"))),
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
            pool_size: DEFAULT_POOL_SIZE,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            create_timeout: DEFAULT_CREATE_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }

    /// The Redis key of a session.
    fn key(&self, id: &SessionId) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 32);
        key.push_str(&self.prefix);
        key.push_str(id.as_str());
        key
    }

    async fn connection(&self) -> Result<Connection, StoreError> {
        match &self.pool {
            Pool::Own(pool) => pool
                .get()
                .await
                .map(Connection::Own)
                .map_err(StoreError::unavailable),
            Pool::Given(pool) => pool
                .get()
                .await
                .map(Connection::Given)
                .map_err(StoreError::unavailable),
        }
    }

    /// Runs one command or script on a pooled connection.
    async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    {
        let mut conn = self.connection().await?;
        match op(conn.multiplexed()).await {
            Ok(value) => Ok(value),
            Err(err) => {
                let failure = classify(&err);
                conn.discard_if_broken(&err);
                Err(failure(err))
            }
        }
    }

    async fn apply(
        &self,
        key: String,
        target: Option<String>,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let mut invocation = self.script.key(key);
        if let Some(target) = target {
            invocation.key(target);
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
        invocation
            .arg(mode)
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
            invocation
                .arg(change.key())
                .arg(op)
                .arg(value)
                .arg(seen_flag)
                .arg(seen);
        }
        let status: String = self
            .run(async |conn| invocation.invoke_async(conn).await)
            .await?;
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
        let key = self.key(id);
        let fields: Vec<(String, Vec<u8>)> = self
            .run(async |conn| {
                deadpool_redis::redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(conn)
                    .await
            })
            .await?;
        Ok(into_record(fields))
    }

    async fn load_and_touch(
        &self,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<Option<SessionMap>, StoreError> {
        let key = self.key(id);
        let (fields, _): (Vec<(String, Vec<u8>)>, bool) = self
            .run(async |conn| {
                deadpool_redis::redis::pipe()
                    .atomic()
                    .cmd("HGETALL")
                    .arg(&key)
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(millis(ttl))
                    .query_async(conn)
                    .await
            })
            .await?;
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
        let key = self.key(id);
        self.run(async |conn| {
            deadpool_redis::redis::cmd("PEXPIRE")
                .arg(&key)
                .arg(millis(ttl))
                .query_async(conn)
                .await
        })
        .await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = self.key(id);
        self.run(async |conn| {
            deadpool_redis::redis::cmd("DEL")
                .arg(&key)
                .query_async::<()>(conn)
                .await
        })
        .await
    }
}
