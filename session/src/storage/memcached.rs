//! The Memcached store, on async-memcached.

use std::{
    collections::HashMap,
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_memcached::{Client, Error as McError, ErrorKind, MetaProtocol, Status};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use serde_json::value::RawValue;

use super::{moved_marker_ttl, ChangeSet, KeyPrefix, SaveOutcome, SessionMap, SessionStore};
use crate::{error::StoreError, SessionId};

/// A pooled connection idle longer than this is checked before use, so one that died while
/// idle (a server restart) is replaced instead of failing a request. Busy connections are not
/// checked: that would double the round-trips of every request.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);
/// Memcached's default item size limit is 1 MiB, item header and key included: keep the
/// value safely under it.
const DEFAULT_MAX_ITEM_SIZE: usize = 1_000_000;
/// The longest key memcached accepts.
const MAX_KEY_LEN: usize = 250;
/// Memcached reads an expiry over 30 days as an absolute Unix time.
const MAX_RELATIVE_TTL: u64 = 30 * 24 * 60 * 60;
/// The connection pool's settings.
#[derive(Debug, Clone, Copy)]
struct PoolSettings {
    size: usize,
    wait: Duration,
    create: Duration,
    response: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            size: 16,
            wait: Duration::from_millis(500),
            create: Duration::from_secs(1),
            response: Duration::from_secs(1),
        }
    }
}

impl PoolSettings {
    /// The pool's timeouts: a recycle check is one command, so it gets the response timeout.
    fn timeouts(&self) -> managed::Timeouts {
        managed::Timeouts {
            wait: Some(self.wait),
            create: Some(self.create),
            recycle: Some(self.response),
        }
    }
}

/// How many times a save re-reads and retries after another request changed the session.
const CAS_ATTEMPTS: u32 = 64;
/// The client flags of the marker a renew leaves at the old key (see
/// [`MOVED_MARKER_TTL`](super::MOVED_MARKER_TTL)); sessions are stored with flags 0, as
/// `sanic_session`'s Memcache interface stores them. Its value is an empty JSON object, so
/// a client that ignores flags reads an empty session.
const MOVED_FLAGS: u32 = 0x6d76;
const MOVED_VALUE: &[u8] = b"{}";

/// Whether an operation may be run again after its connection broke under it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Idempotent (a read, a TTL extension, a delete): once more, on a fresh connection.
    OnceIfDropped,
    /// A save: it may have been applied before the connection broke, so its outcome is
    /// unknown and it must not be applied twice.
    Never,
}

/// An item as a read with its CAS token found it.
enum Item {
    Record(SessionMap, u64),
    /// The marker of a renewed session.
    Moved,
    /// Something that is not a session's JSON object: never written through.
    Unreadable,
}

/// Sessions kept in Memcached: one item per session at `prefix + id` holding the JSON map of
/// keys to values, the same layout as `sanic_session`'s Memcache interface.
///
/// Saves merge the request's changes onto the current item with compare-and-swap (meta
/// protocol), retrying when another request got there first, so concurrent requests that
/// change different keys all persist, and under the strict policy a stale key is refused. A
/// new session is written with add, never over an item; an item gone since the load is not
/// re-created. TTLs over 30 days are sent as absolute times, as memcached requires.
///
/// async-memcached has one connection per client: the store pools clients with deadpool,
/// drops those whose connection closed, and checks those idle for a while before reuse.
///
/// ```no_run
/// use actix_kv_session::{storage::MemcachedStore, SessionMiddleware};
/// use actix_web::{web, App, HttpServer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemcachedStore::new("127.0.0.1:11211")?;
/// HttpServer::new(move || App::new().wrap(SessionMiddleware::new(store.clone())))
///     .bind("127.0.0.1:8080")?
///     .run()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemcachedStore {
    pool: managed::Pool<Manager>,
    prefix: KeyPrefix,
    response_timeout: Duration,
    max_item_size: usize,
}

struct Manager {
    addr: String,
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = McError;

    async fn create(&self) -> Result<Client, McError> {
        // Boxed, so the pool's `get` future does not carry the connect future inline.
        Box::pin(Client::new(&self.addr)).await
    }

    async fn recycle(&self, client: &mut Client, metrics: &Metrics) -> RecycleResult<McError> {
        if client.is_closed() {
            // An operation was cut short (a timeout): the connection is unusable.
            return Err(RecycleError::message("connection closed"));
        }
        if metrics.last_used() >= PING_WHEN_IDLE_FOR {
            client.version().await?;
        }
        Ok(())
    }
}

