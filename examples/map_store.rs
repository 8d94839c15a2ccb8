//! A session store of your own, in about a hundred lines: sessions in a `Mutex<HashMap>`,
//! checked by the library's conformance suite, serving `sanic_session`'s counter.
//!
//! ```sh
//! cargo run --example map_store
//! curl -c jar -b jar http://127.0.0.1:8080/   # 1, then 2, ...
//! cargo test --example map_store              # the conformance suite, on this store
//! ```
//!
//! A store for Postgres, `SQLite` or `DynamoDB` follows the same outline: each operation is one
//! transaction (or one conditional write) that keeps the rules the suite checks. The
//! merge and conflict rules come with the library: [`ChangeSet::conflicts_with`] and
//! [`ChangeSet::apply_to`] work on a [`SessionMap`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use actix_kv_session::{
    storage::{moved_marker_ttl, ChangeSet, SaveOutcome, SessionMap, SessionStore},
    Session, SessionId, SessionMiddleware, StoreError,
};
use actix_web::{web, App, HttpServer};

/// Sessions in a map behind one lock. (A real store would bound its size and drop expired
/// entries in the background; this one only drops them when it meets them.)
#[derive(Clone, Default)]
struct MapStore(Arc<Mutex<HashMap<SessionId, Entry>>>);

struct Entry {
    /// `None`: the marker a renew leaves at the old id.
    data: Option<SessionMap>,
    deadline: Instant,
}

impl MapStore {
    /// Runs `f` on the live entry of `id` (an expired one is removed first), under the lock.
    fn with_entry<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(&mut HashMap<SessionId, Entry>) -> R,
    ) -> R {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(id).is_some_and(|e| e.deadline <= Instant::now()) {
            map.remove(id);
        }
        f(&mut map)
    }

    /// Applies `changes` to the session at `id`; the merged data, or the outcome that ends
    /// the operation with nothing written.
    fn merged(
        map: &HashMap<SessionId, Entry>,
        id: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SessionMap, SaveOutcome> {
        let data = match map.get(id) {
            None => return Err(SaveOutcome::Gone),
            Some(Entry { data: None, .. }) => return Err(SaveOutcome::Moved),
            Some(Entry {
                data: Some(data), ..
            }) => data,
        };
        if changes.conflicts_with(data) {
            return Err(SaveOutcome::Conflict);
        }
        let mut merged = data.clone();
        changes.apply_to(&mut merged);
        Ok(merged)
    }
}

fn live(data: Option<SessionMap>, ttl: Duration) -> Entry {
    Entry {
        data,
        deadline: Instant::now() + ttl,
    }
}

impl SessionStore for MapStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        Ok(self.with_entry(id, |map| map.get(id).and_then(|e| e.data.clone())))
    }

    async fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with_entry(id, |map| {
            if map.contains_key(id) {
                return Err(StoreError::IdInUse);
            }
            map.insert(*id, live(Some(data.clone()), ttl));
            Ok(())
        })
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        Ok(
            self.with_entry(id, |map| match Self::merged(map, id, changes) {
                Err(outcome) => outcome,
                Ok(merged) if merged.is_empty() => {
                    map.remove(id);
                    SaveOutcome::Emptied
                }
                Ok(merged) => {
                    map.insert(*id, live(Some(merged), changes.ttl()));
                    SaveOutcome::Saved
                }
            }),
        )
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.with_entry(from, |map| {
            let merged = match Self::merged(map, from, changes) {
                Err(outcome) => return Ok(outcome),
                Ok(merged) => merged,
            };
            if merged.is_empty() {
                map.remove(from);
                return Ok(SaveOutcome::Emptied);
            }
            if map.contains_key(to) {
                return Err(StoreError::IdInUse);
            }
            map.insert(*to, live(Some(merged), changes.ttl()));
            map.insert(*from, live(None, moved_marker_ttl(changes.ttl())));
            Ok(SaveOutcome::Saved)
        })
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.with_entry(id, |map| match map.get_mut(id) {
            Some(entry) if entry.data.is_some() => {
                entry.deadline = Instant::now() + ttl;
                true
            }
            _ => false,
        }))
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.with_entry(id, |map| map.remove(id));
        Ok(())
    }
}

async fn index(session: Session) -> actix_web::Result<String> {
    let count = session.get::<u64>("foo")?.unwrap_or(0) + 1;
    session.insert("foo", count)?;
    Ok(count.to_string())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let store = MapStore::default();
    println!("listening on http://{addr}/ with sessions in a map");
    HttpServer::new(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone())
                    .secure(false)
                    .build(),
            )
            .route("/", web::get().to(index))
    })
    .bind(addr)?
    .run()
    .await
}

#[cfg(test)]
mod tests {
    use super::MapStore;

    actix_kv_session::store_conformance!(MapStore::default());
}
