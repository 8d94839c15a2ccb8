//! Runs each example binary as a user would (`BIND_ADDR` on a free port, real HTTP with a
//! cookie jar) and checks what the README says it prints.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// A running example; killed when dropped.
struct Example {
    child: Child,
    port: u16,
    cookie: Option<String>,
}

impl Example {
    /// The command that runs example `name`.
    fn command(name: &str) -> Command {
        // Tests run from target/<profile>/deps; cargo builds examples into ../examples.
        let exe = std::env::current_exe().expect("test binary path");
        let dir: PathBuf = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target dir")
            .join("examples");
        Command::new(dir.join(name))
    }

    fn start(name: &str, env: &[(&str, String)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Self::command(name)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name} ({e}): cargo test builds it"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{name} did not listen on {port}");
            thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            cookie: None,
        }
    }

    /// Sends a request with the jar's cookie, keeps any new `session` cookie, returns
    /// (status, body).
    fn request(&mut self, method: &str, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let cookie = self
            .cookie
            .as_ref()
            .map(|c| format!("Cookie: session={c}\r\n"))
            .unwrap_or_default();
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{cookie}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        for line in head.lines() {
            if let Some(value) = line
                .to_ascii_lowercase()
                .strip_prefix("set-cookie: session=")
            {
                let value = value.split(';').next().unwrap().to_owned();
                self.cookie = if value.is_empty() { None } else { Some(value) };
            }
        }
        (status, body.trim_end().to_owned())
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn counts_one_two_three(example: &mut Example) {
    for expected in ["1", "2", "3"] {
        assert_eq!(example.request("GET", "/"), (200, expected.to_owned()));
    }
}

#[test]
fn counter() {
    counts_one_two_three(&mut Example::start("counter", &[]));
}

#[test]
fn typed_counter() {
    counts_one_two_three(&mut Example::start("typed_counter", &[]));
}

#[test]
fn login() {
    let mut app = Example::start("login", &[]);
    assert_eq!(
        app.request("GET", "/private"),
        (401, "log in first".to_owned())
    );
    assert_eq!(
        app.request("POST", "/login?user=ann"),
        (200, "logged in".to_owned())
    );
    let first_id = app.cookie.clone().expect("a session after log-in");
    assert_eq!(
        app.request("GET", "/private"),
        (200, "hello ann (visit 1)".to_owned())
    );
    assert_eq!(
        app.request("GET", "/private"),
        (200, "hello ann (visit 2)".to_owned())
    );
    // Logging in again renews the id.
    assert_eq!(app.request("POST", "/login?user=ann").0, 200);
    assert_ne!(app.cookie.as_deref(), Some(first_id.as_str()));
    assert_eq!(
        app.request("POST", "/logout"),
        (200, "logged out".to_owned())
    );
    assert_eq!(app.cookie, None, "the cookie was removed");
    assert_eq!(
        app.request("GET", "/private"),
        (401, "log in first".to_owned())
    );
    // The old id is dead too.
    app.cookie = Some(first_id);
    assert_eq!(app.request("GET", "/private").0, 401);
}

#[test]
fn counter_any_store_on_memory() {
    let mut app = Example::start(
        "counter_any_store",
        &[("SESSION_STORE", "memory".to_owned())],
    );
    counts_one_two_three(&mut app);
}

#[test]
fn counter_any_store_refuses_an_unknown_store() {
    let status = Example::command("counter_any_store")
        .env("SESSION_STORE", "postgres")
        .stderr(Stdio::piped())
        .output()
        .expect("run the example");
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains("unknown SESSION_STORE") && stderr.contains("postgres"),
        "{stderr}"
    );
}

#[cfg(feature = "redis")]
#[test]
fn counter_any_store_on_redis() {
    let redis = tests::servers::ServerProcess::redis();
    let env = [
        ("SESSION_STORE", "redis".to_owned()),
        ("REDIS_URL", redis.redis_url()),
    ];
    counts_one_two_three(&mut Example::start("counter_any_store", &env));
}

#[cfg(feature = "memcached")]
#[test]
fn counter_any_store_on_memcached() {
    let memcached = tests::servers::ServerProcess::memcached();
    let env = [
        ("SESSION_STORE", "memcached".to_owned()),
        ("MEMCACHED_ADDR", memcached.addr()),
    ];
    counts_one_two_three(&mut Example::start("counter_any_store", &env));
}

#[cfg(feature = "redis")]
#[test]
fn counter_redis() {
    let redis = tests::servers::ServerProcess::redis();
    let mut app = Example::start("counter_redis", &[("REDIS_URL", redis.redis_url())]);
    counts_one_two_three(&mut app);
}

/// `REDIS_LAYOUT=json`: the counter on `sanic_session`'s layout, a JSON string per session.
#[cfg(feature = "redis")]
#[test]
fn counter_redis_on_the_json_layout() {
    let redis = tests::servers::ServerProcess::redis();
    let env = [
        ("REDIS_URL", redis.redis_url()),
        ("REDIS_LAYOUT", "json".to_owned()),
    ];
    let mut app = Example::start("counter_redis", &env);
    counts_one_two_three(&mut app);
    let id = app.cookie.clone().expect("a session cookie");
    let get = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "GET",
            &format!("session:{id}"),
        ])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), r#"{"foo":3}"#);
}

