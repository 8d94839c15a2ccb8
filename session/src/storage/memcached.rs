//! The Memcached store: a pool of memcached nodes, keys spread over them by libmemcached's
//! weighted ketama, each node reached through one multiplexed connection per worker thread
//! on the meta protocol.

mod conn;
mod ketama;
mod node;
mod recent_reads;

use std::{
    fmt,
    future::Future,
    io::Write as _,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use self::{
    conn::{Connection, Reply},
    ketama::Ring,
    node::{Node, Tls, TlsSettings},
    recent_reads::RecentReads,
};
use super::{
    json_record::{
        self, backoff, decode, is_moved_marker, CAS_ATTEMPTS, MOVED_MARKER, RETRIES_WITHOUT_PAUSE,
    },
    moved_marker_ttl,
    per_thread::{Lease, PerThread},
    ChangeSet, KeyPrefix, SaveOutcome, SessionMap, SessionStore,
};
use crate::{error::StoreError, SessionId};

/// Memcached's default item size limit is 1 MiB, item header and key included: keep the
/// value safely under it.
const DEFAULT_MAX_ITEM_SIZE: usize = 1_000_000;
/// The longest key memcached accepts.
const MAX_KEY_LEN: usize = 250;
/// Memcached reads an expiry over 30 days as an absolute Unix time.
const MAX_RELATIVE_TTL: u64 = 30 * 24 * 60 * 60;
/// The last absolute time memcached can hold: it keeps times as 32-bit signed numbers.
const MAX_EXPTIME: u64 = i32::MAX as u64;
/// The oldest memcached whose meta protocol the store speaks: before 1.6.10, `ms` took the
/// value's size as a flag, and answered this store's `ms` with two error lines, one of
/// them for the value read as a command.
const MIN_VERSION: (u32, u32, u32) = (1, 6, 10);

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
/// **Several nodes.** Give a comma-separated list (`"10.0.0.1:11211,10.0.0.2:11211"`, each
/// node `HOST:PORT`, optionally `:WEIGHT`): each session lives on one node, picked by
/// libmemcached's weighted ketama (`MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`), so other
/// libmemcached clients with the same list find the same sessions, and adding a node moves
/// about 1/N of them. While a node is down, the sessions on it answer 503 and the others
/// are unaffected; when it is back, its sessions work again (those it held are gone if it
/// restarted).
///
/// **Connections.** Each worker thread keeps one connection per node, on which its requests
/// pipeline: a slow memcached slows the requests waiting on it, but holds no connection
/// that others need. A connection that broke or timed out is replaced.
///
/// ```no_run
/// use actix_kv_session::{storage::MemcachedStore, SessionMiddleware};
/// use actix_web::{web, App, HttpServer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemcachedStore::new("127.0.0.1:11211")?;
/// // or several nodes: MemcachedStore::new("10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211:2")?
/// HttpServer::new(move || App::new().wrap(SessionMiddleware::new(store.clone())))
///     .bind("127.0.0.1:8080")?
///     .run()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemcachedStore {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Vec<Node>,
    /// `None` for one node.
    ring: Option<Ring>,
    connections: PerThread<Connection>,
    reads: RecentReads,
    tls: Option<Tls>,
    prefix: KeyPrefix,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_item_size: usize,
}

/// Why a [`MemcachedStore`] could not be built.
///
/// ```
/// use actix_kv_session::storage::{MemcachedStore, MemcachedStoreError};
///
/// let err = MemcachedStore::new("").unwrap_err();
/// assert!(matches!(err, MemcachedStoreError::InvalidNodes(_)));
///
/// let err = MemcachedStore::builder("127.0.0.1:11211").prefix("my app:").build().unwrap_err();
/// assert!(matches!(err, MemcachedStoreError::InvalidPrefix { .. }));
/// ```
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
    /// A node of the list cannot be read, or the list is empty.
    #[error("invalid memcached node list: {0}")]
    InvalidNodes(String),
    /// The TLS settings do not make a TLS client (a certificate or key that does not parse).
    #[error("invalid memcached TLS settings: {0}")]
    InvalidTls(String),
}

