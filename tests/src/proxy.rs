//! A TCP proxy in front of a real server, to inject the network faults a server process
//! cannot: connections that go silent without being closed, and a server that answers late.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Forwards connections on a free loopback port to `upstream`; stopped when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    /// Bumped to freeze every connection opened before.
    epoch: Arc<AtomicU64>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (`HOST:PORT`).
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(upstream: String) -> Self {
        Self::with_delay(upstream, Duration::ZERO).await
    }

    /// Starts forwarding to `upstream`, holding each answer from it for `delay` before
    /// passing it on: a server that answers late (a saturated or distant one), at full
    /// throughput.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn with_delay(upstream: String, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let epoch = Arc::new(AtomicU64::new(0));
        let accepting = actix_web::rt::spawn({
            let epoch = Arc::clone(&epoch);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let opened = epoch.load(Ordering::SeqCst);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    actix_web::rt::spawn(pump(
                        client_read,
                        server_write,
                        Arc::clone(&epoch),
                        opened,
                    ));
                    if delay.is_zero() {
                        actix_web::rt::spawn(pump(
                            server_read,
                            client_write,
                            Arc::clone(&epoch),
                            opened,
                        ));
                    } else {
                        actix_web::rt::spawn(delayed(server_read, client_write, delay));
                    }
                }
            }
        });
        Self {
            addr,
            epoch,
            accepting,
        }
    }

    /// `HOST:PORT` of the proxy.
    #[must_use]
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Every connection open now goes silent: it stays open and forwards nothing more, as
    /// when the peer vanished without a reset (a frozen host, a NAT that dropped the flow).
    /// New connections work.
    pub fn freeze_open_connections(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Copies `from` to `to` until either closes, or holds everything once the proxy's epoch
/// moved past `opened`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    epoch: Arc<AtomicU64>,
    opened: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if epoch.load(Ordering::SeqCst) != opened {
            // Silent: keep both ends open, forward nothing.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (chunks, mut due) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    actix_web::rt::spawn(async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let at = tokio::time::Instant::now() + delay;
        if chunks.send((at, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}
