//! A `memcached` that speaks only TLS (`-Z`), with certificates made at run time, on a free
//! loopback port. It logs to a file, quoted when it does not come up, and is stopped by PID
//! when dropped.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
};

use tempfile::TempDir;

use crate::{
    certificates::{Certificates, CertifiedKey, ClientAuth},
    servers::ServerProcess,
};

/// A `memcached -Z` with a CA, a server certificate (valid for `127.0.0.1` and `localhost`)
/// and a client certificate made at run time, plus the certificates of an unrelated CA, to
/// check that what the first CA did not sign is refused.
#[derive(Debug)]
pub struct TlsMemcached {
    server: ServerProcess,
    certificates: Certificates,
    foreign: Certificates,
    log: PathBuf,
    _dir: TempDir,
}

impl TlsMemcached {
    /// Makes the certificates, starts the server and waits until it listens. With
    /// [`ClientAuth::Required`] it refuses a client that presents no certificate signed by
    /// its CA (`ssl_verify_mode=2`).
    ///
    /// # Panics
    ///
    /// When `memcached` is missing, was built without TLS, or does not come up (with the
    /// last lines of its log).
    #[must_use]
    pub fn start(client_auth: ClientAuth) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("memcached-tls-")
            .tempdir()
            .expect("create a temporary directory");
        let certificates = Certificates::issue(dir.path());
        let foreign = Certificates::issue_unrelated(dir.path());
        let log = dir.path().join("memcached.log");
        let port = free_port();
        let server = ServerProcess::spawn(
            "sh",
            port,
            logged(&log, memcached_args(port, &certificates, client_auth)),
            Some(log.clone()),
        );
        Self {
            server,
            certificates,
            foreign,
            log,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT`, as a node of `MemcachedStore`'s list.
    #[must_use]
    pub fn addr(&self) -> String {
        self.server.addr()
    }

    /// `localhost:PORT`: the same server by its DNS name.
    #[must_use]
    pub fn localhost_addr(&self) -> String {
        format!("localhost:{}", self.server.port())
    }

    /// The CA that signed the server and client certificates, PEM.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        self.certificates.ca_pem()
    }

    /// The file holding [`ca_pem`](Self::ca_pem) (for `MEMCACHED_CA_FILE`).
    #[must_use]
    pub fn ca_file(&self) -> &Path {
        self.certificates.ca_file()
    }

    /// A client certificate the CA signed.
    #[must_use]
    pub fn client(&self) -> &CertifiedKey {
        self.certificates.client()
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

    /// What memcached logged (`-v`: errors and warnings), for assertion messages. It logs
    /// nothing about a refused handshake, even with `-vv`.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process, for faults (stop, start, pause, resume).
    #[must_use]
    pub fn server_mut(&mut self) -> &mut ServerProcess {
        &mut self.server
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// The arguments of a memcached that listens on `port` of loopback for TLS only, with 64
/// MiB, no UDP, and `certificates`' server certificate.
fn memcached_args(port: u16, certificates: &Certificates, client_auth: ClientAuth) -> Vec<String> {
    let file = |path: &Path| path.display().to_string();
    // memcached splits `-o` at commas, with no way to quote one: the paths (a temporary
    // directory's) have none.
    let mut tls = vec![
        format!("ssl_chain_cert={}", file(certificates.server().cert_file())),
        format!("ssl_key={}", file(certificates.server().key_file())),
    ];
    if client_auth == ClientAuth::Required {
        // 2 is "Require": SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT. Left without
        // `ssl_session_cache`, as memcached starts by default: it then refuses every resumed
        // TLS session with an `internal_error` alert, which a client must cope with.
        tls.push(format!("ssl_ca_cert={}", file(certificates.ca_file())));
        tls.push("ssl_verify_mode=2".to_owned());
    }
    [
        "-p",
        &port.to_string(),
        "-l",
        "127.0.0.1",
        "-U",
        "0",
        "-m",
        "64",
        "-Z",
        "-o",
        &tls.join(","),
        "-v",
        // Needed when the tests run as root, and ignored otherwise.
        "-u",
        "root",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The arguments of `sh` that runs memcached with `args`, its output appended to `log`.
/// `exec` makes memcached the process `sh` was, so that [`ServerProcess`] stops memcached
/// itself by its PID; a missing `memcached` is reported in the log.
fn logged(log: &Path, args: Vec<String>) -> Vec<String> {
    let mut sh = vec![
        "-c".to_owned(),
        r#"log="$1"; shift; exec memcached "$@" >>"$log" 2>&1"#.to_owned(),
        "memcached".to_owned(),
        log.display().to_string(),
    ];
    sh.extend(args);
    sh
}
