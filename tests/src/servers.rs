//! Real `redis-server` and `memcached` processes on free loopback ports, which tests can
//! stop, start again, pause and resume to inject faults.

use std::{
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// A server process the test owns; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    program: &'static str,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

impl ServerProcess {
    fn launch(program: &'static str, args: impl Fn(u16) -> Vec<String>) -> Self {
        let port = free_port();
        let mut server = Self {
            program,
            args: args(port),
            port,
            child: None,
        };
        server.start();
        server
    }

    /// A `redis-server` with no persistence.
    #[must_use]
    pub fn redis() -> Self {
        Self::launch("redis-server", |port| {
            [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ]
            .map(str::to_owned)
            .to_vec()
        })
    }

    /// A `memcached` with 64 MiB and the default 1 MiB item size limit.
    #[must_use]
    pub fn memcached() -> Self {
        Self::launch("memcached", |port| {
            let mut args: Vec<String> = [
                "-p",
                &port.to_string(),
                "-l",
                "127.0.0.1",
                "-U",
                "0",
                "-m",
                "64",
            ]
            .map(str::to_owned)
            .to_vec();
            if is_root() {
                args.extend(["-u".to_owned(), "root".to_owned()]);
            }
            args
        })
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    #[must_use]
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    #[must_use]
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) on its port and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// With a message saying how to install it when the program is missing; when it does
    /// not accept connections within 10 seconds.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.program);
        let child = Command::new(self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start `{}` ({err}): it must be on PATH. scripts/test.sh installs it \
                     (apt-get install redis-server memcached)",
                    self.program
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("`{}` exited at start-up with {status}", self.program);
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not listen on {}",
                self.program,
                self.port
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process and waits for it: connections are refused from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): connections hang, as with an overloaded server.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused process must be thawed to die promptly on some kernels; harmless otherwise.
            self.signal("-CONT");
        }
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
