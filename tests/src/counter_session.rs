//! The counter's session at the store level: `foo` as the seed's counter keeps it, and a
//! change set that sets it, for tests that drive a store directly.

use std::time::Duration;

use actix_kv_session::storage::{ChangeSet, ConflictPolicy, KeyChange, SessionMap};

/// A session of one key, `foo = value`.
#[must_use]
pub fn counter(value: &str) -> SessionMap {
    SessionMap::from([("foo".to_owned(), value.to_owned())])
}

/// Sets `foo` to `value`, the request having read `seen`, under `policy`, for ten minutes.
#[must_use]
pub fn set_foo(value: &str, seen: &str, policy: ConflictPolicy) -> ChangeSet {
    let change = KeyChange::new(
        "foo".to_owned(),
        Some(value.to_owned()),
        Some(seen.to_owned()),
    );
    ChangeSet::new(vec![change], policy, Duration::from_mins(10))
}
