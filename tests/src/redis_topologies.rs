//! Redis as production runs it, on loopback: TLS with certificates made at run time, a
//! password and an ACL user, a Cluster of three masters and three replicas, and a master and
//! a replica watched by three Sentinels; the Cluster and the Sentinel deployment also with
//! every link over TLS. Each launcher owns its processes and files: it stops the processes
//! by PID and removes the files when dropped.
//!
//! Start-up is synchronous, like [`ServerProcess`]. The waits that span a failover are
//! `async` (tokio timers) so that a test can keep its load running on the same runtime while
//! the cluster or the Sentinels promote a replica.

use std::{
    collections::HashMap,
    fmt::Write as _,
    fs,
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use redis::FromRedisValue;
use tempfile::TempDir;

#[doc(inline)]
pub use crate::certificates::{install_crypto_provider, Certificates, CertifiedKey, ClientAuth};
use crate::servers::ServerProcess;

const HOST: &str = "127.0.0.1";
/// How long one probe of a node (connect, command, reply) may take: a frozen node must not
/// stall a wait.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a topology may take to form (cluster joined, Sentinels aware of each other).
const FORMATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failover may take before a wait gives up.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// A temporary directory for a launcher's files, removed when dropped.
fn scratch_dir(what: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("redis-{what}-"))
        .tempdir()
        .expect("create a temporary directory")
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

/// `count` distinct loopback ports nobody listens on; with `bus`, port + 10000 (a cluster
/// node's bus port) is free too. Every port is held until all are found, so that none is
/// handed out twice.
fn free_ports(count: usize, bus: bool) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < count {
        let listener = TcpListener::bind((HOST, 0)).expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        if bus {
            let Some(bus_port) = port.checked_add(10_000) else {
                continue;
            };
            let Ok(bus_listener) = TcpListener::bind((HOST, bus_port)) else {
                continue;
            };
            held.push(bus_listener);
        }
        held.push(listener);
        ports.push(port);
    }
    ports
}

/// The arguments every `redis-server` here shares: loopback only, no persistence, its
/// files (log, replication dumps, cluster config) in `dir`.
fn server_args(port: u16, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--loglevel",
        "notice",
        // A master waits 5 s by default for more replicas before a diskless full sync:
        // every replica (and a restarted node) would be that much slower to be in sync.
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(["--dir".to_owned(), dir.display().to_string()]);
    args.extend([
        "--logfile".to_owned(),
        dir.join("redis.log").display().to_string(),
    ]);
    args
}

/// Starts a `redis-server` listening on `port` as `transport` says, with its own directory
/// `dir` (created here), the shared arguments and `extra`.
fn spawn_redis(transport: &Transport, port: u16, dir: &Path, extra: &[String]) -> ServerProcess {
    fs::create_dir_all(dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
    let mut args = transport.server_args(port, dir);
    args.extend_from_slice(extra);
    ServerProcess::spawn("redis-server", port, args, Some(dir.join("redis.log")))
}

/// `name:value` lines (`INFO`, `CLUSTER INFO`) as a map.
fn parse_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs `program` with `args` to completion (bounded), its output in `log`; returns the
/// output, or panics with it.
fn run_tool(program: &str, args: &[String], log: &Path, timeout: Duration) -> String {
    let out = fs::File::create(log).expect("create a tool log");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone a file handle"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot start `{program}` ({err}): it must be on PATH. scripts/test.sh installs \
                 it (apt-get install redis-tools)"
            )
        });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll a tool") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{program} {}` did not finish within {timeout:?}:\n{}",
                args.join(" "),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        thread::sleep(POLL);
    };
    let output = fs::read_to_string(log).unwrap_or_default();
    assert!(
        status.success(),
        "`{program} {}` failed with {status}:\n{output}",
        args.join(" ")
    );
    output
}

/// Polls `ready` until it gives a value or `timeout` passes; then panics with `what` and
/// the report `diagnose` writes.
fn wait_blocking<T>(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Option<T>,
    diagnose: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}\n{}",
            diagnose()
        );
        thread::sleep(POLL);
    }
}

/// [`wait_blocking`] for async tests: sleeps on the tokio timer between polls, so that the
/// runtime's other tasks (a load) go on. Each poll blocks for at most a few probes.
async fn wait_async<T>(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Option<T>,
    diagnose: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}\n{}",
            diagnose()
        );
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------
// TLS

/// `--tls-auth-clients` for a [`ClientAuth`].
fn tls_auth_clients(client_auth: ClientAuth) -> &'static str {
    match client_auth {
        ClientAuth::Required => "yes",
        ClientAuth::NotRequested => "no",
    }
}

