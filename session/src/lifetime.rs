//! A session's own lifetime, kept beside its data in bookkeeping keys of its record (keys
//! that start with NUL, see [`is_bookkeeping`](crate::storage::is_bookkeeping)): when it was
//! created or last renewed (for the absolute timeout), its own TTL and cookie kind ("remember
//! me"), and when its TTL was last extended (for the throttled touch). They come with the
//! load, so reading them costs no round-trip, and the app never sees them: the session
//! splits them off its data when it loads.
//!
//! A record carries only the keys a setting asks for: with the default settings, none.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::storage::{is_bookkeeping, SessionMap};

/// When the session was created or last renewed, in Unix milliseconds: set when the
/// middleware has an absolute timeout.
pub(crate) const CREATED: &str = "\0created";
/// The session's own TTL in seconds, set by [`Session::set_ttl`](crate::Session::set_ttl).
pub(crate) const TTL: &str = "\0ttl";
/// Whether the session's cookie is a browser-session cookie, set by
/// [`Session::set_browser_session`](crate::Session::set_browser_session).
pub(crate) const BROWSER_SESSION: &str = "\0browser";
/// When the TTL was last extended, in Unix milliseconds: set when the middleware throttles
/// its TTL extensions.
pub(crate) const EXTENDED: &str = "\0extended";

/// The longest TTL a session may give itself: the cap browsers put on a cookie's Max-Age.
pub(crate) const MAX_OWN_TTL: Duration = Duration::from_secs(400 * 24 * 3600);

/// Now, in Unix milliseconds.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Moves the bookkeeping keys out of a loaded record's `data`; they are returned apart.
pub(crate) fn split(data: &mut SessionMap) -> SessionMap {
    if !data.keys().any(|key| is_bookkeeping(key)) {
        return SessionMap::new();
    }
    let keys: Vec<String> = data
        .keys()
        .filter(|key| is_bookkeeping(key))
        .cloned()
        .collect();
    keys.into_iter()
        .filter_map(|key| data.remove_entry(&key))
        .collect()
}

/// The number the bookkeeping `meta` holds under `key`.
pub(crate) fn number(meta: &SessionMap, key: &str) -> Option<u64> {
    meta.get(key)?.parse().ok()
}

/// The session's own TTL, if it has one.
pub(crate) fn ttl(meta: &SessionMap) -> Option<Duration> {
    number(meta, TTL).map(Duration::from_secs)
}

/// Whether the session's own cookie kind is a browser-session cookie, if it has one.
pub(crate) fn browser_session(meta: &SessionMap) -> Option<bool> {
    meta.get(BROWSER_SESSION)?.parse().ok()
}

/// Whether a session with bookkeeping `meta` has outlived `absolute` (counted from its
/// creation or last renew) at `now` (Unix milliseconds). A session without a creation time (stored before the
/// timeout was set) has not: it gets one at its next save.
pub(crate) fn outlived(meta: &SessionMap, absolute: Duration, now: u64) -> bool {
    number(meta, CREATED).is_some_and(|created| now.saturating_sub(created) >= millis(absolute))
}

/// Whether a TTL extension is due for a session with bookkeeping `meta`: `interval` has
/// passed since the last one (or there was none on record).
pub(crate) fn extension_due(meta: &SessionMap, interval: Duration, now: u64) -> bool {
    number(meta, EXTENDED).is_none_or(|extended| now.saturating_sub(extended) >= millis(interval))
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

    #[test]
    fn bookkeeping_is_split_from_the_app_s_data() {
        let mut data = map(&[("foo", "1"), (CREATED, "100"), (TTL, "60")]);
        let meta = split(&mut data);
        assert_eq!(data, map(&[("foo", "1")]));
        assert_eq!(meta, map(&[(CREATED, "100"), (TTL, "60")]));
        assert_eq!(ttl(&meta), Some(Duration::from_secs(60)));
        assert_eq!(browser_session(&meta), None);
        let mut plain = map(&[("foo", "1")]);
        assert!(split(&mut plain).is_empty());
    }

    #[test]
    fn the_absolute_timeout_counts_from_creation() {
        let meta = map(&[(CREATED, "1000")]);
        let hour = Duration::from_secs(3600);
        assert!(!outlived(&meta, hour, 1000 + 3_599_999));
        assert!(outlived(&meta, hour, 1000 + 3_600_000));
        assert!(
            !outlived(&SessionMap::new(), hour, u64::MAX),
            "no time on record"
        );
    }

    #[test]
    fn an_extension_is_due_once_the_interval_passed() {
        let meta = map(&[(EXTENDED, "1000")]);
        let minute = Duration::from_secs(60);
        assert!(!extension_due(&meta, minute, 60_999));
        assert!(extension_due(&meta, minute, 61_000));
        assert!(extension_due(&SessionMap::new(), minute, 0));
    }
}
