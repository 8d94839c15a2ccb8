//! `RedisStore` on a Redis Cluster of 3 masters and 3 replicas on loopback. One cluster
//! serves the whole binary (starting one takes seconds), so one test runs every phase in
//! turn: the conformance suite, the middleware suite, the window of a renew across nodes,
//! and a master killed under load.

use std::{
    cell::RefCell,
    time::{Duration, Instant},
};

use actix_kv_session::{
    storage::{ChangeSet, ConflictPolicy, KeyChange, RedisStore, SessionStore},
    testing, SessionId, SessionMiddleware,
};
use actix_web::http::{Method, StatusCode};
use futures_util::future::join_all;
use tests::{
    races::http,
    redis_topologies::{lost_increments, RedisCluster},
    server::TestServer,
};

fn store(cluster: &RedisCluster) -> RedisStore {
    RedisStore::cluster(cluster.urls())
        .build()
        .expect("valid node URLs")
}

fn key(id: SessionId) -> Vec<u8> {
    format!("session:{id}").into_bytes()
}

#[test]
fn redis_cluster() {
    let mut cluster = RedisCluster::start();
    testing::run(async {
        let started = Instant::now();
        testing::check_store(|| async { store(&cluster) }).await;
        println!("conformance suite: {:?}", started.elapsed());

        let started = Instant::now();
        middleware_suite(&cluster).await;
        println!("middleware suite: {:?}", started.elapsed());

        a_renew_whose_second_step_fails_puts_the_session_back(&mut cluster).await;
        a_renew_whose_first_step_times_out_is_undone(&mut cluster).await;
        // A prefix with a hash tag: the parked copy shares the tag, so the slot.
        tests::suite::renew_moves_the_session_to_a_new_id(
            RedisStore::cluster(cluster.urls())
                .prefix("{app}:s:")
                .build()
                .unwrap(),
        )
        .await;
        a_master_killed_under_load(&mut cluster).await;
    });
}

/// The middleware suite, case by case, each on a fresh store object.
async fn middleware_suite(cluster: &RedisCluster) {
    macro_rules! cases {
        ($($case:ident),+ $(,)?) => {
            $(
                tests::suite::$case(store(cluster)).await;
                println!("  {}", stringify!($case));
            )+
        };
    }
    cases![
        counter_counts_per_visitor,
        new_visitor_gets_no_cookie_until_something_is_stored,
        unknown_id_gets_a_fresh_one_and_is_never_written,
        only_changed_keys_are_written,
        emptied_session_is_deleted_and_cookie_removed,
        renew_moves_the_session_to_a_new_id,
        purge_deletes_and_removes_cookie,
        purge_then_insert_starts_a_new_session,
        server_error_discards_changes,
        session_expires_after_ttl,
        every_request_policy_extends_ttl_and_cookie,
        concurrent_requests_on_different_keys_all_persist,
        strict_policy_turns_lost_updates_into_conflicts,
        purge_during_slow_request_stays_purged,
        typed_structs_round_trip_and_write_only_changed_fields,
        renew_with_requests_in_flight_keeps_the_user_logged_in,
        two_concurrent_renews_leave_one_working_session,
        purge_with_requests_in_flight_stays_final,
    ];
}

/// A renew on a Cluster takes two steps, the session moved out of its old key (marker left),
/// then created at the new key on another node. When the second step fails (here: that
/// node frozen past the response timeout), the log-in gets an error (a 503), and the session
/// is back under its old id as it was before the log-in, without the log-in's changes: an
/// id planted before the log-in never becomes a logged-in one.
async fn a_renew_whose_second_step_fails_puts_the_session_back(cluster: &mut RedisCluster) {
    let store = RedisStore::cluster(cluster.urls())
        .response_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let old = tests::seed(&store, &[("cart", "[1]")]).await;
    let old_master = cluster.master_for_key(&key(old));
    let (to, to_master) = loop {
        let id = SessionId::generate();
        let master = cluster.master_for_key(&key(id));
        if master != old_master {
            break (id, master);
        }
    };
    let login = ChangeSet::new(
        vec![KeyChange::new("user".into(), Some("\"ann\"".into()), None)],
        ConflictPolicy::LastWriteWins,
        Duration::from_mins(1),
    );
    // Frozen for less than the cluster's node timeout: no failover starts.
    cluster.pause_node(to_master);
    let started = Instant::now();
    let renewed = store.renew(&old, &to, &login).await;
    cluster.resume_node(to_master);
    println!(
        "renew with the new id's node frozen: {renewed:?} after {:?}",
        started.elapsed()
    );
    assert!(renewed.is_err(), "{renewed:?}");
    let record = store.load(&old).await.unwrap();
    let expected = [("cart".to_owned(), "[1]".to_owned())]
        .into_iter()
        .collect();
    assert_eq!(
        record,
        Some(expected),
        "the session is back, without the log-in's changes"
    );
}

