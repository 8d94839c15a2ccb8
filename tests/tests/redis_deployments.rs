//! `RedisStore` on Redis as production runs it, started on loopback by the harness: TLS with
//! a private CA (and client certificates), `requirepass` and ACL users. Cluster and Sentinel
//! have test binaries of their own.

use std::time::{Duration, Instant};

use actix_kv_session::{storage::RedisStore, testing, SessionMiddleware};
use actix_web::http::StatusCode;
use tests::{
    error_chain, init_app,
    logs::Logs,
    redis_topologies::{AuthRedis, ClientAuth, TlsRedis},
    suite::get,
};

/// A store on `server` trusting its CA, presenting its client certificate if `client`.
fn tls_store(server: &TlsRedis, client: bool) -> RedisStore {
    let mut builder = RedisStore::builder(server.url()).root_certificate(server.ca_pem());
    if client {
        builder = builder.client_certificate(server.client().cert_pem(), server.client().key_pem());
    }
    builder.build().expect("valid TLS settings")
}

/// The store conformance suite, through its public entry point, over TLS with client
/// certificates required.
#[test]
fn the_conformance_suite_passes_over_tls() {
    let server = TlsRedis::start(ClientAuth::Required);
    testing::run(testing::check_store(|| async { tls_store(&server, true) }));
}

/// The counter over TLS; a store that does not trust the server's CA fails fast with a
/// cause that says so, at start-up (`ping`) and as a 503 with the cause logged.
#[actix_web::test]
async fn sessions_over_tls_and_an_untrusted_certificate_is_a_clear_error() {
    let server = TlsRedis::start(ClientAuth::NotRequested);
    let app = init_app!(SessionMiddleware::new(tls_store(&server, false)));
    let id = get(&app, "/counter", None).await.id();
    assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "2");

    let untrusting = RedisStore::builder(server.url())
        .root_certificate(server.foreign_ca_pem())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = untrusting.ping().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let cause = error_chain(&err).to_lowercase();
    assert!(
        cause.contains("certificate") || cause.contains("issuer"),
        "{cause}"
    );

    let (logs, _capture) = Logs::capture();
    let app = init_app!(SessionMiddleware::new(untrusting));
    let reply = get(&app, "/counter", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let errors = logs.errors().join("\n").to_lowercase();
    assert!(
        errors.contains("certificate") || errors.contains("issuer"),
        "{errors}"
    );
}

/// A server that requires client certificates refuses a store without one, and serves one
/// that presents the certificate its CA signed; not one another CA signed.
#[actix_web::test]
async fn client_certificates_when_the_server_requires_them() {
    let server = TlsRedis::start(ClientAuth::Required);
    assert!(tls_store(&server, false).ping().await.is_err());
    tls_store(&server, true)
        .ping()
        .await
        .expect("with the client certificate");
    let foreign = RedisStore::builder(server.url())
        .root_certificate(server.ca_pem())
        .client_certificate(
            server.foreign_client().cert_pem(),
            server.foreign_client().key_pem(),
        )
        .build()
        .unwrap();
    assert!(
        foreign.ping().await.is_err(),
        "a client certificate of another CA"
    );
}

/// A password or an ACL user, in the URL or from the builder; a wrong password fails fast
/// with the cause (WRONGPASS), at start-up and as a 503 logged, never a hang.
#[actix_web::test]
async fn acl_users_and_passwords_in_the_url_or_the_builder() {
    let server = AuthRedis::start();
    let stores = [
        RedisStore::new(server.url_with_user()).unwrap(),
        RedisStore::new(server.url_with_password()).unwrap(),
        RedisStore::builder(server.url_without_credentials())
            .username(server.user())
            .password(server.user_password())
            .build()
            .unwrap(),
        RedisStore::builder(server.url_without_credentials())
            .password(server.default_password())
            .build()
            .unwrap(),
    ];
    for store in stores {
        store.ping().await.expect("authenticated");
        let app = init_app!(SessionMiddleware::new(store));
        let id = get(&app, "/counter", None).await.id();
        assert_eq!(get(&app, "/counter", Some(id.as_str())).await.body, "2");
    }

    for (store, code) in [
        (
            RedisStore::new(server.url_with_wrong_password()).unwrap(),
            "authenticat",
        ),
        (
            RedisStore::new(server.url_without_credentials()).unwrap(),
            "auth",
        ),
    ] {
        let started = Instant::now();
        let err = store.ping().await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        let cause = error_chain(&err).to_lowercase();
        assert!(cause.contains(code), "{cause}");
        let (logs, _capture) = Logs::capture();
        let app = init_app!(SessionMiddleware::new(store));
        let reply = get(&app, "/counter", None).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            logs.errors().join("\n").to_lowercase().contains(code),
            "{:#?}",
            logs.lines()
        );
    }
}
