//! The in-memory store: sessions in shards, each under its own lock, in least recently used
//! order.

mod fields;
mod shard;

use std::{
    fmt,
    hash::BuildHasher,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use self::{
    fields::Fields,
    shard::{Entry, Shard},
};
use super::{moved_marker_ttl, ChangeSet, SaveOutcome, SessionMap, SessionStore};
use crate::{error::StoreError, id::PackedId, SessionId};

/// How many sessions a [`MemoryStore`] keeps by default before it evicts the least
/// recently used ones.
const DEFAULT_MAX_SESSIONS: u64 = 100_000;
/// How much memory a [`MemoryStore`]'s sessions may take by default.
const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The largest session a [`MemoryStore`] keeps by default, as memcached's default item limit.
const DEFAULT_MAX_SESSION_BYTES: usize = 1024 * 1024;

/// The most shards a store has: enough that requests on different sessions seldom wait for
/// one another.
const MAX_SHARDS: u64 = 64;
/// The fewest sessions a shard holds at the store's bound, so that each shard's least
/// recently used session is about as old as the whole store's: a small store has fewer
/// shards (one, below 2,048 sessions).
const SESSIONS_PER_SHARD: u64 = 1024;

/// The hasher of the shards and their indexes: ids are random, so a fast one is enough.
type Hasher = foldhash::fast::RandomState;

/// Sessions kept in this process's memory.
///
/// For development, tests and single-process deployments: sessions are lost when the
/// process stops and are not shared between processes. Clones share one store, so build
/// it once, outside the `HttpServer` factory, and clone it into every worker:
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, SessionMiddleware};
/// use actix_web::{web, App, HttpServer};
///
/// let store = MemoryStore::builder()
///     .max_sessions(10_000)
///     .max_bytes(64 * 1024 * 1024)
///     .build();
/// let _server = HttpServer::new(move || {
///     App::new()
///         .wrap(SessionMiddleware::new(store.clone()))
///         .route("/", web::get().to(|| async { "hello" }))
/// });
/// ```
///
/// The store is bounded in sessions and in bytes
/// ([`max_sessions`](MemoryStoreBuilder::max_sessions),
/// [`max_bytes`](MemoryStoreBuilder::max_bytes)): past either bound it evicts the least
/// recently used sessions, so a flood of new visitors cannot exhaust the process's memory,
/// and a session just created is always kept (it is the most recently used). A single
/// session larger than [`max_session_bytes`](MemoryStoreBuilder::max_session_bytes) is
/// refused with [`StoreError::TooLarge`]. Each session expires one time to live after its
/// last save or touch; new sessions sweep the expired ones out as they arrive.
///
/// Sessions sit in shards (up to 64, by the hash of their id), each a hash table, a list in
/// least recently used order and a lock: an operation locks its session's shard, so an
/// update merges its changes atomically, in place, and requests on sessions of other
/// shards do not wait for it. Each shard evicts its own least recently used sessions first,
/// then the others' in turn: with a thousand sessions or more per shard at the bound, they
/// are about the oldest of the whole store (a small store has fewer shards, one below 2,048
/// sessions). With few sessions per shard (a byte bound filled by large sessions), a large
/// new session can evict a recently used one of its own shard before older ones elsewhere.
///
/// A session is compact: its id in 17 bytes, its keys and values in one string, no lock,
/// reference count or queue node of its own. Measured with
/// `cargo run --release -p bench --bin memory -- 1000000`, a million one-key sessions take
/// 141 bytes each. On moka, the store took 611: moka's own entry (its key, entry, queue and
/// timer nodes, hash table) took 386 of them, more than this whole store does. Counted by
/// callgrind (`bench/memory_ops.sh`, `docs/bench/memory-ops.txt`), a load costs about 1,600
/// instructions and an update about 1,400 (moka's own atomic update alone, about 11,000).
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Padded]>,
    /// Picks a session's shard.
    hasher: Hasher,
    /// What the stored sessions weigh together, against `max_bytes`.
    weighed: AtomicU64,
    max_bytes: u64,
    weigher: Weigher,
    max_session_bytes: usize,
    /// The instant deadlines count from.
    epoch: Instant,
    /// Held while evicting from other shards than the written session's: two writers over
    /// the bound at once would otherwise each evict the other's new session.
    trimming: Mutex<()>,
}