/// What Redis needs of a deployment's certificates.
impl Certificates {
    /// What redis-rs needs to trust the CA and present the client certificate.
    fn for_redis_rs(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: self.client().cert_pem().as_bytes().to_vec(),
                client_key: self.client().key_pem().as_bytes().to_vec(),
            }),
            root_cert: Some(self.ca_pem().as_bytes().to_vec()),
        }
    }

    /// The settings of a server (`redis-server` or a Sentinel) that listens for TLS on
    /// `port` and speaks TLS to the other servers, as `name value` pairs; `port 0` (no
    /// plain TCP) is the caller's.
    fn server_settings(&self, port: u16, client_auth: ClientAuth) -> Vec<(&'static str, String)> {
        let file = |path: &Path| path.display().to_string();
        vec![
            ("tls-port", port.to_string()),
            ("tls-cert-file", file(self.server().cert_file())),
            ("tls-key-file", file(self.server().key_file())),
            ("tls-ca-cert-file", file(self.ca_file())),
            ("tls-auth-clients", tls_auth_clients(client_auth).to_owned()),
            // A replica to its master, a Sentinel to the servers and the other Sentinels.
            ("tls-replication", "yes".to_owned()),
        ]
    }
}

/// How a deployment's servers listen and how the harness reaches them: plain TCP, or TLS
/// only (`port 0`), where the harness trusts the deployment's CA and presents its client
/// certificate.
#[derive(Debug)]
enum Transport {
    Plain,
    Tls {
        certificates: Box<Certificates>,
        client_auth: ClientAuth,
    },
}

impl Transport {
    /// Makes the certificates in `dir` and installs a rustls crypto provider for the
    /// harness's and the test's clients.
    fn tls(dir: &Path, client_auth: ClientAuth) -> Self {
        install_crypto_provider();
        Self::Tls {
            certificates: Box::new(Certificates::issue(dir)),
            client_auth,
        }
    }

    fn certificates(&self) -> Option<&Certificates> {
        match self {
            Self::Plain => None,
            Self::Tls { certificates, .. } => Some(certificates),
        }
    }

    /// `redis://127.0.0.1:PORT` or `rediss://127.0.0.1:PORT`.
    fn url(&self, port: u16) -> String {
        match self {
            Self::Plain => format!("redis://{HOST}:{port}"),
            Self::Tls { .. } => format!("rediss://{HOST}:{port}"),
        }
    }

    /// [`server_args`], listening on `port` as the transport says.
    fn server_args(&self, port: u16, dir: &Path) -> Vec<String> {
        match self {
            Self::Plain => server_args(port, dir),
            Self::Tls {
                certificates,
                client_auth,
            } => {
                let mut args = server_args(0, dir);
                for (name, value) in certificates.server_settings(port, *client_auth) {
                    args.extend([format!("--{name}"), value]);
                }
                args
            }
        }
    }

    /// The lines of a Sentinel's config file that say where and how it listens.
    fn sentinel_config(&self, port: u16) -> String {
        match self {
            Self::Plain => format!("port {port}\n"),
            Self::Tls {
                certificates,
                client_auth,
            } => certificates
                .server_settings(port, *client_auth)
                .into_iter()
                .fold("port 0\n".to_owned(), |mut text, (name, value)| {
                    let _ = writeln!(text, "{name} {value}");
                    text
                }),
        }
    }

    /// The options `redis-cli` needs to reach the servers.
    fn cli_args(&self) -> Vec<String> {
        let Some(certificates) = self.certificates() else {
            return Vec::new();
        };
        let mut args = vec!["--tls".to_owned()];
        for (flag, path) in [
            ("--cacert", certificates.ca_file()),
            ("--cert", certificates.client().cert_file()),
            ("--key", certificates.client().key_file()),
        ] {
            args.extend([flag.to_owned(), path.display().to_string()]);
        }
        args
    }

    /// Sends `cmd` to the node on `port`, each step bounded by [`PROBE_TIMEOUT`].
    fn probe<T: FromRedisValue>(&self, port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let url = self.url(port);
        let client = match self.certificates() {
            None => redis::Client::open(url)?,
            Some(certificates) => redis::Client::build_with_tls(url, certificates.for_redis_rs())?,
        };
        let mut conn = client.get_connection_with_timeout(PROBE_TIMEOUT)?;
        conn.set_read_timeout(Some(PROBE_TIMEOUT))?;
        conn.set_write_timeout(Some(PROBE_TIMEOUT))?;
        cmd.query(&mut conn)
    }

    /// `INFO section` of the node on `port` as `field → value`.
    fn info(&self, port: u16, section: &str) -> redis::RedisResult<HashMap<String, String>> {
        let text: String = self.probe(port, redis::cmd("INFO").arg(section))?;
        Ok(parse_fields(&text))
    }
}

/// A `redis-server` that speaks only TLS (`--port 0 --tls-port PORT`), with a CA, a server
/// certificate (valid for `127.0.0.1` and `localhost`) and a client certificate made at run
/// time, plus a second, unrelated CA and a client certificate it signed, to check that what
/// the first CA did not sign is refused.
#[derive(Debug)]
pub struct TlsRedis {
    server: ServerProcess,
    transport: Transport,
    /// Certificates of an unrelated CA, for what must be refused.
    foreign: Certificates,
    _dir: TempDir,
}