/// Why a [`MemcachedStore`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemcachedStoreError {
    /// The key prefix cannot be used in a memcached key.
    #[error(
        "invalid memcached key prefix {prefix:?}: prefix and 32-character id must fit in \
         {MAX_KEY_LEN} bytes, without whitespace or control characters"
    )]
    InvalidPrefix {
        /// The prefix given.
        prefix: String,
    },
    /// The pool could not be built from the settings.
    #[error("cannot build the memcached connection pool")]
    Pool(#[source] managed::BuildError),
}

/// Builds a [`MemcachedStore`].
#[derive(Debug)]
#[must_use]
pub struct MemcachedStoreBuilder {
    addr: String,
    prefix: String,
    pool: PoolSettings,
    max_item_size: usize,
}

impl MemcachedStoreBuilder {
    /// The prefix of every session's key (default `session:`, as `sanic_session`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The most connections the pool holds (default 16).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool.size = size;
        self
    }

    /// How long a request waits for a free connection (default 500 ms).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.pool.wait = timeout;
        self
    }

    /// How long connecting to memcached may take (default 1 s).
    pub fn create_timeout(mut self, timeout: Duration) -> Self {
        self.pool.create = timeout;
        self
    }

    /// How long memcached may take to answer one command (default 1 s). A connection whose
    /// command timed out is closed and replaced.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.pool.response = timeout;
        self
    }

    /// The largest serialized session the store writes (default 1,000,000 bytes, under
    /// memcached's default 1 MiB item limit). A larger session is refused with
    /// [`StoreError::TooLarge`] (a 500, logged) and the stored one is left as it was.
    ///
    /// Keep it under the server's `-I` setting: when memcached itself refuses an item as too
    /// large, it also deletes the item stored under that key, so the session is lost (the
    /// request still gets the error).
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.max_item_size = bytes;
        self
    }

    /// Builds the store. No connection is made until the first request.
    ///
    /// # Errors
    ///
    /// [`MemcachedStoreError::InvalidPrefix`] when the prefix cannot be part of a memcached
    /// key.
    pub fn build(self) -> Result<MemcachedStore, MemcachedStoreError> {
        let valid = self.prefix.len() + SessionId::LEN <= MAX_KEY_LEN
            && self.prefix.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(MemcachedStoreError::InvalidPrefix {
                prefix: self.prefix,
            });
        }
        let pool = managed::Pool::builder(Manager { addr: self.addr })
            .max_size(self.pool.size)
            .timeouts(self.pool.timeouts())
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(MemcachedStoreError::Pool)?;
        Ok(MemcachedStore {
            pool,
            prefix: KeyPrefix::new(self.prefix),
            response_timeout: self.pool.response,
            max_item_size: self.max_item_size,
        })
    }
}

impl MemcachedStore {
    /// A store on the memcached at `addr` (`HOST:PORT` or `tcp://HOST:PORT`, IPv4; or
    /// `unix://PATH`), with the default settings.
    ///
    /// # Errors
    ///
    /// As [`MemcachedStoreBuilder::build`].
    pub fn new(addr: impl Into<String>) -> Result<Self, MemcachedStoreError> {
        Self::builder(addr).build()
    }

    /// A builder for a store on the memcached at `addr`.
    pub fn builder(addr: impl Into<String>) -> MemcachedStoreBuilder {
        let mut addr = addr.into();
        if !addr.contains("://") {
            // async-memcached parses a bare HOST:PORT as a relative URL and fails.
            addr.insert_str(0, "tcp://");
        }
        MemcachedStoreBuilder {
            addr,
            prefix: KeyPrefix::DEFAULT.to_owned(),
            pool: PoolSettings::default(),
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
        }
    }

    fn key(&self, id: &SessionId) -> String {
        self.prefix.key(id)
    }

    /// Runs `op` on a pooled client within the response timeout.
    ///
    /// With [`Retry::OnceIfDropped`], an operation whose connection broke under it (the
    /// server restarted, a proxy cut it) runs once more on a fresh connection, so a load
    /// does not fail for a connection that was already dead; a timeout is not retried.
    /// Whatever the operation, the pool's idle connections are dropped when one broke: what
    /// broke one (a server restart, the end of the runtime it was opened on) most likely
    /// broke them all, and each would otherwise fail one more request.
    ///
    /// `op` makes the operation, once per attempt.
    async fn run<T, M, F>(&self, retry: Retry, op: M) -> Result<T, StoreError>
    where
        M: Fn() -> F,
        F: AsyncFnOnce(&mut Client) -> Result<T, StoreError>,
    {
        let result = self.run_once(op()).await;
        match result {
            Err(err) if connection_broke(&err) => {
                self.pool.retain(|_, _| false);
                match retry {
                    Retry::OnceIfDropped => self.run_once(op()).await,
                    Retry::Never => Err(err),
                }
            }
            other => other,
        }
    }