/// Builds a [`MemcachedStore`].
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::storage::MemcachedStore;
///
/// // Builds with no memcached running: the store connects at the first request.
/// let store = MemcachedStore::builder("10.0.0.1:11211,10.0.0.2:11211")
///     .prefix("shop:session:")
///     .connect_timeout(Duration::from_millis(500))
///     .response_timeout(Duration::from_millis(250))
///     .build()?;
/// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct MemcachedStoreBuilder {
    nodes: String,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_item_size: usize,
    tls: TlsSettings,
}

impl MemcachedStoreBuilder {
    /// The prefix of every session's key (default `session:`, as `sanic_session`).
    ///
    /// ```
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// // Two apps on one memcached, each with its own sessions.
    /// let store = MemcachedStore::builder("127.0.0.1:11211").prefix("shop:session:").build()?;
    /// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long connecting to a node may take (default 1 s). While a node cannot be
    /// reached, each request for a session on it waits at most this long for its 503.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// let store = MemcachedStore::builder("127.0.0.1:11211")
    ///     .connect_timeout(Duration::from_millis(250))
    ///     .build()?;
    /// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long memcached may take to answer one command (default 1 s). A connection whose
    /// command timed out is replaced.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// let store = MemcachedStore::builder("127.0.0.1:11211")
    ///     .response_timeout(Duration::from_millis(200))
    ///     .build()?;
    /// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The largest serialized session the store writes (default 1,000,000 bytes, under
    /// memcached's default 1 MiB item limit). A larger session is refused with
    /// [`StoreError::TooLarge`] (a 500, logged) and the stored one is left as it was.
    ///
    /// Keep it under the server's `-I` setting: when memcached itself refuses an item as too
    /// large, it also deletes the item stored under that key, so the session is lost (the
    /// request still gets the error).
    ///
    /// ```
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// // For a memcached started with `-I 512k`.
    /// let store = MemcachedStore::builder("127.0.0.1:11211")
    ///     .max_item_size(500_000)
    ///     .build()?;
    /// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
    /// ```
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.max_item_size = bytes;
        self
    }

    /// Connects over TLS (memcached's `-Z`), trusting the system's root certificates unless
    /// [`root_certificate`](Self::root_certificate) names others. Certificates are checked
    /// against each node's host name or IP address, or
    /// [`tls_server_name`](Self::tls_server_name).
    ///
    /// ```
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// // A managed memcached with a certificate from a public CA.
    /// let store = MemcachedStore::builder("cache.example.com:11211").tls().build()?;
    /// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
    /// ```
    pub fn tls(mut self) -> Self {
        self.tls.enabled = true;
        self
    }

    /// Connects over TLS, trusting the certificates of `pem` (one or more PEM certificates,
    /// for example a private CA) instead of the system's.
    ///
    /// ```no_run
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// let ca_pem = std::fs::read("/etc/memcached/tls/ca.crt")?;
    /// let store = MemcachedStore::builder("memcached.internal:11211")
    ///     .root_certificate(ca_pem)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.enabled = true;
        self.tls.roots = Some(pem.into());
        self
    }

    /// Connects over TLS, presenting a client certificate (PEM chain, and its PEM private
    /// key) to nodes that ask for one (memcached's `ssl_ca_cert` with `ssl_verify_mode`).
    ///
    /// ```no_run
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// let store = MemcachedStore::builder("memcached.internal:11211")
    ///     .root_certificate(std::fs::read("/etc/memcached/tls/ca.crt")?)
    ///     .client_certificate(
    ///         std::fs::read("/etc/memcached/tls/client.crt")?,
    ///         std::fs::read("/etc/memcached/tls/client.key")?,
    ///     )
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.enabled = true;
        self.tls.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The name the nodes' certificates must carry, when it is not each node's host (nodes
    /// listed by IP address with a certificate for a DNS name).
    ///
    /// ```
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// let store = MemcachedStore::builder("10.0.0.1:11211,10.0.0.2:11211")
    ///     .tls()
    ///     .tls_server_name("cache.example.com")
    ///     .build()?;
    /// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
    /// ```
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls.server_name = Some(name.into());
        self
    }

    /// Builds the store. No connection is made until the first request (see
    /// [`MemcachedStore::ping`] to check the nodes at start-up).
    ///
    /// # Errors
    ///
    /// [`MemcachedStoreError::InvalidPrefix`] when the prefix cannot be part of a memcached
    /// key; [`MemcachedStoreError::InvalidNodes`] when the node list does not parse;
    /// [`MemcachedStoreError::InvalidTls`] when a certificate or key does not.
    ///
    /// ```
    /// use actix_kv_session::storage::{MemcachedStore, MemcachedStoreError};
    ///
    /// // Succeeds with no memcached running: the store connects at the first request.
    /// let store = MemcachedStore::builder("127.0.0.1:11211").build()?;
    ///
    /// let not_pem = MemcachedStore::builder("127.0.0.1:11211")
    ///     .root_certificate("not a certificate")
    ///     .build();
    /// assert!(matches!(not_pem, Err(MemcachedStoreError::InvalidTls(_))));
    /// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
    /// ```
    pub fn build(self) -> Result<MemcachedStore, MemcachedStoreError> {
        let valid = self.prefix.len() + SessionId::LEN <= MAX_KEY_LEN
            && self.prefix.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(MemcachedStoreError::InvalidPrefix {
                prefix: self.prefix,
            });
        }
        let nodes = self
            .nodes
            .split(',')
            .filter(|spec| !spec.trim().is_empty())
            .map(Node::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(MemcachedStoreError::InvalidNodes)?;
        if nodes.is_empty() {
            return Err(MemcachedStoreError::InvalidNodes(format!(
                "{:?} names no node",
                self.nodes
            )));
        }
        let tls = self.tls.build().map_err(MemcachedStoreError::InvalidTls)?;
        if let Some(node) = nodes
            .iter()
            .find(|node| node.is_unix())
            .filter(|_| tls.is_some())
        {
            return Err(MemcachedStoreError::InvalidTls(format!(
                "{node} is a Unix socket: memcached speaks TLS on TCP only"
            )));
        }
        let ring = (nodes.len() > 1).then(|| Ring::new(&nodes));
        Ok(MemcachedStore {
            inner: Arc::new(Inner {
                nodes,
                ring,
                connections: PerThread::new(),
                reads: RecentReads::new(),
                tls,
                prefix: KeyPrefix::new(self.prefix),
                connect_timeout: self.connect_timeout,
                response_timeout: self.response_timeout,
                max_item_size: self.max_item_size,
            }),
        })
    }
}