/// The metrics example: after three visits, `/metrics` (Prometheus's text format) counts
/// one session created, two updated, two loads, and times them.
#[cfg(feature = "metrics")]
#[test]
fn metrics_prometheus_counts_the_visits() {
    let mut app = Example::start("metrics_prometheus", &[]);
    counts_one_two_three(&mut app);
    let (status, metrics) = app.request("GET", "/metrics");
    assert_eq!(status, 200);
    for line in [
        r#"kv_session_saves_total{outcome="created"} 1"#,
        r#"kv_session_saves_total{outcome="updated"} 2"#,
        r#"kv_session_loads_total{found="true"} 2"#,
        r#"kv_session_store_duration_seconds_count{op="load"} 2"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }
}

/// Two processes of the example on one Redis, one browser's requests going to either (a
/// load balancer): the counter goes on across them.
#[cfg(feature = "redis")]
#[test]
fn counter_redis_across_two_processes() {
    let redis = tests::servers::ServerProcess::redis();
    let env = [("REDIS_URL", redis.redis_url())];
    let mut apps = [
        Example::start("counter_redis", &env),
        Example::start("counter_redis", &env),
    ];
    let mut jar = None;
    for visit in 1..=6 {
        let app = &mut apps[visit % 2];
        app.cookie.clone_from(&jar);
        assert_eq!(app.request("GET", "/"), (200, visit.to_string()));
        jar.clone_from(&app.cookie);
    }
}

/// The example over TLS with a private CA and a client certificate, from the environment.
#[cfg(feature = "redis")]
#[test]
fn counter_redis_over_tls() {
    use tests::redis_topologies::{ClientAuth, TlsRedis};
    let redis = TlsRedis::start(ClientAuth::Required);
    let file = |path: &std::path::Path| path.display().to_string();
    let env = [
        ("REDIS_URL", redis.url()),
        ("REDIS_CA_FILE", file(redis.ca_file())),
        ("REDIS_CLIENT_CERT", file(redis.client().cert_file())),
        ("REDIS_CLIENT_KEY", file(redis.client().key_file())),
    ];
    counts_one_two_three(&mut Example::start("counter_redis", &env));
}

/// The example on a Redis Cluster, from `REDIS_CLUSTER_URLS`.
#[cfg(feature = "redis")]
#[test]
fn counter_redis_on_a_cluster() {
    let cluster = tests::redis_topologies::RedisCluster::start();
    let env = [("REDIS_CLUSTER_URLS", cluster.urls().join(","))];
    counts_one_two_three(&mut Example::start("counter_redis", &env));
}

/// The example on the master Sentinel follows, from `REDIS_SENTINEL_URLS` and
/// `REDIS_SENTINEL_MASTER`.
#[cfg(feature = "redis")]
#[test]
fn counter_redis_through_sentinel() {
    let sentinel = tests::redis_topologies::RedisSentinel::start();
    let env = [
        ("REDIS_SENTINEL_URLS", sentinel.sentinel_urls().join(",")),
        ("REDIS_SENTINEL_MASTER", sentinel.master_name().to_owned()),
    ];
    counts_one_two_three(&mut Example::start("counter_redis", &env));
}

#[cfg(feature = "memcached")]
#[test]
fn counter_memcached() {
    let memcached = tests::servers::ServerProcess::memcached();
    let mut app = Example::start("counter_memcached", &[("MEMCACHED_ADDR", memcached.addr())]);
    counts_one_two_three(&mut app);
}

/// The example over TLS (memcached's `-Z`) with a private CA, from `MEMCACHED_CA_FILE`, to
/// a server that requires a client certificate (`MEMCACHED_CLIENT_CERT`,
/// `MEMCACHED_CLIENT_KEY`).
#[cfg(feature = "memcached")]
#[test]
fn counter_memcached_over_tls() {
    use tests::{certificates::ClientAuth, tls_memcached::TlsMemcached};
    let memcached = TlsMemcached::start(ClientAuth::Required);
    let path = |p: &std::path::Path| p.display().to_string();
    let env = [
        ("MEMCACHED_ADDR", memcached.addr()),
        ("MEMCACHED_CA_FILE", path(memcached.ca_file())),
        (
            "MEMCACHED_CLIENT_CERT",
            path(memcached.client().cert_file()),
        ),
        ("MEMCACHED_CLIENT_KEY", path(memcached.client().key_file())),
    ];
    counts_one_two_three(&mut Example::start("counter_memcached", &env));
}

/// The example on three memcached nodes (`MEMCACHED_ADDR` as a list): the counter goes on,
/// and the session is on exactly one of them.
#[cfg(feature = "memcached")]
#[test]
fn counter_memcached_on_three_nodes() {
    let nodes: Vec<_> = (0..3)
        .map(|_| tests::servers::ServerProcess::memcached())
        .collect();
    let list: Vec<String> = nodes
        .iter()
        .map(tests::servers::ServerProcess::addr)
        .collect();
    let mut app = Example::start("counter_memcached", &[("MEMCACHED_ADDR", list.join(","))]);
    counts_one_two_three(&mut app);
    let id = app.cookie.clone().expect("a session cookie");
    // Asked in memcached's own protocol: does the node hold the item?
    let holds = |node: &tests::servers::ServerProcess| {
        let mut conn = TcpStream::connect(("127.0.0.1", node.port())).unwrap();
        write!(conn, "mg session:{id} v\r\nmn\r\n").unwrap();
        let mut answer = Vec::new();
        let mut buf = [0; 512];
        while !answer.ends_with(b"MN\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "memcached closed the connection");
            answer.extend_from_slice(&buf[..n]);
        }
        answer.starts_with(b"VA ")
    };
    let holders = nodes.iter().filter(|node| holds(node)).count();
    assert_eq!(holders, 1);
}