    async fn run_once<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Client) -> Result<T, StoreError>,
    {
        let mut client = self.pool.get().await.map_err(StoreError::unavailable)?;
        // A cut-short operation closes the client's connection; the pool drops it.
        tokio::time::timeout(self.response_timeout, op(&mut client))
            .await
            .unwrap_or(Err(StoreError::TimedOut(self.response_timeout)))
    }

    /// The item's value for `record`, checked against the size limit.
    fn encode(&self, record: &SessionMap) -> Result<Vec<u8>, StoreError> {
        let bytes = serde_json::to_vec(&as_raw(record)?).map_err(StoreError::corrupt)?;
        if bytes.len() > self.max_item_size {
            return Err(StoreError::TooLarge {
                size: bytes.len(),
                limit: Some(self.max_item_size),
            });
        }
        Ok(bytes)
    }
}

/// The record as a map of raw JSON values, to serialize without re-parsing the values.
fn as_raw(record: &SessionMap) -> Result<HashMap<&str, &RawValue>, StoreError> {
    record
        .iter()
        .map(|(k, v)| {
            let raw: &RawValue = serde_json::from_str(v).map_err(StoreError::corrupt)?;
            Ok((k.as_str(), raw))
        })
        .collect()
}

/// The record an item holds: a JSON object, each value kept as its JSON text.
fn decode(data: &[u8]) -> Result<SessionMap, StoreError> {
    let map: HashMap<String, Box<RawValue>> =
        serde_json::from_slice(data).map_err(StoreError::corrupt)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, String::from(Box::<str>::from(v))))
        .collect())
}

/// The exptime memcached understands for a TTL: seconds up to 30 days, an absolute Unix
/// time beyond (memcached reads any larger number as one). Never 0, which means "forever".
fn expiry(ttl: Duration) -> u64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let secs = secs.max(1);
    if secs <= MAX_RELATIVE_TTL {
        return secs;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now + secs
}

/// How a memcached error reads as a [`StoreError`].
fn store_error(err: McError) -> StoreError {
    StoreError::unavailable(err)
}

/// Whether memcached refused an item as larger than its `-I` limit.
fn refused_as_too_large(err: &McError) -> bool {
    matches!(
        err,
        McError::Protocol(Status::Error(ErrorKind::Server(message))) if message.contains("too large")
    )
}

/// Whether a store error is a connection that broke under an operation.
fn connection_broke(err: &StoreError) -> bool {
    match err {
        StoreError::Unavailable(cause) => matches!(
            cause.downcast_ref::<McError>(),
            Some(McError::Io(_) | McError::ConnectionClosed)
        ),
        _ => false,
    }
}

/// What a conditional write answered.
enum Write {
    Done,
    /// The CAS token no longer matches (EX), or an add found an item (NS).
    Lost,
    /// The item is gone (NF).
    Missing,
}

fn write_result<T>(result: Result<T, McError>) -> Result<Write, StoreError> {
    match result {
        Ok(_) => Ok(Write::Done),
        Err(McError::Protocol(Status::Exists | Status::NotStored)) => Ok(Write::Lost),
        Err(McError::Protocol(Status::NotFound)) => Ok(Write::Missing),
        Err(err) => Err(store_error(err)),
    }
}

impl MemcachedStore {
    /// The item with its CAS token.
    async fn get_with_cas(
        &self,
        client: &mut Client,
        key: &str,
    ) -> Result<Option<Item>, StoreError> {
        let Some(item) = client
            .meta_get(key, false, None, Some(&["v", "c", "f"]))
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        if item.flags == Some(MOVED_FLAGS) {
            return Ok(Some(Item::Moved));
        }
        let cas = item
            .cas
            .ok_or_else(|| StoreError::corrupt("memcached sent no CAS token"))?;
        Ok(Some(
            match decode(item.data.as_deref().unwrap_or_default()) {
                Ok(record) => Item::Record(record, cas),
                Err(_) => Item::Unreadable,
            },
        ))
    }

