//! The in-memory store, on moka.

mod last_loaded;
mod slot;

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use moka::{notification::RemovalCause, policy::EvictionPolicy, sync::Cache, Expiry};

use self::{
    last_loaded::LastLoaded,
    slot::{Fields, Found, Slot},
};
use super::{moved_marker_ttl, ChangeSet, SaveOutcome, SessionMap, SessionStore};
use crate::{error::StoreError, SessionId};

/// How many sessions a [`MemoryStore`] keeps by default before it evicts the least
/// recently used ones.
const DEFAULT_MAX_SESSIONS: u64 = 100_000;
/// How much memory a [`MemoryStore`]'s sessions may take by default.
const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The largest session a [`MemoryStore`] keeps by default, as memcached's default item limit.
const DEFAULT_MAX_SESSION_BYTES: usize = 1024 * 1024;

/// The hasher of the cache: ids are random, so a fast one is enough.
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
/// last save or touch.
///
/// Each session sits behind its own lock, in a moka cache that bounds the store and drops
/// idle entries: an update merges its changes under that lock, atomically, in place,
/// without writing to the cache unless the session grew past what the cache counted for
/// it. Counted by callgrind (`bench/memory_ops.sh`, `docs/bench/memory-ops.txt`), such an
/// update costs about 1,200 instructions; moka's own atomic update
/// (`entry().and_compute_with`, which copies the session and writes the cache) costs about
/// 11,000, a third of a whole `/counter` request (32,000).
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<SessionId, Arc<Slot>, Hasher>,
    last_loaded: LastLoaded,
    weigher: Weigher,
    max_session_bytes: usize,
}

/// What a session counts against the cache's bound, so that one bound in bytes keeps both
/// of the store's bounds: every session weighs at least `max_bytes / max_sessions`, so no
/// more than `max_sessions` fit, and otherwise its memory, so no more than `max_bytes` of
/// them fit. No session weighs more than the whole bound: moka drops an entry heavier than
/// its capacity as soon as it is written, which would lose a session just stored.
#[derive(Debug, Clone, Copy)]
struct Weigher {
    floor: u32,
    ceiling: u32,
}

impl Weigher {
    /// What a session costs beyond its record's heap memory: the slot, its `Arc`, the id,
    /// and moka's entry, hash table slot and queue nodes. Measured with
    /// `cargo run --release -p bench --bin memory -- 1000000`: 1,000,000 one-key sessions
    /// take 610 bytes each (582 MiB), of which the record's heap is about 100.
    const SESSION_OVERHEAD: usize = 520;

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

/// The cache drops an entry one TTL after its last use. A session's own deadline (one TTL
/// after its last write) always comes first, and decides; the cache's expiry only frees the
/// memory of sessions nobody asks for.
struct IdleExpiry;

impl Expiry<SessionId, Arc<Slot>> for IdleExpiry {
    fn expire_after_create(&self, _: &SessionId, slot: &Arc<Slot>, _: Instant) -> Option<Duration> {
        Some(slot.ttl())
    }

    fn expire_after_read(
        &self,
        _: &SessionId,
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(slot.ttl())
    }

    fn expire_after_update(
        &self,
        _: &SessionId,
        slot: &Arc<Slot>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.ttl())
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
    /// keys and values, and about 520 bytes of bookkeeping each. Past it, the least recently
    /// used sessions are evicted. A session heavier than the whole bound counts as the whole
    /// bound: it is kept, and evicts the others.
    ///
    /// ```
    /// use actix_kv_session::storage::MemoryStore;
    ///
    /// // A one-key session takes about 610 bytes: room for about 100,000 of them.
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
        let weigher = Weigher::new(self.bytes, self.sessions.max(1));
        MemoryStore {
            cache: Cache::builder()
                .max_capacity(self.bytes)
                .weigher(|_, slot: &Arc<Slot>| slot.counted_weight())
                // Least recently used: a new session is the most recent, so it is kept.
                // moka's default (TinyLFU) refuses new entries once the cache is full.
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(IdleExpiry)
                // A slot the cache lets go of is dead: a request that still holds it (from
                // its load) must find it so, not write into a session nobody can read. A
                // slot replaced by itself (weighed again) stays as it is.
                .eviction_listener(|_, slot: Arc<Slot>, cause| {
                    if cause != RemovalCause::Replaced {
                        slot.kill();
                    }
                })
                .build_with_hasher(Hasher::default()),
            last_loaded: LastLoaded::new(),
            weigher,
            max_session_bytes: self.session_bytes,
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

    /// How many sessions the store holds (and markers of renewed ones). Approximate:
    /// evictions and expiries are applied in batches; call
    /// [`run_pending_tasks`](Self::run_pending_tasks) first for a settled figure.
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
    /// store.run_pending_tasks();
    /// assert_eq!(store.session_count(), 1);
    /// # });
    /// ```
    #[must_use]
    pub fn session_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// What the stored sessions count against [`max_bytes`](MemoryStoreBuilder::max_bytes):
    /// their memory, or `max_bytes / max_sessions` for those smaller than that. Approximate,
    /// as [`session_count`](Self::session_count).
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
    /// store.run_pending_tasks();
    /// // A small session counts as `max_bytes / max_sessions`.
    /// assert_eq!(store.weighted_bytes(), 1_000);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    #[must_use]
    pub fn weighted_bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Applies pending evictions and expiries now, instead of at the next batch.
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
    /// let id = SessionId::generate();
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&id, &data, Duration::from_secs(60)).await?;
    /// store.delete(&id).await?;
    /// store.run_pending_tasks();
    /// assert_eq!(store.session_count(), 0);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    /// Drops a session's slot from the cache after marking it dead.
    fn remove(&self, id: &SessionId, slot: &Slot) {
        slot.kill();
        self.cache.invalidate(id);
    }

