//! The networked stores' connections, kept per worker thread.
//!
//! actix-web runs each worker on a thread of its own with a runtime of its own, and a
//! multiplexed connection lives on the runtime it was opened on (its I/O is driven there).
//! Shared by every worker, one connection would stall them all while its worker is busy (a
//! blocking handler) and fail them all once that worker's runtime ended. Kept per thread,
//! each worker's requests pipeline on their own connections without waking another thread;
//! a server with N workers holds N connections per server it talks to.
//!
//! A store has one [`PerThread`]; clones of the store share it. Each thread keeps, per
//! store and slot (a Redis deployment has one slot, a memcached pool one per node), the
//! connection its first request made, until the store drops it
//! ([`PerThread::discard`], after a timeout or a broken connection) or the store is gone.

use std::{
    any::Any,
    cell::RefCell,
    marker::PhantomData,
    rc::Rc,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
};

/// One thread's connection for one store and slot.
struct Entry {
    /// The store's number (see [`PerThread::id`]), and whether the store still exists.
    store: u64,
    alive: Weak<()>,
    slot: usize,
    /// Tells a connection from the one that replaced it.
    generation: u64,
    conn: Rc<dyn Any>,
}

thread_local! {
    static CONNECTIONS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// The next connection's generation.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// A store's connections of type `C`, one per thread and slot.
pub(crate) struct PerThread<C> {
    /// The store's number: each thread finds its connections by it.
    id: u64,
    /// Lives as long as the store: a thread drops the connections of stores gone.
    token: Arc<()>,
    conn: PhantomData<fn() -> C>,
}

/// A connection for one operation, and its generation.
pub(crate) struct Lease<C> {
    pub(crate) conn: C,
    pub(crate) generation: u64,
}

impl<C: Clone + 'static> PerThread<C> {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            token: Arc::new(()),
            conn: PhantomData,
        }
    }

    /// This thread's connection for `slot`, if it has one.
    pub(crate) fn cached(&self, slot: usize) -> Option<Lease<C>> {
        CONNECTIONS.with(|conns| {
            conns
                .borrow()
                .iter()
                .find(|e| e.store == self.id && e.slot == slot)
                .and_then(|e| {
                    Some(Lease {
                        conn: e.conn.downcast_ref::<C>()?.clone(),
                        generation: e.generation,
                    })
                })
        })
    }

    /// Keeps `conn` as this thread's connection for `slot`, unless another request of this
    /// thread made one meanwhile: the first one stays, and is returned.
    pub(crate) fn keep(&self, slot: usize, conn: C) -> Lease<C> {
        crate::observe::waited_for_connection();
        if let Some(lease) = self.cached(slot) {
            return lease;
        }
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        CONNECTIONS.with(|conns| {
            let mut conns = conns.borrow_mut();
            conns.retain(|e| e.alive.strong_count() > 0);
            conns.push(Entry {
                store: self.id,
                alive: Arc::downgrade(&self.token),
                slot,
                generation,
                conn: Rc::new(conn.clone()),
            });
        });
        Lease { conn, generation }
    }

    /// The generation of this thread's connection for `slot`, if it has one (without
    /// cloning the connection).
    #[cfg(feature = "redis")]
    pub(crate) fn generation(&self, slot: usize) -> Option<u64> {
        CONNECTIONS.with(|conns| {
            conns
                .borrow()
                .iter()
                .find(|e| e.store == self.id && e.slot == slot)
                .map(|e| e.generation)
        })
    }

    /// Drops this thread's connection for `slot` of `generation`: the next operation makes a
    /// new one. A newer connection is left alone.
    pub(crate) fn discard(&self, slot: usize, generation: u64) {
        CONNECTIONS.with(|conns| {
            conns
                .borrow_mut()
                .retain(|e| !(e.store == self.id && e.slot == slot && e.generation == generation));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_one_connection_per_store_and_slot_until_it_is_discarded() {
        let (one, other) = (PerThread::<u32>::new(), PerThread::<u32>::new());
        assert!(one.cached(0).is_none());
        let first = one.keep(0, 1).generation;
        assert_eq!(one.keep(0, 2).conn, 1, "the first connection stays");
        assert_eq!(one.cached(0).unwrap().generation, first);
        assert_eq!(one.keep(1, 3).conn, 3, "another slot");
        assert!(other.cached(0).is_none(), "another store");
        one.discard(0, first + 1_000);
        assert_eq!(
            one.cached(0).unwrap().generation,
            first,
            "a newer one stays"
        );
        one.discard(0, first);
        assert!(one.cached(0).is_none());
        assert_eq!(one.cached(1).unwrap().conn, 3);
        let one = Arc::new(one);
        let elsewhere = std::thread::spawn({
            let one = Arc::clone(&one);
            move || one.cached(1).is_none()
        })
        .join()
        .unwrap();
        assert!(elsewhere, "each thread has its own");
    }

    #[test]
    fn connections_of_stores_gone_are_dropped() {
        let gone = PerThread::<u32>::new();
        gone.keep(0, 1);
        drop(gone);
        let count = || CONNECTIONS.with(|c| c.borrow().len());
        let before = count();
        PerThread::<u32>::new().keep(0, 2);
        assert_eq!(count(), before, "the gone store's entry made room");
    }
}
