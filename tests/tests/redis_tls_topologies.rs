//! `RedisStore` on a Sentinel deployment and on a Cluster that speak only TLS: a private CA
//! signed every server's certificate, every server requires a client certificate, and every
//! link (the store's, replication, the Sentinels' own, the cluster bus) is TLS. Each test
//! starts one deployment and runs all its cases on it; the two run side by side.

use std::time::Instant;

use actix_kv_session::{
    storage::{RedisStore, RedisStoreBuilder},
    testing,
};
use tests::{
    certificates::{blames_the_certificate, refusal},
    redis_topologies::{Certificates, ClientAuth, RedisCluster, RedisSentinel},
};

/// The store `builder` makes when it trusts the deployment's CA and presents its client
/// certificate.
///
/// The conformance suite's cases share one such store (clones share its connection), as an
/// app's workers do, rather than each making its own. In a debug build a store's TLS
/// connections cost about 0.2 s of CPU (ring is not optimised, redis-rs reads the system's
/// roots for each connection, and a store makes several: through Sentinel, a Sentinel, the
/// master for `ROLE`, then the master; on a Cluster, every node). The suite's 24 cases made
/// at once on its one thread would pass the 1 s timeouts, some of which (redis-rs's
/// Sentinel lookup) no setting changes; made one at a time, they add 9 s to each test.
fn certified(builder: RedisStoreBuilder, certificates: &Certificates) -> RedisStore {
    let client = certificates.client();
    builder
        .root_certificate(certificates.ca_pem())
        .client_certificate(client.cert_pem(), client.key_pem())
        .build()
        .expect("valid TLS settings")
}

/// The stores `builder` makes that trust the system's roots only, without and with the
/// client certificate: neither trusts the servers' certificate.
fn trusting_system_roots_only(
    builder: impl Fn() -> RedisStoreBuilder,
    certificates: &Certificates,
) -> [RedisStore; 2] {
    let client = certificates.client();
    [
        builder().build().expect("valid settings"),
        builder()
            .client_certificate(client.cert_pem(), client.key_pem())
            .build()
            .expect("valid TLS settings"),
    ]
}

/// The store `builder` makes when it trusts the CA but presents no client certificate.
fn without_client_certificate(
    builder: RedisStoreBuilder,
    certificates: &Certificates,
) -> RedisStore {
    builder
        .root_certificate(certificates.ca_pem())
        .build()
        .expect("valid TLS settings")
}

/// The store finds the master through Sentinels it reaches over TLS, then reaches the master
/// over TLS: the private CA and the client certificate serve both, so `ping` and the
/// conformance suite pass. Trusting the system's roots only, `ping` fails at once with the
/// cause naming the certificate; without the client certificate, it is refused.
#[test]
fn sentinel_over_tls_with_a_private_ca_serves_sessions() {
    let started = Instant::now();
    let sentinel = RedisSentinel::start_tls(ClientAuth::Required);
    println!("sentinel over TLS up: {:?}", started.elapsed());
    let certificates = sentinel.certificates().expect("started with TLS");
    let builder = || RedisStore::sentinel(sentinel.sentinel_urls(), sentinel.master_name());
    testing::run(async {
        let store = certified(builder(), certificates);
        store
            .ping()
            .await
            .expect("ping through the Sentinels, over TLS");

        let started = Instant::now();
        testing::check_store(|| async { store.clone() }).await;
        println!(
            "sentinel over TLS, conformance suite: {:?}",
            started.elapsed()
        );

        for store in trusting_system_roots_only(builder, certificates) {
            let cause = refusal(store.ping()).await;
            assert!(blames_the_certificate(&cause), "{cause}");
            println!("sentinel over TLS, the system's roots only: {cause}");
        }
        let cause = refusal(without_client_certificate(builder(), certificates).ping()).await;
        assert!(cause.contains("CertificateRequired"), "{cause}");
    });
}

/// A Cluster whose nodes, bus and replication speak only TLS: `ping`, the conformance suite
/// and a renew (the new id's slot is most likely on another node) pass with the private CA
/// and the client certificate. Trusting the system's roots only, `ping` fails at once with
/// the cause naming the certificate; without the client certificate, it is refused.
#[test]
fn cluster_over_tls_with_a_private_ca_serves_sessions() {
    let started = Instant::now();
    let cluster = RedisCluster::start_tls(ClientAuth::Required);
    println!("cluster over TLS up: {:?}", started.elapsed());
    let certificates = cluster.certificates().expect("started with TLS");
    let builder = || RedisStore::cluster(cluster.urls());
    testing::run(async {
        let store = certified(builder(), certificates);
        store.ping().await.expect("ping the cluster over TLS");

        let started = Instant::now();
        testing::check_store(|| async { store.clone() }).await;
        println!(
            "cluster over TLS, conformance suite: {:?}",
            started.elapsed()
        );

        tests::suite::renew_moves_the_session_to_a_new_id(certified(builder(), certificates)).await;

        for store in trusting_system_roots_only(builder, certificates) {
            let cause = refusal(store.ping()).await;
            assert!(blames_the_certificate(&cause), "{cause}");
            println!("cluster over TLS, the system's roots only: {cause}");
        }
        let cause = refusal(without_client_certificate(builder(), certificates).ping()).await;
        assert!(cause.contains("CertificateRequired"), "{cause}");
    });
}
