//! The in-memory store, on moka.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use moka::{future::Cache, ops::compute::Op, Expiry};

use super::{ChangeSet, SaveMode, SaveOutcome, SessionMap, SessionStore};
use crate::{error::StoreError, SessionId};

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
/// the process's memory. Each session expires after the time to live of its last save.
/// Saves are merged into the stored session atomically per session.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<SessionId, Arc<Entry>>,
}

/// One stored session: the data, shared so that a touch does not copy it, and the time to
/// live given by its last write.
struct Entry {
    data: Arc<SessionMap>,
    ttl: Duration,
}

struct EntryTtl;

impl Expiry<SessionId, Arc<Entry>> for EntryTtl {
    fn expire_after_create(
        &self,
        _key: &SessionId,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &SessionId,
        value: &Arc<Entry>,
        _updated_at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
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
                .expire_after(EntryTtl)
                .build(),
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
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Merges `changes` onto `current` under the rules of [`SessionStore::save`]; returns
    /// the cache operation and the outcome, and the merged data when something is kept.
    fn merge(
        current: Option<&Entry>,
        changes: &ChangeSet,
    ) -> (Op<Arc<Entry>>, SaveOutcome, Option<Arc<SessionMap>>) {
        match (changes.mode(), current) {
            (SaveMode::Create, Some(_)) => return (Op::Nop, SaveOutcome::IdTaken, None),
            (SaveMode::Update, None) => return (Op::Nop, SaveOutcome::Gone, None),
            _ => {}
        }
        let mut data = current
            .map(|e| SessionMap::clone(&e.data))
            .unwrap_or_default();
        if changes.conflicts_with(&data) {
            return (Op::Nop, SaveOutcome::Conflict, None);
        }
        changes.apply_to(&mut data);
        if data.is_empty() {
            let op = if current.is_some() {
                Op::Remove
            } else {
                Op::Nop
            };
            return (op, SaveOutcome::Emptied, None);
        }
        let data = Arc::new(data);
        let entry = Arc::new(Entry {
            data: Arc::clone(&data),
            ttl: changes.ttl(),
        });
        (Op::Put(entry), SaveOutcome::Saved, Some(data))
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
            .finish()
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        Ok(self.cache.get(id).await.map(|e| SessionMap::clone(&e.data)))
    }

    async fn save(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        let mut outcome = SaveOutcome::Saved;
        self.cache
            .entry(*id)
            .and_compute_with(|current| {
                let (op, result, _) = Self::merge(current.as_ref().map(|e| &**e.value()), changes);
                outcome = result;
                std::future::ready(op)
            })
            .await;
        Ok(outcome)
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        // Take the old record and merge in one atomic step, so a purge that races the renew
        // either happens before (Gone) or deletes nothing we still need.
        let update = ChangeSet {
            mode: SaveMode::Update,
            ..changes.clone()
        };
        let mut outcome = SaveOutcome::Gone;
        let mut moved: Option<(Arc<Entry>, Option<Arc<SessionMap>>)> = None;
        self.cache
            .entry(*from)
            .and_compute_with(|current| {
                let old = current.map(moka::Entry::into_value);
                let (op, result, data) = Self::merge(old.as_deref(), &update);
                outcome = result;
                let op = match (op, old) {
                    (Op::Nop, _) | (_, None) => Op::Nop,
                    (_, Some(old)) => {
                        moved = Some((old, data));
                        Op::Remove
                    }
                };
                std::future::ready(op)
            })
            .await;
        let Some((old, Some(data))) = moved else {
            return Ok(outcome);
        };
        let entry = Arc::new(Entry {
            data,
            ttl: changes.ttl(),
        });
        let mut taken = false;
        self.cache
            .entry(*to)
            .and_compute_with(|current| {
                taken = current.is_some();
                std::future::ready(if taken { Op::Nop } else { Op::Put(entry) })
            })
            .await;
        if taken {
            // Put the old record back untouched; the caller retries with another id.
            self.cache.insert(*from, old).await;
            return Ok(SaveOutcome::IdTaken);
        }
        Ok(SaveOutcome::Saved)
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        let mut found = false;
        self.cache
            .entry(*id)
            .and_compute_with(|current| {
                let op = match current {
                    Some(e) => {
                        found = true;
                        Op::Put(Arc::new(Entry {
                            data: Arc::clone(&e.value().data),
                            ttl,
                        }))
                    }
                    None => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        Ok(found)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.cache.invalidate(id).await;
        Ok(())
    }
}
