//! The [`SessionStore`] contract, its boxed form [`DynStore`], and the stores that implement
//! it.
//!
//! A store keeps one record per session: a map from session keys to JSON texts. The
//! middleware talks to it in loads and change sets, never in whole snapshots, so that
//! concurrent requests on one session that change different keys all persist, and so
//! that a session deleted while a request is in flight is not brought back by that
//! request. Every store keeps the same rules, checked by one conformance suite (feature
//! `testing`: [`store_conformance!`](crate::store_conformance)):
//!
//! - [`load`](SessionStore::load) returns the record, or `None` when the store does not
//!   know the id (never, expired, deleted, or renewed away). A record the store holds but
//!   cannot read at all (a value of another type, an item that is not a JSON object) is
//!   [`StoreError::Corrupt`]: the middleware then treats the id as unknown.
//! - [`create`](SessionStore::create) stores a new session under a fresh id, never over
//!   anything stored there.
//! - [`update`](SessionStore::update) applies a [`ChangeSet`] atomically, only to a record
//!   that still exists and can be read ([`SaveOutcome::Gone`] otherwise, or
//!   [`SaveOutcome::Moved`] when the record was renewed to another id). Under
//!   [`ConflictPolicy::Strict`] a change whose key no longer holds the value it had at load
//!   refuses the whole change set ([`SaveOutcome::Conflict`]), except for keys that start
//!   with a NUL character ([`is_bookkeeping`]): the middleware's own (when the session was
//!   created, its lifetime, when its TTL was last extended), which the last write sets. A
//!   record left with no keys is deleted ([`SaveOutcome::Emptied`]). An update sets the
//!   record's time to live.
//! - [`renew`](SessionStore::renew) moves a record to a new id, applying a change set on
//!   the way under the same rules, and leaves a marker at the old id for
//!   [`MOVED_MARKER_TTL`] (at most the session's TTL): an update or renew of the old id
//!   answers [`SaveOutcome::Moved`] then, so a request that loaded the session before the
//!   renew learns that it moved, and its changes never reach the renewed session. A load of
//!   the old id finds nothing.
//! - [`touch`](SessionStore::touch) resets the time to live without writing data; it is
//!   `false`, and extends nothing, for an id that is unknown or renewed away.
//! - [`delete`](SessionStore::delete) removes whatever is stored at the id, marker included.
//!
//! # Writing a store
//!
//! Implement [`SessionStore`]; [`SessionMap`] implements [`Record`], so
//! [`ChangeSet::conflicts_with`] and [`ChangeSet::apply_to`] give the merge and conflict
//! rules, and [`KeyPrefix`] builds keys the way the bundled stores do. `examples/map_store.rs`
//! is a complete store on a `Mutex<HashMap>` that passes the conformance suite.

use std::{collections::HashMap, fmt, future::Future, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;

use crate::{error::StoreError, SessionId};

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "memory")]
#[doc(inline)]
pub use self::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "memcached")]
mod memcached;
#[cfg(feature = "memcached")]
#[doc(inline)]
pub use self::memcached::{MemcachedStore, MemcachedStoreBuilder, MemcachedStoreError};
#[cfg(any(feature = "redis", feature = "memcached"))]
mod json_record;
#[cfg(any(feature = "redis", feature = "memcached"))]
mod per_thread;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
#[doc(inline)]
pub use self::redis::{RedisLayout, RedisStore, RedisStoreBuilder, RedisStoreError};

/// A session's stored record: each session key with its value as JSON text.
pub type SessionMap = HashMap<String, String>;

/// Whether `key` is the middleware's bookkeeping rather than the app's: it starts with a NUL
/// character, which [`Session::insert`](crate::Session::insert) refuses. A record holds such
/// keys beside the app's (when the session was created or renewed, its own TTL, when its
/// TTL was last extended); a store keeps them as any other key, except that
/// [`ConflictPolicy::Strict`] never checks them ([`ChangeSet::conflicts_with`] skips them).
#[must_use]
pub fn is_bookkeeping(key: &str) -> bool {
    key.starts_with('\0')
}

/// How long the old id of a renewed session stays marked as moved: a request still in flight
/// on it when the session was renewed (an asset, an XHR sent before the log-in answered)
/// gets [`SaveOutcome::Moved`] from its update for this long, and a 409 from the middleware,
/// instead of having its changes dropped silently. Later, the old id is simply unknown. A
/// session whose TTL is shorter keeps the marker for its TTL.
pub const MOVED_MARKER_TTL: Duration = Duration::from_secs(5 * 60);

