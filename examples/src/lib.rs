//! Runnable examples of `actix-kv-session`: see the `[[example]]` targets of this crate.