impl TlsRedis {
    /// Makes the certificates, starts the server and waits until it listens. Installs a
    /// rustls crypto provider for the test's clients ([`install_crypto_provider`]).
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing, was built without TLS, or does not come up.
    #[must_use]
    pub fn start(client_auth: ClientAuth) -> Self {
        let dir = scratch_dir("tls");
        let transport = Transport::tls(dir.path(), client_auth);
        let foreign = Certificates::issue_unrelated(dir.path());
        let port = free_ports(1, false)[0];
        let server = ServerProcess::spawn(
            "redis-server",
            port,
            transport.server_args(port, dir.path()),
            Some(dir.path().join("redis.log")),
        );
        Self {
            server,
            transport,
            foreign,
            _dir: dir,
        }
    }

    fn certificates(&self) -> &Certificates {
        self.transport
            .certificates()
            .expect("a TLS server has certificates")
    }

    /// `rediss://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        self.transport.url(self.server.port())
    }

    /// `rediss://localhost:PORT`: the same server by its DNS name.
    #[must_use]
    pub fn localhost_url(&self) -> String {
        format!("rediss://localhost:{}", self.server.port())
    }

    /// The CA that signed the server and client certificates, PEM.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        self.certificates().ca_pem()
    }

    /// The file holding [`ca_pem`](Self::ca_pem) (for `REDIS_CA_FILE`).
    #[must_use]
    pub fn ca_file(&self) -> &Path {
        self.certificates().ca_file()
    }

    /// A client certificate the CA signed.
    #[must_use]
    pub fn client(&self) -> &CertifiedKey {
        self.certificates().client()
    }

    /// A CA unrelated to the server's: trusting only it must fail the handshake.
    #[must_use]
    pub fn foreign_ca_pem(&self) -> &str {
        self.foreign.ca_pem()
    }

    /// The file holding [`foreign_ca_pem`](Self::foreign_ca_pem).
    #[must_use]
    pub fn foreign_ca_file(&self) -> &Path {
        self.foreign.ca_file()
    }

    /// A client certificate the unrelated CA signed: refused under
    /// [`ClientAuth::Required`].
    #[must_use]
    pub fn foreign_client(&self) -> &CertifiedKey {
        self.foreign.client()
    }

    /// The process, for faults (stop, start, pause, resume).
    #[must_use]
    pub fn server_mut(&mut self) -> &mut ServerProcess {
        &mut self.server
    }
}

// ---------------------------------------------------------------------------------------
// Password and ACL user

/// A `redis-server` that requires a password (`requirepass`, the `default` user's) and has
/// an ACL user allowed every command and key, as a session store's user would be.
#[derive(Debug)]
pub struct AuthRedis {
    server: ServerProcess,
    _dir: TempDir,
}

impl AuthRedis {
    /// The ACL user's name.
    pub const USER: &'static str = "sessions";
    /// The ACL user's password.
    pub const USER_PASSWORD: &'static str = "user-secret-4f1c";
    /// The `default` user's password (`requirepass`).
    pub const DEFAULT_PASSWORD: &'static str = "default-secret-9a2e";
    /// A password no user has.
    pub const WRONG_PASSWORD: &'static str = "not-the-password";

    /// Starts the server and waits until it listens.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not come up.
    #[must_use]
    pub fn start() -> Self {
        let dir = scratch_dir("auth");
        // A config file rather than `--user` arguments: the ACL rule is one line there, with
        // no quoting rules of the command line to get wrong.
        let config = dir.path().join("redis.conf");
        write(
            &config,
            &format!(
                "requirepass {}\nuser {} on >{} ~* &* +@all\n",
                Self::DEFAULT_PASSWORD,
                Self::USER,
                Self::USER_PASSWORD
            ),
        );
        let port = free_ports(1, false)[0];
        let mut args = vec![config.display().to_string()];
        args.extend(server_args(port, dir.path()));
        let server = ServerProcess::spawn(
            "redis-server",
            port,
            args,
            Some(dir.path().join("redis.log")),
        );
        Self { server, _dir: dir }
    }

    /// The ACL user's name.
    #[must_use]
    pub fn user(&self) -> &'static str {
        Self::USER
    }

    /// The ACL user's password.
    #[must_use]
    pub fn user_password(&self) -> &'static str {
        Self::USER_PASSWORD
    }

    /// The `default` user's password.
    #[must_use]
    pub fn default_password(&self) -> &'static str {
        Self::DEFAULT_PASSWORD
    }

    /// `redis://127.0.0.1:PORT`, without credentials: commands get `NOAUTH`.
    #[must_use]
    pub fn url_without_credentials(&self) -> String {
        self.server.redis_url()
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT`: the `default` user.
    #[must_use]
    pub fn url_with_password(&self) -> String {
        format!(
            "redis://:{}@{HOST}:{}",
            Self::DEFAULT_PASSWORD,
            self.server.port()
        )
    }

    /// `redis://USER:PASSWORD@127.0.0.1:PORT`: the ACL user.
    #[must_use]
    pub fn url_with_user(&self) -> String {
        format!(
            "redis://{}:{}@{HOST}:{}",
            Self::USER,
            Self::USER_PASSWORD,
            self.server.port()
        )
    }

    /// `redis://USER:WRONG@127.0.0.1:PORT`: the ACL user with a wrong password.
    #[must_use]
    pub fn url_with_wrong_password(&self) -> String {
        format!(
            "redis://{}:{}@{HOST}:{}",
            Self::USER,
            Self::WRONG_PASSWORD,
            self.server.port()
        )
    }

    /// `127.0.0.1:PORT`.
    #[must_use]
    pub fn addr(&self) -> String {
        self.server.addr()
    }

    /// The process, for faults (stop, start, pause, resume).
    #[must_use]
    pub fn server_mut(&mut self) -> &mut ServerProcess {
        &mut self.server
    }
}

