//! A real actix-web server on a free loopback port, and a client for it.

use std::net::{SocketAddr, TcpListener};

use actix_kv_session::{storage::SessionStore, SessionMiddleware};
use actix_web::{dev::ServerHandle, App, HttpServer};

/// A running server; stopped when dropped.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    handle: ServerHandle,
}

impl TestServer {
    /// Starts the test routes behind `middleware` with two workers on 127.0.0.1:0.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    #[must_use]
    pub fn start<S: SessionStore + Clone>(middleware: SessionMiddleware<S>) -> Self {
        Self::start_scoped(vec![(String::new(), middleware)])
    }

    /// Starts the test routes several times on one server, each copy under its own path
    /// prefix behind its own middleware: `/{prefix}/counter`, and so on.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    #[must_use]
    pub fn start_scoped<S: SessionStore + Clone>(
        scopes: Vec<(String, SessionMiddleware<S>)>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let server = HttpServer::new(move || {
            scopes.iter().fold(App::new(), |app, (prefix, middleware)| {
                app.service(
                    actix_web::web::scope(prefix)
                        .wrap(middleware.clone())
                        .configure(crate::app::routes),
                )
            })
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { addr, handle }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Stopping is asynchronous; the runtime of the test ends it at the latest.
        drop(self.handle.stop(false));
    }
}
