//! The slot of the last session loaded on each thread, so that the save of a request finds
//! it without asking the cache again.
//!
//! actix-web runs each request on one worker thread from start to end, so a request's save
//! runs on the thread that loaded its session, and usually no other load came in between.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use super::slot::Slot;
use crate::SessionId;

thread_local! {
    /// The store, the id and the slot of this thread's last load.
    static LAST: RefCell<Option<(u64, SessionId, Arc<Slot>)>> = const { RefCell::new(None) };
}

/// A memo, per thread, of the slot the last load of one store found.
///
/// It spares an update one cache lookup. Counted by callgrind (`bench/memory_ops.sh`,
/// `docs/bench/memory-ops.txt`), an update that finds its slot here costs about 1,200
/// instructions, one that asks the cache about 2,600: the memo saves about 1,400, 4% of a
/// `/counter` request (32,000). A slot found here may have left the cache since its load
/// (evicted, deleted): then it is dead, and the operation answers as if it were missing, as
/// a lookup would.
#[derive(Debug, Clone, Copy)]
pub(super) struct LastLoaded {
    /// Tells stores apart: each store built gets its own number; clones share it.
    store: u64,
}

impl LastLoaded {
    pub(super) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            store: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Remembers the slot a load of `id` found.
    pub(super) fn remember(self, id: &SessionId, slot: Arc<Slot>) {
        LAST.with(|last| *last.borrow_mut() = Some((self.store, *id, slot)));
    }

    /// The slot the last load of `id` on this thread found, if it was the last load of this
    /// store; it is forgotten then.
    pub(super) fn take(self, id: &SessionId) -> Option<Arc<Slot>> {
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((store, last_id, _)) if *store == self.store && last_id == id => {
                    last.take().map(|(_, _, slot)| slot)
                }
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::memory::slot::Fields;

    #[test]
    fn a_slot_is_found_once_by_its_store_and_id_only() {
        let (one, other) = (LastLoaded::new(), LastLoaded::new());
        let id = SessionId::generate();
        let slot = Arc::new(Slot::new(Fields::default(), Duration::from_secs(1), 1));
        one.remember(&id, Arc::clone(&slot));
        assert!(other.take(&id).is_none(), "another store");
        assert!(one.take(&SessionId::generate()).is_none(), "another id");
        assert!(one
            .take(&id)
            .is_some_and(|found| Arc::ptr_eq(&found, &slot)));
        assert!(one.take(&id).is_none(), "taken once");
    }
}