/// A shard's lock on cache lines of its own, so that threads locking neighbouring shards
/// do not slow each other down.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// What a session counts against the store's bound in bytes, so that one bound keeps both
/// of the store's bounds: every session weighs at least `max_bytes / max_sessions`, so no
/// more than `max_sessions` fit, and otherwise its memory, so no more than `max_bytes` of
/// them fit. No session weighs more than the whole bound: one that did would evict the
/// others and still be over it.
#[derive(Debug, Clone, Copy)]
struct Weigher {
    floor: u32,
    ceiling: u32,
}

impl Weigher {
    /// What a session costs beyond its record's heap memory: its slot and its place in its
    /// shard's index. Measured with `cargo run --release -p bench --bin memory -- 1000000`:
    /// 1,000,000 one-key sessions take 141 bytes each, of which the record's heap is 32.
    const SESSION_OVERHEAD: usize = 109;

    fn new(max_bytes: u64, max_sessions: u64) -> Self {
        let floor = max_bytes.div_ceil(max_sessions.max(1));
        let ceiling = u32::try_from(max_bytes).unwrap_or(u32::MAX).max(1);
        Self {
            floor: u32::try_from(floor).unwrap_or(u32::MAX).min(ceiling),
            ceiling,
        }
    }

    fn weigh(self, fields: &Fields) -> u32 {
        let bytes = Self::SESSION_OVERHEAD + fields.heap_bytes();
        u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(self.floor, self.ceiling)
    }
}

/// Builds a [`MemoryStore`].
///
/// ```
/// use actix_kv_session::storage::MemoryStore;
///
/// let store = MemoryStore::builder()
///     .max_sessions(10_000)
///     .max_bytes(64 * 1024 * 1024)
///     .max_session_bytes(64 * 1024)
///     .build();
/// assert_eq!(store.session_count(), 0);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    sessions: u64,
    bytes: u64,
    session_bytes: usize,
}

impl MemoryStoreBuilder {
    /// The most sessions the store keeps (100,000 by default). Past it, the least recently
    /// used sessions are evicted, so memory stays bounded whatever clients do.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{MemoryStore, SessionMap, SessionStore},
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store = MemoryStore::builder().max_sessions(2).build();
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// for _ in 0..3 {
    ///     store.create(&SessionId::generate(), &data, Duration::from_secs(60)).await?;
    /// }
    /// store.run_pending_tasks();
    /// assert_eq!(store.session_count(), 2); // the least recently used one is gone
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    pub fn max_sessions(mut self, max_sessions: u64) -> Self {
        self.sessions = max_sessions;
        self
    }

