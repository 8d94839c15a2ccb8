//! The JSON layout ([`RedisLayout::Json`]): each session one string at its key, a JSON
//! object of its keys, as `sanic_session` stores it (with `SETEX`), so sessions an app on
//! `sanic_session` wrote keep working after a switch, and both apps can serve one store
//! during it.
//!
//! Redis has no per-key operations on such a string: a save reads it (`GET`), merges its
//! change set in (the strict policy checks the values it read), and writes it with the
//! compare-and-set of `json.lua`, which refuses if the string changed since; the save then
//! reads again, up to [`CAS_ATTEMPTS`] times. A `/counter` is three round-trips (load,
//! read, write) where the hash layout needs two.

use std::time::Duration;

use deadpool_redis::redis::cmd;

use super::{
    super::{
        json_record::{
            self, backoff, decode, is_moved_marker, CAS_ATTEMPTS, RETRIES_WITHOUT_PAUSE,
        },
        moved_marker_ttl, ChangeSet, SaveOutcome, SessionMap,
    },
    millis, outcome, RedisStore, Retry,
};
use crate::error::StoreError;

/// The compare-and-set script of the JSON layout.
pub(super) const JSON_SCRIPT: &str = include_str!("json.lua");

/// How sessions are laid out in Redis.
///
/// ```
/// use actix_kv_session::storage::{RedisLayout, RedisStore};
///
/// // Sessions that an app on `sanic_session` wrote, and still writes, on the same Redis.
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .layout(RedisLayout::Json)
///     .build()?;
/// assert_eq!(RedisLayout::default(), RedisLayout::Hash);
/// # Ok::<(), actix_kv_session::storage::RedisStoreError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisLayout {
    /// One hash per session, one field per key (the default): a save writes only the
    /// fields it changed, in one round-trip.
    #[default]
    Hash,
    /// One string per session, a JSON object of its keys, written with `SET ... PX`: the
    /// layout of `sanic_session`'s Redis interface, for an app moving from it (sessions it
    /// wrote stay valid, and both apps can share the store during the switch). A save reads
    /// the string, merges its changes, and writes it back with a compare-and-set on the
    /// whole value, retrying if another request wrote first: per-key merges, the strict
    /// policy, no resurrection of a deleted session and the TTL hold as in the hash layout,
    /// for one more round-trip per save. Not on a Cluster.
    Json,
}

/// What a key holds, read.
enum Stored {
    Absent,
    /// The moved marker a renew leaves.
    Moved,
    /// A session's record, and the string it was read from.
    Record(SessionMap, Vec<u8>),
}

/// What a read for a save found.
enum Found {
    /// The session's record, and the string it was read from.
    Record(SessionMap, Vec<u8>),
    /// The save ends with this outcome, nothing written.
    Ended(SaveOutcome),
}

impl RedisStore {
    /// What is stored at `key`: a JSON object that is not a session (one with the moved
    /// marker's key, as a Sanic app may have written it back) is the marker.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for a value that is not a JSON object, or a key of another
    /// type.
    async fn read_json(&self, key: &str) -> Result<Stored, StoreError> {
        let get = cmd("GET").arg(key).clone();
        let value = self
            .query::<Option<Vec<u8>>>(&get, Retry::OnceIfDropped)
            .await?;
        stored(value)
    }

    /// The session at `key`, for a load: `None` for no session or the moved marker.
    pub(super) async fn load_json(&self, key: &str) -> Result<Option<SessionMap>, StoreError> {
        Ok(loaded(self.read_json(key).await?))
    }

