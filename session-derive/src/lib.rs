//! `#[derive(SessionData)]` for `actix-kv-session`.
//!
//! This crate is re-exported by `actix-kv-session` (feature `derive`); depend on that crate
//! rather than on this one. The derive itself lands in a later release: for now the crate
//! only reserves its name and place in the workspace.