    /// The most memory the store's sessions may take, in bytes (256 MiB by default): their
    /// keys and values, and about 110 bytes of bookkeeping each. Past it, the least recently
    /// used sessions are evicted. A session heavier than the whole bound counts as the whole
    /// bound: it is kept, and evicts the others.
    ///
    /// ```
    /// use actix_kv_session::storage::MemoryStore;
    ///
    /// // A one-key session takes about 140 bytes: room for about 480,000 of them (if
    /// // `max_sessions` allows as many).
    /// let store = MemoryStore::builder().max_bytes(64 * 1024 * 1024).build();
    /// ```
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.bytes = max_bytes;
        self
    }

    /// The largest session the store keeps, counted as the length of its keys and JSON
    /// values (1 MiB by default, memcached's default item limit). A save that would make a
    /// session larger is refused with [`StoreError::TooLarge`] (a 500, logged) and leaves the
    /// stored session as it was.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{MemoryStore, SessionMap, SessionStore},
    ///     SessionId, StoreError,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store = MemoryStore::builder().max_session_bytes(1024).build();
    /// let big = SessionMap::from([("note".to_owned(), format!("\"{}\"", "x".repeat(2000)))]);
    /// let refused = store.create(&SessionId::generate(), &big, Duration::from_secs(60)).await;
    /// assert!(matches!(refused, Err(StoreError::TooLarge { limit: Some(1024), .. })));
    /// # });
    /// ```
    pub fn max_session_bytes(mut self, max_session_bytes: usize) -> Self {
        self.session_bytes = max_session_bytes;
        self
    }

    /// Builds the store.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionMiddleware};
    ///
    /// let store = MemoryStore::builder().max_sessions(10_000).build();
    /// let middleware = SessionMiddleware::new(store.clone()); // clones share the sessions
    /// ```
    #[must_use]
    pub fn build(self) -> MemoryStore {
        let sessions = self.sessions.max(1);
        // A session weighs at most `u32::MAX` (see `Weigher`): a byte bound above that many
        // per session would let more than `max_sessions` fit. Cut to it, the bound in
        // sessions holds, and the one in bytes is past what that many sessions can take.
        let bytes = self.bytes.min(sessions.saturating_mul(u64::from(u32::MAX)));
        // A small store, by either bound, has fewer shards (see `SESSIONS_PER_SHARD`).
        let fit = sessions.min(bytes / Weigher::SESSION_OVERHEAD as u64);
        let shards = (fit / SESSIONS_PER_SHARD).clamp(1, MAX_SHARDS);
        let shards = 1 << shards.ilog2();
        let hasher = Hasher::default();
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| Padded(Mutex::new(Shard::new(hasher.clone()))))
                    .collect(),
                hasher,
                weighed: AtomicU64::new(0),
                max_bytes: bytes,
                weigher: Weigher::new(bytes, sessions),
                trimming: Mutex::new(()),
                max_session_bytes: self.session_bytes,
                epoch: Instant::now(),
            }),
        }
    }
}

impl MemoryStore {
    /// A builder, to set the bounds.
    ///
    /// ```
    /// use actix_kv_session::storage::MemoryStore;
    ///
    /// let store = MemoryStore::builder().max_sessions(10_000).build();
    /// ```
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            sessions: DEFAULT_MAX_SESSIONS,
            bytes: DEFAULT_MAX_BYTES,
            session_bytes: DEFAULT_MAX_SESSION_BYTES,
        }
    }

    /// How many sessions the store holds (and markers of renewed ones), expired ones not
    /// yet swept out included: call [`run_pending_tasks`](Self::run_pending_tasks) first to
    /// count only the live ones.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
    /// use actix_web::{test, web, App};
    ///
    /// async fn login(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("user", "ada")?;
    ///     Ok("welcome")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store = MemoryStore::default();
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(store.clone()))
    ///         .route("/login", web::post().to(login)),
    /// )
    /// .await;
    /// test::call_service(&app, test::TestRequest::post().uri("/login").to_request()).await;
    /// assert_eq!(store.session_count(), 1);
    /// # });
    /// ```
    #[must_use]
    pub fn session_count(&self) -> u64 {
        let inner = &*self.inner;
        (0..inner.shards.len())
            .map(|at| inner.lock(at).len() as u64)
            .sum()
    }

    /// What the stored sessions count against [`max_bytes`](MemoryStoreBuilder::max_bytes):
    /// their memory, or `max_bytes / max_sessions` for those smaller than that. Expired
    /// sessions count until they are swept out, as for
    /// [`session_count`](Self::session_count).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{MemoryStore, SessionMap, SessionStore},
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store = MemoryStore::builder().max_bytes(1_000_000).max_sessions(1_000).build();
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&SessionId::generate(), &data, Duration::from_secs(60)).await?;
    /// // A small session counts as `max_bytes / max_sessions`.
    /// assert_eq!(store.weighted_bytes(), 1_000);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    #[must_use]
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.weighed.load(Ordering::Relaxed)
    }

    /// Removes every expired session now. Without it, new sessions sweep the expired ones
    /// out a few at a time, and any operation on an expired session removes it.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{MemoryStore, SessionMap, SessionStore},
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store = MemoryStore::default();
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&SessionId::generate(), &data, Duration::from_millis(1)).await?;
    /// std::thread::sleep(Duration::from_millis(5));
    /// assert_eq!(store.session_count(), 1); // expired, not yet swept out
    /// store.run_pending_tasks();
    /// assert_eq!(store.session_count(), 0);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    pub fn run_pending_tasks(&self) {
        let inner = &*self.inner;
        let now = inner.now();
        for at in 0..inner.shards.len() {
            let freed = inner.lock(at).sweep(now, usize::MAX);
            inner.weighed.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Refuses changes that would make a session larger than the size limit.
    fn check_size_after(&self, fields: &Fields, changes: &ChangeSet) -> Result<(), StoreError> {
        // Spares counting the session's size when it plainly fits: its text holds more than
        // its keys and values, and nothing grows it more than the changes' keys and values.
        let added: usize = changes
            .changes()
            .iter()
            .map(|change| change.key().len() + change.value().map_or(0, str::len))
            .sum();
        if fields.size_bound().saturating_add(added) <= self.inner.max_session_bytes {
            return Ok(());
        }
        self.check_size(fields.size_after(changes))
    }

    /// Refuses a session over the size limit.
    fn check_size(&self, size: usize) -> Result<(), StoreError> {
        let limit = self.inner.max_session_bytes;
        if size > limit {
            return Err(StoreError::TooLarge {
                size,
                limit: Some(limit),
            });
        }
        Ok(())
    }
}