/// The marker's time to live for a session whose TTL is `ttl`:
/// `min(ttl, MOVED_MARKER_TTL)`.
#[must_use]
pub fn moved_marker_ttl(ttl: Duration) -> Duration {
    ttl.min(MOVED_MARKER_TTL)
}

/// The prefix of every session's key in a key-value store (`session:` by default, as
/// `sanic_session`'s), and the keys built with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(Arc<str>);

impl KeyPrefix {
    /// The prefix `sanic_session` uses.
    pub const DEFAULT: &'static str = "session:";

    /// A prefix.
    #[must_use]
    pub fn new(prefix: impl Into<String>) -> Self {
        Self(prefix.into().into())
    }

    /// The prefix itself.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of a session: the prefix, then the id.
    #[must_use]
    pub fn key(&self, id: &SessionId) -> String {
        let mut key = String::with_capacity(self.0.len() + SessionId::LEN);
        key.push_str(&self.0);
        key.push_str(id.as_str());
        key
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        Self::new(Self::DEFAULT)
    }
}

/// How to resolve two requests that change the same key of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConflictPolicy {
    /// The later save wins for the keys it changed; keys it did not change are left as they
    /// are. This is what every other session library does, per whole session.
    #[default]
    LastWriteWins,
    /// A save is refused as a whole when any key it changes no longer holds the value it
    /// had when the request loaded the session. The middleware answers such a request with
    /// 409 Conflict, so no update is lost silently; the client may retry.
    Strict,
}

/// A change to one session key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    key: String,
    value: Option<String>,
    seen: Option<String>,
}

impl KeyChange {
    /// A change of `key` to `value` (`None` removes the key), where the key held `seen`
    /// when the session was loaded.
    #[must_use]
    pub fn new(key: String, value: Option<String>, seen: Option<String>) -> Self {
        Self { key, value, seen }
    }

    /// The session key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The new value as JSON text, or `None` when the key is removed.
    #[must_use]
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// The value the key held when the session was loaded, or `None` if it was absent.
    #[must_use]
    pub fn seen(&self) -> Option<&str> {
        self.seen.as_deref()
    }
}

/// A stored session's keys and values, as [`ChangeSet::apply_to`] and
/// [`ChangeSet::conflicts_with`] read and change them. [`SessionMap`] is one; a store may
/// keep its own compact form.
pub trait Record {
    /// The value of `key`, if it has one.
    fn get(&self, key: &str) -> Option<&str>;
    /// Sets `key` to `value`.
    fn set(&mut self, key: &str, value: &str);
    /// Removes `key`.
    fn remove(&mut self, key: &str);
}

impl Record for SessionMap {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }

    fn set(&mut self, key: &str, value: &str) {
        match self.get_mut(key) {
            // Overwrite in place: the stored string's buffer usually fits the new value.
            Some(stored) => value.clone_into(stored),
            None => {
                self.insert(key.to_owned(), value.to_owned());
            }
        }
    }

    fn remove(&mut self, key: &str) {
        HashMap::remove(self, key);
    }
}

/// What one request changed in an existing session, with what it saw at load, to be
/// applied by [`SessionStore::update`] or [`SessionStore::renew`].
#[derive(Debug, Clone)]
pub struct ChangeSet {
    changes: Vec<KeyChange>,
    policy: ConflictPolicy,
    ttl: Duration,
}

impl ChangeSet {
    /// A change set: `changes` under `policy`, and the record's time to live from now.
    #[must_use]
    pub fn new(changes: Vec<KeyChange>, policy: ConflictPolicy, ttl: Duration) -> Self {
        Self {
            changes,
            policy,
            ttl,
        }
    }

    /// The changed keys.
    #[must_use]
    pub fn changes(&self) -> &[KeyChange] {
        &self.changes
    }

    /// How to treat a key that changed since load.
    #[must_use]
    pub fn policy(&self) -> ConflictPolicy {
        self.policy
    }

    /// The record's time to live from now.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the change set must be refused because it is under the strict policy and
    /// `current` no longer holds, for some changed key, the value seen at load. Bookkeeping
    /// keys ([`is_bookkeeping`]) are not checked.
    #[must_use]
    pub fn conflicts_with(&self, current: &impl Record) -> bool {
        self.policy == ConflictPolicy::Strict
            && self
                .changes
                .iter()
                .any(|c| !is_bookkeeping(&c.key) && current.get(&c.key) != c.seen())
    }

