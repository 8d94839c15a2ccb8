//! The near cache: sessions this process read recently, kept in its memory and dropped as
//! soon as Redis says that someone changed them (server-assisted client-side caching).
//!
//! Every connection of the store turns `CLIENT TRACKING` on over RESP3. Redis then
//! remembers the keys each connection read, and when one of them changes (a save by
//! another app instance, a `DEL`, an expiry, an eviction) it pushes an invalidation
//! message on that connection, which drops the key here. A connection that is lost takes
//! its stream of invalidations with it: the whole cache is dropped then.
//!
//! Each worker thread has its own connection, and reads that connection's invalidations
//! only when its runtime runs. So each cached copy of a session belongs to the connection
//! that read it, and a thread is served only the copies of its own live connection: a
//! worker that is blocked (a synchronous password hash) or gone (its runtime ended, its
//! connection dropped without a word) cannot leave another worker serving a session it
//! alone would hear about. Each worker reads a session once before it is served from
//! memory.
//!
//! Written here rather than with redis-rs's own `cache-aio` layer, because that one stores
//! a reply after its caller wakes up, while it handles invalidations as they arrive: an
//! invalidation that comes right behind the reply it invalidates is handled first, and the
//! stale reply then stays cached until its client-side TTL (30 minutes by default). This
//! one takes a [`Ticket`] before each read and keeps the answer only if no invalidation of
//! the key (or flush) came since; and it holds decoded sessions, not redis-rs values that
//! each hit would decode again.

use std::{
    hash::BuildHasher,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use deadpool_redis::redis::{PushInfo, PushKind, Value};
use moka::sync::Cache;

use crate::storage::SessionMap;

/// The near cache's settings, for
/// [`RedisStoreBuilder::near_cache`](super::RedisStoreBuilder::near_cache).
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::storage::{NearCache, RedisStore};
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .near_cache(
///         NearCache::new()
///             .max_bytes(16 * 1024 * 1024)
///             .max_age(Duration::from_secs(30)),
///     )
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct NearCache {
    max_bytes: u64,
    max_age: Duration,
}

impl Default for NearCache {
    fn default() -> Self {
        Self::new()
    }
}

impl NearCache {
    /// 64 MiB of sessions at most, each kept a minute at most.
    ///
    /// ```
    /// use actix_kv_session::storage::NearCache;
    ///
    /// assert_eq!(NearCache::new(), NearCache::default());
    /// ```
    pub fn new() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_age: Duration::from_secs(60),
        }
    }

    /// How much memory the cached sessions may take (their keys, values and bookkeeping,
    /// estimated); past it, the least recently used are dropped. Default 64 MiB.
    ///
    /// ```
    /// use actix_kv_session::storage::NearCache;
    ///
    /// let small = NearCache::new().max_bytes(1024 * 1024);
    /// assert_ne!(small, NearCache::new());
    /// ```
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long a session stays cached at most, however often it is read. Invalidations
    /// keep the cache coherent while the connections to Redis live; this bounds how stale a
    /// session can be when they cannot (a network path that went silent without closing
    /// the connection, which the store notices only at its next command). Default 1
    /// minute.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::NearCache;
    ///
    /// let cautious = NearCache::new().max_age(Duration::from_secs(5));
    /// assert_ne!(cautious, NearCache::new());
    /// ```
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }
}

/// The cached copies of one session, each read by one connection.
struct Cached {
    copies: Vec<Copy>,
}

/// A session as one connection read it, and when Redis expires it.
struct Copy {
    /// The generation of the connection that read it (see `per_thread.rs`).
    reader: u64,
    deadline: Instant,
    /// Shared: a keep by another connection carries this copy over without copying it.
    data: Arc<SessionMap>,
}

/// The longest [`NearCache::max_age`] taken: moka refuses a time to live over 1,000 years.
const LONGEST_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How many invalidation counters there are; keys share them by hash.
const BUCKETS: usize = 1024;

type Hasher = foldhash::fast::RandomState;

/// The cache of one store (its clones share it).
pub(in crate::storage) struct Near {
    cache: Cache<String, Arc<Cached>, Hasher>,
    /// Bumped by every invalidation of a key of the bucket, and by every flush.
    generations: Box<[AtomicU64]>,
    hasher: Hasher,
}

/// Taken before a read: the answer is kept only if nothing invalidated its key since.
pub(super) struct Ticket {
    bucket: usize,
    generation: u64,
    /// When the read was sent: Redis's `PTTL` counts from a moment after it.
    sent: Instant,
}

