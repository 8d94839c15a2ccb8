//! The [`SessionStore`] contract and the stores that implement it.
//!
//! A store keeps one record per session: a map from session keys to JSON texts. The
//! middleware talks to it in loads and change sets, never in whole snapshots, so that
//! concurrent requests on one session that change different keys all persist, and so
//! that a session deleted while a request is in flight is not brought back by that
//! request. Every store keeps the same rules, checked by one conformance suite:
//!
//! - [`load`](SessionStore::load) returns the record, or `None` when the store does not
//!   know the id (never, expired, deleted, or renewed away). A record the store holds but
//!   cannot read at all (a value of another type, an item that is not a JSON object) is
//!   [`StoreError::Corrupt`]: the middleware then treats the id as unknown.
//! - [`save`](SessionStore::save) applies a [`ChangeSet`] atomically. With
//!   [`SaveMode::Create`] it writes only where no record exists
//!   ([`SaveOutcome::IdTaken`] otherwise); with [`SaveMode::Update`] it writes only where the
//!   record still exists and can be read ([`SaveOutcome::Gone`] otherwise, or
//!   [`SaveOutcome::Moved`] when the record was renewed to another id). Under
//!   [`ConflictPolicy::Strict`] a change whose key no longer holds the value it had at load
//!   refuses the whole save ([`SaveOutcome::Conflict`]). A record left with no keys is
//!   deleted ([`SaveOutcome::Emptied`]). A save sets the record's time to live.
//! - [`renew`](SessionStore::renew) moves a record to a new id, applying a change set on
//!   the way, and leaves a marker at the old id for [`MOVED_MARKER_TTL`] (at most the
//!   session's TTL): a save or renew of the old id answers [`SaveOutcome::Moved`] then, so
//!   a request that loaded the session before the renew learns that it moved, and its
//!   changes never reach the renewed session. A load of the old id finds nothing.
//! - [`touch`](SessionStore::touch) resets the time to live without writing data; it is
//!   `false`, and extends nothing, for an id that is unknown or renewed away.
//! - [`delete`](SessionStore::delete) removes whatever is stored at the id, marker included.

use std::{collections::HashMap, future::Future, time::Duration};

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
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
#[doc(inline)]
pub use self::redis::{RedisStore, RedisStoreBuilder, RedisStoreError};

/// A pooled connection idle longer than this is checked before use, so one that died while
/// idle (a server restart) is replaced instead of failing a request. Busy connections are not
/// checked: that would double the round-trips of every request.
#[cfg(any(feature = "redis", feature = "memcached"))]
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Connection pool settings shared by the networked stores' builders.
#[cfg(any(feature = "redis", feature = "memcached"))]
#[derive(Debug, Clone, Copy)]
struct PoolSettings {
    size: usize,
    wait: Duration,
    create: Duration,
    response: Duration,
}

#[cfg(any(feature = "redis", feature = "memcached"))]
impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            size: 16,
            wait: Duration::from_millis(500),
            create: Duration::from_secs(1),
            response: Duration::from_secs(1),
        }
    }
}

#[cfg(any(feature = "redis", feature = "memcached"))]
impl PoolSettings {
    /// The pool's timeouts: a recycle check is one command, so it gets the response timeout.
    fn timeouts(&self) -> deadpool::managed::Timeouts {
        deadpool::managed::Timeouts {
            wait: Some(self.wait),
            create: Some(self.create),
            recycle: Some(self.response),
        }
    }
}

/// A session's stored record: each session key with its value as JSON text.
pub type SessionMap = HashMap<String, String>;

/// How long the old id of a renewed session stays marked as moved: a request still in flight
/// on it when the session was renewed (an asset, an XHR sent before the log-in answered)
/// gets [`SaveOutcome::Moved`] from its save for this long, and a 409 from the middleware,
/// instead of having its changes dropped silently. Later, the old id is simply unknown. A
/// session whose TTL is shorter keeps the marker for its TTL.
pub const MOVED_MARKER_TTL: Duration = Duration::from_mins(5);

