//! The store's own connections to Redis, for each deployment: a standalone server (redis-rs's
//! `ConnectionManager`, a multiplexed connection that reconnects after a broken one), a
//! Cluster (redis-rs's cluster connection, which follows slot moves and failovers), or a
//! master found through Sentinel (a multiplexed connection to the master Sentinel names,
//! looked up again when it is replaced). One connection per worker thread, replaced after
//! a command timed out on it.
//!
//! Per thread, because actix-web runs each worker on a thread of its own with a runtime of
//! its own, and a connection lives on the runtime it was opened on: shared by every worker,
//! one connection would stall them all while its worker is busy (a blocking handler), and
//! fail them all once that worker's runtime ended. Each worker's requests pipeline on their
//! own connection, without waking another thread; a server with N workers holds N
//! connections (per Cluster node).
//!
//! Replaced after a timeout, because redis-rs reconnects only after a connection broke: one
//! that went silent (a peer gone without a reset, a NAT or load balancer that dropped it)
//! would otherwise time out every command until the operating system gives up on it, which
//! takes minutes. A Sentinel connection is also replaced when it broke (the master may have
//! changed) and when the server it reaches answers that it is a read-only replica now.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
};

use deadpool_redis::redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::SentinelClient,
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value,
};

/// Where the store's Redis is, and how to connect to it.
pub(super) enum Deployment {
    Standalone {
        client: Client,
        config: ConnectionManagerConfig,
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

/// One thread's connection for one store.
struct Entry {
    /// The store's number (see [`Managed::id`]), and whether the store still exists.
    store: u64,
    alive: Weak<()>,
    /// Tells a connection from the one that replaced it.
    generation: u64,
    conn: Conn,
}

thread_local! {
    static CONNECTIONS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// The next connection's generation.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// How a store makes its connections; clones share them.
pub(super) struct Managed {
    deployment: Deployment,
    /// The store's number: each thread finds its connection by it.
    id: u64,
    /// Lives as long as the store: a thread drops the connections of stores gone.
    token: Arc<()>,
}

/// A connection for one operation, and its generation.
pub(super) struct Lease {
    pub(super) conn: Conn,
    pub(super) generation: u64,
}

impl Managed {
    pub(super) fn new(deployment: Deployment) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            deployment,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            token: Arc::new(()),
        }
    }

    /// This thread's connection, made if there is none: lazily for a standalone server (it
    /// connects at its first command), at once for a Cluster (to learn the slots) or through
    /// Sentinel (to learn the master).
    ///
    /// # Errors
    ///
    /// When the connection cannot be made (Sentinel or the Cluster unreachable, a refused
    /// password or certificate).
    pub(super) async fn lease(&self) -> Result<Lease, RedisError> {
        if let Some(lease) = self.cached() {
            return Ok(lease);
        }
        let conn = match &self.deployment {
            Deployment::Standalone { client, config } => Conn::Manager(
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
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
        // Another request of this thread may have connected meanwhile: the first one stays.
        Ok(self.cached().unwrap_or_else(|| self.keep(conn)))
    }

    fn cached(&self) -> Option<Lease> {
        CONNECTIONS.with(|conns| {
            conns
                .borrow()
                .iter()
                .find(|e| e.store == self.id)
                .map(|e| Lease {
                    conn: e.conn.clone(),
                    generation: e.generation,
                })
        })
    }

    fn keep(&self, conn: Conn) -> Lease {
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        CONNECTIONS.with(|conns| {
            let mut conns = conns.borrow_mut();
            conns.retain(|e| e.alive.strong_count() > 0);
            conns.push(Entry {
                store: self.id,
                alive: Arc::downgrade(&self.token),
                generation,
                conn: conn.clone(),
            });
        });
        Lease { conn, generation }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.deployment, Deployment::Cluster(_))
    }

    /// The deployment, for `Debug`.
    pub(super) fn describe(&self) -> &'static str {
        match self.deployment {
            Deployment::Standalone { .. } => "standalone",
            Deployment::Cluster(_) => "cluster",
            Deployment::Sentinel { .. } => "sentinel",
        }
    }

    /// Whether a connection that gave `err` must be replaced: after a timeout, always; for
    /// a Sentinel master, also once broken or read-only (demoted by a failover).
    pub(super) fn must_replace(&self, err: &RedisError) -> bool {
        if err.is_timeout() {
            return true;
        }
        matches!(self.deployment, Deployment::Sentinel { .. })
            && (err.is_io_error()
                || err.is_connection_dropped()
                || err.is_unrecoverable_error()
                || err.code() == Some("READONLY"))
    }

    /// Drops this thread's connection of `generation`: the next operation makes a new one.
    /// A newer connection is left alone.
    pub(super) fn discard(&self, generation: u64) {
        CONNECTIONS.with(|conns| {
            conns
                .borrow_mut()
                .retain(|e| !(e.store == self.id && e.generation == generation));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed() -> Arc<Managed> {
        Arc::new(Managed::new(Deployment::Standalone {
            client: Client::open("redis://127.0.0.1:1").unwrap(),
            config: ConnectionManagerConfig::new(),
        }))
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

    #[actix_web::test]
    async fn connections_of_stores_gone_are_dropped() {
        let gone = managed();
        gone.lease().await.unwrap();
        drop(gone);
        managed().lease().await.unwrap();
        assert_eq!(CONNECTIONS.with(|c| c.borrow().len()), 1);
    }
}