// ---------------------------------------------------------------------------------------
// Cluster

/// The cluster slot of `key`, as Redis computes it: CRC16-XMODEM of the key, or of its hash
/// tag (the text between the first `{` and the next `}`, when not empty), modulo 16384.
///
/// redis-rs has the same function (`cluster_routing::Slot::for_key`) but does not expose
/// the number.
#[must_use]
pub fn key_slot(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key).unwrap_or(key)) % 16_384
}

fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            }
        })
    })
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    port: u16,
    master: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            // ip:port@cport[,hostname]
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags: Vec<&str> = fields[2].split(',').collect();
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(NodeLine {
                port,
                master: flags.contains(&"master"),
                failed: flags.contains(&"fail") || flags.contains(&"noaddr"),
                slots,
            })
        })
        .collect()
}

/// A Redis Cluster of three masters and three replicas (`--cluster-replicas 1`) on loopback,
/// with a short node timeout so that a failover takes seconds. Node indices are fixed (the
/// order of [`urls`](Self::urls)); roles change with failovers and are read from the
/// cluster. [`start_tls`](Self::start_tls) starts one that speaks only TLS.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<ServerProcess>,
    /// The slots each node served when it was last killed or paused.
    slots_when_lost: HashMap<usize, Vec<(u16, u16)>>,
    transport: Transport,
    dir: TempDir,
}

impl RedisCluster {
    /// `cluster-node-timeout`: a master that does not answer for this long is failed over.
    /// Short for quick tests, long enough that a busy CI machine does not fail nodes over
    /// by itself.
    pub const NODE_TIMEOUT: Duration = Duration::from_secs(2);
    const MASTERS: usize = 3;