impl MemcachedStore {
    /// A store on the memcached nodes of `nodes`, with the default settings: one node
    /// (`HOST:PORT`, `tcp://HOST:PORT`, `[IPV6]:PORT` or `unix://PATH`) or several,
    /// comma-separated, each optionally followed by `:WEIGHT`.
    ///
    /// # Errors
    ///
    /// As [`MemcachedStoreBuilder::build`].
    ///
    /// ```
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// let local = MemcachedStore::new("127.0.0.1:11211")?;
    /// let socket = MemcachedStore::new("unix:///var/run/memcached/memcached.sock")?;
    /// // Three nodes, the third with twice the weight of the others.
    /// let pool = MemcachedStore::new("10.0.0.1:11211,10.0.0.2:11211,10.0.0.3:11211:2")?;
    /// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
    /// ```
    pub fn new(nodes: impl AsRef<str>) -> Result<Self, MemcachedStoreError> {
        Self::builder(nodes).build()
    }

    /// A builder for a store on the memcached nodes of `nodes` (as [`new`](Self::new)).
    ///
    /// ```
    /// use actix_kv_session::{storage::MemcachedStore, SessionMiddleware};
    ///
    /// let store = MemcachedStore::builder("127.0.0.1:11211").prefix("shop:session:").build()?;
    /// let middleware = SessionMiddleware::new(store);
    /// # Ok::<(), actix_kv_session::storage::MemcachedStoreError>(())
    /// ```
    pub fn builder(nodes: impl AsRef<str>) -> MemcachedStoreBuilder {
        MemcachedStoreBuilder {
            nodes: nodes.as_ref().to_owned(),
            prefix: KeyPrefix::DEFAULT.to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
            tls: TlsSettings::default(),
        }
    }

