//! The in-memory store, on moka.

use std::{
    cell::RefCell,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use moka::{sync::Cache, Expiry};

use super::{ChangeSet, ConflictPolicy, SaveMode, SaveOutcome, SessionMap, SessionStore};
use crate::{error::StoreError, id::IdHashBuilder, SessionId};

/// How many sessions a [`MemoryStore`] keeps by default before it evicts the least
/// recently used ones.
const DEFAULT_MAX_SESSIONS: u64 = 100_000;

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
/// let store = MemoryStore::builder().max_sessions(10_000).build();
/// let _server = HttpServer::new(move || {
///     App::new()
///         .wrap(SessionMiddleware::new(store.clone()))
///         .route("/", web::get().to(|| async { "hello" }))
/// });
/// ```
///
/// The store is bounded: past [`max_sessions`](MemoryStoreBuilder::max_sessions) it evicts
/// the sessions least likely to be used again, so a flood of new visitors cannot exhaust
/// the process's memory. Each session expires one time to live after its last save or touch.
///
/// Each session sits behind its own lock, in a moka cache that bounds the store and drops
/// idle entries: a save merges its changes under that lock, atomically, without writing to
/// the cache, so saves of different sessions never wait for each other and a save of an
/// existing session costs one cache read.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<SessionId, Arc<Slot>, IdHashBuilder>,
    identity: Arc<()>,
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
}

struct SlotState {
    data: Record,
    /// The session is gone after this instant.
    deadline: Instant,
    /// Deleted (purged, emptied, renewed away): a request still holding the slot must not
    /// write to it.
    dead: bool,
}

impl Slot {
    fn new(data: Record, ttl: Duration) -> Self {
        Self {
            state: Mutex::new(SlotState {
                data,
                deadline: Instant::now() + ttl,
                dead: false,
            }),
            ttl_ms: AtomicU64::new(as_millis(ttl)),
        }
    }

    /// The state, if the session is still alive.
    fn alive(&self) -> Option<MutexGuard<'_, SlotState>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (!state.dead && state.deadline > Instant::now()).then_some(state)
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
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dead = true;
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
    max_sessions: u64,
}

impl MemoryStoreBuilder {
    /// The most sessions the store keeps (100,000 by default). Past it, the least recently
    /// used sessions are evicted, so memory stays bounded whatever clients do.
    pub fn max_sessions(mut self, max_sessions: u64) -> Self {
        self.max_sessions = max_sessions;
        self
    }

    /// Builds the store.
    #[must_use]
    pub fn build(self) -> MemoryStore {
        MemoryStore {
            cache: Cache::builder()
                .max_capacity(self.max_sessions)
                .expire_after(IdleExpiry)
                // A slot the cache lets go of is dead: a request that still holds it (from
                // its load) must find it so, not write into a session nobody can read.
                .eviction_listener(|_, slot: Arc<Slot>, _| slot.kill())
                .build_with_hasher(IdHashBuilder::default()),
            identity: Arc::new(()),
        }
    }
}

impl MemoryStore {
    /// A builder, to set the bound.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_sessions: DEFAULT_MAX_SESSIONS,
        }
    }

    /// How many sessions the store holds. Approximate: evictions and expiries are applied
    /// in batches; call [`run_pending_tasks`](Self::run_pending_tasks) first for a settled
    /// figure.
    #[must_use]
    pub fn session_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Applies pending evictions and expiries now, instead of at the next batch.
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    /// Drops a session's slot from the cache after marking it dead.
    fn remove(&self, id: &SessionId, slot: &Slot) {
        slot.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dead = true;
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

    /// Stores a new session under `id`, unless a session is there.
    fn create(&self, id: &SessionId, data: Record, ttl: Duration) -> bool {
        let entry = self
            .cache
            .entry(*id)
            .or_insert_with(|| Arc::new(Slot::new(data, ttl)));
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
            .field("max_sessions", &self.cache.policy().max_capacity())
            .finish_non_exhaustive()
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        let Some(slot) = self.lookup(id) else {
            return Ok(None);
        };
        let data = slot.alive().map(|state| state.data.to_map());
        if data.is_none() {
            self.remove(id, &slot);
        } else {
            self.remember(id, slot);
        }
        Ok(data)
    }

    async fn load_and_touch(
        &self,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<Option<SessionMap>, StoreError> {
        let Some(slot) = self.lookup(id) else {
            return Ok(None);
        };
        let mut longer = false;
        let data = slot.alive().map(|mut state| {
            longer = slot.extend(&mut state, ttl);
            state.data.to_map()
        });
        self.rearm_if(longer, id);
        Ok(data)
    }

    async fn save(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        if changes.mode() == SaveMode::Create {
            let mut data = Record::default();
            if data.conflicts_with(changes) {
                return Ok(SaveOutcome::Conflict);
            }
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
        let extended = {
            let Some(mut state) = slot.alive() else {
                return Ok(SaveOutcome::Gone);
            };
            if state.data.conflicts_with(changes) {
                return Ok(SaveOutcome::Conflict);
            }
            state.data.apply(changes);
            if state.data.is_empty() {
                state.dead = true;
                None
            } else {
                Some(slot.extend(&mut state, changes.ttl()))
            }
        };
        let Some(longer) = extended else {
            self.cache.invalidate(id);
            return Ok(SaveOutcome::Emptied);
        };
        self.rearm_if(longer, id);
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
        let merged = {
            let Some(mut state) = slot.alive() else {
                return Ok(SaveOutcome::Gone);
            };
            if state.data.conflicts_with(changes) {
                return Ok(SaveOutcome::Conflict);
            }
            let mut merged = state.data.clone();
            merged.apply(changes);
            // From here on no request may write to the old id.
            state.dead = true;
            merged
        };
        if merged.is_empty() {
            self.cache.invalidate(from);
            return Ok(SaveOutcome::Emptied);
        }
        if !self.create(to, merged, changes.ttl()) {
            // A random 122-bit id collided: keep the old session; the caller retries.
            slot.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .dead = false;
            return Ok(SaveOutcome::IdTaken);
        }
        self.cache.invalidate(from);
        Ok(SaveOutcome::Saved)
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let Some(slot) = self.slot(id) else {
            return Ok(false);
        };
        let longer = slot.alive().map(|mut state| slot.extend(&mut state, ttl));
        self.rearm_if(longer == Some(true), id);
        Ok(longer.is_some())
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        if let Some(slot) = self.slot(id) {
            self.remove(id, &slot);
        }
        Ok(())
    }
}
