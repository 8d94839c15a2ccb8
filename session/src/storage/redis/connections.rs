//! The store's own connections to Redis, for each deployment: a standalone server (redis-rs's
//! `ConnectionManager`, a multiplexed connection that reconnects after a broken one), a
//! Cluster (redis-rs's cluster connection, which follows slot moves and failovers), or a
//! master found through Sentinel (a multiplexed connection to the master Sentinel names,
//! looked up again when it is replaced). One connection per worker thread, replaced after
//! a command timed out on it.
//!
//! Per thread: see [`per_thread`](crate::storage::per_thread).
//!
//! Replaced after a timeout, because redis-rs reconnects only after a connection broke: one
//! that went silent (a peer gone without a reset, a NAT or load balancer that dropped it)
//! would otherwise time out every command until the operating system gives up on it, which
//! takes minutes. A Sentinel connection is also replaced when it broke (the master may have
//! changed) and when the server it reaches answers that it is a read-only replica now. A
//! Cluster connection is kept after a timeout: it holds one connection per node, and a new
//! one would wait for the slow node before serving any slot (1 s a request, measured with
//! one node frozen, against 0.2 ms kept).

use std::sync::Arc;

use deadpool_redis::redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::SentinelClient,
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value,
};

use super::near_cache::Near;
use crate::storage::per_thread::{Lease, PerThread};

/// Where the store's Redis is, and how to connect to it.
pub(super) enum Deployment {
    Standalone {
        client: Client,
        config: ConnectionManagerConfig,
    },
    /// A standalone server under the near cache: plain multiplexed connections over RESP3,
    /// with `CLIENT TRACKING` on, replaced when one breaks. A `ConnectionManager` would
    /// reconnect by itself, and the new connection would track nothing.
    Tracked {
        client: Client,
        config: AsyncConnectionConfig,
    },
    Cluster(ClusterClient),
    Sentinel {
        /// redis-rs's Sentinel client takes `&mut self` to look the master up.
        sentinel: tokio::sync::Mutex<SentinelClient>,
        config: AsyncConnectionConfig,
    },
}

