//! A memcached node: its address, its weight, and how to open a connection to it, over TCP,
//! TLS (memcached's `-Z`) or a Unix socket.

use std::{fmt, io, path::PathBuf, sync::Arc, time::Duration};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore,
};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use super::conn::Connection;

/// The port libmemcached leaves out of a node's name on the hash ring.
pub(super) const DEFAULT_PORT: u16 = 11211;

/// Where a node listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Address {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// A node of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    pub(super) address: Address,
    /// Its share of the keys, relative to the other nodes' (libmemcached's weight).
    pub(super) weight: u32,
}

impl Node {
    /// Parses one node of a list: `HOST:PORT`, `tcp://HOST:PORT`, `[IPV6]:PORT`,
    /// `unix://PATH`, or a bare `HOST` (port 11211); any of the TCP forms may end in
    /// `:WEIGHT` after the port, as libmemcached's server lists do.
    pub(super) fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if let Some(path) = spec.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("a unix:// node without a path".to_owned());
            }
            return Ok(Self {
                address: Address::Unix(PathBuf::from(path)),
                weight: 1,
            });
        }
        let rest = spec
            .strip_prefix("tcp://")
            .or_else(|| spec.strip_prefix("memcache://"))
            .unwrap_or(spec);
        if rest.contains("://") {
            return Err(format!("{spec:?}: an unknown scheme (tcp:// or unix://)"));
        }
        let (host, after) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("{spec:?}: an IPv6 address without its `]`"))?;
                (host, after)
            }
            None => rest.find(':').map_or((rest, ""), |at| rest.split_at(at)),
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("{spec:?}: no host name"));
        }
        let mut numbers = after
            .strip_prefix(':')
            .map(|numbers| numbers.split(':'))
            .into_iter()
            .flatten();
        if !after.is_empty() && !after.starts_with(':') {
            return Err(format!("{spec:?}: expected `:PORT` after the host"));
        }
        let port = match numbers.next() {
            None => DEFAULT_PORT,
            Some(port) => port
                .parse()
                .ok()
                .filter(|&port: &u16| port > 0)
                .ok_or_else(|| format!("{spec:?}: {port:?} is not a port"))?,
        };
        let weight = match numbers.next() {
            None => 1,
            Some(weight) => weight
                .parse()
                .ok()
                .filter(|&w| w > 0)
                .ok_or_else(|| format!("{spec:?}: {weight:?} is not a weight (1 or more)"))?,
        };
        if numbers.next().is_some() {
            return Err(format!("{spec:?}: expected HOST:PORT or HOST:PORT:WEIGHT"));
        }
        Ok(Self {
            address: Address::Tcp {
                host: host.to_owned(),
                port,
            },
            weight,
        })
    }

    /// Whether the node is a Unix socket.
    pub(super) fn is_unix(&self) -> bool {
        matches!(self.address, Address::Unix(_))
    }

    /// The node's name on libmemcached's hash ring: the host name as given (an IPv6
    /// address in its brackets), with `:PORT` unless the port is memcached's default; a
    /// socket's path.
    pub(super) fn ring_name(&self) -> String {
        match &self.address {
            Address::Tcp { host, port } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                if *port == DEFAULT_PORT {
                    host
                } else {
                    format!("{host}:{port}")
                }
            }
            Address::Unix(path) => path.display().to_string(),
        }
    }

    /// Opens a connection within `timeout`, over TLS when `tls` is given.
    pub(super) async fn connect(
        &self,
        tls: Option<&Tls>,
        timeout: Duration,
    ) -> io::Result<Connection> {
        tokio::time::timeout(timeout, self.open(tls))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                ))
            })
    }

    async fn open(&self, tls: Option<&Tls>) -> io::Result<Connection> {
        match (&self.address, tls) {
            (Address::Tcp { host, port }, None) => {
                let socket = TcpStream::connect((host.as_str(), *port)).await?;
                socket.set_nodelay(true)?;
                let (reader, writer) = socket.into_split();
                Ok(Connection::start(reader, writer))
            }
            (Address::Tcp { host, port }, Some(tls)) => {
                let socket = TcpStream::connect((host.as_str(), *port)).await?;
                socket.set_nodelay(true)?;
                let name = match &tls.server_name {
                    Some(name) => name.clone(),
                    None => ServerName::try_from(host.clone())
                        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?,
                };
                let stream = tls.connector.connect(name, socket).await?;
                let (reader, writer) = tokio::io::split(stream);
                Ok(Connection::start(reader, writer))
            }
            (Address::Unix(path), _) => {
                let (reader, writer) = UnixStream::connect(path).await?.into_split();
                Ok(Connection::start(reader, writer))
            }
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// TLS settings for every node.
#[derive(Clone)]
pub(super) struct Tls {
    connector: TlsConnector,
    /// The name certificates must carry, when it is not the node's host.
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// What the builder gathered about TLS.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsSettings {
    pub(super) enabled: bool,
    /// PEM certificates to trust instead of the system's.
    pub(super) roots: Option<Vec<u8>>,
    /// A PEM certificate chain and its PEM private key.
    pub(super) client: Option<(Vec<u8>, Vec<u8>)>,
    pub(super) server_name: Option<String>,
}

impl TlsSettings {
    /// The TLS client these settings make, if TLS is on.
    pub(super) fn build(&self) -> Result<Option<Tls>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let mut roots = RootCertStore::empty();
        if let Some(pem) = &self.roots {
            let mut count = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|err| format!("root certificate: {err}"))?;
                roots
                    .add(cert)
                    .map_err(|err| format!("root certificate: {err}"))?;
                count += 1;
            }
            if count == 0 {
                return Err("root certificate: no PEM certificate found".to_owned());
            }
        } else {
            for cert in rustls_native_certs::load_native_certs().certs {
                // The system's store may hold certificates rustls cannot use.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "no system root certificates found; give one with root_certificate".to_owned(),
                );
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_root_certificates(roots);
        let mut config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let chain = CertificateDer::pem_slice_iter(chain)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| format!("client certificate: {err}"))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|err| format!("client key: {err}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| format!("client certificate: {err}"))?
            }
        };
        // Every connection makes a full handshake. memcached 1.6 (OpenSSL) hands out
        // resumption tickets but, asking for client certificates without its
        // `ssl_session_cache` option, answers a resumed handshake with an `internal_error`
        // alert: a second worker's connection was refused. Connections live as long as
        // their worker, so resuming would save little.
        config.resumption = rustls::client::Resumption::disabled();
        let server_name = self
            .server_name
            .as_ref()
            .map(|name| {
                ServerName::try_from(name.clone())
                    .map_err(|err| format!("TLS server name {name:?}: {err}"))
            })
            .transpose()?;
        Ok(Some(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16, weight: u32) -> Node {
        Node {
            address: Address::Tcp {
                host: host.to_owned(),
                port,
            },
            weight,
        }
    }

    #[test]
    fn node_lists_parse_as_libmemcached_writes_them() {
        assert_eq!(
            Node::parse("10.0.0.1:11212").unwrap(),
            tcp("10.0.0.1", 11212, 1)
        );
        assert_eq!(
            Node::parse(" tcp://cache:11213 ").unwrap(),
            tcp("cache", 11213, 1)
        );
        assert_eq!(Node::parse("cache").unwrap(), tcp("cache", 11211, 1));
        assert_eq!(
            Node::parse("cache:11211:3").unwrap(),
            tcp("cache", 11211, 3)
        );
        assert_eq!(Node::parse("[::1]:11300").unwrap(), tcp("::1", 11300, 1));
        assert_eq!(
            Node::parse("unix:///run/mc.sock").unwrap().address,
            Address::Unix("/run/mc.sock".into())
        );
        for bad in [
            "",
            ":11211",
            "cache:port",
            "cache:11211:0",
            "cache:1:2:3",
            "redis://x:1",
            "[::1:11211",
            "unix://",
        ] {
            assert!(Node::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ring_names_leave_out_the_default_port() {
        assert_eq!(tcp("10.0.1.1", 11211, 1).ring_name(), "10.0.1.1");
        assert_eq!(tcp("10.0.1.2", 11311, 1).ring_name(), "10.0.1.2:11311");
        assert_eq!(tcp("::1", 11300, 1).ring_name(), "[::1]:11300");
        assert_eq!(tcp("::1", 11300, 1).to_string(), "[::1]:11300");
    }
}