/// The marker's time to live for a session whose TTL is `ttl`.
#[cfg(any(feature = "memory", feature = "redis", feature = "memcached"))]
pub(crate) fn moved_marker_ttl(ttl: Duration) -> Duration {
    ttl.min(MOVED_MARKER_TTL)
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

/// Whether a save creates a new record or updates an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveMode {
    /// Write only if no record exists under the id.
    Create,
    /// Write only if the record still exists under the id.
    Update,
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

/// What one request changed in a session, with what it saw at load.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    mode: SaveMode,
    changes: Vec<KeyChange>,
    policy: ConflictPolicy,
    ttl: Duration,
}

impl ChangeSet {
    /// A change set.
    #[must_use]
    pub fn new(
        mode: SaveMode,
        changes: Vec<KeyChange>,
        policy: ConflictPolicy,
        ttl: Duration,
    ) -> Self {
        Self {
            mode,
            changes,
            policy,
            ttl,
        }
    }

    /// Create or update.
    #[must_use]
    pub fn mode(&self) -> SaveMode {
        self.mode
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

    /// Whether a save under the strict policy must be refused because `current` no longer
    /// holds, for some changed key, the value seen at load.
    #[must_use]
    pub fn conflicts_with(&self, current: &SessionMap) -> bool {
        self.policy == ConflictPolicy::Strict
            && self
                .changes
                .iter()
                .any(|c| current.get(&c.key).map(String::as_str) != c.seen())
    }

    /// Applies the changes to `record`, ignoring the conflict policy.
    pub fn apply_to(&self, record: &mut SessionMap) {
        for change in &self.changes {
            match (&change.value, record.get_mut(&change.key)) {
                // Overwrite in place: the stored string's buffer usually fits the new value.
                (Some(value), Some(stored)) => value.clone_into(stored),
                (Some(value), None) => {
                    record.insert(change.key.clone(), value.clone());
                }
                (None, _) => {
                    record.remove(&change.key);
                }
            }
        }
    }
}

/// The result of a save or a renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveOutcome {
    /// The changes are stored.
    Saved,
    /// The changes left the record without keys, and it was deleted.
    Emptied,
    /// An update found no record (deleted or expired since the load), or one it cannot read:
    /// nothing was written.
    Gone,
    /// An update or renew found the marker a renew left: the session moved to another id
    /// since the load. Nothing was written, and the new id is not revealed.
    Moved,
    /// Under the strict policy, a changed key no longer held the value seen at load:
    /// nothing was written.
    Conflict,
    /// A create found a record under the id: nothing was written.
    IdTaken,
}

/// A place to keep sessions: memory, Redis, Memcached, or your own.
///
/// A store is cheap to clone; clones share the same data, so one store can serve every
/// worker of an `HttpServer`. The module docs list the rules each operation keeps.
pub trait SessionStore: Clone + Send + Sync + 'static {
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

    /// Applies a change set to a session atomically (see the module docs).
    ///
    /// The middleware never retries a save: one whose answer was lost (a timeout, a connection
    /// that broke after the command was sent) may have been applied, and the request then
    /// gets a 503 meaning "outcome unknown". A store should not retry one either, unless it
    /// knows the command never reached the server.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store is unreachable, or the result is too large for it.
    fn save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
    ) -> impl Future<Output = Result<SaveOutcome, StoreError>> + Send;

    /// Moves the record of `from` to `to`, applying `changes` on the way (`to` is a fresh
    /// id), and leaves a marker at `from` that makes later saves and renews of it answer
    /// [`SaveOutcome::Moved`] (see [`MOVED_MARKER_TTL`]). [`SaveOutcome::Gone`] when `from` no
    /// longer exists, [`SaveOutcome::Moved`] when it was renewed already; nothing is written
    /// then. Changes that leave no key delete `from` without a marker
    /// ([`SaveOutcome::Emptied`]), as a purge would.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store is unreachable, or the result is too large for it.
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
            SaveMode::Update,
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
            SaveMode::Update,
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
            SaveMode::Update,
            set.changes().to_vec(),
            ConflictPolicy::LastWriteWins,
            Duration::from_secs(1),
        );
        assert!(!lenient.conflicts_with(&map(&[("a", "5")])));
    }
}