    /// Starts six nodes, creates the cluster with `redis-cli --cluster create`, and waits
    /// until every node says `cluster_state:ok`, knows all six, and every replica is in sync
    /// with its master.
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` is missing, or the cluster does not form within
    /// 30 seconds (with what each node says).
    #[must_use]
    pub fn start() -> Self {
        Self::launch(scratch_dir("cluster"), Transport::Plain)
    }

    /// As [`start`](Self::start), for a cluster whose every link is TLS (`port 0`,
    /// `tls-cluster yes`, `tls-replication yes`) with certificates made at run time (see
    /// [`certificates`](Self::certificates)); `client_auth` says whether its nodes require a
    /// client certificate. Installs a rustls crypto provider for the test's clients.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when `redis-server` was built without TLS.
    #[must_use]
    pub fn start_tls(client_auth: ClientAuth) -> Self {
        let dir = scratch_dir("cluster-tls");
        let transport = Transport::tls(dir.path(), client_auth);
        Self::launch(dir, transport)
    }

    fn launch(dir: TempDir, transport: Transport) -> Self {
        let nodes: Vec<ServerProcess> = free_ports(Self::MASTERS * 2, true)
            .into_iter()
            .enumerate()
            .map(|(i, port)| {
                let node_dir = dir.path().join(format!("node-{i}"));
                let mut extra = vec![
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    // Each node rewrites its own cluster config; restart_node reloads it.
                    "--cluster-config-file".to_owned(),
                    node_dir.join("nodes.conf").display().to_string(),
                    "--cluster-node-timeout".to_owned(),
                    Self::NODE_TIMEOUT.as_millis().to_string(),
                    // While a master is replaced, only its slots fail; the rest of the
                    // cluster keeps serving, as most production clusters are set up.
                    "--cluster-require-full-coverage".to_owned(),
                    "no".to_owned(),
                ];
                if transport.certificates().is_some() {
                    // The cluster bus too (still on port + 10000).
                    extra.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
                }
                spawn_redis(&transport, port, &node_dir, &extra)
            })
            .collect();
        let mut create = transport.cli_args();
        create.extend(["--cluster".to_owned(), "create".to_owned()]);
        create.extend(nodes.iter().map(ServerProcess::addr));
        create.extend(
            ["--cluster-replicas", "1", "--cluster-yes"]
                .into_iter()
                .map(str::to_owned),
        );
        run_tool(
            "redis-cli",
            &create,
            &dir.path().join("cluster-create.log"),
            FORMATION_TIMEOUT,
        );
        let cluster = Self {
            nodes,
            slots_when_lost: HashMap::new(),
            transport,
            dir,
        };
        wait_blocking(
            "the cluster did not form",
            FORMATION_TIMEOUT,
            || cluster.is_formed().then_some(()),
            || cluster.diagnose(),
        );
        cluster
    }

    /// How many nodes it has (6).
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has nodes (here for clippy's `len_without_is_empty`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's `redis://127.0.0.1:PORT` (`rediss://` over TLS), by index: the seed
    /// list for a cluster client.
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|node| self.url(node)).collect()
    }

    /// Node `node`'s `redis://127.0.0.1:PORT` (`rediss://` over TLS).
    #[must_use]
    pub fn url(&self, node: usize) -> String {
        self.transport.url(self.nodes[node].port())
    }

    /// The CA and client certificate of a cluster started with
    /// [`start_tls`](Self::start_tls); `None` for a plain one.
    #[must_use]
    pub fn certificates(&self) -> Option<&Certificates> {
        self.transport.certificates()
    }

    /// Node `node`'s `127.0.0.1:PORT`.
    #[must_use]
    pub fn addr(&self, node: usize) -> String {
        self.nodes[node].addr()
    }

    /// The process of node `node`, for other faults.
    #[must_use]
    pub fn node_mut(&mut self, node: usize) -> &mut ServerProcess {
        &mut self.nodes[node]
    }

    /// The indices of the nodes that are masters now (not failed), as a live node sees it.
    #[must_use]
    pub fn masters(&self) -> Vec<usize> {
        let view = self.view();
        let mut masters: Vec<usize> = view
            .iter()
            .filter(|n| n.master && !n.failed)
            .filter_map(|n| self.index_of(n.port))
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The indices of the nodes that are replicas now (not failed).
    #[must_use]
    pub fn replicas(&self) -> Vec<usize> {
        let view = self.view();
        let mut replicas: Vec<usize> = view
            .iter()
            .filter(|n| !n.master && !n.failed)
            .filter_map(|n| self.index_of(n.port))
            .collect();
        replicas.sort_unstable();
        replicas
    }

    /// Whether node `node` is a master now.
    #[must_use]
    pub fn is_master(&self, node: usize) -> bool {
        self.masters().contains(&node)
    }

    /// The index of the master serving `slot` now.
    ///
    /// # Panics
    ///
    /// When no live master serves it (during a failover).
    #[must_use]
    pub fn master_for_slot(&self, slot: u16) -> usize {
        let view = self.view();
        view.iter()
            .filter(|n| n.master && !n.failed)
            .find(|n| n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .and_then(|n| self.index_of(n.port))
            .unwrap_or_else(|| panic!("no live master serves slot {slot}\n{}", self.diagnose()))
    }

    /// The index of the master serving `key`'s slot now.
    ///
    /// # Panics
    ///
    /// As [`master_for_slot`](Self::master_for_slot).
    #[must_use]
    pub fn master_for_key(&self, key: &[u8]) -> usize {
        self.master_for_slot(key_slot(key))
    }

    /// Kills node `node` (SIGKILL, by PID) and waits for it: as a crashed machine, its
    /// replica takes over after [`NODE_TIMEOUT`](Self::NODE_TIMEOUT) and an election.
    pub fn kill_node(&mut self, node: usize) {
        self.remember_slots(node);
        if self.nodes[node].is_running() {
            self.nodes[node].resume();
        }
        self.nodes[node].stop();
    }

    /// Freezes node `node` (SIGSTOP): its connections hang; a failover follows as for a
    /// killed node.
    pub fn pause_node(&mut self, node: usize) {
        self.remember_slots(node);
        self.nodes[node].pause();
    }

    /// Thaws node `node` (SIGCONT).
    pub fn resume_node(&self, node: usize) {
        self.nodes[node].resume();
    }

    /// Starts a killed node again on its port with its cluster config file: it rejoins (as
    /// a replica when it was failed over). Waits until it listens; see
    /// [`wait_until_ok`](Self::wait_until_ok) for the cluster to settle.
    pub fn restart_node(&mut self, node: usize) {
        self.nodes[node].start();
    }

    /// Waits until a replica was promoted in place of `old_master` (killed or paused): every
    /// other running node says `cluster_state:ok` and sees the slots `old_master` served
    /// served by one live master, the same for all. Returns the new master's index.
    ///
    /// # Panics
    ///
    /// After 20 seconds, with what each node says.
    pub async fn wait_for_failover(&self, old_master: usize) -> usize {
        let slot = self
            .slots_when_lost
            .get(&old_master)
            .cloned()
            .unwrap_or_else(|| self.slots_of(old_master))
            .first()
            .map_or_else(
                || panic!("node {old_master} served no slot: it was no master"),
                |&(first, _)| first,
            );
        wait_async(
            &format!("no replica took over from node {old_master}"),
            FAILOVER_TIMEOUT,
            || self.failed_over(old_master, slot),
            || self.diagnose(),
        )
        .await
    }

    /// Waits until every running node says `cluster_state:ok` and knows every other one
    /// (after a restart).
    ///
    /// # Panics
    ///
    /// After 20 seconds, with what each node says.
    pub async fn wait_until_ok(&self) {
        wait_async(
            "the cluster did not settle",
            FAILOVER_TIMEOUT,
            || self.is_formed().then_some(()),
            || self.diagnose(),
        )
        .await;
    }

    /// `CLUSTER subcommand`'s text (`INFO`, `NODES`) from the node on `port`.
    fn cluster_says(&self, port: u16, subcommand: &str) -> redis::RedisResult<String> {
        self.transport
            .probe(port, redis::cmd("CLUSTER").arg(subcommand))
    }

    fn index_of(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    fn running(&self) -> impl Iterator<Item = &ServerProcess> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// `CLUSTER NODES` as the first responsive node sees it.
    fn view(&self) -> Vec<NodeLine> {
        self.running()
            .find_map(|n| self.cluster_says(n.port(), "NODES").ok())
            .map(|text| parse_cluster_nodes(&text))
            .unwrap_or_default()
    }

    fn slots_of(&self, node: usize) -> Vec<(u16, u16)> {
        let port = self.nodes[node].port();
        self.view()
            .into_iter()
            .find(|n| n.port == port)
            .map(|n| n.slots)
            .unwrap_or_default()
    }

    fn remember_slots(&mut self, node: usize) {
        let slots = self.slots_of(node);
        if !slots.is_empty() {
            self.slots_when_lost.insert(node, slots);
        }
    }

    /// Every running node answers, says `cluster_state:ok` with every slot assigned,
    /// knows every node with none in handshake, and sees every running node up in the role
    /// that node gives itself; every running replica is in sync with its master.
    fn is_formed(&self) -> bool {
        let mut roles = Vec::new();
        for node in self.running() {
            let Ok(replication) = self.transport.info(node.port(), "replication") else {
                return false;
            };
            let master = replication.get("role").is_some_and(|r| r == "master");
            let in_sync = replication
                .get("master_link_status")
                .is_some_and(|s| s == "up");
            if !master && !in_sync {
                return false;
            }
            roles.push((node.port(), master));
        }
        self.running().all(|node| {
            let Ok(text) = self.cluster_says(node.port(), "INFO") else {
                return false;
            };
            let fields = parse_fields(&text);
            let field = |k: &str| fields.get(k).map(String::as_str);
            let known = self.nodes.len().to_string();
            let Ok(text) = self.cluster_says(node.port(), "NODES") else {
                return false;
            };
            let view = parse_cluster_nodes(&text);
            field("cluster_state") == Some("ok")
                && field("cluster_slots_assigned") == Some("16384")
                && field("cluster_known_nodes") == Some(known.as_str())
                && !text.contains("handshake")
                && roles.iter().all(|&(port, master)| {
                    view.iter()
                        .any(|n| n.port == port && n.master == master && !n.failed)
                })
        })
    }

    /// The new master's index once `slot` (which `old_master` served) is served by another
    /// live master in the eyes of every responsive node, each saying `cluster_state:ok`.
    fn failed_over(&self, old_master: usize, slot: u16) -> Option<usize> {
        let old_port = self.nodes[old_master].port();
        let mut owner = None;
        for node in self.running().filter(|n| n.port() != old_port) {
            let info = self.cluster_says(node.port(), "INFO").ok()?;
            if parse_fields(&info).get("cluster_state")? != "ok" {
                return None;
            }
            let text = self.cluster_says(node.port(), "NODES").ok()?;
            let serving = parse_cluster_nodes(&text).into_iter().find(|n| {
                n.master && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
            })?;
            if serving.port == old_port || owner.is_some_and(|p| p != serving.port) {
                return None;
            }
            owner = Some(serving.port);
        }
        owner.and_then(|port| self.index_of(port))
    }

    /// What each node says, and the last lines of its log, for a panic message.
    fn diagnose(&self) -> String {
        let mut report = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let _ = write!(report, "\n=== node {i} ({}) ", node.addr());
            if !node.is_running() {
                report.push_str("stopped\n");
                continue;
            }
            match self.cluster_says(node.port(), "NODES") {
                Ok(nodes) => {
                    let state = self
                        .cluster_says(node.port(), "INFO")
                        .map(|t| parse_fields(&t).remove("cluster_state").unwrap_or_default())
                        .unwrap_or_default();
                    let _ = write!(report, "cluster_state:{state}\n{nodes}");
                }
                Err(err) => {
                    let _ = write!(report, "does not answer: {err}\n{}", node.log_tail());
                }
            }
        }
        let create =
            fs::read_to_string(self.dir.path().join("cluster-create.log")).unwrap_or_default();
        let _ = write!(report, "\n=== redis-cli --cluster create\n{create}");
        report
    }
}

// ---------------------------------------------------------------------------------------
// Sentinel

/// A master, one replica of it (`--replicaof`), and three Sentinels (`redis-server
/// --sentinel`) that monitor it as [`MASTER_NAME`](Self::MASTER_NAME) with quorum 2. Each
/// Sentinel has its own config file, which it rewrites as it learns the topology.
/// [`start_tls`](Self::start_tls) starts a deployment that speaks only TLS.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The data nodes: index 0 starts as the master, index 1 as its replica.
    servers: Vec<ServerProcess>,
    sentinels: Vec<ServerProcess>,
    /// The address of the master [`kill_master`](Self::kill_master) killed last.
    killed_master: Option<String>,
    transport: Transport,
    _dir: TempDir,
}

