//! `MemcachedStore` over several real `memcached` processes, as production runs it: sessions
//! spread by ketama, a node stopped and restarted under load, a node that answers late.
//! What the store wrote is read back with async-memcached, an independent client.

use std::{
    collections::HashMap,
    rc::Rc,
    time::{Duration, Instant},
};

use actix_kv_session::{
    storage::{ChangeSet, ConflictPolicy, MemcachedStore, SessionStore},
    SessionId, SessionMiddleware,
};
use actix_web::http::{Method, StatusCode};
use async_memcached::{AsciiProtocol, Client};
use futures_util::future::join_all;
use tests::{proxy::Proxy, races::http, server::TestServer, servers::ServerProcess};

fn nodes(count: usize) -> Vec<ServerProcess> {
    (0..count).map(|_| ServerProcess::memcached()).collect()
}

fn list(nodes: &[&ServerProcess]) -> String {
    nodes
        .iter()
        .map(|node| node.addr())
        .collect::<Vec<_>>()
        .join(",")
}

async fn raw(node: &ServerProcess) -> Client {
    raw_at(&node.addr()).await
}

async fn raw_at(addr: &str) -> Client {
    Client::new(format!("tcp://{addr}"))
        .await
        .expect("connect to memcached")
}

/// Which of `nodes` hold the item of session `id`.
async fn holders(clients: &mut [Client], id: SessionId) -> Vec<usize> {
    let key = format!("session:{id}");
    let mut found = Vec::new();
    for (index, client) in clients.iter_mut().enumerate() {
        if client.get(&key).await.expect("get").is_some() {
            found.push(index);
        }
    }
    found
}

/// Each session lives on exactly one node; the nodes share them about evenly (ketama); a
/// store given the same nodes in another order finds every one (the ring places keys by
/// the nodes' names, as libmemcached does).
#[actix_web::test]
async fn sessions_spread_over_the_nodes_one_node_each() {
    let servers = nodes(3);
    let store = MemcachedStore::new(list(&[&servers[0], &servers[1], &servers[2]])).unwrap();
    store.ping().await.expect("every node answers");
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(tests::seed(&store, &[("foo", "1")]).await);
    }
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(raw(server).await);
    }
    let mut per_node = [0; 3];
    for &id in &ids {
        let found = holders(&mut clients, id).await;
        assert_eq!(found.len(), 1, "session {id} on nodes {found:?}");
        per_node[found[0]] += 1;
    }
    println!("sessions per node: {per_node:?}");
    assert!(
        per_node.iter().all(|&n| (60..=140).contains(&n)),
        "{per_node:?}"
    );

    let reordered = MemcachedStore::new(list(&[&servers[2], &servers[0], &servers[1]])).unwrap();
    for id in &ids {
        assert!(
            reordered.load(id).await.unwrap().is_some(),
            "{id} not found"
        );
    }
}

/// A renew whose old node dies between the session's load and the renew: the copy already
/// added under the new id, on another node, is taken back, so no session is left under an
/// id nobody was given, and the request fails (503) with the session where it was.
#[actix_web::test]
async fn a_renew_whose_old_node_is_down_leaves_no_copy_under_the_new_id() {
    let mut servers = nodes(2);
    let store = MemcachedStore::new(list(&[&servers[0], &servers[1]])).unwrap();
    let mut clients = vec![raw(&servers[0]).await, raw(&servers[1]).await];
    let data: HashMap<String, String> = [("user".to_owned(), "\"alice\"".to_owned())].into();
    let ttl = Duration::from_mins(10);
    let from = SessionId::generate();
    store.create(&from, &data, ttl).await.unwrap();
    let old_node = holders(&mut clients, from).await[0];
    // A new id whose item lands on the other node.
    let to = loop {
        let probe = SessionId::generate();
        store.create(&probe, &data, ttl).await.unwrap();
        let on = holders(&mut clients, probe).await[0];
        store.delete(&probe).await.unwrap();
        if on != old_node {
            break probe;
        }
    };
    // The load remembers the item, so the renew's first step is the add on the new node.
    assert!(store.load(&from).await.unwrap().is_some());
    servers[old_node].stop();
    let changes = ChangeSet::new(Vec::new(), ConflictPolicy::LastWriteWins, ttl);
    let renewed = store.renew(&from, &to, &changes).await;
    assert!(renewed.is_err(), "{renewed:?}");
    let new_node = 1 - old_node;
    assert!(
        holders(&mut clients[new_node..=new_node], to)
            .await
            .is_empty(),
        "a copy was left under the new id"
    );
    servers[old_node].start();
}

/// A fourth node added to three takes about a quarter of the sessions: a store on the four
/// finds the other three quarters where the three-node store put them.
#[actix_web::test]
async fn adding_a_node_moves_about_a_quarter_of_the_sessions() {
    let servers = nodes(4);
    let three = MemcachedStore::new(list(&[&servers[0], &servers[1], &servers[2]])).unwrap();
    let four =
        MemcachedStore::new(list(&[&servers[0], &servers[1], &servers[2], &servers[3]])).unwrap();
    let mut ids = Vec::new();
    for _ in 0..400 {
        ids.push(tests::seed(&three, &[("foo", "1")]).await);
    }
    let mut kept = 0;
    for id in &ids {
        if four.load(id).await.unwrap().is_some() {
            kept += 1;
        }
    }
    println!("sessions still found after adding a fourth node: {kept} of 400");
    assert!((260..=340).contains(&kept), "{kept} of 400 kept");
}

