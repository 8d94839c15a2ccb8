//! Smoke tests of the Redis deployments the harness starts (`tests::redis_topologies`):
//! each one is reached with redis-rs directly, not through the library's store, so that a
//! failure here is the harness's and not the store's.

use std::{future::Future, time::Duration};

use redis::{
    aio::MultiplexedConnection,
    cluster::ClusterClient,
    cluster_routing::Slot,
    sentinel::{SentinelClient, SentinelServerType},
    AsyncCommands, ClientTlsConfig, ErrorKind, RedisResult, TlsCertificates,
};
use tests::redis_topologies::{
    key_slot, AuthRedis, CertifiedKey, ClientAuth, RedisCluster, RedisSentinel, TlsRedis,
};

/// Long enough for any connection on loopback; a refusal must come well before.
const NO_HANG: Duration = Duration::from_secs(10);

/// `fut`'s result, or a failure when it hangs.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {NO_HANG:?}"))
}

/// Connects to `url` trusting `ca` (PEM), presenting `client` if given, and sends `PING`.
async fn tls_ping(url: &str, ca: &str, client: Option<&CertifiedKey>) -> RedisResult<String> {
    let certs = TlsCertificates {
        client_tls: client.map(|c| ClientTlsConfig {
            client_cert: c.cert_pem().as_bytes().to_vec(),
            client_key: c.key_pem().as_bytes().to_vec(),
        }),
        root_cert: Some(ca.as_bytes().to_vec()),
    };
    let client = redis::Client::build_with_tls(url, certs)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut conn).await
}

async fn connect(url: &str) -> RedisResult<MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

#[tokio::test]
async fn tls_server_is_trusted_through_its_ca_and_refused_through_another() {
    let server = TlsRedis::start(ClientAuth::NotRequested);

    for url in [server.url(), server.localhost_url()] {
        let pong = bounded("TLS connect", tls_ping(&url, server.ca_pem(), None)).await;
        assert_eq!(pong.expect("PING over TLS"), "PONG", "{url}");
    }
    let refused = bounded(
        "TLS connect with a foreign CA",
        tls_ping(&server.url(), server.foreign_ca_pem(), None),
    )
    .await;
    let err = refused.expect_err("a server certificate the trusted CA did not sign");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // Plain text to a TLS port is no Redis conversation either.
    let plain = format!("redis://{}", server.url().trim_start_matches("rediss://"));
    let plain = bounded("plain connect to a TLS port", async {
        let mut conn = connect(&plain).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    assert!(plain.is_err(), "plain text to a TLS port: {plain:?}");
}

#[tokio::test]
async fn tls_server_requiring_client_certificates_accepts_only_its_cas() {
    let server = TlsRedis::start(ClientAuth::Required);
    let (url, ca) = (server.url(), server.ca_pem());

    let pong = bounded("mutual TLS", tls_ping(&url, ca, Some(server.client()))).await;
    assert_eq!(pong.expect("PING with a client certificate"), "PONG");
    let without = bounded("TLS without a certificate", tls_ping(&url, ca, None)).await;
    let err = without.expect_err("no client certificate");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    let foreign = bounded(
        "TLS with a foreign client certificate",
        tls_ping(&url, ca, Some(server.foreign_client())),
    )
    .await;
    let err = foreign.expect_err("a client certificate the CA did not sign");
    assert!(err.to_string().contains("UnknownCA"), "{err}");
}

#[tokio::test]
async fn password_and_acl_user_let_a_store_work_and_a_wrong_password_is_an_error() {
    let server = AuthRedis::start();

    let mut as_default = connect(&server.url_with_password()).await.expect("AUTH");
    let who: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut as_default)
        .await
        .unwrap();
    assert_eq!(who, "default");

    let mut as_user = connect(&server.url_with_user()).await.expect("AUTH user");
    let who: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut as_user)
        .await
        .unwrap();
    assert_eq!(who, server.user());
    // What a session store does: a hash, a TTL, a script, a delete.
    let _: () = as_user.hset("s:1", "k", "v").await.unwrap();
    let _: () = as_user.pexpire("s:1", 60_000).await.unwrap();
    let script = redis::Script::new("return redis.call('HGET', KEYS[1], ARGV[1])");
    let v: String = script
        .key("s:1")
        .arg("k")
        .invoke_async(&mut as_user)
        .await
        .unwrap();
    assert_eq!(v, "v");
    let deleted: i64 = as_user.del("s:1").await.unwrap();
    assert_eq!(deleted, 1);

    let wrong = bounded(
        "AUTH with a wrong password",
        connect(&server.url_with_wrong_password()),
    )
    .await;
    let err = wrong.expect_err("a wrong password");
    assert_eq!(err.kind(), ErrorKind::AuthenticationFailed, "{err}");

    let anonymous = bounded("a command without AUTH", async {
        let mut conn = connect(&server.url_without_credentials()).await?;
        conn.get::<_, Option<String>>("s:1").await
    })
    .await;
    let err = anonymous.expect_err("no credentials");
    assert!(err.to_string().contains("NOAUTH"), "{err}");
}

