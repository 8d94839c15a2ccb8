//! Sessions stored as one JSON object per record, as `sanic_session` stores them: by the
//! Memcached store, and by the Redis store's [`RedisLayout::Json`](super::RedisLayout). Such
//! a record has no per-key operations in the store, so a save reads it, merges its changes
//! in, and writes it back only if it is unchanged since (compare-and-swap), retrying when
//! another request wrote first.

use std::{collections::HashMap, time::Duration};

use serde_json::value::RawValue;

use super::SessionMap;
use crate::error::StoreError;

/// How many times a save re-reads and retries after another request changed the session.
pub(super) const CAS_ATTEMPTS: u32 = 64;
/// How many lost compare-and-swaps a save retries at once before it pauses between
/// attempts ([`backoff`]). A lost attempt re-reads the record, and the re-read alone
/// separates a few racing requests; the pause is for many racing on one session. Pausing
/// from the first loss put the side-by-side benchmark's `/counter` p99 at 3.9 to 4.7 ms
/// (tokio's timer sleeps at least 1 ms); pausing after three, at 1.2 to 1.5 ms; never
/// pausing, at 1.4 to 1.8 ms (memcached's store, `bench/run.py --only ours-memcached`, 32
/// connections on 200 sessions, three rounds each).
pub(super) const RETRIES_WITHOUT_PAUSE: u32 = 3;

/// The marker a renew leaves at the old key (see
/// [`MOVED_MARKER_TTL`](super::MOVED_MARKER_TTL)): itself a JSON object, whose one key no
/// app can set, so a `sanic_session` app that meets it reads a session of one unknown key
/// instead of failing on a value it cannot parse (sanic-sessions answers 500 to a read
/// error, and its memcached client refuses items with client flags).
// The Redis JSON layout writes it from its script (`MOVED` in `redis/json.lua`).
#[cfg(any(test, feature = "memcached"))]
pub(super) const MOVED_MARKER: &[u8] = br#"{"\u0000moved":1}"#;

/// The marker's key: a record that has it is a marker, even after an app that does not
/// know it (a `sanic_session` app) wrote its own keys next to it.
const MOVED_KEY: &str = "\0moved";

/// Whether a record read is the moved marker.
pub(super) fn is_moved_marker(record: &SessionMap) -> bool {
    record.contains_key(MOVED_KEY)
}

/// A record as a JSON object, each value written as the JSON text it is (not re-parsed, so
/// numbers and strings keep their exact form).
///
/// # Errors
///
/// [`StoreError::Corrupt`] when a value is not JSON text.
pub(super) fn encode(record: &SessionMap) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&as_raw(record)?).map_err(StoreError::corrupt)
}

/// The record as a map of raw JSON values, to serialize without re-parsing the values.
fn as_raw(record: &SessionMap) -> Result<HashMap<&str, &RawValue>, StoreError> {
    record
        .iter()
        .map(|(k, v)| {
            let raw: &RawValue = serde_json::from_str(v).map_err(StoreError::corrupt)?;
            Ok((k.as_str(), raw))
        })
        .collect()
}

/// The record a stored value holds: a JSON object, each value kept as its JSON text.
pub(super) fn decode(data: &[u8]) -> Result<SessionMap, StoreError> {
    let map: HashMap<String, Box<RawValue>> =
        serde_json::from_slice(data).map_err(StoreError::corrupt)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, String::from(Box::<str>::from(v))))
        .collect())
}

/// A short random pause, so that requests racing on one session do not retry in lockstep.
pub(super) async fn backoff() {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 4);
    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
}
