//! Test harness for actix-kv-session.
