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
pub use self::redis::{NearCache, RedisLayout, RedisStore, RedisStoreBuilder, RedisStoreError};

/// A session's stored record: each session key with its value as JSON text.
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
/// // Values are JSON texts: the string `ada` is stored as `"ada"`, quotes included.
/// let data = SessionMap::from([
///     ("user".to_owned(), serde_json::to_string("ada").unwrap()),
///     ("visits".to_owned(), serde_json::to_string(&3).unwrap()),
/// ]);
/// assert_eq!(data["user"], r#""ada""#);
///
/// let store = MemoryStore::default();
/// let id = SessionId::generate();
/// store.create(&id, &data, Duration::from_secs(60)).await?;
/// assert_eq!(store.load(&id).await?, Some(data));
/// # Ok::<(), actix_kv_session::StoreError>(())
/// # }).unwrap();
/// ```
pub type SessionMap = HashMap<String, String>;

/// Whether `key` is the middleware's bookkeeping rather than the app's: it starts with a NUL
/// character, which [`Session::insert`](crate::Session::insert) refuses. A record holds such
/// keys beside the app's (when the session was created or renewed, its own TTL, when its
/// TTL was last extended); a store keeps them as any other key, except that
/// [`ConflictPolicy::Strict`] never checks them ([`ChangeSet::conflicts_with`] skips them).
///
/// ```
/// use actix_kv_session::storage::{is_bookkeeping, SessionMap};
///
/// assert!(is_bookkeeping("\0created"));
/// assert!(!is_bookkeeping("user"));
///
/// // A store's admin page shows the app's keys only.
/// let mut record = SessionMap::from([
///     ("user".to_owned(), r#""ada""#.to_owned()),
///     ("\0created".to_owned(), "1700000000000".to_owned()),
/// ]);
/// record.retain(|key, _| !is_bookkeeping(key));
/// assert_eq!(record.len(), 1);
/// ```
#[must_use]
pub fn is_bookkeeping(key: &str) -> bool {
    key.starts_with('\0')
}