    /// Checks that every node answers, for a clear error at start-up rather than 503s on the
    /// first requests.
    ///
    /// # Errors
    ///
    /// The first node that cannot be reached or does not answer, as a [`StoreError`] that
    /// names it.
    ///
    /// ```no_run
    /// use actix_kv_session::storage::MemcachedStore;
    ///
    /// # async fn start() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = MemcachedStore::new("10.0.0.1:11211,10.0.0.2:11211")?;
    /// // Stop at start-up if a node is down, rather than answer 503s.
    /// store.ping().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping(&self) -> Result<(), StoreError> {
        for node in 0..self.inner.nodes.len() {
            let reply = self.call(node, b"mn\r\n".to_vec()).await?;
            if reply.status() != b"MN" {
                return Err(self.unexpected(node, &reply));
            }
        }
        Ok(())
    }

    fn key(&self, id: &SessionId) -> String {
        self.inner.prefix.key(id)
    }

    /// The node that holds `key`.
    fn node_of(&self, key: &str) -> usize {
        self.inner
            .ring
            .as_ref()
            .map_or(0, |ring| ring.node_of(key.as_bytes()))
    }

    /// This thread's connection to `node`, opened if it has none or its last one closed.
    async fn lease(&self, node: usize) -> Result<Lease<Connection>, StoreError> {
        let connections = &self.inner.connections;
        if let Some(lease) = connections.cached(node) {
            if !lease.conn.is_closed() {
                return Ok(lease);
            }
            connections.discard(node, lease.generation);
        }
        let conn = self.inner.nodes[node]
            .connect(self.inner.tls.as_ref(), self.inner.connect_timeout)
            .await
            .map_err(|err| self.failure(node, format!("cannot connect: {err}"), false))?;
        self.check_version(node, &conn).await?;
        Ok(connections.keep(node, conn))
    }

    /// Refuses a memcached older than [`MIN_VERSION`] on a new connection, before any
    /// session command is sent on it.
    async fn check_version(&self, node: usize, conn: &Connection) -> Result<(), StoreError> {
        let asked = conn.call(b"version\r\n".to_vec());
        let reply = match tokio::time::timeout(self.inner.response_timeout, asked).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(closed)) => return Err(self.failure(node, closed.to_string(), false)),
            Err(_) => return Err(StoreError::TimedOut(self.inner.response_timeout)),
        };
        match version_of(&reply.line()) {
            Some(version) if version < MIN_VERSION => Err(self.failure(
                node,
                format!(
                    "memcached {}.{}.{} is too old: the store needs {}.{}.{} or later (its \
                     meta protocol)",
                    version.0, version.1, version.2, MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2
                ),
                false,
            )),
            // A server that names its version otherwise is given the benefit of the doubt:
            // the connection closes at its first error line anyway.
            _ => Ok(()),
        }
    }

    /// Sends one command to `node` and waits for its answer within the response timeout. A
    /// connection that closed under the command, or timed out, is dropped: the next
    /// command opens another.
    async fn call(&self, node: usize, command: Vec<u8>) -> Result<Reply, StoreError> {
        let lease = self.lease(node).await?;
        let timeout = self.inner.response_timeout;
        match tokio::time::timeout(timeout, lease.conn.call(command)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(closed)) => {
                self.inner.connections.discard(node, lease.generation);
                Err(self.failure(node, closed.to_string(), true))
            }
            Err(_) => {
                self.inner.connections.discard(node, lease.generation);
                Err(StoreError::TimedOut(timeout))
            }
        }
    }

    /// A failure of `node`, as a [`StoreError::Unavailable`] that names it; `broke` when a
    /// connection closed under a command (an idempotent operation may run once more).
    fn failure(&self, node: usize, what: String, broke: bool) -> StoreError {
        StoreError::unavailable(NodeError {
            node: self.inner.nodes[node].to_string(),
            what,
            broke,
        })
    }

    /// An answer the command cannot have.
    fn unexpected(&self, node: usize, reply: &Reply) -> StoreError {
        self.failure(node, format!("unexpected answer {:?}", reply.line()), false)
    }

    /// Runs `op`; with [`Retry::OnceIfDropped`], once more if a connection closed under it
    /// (the server restarted, a proxy cut it), so a load does not fail for a connection
    /// that was already dead. A timeout is not retried.
    async fn run<T, F>(&self, retry: Retry, op: impl Fn() -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        match op().await {
            Err(err) if retry == Retry::OnceIfDropped && connection_broke(&err) => {
                crate::observe::retried("connection_dropped");
                op().await
            }
            other => other,
        }
    }

    /// The item's value for `record`, checked against the size limit.
    fn encode(&self, record: &SessionMap) -> Result<Vec<u8>, StoreError> {
        let bytes = json_record::encode(record)?;
        if bytes.len() > self.inner.max_item_size {
            return Err(StoreError::TooLarge {
                size: bytes.len(),
                limit: Some(self.inner.max_item_size),
            });
        }
        Ok(bytes)
    }
}