    /// Stores a new session at `key`, where nothing is stored.
    pub(super) async fn create_json(
        &self,
        key: &str,
        data: &SessionMap,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let value = json_record::encode(data)?;
        let set = cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .clone();
        match self.query::<Option<String>>(&set, Retry::Never).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::IdInUse),
        }
    }

    /// Merges `changes` into the session at `key`; for a renew (`to` given), the merged
    /// session goes to `to` and `key` becomes the marker, in the same compare-and-set.
    pub(super) async fn merge_json(
        &self,
        key: &str,
        to: Option<&str>,
        changes: &ChangeSet,
    ) -> Result<SaveOutcome, StoreError> {
        for attempt in 0..CAS_ATTEMPTS {
            let (record, read) = match self.read_for_save(key, changes).await? {
                Found::Record(record, read) => (record, read),
                Found::Ended(outcome) => return Ok(outcome),
            };
            let mut invocation = self.script.prepare_invoke();
            invocation.key(key);
            if record.is_empty() {
                invocation.arg("e").arg(read);
            } else {
                let ttl = changes.ttl();
                let value = json_record::encode(&record)?;
                match to {
                    None => invocation.arg("w").arg(read).arg(value).arg(millis(ttl)),
                    Some(to) => invocation
                        .key(to)
                        .arg("r")
                        .arg(read)
                        .arg(value)
                        .arg(millis(ttl))
                        .arg(millis(moved_marker_ttl(ttl))),
                };
            }
            let status: String = self.run_script(invocation, Retry::Never).await?;
            match status.as_str() {
                "lost" if attempt + 1 == CAS_ATTEMPTS => {}
                "lost" => {
                    crate::observe::retried("cas_lost");
                    if attempt >= RETRIES_WITHOUT_PAUSE {
                        backoff().await;
                    }
                }
                other => return outcome(other),
            }
        }
        Err(StoreError::Contended(CAS_ATTEMPTS))
    }

    /// The session at `key` with `changes` merged in, and the string it was read from; or
    /// the outcome that ends the save (gone, unreadable, moved, or a strict conflict).
    async fn read_for_save(&self, key: &str, changes: &ChangeSet) -> Result<Found, StoreError> {
        let (mut record, value) = match self.read_json(key).await {
            Ok(Stored::Record(record, value)) => (record, value),
            Ok(Stored::Moved) => return Ok(Found::Ended(SaveOutcome::Moved)),
            // No session, or something this layout never wrote (never written over).
            Ok(Stored::Absent) | Err(StoreError::Corrupt(_)) => {
                return Ok(Found::Ended(SaveOutcome::Gone));
            }
            Err(err) => return Err(err),
        };
        if changes.conflicts_with(&record) {
            return Ok(Found::Ended(SaveOutcome::Conflict));
        }
        changes.apply_to(&mut record);
        Ok(Found::Record(record, value))
    }

    /// Extends the TTL of the session at `key`; `false` when there is none (or the marker).
    pub(super) async fn touch_json(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(key).arg("t").arg(millis(ttl));
        let status: String = self.run_script(invocation, Retry::OnceIfDropped).await?;
        Ok(outcome(&status)? == SaveOutcome::Saved)
    }
}

/// What a key holds, from `GET`'s answer.
fn stored(value: Option<Vec<u8>>) -> Result<Stored, StoreError> {
    let Some(value) = value else {
        return Ok(Stored::Absent);
    };
    let record = decode(&value)?;
    Ok(if is_moved_marker(&record) {
        Stored::Moved
    } else {
        Stored::Record(record, value)
    })
}

/// The session in `GET`'s answer `value`, for a load: `None` for no session or the moved
/// marker.
///
/// # Errors
///
/// As [`RedisStore::read_json`].
pub(super) fn stored_session(value: Option<Vec<u8>>) -> Result<Option<SessionMap>, StoreError> {
    Ok(loaded(stored(value)?))
}

/// What a load finds in `stored`.
fn loaded(stored: Stored) -> Option<SessionMap> {
    match stored {
        Stored::Record(record, _) => Some(record),
        Stored::Absent | Stored::Moved => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::json_record::MOVED_MARKER;

    #[test]
    fn the_marker_is_a_json_object_whose_one_key_is_the_marker_key() {
        let record = decode(MOVED_MARKER).unwrap();
        assert_eq!(record.len(), 1);
        assert!(is_moved_marker(&record));
        assert!(
            JSON_SCRIPT.contains(r#"local MOVED = '{"\\u0000moved":1}'"#),
            "the script's marker differs from MOVED_MARKER"
        );
    }
}