/// How long the old id of a renewed session stays marked as moved: a request still in flight
/// on it when the session was renewed (an asset, an XHR sent before the log-in answered)
/// gets [`SaveOutcome::Moved`] from its update for this long, and a 409 from the middleware,
/// instead of having its changes dropped silently. Later, the old id is simply unknown. A
/// session whose TTL is shorter keeps the marker for its TTL.
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::storage::{
///     ChangeSet, ConflictPolicy, MemoryStore, SaveOutcome, SessionMap, SessionStore,
///     MOVED_MARKER_TTL,
/// };
/// use actix_kv_session::SessionId;
///
/// assert_eq!(MOVED_MARKER_TTL, Duration::from_secs(5 * 60));
///
/// # actix_web::rt::System::new().block_on(async {
/// let store = MemoryStore::default();
/// let (old, new) = (SessionId::generate(), SessionId::generate());
/// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
/// let ttl = Duration::from_secs(3600);
/// store.create(&old, &data, ttl).await?;
/// let nothing = ChangeSet::new(Vec::new(), ConflictPolicy::LastWriteWins, ttl);
/// store.renew(&old, &new, &nothing).await?;
///
/// // Within MOVED_MARKER_TTL, a request that loaded the old id learns that it moved.
/// assert_eq!(store.update(&old, &nothing).await?, SaveOutcome::Moved);
/// # Ok::<(), actix_kv_session::StoreError>(())
/// # }).unwrap();
/// ```
pub const MOVED_MARKER_TTL: Duration = Duration::from_secs(5 * 60);

/// The marker's time to live for a session whose TTL is `ttl`:
/// `min(ttl, MOVED_MARKER_TTL)`.
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::storage::{moved_marker_ttl, MOVED_MARKER_TTL};
///
/// // In a store's renew: how long the marker at the old id lives.
/// assert_eq!(moved_marker_ttl(Duration::from_secs(3600)), MOVED_MARKER_TTL);
/// assert_eq!(moved_marker_ttl(Duration::from_secs(60)), Duration::from_secs(60));
/// ```
#[must_use]
pub fn moved_marker_ttl(ttl: Duration) -> Duration {
    ttl.min(MOVED_MARKER_TTL)
}

/// The prefix of every session's key in a key-value store (`session:` by default, as
/// `sanic_session`'s), and the keys built with it.
///
/// ```
/// use actix_kv_session::{storage::KeyPrefix, SessionId};
///
/// // What a store of your own keeps: the prefix, built once.
/// let prefix = KeyPrefix::default();
/// let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
/// assert_eq!(prefix.key(&id), "session:0123456789abcdef0123456789abcdef");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(Arc<str>);

impl KeyPrefix {
    /// The prefix `sanic_session` uses.
    ///
    /// ```
    /// use actix_kv_session::storage::KeyPrefix;
    ///
    /// assert_eq!(KeyPrefix::DEFAULT, "session:");
    /// assert_eq!(KeyPrefix::default().as_str(), KeyPrefix::DEFAULT);
    /// ```
    pub const DEFAULT: &'static str = "session:";

    /// A prefix.
    ///
    /// ```
    /// use actix_kv_session::{storage::KeyPrefix, SessionId};
    ///
    /// // Two apps on one store, each with its own sessions.
    /// let prefix = KeyPrefix::new("shop:session:");
    /// let id = SessionId::generate();
    /// assert!(prefix.key(&id).starts_with("shop:session:"));
    /// ```
    #[must_use]
    pub fn new(prefix: impl Into<String>) -> Self {
        Self(prefix.into().into())
    }

    /// The prefix itself.
    ///
    /// ```
    /// use actix_kv_session::storage::KeyPrefix;
    ///
    /// let prefix = KeyPrefix::new("shop:session:");
    /// // For a scan of every session: `SCAN 0 MATCH shop:session:*`.
    /// assert_eq!(format!("{}*", prefix.as_str()), "shop:session:*");
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of a session: the prefix, then the id.
    ///
    /// ```
    /// use actix_kv_session::{storage::KeyPrefix, SessionId};
    ///
    /// let id = SessionId::generate();
    /// let key = KeyPrefix::default().key(&id);
    /// assert_eq!(key, format!("session:{id}"));
    /// ```
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
///
/// The middleware takes it from
/// [`SessionMiddlewareBuilder::conflict_policy`](crate::SessionMiddlewareBuilder::conflict_policy)
/// and hands it to the store in each [`ChangeSet`]. Two requests that loaded `n = 1` and
/// both set it, on a `MemoryStore`:
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::storage::{
///     ChangeSet, ConflictPolicy, KeyChange, MemoryStore, SaveOutcome, SessionMap, SessionStore,
/// };
/// use actix_kv_session::SessionId;
///
/// # actix_web::rt::System::new().block_on(async {
/// let store = MemoryStore::default();
/// let id = SessionId::generate();
/// let ttl = Duration::from_secs(60);
/// store.create(&id, &SessionMap::from([("n".to_owned(), "1".to_owned())]), ttl).await?;
/// let set_n = |value: &str, policy| {
///     let change = KeyChange::new("n".to_owned(), Some(value.to_owned()), Some("1".to_owned()));
///     ChangeSet::new(vec![change], policy, ttl)
/// };
///
/// // The first save finds `n` as it was loaded.
/// let first = set_n("2", ConflictPolicy::Strict);
/// assert_eq!(store.update(&id, &first).await?, SaveOutcome::Saved);
/// // The second would overwrite a value it never saw: refused under the strict policy...
/// let second = set_n("3", ConflictPolicy::Strict);
/// assert_eq!(store.update(&id, &second).await?, SaveOutcome::Conflict);
/// // ...and applied under the default one.
/// let second = set_n("3", ConflictPolicy::LastWriteWins);
/// assert_eq!(store.update(&id, &second).await?, SaveOutcome::Saved);
/// assert_eq!(store.load(&id).await?.unwrap()["n"], "3");
/// # Ok::<(), actix_kv_session::StoreError>(())
/// # }).unwrap();
/// ```
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
///
/// ```
/// use actix_kv_session::storage::KeyChange;
///
/// // A request that loaded `theme = "light"` and set it to "dark".
/// let change = KeyChange::new(
///     "theme".to_owned(),
///     Some(r#""dark""#.to_owned()),
///     Some(r#""light""#.to_owned()),
/// );
/// assert_eq!(change.key(), "theme");
/// assert_eq!(change.value(), Some(r#""dark""#));
/// assert_eq!(change.seen(), Some(r#""light""#));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    key: String,
    value: Option<String>,
    seen: Option<String>,
}

impl KeyChange {
    /// A change of `key` to `value` (`None` removes the key), where the key held `seen`
    /// when the session was loaded.
    ///
    /// ```
    /// use actix_kv_session::storage::KeyChange;
    ///
    /// // Sets a key that was absent at load.
    /// let added = KeyChange::new("cart".to_owned(), Some("[]".to_owned()), None);
    /// // Removes a key that held `"ada"` at load.
    /// let removed = KeyChange::new("user".to_owned(), None, Some(r#""ada""#.to_owned()));
    /// assert_eq!(added.seen(), None);
    /// assert_eq!(removed.value(), None);
    /// ```
    #[must_use]
    pub fn new(key: String, value: Option<String>, seen: Option<String>) -> Self {
        Self { key, value, seen }
    }

    /// The session key.
    ///
    /// ```
    /// use actix_kv_session::storage::{is_bookkeeping, KeyChange};
    ///
    /// let change = KeyChange::new("user".to_owned(), None, Some(r#""ada""#.to_owned()));
    /// assert_eq!(change.key(), "user");
    /// assert!(!is_bookkeeping(change.key()));
    /// ```
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The new value as JSON text, or `None` when the key is removed.
    ///
    /// ```
    /// use actix_kv_session::storage::KeyChange;
    ///
    /// // How a store of your own writes one change: a hash field set or deleted.
    /// let change = KeyChange::new("visits".to_owned(), Some("2".to_owned()), None);
    /// let command = match change.value() {
    ///     Some(json) => format!("HSET {} {json}", change.key()),
    ///     None => format!("HDEL {}", change.key()),
    /// };
    /// assert_eq!(command, "HSET visits 2");
    /// ```
    #[must_use]
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// The value the key held when the session was loaded, or `None` if it was absent.
    ///
    /// ```
    /// use actix_kv_session::storage::{KeyChange, Record, SessionMap};
    ///
    /// // The strict policy's test, key by key: does the stored value still match?
    /// let change = KeyChange::new("n".to_owned(), Some("2".to_owned()), Some("1".to_owned()));
    /// let stored = SessionMap::from([("n".to_owned(), "5".to_owned())]);
    /// assert_ne!(Record::get(&stored, change.key()), change.seen());
    /// ```
    #[must_use]
    pub fn seen(&self) -> Option<&str> {
        self.seen.as_deref()
    }
}

/// A stored session's keys and values, as [`ChangeSet::apply_to`] and
/// [`ChangeSet::conflicts_with`] read and change them. [`SessionMap`] is one; a store may
/// keep its own compact form.
///
/// ```
/// use std::{collections::BTreeMap, time::Duration};
///
/// use actix_kv_session::storage::{ChangeSet, ConflictPolicy, KeyChange, Record};
///
/// /// A store's own form of a record: sorted, as it writes it.
/// #[derive(Default)]
/// struct Sorted(BTreeMap<String, String>);
///
/// impl Record for Sorted {
///     fn get(&self, key: &str) -> Option<&str> {
///         self.0.get(key).map(String::as_str)
///     }
///     fn set(&mut self, key: &str, value: &str) {
///         self.0.insert(key.to_owned(), value.to_owned());
///     }
///     fn remove(&mut self, key: &str) {
///         self.0.remove(key);
///     }
/// }
///
/// let mut record = Sorted::default();
/// let changes = ChangeSet::new(
///     vec![KeyChange::new("user".to_owned(), Some(r#""ada""#.to_owned()), None)],
///     ConflictPolicy::Strict,
///     Duration::from_secs(60),
/// );
/// assert!(!changes.conflicts_with(&record));
/// changes.apply_to(&mut record);
/// assert_eq!(record.get("user"), Some(r#""ada""#));
/// ```
pub trait Record {
    /// The value of `key`, if it has one.
    ///
    /// ```
    /// use actix_kv_session::storage::{Record, SessionMap};
    ///
    /// let record = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// // `Record::get` gives `&str`, where `HashMap::get` gives `&String`.
    /// assert_eq!(Record::get(&record, "user"), Some(r#""ada""#));
    /// assert_eq!(Record::get(&record, "cart"), None);
    /// ```
    fn get(&self, key: &str) -> Option<&str>;
    /// Sets `key` to `value`.
    ///
    /// ```
    /// use actix_kv_session::storage::{Record, SessionMap};
    ///
    /// let mut record = SessionMap::new();
    /// record.set("visits", "1");
    /// record.set("visits", "2");
    /// assert_eq!(record["visits"], "2");
    /// ```
    fn set(&mut self, key: &str, value: &str);
    /// Removes `key`.
    ///
    /// ```
    /// use actix_kv_session::storage::{Record, SessionMap};
    ///
    /// let mut record = SessionMap::from([("flash".to_owned(), r#""saved""#.to_owned())]);
    /// Record::remove(&mut record, "flash");
    /// Record::remove(&mut record, "absent"); // nothing to remove: no error
    /// assert!(record.is_empty());
    /// ```
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
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::storage::{
///     ChangeSet, ConflictPolicy, KeyChange, MemoryStore, SaveOutcome, SessionMap, SessionStore,
/// };
/// use actix_kv_session::SessionId;
///
/// # actix_web::rt::System::new().block_on(async {
/// let store = MemoryStore::default();
/// let id = SessionId::generate();
/// let ttl = Duration::from_secs(60);
/// let loaded = SessionMap::from([
///     ("user".to_owned(), r#""ada""#.to_owned()),
///     ("flash".to_owned(), r#""saved""#.to_owned()),
/// ]);
/// store.create(&id, &loaded, ttl).await?;
///
/// // One request's changes: `theme` set, `flash` removed; `user` was not touched.
/// let changes = ChangeSet::new(
///     vec![
///         KeyChange::new("theme".to_owned(), Some(r#""dark""#.to_owned()), None),
///         KeyChange::new("flash".to_owned(), None, Some(r#""saved""#.to_owned())),
///     ],
///     ConflictPolicy::LastWriteWins,
///     ttl,
/// );
/// assert_eq!(store.update(&id, &changes).await?, SaveOutcome::Saved);
/// let stored = store.load(&id).await?.unwrap();
/// assert_eq!(stored.len(), 2);
/// assert_eq!(stored["theme"], r#""dark""#);
/// # Ok::<(), actix_kv_session::StoreError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ChangeSet {
    changes: Vec<KeyChange>,
    policy: ConflictPolicy,
    ttl: Duration,
}

impl ChangeSet {
    /// A change set: `changes` under `policy`, and the record's time to live from now.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::{ChangeSet, ConflictPolicy, KeyChange};
    ///
    /// let changes = ChangeSet::new(
    ///     vec![KeyChange::new("visits".to_owned(), Some("2".to_owned()), Some("1".to_owned()))],
    ///     ConflictPolicy::LastWriteWins,
    ///     Duration::from_secs(30 * 24 * 3600),
    /// );
    /// assert_eq!(changes.changes().len(), 1);
    /// ```
    #[must_use]
    pub fn new(changes: Vec<KeyChange>, policy: ConflictPolicy, ttl: Duration) -> Self {
        Self {
            changes,
            policy,
            ttl,
        }
    }

    /// The changed keys.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::{ChangeSet, ConflictPolicy, KeyChange};
    ///
    /// let changes = ChangeSet::new(
    ///     vec![
    ///         KeyChange::new("theme".to_owned(), Some(r#""dark""#.to_owned()), None),
    ///         KeyChange::new("flash".to_owned(), None, Some(r#""saved""#.to_owned())),
    ///     ],
    ///     ConflictPolicy::LastWriteWins,
    ///     Duration::from_secs(60),
    /// );
    /// // A store of your own sends the sets and the deletes apart.
    /// let (set, removed): (Vec<_>, Vec<_>) =
    ///     changes.changes().iter().partition(|change| change.value().is_some());
    /// assert_eq!(set[0].key(), "theme");
    /// assert_eq!(removed[0].key(), "flash");
    /// ```
    #[must_use]
    pub fn changes(&self) -> &[KeyChange] {
        &self.changes
    }

    /// How to treat a key that changed since load.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::{ChangeSet, ConflictPolicy};
    ///
    /// let changes = ChangeSet::new(Vec::new(), ConflictPolicy::Strict, Duration::from_secs(60));
    /// // A store that compares values itself (in a server-side script) passes this on.
    /// let strict = changes.policy() == ConflictPolicy::Strict;
    /// assert!(strict);
    /// ```
    #[must_use]
    pub fn policy(&self) -> ConflictPolicy {
        self.policy
    }

    /// The record's time to live from now.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::{ChangeSet, ConflictPolicy};
    ///
    /// let changes =
    ///     ChangeSet::new(Vec::new(), ConflictPolicy::LastWriteWins, Duration::from_secs(3600));
    /// // What a Redis store sends with the write: `PEXPIRE key 3600000`.
    /// assert_eq!(changes.ttl().as_millis(), 3_600_000);
    /// ```
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the change set must be refused because it is under the strict policy and
    /// `current` no longer holds, for some changed key, the value seen at load. Bookkeeping
    /// keys ([`is_bookkeeping`]) are not checked.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::{ChangeSet, ConflictPolicy, KeyChange, SessionMap};
    ///
    /// // Loaded with `n = 1`, sets `n = 2`.
    /// let change = KeyChange::new("n".to_owned(), Some("2".to_owned()), Some("1".to_owned()));
    /// let changes = ChangeSet::new(vec![change], ConflictPolicy::Strict, Duration::from_secs(60));
    ///
    /// let unchanged = SessionMap::from([("n".to_owned(), "1".to_owned())]);
    /// let changed_meanwhile = SessionMap::from([("n".to_owned(), "7".to_owned())]);
    /// assert!(!changes.conflicts_with(&unchanged));
    /// assert!(changes.conflicts_with(&changed_meanwhile));
    /// ```
    #[must_use]
    pub fn conflicts_with(&self, current: &impl Record) -> bool {
        self.policy == ConflictPolicy::Strict
            && self
                .changes
                .iter()
                .any(|c| !is_bookkeeping(&c.key) && current.get(&c.key) != c.seen())
    }

    /// Applies the changes to `record`, ignoring the conflict policy.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::storage::{ChangeSet, ConflictPolicy, KeyChange, SessionMap};
    ///
    /// // A store of your own, under its lock: check, then apply.
    /// let mut record = SessionMap::from([
    ///     ("user".to_owned(), r#""ada""#.to_owned()),
    ///     ("flash".to_owned(), r#""saved""#.to_owned()),
    /// ]);
    /// let changes = ChangeSet::new(
    ///     vec![
    ///         KeyChange::new("flash".to_owned(), None, Some(r#""saved""#.to_owned())),
    ///         KeyChange::new("theme".to_owned(), Some(r#""dark""#.to_owned()), None),
    ///     ],
    ///     ConflictPolicy::Strict,
    ///     Duration::from_secs(60),
    /// );
    /// if !changes.conflicts_with(&record) {
    ///     changes.apply_to(&mut record);
    /// }
    /// assert_eq!(
    ///     record,
    ///     SessionMap::from([
    ///         ("user".to_owned(), r#""ada""#.to_owned()),
    ///         ("theme".to_owned(), r#""dark""#.to_owned()),
    ///     ])
    /// );
    /// ```
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
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::storage::{
///     ChangeSet, ConflictPolicy, KeyChange, MemoryStore, SaveOutcome, SessionMap, SessionStore,
/// };
/// use actix_kv_session::SessionId;
///
/// # actix_web::rt::System::new().block_on(async {
/// let store = MemoryStore::default();
/// let ttl = Duration::from_secs(60);
/// let (id, renewed) = (SessionId::generate(), SessionId::generate());
/// store.create(&id, &SessionMap::from([("n".to_owned(), "1".to_owned())]), ttl).await?;
/// let change = |value: Option<&str>, seen: &str, policy| {
///     let change = KeyChange::new("n".to_owned(), value.map(Into::into), Some(seen.to_owned()));
///     ChangeSet::new(vec![change], policy, ttl)
/// };
/// let set_2 = change(Some("2"), "1", ConflictPolicy::Strict);
///
/// assert_eq!(store.update(&id, &set_2).await?, SaveOutcome::Saved);
/// // A request that also loaded `n = 1`, under the strict policy.
/// assert_eq!(store.update(&id, &set_2).await?, SaveOutcome::Conflict);
/// // Never stored, or deleted since the load.
/// let unknown = SessionId::generate();
/// assert_eq!(store.update(&unknown, &set_2).await?, SaveOutcome::Gone);
/// // Renewed since the load.
/// let nothing = ChangeSet::new(Vec::new(), ConflictPolicy::LastWriteWins, ttl);
/// assert_eq!(store.renew(&id, &renewed, &nothing).await?, SaveOutcome::Saved);
/// assert_eq!(store.update(&id, &set_2).await?, SaveOutcome::Moved);
/// // The last key removed: the record is deleted.
/// let remove = change(None, "2", ConflictPolicy::LastWriteWins);
/// assert_eq!(store.update(&renewed, &remove).await?, SaveOutcome::Emptied);
/// assert_eq!(store.load(&renewed).await?, None);
/// # Ok::<(), actix_kv_session::StoreError>(())
/// # }).unwrap();
/// ```
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
///
/// ```
/// use std::time::Duration;
///
/// use actix_kv_session::{
///     storage::{
///         ChangeSet, ConflictPolicy, DynStore, KeyChange, MemoryStore, SaveOutcome, SessionMap,
///         SessionStore,
///     },
///     SessionId, StoreError,
/// };
///
/// /// A visitor's first requests, as the middleware makes them, on any store.
/// async fn first_visits<S: SessionStore>(store: &S) -> Result<(), StoreError> {
///     let id = SessionId::generate();
///     let ttl = Duration::from_secs(60);
///     // The first request stores a new session.
///     let data = SessionMap::from([("visits".to_owned(), "1".to_owned())]);
///     store.create(&id, &data, ttl).await?;
///     // The next one loads it, then saves the key it changed.
///     let loaded = store.load(&id).await?.expect("just stored");
///     let seen = loaded.get("visits").cloned();
///     let change = KeyChange::new("visits".to_owned(), Some("2".to_owned()), seen);
///     let changes = ChangeSet::new(vec![change], ConflictPolicy::LastWriteWins, ttl);
///     assert_eq!(store.update(&id, &changes).await?, SaveOutcome::Saved);
///     // Log-out.
///     store.delete(&id).await?;
///     assert_eq!(store.load(&id).await?, None);
///     Ok(())
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// first_visits(&MemoryStore::default()).await?;
/// first_visits(&DynStore::new(MemoryStore::default())).await?;
/// # Ok::<(), StoreError>(())
/// # }).unwrap();
/// ```
pub trait SessionStore: Send + Sync + 'static {
    /// Reads a session's record; `None` when the store does not know the id, or the id was
    /// renewed away.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] when the store holds something at the id that it cannot read
    /// as a record (the middleware treats the id as unknown); another [`StoreError`] when the
    /// store is unreachable.
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
    /// assert_eq!(store.load(&id).await?, None); // never stored
    ///
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&id, &data, Duration::from_secs(60)).await?;
    /// assert_eq!(store.load(&id).await?, Some(data));
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
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
    /// let store = MemoryStore::default();
    /// let id = SessionId::generate();
    /// let ttl = Duration::from_secs(60);
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&id, &data, ttl).await?;
    ///
    /// // Never over what is stored.
    /// let other = SessionMap::from([("user".to_owned(), r#""eve""#.to_owned())]);
    /// let again = store.create(&id, &other, ttl).await;
    /// assert!(matches!(again, Err(StoreError::IdInUse)));
    /// assert_eq!(store.load(&id).await?, Some(data));
    /// # Ok::<(), StoreError>(())
    /// # }).unwrap();
    /// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{
    ///         ChangeSet, ConflictPolicy, KeyChange, MemoryStore, SaveOutcome, SessionMap,
    ///         SessionStore,
    ///     },
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store = MemoryStore::default();
    /// let id = SessionId::generate();
    /// let ttl = Duration::from_secs(60);
    /// let data = SessionMap::from([("a".into(), "1".into()), ("b".into(), "1".into())]);
    /// store.create(&id, &data, ttl).await?;
    ///
    /// // Two requests that loaded the session change different keys: both persist.
    /// let set = |key: &str| {
    ///     let change = KeyChange::new(key.to_owned(), Some("2".to_owned()), Some("1".to_owned()));
    ///     ChangeSet::new(vec![change], ConflictPolicy::LastWriteWins, ttl)
    /// };
    /// assert_eq!(store.update(&id, &set("a")).await?, SaveOutcome::Saved);
    /// assert_eq!(store.update(&id, &set("b")).await?, SaveOutcome::Saved);
    /// let stored = store.load(&id).await?.unwrap();
    /// assert_eq!((stored["a"].as_str(), stored["b"].as_str()), ("2", "2"));
    ///
    /// // A session deleted meanwhile is not brought back.
    /// store.delete(&id).await?;
    /// assert_eq!(store.update(&id, &set("a")).await?, SaveOutcome::Gone);
    /// assert_eq!(store.load(&id).await?, None);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
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
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{
    ///         ChangeSet, ConflictPolicy, KeyChange, MemoryStore, SaveOutcome, SessionMap,
    ///         SessionStore,
    ///     },
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store = MemoryStore::default();
    /// let (before_log_in, after_log_in) = (SessionId::generate(), SessionId::generate());
    /// let ttl = Duration::from_secs(60);
    /// let cart = SessionMap::from([("cart".to_owned(), r#"["apple"]"#.to_owned())]);
    /// store.create(&before_log_in, &cart, ttl).await?;
    ///
    /// // Log-in: the session moves to a fresh id, with the user added on the way.
    /// let log_in = ChangeSet::new(
    ///     vec![KeyChange::new("user".to_owned(), Some(r#""ada""#.to_owned()), None)],
    ///     ConflictPolicy::LastWriteWins,
    ///     ttl,
    /// );
    /// let outcome = store.renew(&before_log_in, &after_log_in, &log_in).await?;
    /// assert_eq!(outcome, SaveOutcome::Saved);
    /// assert_eq!(store.load(&after_log_in).await?.unwrap().len(), 2);
    /// // The old id finds nothing, and a request still on it learns that it moved.
    /// assert_eq!(store.load(&before_log_in).await?, None);
    /// let late = ChangeSet::new(Vec::new(), ConflictPolicy::LastWriteWins, ttl);
    /// assert_eq!(store.update(&before_log_in, &late).await?, SaveOutcome::Moved);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
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
    ///
    /// // A request that only read the session, under `TtlExtension::OnEveryRequest`.
    /// assert!(store.touch(&id, Duration::from_secs(3600)).await?);
    /// assert!(!store.touch(&SessionId::generate(), Duration::from_secs(3600)).await?);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
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
    ///
    /// store.delete(&id).await?; // log-out
    /// assert_eq!(store.load(&id).await?, None);
    /// store.delete(&id).await?; // already gone: not an error
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// [`SessionStore`] as a trait object: each operation returns a boxed future. Every
/// `SessionStore` is one; [`DynStore`] holds one behind an `Arc`.
///
/// ```
/// use std::{sync::Arc, time::Duration};
///
/// use actix_kv_session::{
///     storage::{DynSessionStore, MemoryStore, SessionMap},
///     SessionId,
/// };
///
/// # actix_web::rt::System::new().block_on(async {
/// // Stores of different types in one list, for an admin tool that reads them all.
/// let stores: Vec<Arc<dyn DynSessionStore>> =
///     vec![Arc::new(MemoryStore::default()), Arc::new(MemoryStore::default())];
/// let id = SessionId::generate();
/// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
/// stores[0].create(&id, &data, Duration::from_secs(60)).await?;
///
/// let mut found = 0;
/// for store in &stores {
///     found += usize::from(store.load(&id).await?.is_some());
/// }
/// assert_eq!(found, 1);
/// # Ok::<(), actix_kv_session::StoreError>(())
/// # }).unwrap();
/// ```
pub trait DynSessionStore: Send + Sync + 'static {
    /// [`SessionStore::load`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{DynSessionStore, MemoryStore, SessionMap},
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store: &dyn DynSessionStore = &MemoryStore::default();
    /// let id = SessionId::generate();
    /// assert_eq!(store.load(&id).await?, None);
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&id, &data, Duration::from_secs(60)).await?;
    /// assert_eq!(store.load(&id).await?, Some(data));
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    fn load<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> BoxFuture<'a, Result<Option<SessionMap>, StoreError>>;
    /// [`SessionStore::create`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{DynSessionStore, MemoryStore, SessionMap},
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store: &dyn DynSessionStore = &MemoryStore::default();
    /// let id = SessionId::generate();
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&id, &data, Duration::from_secs(60)).await?;
    /// assert!(store.create(&id, &data, Duration::from_secs(60)).await.is_err()); // IdInUse
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    fn create<'a>(
        &'a self,
        id: &'a SessionId,
        data: &'a SessionMap,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// [`SessionStore::update`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{
    ///         ChangeSet, ConflictPolicy, DynSessionStore, KeyChange, MemoryStore, SaveOutcome,
    ///         SessionMap,
    ///     },
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store: &dyn DynSessionStore = &MemoryStore::default();
    /// let id = SessionId::generate();
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&id, &data, Duration::from_secs(60)).await?;
    /// let changes = ChangeSet::new(
    ///     vec![KeyChange::new("theme".to_owned(), Some(r#""dark""#.to_owned()), None)],
    ///     ConflictPolicy::LastWriteWins,
    ///     Duration::from_secs(60),
    /// );
    /// assert_eq!(store.update(&id, &changes).await?, SaveOutcome::Saved);
    /// assert_eq!(store.load(&id).await?.unwrap().len(), 2);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    fn update<'a>(
        &'a self,
        id: &'a SessionId,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<SaveOutcome, StoreError>>;
    /// [`SessionStore::renew`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{
    ///         ChangeSet, ConflictPolicy, DynSessionStore, KeyChange, MemoryStore, SaveOutcome,
    ///         SessionMap,
    ///     },
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store: &dyn DynSessionStore = &MemoryStore::default();
    /// let id = SessionId::generate();
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&id, &data, Duration::from_secs(60)).await?;
    /// let fresh = SessionId::generate();
    /// let ttl = Duration::from_secs(60);
    /// let nothing = ChangeSet::new(Vec::new(), ConflictPolicy::LastWriteWins, ttl);
    /// assert_eq!(store.renew(&id, &fresh, &nothing).await?, SaveOutcome::Saved);
    /// assert_eq!(store.load(&fresh).await?, Some(data));
    /// assert_eq!(store.load(&id).await?, None);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    fn renew<'a>(
        &'a self,
        from: &'a SessionId,
        to: &'a SessionId,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<SaveOutcome, StoreError>>;
    /// [`SessionStore::touch`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{DynSessionStore, MemoryStore, SessionMap},
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store: &dyn DynSessionStore = &MemoryStore::default();
    /// let id = SessionId::generate();
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&id, &data, Duration::from_secs(60)).await?;
    /// assert!(store.touch(&id, Duration::from_secs(3600)).await?);
    /// assert!(!store.touch(&SessionId::generate(), Duration::from_secs(3600)).await?);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
    fn touch<'a>(
        &'a self,
        id: &'a SessionId,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// [`SessionStore::delete`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_kv_session::{
    ///     storage::{DynSessionStore, MemoryStore, SessionMap},
    ///     SessionId,
    /// };
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store: &dyn DynSessionStore = &MemoryStore::default();
    /// let id = SessionId::generate();
    /// let data = SessionMap::from([("user".to_owned(), r#""ada""#.to_owned())]);
    /// store.create(&id, &data, Duration::from_secs(60)).await?;
    /// store.delete(&id).await?;
    /// assert_eq!(store.load(&id).await?, None);
    /// # Ok::<(), actix_kv_session::StoreError>(())
    /// # }).unwrap();
    /// ```
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
    ///
    /// ```
    /// use actix_kv_session::{
    ///     storage::{DynStore, MemoryStore},
    ///     Session, SessionMiddleware,
    /// };
    /// use actix_web::{test, web, App};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let store = DynStore::new(MemoryStore::default());
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(store))
    ///         .route("/", web::get().to(|session: Session| async move {
    ///             session.insert("user", "ada").map(|()| "hello")
    ///         })),
    /// )
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// assert_eq!(res.response().cookies().next().unwrap().name(), "session");
    /// # });
    /// ```
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
