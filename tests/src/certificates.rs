//! Certificates made at run time for the TLS servers the tests start (Redis, memcached): a
//! private CA, a server certificate valid for `127.0.0.1` and `localhost`, and a client
//! certificate, as PEM text and as files the servers read.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// Installs ring as the process's rustls crypto provider unless one is installed already.
///
/// rustls picks a provider by itself only while exactly one provider feature is compiled in;
/// installing one explicitly keeps TLS clients working when another crate of the build
/// enables a second one (aws-lc-rs is rustls's default). The Redis TLS launchers call it.
pub fn install_crypto_provider() {
    // An error only says that a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether a TLS server asks its clients for a certificate signed by its CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a certificate signed by the CA is refused.
    Required,
    /// The server does not ask for a client certificate.
    NotRequested,
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

/// A certificate authority made at run time.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign a CA");
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate and its key (PEM) for `name`, valid for `sans`, for `purposes`.
    fn sign(
        &self,
        name: &str,
        sans: Vec<SanType>,
        purposes: Vec<ExtendedKeyUsagePurpose>,
    ) -> (String, String) {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = sans;
        params.extended_key_usages = purposes;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("generate a key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign a certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// A certificate with its private key, as PEM text and as files.
#[derive(Debug)]
pub struct CertifiedKey {
    cert_pem: String,
    key_pem: String,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl CertifiedKey {
    fn write(dir: &Path, name: &str, (cert_pem, key_pem): (String, String)) -> Self {
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        write(&cert_file, &cert_pem);
        write(&key_file, &key_pem);
        Self {
            cert_pem,
            key_pem,
            cert_file,
            key_file,
        }
    }

    /// The certificate, PEM.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Its private key, PEM (PKCS#8).
    #[must_use]
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The file holding [`cert_pem`](Self::cert_pem).
    #[must_use]
    pub fn cert_file(&self) -> &Path {
        &self.cert_file
    }

    /// The file holding [`key_pem`](Self::key_pem).
    #[must_use]
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
}

/// A CA made at run time and what it signed, as PEM text and as files: a certificate for
/// servers (valid for `127.0.0.1` and `localhost`) and one for clients.
#[derive(Debug)]
pub struct Certificates {
    ca_pem: String,
    ca_file: PathBuf,
    /// Every server of a deployment presents it, also as a client of the others
    /// (replication, the cluster bus, a Sentinel's links): it is valid for both purposes.
    server: CertifiedKey,
    client: CertifiedKey,
}

impl Certificates {
    /// Makes the CA and the certificates, and writes them into `dir` (`ca.crt`,
    /// `server.crt`, `server.key`, `client.crt`, `client.key`).
    ///
    /// # Panics
    ///
    /// When a file cannot be written.
    #[must_use]
    pub fn issue(dir: &Path) -> Self {
        Self::issue_as(dir, "", "actix-kv-session test CA")
    }

    /// As [`issue`](Self::issue), with another CA: what it signed must be refused wherever
    /// the CA of [`issue`](Self::issue) is the one trusted. Its files are named
    /// `foreign-ca.crt`, `foreign-server.crt`, and so on.
    ///
    /// # Panics
    ///
    /// When a file cannot be written.
    #[must_use]
    pub fn issue_unrelated(dir: &Path) -> Self {
        Self::issue_as(dir, "foreign-", "unrelated test CA")
    }

    /// The certificates of a CA named `ca_name`, in files whose names start with `prefix`.
    fn issue_as(dir: &Path, prefix: &str, ca_name: &str) -> Self {
        let ca = Authority::new(ca_name);
        let server_sans = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into().expect("a DNS name")),
        ];
        let server = CertifiedKey::write(
            dir,
            &format!("{prefix}server"),
            ca.sign(
                "server",
                server_sans,
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
            ),
        );
        let client = CertifiedKey::write(
            dir,
            &format!("{prefix}client"),
            ca.sign(
                "client",
                Vec::new(),
                vec![ExtendedKeyUsagePurpose::ClientAuth],
            ),
        );
        let ca_pem = ca.pem();
        let ca_file = dir.join(format!("{prefix}ca.crt"));
        write(&ca_file, &ca_pem);
        Self {
            ca_pem,
            ca_file,
            server,
            client,
        }
    }

    /// The CA that signed the server and client certificates, PEM.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The file holding [`ca_pem`](Self::ca_pem).
    #[must_use]
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The certificate servers present, valid for `127.0.0.1` and `localhost`, for both
    /// server and client authentication.
    #[must_use]
    pub fn server(&self) -> &CertifiedKey {
        &self.server
    }

    /// A client certificate the CA signed.
    #[must_use]
    pub fn client(&self) -> &CertifiedKey {
        &self.client
    }
}

/// How soon a refused TLS handshake must fail a store's `ping`: never a hang.
pub const FAILS_FAST: std::time::Duration = std::time::Duration::from_secs(3);

/// The error of `ping` (a store's start-up check, expected to be refused) and its causes,
/// on one line; it must come within [`FAILS_FAST`].
pub async fn refusal<E: std::error::Error>(
    ping: impl std::future::Future<Output = Result<(), E>>,
) -> String {
    let started = std::time::Instant::now();
    let err = ping.await.expect_err("the handshake must be refused");
    let line = crate::error_chain(&err);
    assert!(
        started.elapsed() < FAILS_FAST,
        "refused after {:?}: {line}",
        started.elapsed()
    );
    line
}

/// Whether `cause` says that the server's certificate is not trusted (rustls's words).
#[must_use]
pub fn blames_the_certificate(cause: &str) -> bool {
    cause.contains("UnknownIssuer") || cause.contains("invalid peer certificate")
}