/// A connection of one of the deployments.
#[derive(Clone)]
pub(super) enum Conn {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
    Direct(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Manager(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Direct(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Manager(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Direct(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Manager(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Direct(conn) => conn.get_db(),
        }
    }
}

/// How a store makes its connections; clones share them.
pub(super) struct Managed {
    deployment: Deployment,
    connections: PerThread<Conn>,
    /// Held while a connection is made: the requests that found none wait for it instead
    /// of each making its own (for a Cluster, a connection to every node).
    connecting: tokio::sync::Mutex<()>,
    /// The near cache, fed by these connections' invalidation messages.
    near: Option<Arc<Near>>,
}

impl Managed {
    pub(super) fn new(deployment: Deployment, near: Option<Arc<Near>>) -> Self {
        Self {
            deployment,
            connections: PerThread::new(),
            connecting: tokio::sync::Mutex::new(()),
            near,
        }
    }

    /// The generation of this thread's connection, if it has one: the near cache serves a
    /// thread only what its own connection read (and so tracks).
    pub(super) fn generation_here(&self) -> Option<u64> {
        self.connections.generation(0)
    }

    /// The near cache, if the store has one.
    pub(super) fn near(&self) -> Option<&Arc<Near>> {
        self.near.as_ref()
    }

    /// This thread's connection, made if there is none: lazily for a standalone server (it
    /// connects at its first command), at once for a Cluster (to learn the slots) or through
    /// Sentinel (to learn the master).
    ///
    /// # Errors
    ///
    /// When the connection cannot be made (Sentinel or the Cluster unreachable, a refused
    /// password or certificate).
    pub(super) async fn lease(&self) -> Result<Lease<Conn>, RedisError> {
        if let Some(lease) = self.connections.cached(0) {
            return Ok(lease);
        }
        // Boxed: a Cluster's or Sentinel's connect future is several KiB, and would
        // otherwise sit inline in every operation's future, copied as it moves (9,000
        // instructions a request on `/read`, measured with callgrind).
        Box::pin(self.connect()).await
    }

    async fn connect(&self) -> Result<Lease<Conn>, RedisError> {
        let _connecting = self.connecting.lock().await;
        if let Some(lease) = self.connections.cached(0) {
            return Ok(lease);
        }
        let conn = match &self.deployment {
            Deployment::Standalone { client, config } => Conn::Manager(
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
            ),
            Deployment::Tracked { client, config } => Conn::Direct(
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await?,
            ),
            Deployment::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
            Deployment::Sentinel { sentinel, config } => {
                let master = sentinel.lock().await.async_get_client().await?;
                Conn::Direct(
                    master
                        .get_multiplexed_async_connection_with_config(config)
                        .await?,
                )
            }
        };
        let mut conn = conn;
        if self.near.is_some() {
            // Before any read. `OPTIN`: Redis tracks only the reads that follow a `CLIENT
            // CACHING YES`, those the near cache keeps, not the keys its save scripts read.
            // `NOLOOP`: no invalidation for a change made on this same connection; the store
            // drops what it changes from the cache itself, before and after. Measured with
            // `bench/capacity_ops.py` (1 worker, 32 connections): tracking every read and
            // looping back doubled a new visitor's Redis CPU (12.3 -> 22.7 µs).
            deadpool_redis::redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .arg("OPTIN")
                .arg("NOLOOP")
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(self.connections.keep(0, conn))
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.deployment, Deployment::Cluster(_))
    }

    /// The deployment, for `Debug`.
    pub(super) fn describe(&self) -> &'static str {
        match self.deployment {
            Deployment::Standalone { .. } => "standalone",
            Deployment::Tracked { .. } => "standalone, near cache",
            Deployment::Cluster(_) => "cluster",
            Deployment::Sentinel { .. } => "sentinel",
        }
    }

    /// Whether a connection that gave `err` must be replaced: after a timeout (except on a
    /// Cluster: redis-rs keeps a connection per node there, and replacing them all would
    /// make every slot wait for the one node that is slow); for a Sentinel master, also
    /// once broken or read-only (demoted by a failover), and under the near cache once
    /// broken.
    pub(super) fn must_replace(&self, err: &RedisError) -> bool {
        if err.is_timeout() {
            return !self.is_cluster();
        }
        matches!(
            self.deployment,
            Deployment::Sentinel { .. } | Deployment::Tracked { .. }
        ) && (err.is_io_error()
            || err.is_connection_dropped()
            || err.is_unrecoverable_error()
            || err.code() == Some("READONLY"))
    }

    /// Drops this thread's connection of `generation`: the next operation makes a new one.
    /// A newer connection is left alone. The near cache is emptied: the keys that
    /// connection read are no longer tracked.
    pub(super) fn discard(&self, generation: u64) {
        self.connections.discard(0, generation);
        if let Some(near) = &self.near {
            near.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn managed() -> Arc<Managed> {
        Arc::new(Managed::new(
            Deployment::Standalone {
                client: Client::open("redis://127.0.0.1:1").unwrap(),
                config: ConnectionManagerConfig::new(),
            },
            None,
        ))
    }

    #[actix_web::test]
    async fn a_thread_keeps_one_connection_per_store_until_it_is_discarded() {
        let (one, other) = (managed(), managed());
        let first = one.lease().await.unwrap().generation;
        assert_eq!(one.lease().await.unwrap().generation, first);
        assert_ne!(other.lease().await.unwrap().generation, first);
        one.discard(first + 1_000);
        assert_eq!(
            one.lease().await.unwrap().generation,
            first,
            "another generation"
        );
        one.discard(first);
        let second = one.lease().await.unwrap().generation;
        assert_ne!(second, first);
        let elsewhere = std::thread::spawn({
            let one = Arc::clone(&one);
            move || {
                actix_web::rt::System::new()
                    .block_on(async move { one.lease().await.unwrap().generation })
            }
        })
        .join()
        .unwrap();
        assert_ne!(elsewhere, second, "each thread has its own");
    }
}