/// A node's failure, named.
#[derive(Debug, thiserror::Error)]
#[error("memcached {node}: {what}")]
struct NodeError {
    node: String,
    what: String,
    broke: bool,
}

/// `changes` merged onto the item `value` a load read, unless that record cannot be read or
/// conflicts with them: then the save reads the item again (a conflict with a record that
/// may be stale is not a conflict yet).
fn merged_onto(value: &[u8], changes: &ChangeSet) -> Option<SessionMap> {
    let mut record = decode(value).ok()?;
    if is_moved_marker(&record) || changes.conflicts_with(&record) {
        return None;
    }
    changes.apply_to(&mut record);
    Some(record)
}

/// The exptime memcached understands for a TTL: seconds up to 30 days, an absolute Unix
/// time beyond (memcached reads any larger number as one). Never 0, which means "forever".
///
/// memcached keeps times as 32-bit signed numbers: an absolute time past 2038-01-19 wraps
/// to the past, and the item would be stored expired (a 12-year TTL lost every session).
/// Such a TTL is cut to that date.
fn expiry(ttl: Duration) -> u64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1);
    if secs <= MAX_RELATIVE_TTL {
        return secs;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now.saturating_add(secs).min(MAX_EXPTIME)
}

/// The version a `version` answer names (`VERSION 1.6.18`), if it is three numbers.
fn version_of(line: &str) -> Option<(u32, u32, u32)> {
    let text = line.strip_prefix("VERSION ")?;
    // Builds may add a suffix (`1.6.21-beta`).
    let digits = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = digits.split('.').map(str::parse::<u32>);
    let version = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    Some(version)
}

/// Whether a store error is a connection that closed under an operation.
fn connection_broke(err: &StoreError) -> bool {
    match err {
        StoreError::Unavailable(cause) => cause
            .downcast_ref::<NodeError>()
            .is_some_and(|err| err.broke),
        _ => false,
    }
}