    /// Applies the changes to `record`, ignoring the conflict policy.
    pub fn apply_to(&self, record: &mut impl Record) {
        for change in &self.changes {
            match &change.value {
                Some(value) => record.set(&change.key, value),
                None => record.remove(&change.key),
            }
        }
    }
}

/// What an [`update`](SessionStore::update) or a [`renew`](SessionStore::renew) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveOutcome {
    /// The changes are stored (under the new id, for a renew).
    Saved,
    /// The changes left the record without keys, and it was deleted (with no marker, for a
    /// renew).
    Emptied,
    /// No record (deleted or expired since the load), or one the store cannot read: nothing
    /// was written.
    Gone,
    /// The marker a renew left: the session moved to another id since the load. Nothing was
    /// written, and the new id is not revealed.
    Moved,
    /// Under the strict policy, a changed key no longer held the value seen at load:
    /// nothing was written.
    Conflict,
}

/// A place to keep sessions: memory, Redis, Memcached, or your own.
///
/// One store serves every worker of an `HttpServer` (the middleware shares it). The module
/// docs list the rules each operation keeps; the conformance suite checks them. For a store
/// chosen at run time, box it in a [`DynStore`].
pub trait SessionStore: Send + Sync + 'static {
    /// Reads a session's record; `None` when the store does not know the id, or the id was
    /// renewed away.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] when the store holds something at the id that it cannot read
    /// as a record (the middleware treats the id as unknown); another [`StoreError`] when the
    /// store is unreachable.
    fn load(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<SessionMap>, StoreError>> + Send;

    /// Stores a new session, `data` (never empty), under the fresh id `id`, for `ttl`.
    ///
    /// The middleware does not retry with another id: two random 122-bit ids collide with a
    /// probability of about `n / 2^122` for `n` stored sessions (2e-28 for a billion), far
    /// below a store's own failure rate. A store must still not write over whatever is at
    /// `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::IdInUse`] when something is stored at `id`; [`StoreError::TooLarge`]
    /// when the session is larger than the store accepts; another [`StoreError`] when the
    /// store is unreachable.
    fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Applies a change set to an existing session atomically (see the module docs).
    ///
    /// The middleware never retries an update: one whose answer was lost (a timeout, a
    /// connection that broke after the command was sent) may have been applied, and the
    /// request then gets a 503 meaning "outcome unknown". A store should not retry one
    /// either, unless it knows the command never reached the server.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store is unreachable, or the result is too large for it.
    fn update(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
    ) -> impl Future<Output = Result<SaveOutcome, StoreError>> + Send;

    /// Moves the record of `from` to the fresh id `to`, applying `changes` on the way under
    /// the rules of [`update`](Self::update), and leaves a marker at `from` that makes later
    /// updates and renews of it answer [`SaveOutcome::Moved`] (see [`MOVED_MARKER_TTL`]).
    /// Changes that leave no key delete `from` without a marker ([`SaveOutcome::Emptied`]),
    /// as a purge would. Not retried, as an update.
    ///
    /// # Errors
    ///
    /// [`StoreError::IdInUse`] when something is stored at `to` (nothing is written then);
    /// another [`StoreError`] when the store is unreachable, or the result is too large for
    /// it.
    fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> impl Future<Output = Result<SaveOutcome, StoreError>> + Send;

    /// Resets the time to live of a record without changing its data; `false` when the
    /// record does not exist or was renewed away (the marker is not extended).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store is unreachable.
    fn touch(
        &self,
        id: &SessionId,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes whatever is stored at the id (a record, a marker, or data it cannot read);
    /// deleting an unknown id is not an error.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store is unreachable.
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// [`SessionStore`] as a trait object: each operation returns a boxed future. Every
/// `SessionStore` is one; [`DynStore`] holds one behind an `Arc`.
pub trait DynSessionStore: Send + Sync + 'static {
    /// [`SessionStore::load`].
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> BoxFuture<'a, Result<Option<SessionMap>, StoreError>>;
    /// [`SessionStore::create`].
    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        data: &'a SessionMap,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// [`SessionStore::update`].
    fn update<'a>(
        &'a self,
        id: &'a SessionId,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<SaveOutcome, StoreError>>;
    /// [`SessionStore::renew`].
    fn renew<'a>(
        &'a self,
        from: &'a SessionId,
        to: &'a SessionId,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<SaveOutcome, StoreError>>;
    /// [`SessionStore::touch`].
    fn touch<'a>(
        &'a self,
        id: &'a SessionId,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// [`SessionStore::delete`].
    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<S: SessionStore> DynSessionStore for S {
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> BoxFuture<'a, Result<Option<SessionMap>, StoreError>> {
        Box::pin(SessionStore::load(self, id))
    }

    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        data: &'a SessionMap,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SessionStore::create(self, id, data, ttl))
    }

    fn update<'a>(
        &'a self,
        id: &'a SessionId,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<SaveOutcome, StoreError>> {
        Box::pin(SessionStore::update(self, id, changes))
    }

    fn renew<'a>(
        &'a self,
        from: &'a SessionId,
        to: &'a SessionId,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<SaveOutcome, StoreError>> {
        Box::pin(SessionStore::renew(self, from, to, changes))
    }

    fn touch<'a>(
        &'a self,
        id: &'a SessionId,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(SessionStore::touch(self, id, ttl))
    }

    fn delete<'a>(&'a self, id: &'a SessionId) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(SessionStore::delete(self, id))
    }
}

