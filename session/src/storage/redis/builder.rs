//! Building a [`RedisStore`]: which deployment (a standalone server, a Cluster, Sentinel),
//! TLS, credentials and timeouts.

use std::{fmt, sync::Arc, time::Duration};

use deadpool_redis::redis::{
    aio::ConnectionManagerConfig,
    cluster::ClusterClientBuilder,
    sentinel::{SentinelClientBuilder, SentinelServerType},
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionInfo, IntoConnectionInfo,
    ProtocolVersion, PushInfo, RedisError, TlsCertificates, TlsMode,
};

use super::{
    connections::{Deployment, Managed},
    near_cache::Near,
    NearCache, RedisLayout, RedisStore, Source,
};
use crate::{storage::KeyPrefix, SessionId};

/// Why a [`RedisStore`] could not be built.
///
/// ```
/// use actix_kv_session::storage::{RedisStore, RedisStoreError};
///
/// let err = RedisStore::new("redis://127.0.0.1:port").unwrap_err();
/// assert!(matches!(err, RedisStoreError::InvalidUrl(_)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// A URL or connection info is not valid.
    #[error("invalid Redis connection info")]
    InvalidUrl(#[source] RedisError),
    /// The settings do not make a client: certificates that do not parse, TLS settings on
    /// a `redis://` (not `rediss://`) URL, no Cluster node or Sentinel given.
    #[error("invalid Redis client settings")]
    InvalidSettings(#[source] RedisError),
}

/// Which Redis the store talks to.
enum Target {
    Standalone(Result<ConnectionInfo, RedisError>),
    Cluster(Result<Vec<ConnectionInfo>, RedisError>),
    Sentinel {
        sentinels: Result<Vec<ConnectionInfo>, RedisError>,
        master: String,
    },
}

/// Builds a [`RedisStore`]: [`RedisStore::builder`] for one server,
/// [`RedisStore::cluster`] for a Redis Cluster, [`RedisStore::sentinel`] for a master that
/// Sentinel follows.
///
/// ```
/// use std::time::Duration;
/// use actix_kv_session::storage::RedisStore;
///
/// # let ca_pem = Vec::new();
/// let store = RedisStore::builder("rediss://redis.example.com:6380")
///     .username("app")
///     .password("secret")
///     .root_certificate(ca_pem) // PEM; the system's roots are trusted without it
///     .connect_timeout(Duration::from_secs(1))
///     .response_timeout(Duration::from_secs(1))
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: KeyPrefix,
    connect_timeout: Duration,
    response_timeout: Duration,
    username: Option<String>,
    password: Option<String>,
    root_certificate: Option<Vec<u8>>,
    client_certificate: Option<ClientTlsConfig>,
    layout: RedisLayout,
    near_cache: Option<NearCache>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.target {
            Target::Standalone(_) => "standalone",
            Target::Cluster(_) => "cluster",
            Target::Sentinel { .. } => "sentinel",
        };
        // Credentials and keys are never printed.
        f.debug_struct("RedisStoreBuilder")
            .field("target", &target)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn infos<T: IntoConnectionInfo>(
    urls: impl IntoIterator<Item = T>,
) -> Result<Vec<ConnectionInfo>, RedisError> {
    urls.into_iter()
        .map(IntoConnectionInfo::into_connection_info)
        .collect()
}

impl RedisStoreBuilder {
    fn new(target: Target) -> Self {
        Self {
            target,
            prefix: KeyPrefix::default(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            username: None,
            password: None,
            root_certificate: None,
            client_certificate: None,
            layout: RedisLayout::Hash,
            near_cache: None,
        }
    }

    pub(super) fn standalone(url: impl IntoConnectionInfo) -> Self {
        Self::new(Target::Standalone(url.into_connection_info()))
    }

    pub(super) fn cluster<T: IntoConnectionInfo>(nodes: impl IntoIterator<Item = T>) -> Self {
        Self::new(Target::Cluster(infos(nodes)))
    }

    pub(super) fn sentinel<T: IntoConnectionInfo>(
        sentinels: impl IntoIterator<Item = T>,
        master: impl Into<String>,
    ) -> Self {
        Self::new(Target::Sentinel {
            sentinels: infos(sentinels),
            master: master.into(),
        })
    }

    /// The prefix of every session's key (default `session:`, as `sanic_session`).
    ///
    /// ```
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// // Two apps on one Redis, each with its own sessions.
    /// let store = RedisStore::builder("redis://127.0.0.1:6379").prefix("shop:session:").build()?;
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = KeyPrefix::new(prefix);
        self
    }

    /// How sessions are laid out (default [`RedisLayout::Hash`]);
    /// [`RedisLayout::Json`] reads and writes the sessions of an app on `sanic_session`:
    ///
    /// ```
    /// use actix_kv_session::storage::{RedisLayout, RedisStore};
    ///
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .layout(RedisLayout::Json)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`build`](Self::build) refuses [`RedisLayout::Json`] on a Cluster, where a renew
    /// crosses nodes and this layout has no two-step move.
    pub fn layout(mut self, layout: RedisLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Keeps the sessions this process read in its memory, and answers loads from there,
    /// without a round-trip, until Redis says that someone changed them: a read-only request
    /// then costs about what it costs on the memory store. Off by default.
    ///
    /// Each connection turns on Redis's server-assisted client-side caching (RESP3,
    /// `CLIENT TRACKING`, Redis 6 or later). Redis remembers the keys each connection
    /// read, and pushes an invalidation when one changes: a save by another app instance, a
    /// log-out, an expiry, an eviction. What holds:
    ///
    /// - **Coherence.** A change made elsewhere is seen here once its invalidation arrives:
    ///   about a network round-trip after the change (measured on loopback by `cargo run
    ///   --release -p bench --bin coherence`, p50 and p99 in the README's performance
    ///   section). This process's own saves and log-outs are seen at once by its next
    ///   request.
    /// - **Nothing lost, nothing stale for long.** A connection lost or replaced (a broken
    ///   connection, a timeout, a failover) empties the cache, as does `FLUSHDB`; a session
    ///   leaves the cache when Redis expires it (its `PTTL` is read with it), and after
    ///   [`NearCache::max_age`] at the latest, which bounds staleness when the network path
    ///   to Redis goes silent without closing the connection.
    /// - **The strict policy is exact.** Saves run in Redis, where a
    ///   [`ConflictPolicy::Strict`](crate::storage::ConflictPolicy::Strict) save compares
    ///   what the request read with what Redis holds: a request that read a session just
    ///   changed elsewhere gets its 409, as without the cache.
    /// - **Each worker is served only what its own connection read**: a worker blocked or
    ///   gone cannot leave another serving a session only it would hear about.
    /// - **Bounded memory**: [`NearCache::max_bytes`].
    ///
    /// A standalone server or Sentinel's master; [`build`](Self::build) refuses it on a
    /// Cluster (whose client reconnects to nodes on its own, without tracking).
    ///
    /// ```
    /// use actix_kv_session::storage::{NearCache, RedisStore, RedisStoreError};
    ///
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .near_cache(NearCache::new())
    ///     .build()?;
    ///
    /// let on_a_cluster = RedisStore::cluster(["redis://127.0.0.1:7000"])
    ///     .near_cache(NearCache::new())
    ///     .build();
    /// assert!(matches!(on_a_cluster, Err(RedisStoreError::InvalidSettings(_))));
    /// # Ok::<(), RedisStoreError>(())
    /// ```
    pub fn near_cache(mut self, settings: NearCache) -> Self {
        self.near_cache = Some(settings);
        self
    }

    /// How long connecting to Redis may take (default 1 s).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .connect_timeout(Duration::from_millis(250))
    ///     .build()?;
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long Redis may take to answer one command (default 1 s). A connection on which a
    /// command timed out is replaced.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .response_timeout(Duration::from_millis(200))
    ///     .build()?;
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The ACL user to authenticate as (else the one in the URL, else `default`). For
    /// Sentinel: the user on the master; the Sentinels' own come from their URLs.
    ///
    /// ```
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// # let password = "secret";
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .username("sessions")
    ///     .password(password)
    ///     .build()?;
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password to authenticate with (else the one in the URL). A wrong one is refused
    /// at the first request: the request gets a 503 and the cause is logged.
    ///
    /// ```
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// # fn secret_store(_: &str) -> String { "secret".to_owned() }
    /// let store = RedisStore::builder("redis://127.0.0.1:6379")
    ///     .password(secret_store("redis-password"))
    ///     .build()?;
    /// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
    /// ```
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// A CA certificate (PEM) to trust for `rediss://` connections, instead of the system's
    /// roots: for a Redis whose certificate a private CA signed.
    ///
    /// ```no_run
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// let ca_pem = std::fs::read("/etc/redis/tls/ca.crt")?;
    /// let store = RedisStore::builder("rediss://redis.internal:6380")
    ///     .root_certificate(ca_pem)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// A client certificate and its private key (both PEM) to present, for a Redis that
    /// requires them (`tls-auth-clients yes`).
    ///
    /// ```no_run
    /// use actix_kv_session::storage::RedisStore;
    ///
    /// let store = RedisStore::builder("rediss://redis.internal:6380")
    ///     .client_certificate(
    ///         std::fs::read("/etc/redis/tls/client.crt")?,
    ///         std::fs::read("/etc/redis/tls/client.key")?,
    ///     )
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_certificate = Some(ClientTlsConfig {
            client_cert: cert_pem.into(),
            client_key: key_pem.into(),
        });
        self
    }

    fn certificates(&self) -> Option<TlsCertificates> {
        if self.root_certificate.is_none() && self.client_certificate.is_none() {
            return None;
        }
        Some(TlsCertificates {
            client_tls: self.client_certificate.clone(),
            root_cert: self.root_certificate.clone(),
        })
    }

    /// Builds the store. No connection is made until the first request.
    ///
    /// # Errors
    ///
    /// [`RedisStoreError::InvalidUrl`] when a URL does not parse;
    /// [`RedisStoreError::InvalidSettings`] when the settings do not make a client.
    ///
    /// ```
    /// use actix_kv_session::storage::{RedisLayout, RedisStore, RedisStoreError};
    ///
    /// // Succeeds with no Redis running: the store connects at the first request.
    /// let store = RedisStore::builder("redis://127.0.0.1:6379").build()?;
    ///
    /// let json_on_a_cluster = RedisStore::cluster(["redis://127.0.0.1:7000"])
    ///     .layout(RedisLayout::Json)
    ///     .build();
    /// assert!(matches!(json_on_a_cluster, Err(RedisStoreError::InvalidSettings(_))));
    /// # Ok::<(), RedisStoreError>(())
    /// ```
    pub fn build(self) -> Result<RedisStore, RedisStoreError> {
        if matches!(self.target, Target::Cluster(_)) {
            self.check_for_cluster()?;
        }
        self.build_checked()
    }

    /// The settings a Cluster cannot take.
    fn check_for_cluster(&self) -> Result<(), RedisStoreError> {
        let refused = |why: &'static str| {
            Err(RedisStoreError::InvalidSettings(RedisError::from((
                deadpool_redis::redis::ErrorKind::InvalidClientConfig,
                why,
            ))))
        };
        if self.layout == RedisLayout::Json {
            return refused("the JSON layout is not available on a Cluster");
        }
        if self.near_cache.is_some() {
            return refused("the near cache is not available on a Cluster");
        }
        if super::parked_key(&self.prefix.key(&SessionId::generate())).is_none() {
            return refused("on a Cluster, a key prefix may hold `}` only to close a hash tag");
        }
        Ok(())
    }

    fn build_checked(self) -> Result<RedisStore, RedisStoreError> {
        let certificates = self.certificates();
        let near = self.near_cache.map(Near::new);
        // Every connection's push messages (invalidations, and redis-rs's own notice of a
        // lost connection) go to the near cache.
        let tracked = |config: AsyncConnectionConfig| match &near {
            Some(near) => {
                let near = Arc::clone(near);
                config.set_push_sender(move |push: PushInfo| {
                    near.on_push(&push);
                    Ok::<(), std::convert::Infallible>(())
                })
            }
            None => config,
        };
        let deployment = match self.target {
            Target::Standalone(ref info) => {
                let info = info.clone().map_err(RedisStoreError::InvalidUrl)?;
                self.standalone_deployment(info, certificates, near.is_some(), tracked)?
            }
            Target::Cluster(nodes) => {
                let nodes = nodes.map_err(RedisStoreError::InvalidUrl)?;
                if certificates.is_some() && !nodes.iter().all(is_tls) {
                    return Err(certificates_without_tls());
                }
                // No retries: redis-rs's Cluster client sends a command again after an I/O
                // error, which may re-apply a save whose answer was lost (a save's outcome
                // is then unknown: a 503, never a second run). A redirection after a slot
                // moved fails its request once while the slots are read again.
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.response_timeout)
                    .retries(0);
                if let Some(username) = &self.username {
                    builder = builder.username(username);
                }
                if let Some(password) = &self.password {
                    builder = builder.password(password);
                }
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                Deployment::Cluster(builder.build().map_err(RedisStoreError::InvalidSettings)?)
            }
            Target::Sentinel { sentinels, master } => {
                let sentinels = sentinels.map_err(RedisStoreError::InvalidUrl)?;
                let first = sentinels.first().cloned();
                let tls = sentinels.iter().any(is_tls);
                if certificates.is_some() && !sentinels.iter().all(is_tls) {
                    return Err(certificates_without_tls());
                }
                let addrs = sentinels.into_iter().map(|info| info.addr().clone());
                let mut builder =
                    SentinelClientBuilder::new(addrs, &master, SentinelServerType::Master)
                        .map_err(RedisStoreError::InvalidSettings)?;
                // The Sentinels' own credentials come from their URLs.
                if let Some(first) = &first {
                    let settings = first.redis_settings();
                    if let Some(username) = settings.username() {
                        builder = builder.set_client_to_sentinel_username(username);
                    }
                    if let Some(password) = settings.password() {
                        builder = builder.set_client_to_sentinel_password(password);
                    }
                }
                if tls {
                    builder = builder
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_tls_mode(TlsMode::Secure);
                }
                if let Some(username) = &self.username {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = &self.password {
                    builder = builder.set_client_to_redis_password(password);
                }
                if near.is_some() {
                    builder = builder.set_client_to_redis_protocol(ProtocolVersion::RESP3);
                }
                if let Some(certificates) = certificates {
                    // The Sentinels and the master they name share one CA and identity.
                    builder = builder
                        .set_client_to_sentinel_certificates(certificates.clone())
                        .set_client_to_redis_certificates(certificates);
                }
                let sentinel = builder.build().map_err(RedisStoreError::InvalidSettings)?;
                let config = tracked(
                    AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.connect_timeout))
                        .set_response_timeout(Some(self.response_timeout)),
                );
                Deployment::Sentinel {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                    config,
                }
            }
        };
        Ok(RedisStore::with(
            Source::Managed(Arc::new(Managed::new(deployment, near))),
            self.prefix,
        )
        .with_layout(self.layout))
    }

    /// The connections to a standalone server at `info`: a `ConnectionManager`, or under the
    /// near cache (`near`) plain connections with tracking whose pushes `tracked` routes.
    fn standalone_deployment(
        &self,
        mut info: ConnectionInfo,
        certificates: Option<TlsCertificates>,
        near: bool,
        tracked: impl Fn(AsyncConnectionConfig) -> AsyncConnectionConfig,
    ) -> Result<Deployment, RedisStoreError> {
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        if near {
            settings = settings.set_protocol(ProtocolVersion::RESP3);
        }
        info = info.set_redis_settings(settings);
        let client = match certificates {
            Some(certificates) => Client::build_with_tls(info, certificates),
            None => Client::open(info),
        }
        .map_err(RedisStoreError::InvalidSettings)?;
        if near {
            let config = tracked(
                AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.response_timeout)),
            );
            return Ok(Deployment::Tracked { client, config });
        }
        // One attempt per reconnection: while Redis is down each request fails at once
        // (503), and the first one after it is back reconnects.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(0);
        Ok(Deployment::Standalone { client, config })
    }
}

