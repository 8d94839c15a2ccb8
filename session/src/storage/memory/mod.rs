//! The in-memory store, on moka.

use std::{
    cell::RefCell,
    fmt,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use moka::{notification::RemovalCause, policy::EvictionPolicy, sync::Cache, Expiry};

use super::{
    moved_marker_ttl, ChangeSet, ConflictPolicy, SaveMode, SaveOutcome, SessionMap, SessionStore,
};
use crate::{error::StoreError, id::IdHashBuilder, SessionId};

/// How many sessions a [`MemoryStore`] keeps by default before it evicts the least
/// recently used ones.
const DEFAULT_MAX_SESSIONS: u64 = 100_000;
/// How much memory a [`MemoryStore`]'s sessions may take by default.
const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The largest session a [`MemoryStore`] keeps by default, as memcached's default item limit.
const DEFAULT_MAX_SESSION_BYTES: usize = 1024 * 1024;

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
/// idle entries: a save merges its changes under that lock, atomically, without writing to
/// the cache unless the session grew past what the cache counted for it, so saves of
/// different sessions never wait for each other and a save of an existing session costs
/// one cache read.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<SessionId, Arc<Slot>, IdHashBuilder>,
    identity: Arc<()>,
    weigher: Weigher,
    max_session_bytes: usize,
}

thread_local! {
    /// The slot of the last session loaded on this thread, by store: saves a second cache
    /// lookup when the request saves it.
    static LAST_LOADED: RefCell<Option<(usize, SessionId, Arc<Slot>)>> = const { RefCell::new(None) };
}

/// One stored session.
struct Slot {
    state: Mutex<SlotState>,
    /// The time to live of the last write, in milliseconds, for the cache's own expiry.
    ttl_ms: AtomicU64,
    /// The session's weight (see [`Weigher`]), set under the lock by every write.
    weight: AtomicU32,
    /// The weight the cache counts for this slot: `weight` as it was when the slot was last
    /// written to the cache (its weigher reads this).
    counted: AtomicU32,
}

struct SlotState {
    data: Record,
    /// The session (or the marker of a moved one) is gone after this instant.
    deadline: Instant,
    life: Life,
}

/// Where a slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Alive,
    /// Renewed to another id: the slot is the marker that makes late saves answer
    /// [`SaveOutcome::Moved`]; it holds no data.
    Moved,
    /// Deleted (purged, emptied, evicted): a request still holding the slot must not write
    /// to it.
    Dead,
}

/// A slot, as an operation finds it.
enum Found<'a> {
    Alive(MutexGuard<'a, SlotState>),
    Moved,
    Gone,
}

impl Slot {
    fn new(data: Record, ttl: Duration, weight: u32) -> Self {
        Self {
            state: Mutex::new(SlotState {
                data,
                deadline: Instant::now() + ttl,
                life: Life::Alive,
            }),
            ttl_ms: AtomicU64::new(as_millis(ttl)),
            weight: AtomicU32::new(weight),
            counted: AtomicU32::new(weight),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot's state, for an operation on the session.
    fn find(&self) -> Found<'_> {
        let state = self.lock();
        if state.deadline <= Instant::now() {
            return Found::Gone;
        }
        match state.life {
            Life::Alive => Found::Alive(state),
            Life::Moved => Found::Moved,
            Life::Dead => Found::Gone,
        }
    }

    /// Moves the deadline one `ttl` from now. True when `ttl` is longer than the last one:
    /// the cache's expiry, set from the last one at the read that found this slot, must then
    /// be set again (by another read) or it could drop the session before its deadline.
    fn extend(&self, state: &mut SlotState, ttl: Duration) -> bool {
        state.deadline = Instant::now() + ttl;
        let ttl = as_millis(ttl);
        self.ttl_ms.swap(ttl, Ordering::Relaxed) < ttl
    }

    fn kill(&self) {
        self.lock().life = Life::Dead;
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }
}

fn as_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// A stored session, kept compact: most sessions hold a few small keys, and a list costs a
/// fraction of a hash map's table (for one key, about 100 bytes against about 300).
#[derive(Clone, Default)]
struct Record(Vec<(String, String)>);

impl Record {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn to_map(&self) -> SessionMap {
        let mut map = SessionMap::with_capacity(self.0.len());
        map.extend(self.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        map
    }

