//! The store's own connections to Redis: one connection manager (redis-rs's
//! `ConnectionManager`, a multiplexed connection that reconnects after a broken one) per
//! worker thread, replaced after a command timed out on it.
//!
//! Per thread, because actix-web runs each worker on a thread of its own with a runtime of
//! its own, and a connection lives on the runtime it was opened on: shared by every worker,
//! one connection would stall them all while its worker is busy (a blocking handler), and
//! fail them all once that worker's runtime ended. Each worker's requests pipeline on their
//! own connection, without waking another thread; a server with N workers holds N
//! connections.
//!
//! Replaced after a timeout, because redis-rs reconnects only after a connection broke: one
//! that went silent (a peer gone without a reset, a NAT or load balancer that dropped it)
//! would otherwise time out every command until the operating system gives up on it, which
//! takes minutes.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
};

use deadpool_redis::redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client, RedisError,
};

/// One thread's manager for one store.
struct Entry {
    /// The store's number (see [`Managed::id`]), and whether the store still exists.
    store: u64,
    alive: Weak<()>,
    /// Tells a manager from the one that replaced it.
    generation: u64,
    manager: ConnectionManager,
}

thread_local! {
    static MANAGERS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// The next manager's generation.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// How a store makes its connections; clones share them.
#[derive(Clone)]
pub(super) struct Managed {
    client: Client,
    config: ConnectionManagerConfig,
    /// The store's number: each thread finds its manager by it.
    id: u64,
    /// Lives as long as a clone of the store: a thread drops the managers of stores gone.
    token: Arc<()>,
}

/// A connection for one operation, and the generation of the manager it came from.
pub(super) struct Lease {
    pub(super) manager: ConnectionManager,
    pub(super) generation: u64,
}

impl Managed {
    pub(super) fn new(client: Client, config: ConnectionManagerConfig) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            client,
            config,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            token: Arc::new(()),
        }
    }

    /// This thread's manager, made (without connecting: it connects at its first command)
    /// if there is none.
    ///
    /// # Errors
    ///
    /// When redis-rs refuses the configuration.
    pub(super) fn lease(&self) -> Result<Lease, RedisError> {
        MANAGERS.with(|managers| {
            let mut managers = managers.borrow_mut();
            if let Some(entry) = managers.iter().find(|e| e.store == self.id) {
                return Ok(Lease {
                    manager: entry.manager.clone(),
                    generation: entry.generation,
                });
            }
            let manager =
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())?;
            let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
            managers.retain(|e| e.alive.strong_count() > 0);
            managers.push(Entry {
                store: self.id,
                alive: Arc::downgrade(&self.token),
                generation,
                manager: manager.clone(),
            });
            Ok(Lease {
                manager,
                generation,
            })
        })
    }

    /// Drops this thread's manager of `generation`, after a command timed out on it: the
    /// next operation opens a new connection. A newer manager is left alone.
    pub(super) fn discard(&self, generation: u64) {
        MANAGERS.with(|managers| {
            managers
                .borrow_mut()
                .retain(|e| !(e.store == self.id && e.generation == generation));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed() -> Managed {
        Managed::new(
            Client::open("redis://127.0.0.1:1").unwrap(),
            ConnectionManagerConfig::new(),
        )
    }

    #[actix_web::test]
    async fn a_thread_keeps_one_manager_per_store_until_it_is_discarded() {
        let (one, other) = (managed(), managed());
        let first = one.lease().unwrap().generation;
        assert_eq!(
            one.clone().lease().unwrap().generation,
            first,
            "clones share it"
        );
        assert_ne!(other.lease().unwrap().generation, first);
        one.discard(first + 1_000);
        assert_eq!(one.lease().unwrap().generation, first, "another generation");
        one.discard(first);
        let second = one.lease().unwrap().generation;
        assert_ne!(second, first);
        let elsewhere = std::thread::spawn({
            let one = one.clone();
            move || {
                actix_web::rt::System::new()
                    .block_on(async move { one.lease().unwrap().generation })
            }
        })
        .join()
        .unwrap();
        assert_ne!(elsewhere, second, "each thread has its own");
    }

    #[actix_web::test]
    async fn managers_of_stores_gone_are_dropped() {
        let gone = managed();
        gone.lease().unwrap();
        drop(gone);
        managed().lease().unwrap();
        let count = MANAGERS.with(|m| m.borrow().len());
        assert_eq!(count, 1);
    }
}