/// What a client saw of one request of the load, and when.
#[derive(Debug, Clone, Copy)]
struct Sample {
    session: usize,
    at: Duration,
    took: Duration,
    status: StatusCode,
}

/// Clients, one per session, each sending `/counter` in a loop until `stop` has passed;
/// every request and its answer, with when it was sent since `started`.
async fn counter_load(
    server: &TestServer,
    sessions: &[SessionId],
    started: Instant,
    stop: Duration,
) -> Vec<Sample> {
    let loops = sessions.iter().enumerate().map(|(n, &id)| {
        let url = server.url("/counter");
        async move {
            let mut samples = Vec::new();
            while started.elapsed() < stop {
                let at = started.elapsed();
                let reply = http("load", Method::GET, url.clone(), Some(id)).await;
                samples.push(Sample {
                    session: n,
                    at,
                    took: started.elapsed().saturating_sub(at),
                    status: reply.status,
                });
            }
            samples
        }
    });
    join_all(loops).await.into_iter().flatten().collect()
}

/// One node of three stopped under load, then started again: only the sessions on it get
/// 503, and fast (connection refused: no wait for a timeout); the others are unaffected;
/// once it is back, its sessions work again (as new sessions: a restarted memcached is
/// empty) without restarting the app.
#[actix_web::test]
async fn a_node_lost_under_load_fails_only_its_sessions_until_it_is_back() {
    let servers = nodes(3);
    let servers = Rc::new(std::cell::RefCell::new(servers));
    let nodes_list = {
        let servers = servers.borrow();
        list(&[&servers[0], &servers[1], &servers[2]])
    };
    let store = MemcachedStore::new(&nodes_list).unwrap();
    let server = TestServer::start(
        SessionMiddleware::builder(store.clone())
            .secure(false)
            .build(),
    );
    let mut sessions = Vec::new();
    for _ in 0..24 {
        let reply = http("first", Method::GET, server.url("/counter"), None).await;
        sessions.push(SessionId::parse(reply.cookie.unwrap().value()).unwrap());
    }
    let addrs: Vec<String> = servers.borrow().iter().map(ServerProcess::addr).collect();
    let mut clients = Vec::new();
    for addr in &addrs {
        clients.push(raw_at(addr).await);
    }
    let mut home = HashMap::new();
    for (n, &id) in sessions.iter().enumerate() {
        home.insert(n, holders(&mut clients, id).await[0]);
    }
    let victim = home[&0];
    let on_victim = home.values().filter(|&&node| node == victim).count();
    println!(
        "{on_victim} of {} sessions on the stopped node",
        sessions.len()
    );

    let started = Instant::now();
    let (down, up) = (Duration::from_secs(1), Duration::from_secs(3));
    let faults = {
        let servers = Rc::clone(&servers);
        async move {
            actix_web::rt::time::sleep(down).await;
            servers.borrow_mut()[victim].stop();
            actix_web::rt::time::sleep(up.saturating_sub(down)).await;
            servers.borrow_mut()[victim].start();
        }
    };
    let (samples, ()) = futures_util::join!(
        counter_load(&server, &sessions, started, Duration::from_secs(5)),
        faults
    );

    let settle = Duration::from_millis(200);
    let mut failed_on_victim = 0;
    for sample in &samples {
        let victims = home[&sample.session] == victim;
        let while_down = sample.at + sample.took > down && sample.at < up + settle;
        if !victims || !while_down {
            assert_eq!(sample.status, StatusCode::OK, "{sample:?}");
        } else if sample.status != StatusCode::OK {
            assert_eq!(sample.status, StatusCode::SERVICE_UNAVAILABLE, "{sample:?}");
            assert!(
                sample.took < Duration::from_millis(500),
                "a slow 503: {sample:?}"
            );
            failed_on_victim += 1;
        }
    }
    let others = samples
        .iter()
        .filter(|s| home[&s.session] != victim)
        .count();
    println!(
        "{} requests: {failed_on_victim} 503s, all on the stopped node's sessions; {others} \
         requests on the other nodes' sessions, all 200",
        samples.len()
    );
    assert!(failed_on_victim > 0, "the stop was not noticed");
    for n in 0..sessions.len() {
        let last = samples.iter().rev().find(|s| s.session == n).unwrap();
        assert_eq!(last.status, StatusCode::OK, "session {n} did not recover");
    }
}

/// A memcached that answers every command 300 ms late, under 64 concurrent clients: each
/// request waits for its own commands only (they pipeline on the worker's connection), so
/// none gets 503. The store that held one pooled connection per operation answered 94% of
/// them with 503.
#[actix_web::test]
async fn a_slow_memcached_slows_requests_but_starves_none() {
    let node = ServerProcess::memcached();
    let proxy = Proxy::with_delay(node.addr(), Duration::from_millis(300)).await;
    let store = MemcachedStore::new(proxy.addr()).unwrap();
    let server = TestServer::start(
        SessionMiddleware::builder(store.clone())
            .secure(false)
            .build(),
    );
    let mut sessions = Vec::new();
    for _ in 0..64 {
        sessions.push(tests::seed(&store, &[("foo", "0")]).await);
    }
    let started = Instant::now();
    let samples = counter_load(&server, &sessions, started, Duration::from_secs(5)).await;
    let failed = samples
        .iter()
        .filter(|s| s.status != StatusCode::OK)
        .count();
    let mut took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    took.sort();
    println!(
        "slow memcached (300 ms), 64 clients: {} requests in {:?}, {failed} failed, p50 {:?}, \
         max {:?}",
        samples.len(),
        started.elapsed(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert_eq!(failed, 0);
}