/// A store chosen at run time: any [`SessionStore`], boxed. Cheap to clone (an `Arc`).
///
/// ```
/// use actix_kv_session::{storage::{DynStore, MemoryStore}, SessionMiddleware};
///
/// fn store_from(config: &str) -> DynStore {
///     match config {
///         // "redis" => DynStore::new(RedisStore::new(url)?), and so on.
///         _ => DynStore::new(MemoryStore::default()),
///     }
/// }
///
/// let middleware: SessionMiddleware<DynStore> = SessionMiddleware::new(store_from("memory"));
/// ```
///
/// Each operation allocates its future on the heap; a store known at compile time does not.
#[derive(Clone)]
pub struct DynStore(Arc<dyn DynSessionStore>);

impl DynStore {
    /// Boxes `store`.
    pub fn new(store: impl SessionStore) -> Self {
        Self(Arc::new(store))
    }
}

impl fmt::Debug for DynStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynStore").finish_non_exhaustive()
    }
}

impl SessionStore for DynStore {
    async fn load(&self, id: &SessionId) -> Result<Option<SessionMap>, StoreError> {
        self.0.load(id).await
    }

    async fn create(
        &self,
        id: &SessionId,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.0.create(id, data, ttl).await
    }

    async fn update(&self, id: &SessionId, changes: &ChangeSet) -> Result<SaveOutcome, StoreError> {
        self.0.update(id, changes).await
    }

    async fn renew(
        &self,
        from: &SessionId,
        to: &SessionId,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.0.renew(from, to, changes).await
    }

    async fn touch(&self, id: &SessionId, ttl: Duration) -> Result<bool, StoreError> {
        self.0.touch(id, ttl).await
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.0.delete(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> SessionMap {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn change(key: &str, value: Option<&str>, seen: Option<&str>) -> KeyChange {
        KeyChange::new(key.to_owned(), value.map(Into::into), seen.map(Into::into))
    }

    #[test]
    fn apply_sets_and_removes() {
        let set = ChangeSet::new(
            vec![
                change("a", Some("2"), Some("1")),
                change("b", None, Some("1")),
            ],
            ConflictPolicy::LastWriteWins,
            Duration::from_secs(1),
        );
        let mut record = map(&[("a", "1"), ("b", "1"), ("c", "1")]);
        set.apply_to(&mut record);
        assert_eq!(record, map(&[("a", "2"), ("c", "1")]));
    }

    #[test]
    fn strict_conflicts_only_on_changed_keys() {
        let set = ChangeSet::new(
            vec![
                change("a", Some("2"), Some("1")),
                change("new", Some("1"), None),
            ],
            ConflictPolicy::Strict,
            Duration::from_secs(1),
        );
        assert!(!set.conflicts_with(&map(&[("a", "1"), ("other", "9")])));
        assert!(set.conflicts_with(&map(&[("a", "5")])));
        assert!(set.conflicts_with(&map(&[("a", "1"), ("new", "0")])));
        assert!(set.conflicts_with(&map(&[])));
        let lenient = ChangeSet::new(
            set.changes().to_vec(),
            ConflictPolicy::LastWriteWins,
            Duration::from_secs(1),
        );
        assert!(!lenient.conflicts_with(&map(&[("a", "5")])));
    }
}