/// Keys whose slots belong to three different masters.
fn keys_on_every_master(cluster: &RedisCluster) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut masters = Vec::new();
    for i in 0.. {
        let key = format!("session:{i}");
        let master = cluster.master_for_key(key.as_bytes());
        if !masters.contains(&master) {
            masters.push(master);
            keys.push(key);
        }
        if masters.len() == 3 {
            return keys;
        }
    }
    unreachable!()
}

#[tokio::test]
async fn cluster_serves_every_slot_and_fails_a_dead_master_over_to_its_replica() {
    let mut cluster = RedisCluster::start();
    assert_eq!(cluster.masters().len(), 3, "masters");
    assert_eq!(cluster.replicas().len(), 3, "replicas");

    let client = ClusterClient::new(cluster.urls()).expect("cluster client");
    let mut conn = bounded("cluster connect", client.get_async_connection())
        .await
        .expect("cluster connection");
    let keys = keys_on_every_master(&cluster);
    for key in &keys {
        let server_slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(key_slot(key.as_bytes()), server_slot, "{key}");
        assert_eq!(Slot::new(server_slot), Some(Slot::for_key(key)), "{key}");
        let _: () = conn.set(key, "before").await.unwrap();
        let read: String = conn.get(key).await.unwrap();
        assert_eq!(read, "before");
    }
    assert_eq!(
        key_slot(b"{user:1}:a"),
        key_slot(b"{user:1}:b"),
        "hash tags"
    );

    let victim = &keys[0];
    let old_master = cluster.master_for_key(victim.as_bytes());
    cluster.kill_node(old_master);
    let new_master = cluster.wait_for_failover(old_master).await;
    assert_ne!(new_master, old_master);
    assert_eq!(cluster.master_for_key(victim.as_bytes()), new_master);

    // The connection made before the failover finds the new master by itself.
    let _: () = bounded("write after failover", conn.set(victim, "after"))
        .await
        .expect("write to the promoted master");
    let read: String = conn.get(victim).await.unwrap();
    assert_eq!(read, "after");
    let mut fresh = ClusterClient::new(cluster.urls())
        .unwrap()
        .get_async_connection()
        .await
        .expect("a new cluster connection with a node down");
    let read: String = fresh.get(victim).await.unwrap();
    assert_eq!(read, "after");

    // The old master comes back as a replica of the new one.
    cluster.restart_node(old_master);
    cluster.wait_until_ok().await;
    assert!(!cluster.is_master(old_master), "{:?}", cluster.masters());
    assert_eq!(cluster.replicas().len(), 3);
}

async fn sentinel_connection(sentinel: &RedisSentinel) -> RedisResult<MultiplexedConnection> {
    let mut client = SentinelClient::build(
        sentinel.sentinel_urls(),
        sentinel.master_name(),
        None,
        SentinelServerType::Master,
    )?;
    client.get_async_connection().await
}

/// The port the server behind `conn` says it listens on.
async fn server_port(conn: &mut MultiplexedConnection) -> String {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.trim().strip_prefix("tcp_port:"))
        .expect("tcp_port in INFO")
        .to_owned()
}

#[tokio::test]
async fn sentinels_promote_the_replica_when_the_master_dies() {
    let mut sentinel = RedisSentinel::start();
    let first = sentinel.master_addr();
    assert_eq!(sentinel.master_index(), 0);

    let mut conn = bounded("connect through Sentinel", sentinel_connection(&sentinel))
        .await
        .expect("master through Sentinel");
    assert!(first.ends_with(&format!(":{}", server_port(&mut conn).await)));
    let _: () = conn.set("k", "v").await.unwrap();

    let killed = sentinel.kill_master();
    assert_eq!(killed, 0);
    let promoted = sentinel.wait_for_promotion().await;
    assert_ne!(promoted, first);
    assert_eq!(sentinel.master_addr(), promoted);

    let mut conn = bounded(
        "connect through Sentinel again",
        sentinel_connection(&sentinel),
    )
    .await
    .expect("the new master through Sentinel");
    assert!(promoted.ends_with(&format!(":{}", server_port(&mut conn).await)));
    let _: () = conn
        .set("k", "w")
        .await
        .expect("write to the promoted master");
    let read: String = conn.get("k").await.unwrap();
    assert_eq!(read, "w");
}
