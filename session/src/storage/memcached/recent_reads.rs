//! The items that recent loads read, with their CAS tokens, kept per thread, so that the
//! save of the same request can write with compare-and-swap at once instead of reading the
//! item again first.
//!
//! A save merges its changes onto the item as it is now. Without the memo it reads the
//! item (`mg` with its CAS token), merges, and writes if the token still matches: three
//! round-trips for a request that loads and saves. With it, the save merges onto what its
//! load read and writes with the load's token: two. If the item changed since (the token no
//! longer matches, or it is gone), memcached refuses the write and the save reads again as
//! before, so the memo can be stale or wrong without harm: a write with its token only
//! succeeds on the very item version the memo holds.
//!
//! Counted by callgrind (`bench/callgrind.py`, `docs/bench/callgrind.txt`), a `/counter`
//! request on memcached costs the server 75,722 instructions with the memo and 91,828
//! without; `/read`, which only remembers, 49,130 against 48,776. Under a memcached
//! answering 300 ms late, a `/counter` takes 600 ms instead of 900
//! (`tests/tests/memcached_nodes.rs`).
//!
//! actix-web runs each request on one worker thread from start to end, so a request's save
//! runs on the thread that loaded its session. Loads of other requests come in between
//! (32 concurrent clients on one worker): the memo holds the last [`CAPACITY`] reads.

use std::{
    cell::RefCell,
    collections::VecDeque,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::SessionId;

/// How many reads each thread remembers: more than the requests one worker has between a
/// load and its save under load (the oldest are forgotten first).
const CAPACITY: usize = 64;
/// The largest item a thread remembers: with [`CAPACITY`] reads, at most 1 MiB per thread.
/// Without a bound, a visitor who grew a session to memcached's 1 MiB limit could make each
/// worker hold 64 MiB. A larger item's save reads it again, as without the memo.
const MAX_VALUE_BYTES: usize = 16 * 1024;

struct Read {
    store: u64,
    id: SessionId,
    cas: u64,
    value: Vec<u8>,
}

thread_local! {
    static READS: RefCell<VecDeque<Read>> = const { RefCell::new(VecDeque::new()) };
}

/// One store's memo of recent reads; clones share it.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecentReads {
    /// Tells stores apart: a CAS token means something on its own server only.
    store: u64,
}

impl RecentReads {
    pub(super) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            store: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Remembers that session `id`'s item held `value` at token `cas`, if the value is at
    /// most [`MAX_VALUE_BYTES`] long (a larger one only forgets what was remembered of the
    /// session).
    pub(super) fn remember(self, id: SessionId, cas: u64, value: Vec<u8>) {
        READS.with(|reads| {
            let mut reads = reads.borrow_mut();
            reads.retain(|read| !(read.store == self.store && read.id == id));
            if value.len() > MAX_VALUE_BYTES {
                return;
            }
            if reads.len() >= CAPACITY {
                reads.pop_front();
            }
            reads.push_back(Read {
                store: self.store,
                id,
                cas,
                value,
            });
        });
    }

    /// What a load of session `id` read, with its token, if this thread remembers it; taken
    /// out (a save uses it once).
    pub(super) fn take(self, id: SessionId) -> Option<(u64, Vec<u8>)> {
        READS.with(|reads| {
            let mut reads = reads.borrow_mut();
            let at = reads
                .iter()
                .rposition(|read| read.store == self.store && read.id == id)?;
            reads.remove(at).map(|read| (read.cas, read.value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_taken_once_by_its_store_and_the_oldest_are_forgotten() {
        let (one, other) = (RecentReads::new(), RecentReads::new());
        let id = SessionId::generate();
        one.remember(id, 7, b"{}".to_vec());
        assert_eq!(other.take(id), None, "another store's");
        one.remember(id, 8, b"{\"a\":1}".to_vec());
        assert_eq!(one.take(id), Some((8, b"{\"a\":1}".to_vec())), "the latest");
        assert_eq!(one.take(id), None, "taken once");

        let first = SessionId::generate();
        one.remember(first, 1, Vec::new());
        for _ in 0..CAPACITY {
            one.remember(SessionId::generate(), 2, Vec::new());
        }
        assert_eq!(one.take(first), None, "forgotten");
        READS.with(|reads| assert_eq!(reads.borrow().len(), CAPACITY));
    }

    #[test]
    fn a_large_item_is_not_remembered_and_replaces_what_was() {
        let reads = RecentReads::new();
        let id = SessionId::generate();
        reads.remember(id, 1, b"{}".to_vec());
        reads.remember(id, 2, vec![b' '; MAX_VALUE_BYTES + 1]);
        assert_eq!(reads.take(id), None);
        reads.remember(id, 3, vec![b' '; MAX_VALUE_BYTES]);
        assert_eq!(reads.take(id).map(|(cas, _)| cas), Some(3));
    }
}