impl Inner {
    /// Microseconds since the store was built.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The deadline of a session written at `now` to live `ttl`.
    fn deadline(now: u64, ttl: Duration) -> u64 {
        now.saturating_add(u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX))
    }

    /// The shard of a session.
    fn shard_of(&self, id: &PackedId) -> usize {
        // Bits the shard's own table does not use to place the id: its low bits pick the
        // bucket, its top seven tell ids in a bucket group apart.
        let hash = self.hasher.hash_one(id);
        (hash >> 32) as usize & (self.shards.len() - 1)
    }

    fn lock(&self, at: usize) -> MutexGuard<'_, Shard> {
        // A shard's state is consistent between its methods: none panics halfway.
        self.shards[at]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot of a live session (or marker) `id`; an expired one is removed.
    fn find(&self, shard: &mut Shard, id: &PackedId, now: u64) -> Option<u32> {
        let (slot, expired) = shard.find(id, now);
        self.weighed
            .fetch_sub(u64::from(expired), Ordering::Relaxed);
        slot
    }

    fn insert(&self, shard: &mut Shard, entry: Entry) -> u32 {
        self.weighed
            .fetch_add(u64::from(entry.weight), Ordering::Relaxed);
        shard.insert(entry)
    }

    fn remove(&self, shard: &mut Shard, slot: u32) {
        let weight = shard.remove(slot).weight;
        self.weighed.fetch_sub(u64::from(weight), Ordering::Relaxed);
    }

    /// Sets the weight of `entry`; true when it grew.
    fn reweigh(&self, entry: &mut Entry, weight: u32) -> bool {
        let old = std::mem::replace(&mut entry.weight, weight);
        if weight > old {
            self.weighed
                .fetch_add(u64::from(weight - old), Ordering::Relaxed);
        } else {
            self.weighed
                .fetch_sub(u64::from(old - weight), Ordering::Relaxed);
        }
        weight > old
    }

    fn over_bound(&self) -> bool {
        self.weighed.load(Ordering::Relaxed) > self.max_bytes
    }

    /// Evicts least recently used sessions until the store is within its bound, never
    /// `keep` (the session just written, in the locked `shard`): first from `shard`, then,
    /// if it holds nothing else, one at a time from each of the others in turn.
    fn trim(&self, mut shard: MutexGuard<'_, Shard>, at: usize, keep: u32) {
        while self.over_bound() {
            let Some(oldest) = shard.oldest_but(keep) else {
                break;
            };
            self.remove(&mut shard, oldest);
        }
        drop(shard);
        if !self.over_bound() {
            return;
        }
        // One writer at a time past here, each checking the bound again under the lock of
        // the shard it evicts from: a writer that finds the store within its bound, thanks
        // to another's eviction, stops.
        let _trimming = self
            .trimming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let others = || (1..self.shards.len()).map(|k| (at + k) % self.shards.len());
        while self.over_bound() {
            let mut evicted = false;
            for other in others() {
                let mut shard = self.lock(other);
                if !self.over_bound() {
                    return;
                }
                if let Some(oldest) = shard.oldest() {
                    self.remove(&mut shard, oldest);
                    evicted = true;
                }
                if !self.over_bound() {
                    return;
                }
            }
            if !evicted {
                return;
            }
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.session_count())
            .field("weighted_bytes", &self.weighted_bytes())
            .field("max_bytes", &self.inner.max_bytes)
            .field("max_session_bytes", &self.inner.max_session_bytes)
            .finish_non_exhaustive()
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        let inner = &*self.inner;
        let (id, now) = (PackedId::from(id), inner.now());
        let mut shard = inner.lock(inner.shard_of(&id));
        let Some(slot) = inner.find(&mut shard, &id, now) else {
            return Ok(None);
        };
        let entry = shard.entry(slot);
        // The marker of a renewed session stays, for the requests still in flight.
        if entry.moved {
            return Ok(None);
        }
        let map = entry.fields.to_map();
        shard.touch(slot);
        Ok(Some(map))
    }

    async fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let fields = Fields::from_map(data);
        self.check_size(fields.size())?;
        let inner = &*self.inner;
        let weight = inner.weigher.weigh(&fields);
        let (id, now) = (PackedId::from(id), inner.now());
        let at = inner.shard_of(&id);
        let mut shard = inner.lock(at);
        let swept = shard.sweep_step(now);
        inner.weighed.fetch_sub(swept, Ordering::Relaxed);
        if inner.find(&mut shard, &id, now).is_some() {
            return Err(StoreError::IdInUse);
        }
        let entry = Entry::new(id, fields, Inner::deadline(now, ttl), weight);
        let slot = inner.insert(&mut shard, entry);
        inner.trim(shard, at, slot);
        Ok(())
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        let inner = &*self.inner;
        let (id, now) = (PackedId::from(id), inner.now());
        let at = inner.shard_of(&id);
        let mut shard = inner.lock(at);
        let Some(slot) = inner.find(&mut shard, &id, now) else {
            return Ok(SaveOutcome::Gone);
        };
        let entry = shard.entry_mut(slot);
        if entry.moved {
            return Ok(SaveOutcome::Moved);
        }
        if changes.conflicts_with(&entry.fields) {
            return Ok(SaveOutcome::Conflict);
        }
        self.check_size_after(&entry.fields, changes)?;
        changes.apply_to(&mut entry.fields);
        if entry.fields.is_empty() {
            inner.remove(&mut shard, slot);
            return Ok(SaveOutcome::Emptied);
        }
        entry.deadline = Inner::deadline(now, changes.ttl());
        let grew = inner.reweigh(entry, inner.weigher.weigh(&entry.fields));
        shard.touch(slot);
        if grew {
            inner.trim(shard, at, slot);
        }
        Ok(SaveOutcome::Saved)
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let inner = &*self.inner;
        let (from, to, now) = (PackedId::from(from), PackedId::from(to), inner.now());
        let (from_at, to_at) = (inner.shard_of(&from), inner.shard_of(&to));
        // Both shards locked, in their order, so that the move is atomic: no update of the
        // old id slips in between the copy and the marker, and a failed move leaves all as
        // it was.
        let (mut from_shard, mut to_shard) = match from_at.cmp(&to_at) {
            std::cmp::Ordering::Equal => (inner.lock(from_at), None),
            std::cmp::Ordering::Less => {
                let first = inner.lock(from_at);
                (first, Some(inner.lock(to_at)))
            }
            std::cmp::Ordering::Greater => {
                let first = inner.lock(to_at);
                (inner.lock(from_at), Some(first))
            }
        };
        let Some(from_slot) = inner.find(&mut from_shard, &from, now) else {
            return Ok(SaveOutcome::Gone);
        };
        let entry = from_shard.entry(from_slot);
        if entry.moved {
            return Ok(SaveOutcome::Moved);
        }
        if changes.conflicts_with(&entry.fields) {
            return Ok(SaveOutcome::Conflict);
        }
        self.check_size_after(&entry.fields, changes)?;
        let mut merged = entry.fields.clone();
        changes.apply_to(&mut merged);
        if merged.is_empty() {
            inner.remove(&mut from_shard, from_slot);
            return Ok(SaveOutcome::Emptied);
        }
        let target = match to_shard.as_deref_mut() {
            Some(shard) => shard,
            None => &mut *from_shard,
        };
        if inner.find(target, &to, now).is_some() {
            return Err(StoreError::IdInUse);
        }
        let weight = inner.weigher.weigh(&merged);
        let moved = Entry::new(to, merged, Inner::deadline(now, changes.ttl()), weight);
        let to_slot = inner.insert(target, moved);
        // From here on no request may write to the old id: it is the marker.
        let marker = from_shard.entry_mut(from_slot);
        marker.fields = Fields::default();
        marker.moved = true;
        marker.deadline = Inner::deadline(now, moved_marker_ttl(changes.ttl()));
        inner.reweigh(marker, inner.weigher.weigh(&Fields::default()));
        match to_shard {
            Some(to_shard) => {
                drop(from_shard);
                inner.trim(to_shard, to_at, to_slot);
            }
            None => inner.trim(from_shard, from_at, to_slot),
        }
        Ok(SaveOutcome::Saved)
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let (id, now) = (PackedId::from(id), inner.now());
        let mut shard = inner.lock(inner.shard_of(&id));
        let Some(slot) = inner.find(&mut shard, &id, now) else {
            return Ok(false);
        };
        let entry = shard.entry_mut(slot);
        if entry.moved {
            return Ok(false);
        }
        entry.deadline = Inner::deadline(now, ttl);
        shard.touch(slot);
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let (id, now) = (PackedId::from(id), inner.now());
        let mut shard = inner.lock(inner.shard_of(&id));
        if let Some(slot) = inner.find(&mut shard, &id, now) {
            inner.remove(&mut shard, slot);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{ConflictPolicy, KeyChange};

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        actix_web::rt::System::new().block_on(future)
    }

    fn data(value: &str) -> SessionMap {
        SessionMap::from([("foo".to_owned(), value.to_owned())])
    }

    fn set(value: &str, ttl: Duration) -> ChangeSet {
        let change = KeyChange::new("foo".into(), Some(value.into()), None);
        ChangeSet::new(vec![change], ConflictPolicy::LastWriteWins, ttl)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_store_has_fewer_shards_the_fewer_sessions_it_holds() {
        let shards = |builder: MemoryStoreBuilder| builder.build().inner.shards.len();
        assert_eq!(shards(MemoryStore::builder()), 64);
        assert_eq!(shards(MemoryStore::builder().max_sessions(20_000)), 16);
        assert_eq!(shards(MemoryStore::builder().max_sessions(2_047)), 1);
        // A million bytes hold some nine thousand small sessions.
        assert_eq!(shards(MemoryStore::builder().max_bytes(1_000_000)), 8);
        assert_eq!(shards(MemoryStore::builder().max_sessions(0)), 1);
    }

    /// Each shard evicts its own least recently used sessions: the store holds its bound,
    /// the newest sessions stay, and so does one used now and then.
    #[test]
    fn a_store_of_many_shards_keeps_its_bound_its_newest_and_its_regulars() {
        run(async {
            let store = MemoryStore::builder().max_sessions(20_000).build();
            assert_eq!(store.inner.shards.len(), 16);
            let regular = SessionId::generate();
            store.create(&regular, &data("1"), HOUR).await.unwrap();
            let mut ids = Vec::new();
            for i in 0..60_000 {
                let id = SessionId::generate();
                store.create(&id, &data("1"), HOUR).await.unwrap();
                ids.push(id);
                if i % 1_000 == 0 {
                    assert!(store.load(&regular).await.unwrap().is_some(), "at {i}");
                }
            }
            let count = store.session_count();
            assert!((19_900..=20_000).contains(&count), "{count} sessions kept");
            assert!(store.weighted_bytes() <= DEFAULT_MAX_BYTES);
            for id in &ids[ids.len() - 1_000..] {
                assert!(store.load(id).await.unwrap().is_some());
            }
        });
    }

    /// When a session's own shard holds nothing else to evict, the other shards make room,
    /// and the new session is kept.
    #[test]
    fn heavy_sessions_evict_from_other_shards_and_are_kept() {
        run(async {
            let store = MemoryStore::builder()
                .max_sessions(1_000_000)
                .max_bytes(1_000_000)
                .build();
            assert_eq!(store.inner.shards.len(), 8);
            let heavy = data(&"x".repeat(100_000));
            for _ in 0..50 {
                let id = SessionId::generate();
                store.create(&id, &heavy, HOUR).await.unwrap();
                assert!(
                    store.load(&id).await.unwrap().is_some(),
                    "a new session evicted"
                );
                assert!(store.weighted_bytes() <= 1_000_000);
            }
            assert!(store.session_count() <= 9, "{}", store.session_count());
        });
    }

    /// New sessions sweep out the expired ones, so that sessions nobody asks for again do
    /// not stay in memory until evicted.
    #[test]
    fn new_sessions_sweep_out_expired_ones() {
        run(async {
            let store = MemoryStore::builder().max_sessions(1_000).build();
            for _ in 0..500 {
                let id = SessionId::generate();
                store
                    .create(&id, &data("1"), Duration::from_millis(1))
                    .await
                    .unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
            for _ in 0..500 {
                let id = SessionId::generate();
                store.create(&id, &data("1"), HOUR).await.unwrap();
            }
            assert_eq!(store.session_count(), 500, "expired sessions left");
            assert_eq!(
                store.weighted_bytes(),
                500 * u64::from(store.inner.weigher.floor)
            );
        });
    }

    /// The weight counted for the store follows every write and removal exactly.
    #[test]
    fn the_counted_weight_follows_writes_and_removals() {
        run(async {
            // A floor of one byte: sessions weigh their memory.
            let store = MemoryStore::builder()
                .max_sessions(1_000_000_000)
                .max_bytes(1_000_000_000)
                .build();
            let weigh =
                |value: &str| u64::from(store.inner.weigher.weigh(&Fields::from_map(&data(value))));
            let (id, renewed) = (SessionId::generate(), SessionId::generate());
            store.create(&id, &data("1"), HOUR).await.unwrap();
            assert_eq!(store.weighted_bytes(), weigh("1"));
            let long = "y".repeat(1_000);
            store.update(&id, &set(&long, HOUR)).await.unwrap();
            assert_eq!(store.weighted_bytes(), weigh(&long));
            store.renew(&id, &renewed, &set("2", HOUR)).await.unwrap();
            let marker = u64::from(store.inner.weigher.weigh(&Fields::default()));
            assert_eq!(store.weighted_bytes(), weigh("2") + marker);
            store.delete(&id).await.unwrap();
            let empty = ChangeSet::new(
                vec![KeyChange::new("foo".into(), None, None)],
                ConflictPolicy::LastWriteWins,
                HOUR,
            );
            let outcome = store.update(&renewed, &empty).await.unwrap();
            assert_eq!(outcome, SaveOutcome::Emptied);
            assert_eq!((store.weighted_bytes(), store.session_count()), (0, 0));
        });
    }
}