    /// Writes `record` at `key`: with add when `cas` is `None`, else with compare-and-swap.
    async fn put(
        &self,
        client: &mut Client,
        key: &str,
        record: &SessionMap,
        cas: Option<u64>,
        ttl: Duration,
    ) -> Result<Write, StoreError> {
        let value = self.encode(record)?;
        let exptime = format!("T{}", expiry(ttl));
        let condition = match cas {
            Some(cas) => format!("C{cas}"),
            None => "ME".to_owned(),
        };
        let flags = [exptime.as_str(), condition.as_str()];
        let result = client
            .meta_set(key, value.as_slice(), false, None, Some(&flags))
            .await;
        if result.as_ref().is_err_and(refused_as_too_large) {
            // The server's own limit (`-I`) is lower than `max_item_size`.
            return Err(StoreError::TooLarge {
                size: value.len(),
                limit: None,
            });
        }
        write_result(result)
    }

    /// Replaces the item at `key` with the moved marker, if it still has the CAS token `cas`.
    async fn mark_moved(
        &self,
        client: &mut Client,
        key: &str,
        cas: u64,
        ttl: Duration,
    ) -> Result<Write, StoreError> {
        let exptime = format!("T{}", expiry(moved_marker_ttl(ttl)));
        let condition = format!("C{cas}");
        let flags = format!("F{MOVED_FLAGS}");
        let meta = [exptime.as_str(), condition.as_str(), flags.as_str()];
        write_result(
            client
                .meta_set(key, MOVED_VALUE, false, None, Some(&meta))
                .await,
        )
    }

    async fn delete_if(
        &self,
        client: &mut Client,
        key: &str,
        cas: u64,
    ) -> Result<Write, StoreError> {
        let condition = format!("C{cas}");
        write_result(
            client
                .meta_delete(key, false, None, Some(&[condition.as_str()]))
                .await,
        )
    }

    /// The item at `key` with `changes` applied, and its CAS token; or the outcome that ends
    /// the save with nothing written (gone, unreadable, moved, or a strict conflict).
    async fn read_merged(
        &self,
        client: &mut Client,
        key: &str,
        changes: &ChangeSet,
    ) -> Result<Result<(SessionMap, u64), SaveOutcome>, StoreError> {
        let (mut record, cas) = match self.get_with_cas(client, key).await? {
            Some(Item::Record(record, cas)) => (record, cas),
            Some(Item::Moved) => return Ok(Err(SaveOutcome::Moved)),
            Some(Item::Unreadable) | None => return Ok(Err(SaveOutcome::Gone)),
        };
        if changes.conflicts_with(&record) {
            return Ok(Err(SaveOutcome::Conflict));
        }
        changes.apply_to(&mut record);
        Ok(Ok((record, cas)))
    }

    /// Merges `changes` onto the item at `key` with compare-and-swap, retrying when another
    /// request changed the item first; for a renew (`to` given), the merged session goes to
    /// `to` and the item becomes the moved marker, by the same compare-and-swap.
    async fn merge(
        &self,
        client: &mut Client,
        key: &str,
        to: Option<&str>,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let (record, cas) = match self.read_merged(client, key, changes).await? {
                Ok(merged) => merged,
                Err(outcome) => return Ok(outcome),
            };
            let written = match (record.is_empty(), to) {
                (true, _) => self
                    .delete_if(client, key, cas)
                    .await?
                    .then(SaveOutcome::Emptied),
                (false, None) => self
                    .put(client, key, &record, Some(cas), changes.ttl())
                    .await?
                    .then(SaveOutcome::Saved),
                (false, Some(to)) => {
                    self.move_to(client, key, cas, to, &record, changes.ttl())
                        .await?
                }
            };
            match written {
                Attempt::Ended(outcome) => return Ok(outcome),
                Attempt::Lost => backoff().await,
            }
        }
        Err(StoreError::Contended(CAS_ATTEMPTS))
    }

    /// One attempt of a renew: stores `record` at `to`, then turns the item at `key` into
    /// the marker if it still has the token `cas`, or takes `to` back.
    async fn move_to(
        &self,
        client: &mut Client,
        key: &str,
        cas: u64,
        to: &str,
        record: &SessionMap,
        ttl: Duration,
    ) -> Result<Attempt, StoreError> {
        match self.put(client, to, record, None, ttl).await? {
            Write::Done => {}
            Write::Lost | Write::Missing => return Err(StoreError::IdInUse),
        }
        let marked = self.mark_moved(client, key, cas, ttl).await?;
        if !matches!(marked, Write::Done) {
            client
                .meta_delete(to, false, None, None)
                .await
                .map_err(store_error)?;
        }
        Ok(marked.then(SaveOutcome::Saved))
    }
}

/// How one compare-and-swap attempt ended.
enum Attempt {
    /// With this outcome.
    Ended(SaveOutcome),
    /// Another request changed the item first: read it again.
    Lost,
}

