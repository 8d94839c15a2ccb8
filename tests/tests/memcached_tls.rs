//! `MemcachedStore` over TLS against a real `memcached -Z`, with a private CA and
//! certificates made at run time: the conformance suite, certificates the store must not
//! trust, client certificates, and the name a certificate is checked against. Each test
//! starts one server and runs all its cases on it; the tests run side by side.

use std::time::Instant;

use actix_kv_session::{
    storage::{MemcachedStore, MemcachedStoreBuilder},
    testing, SessionMiddleware,
};
use actix_web::http::StatusCode;
use tests::{
    certificates::{blames_the_certificate, refusal, ClientAuth},
    error_chain, init_app,
    logs::Logs,
    suite::get,
    tls_memcached::TlsMemcached,
};

/// A builder for a store on `server` that trusts its CA.
fn trusting_the_ca(server: &TlsMemcached) -> MemcachedStoreBuilder {
    MemcachedStore::builder(server.addr()).root_certificate(server.ca_pem())
}

/// The counter through the middleware, twice for one visitor: it says 1, then 2, so the
/// session was saved over TLS and loaded back.
async fn counter_counts(store: MemcachedStore) {
    let app = init_app!(SessionMiddleware::new(store));
    let first = get(&app, "/counter", None).await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "1"));
    let second = get(&app, "/counter", Some(first.id().as_str())).await;
    assert_eq!((second.status, second.body.as_str()), (StatusCode::OK, "2"));
}

/// The store conformance suite, through its public entry point, over TLS with a CA made at
/// run time. Its cases share one store (clones share its connection, as an app's workers
/// share a store), so the suite costs one handshake.
#[test]
fn the_conformance_suite_passes_over_tls_with_a_private_ca() {
    let server = TlsMemcached::start(ClientAuth::NotRequested);
    testing::run(async {
        let store = trusting_the_ca(&server)
            .build()
            .expect("valid TLS settings");
        store
            .ping()
            .await
            .unwrap_or_else(|err| panic!("ping over TLS: {}{}", error_chain(&err), server.log()));
        let started = Instant::now();
        testing::check_store(|| async { store.clone() }).await;
        println!("conformance suite over TLS: {:?}", started.elapsed());
    });
}

/// A store that trusts the system's roots only, or an unrelated CA, does not trust the
/// server: `ping` fails at once with a cause that names the node and the certificate, and
/// the session routes answer 503 with that cause logged.
#[actix_web::test]
async fn an_untrusted_server_certificate_fails_fast_with_a_cause_naming_it() {
    let server = TlsMemcached::start(ClientAuth::NotRequested);
    let system_roots = MemcachedStore::builder(server.addr())
        .tls()
        .build()
        .expect("the system has root certificates");
    let unrelated_ca = MemcachedStore::builder(server.addr())
        .root_certificate(server.foreign_ca_pem())
        .build()
        .expect("valid TLS settings");
    for (trusting, store) in [
        ("the system's roots", &system_roots),
        ("an unrelated CA", &unrelated_ca),
    ] {
        let cause = refusal(store.ping()).await;
        assert!(blames_the_certificate(&cause), "{trusting}: {cause}");
        assert!(cause.contains(&server.addr()), "{trusting}: {cause}");
        println!("trusting {trusting}: {cause}");
    }

    let (logs, _capture) = Logs::capture();
    let app = init_app!(SessionMiddleware::new(unrelated_ca));
    let reply = get(&app, "/counter", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let errors = logs.errors().join("\n");
    assert!(blames_the_certificate(&errors), "{errors}");
}

/// A server that requires client certificates (`ssl_verify_mode=2`) serves a store that
/// presents the certificate its CA signed, and refuses at once a store with none or with
/// one another CA signed, with the server's alert as the cause.
#[actix_web::test]
async fn client_certificates_when_the_server_requires_them() {
    let server = TlsMemcached::start(ClientAuth::Required);
    let certified = trusting_the_ca(&server)
        .client_certificate(server.client().cert_pem(), server.client().key_pem())
        .build()
        .expect("valid TLS settings");
    certified
        .ping()
        .await
        .unwrap_or_else(|err| panic!("with the client certificate: {}", error_chain(&err)));
    counter_counts(certified).await;

    let without = trusting_the_ca(&server)
        .build()
        .expect("valid TLS settings");
    let cause = refusal(without.ping()).await;
    assert!(cause.contains("CertificateRequired"), "{cause}");
    println!("without a client certificate: {cause}");

    let foreign = trusting_the_ca(&server)
        .client_certificate(
            server.foreign_client().cert_pem(),
            server.foreign_client().key_pem(),
        )
        .build()
        .expect("valid TLS settings");
    let cause = refusal(foreign.ping()).await;
    assert!(cause.contains("UnknownCA"), "{cause}");
    println!("with another CA's client certificate: {cause}");
}

/// The certificate is checked against `tls_server_name` when one is given (a node listed by
/// IP address, a certificate for a DNS name), else against the node's host as listed; a
/// name the certificate does not cover is refused at once, the cause naming it.
#[actix_web::test]
async fn the_certificate_is_checked_against_the_tls_server_name() {
    let server = TlsMemcached::start(ClientAuth::NotRequested);
    let by_name = trusting_the_ca(&server)
        .tls_server_name("localhost")
        .build()
        .expect("valid TLS settings");
    by_name
        .ping()
        .await
        .unwrap_or_else(|err| panic!("127.0.0.1 as localhost: {}", error_chain(&err)));
    counter_counts(by_name).await;

    MemcachedStore::builder(server.localhost_addr())
        .root_certificate(server.ca_pem())
        .build()
        .expect("valid TLS settings")
        .ping()
        .await
        .unwrap_or_else(|err| panic!("a node listed as localhost: {}", error_chain(&err)));

    let elsewhere = trusting_the_ca(&server)
        .tls_server_name("sessions.example.com")
        .build()
        .expect("valid TLS settings");
    let cause = refusal(elsewhere.ping()).await;
    assert!(
        cause.contains("not valid for name") && cause.contains("sessions.example.com"),
        "{cause}"
    );
    println!("a name the certificate does not cover: {cause}");
}

/// An app's worker threads each open their own connection: with a server that requires
/// client certificates, every one must be accepted, not only the first.
///
/// A memcached that verifies client certificates without `-o ssl_session_cache` answers a
/// resumed TLS session with an `internal_error` alert (OpenSSL's "session id context
/// uninitialized"), and it gives two tickets per handshake: a store that resumed sessions
/// (rustls's default) had two connections of each three refused, its workers answering 503
/// at random. The store makes a full handshake on every connection.
#[test]
fn every_worker_is_accepted_when_the_server_requires_client_certificates() {
    let server = TlsMemcached::start(ClientAuth::Required);
    let store = trusting_the_ca(&server)
        .client_certificate(server.client().cert_pem(), server.client().key_pem())
        .build()
        .expect("valid TLS settings");
    // One after another, so that each finds the tickets its predecessors were given.
    let refused: Vec<String> = (0..4)
        .filter_map(|worker| {
            let store = store.clone();
            std::thread::spawn(move || testing::run(async move { store.ping().await }))
                .join()
                .expect("the worker thread ends")
                .err()
                .map(|err| format!("worker {worker}: {}", error_chain(&err)))
        })
        .collect();
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