impl Near {
    pub(super) fn new(settings: NearCache) -> Arc<Self> {
        let hasher = Hasher::default();
        let cache = Cache::builder()
            .max_capacity(settings.max_bytes)
            .weigher(|key: &String, cached: &Arc<Cached>| weight(key, cached))
            .time_to_live(settings.max_age.min(LONGEST_AGE))
            .build_with_hasher(hasher.clone());
        Arc::new(Self {
            cache,
            generations: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            hasher,
        })
    }

    /// The invalidation counter of `key`.
    fn bucket(&self, key: &[u8]) -> usize {
        // The modulo keeps the index below BUCKETS: the cast cannot truncate it.
        #[allow(clippy::cast_possible_truncation)]
        let index = (self.hasher.hash_one(key) % BUCKETS as u64) as usize;
        index
    }

    /// The session at `key` as the connection of generation `reader` read it, if cached and
    /// not past its expiry in Redis.
    pub(super) fn get(&self, key: &str, reader: u64) -> Option<SessionMap> {
        let cached = self.cache.get(key)?;
        let copy = cached.copies.iter().find(|copy| copy.reader == reader)?;
        if Instant::now() < copy.deadline {
            crate::observe::near_cache(true);
            Some(SessionMap::clone(&copy.data))
        } else {
            None
        }
    }

    /// Taken before reading `key` from Redis, to keep what the read finds.
    pub(super) fn ticket(&self, key: &str) -> Ticket {
        crate::observe::near_cache(false);
        let bucket = self.bucket(key.as_bytes());
        Ticket {
            bucket,
            generation: self.generations[bucket].load(Ordering::SeqCst),
            sent: Instant::now(),
        }
    }

    /// Keeps what a read of `key` on the connection of generation `reader` found, `data`
    /// with `pttl` milliseconds to live in Redis (`PTTL`'s answer), unless the key was
    /// invalidated since `ticket` was taken. The copies other connections read stay.
    pub(super) fn keep(
        &self,
        key: &str,
        reader: u64,
        data: &SessionMap,
        pttl: i64,
        ticket: &Ticket,
    ) {
        // -2: gone meanwhile; -1: no expiry, which no session of this store has.
        let Ok(millis) = u64::try_from(pttl) else {
            return;
        };
        let now = Instant::now();
        let generation = &self.generations[ticket.bucket];
        if generation.load(Ordering::SeqCst) != ticket.generation {
            return;
        }
        let mut copies: Vec<Copy> = match self.cache.get(key) {
            Some(cached) => cached
                .copies
                .iter()
                .filter(|copy| copy.reader != reader && now < copy.deadline)
                .map(|copy| Copy {
                    reader: copy.reader,
                    deadline: copy.deadline,
                    data: Arc::clone(&copy.data),
                })
                .collect(),
            None => Vec::with_capacity(1),
        };
        copies.push(Copy {
            reader,
            deadline: ticket.sent + Duration::from_millis(millis),
            data: Arc::new(data.clone()),
        });
        self.cache
            .insert(key.to_owned(), Arc::new(Cached { copies }));
        // An invalidation handled between the check above and the insert found nothing to
        // drop (or dropped what the insert then put back): drop what was just inserted. One
        // handled after this check drops it itself.
        if generation.load(Ordering::SeqCst) != ticket.generation {
            self.cache.invalidate(key);
        }
    }

    /// Drops `key`: Redis said it changed, or this process is about to change it.
    pub(super) fn forget(&self, key: &[u8]) {
        self.generations[self.bucket(key)].fetch_add(1, Ordering::SeqCst);
        if let Ok(key) = std::str::from_utf8(key) {
            self.cache.invalidate(key);
        }
    }

    /// Drops everything: the stream of invalidations of a connection was lost.
    pub(super) fn flush(&self) {
        for generation in &*self.generations {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        self.cache.invalidate_all();
        crate::observe::near_cache_flushed();
    }

    /// A push message from one of the store's connections.
    pub(super) fn on_push(&self, push: &PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            self.forget(key);
                        }
                    }
                }
                // After FLUSHDB or FLUSHALL, Redis names no key.
                _ => self.flush(),
            },
            PushKind::Disconnection => self.flush(),
            _ => {}
        }
    }

    /// How many sessions are cached (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

