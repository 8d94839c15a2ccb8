//! Test harness for actix-kv-session: the app the tests drive, store wrappers that count
//! calls or inject faults, a real HTTP server on a free loopback port, and the middleware
//! suite every store runs (written once, instantiated per store with the macro below). The
//! store conformance suite is the library's own, public one (feature `testing`).

// Every public function here is a test or a helper of one: panicking is how it fails.
#![allow(clippy::missing_panics_doc)]

pub mod app;
pub mod certificates;
pub mod counter_session;
pub mod faults;
pub mod instances;
pub mod lifecycle;
pub mod logs;
pub mod proxy;
pub mod races;
pub mod redis_topologies;
pub mod server;
pub mod servers;
pub mod stores;
pub mod suite;
pub mod tls_memcached;

use actix_kv_session::{
    storage::{SessionMap, SessionStore},
    SessionId,
};
use actix_web::{cookie::Cookie, http::header::HeaderMap};

/// An error and its causes, on one line (`error: cause: cause's cause`).
#[must_use]
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line = format!("{line}: {cause}");
        source = cause.source();
    }
    line
}

/// Stores a session holding `pairs` (keys and JSON texts) for a minute, directly in the
/// store; returns its id.
pub async fn seed<S: SessionStore>(store: &S, pairs: &[(&str, &str)]) -> SessionId {
    let data: SessionMap = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let id = SessionId::generate();
    store
        .create(&id, &data, std::time::Duration::from_mins(1))
        .await
        .expect("create a session");
    id
}

/// The `Set-Cookie` headers of a response, parsed.
#[must_use]
pub fn set_cookies(headers: &HeaderMap) -> Vec<Cookie<'static>> {
    headers
        .get_all(actix_web::http::header::SET_COOKIE)
        .map(|v| {
            let text = v.to_str().expect("Set-Cookie is ASCII").to_owned();
            Cookie::parse(text).expect("Set-Cookie parses")
        })
        .collect()
}

/// The one `Set-Cookie` named `session`, if any; fails on more than one.
#[must_use]
pub fn session_cookie(headers: &HeaderMap) -> Option<Cookie<'static>> {
    let mut cookies: Vec<_> = set_cookies(headers)
        .into_iter()
        .filter(|c| c.name() == "session")
        .collect();
    assert!(
        cookies.len() <= 1,
        "more than one session Set-Cookie: {cookies:?}"
    );
    cookies.pop()
}

/// Instantiates the middleware suite: end-to-end behaviour through actix-web (test service
/// and real HTTP) on top of a store. `$make` is an expression giving a fresh, empty store
/// and whatever must live as long as the store (its server process); each case evaluates it
/// anew.
#[macro_export]
macro_rules! session_suite {
    ($make:expr) => {
        $crate::session_suite!(@cases $make;
            counter_counts_per_visitor,
            new_visitor_gets_no_cookie_until_something_is_stored,
            default_cookie_attributes,
            unknown_id_gets_a_fresh_one_and_is_never_written,
            only_changed_keys_are_written,
            emptied_session_is_deleted_and_cookie_removed,
            renew_moves_the_session_to_a_new_id,
            purge_deletes_and_removes_cookie,
            purge_then_insert_starts_a_new_session,
            server_error_discards_changes,
            session_expires_after_ttl,
            every_request_policy_extends_ttl_and_cookie,
            two_extractors_share_one_load,
            concurrent_requests_on_different_keys_all_persist,
            strict_policy_turns_lost_updates_into_conflicts,
            purge_during_slow_request_stays_purged,
            typed_structs_round_trip_and_write_only_changed_fields,
            renew_with_requests_in_flight_keeps_the_user_logged_in,
            two_concurrent_renews_leave_one_working_session,
            purge_with_requests_in_flight_stays_final,
            absolute_timeout_ends_an_active_session,
            renew_starts_the_absolute_timeout_again,
            a_session_keeps_its_own_ttl_and_cookie_kind,
            ttl_extensions_are_throttled_to_the_interval,
            signed_cookies_refuse_forgeries_and_rotate_keys,
            size_limits_refuse_a_save_and_keep_the_stored_session,
            log_out_everywhere_ends_every_session_of_the_user,
            bound_sessions_stay_indexed_and_reads_never_conflict,
            a_log_in_racing_log_out_everywhere_does_not_live_on,
            update_and_update_or_save_their_changes,
        );
    };
    (@cases $make:expr; $($case:ident),+ $(,)?) => {
        mod session_suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[actix_web::test]
                async fn $case() {
                    let (store, _server) = $make;
                    $crate::suite::$case(store).await;
                }
            )+
        }
    };
}