/// The first step of a renew (on the old id's node) timing out leaves its outcome unknown:
/// the node may apply it later. The undo is sent on the same connection, so the node applies
/// it after the first step, whenever that is: here the node is frozen through both, and
/// once it thaws the session is back under its old id, without the log-in's changes.
async fn a_renew_whose_first_step_times_out_is_undone(cluster: &mut RedisCluster) {
    let store = RedisStore::cluster(cluster.urls())
        .response_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let old = tests::seed(&store, &[("cart", "[2]")]).await;
    let old_master = cluster.master_for_key(&key(old));
    let to = loop {
        let id = SessionId::generate();
        if cluster.master_for_key(&key(id)) != old_master {
            break id;
        }
    };
    let login = ChangeSet::new(
        vec![KeyChange::new("user".into(), Some("\"ann\"".into()), None)],
        ConflictPolicy::LastWriteWins,
        Duration::from_mins(1),
    );
    cluster.pause_node(old_master);
    let renewed = store.renew(&old, &to, &login).await;
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    cluster.resume_node(old_master);
    assert!(renewed.is_err(), "{renewed:?}");
    let expected = Some(
        [("cart".to_owned(), "[2]".to_owned())]
            .into_iter()
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut record = None;
    while Instant::now() < deadline {
        record = store.load(&old).await.ok().flatten();
        if record == expected {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(record, expected, "the session is back under its old id");
    assert_eq!(store.load(&to).await.unwrap(), None);
}

/// A master killed while sessions on every master are in use: requests on its slots answer
/// 503 within the timeout (never a hang) until its replica is promoted, then succeed without
/// an app restart. Prints how many acknowledged increments the failover lost (replication
/// is asynchronous).
async fn a_master_killed_under_load(cluster: &mut RedisCluster) {
    let server = TestServer::start(SessionMiddleware::new(store(cluster)));
    let mut sessions = Vec::new();
    for _ in 0..24 {
        let reply = http("first", Method::GET, server.url("/counter"), None).await;
        sessions.push(SessionId::parse(reply.cookie.as_ref().unwrap().value()).unwrap());
    }
    let victim = cluster.master_for_key(&key(sessions[0]));
    let on_victim: Vec<bool> = sessions
        .iter()
        .map(|id| cluster.master_for_key(&key(*id)) == victim)
        .collect();

    // Each session: one request after another, counting the acknowledged increments.
    let phase = RefCell::new(Phase::Before);
    let log = RefCell::new(Vec::new());
    let loops = sessions.iter().enumerate().map(|(n, id)| {
        let (server, phase, log) = (&server, &phase, &log);
        async move {
            let mut acknowledged = 1; // the first /counter
            while *phase.borrow() != Phase::Done {
                let during = *phase.borrow();
                let started = Instant::now();
                let reply = http("load", Method::GET, server.url("/counter"), Some(*id)).await;
                let took = started.elapsed();
                if reply.status == StatusCode::OK {
                    acknowledged += 1;
                }
                log.borrow_mut().push((n, during, reply.status, took));
            }
            acknowledged
        }
    });
    let chaos = async {
        actix_web::rt::time::sleep(Duration::from_secs(1)).await;
        cluster.kill_node(victim);
        *phase.borrow_mut() = Phase::Failover;
        let started = Instant::now();
        let promoted = cluster.wait_for_failover(victim).await;
        println!(
            "node {victim} killed; node {promoted} promoted after {:?}",
            started.elapsed()
        );
        *phase.borrow_mut() = Phase::After;
        actix_web::rt::time::sleep(Duration::from_secs(2)).await;
        *phase.borrow_mut() = Phase::Done;
    };
    let (acknowledged, ()) = futures_util::future::join(join_all(loops), chaos).await;

    let log = log.into_inner();
    let slowest = log.iter().map(|entry| entry.3).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(3_500),
        "a request took {slowest:?}: a hang"
    );
    let failed = |victim_side: bool, phase: Phase| {
        log.iter()
            .filter(|(n, p, s, _)| {
                on_victim[*n] == victim_side && *p == phase && *s != StatusCode::OK
            })
            .count()
    };
    println!(
        "503s during the failover: {} on the killed master's slots, {} on the others; after it: \
         {} and {}",
        failed(true, Phase::Failover),
        failed(false, Phase::Failover),
        failed(true, Phase::After),
        failed(false, Phase::After),
    );
    assert!(
        failed(true, Phase::Failover) > 0,
        "the kill was not noticed"
    );
    // Once promoted, every session answers again, its last requests all succeed.
    for (n, _) in sessions.iter().enumerate() {
        let last = log.iter().rev().find(|entry| entry.0 == n).unwrap();
        assert_eq!(
            last.2,
            StatusCode::OK,
            "session {n} did not recover: {last:?}"
        );
    }

    let (lost, total) = lost_increments(&store(cluster), &sessions, &acknowledged).await;
    println!("acknowledged increments lost in the failover: {lost} of {total}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    Failover,
    After,
    Done,
}