/// What a cached session counts against [`NearCache::max_bytes`]: per copy, its keys and
/// values and about 100 bytes per key (two `String`s, the map's slot) and 200 of the map
/// and the copy; per session, its key and about 250 bytes of the cache's entry. Estimated
/// from the resident memory of 150,000 cached sessions of three small keys (about 930 bytes
/// each, against 460 counted by a first estimate).
fn weight(key: &str, cached: &Cached) -> u32 {
    let copies: usize = cached
        .copies
        .iter()
        .map(|copy| {
            copy.data
                .iter()
                .map(|(k, v)| k.len() + v.len() + 100)
                .sum::<usize>()
                + 200
        })
        .sum();
    u32::try_from(copies + key.len() + 250).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionMap {
        SessionMap::from([("foo".to_owned(), "1".to_owned())])
    }

    #[test]
    fn a_read_is_kept_unless_its_key_was_invalidated_meanwhile() {
        let near = Near::new(NearCache::new());
        let ticket = near.ticket("session:a");
        near.keep("session:a", 1, &session(), 60_000, &ticket);
        assert_eq!(near.get("session:a", 1), Some(session()));

        // The invalidation arrives before the reader stores what it read.
        let ticket = near.ticket("session:b");
        near.forget(b"session:b");
        near.keep("session:b", 1, &session(), 60_000, &ticket);
        assert_eq!(near.get("session:b", 1), None);

        // A flush voids every ticket.
        let ticket = near.ticket("session:c");
        near.flush();
        near.keep("session:c", 1, &session(), 60_000, &ticket);
        assert_eq!(near.get("session:c", 1), None);
        assert_eq!(near.get("session:a", 1), None, "flushed");
    }

    #[test]
    fn what_redis_expires_is_not_served() {
        let near = Near::new(NearCache::new());
        let ticket = near.ticket("session:a");
        near.keep("session:a", 1, &session(), 0, &ticket);
        assert_eq!(near.get("session:a", 1), None);
        let ticket = near.ticket("session:a");
        near.keep("session:a", 1, &session(), -2, &ticket);
        assert_eq!(near.get("session:a", 1), None);
    }

    #[test]
    fn invalidation_messages_drop_their_keys_and_a_lost_connection_drops_all() {
        let near = Near::new(NearCache::new());
        for key in ["session:a", "session:b", "session:c"] {
            let ticket = near.ticket(key);
            near.keep(key, 1, &session(), 60_000, &ticket);
        }
        near.on_push(&PushInfo {
            kind: PushKind::Invalidate,
            data: vec![Value::Array(vec![Value::BulkString(b"session:a".to_vec())])],
        });
        assert_eq!(near.get("session:a", 1), None);
        assert_eq!(near.get("session:b", 1), Some(session()));
        near.on_push(&PushInfo {
            kind: PushKind::Disconnection,
            data: Vec::new(),
        });
        assert_eq!(near.get("session:b", 1), None);
        assert_eq!(near.len(), 0);
    }

    #[test]
    fn a_connection_is_served_only_what_it_read() {
        let near = Near::new(NearCache::new());
        let ticket = near.ticket("session:a");
        near.keep("session:a", 1, &session(), 60_000, &ticket);
        assert_eq!(near.get("session:a", 2), None, "read by another connection");
        let other = SessionMap::from([("foo".to_owned(), "2".to_owned())]);
        let ticket = near.ticket("session:a");
        near.keep("session:a", 2, &other, 60_000, &ticket);
        assert_eq!(near.get("session:a", 1), Some(session()));
        assert_eq!(near.get("session:a", 2), Some(other));
        // An invalidation drops every connection's copy.
        near.forget(b"session:a");
        assert_eq!(near.get("session:a", 1), None);
        assert_eq!(near.get("session:a", 2), None);
    }

    #[test]
    fn an_expiry_counts_from_when_the_read_was_sent() {
        let near = Near::new(NearCache::new());
        let ticket = near.ticket("session:a");
        std::thread::sleep(Duration::from_millis(60));
        // The answer took 60 ms: 50 ms to live when Redis answered is past now.
        near.keep("session:a", 1, &session(), 50, &ticket);
        assert_eq!(near.get("session:a", 1), None);
    }

    #[test]
    fn a_max_age_past_what_moka_takes_is_cut_not_a_panic() {
        let near = Near::new(NearCache::new().max_age(Duration::MAX));
        let ticket = near.ticket("session:a");
        near.keep("session:a", 1, &session(), 60_000, &ticket);
        assert_eq!(near.get("session:a", 1), Some(session()));
    }

    #[test]
    fn the_cache_is_bounded_in_bytes() {
        let near = Near::new(NearCache::new().max_bytes(100 * 1024));
        for i in 0..10_000 {
            let key = format!("session:{i:032x}");
            let ticket = near.ticket(&key);
            near.keep(&key, 1, &session(), 60_000, &ticket);
        }
        // About 570 bytes each counted: no more than 100 KiB of them.
        assert!(near.len() <= 100 * 1024 / 570 + 1, "{} kept", near.len());
    }
}