    /// The slot of `id`: the one this thread's last load found, if it was this session's,
    /// else the cache's.
    fn slot(&self, id: &SessionId) -> Option<Arc<Slot>> {
        self.last_loaded.take(id).or_else(|| self.cache.get(id))
    }

    /// Writes the slot to the cache again, so the cache counts its latest weight (read now,
    /// whichever of two concurrent writes gets here last) and its time to live (the cache's
    /// expiry, set from the slot's TTL when it was last read or written, would drop a slot
    /// whose TTL grew before its deadline). Call it
    /// without holding the slot's lock: the cache may evict, and eviction locks the evicted
    /// slot. A slot that died meanwhile (purged, evicted) is taken out again.
    fn reinsert(&self, id: &SessionId, slot: &Arc<Slot>) {
        slot.count_latest_weight();
        self.cache.insert(*id, Arc::clone(slot));
        if slot.is_dead() {
            self.cache.invalidate(id);
        }
    }

    /// Refuses a session over the size limit.
    fn check_size(&self, size: usize) -> Result<(), StoreError> {
        if size > self.max_session_bytes {
            return Err(StoreError::TooLarge {
                size,
                limit: Some(self.max_session_bytes),
            });
        }
        Ok(())
    }

    /// Stores a new session under `id`, unless something is there.
    fn insert_new(&self, id: &SessionId, fields: Fields, ttl: Duration) -> Result<(), StoreError> {
        let weight = self.weigher.weigh(&fields);
        let entry = self
            .cache
            .entry(*id)
            .or_insert_with(|| Arc::new(Slot::new(fields, ttl, weight)));
        if entry.is_fresh() {
            Ok(())
        } else {
            Err(StoreError::IdInUse)
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
            .field("sessions", &self.cache.entry_count())
            .field("weighted_bytes", &self.cache.weighted_size())
            .field("max_bytes", &self.cache.policy().max_capacity())
            .field("max_session_bytes", &self.max_session_bytes)
            .finish_non_exhaustive()
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        let Some(slot) = self.cache.get(id) else {
            return Ok(None);
        };
        let map = match slot.find() {
            Found::Alive(alive) => alive.fields().to_map(),
            // The marker of a renewed session stays, for the requests still in flight.
            Found::Moved => return Ok(None),
            Found::Gone => {
                self.remove(id, &slot);
                return Ok(None);
            }
        };
        self.last_loaded.remember(id, slot);
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
        self.insert_new(id, fields, ttl)
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        let Some(slot) = self.slot(id) else {
            return Ok(SaveOutcome::Gone);
        };
        let (reweigh, longer) = {
            let mut alive = match slot.find() {
                Found::Alive(alive) => alive,
                Found::Moved => return Ok(SaveOutcome::Moved),
                Found::Gone => return Ok(SaveOutcome::Gone),
            };
            if changes.conflicts_with(alive.fields()) {
                return Ok(SaveOutcome::Conflict);
            }
            self.check_size(alive.fields().size_after(changes))?;
            if !alive.apply(changes) {
                drop(alive);
                self.cache.invalidate(id);
                return Ok(SaveOutcome::Emptied);
            }
            let longer = alive.extend(changes.ttl());
            (alive.weigh(|fields| self.weigher.weigh(fields)), longer)
        };
        if reweigh || longer {
            self.reinsert(id, &slot);
        }
        Ok(SaveOutcome::Saved)
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        let Some(slot) = self.slot(from) else {
            return Ok(SaveOutcome::Gone);
        };
        let (old, merged) = {
            let alive = match slot.find() {
                Found::Alive(alive) => alive,
                Found::Moved => return Ok(SaveOutcome::Moved),
                Found::Gone => return Ok(SaveOutcome::Gone),
            };
            if changes.conflicts_with(alive.fields()) {
                return Ok(SaveOutcome::Conflict);
            }
            self.check_size(alive.fields().size_after(changes))?;
            let mut merged = alive.fields().clone();
            changes.apply_to(&mut merged);
            if merged.is_empty() {
                drop(alive);
                self.remove(from, &slot);
                return Ok(SaveOutcome::Emptied);
            }
            // From here on no request may write to the old id: it is the marker.
            let marker_weight = self.weigher.weigh(&Fields::default());
            let old = alive.into_marker(moved_marker_ttl(changes.ttl()), marker_weight);
            (old, merged)
        };
        if let Err(err) = self.insert_new(to, merged, changes.ttl()) {
            slot.revive(old);
            return Err(err);
        }
        // Counted again as an empty marker, with the marker's time to live.
        self.reinsert(from, &slot);
        Ok(SaveOutcome::Saved)
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let Some(slot) = self.slot(id) else {
            return Ok(false);
        };
        let longer = match slot.find() {
            Found::Alive(mut alive) => alive.extend(ttl),
            Found::Moved | Found::Gone => return Ok(false),
        };
        if longer {
            self.reinsert(id, &slot);
        }
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        if let Some(slot) = self.slot(id) {
            self.remove(id, &slot);
        }
        Ok(())
    }
}