impl RedisSentinel {
    /// The name the Sentinels know the master by.
    pub const MASTER_NAME: &'static str = "mymaster";
    /// `down-after-milliseconds`: a master silent this long is subjectively down.
    pub const DOWN_AFTER: Duration = Duration::from_secs(1);
    /// `failover-timeout`: a failed election is retried after twice this.
    pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);
    const SENTINELS: usize = 3;

    /// Starts the master, its replica and the Sentinels, and waits until the replica is in
    /// sync and every Sentinel knows the master, the replica and the two other Sentinels.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or the topology does not form within 30 seconds
    /// (with what each Sentinel says).
    #[must_use]
    pub fn start() -> Self {
        Self::launch(scratch_dir("sentinel"), Transport::Plain)
    }

    /// As [`start`](Self::start), for a deployment whose every link is TLS (`port 0`,
    /// `tls-replication yes` on the servers and the Sentinels) with certificates made at
    /// run time (see [`certificates`](Self::certificates)); `client_auth` says whether the
    /// servers and the Sentinels require a client certificate. Installs a rustls crypto
    /// provider for the test's clients.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when `redis-server` was built without TLS.
    #[must_use]
    pub fn start_tls(client_auth: ClientAuth) -> Self {
        let dir = scratch_dir("sentinel-tls");
        let transport = Transport::tls(dir.path(), client_auth);
        Self::launch(dir, transport)
    }

    fn launch(dir: TempDir, transport: Transport) -> Self {
        let ports = free_ports(2 + Self::SENTINELS, false);
        let master = spawn_redis(&transport, ports[0], &dir.path().join("server-0"), &[]);
        let replica = spawn_redis(
            &transport,
            ports[1],
            &dir.path().join("server-1"),
            &[
                "--replicaof".to_owned(),
                HOST.to_owned(),
                ports[0].to_string(),
            ],
        );
        let sentinels = ports[2..]
            .iter()
            .enumerate()
            .map(|(i, &port)| Self::spawn_sentinel(&transport, dir.path(), i, port, ports[0]))
            .collect();
        let sentinel = Self {
            servers: vec![master, replica],
            sentinels,
            killed_master: None,
            transport,
            _dir: dir,
        };
        wait_blocking(
            "the Sentinels did not learn the topology",
            FORMATION_TIMEOUT,
            || sentinel.is_formed().then_some(()),
            || sentinel.diagnose(),
        );
        sentinel
    }

    fn spawn_sentinel(
        transport: &Transport,
        dir: &Path,
        index: usize,
        port: u16,
        master_port: u16,
    ) -> ServerProcess {
        // Sentinels rewrite their config file (known replicas and Sentinels, epochs): each
        // needs a writable file of its own.
        let dir = dir.join(format!("sentinel-{index}"));
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        let config = dir.join("sentinel.conf");
        let log = dir.join("sentinel.log");
        let name = Self::MASTER_NAME;
        write(
            &config,
            &format!(
                "{}bind {HOST}\nprotected-mode no\ndir {}\nlogfile {}\n\
                 sentinel monitor {name} {HOST} {master_port} 2\n\
                 sentinel down-after-milliseconds {name} {}\n\
                 sentinel failover-timeout {name} {}\n\
                 sentinel parallel-syncs {name} 1\n",
                transport.sentinel_config(port),
                dir.display(),
                log.display(),
                Self::DOWN_AFTER.as_millis(),
                Self::FAILOVER_TIMEOUT.as_millis(),
            ),
        );
        ServerProcess::spawn(
            "redis-server",
            port,
            vec![config.display().to_string(), "--sentinel".to_owned()],
            Some(log),
        )
    }

    /// The name the Sentinels know the master by.
    #[must_use]
    pub fn master_name(&self) -> &'static str {
        Self::MASTER_NAME
    }

    /// Every Sentinel's `redis://127.0.0.1:PORT` (`rediss://` over TLS).
    #[must_use]
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| self.transport.url(s.port()))
            .collect()
    }

    /// The data node `server`'s (0: first master, 1: first replica) `redis://` URL
    /// (`rediss://` over TLS).
    #[must_use]
    pub fn server_url(&self, server: usize) -> String {
        self.transport.url(self.servers[server].port())
    }

    /// The CA and client certificate of a deployment started with
    /// [`start_tls`](Self::start_tls); `None` for a plain one.
    #[must_use]
    pub fn certificates(&self) -> Option<&Certificates> {
        self.transport.certificates()
    }

    /// The process of data node `server`, for other faults.
    #[must_use]
    pub fn server_mut(&mut self, server: usize) -> &mut ServerProcess {
        &mut self.servers[server]
    }

    /// The process of Sentinel `sentinel`, for faults.
    #[must_use]
    pub fn sentinel_mut(&mut self, sentinel: usize) -> &mut ServerProcess {
        &mut self.sentinels[sentinel]
    }

    /// The master's `127.0.0.1:PORT`, as the first responsive Sentinel reports it
    /// (`SENTINEL get-master-addr-by-name`).
    ///
    /// # Panics
    ///
    /// When no Sentinel answers.
    #[must_use]
    pub fn master_addr(&self) -> String {
        self.sentinels
            .iter()
            .filter(|s| s.is_running())
            .find_map(|s| self.master_addr_from(s.port()))
            .unwrap_or_else(|| panic!("no Sentinel reports a master\n{}", self.diagnose()))
    }

    /// The index of the data node that is the master now (per the Sentinels).
    #[must_use]
    pub fn master_index(&self) -> usize {
        let addr = self.master_addr();
        self.servers
            .iter()
            .position(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("the master {addr} is none of ours"))
    }

    /// Kills the current master (SIGKILL, by PID) and waits for it; returns its index. The
    /// Sentinels promote the replica after [`DOWN_AFTER`](Self::DOWN_AFTER) and an
    /// election.
    pub fn kill_master(&mut self) -> usize {
        let index = self.master_index();
        self.killed_master = Some(self.servers[index].addr());
        // A paused master must be thawed to die promptly (see ServerProcess's Drop).
        self.servers[index].resume();
        self.servers[index].stop();
        index
    }

    /// Starts a killed data node again on its port; the Sentinels turn a former master into
    /// a replica of the new one.
    pub fn restart_server(&mut self, server: usize) {
        self.servers[server].start();
    }

    /// Waits until every running Sentinel reports a master other than the one
    /// [`kill_master`](Self::kill_master) killed, and that node says `role:master`; returns
    /// its `127.0.0.1:PORT`.
    ///
    /// # Panics
    ///
    /// When no master was killed; after 20 seconds, with what each Sentinel says.
    pub async fn wait_for_promotion(&self) -> String {
        let old = self
            .killed_master
            .clone()
            .expect("kill_master before waiting for a promotion");
        wait_async(
            &format!("no replica was promoted in place of {old}"),
            FAILOVER_TIMEOUT,
            || self.promoted(&old),
            || self.diagnose(),
        )
        .await
    }

    fn master_addr_from(&self, sentinel_port: u16) -> Option<String> {
        let (ip, port): (String, u16) = self
            .transport
            .probe(
                sentinel_port,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(Self::MASTER_NAME),
            )
            .ok()?;
        Some(format!("{ip}:{port}"))
    }

    fn promoted(&self, old: &str) -> Option<String> {
        let mut agreed: Option<String> = None;
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let addr = self.master_addr_from(sentinel.port())?;
            if addr == old || agreed.as_ref().is_some_and(|a| *a != addr) {
                return None;
            }
            agreed = Some(addr);
        }
        let addr = agreed?;
        let server = self.servers.iter().find(|s| s.addr() == addr)?;
        let role = self.transport.info(server.port(), "replication").ok()?;
        (role.get("role")? == "master").then_some(addr)
    }

    /// The replica is in sync, and every Sentinel sees the master as up with one replica
    /// and two other Sentinels.
    fn is_formed(&self) -> bool {
        let replica_in_sync = self
            .transport
            .info(self.servers[1].port(), "replication")
            .is_ok_and(|r| r.get("master_link_status").is_some_and(|s| s == "up"));
        replica_in_sync
            && self.sentinels.iter().all(|s| {
                self.sentinel_master(s.port()).is_ok_and(|m| {
                    let field = |k: &str| m.get(k).map(String::as_str);
                    field("flags") == Some("master")
                        && field("num-slaves") == Some("1")
                        && field("num-other-sentinels") == Some("2")
                })
            })
    }

    fn sentinel_master(&self, port: u16) -> redis::RedisResult<HashMap<String, String>> {
        self.transport.probe(
            port,
            redis::cmd("SENTINEL").arg("MASTER").arg(Self::MASTER_NAME),
        )
    }

    /// What each Sentinel says, and the last lines of its log, for a panic message.
    fn diagnose(&self) -> String {
        let mut report = String::new();
        for (i, server) in self.servers.iter().enumerate() {
            let role = self
                .transport
                .info(server.port(), "replication")
                .map_or_else(
                    |err| format!("does not answer: {err}"),
                    |r| format!("{r:?}"),
                );
            let _ = write!(report, "\n=== server {i} ({}): {role}", server.addr());
            if !server.is_running() {
                report.push_str(" (stopped)");
            }
        }
        for (i, sentinel) in self.sentinels.iter().enumerate() {
            let said = self.sentinel_master(sentinel.port()).map_or_else(
                |err| format!("does not answer: {err}"),
                |m| format!("{m:?}"),
            );
            let _ = write!(
                report,
                "\n=== sentinel {i} ({}): {said}{}",
                sentinel.addr(),
                sentinel.log_tail()
            );
        }
        report
    }
}

/// After a failover under a counter load: the increments the app acknowledged (the last
/// counter value each session answered with) that `store` no longer holds, and the number
/// acknowledged in all. Panics if a session holds more than was acknowledged.
pub async fn lost_increments<S: actix_kv_session::storage::SessionStore>(
    store: &S,
    sessions: &[actix_kv_session::SessionId],
    acknowledged: &[u64],
) -> (u64, u64) {
    let mut lost = 0;
    for (id, acked) in sessions.iter().zip(acknowledged) {
        let stored: u64 = store
            .load(id)
            .await
            .unwrap()
            .map_or(0, |record| record["foo"].parse().unwrap());
        assert!(
            stored <= *acked,
            "{stored} stored, only {acked} acknowledged"
        );
        lost += acked - stored;
    }
    (lost, acknowledged.iter().sum())
}