    /// The session's size as the size limit counts it: its keys and JSON values.
    fn size(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The size once `changes` are applied (an upper bound if a change set names a key
    /// twice).
    fn size_after(&self, changes: &ChangeSet) -> usize {
        let mut size = self.size();
        for change in changes.changes() {
            if let Some(old) = self.get(change.key()) {
                size = size.saturating_sub(change.key().len() + old.len());
            }
            if let Some(new) = change.value() {
                size = size.saturating_add(change.key().len() + new.len());
            }
        }
        size
    }

    /// The heap memory the record holds, allocator rounding included (16 bytes per block).
    fn heap_bytes(&self) -> usize {
        const PER_BLOCK: usize = 16;
        let list = self.0.capacity() * std::mem::size_of::<(String, String)>() + PER_BLOCK;
        let strings: usize = self
            .0
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity() + 2 * PER_BLOCK)
            .sum();
        list + strings
    }

    /// Whether a save under the strict policy must be refused (see [`ChangeSet`]).
    fn conflicts_with(&self, changes: &ChangeSet) -> bool {
        changes.policy() == ConflictPolicy::Strict
            && changes
                .changes()
                .iter()
                .any(|c| self.get(c.key()) != c.seen())
    }

    fn apply(&mut self, changes: &ChangeSet) {
        for change in changes.changes() {
            let at = self.0.iter().position(|(k, _)| k == change.key());
            match (change.value(), at) {
                // Overwrite in place: the stored buffer usually fits the new value.
                (Some(value), Some(at)) => value.clone_into(&mut self.0[at].1),
                (Some(value), None) => {
                    self.0.reserve_exact(1);
                    self.0.push((change.key().into(), value.into()));
                }
                (None, Some(at)) => {
                    self.0.swap_remove(at);
                }
                (None, None) => {}
            }
        }
    }
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

    fn weigh(self, record: &Record) -> u32 {
        let bytes = Self::SESSION_OVERHEAD + record.heap_bytes();
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
    pub fn max_sessions(mut self, max_sessions: u64) -> Self {
        self.sessions = max_sessions;
        self
    }

    /// The most memory the store's sessions may take, in bytes (256 MiB by default): their
    /// keys and values, and about 520 bytes of bookkeeping each. Past it, the least recently
    /// used sessions are evicted. A session heavier than the whole bound counts as the whole
    /// bound: it is kept, and evicts the others.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.bytes = max_bytes;
        self
    }

    /// The largest session the store keeps, counted as the length of its keys and JSON
    /// values (1 MiB by default, memcached's default item limit). A save that would make a
    /// session larger is refused with [`StoreError::TooLarge`] (a 500, logged) and leaves the
    /// stored session as it was.
    pub fn max_session_bytes(mut self, max_session_bytes: usize) -> Self {
        self.session_bytes = max_session_bytes;
        self
    }

    /// Builds the store.
    #[must_use]
    pub fn build(self) -> MemoryStore {
        let weigher = Weigher::new(self.bytes, self.sessions.max(1));
        MemoryStore {
            cache: Cache::builder()
                .max_capacity(self.bytes)
                .weigher(|_, slot: &Arc<Slot>| slot.counted.load(Ordering::Relaxed))
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
                .build_with_hasher(IdHashBuilder::default()),
            identity: Arc::new(()),
            weigher,
            max_session_bytes: self.session_bytes,
        }
    }
}

impl MemoryStore {
    /// A builder, to set the bounds.
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
    #[must_use]
    pub fn session_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// What the stored sessions count against [`max_bytes`](MemoryStoreBuilder::max_bytes):
    /// their memory, or `max_bytes / max_sessions` for those smaller than that. Approximate,
    /// as [`session_count`](Self::session_count).
    #[must_use]
    pub fn weighted_bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Applies pending evictions and expiries now, instead of at the next batch.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    /// Drops a session's slot from the cache after marking it dead.
    fn remove(&self, id: &SessionId, slot: &Slot) {
        slot.kill();
        self.cache.invalidate(id);
    }

    /// The slot of `id`: the one this thread's last load found, if it was this session's
    /// (the save of a request follows its load on the same worker thread), else the cache's.
    /// A slot found that way may have left the cache since; then it is dead, and the
    /// operation answers as if it were missing.
    fn slot(&self, id: &SessionId) -> Option<Arc<Slot>> {
        let remembered = LAST_LOADED.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((store, last_id, _)) if *store == self.identity() && last_id == id => {
                    last.take().map(|(_, _, slot)| slot)
                }
                _ => None,
            }
        });
        remembered.or_else(|| self.lookup(id))
    }

    fn lookup(&self, id: &SessionId) -> Option<Arc<Slot>> {
        self.cache.get(id)
    }

    fn remember(&self, id: &SessionId, slot: Arc<Slot>) {
        let store = self.identity();
        LAST_LOADED.with(|last| *last.borrow_mut() = Some((store, *id, slot)));
    }

    /// Tells stores apart in [`LAST_LOADED`].
    fn identity(&self) -> usize {
        Arc::as_ptr(&self.identity).addr()
    }

    /// Reads `id` again so the cache takes a longer time to live into account.
    fn rearm_if(&self, longer: bool, id: &SessionId) {
        if longer {
            self.cache.get(id);
        }
    }

    /// Records a slot's new weight, under its lock (so the last write's weight is the one
    /// kept); says whether it moved far from what the cache counts (grew past it, or fell
    /// under half of it), so that [`reinsert`](Self::reinsert) must run.
    fn weigh(&self, slot: &Slot, state: &SlotState) -> bool {
        let weight = self.weigher.weigh(&state.data);
        slot.weight.store(weight, Ordering::Relaxed);
        let counted = slot.counted.load(Ordering::Relaxed);
        weight > counted || weight < counted / 2
    }