/// Whether a node is reached over TLS (`rediss://`).
fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(
        info.addr(),
        deadpool_redis::redis::ConnectionAddr::TcpTls { .. }
    )
}

/// Certificates given for nodes that are not reached over TLS: refused, as redis-rs refuses
/// them for one server, rather than connecting in plain text.
fn certificates_without_tls() -> RedisStoreError {
    RedisStoreError::InvalidSettings(RedisError::from((
        deadpool_redis::redis::ErrorKind::InvalidClientConfig,
        "TLS certificates were given, but not every node URL is rediss://",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(builder: RedisStoreBuilder) -> String {
        match builder.build() {
            Err(RedisStoreError::InvalidSettings(err)) => err.to_string(),
            other => panic!("built: {other:?}"),
        }
    }

    #[test]
    fn certificates_need_tls_urls_for_every_deployment() {
        let ca = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        for builder in [
            RedisStore::builder("redis://127.0.0.1:1"),
            RedisStore::cluster(["redis://127.0.0.1:1", "rediss://127.0.0.1:2"]),
            RedisStore::sentinel(["redis://127.0.0.1:1"], "mymaster"),
        ] {
            refused(builder.root_certificate(ca.clone()));
        }
        // On rediss:// URLs, the certificate itself is what is checked (and this one is cut
        // short).
        for builder in [
            RedisStore::cluster(["rediss://127.0.0.1:1"]),
            RedisStore::sentinel(["rediss://127.0.0.1:1"], "mymaster"),
        ] {
            if let Err(RedisStoreError::InvalidSettings(err)) =
                builder.root_certificate(ca.clone()).build()
            {
                assert!(!err.to_string().contains("not every node"), "{err}");
            }
        }
    }

    #[test]
    fn a_cluster_needs_a_node_and_a_prefix_that_leaves_room_in_its_slot() {
        refused(RedisStore::cluster(Vec::<String>::new()));
        refused(RedisStore::cluster(["redis://127.0.0.1:1"]).prefix("a}b:"));
        refused(RedisStore::cluster(["redis://127.0.0.1:1"]).prefix("{}s:"));
        for fine in ["s:", "{app}s:", "a{b:"] {
            assert!(RedisStore::cluster(["redis://127.0.0.1:1"])
                .prefix(fine)
                .build()
                .is_ok());
        }
    }

    #[test]
    fn parked_copies_share_the_hash_tag_of_their_session() {
        use super::super::parked_key;
        assert_eq!(parked_key("session:ab").unwrap(), "{session:ab}:renewing");
        assert_eq!(parked_key("{app}s:ab").unwrap(), "{app}s:ab:renewing");
        assert_eq!(parked_key("a{b:ab").unwrap(), "{a{b:ab}:renewing");
        assert_eq!(parked_key("a}b:ab"), None);
    }
}