impl Write {
    /// The attempt's end, with `outcome` if the write was done.
    fn then(self, outcome: SaveOutcome) -> Attempt {
        match self {
            Self::Done => Attempt::Ended(outcome),
            Self::Missing => Attempt::Ended(SaveOutcome::Gone),
            Self::Lost => Attempt::Lost,
        }
    }
}

/// A short random pause, so that requests racing on one session do not retry in lockstep.
async fn backoff() {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 4);
    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
}

impl fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedStore")
            .field("prefix", &self.prefix)
            .field("pool", &self.pool.status())
            .field("max_item_size", &self.max_item_size)
            .finish_non_exhaustive()
    }
}

impl SessionStore for MemcachedStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        let key = self.key(id);
        self.run(Retry::OnceIfDropped, || {
            async |client| {
                let item = client
                    .meta_get(&key, false, None, Some(&["v", "f"]))
                    .await
                    .map_err(store_error)?;
                match item {
                    Some(item) if item.flags == Some(MOVED_FLAGS) => Ok(None),
                    Some(item) => decode(item.data.as_deref().unwrap_or_default()).map(Some),
                    None => Ok(None),
                }
            }
        })
        .await
    }

    async fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.key(id);
        self.run(Retry::Never, || {
            async |client| match self.put(client, &key, data, None, ttl).await? {
                Write::Done => Ok(()),
                Write::Lost | Write::Missing => Err(StoreError::IdInUse),
            }
        })
        .await
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        let key = self.key(id);
        self.run(Retry::Never, || {
            async |client| self.merge(client, &key, None, changes).await
        })
        .await
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let (old, new) = (self.key(from), self.key(to));
        self.run(Retry::Never, || {
            async |client| self.merge(client, &old, Some(&new), changes).await
        })
        .await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.key(id);
        let touch = format!("T{}", expiry(ttl));
        self.run(Retry::OnceIfDropped, || {
            async |client| {
                // `t` answers the time to live from before this touch.
                let flags = ["f", "t", touch.as_str()];
                let item = client
                    .meta_get(&key, false, None, Some(&flags))
                    .await
                    .map_err(store_error)?;
                match item {
                    None => Ok(false),
                    Some(item) if item.flags == Some(MOVED_FLAGS) => {
                        // The touch extended a marker: give it back the time it had left.
                        let left = item.ttl_remaining.unwrap_or(1).max(1);
                        let restore = format!("T{left}");
                        client
                            .meta_get(&key, false, None, Some(&["f", restore.as_str()]))
                            .await
                            .map_err(store_error)?;
                        Ok(false)
                    }
                    Some(_) => Ok(true),
                }
            }
        })
        .await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = self.key(id);
        self.run(Retry::OnceIfDropped, || {
            async |client| match client.meta_delete(&key, false, None, None).await {
                Ok(_) | Err(McError::Protocol(Status::NotFound)) => Ok(()),
                Err(err) => Err(store_error(err)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_over_thirty_days_become_absolute_times() {
        assert_eq!(expiry(Duration::from_hours(30 * 24)), 2_592_000);
        assert_eq!(expiry(Duration::from_millis(1)), 1);
        assert_eq!(expiry(Duration::ZERO), 1, "0 would mean never expire");
        assert_eq!(expiry(Duration::from_millis(1500)), 2);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let absolute = expiry(Duration::from_hours(31 * 24));
        assert!(absolute >= now + 31 * 24 * 3600 && absolute <= now + 31 * 24 * 3600 + 5);
    }

    #[test]
    fn records_round_trip_through_the_item_format() {
        let record: SessionMap = [
            ("foo".to_owned(), "1".to_owned()),
            ("s".to_owned(), "\"a b\"".to_owned()),
        ]
        .into_iter()
        .collect();
        let store = MemcachedStore::new("127.0.0.1:1").unwrap();
        let bytes = store.encode(&record).unwrap();
        let object: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(object, serde_json::json!({"foo": 1, "s": "a b"}));
        assert_eq!(decode(&bytes).unwrap(), record);
        assert!(decode(b"not json").is_err());
        assert!(decode(b"[1, 2]").is_err());
    }

    #[test]
    fn prefixes_are_checked_when_the_store_is_built() {
        for bad in ["has space ", "ctl\x01", &"p".repeat(219)] {
            let err = MemcachedStore::builder("127.0.0.1:11211")
                .prefix(bad)
                .build()
                .unwrap_err();
            assert!(
                err.to_string().contains("invalid memcached key prefix"),
                "{err}"
            );
        }
        assert!(MemcachedStore::builder("127.0.0.1:11211")
            .prefix("p".repeat(218))
            .build()
            .is_ok());
    }
}