/// A meta command: `verb key flags...`, then the value and its line end for a set.
fn command(verb: &str, key: &str, flags: fmt::Arguments<'_>, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(verb.len() + key.len() + 32 + value.map_or(0, <[u8]>::len));
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{verb} {key}{flags}\r\n");
    if let Some(value) = value {
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What a conditional write answered.
enum Write {
    Done,
    /// The CAS token no longer matches (EX), or an add found an item (NS).
    Lost,
    /// The item is gone (NF).
    Missing,
}

impl MemcachedStore {
    /// What a conditional write's answer means.
    fn write_result(&self, node: usize, reply: &Reply) -> Result<Write, StoreError> {
        match reply.status() {
            b"HD" => Ok(Write::Done),
            b"EX" | b"NS" => Ok(Write::Lost),
            b"NF" => Ok(Write::Missing),
            _ => Err(self.unexpected(node, reply)),
        }
    }

    /// The item with its CAS token.
    async fn get_with_cas(&self, node: usize, key: &str) -> Result<Option<Item>, StoreError> {
        let get = command("mg", key, format_args!(" v c"), None);
        let mut reply = self.call(node, get).await?;
        match reply.status() {
            b"EN" => return Ok(None),
            b"VA" => {}
            _ => return Err(self.unexpected(node, &reply)),
        }
        let cas = match reply.number::<u64>(b'c') {
            // memcached started with `-C`: every compare-and-swap would fail.
            Some(0) => {
                return Err(self.failure(
                    node,
                    "memcached runs without CAS (its -C option): the session store needs \
                     compare-and-swap to save"
                        .to_owned(),
                    false,
                ))
            }
            Some(cas) => cas,
            None => return Err(StoreError::corrupt("memcached sent no CAS token")),
        };
        Ok(Some(
            match decode(&reply.take_value().unwrap_or_default()) {
                Ok(record) if is_moved_marker(&record) => Item::Moved,
                Ok(record) => Item::Record(record, cas),
                Err(_) => Item::Unreadable,
            },
        ))
    }

    /// Writes `record` at `key`: with add when `cas` is `None`, else with compare-and-swap.
    async fn put(
        &self,
        key: &str,
        record: &SessionMap,
        cas: Option<u64>,
        ttl: Duration,
    ) -> Result<Write, StoreError> {
        let value = self.encode(record)?;
        let node = self.node_of(key);
        let exptime = expiry(ttl);
        let size = value.len();
        let command = match cas {
            Some(cas) => command(
                "ms",
                key,
                format_args!(" {size} T{exptime} C{cas}"),
                Some(&value),
            ),
            None => command(
                "ms",
                key,
                format_args!(" {size} T{exptime} ME"),
                Some(&value),
            ),
        };
        let reply = self.call(node, command).await?;
        if reply.status() == b"SERVER_ERROR" && reply.line().contains("too large") {
            // The server's own limit (`-I`) is lower than `max_item_size`.
            return Err(StoreError::TooLarge { size, limit: None });
        }
        self.write_result(node, &reply)
    }

    /// Whether the item at `key` is the moved marker (false when there is none).
    async fn is_marker(&self, node: usize, key: &str) -> Result<bool, StoreError> {
        let get = command("mg", key, format_args!(" v"), None);
        let mut reply = self.call(node, get).await?;
        match reply.status() {
            b"EN" => Ok(false),
            b"VA" => Ok(reply.take_value().as_deref() == Some(MOVED_MARKER)),
            _ => Err(self.unexpected(node, &reply)),
        }
    }

    /// Replaces the item at `key` with the moved marker, if it still has the CAS token `cas`.
    async fn mark_moved(&self, key: &str, cas: u64, ttl: Duration) -> Result<Write, StoreError> {
        let node = self.node_of(key);
        let exptime = expiry(moved_marker_ttl(ttl));
        let command = command(
            "ms",
            key,
            format_args!(" {} T{exptime} C{cas}", MOVED_MARKER.len()),
            Some(MOVED_MARKER),
        );
        let reply = self.call(node, command).await?;
        self.write_result(node, &reply)
    }

    /// Deletes the item at `key`: if it still has the CAS token `cas`, when given.
    async fn delete_item(&self, key: &str, cas: Option<u64>) -> Result<Write, StoreError> {
        let node = self.node_of(key);
        let command = match cas {
            Some(cas) => command("md", key, format_args!(" C{cas}"), None),
            None => command("md", key, format_args!(""), None),
        };
        let reply = self.call(node, command).await?;
        self.write_result(node, &reply)
    }

    /// The item at `key` with `changes` applied, and its CAS token; or the outcome that ends
    /// the save with nothing written (gone, unreadable, moved, or a strict conflict).
    async fn read_merged(
        &self,
        key: &str,
        changes: &ChangeSet,
    ) -> Result<Result<(SessionMap, u64), SaveOutcome>, StoreError> {
        let (mut record, cas) = match self.get_with_cas(self.node_of(key), key).await? {
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

    /// Merges `changes` onto the item of session `id` at `key` with compare-and-swap,
    /// retrying when another request changed the item first; for a renew (`to` given), the
    /// merged session goes to `to` and the item becomes the moved marker, by the same
    /// compare-and-swap. The first attempt merges onto what this request's load read, if
    /// the thread remembers it (see [`recent_reads`]).
    async fn merge(
        &self,
        id: SessionId,
        key: &str,
        to: Option<&str>,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let mut remembered = self.inner.reads.take(id);
        for attempt in 0..CAS_ATTEMPTS {
            let from_memo = remembered
                .take()
                .and_then(|(cas, value)| merged_onto(&value, changes).map(|r| (r, cas)));
            let (record, cas) = match from_memo {
                Some(merged) => merged,
                None => match self.read_merged(key, changes).await? {
                    Ok(merged) => merged,
                    Err(outcome) => return Ok(outcome),
                },
            };
            let written = match (record.is_empty(), to) {
                (true, _) => self
                    .delete_item(key, Some(cas))
                    .await?
                    .then(SaveOutcome::Emptied),
                (false, None) => self
                    .put(key, &record, Some(cas), changes.ttl())
                    .await?
                    .then(SaveOutcome::Saved),
                (false, Some(to)) => self.move_to(key, cas, to, &record, changes.ttl()).await?,
            };
            match written {
                Attempt::Ended(outcome) => return Ok(outcome),
                Attempt::Lost if attempt < RETRIES_WITHOUT_PAUSE => {
                    crate::observe::retried("cas_lost");
                }
                // The last attempt lost: the save gives up, no retry to count or pause for.
                Attempt::Lost if attempt + 1 == CAS_ATTEMPTS => {}
                Attempt::Lost => {
                    crate::observe::retried("cas_lost");
                    backoff().await;
                }
            }
        }
        Err(StoreError::Contended(CAS_ATTEMPTS))
    }

    /// One attempt of a renew: stores `record` at `to`, then turns the item at `key` into
    /// the marker if it still has the token `cas`, or takes `to` back. The two keys may be
    /// on different nodes.
    async fn move_to(
        &self,
        key: &str,
        cas: u64,
        to: &str,
        record: &SessionMap,
        ttl: Duration,
    ) -> Result<Attempt, StoreError> {
        match self.put(to, record, None, ttl).await? {
            Write::Done => {}
            Write::Lost | Write::Missing => return Err(StoreError::IdInUse),
        }
        let marked = match self.mark_moved(key, cas, ttl).await {
            Ok(marked) => marked,
            Err(err) => {
                // The old node failed (or its answer was lost): take the copy back, as best
                // we can, so that no session is left under an id nobody was given. If the
                // mark was applied after all, the session is lost; the request gets a 503.
                let _ = self.delete_item(to, None).await;
                return Err(err);
            }
        };
        if !matches!(marked, Write::Done) {
            self.delete_item(to, None).await?;
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

impl fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.inner.nodes.iter().map(ToString::to_string).collect();
        f.debug_struct("MemcachedStore")
            .field("nodes", &nodes)
            .field("prefix", &self.inner.prefix)
            .field("tls", &self.inner.tls.is_some())
            .field("max_item_size", &self.inner.max_item_size)
            .finish_non_exhaustive()
    }
}

impl SessionStore for MemcachedStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        let key = &self.key(id);
        let node = self.node_of(key);
        self.run(Retry::OnceIfDropped, || async move {
            let get = command("mg", key, format_args!(" v c"), None);
            let mut reply = self.call(node, get).await?;
            match reply.status() {
                b"EN" => Ok(None),
                b"VA" => {
                    let value = reply.take_value().unwrap_or_default();
                    let record = decode(&value)?;
                    if is_moved_marker(&record) {
                        return Ok(None);
                    }
                    if let Some(cas) = reply.number(b'c').filter(|&cas| cas != 0) {
                        self.inner.reads.remember(*id, cas, value);
                    }
                    Ok(Some(record))
                }
                _ => Err(self.unexpected(node, &reply)),
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
        let key = &self.key(id);
        self.run(Retry::Never, || async move {
            match self.put(key, data, None, ttl).await? {
                Write::Done => Ok(()),
                Write::Lost | Write::Missing => Err(StoreError::IdInUse),
            }
        })
        .await
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        let key = &self.key(id);
        self.run(Retry::Never, || async move {
            self.merge(*id, key, None, changes).await
        })
        .await
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let (old, new) = (&self.key(from), &self.key(to));
        self.run(Retry::Never, || async move {
            self.merge(*from, old, Some(new), changes).await
        })
        .await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let key = &self.key(id);
        let node = self.node_of(key);
        let exptime = expiry(ttl);
        self.run(Retry::OnceIfDropped, || async move {
            // `t` answers the time to live from before this touch, `s` the item's size:
            // an item of the marker's size is read to tell (a session of that size costs
            // its touches one more round-trip).
            let touch = command("mg", key, format_args!(" s t T{exptime}"), None);
            let reply = self.call(node, touch).await?;
            let marker_sized = reply.number::<usize>(b's') == Some(MOVED_MARKER.len());
            match reply.status() {
                b"EN" => Ok(false),
                b"HD" if marker_sized && self.is_marker(node, key).await? => {
                    // The touch extended a marker: give it back the time it had left.
                    let left: i64 = reply.number(b't').unwrap_or(1).max(1);
                    let restore = command("mg", key, format_args!(" T{left}"), None);
                    let reply = self.call(node, restore).await?;
                    match reply.status() {
                        b"HD" | b"EN" => Ok(false),
                        _ => Err(self.unexpected(node, &reply)),
                    }
                }
                b"HD" => Ok(true),
                _ => Err(self.unexpected(node, &reply)),
            }
        })
        .await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = &self.key(id);
        self.run(Retry::OnceIfDropped, || async move {
            self.delete_item(key, None).await.map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_over_thirty_days_become_absolute_times() {
        assert_eq!(expiry(Duration::from_secs(30 * 24 * 3600)), 2_592_000);
        assert_eq!(expiry(Duration::from_millis(1)), 1);
        assert_eq!(expiry(Duration::ZERO), 1, "0 would mean never expire");
        assert_eq!(expiry(Duration::from_millis(1500)), 2);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let absolute = expiry(Duration::from_secs(31 * 24 * 3600));
        assert!(absolute >= now + 31 * 24 * 3600 && absolute <= now + 31 * 24 * 3600 + 5);
        for endless in [Duration::from_secs(20 * 365 * 24 * 3600), Duration::MAX] {
            assert_eq!(expiry(endless), MAX_EXPTIME, "memcached's last time, 2038");
        }
    }

    #[test]
    fn versions_are_read_from_the_version_answer() {
        assert_eq!(version_of("VERSION 1.6.18"), Some((1, 6, 18)));
        assert_eq!(version_of("VERSION 1.6.21-beta"), Some((1, 6, 21)));
        assert_eq!(version_of("VERSION 1.6.9"), Some((1, 6, 9)));
        assert!(version_of("VERSION 1.6.9").unwrap() < MIN_VERSION);
        assert!(version_of("VERSION 1.10.0").unwrap() > MIN_VERSION);
        assert_eq!(version_of("VERSION dragonfly"), None);
        assert_eq!(version_of("ERROR"), None);
    }

    #[test]
    fn tls_to_a_unix_socket_is_refused_when_the_store_is_built() {
        let err = MemcachedStore::builder("unix:///run/memcached.sock")
            .root_certificate(Vec::new())
            .build()
            .unwrap_err();
        assert!(matches!(err, MemcachedStoreError::InvalidTls(_)), "{err}");
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