    /// Writes the slot to the cache again, so the cache counts its latest weight (read now,
    /// whichever of two concurrent writes gets here last) and its time to live. Call it
    /// without holding the slot's lock: the cache may evict, and eviction locks the evicted
    /// slot. A slot that died meanwhile (purged, evicted) is taken out again.
    fn reinsert(&self, id: &SessionId, slot: &Arc<Slot>) {
        slot.counted
            .store(slot.weight.load(Ordering::Relaxed), Ordering::Relaxed);
        self.cache.insert(*id, Arc::clone(slot));
        if slot.lock().life == Life::Dead {
            self.cache.invalidate(id);
        }
    }

    /// Refuses a session over the size limit.
    fn check_size(&self, size: usize) -> Result<(), StoreError> {
        if size > self.max_session_bytes {
            return Err(StoreError::TooLarge {
                size,
                limit: self.max_session_bytes,
            });
        }
        Ok(())
    }

    /// Stores a new session under `id`, unless something is there.
    fn create(&self, id: &SessionId, data: Record, ttl: Duration) -> bool {
        let weight = self.weigher.weigh(&data);
        let entry = self
            .cache
            .entry(*id)
            .or_insert_with(|| Arc::new(Slot::new(data, ttl, weight)));
        entry.is_fresh()
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
        let Some(slot) = self.lookup(id) else {
            return Ok(None);
        };
        let data = match slot.find() {
            Found::Alive(state) => state.data.to_map(),
            // The marker of a renewed session stays, for the requests still in flight.
            Found::Moved => return Ok(None),
            Found::Gone => {
                self.remove(id, &slot);
                return Ok(None);
            }
        };
        self.remember(id, slot);
        Ok(Some(data))
    }

    async fn save(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        if changes.mode() == SaveMode::Create {
            let mut data = Record::default();
            if data.conflicts_with(changes) {
                return Ok(SaveOutcome::Conflict);
            }
            self.check_size(data.size_after(changes))?;
            data.apply(changes);
            if data.is_empty() {
                return Ok(SaveOutcome::Emptied);
            }
            let fresh = self.create(id, data, changes.ttl());
            return Ok(if fresh {
                SaveOutcome::Saved
            } else {
                SaveOutcome::IdTaken
            });
        }
        let Some(slot) = self.slot(id) else {
            return Ok(SaveOutcome::Gone);
        };
        let (reweigh, longer) = {
            let mut state = match slot.find() {
                Found::Alive(state) => state,
                Found::Moved => return Ok(SaveOutcome::Moved),
                Found::Gone => return Ok(SaveOutcome::Gone),
            };
            if state.data.conflicts_with(changes) {
                return Ok(SaveOutcome::Conflict);
            }
            self.check_size(state.data.size_after(changes))?;
            state.data.apply(changes);
            if state.data.is_empty() {
                state.life = Life::Dead;
                drop(state);
                self.cache.invalidate(id);
                return Ok(SaveOutcome::Emptied);
            }
            let longer = slot.extend(&mut state, changes.ttl());
            (self.weigh(&slot, &state), longer)
        };
        if reweigh {
            self.reinsert(id, &slot);
        } else {
            self.rearm_if(longer, id);
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
            let mut state = match slot.find() {
                Found::Alive(state) => state,
                Found::Moved => return Ok(SaveOutcome::Moved),
                Found::Gone => return Ok(SaveOutcome::Gone),
            };
            if state.data.conflicts_with(changes) {
                return Ok(SaveOutcome::Conflict);
            }
            self.check_size(state.data.size_after(changes))?;
            let mut merged = state.data.clone();
            merged.apply(changes);
            if merged.is_empty() {
                state.life = Life::Dead;
                drop(state);
                self.cache.invalidate(from);
                return Ok(SaveOutcome::Emptied);
            }
            // From here on no request may write to the old id: it is the marker.
            state.life = Life::Moved;
            (std::mem::take(&mut state.data), merged)
        };
        if !self.create(to, merged, changes.ttl()) {
            // A random 122-bit id collided: keep the old session; the caller retries.
            let mut state = slot.lock();
            state.data = old;
            state.life = Life::Alive;
            return Ok(SaveOutcome::IdTaken);
        }
        {
            let mut state = slot.lock();
            slot.extend(&mut state, moved_marker_ttl(changes.ttl()));
            self.weigh(&slot, &state);
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
            Found::Alive(mut state) => slot.extend(&mut state, ttl),
            Found::Moved | Found::Gone => return Ok(false),
        };
        self.rearm_if(longer, id);
        Ok(true)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        if let Some(slot) = self.slot(id) {
            self.remove(id, &slot);
        }
        Ok(())
    }
}
