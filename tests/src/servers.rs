//! Real `redis-server` and `memcached` processes on free loopback ports, which tests can
//! stop, start again, pause and resume to inject faults.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
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
    /// The file the process logs to, quoted when it does not come up.
    log: Option<PathBuf>,
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
            log: None,
            child: None,
        };
        server.start();
        server
    }

    /// Starts `program` with `args` and waits until it listens on `port`, which the caller
    /// picked and put in `args`. `log` is the file the caller told it to log to: a panic
    /// at start-up quotes its last lines.
    #[must_use]
    pub fn spawn(
        program: &'static str,
        port: u16,
        args: Vec<String>,
        log: Option<PathBuf>,
    ) -> Self {
        let mut server = Self {
            program,
            args,
            port,
            log,
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
        Self::memcached_with(&[])
    }

    /// A `memcached` as [`memcached`](Self::memcached) starts it, with the options `extra`
    /// (such as `-C`, no compare-and-swap).
    #[must_use]
    pub fn memcached_with(extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|&arg| arg.to_owned()).collect();
        Self::launch("memcached", move |port| {
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
            args.extend(extra.iter().cloned());
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

    /// The process id while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and not stopped since (a paused one is running).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last lines of its log file, for panic messages; empty without one.
    #[must_use]
    pub fn log_tail(&self) -> String {
        self.log.as_deref().map(log_tail).unwrap_or_default()
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
                panic!(
                    "`{}` exited at start-up with {status}{}",
                    self.program,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not listen on {}{}",
                self.program,
                self.port,
                self.log_tail()
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
        if let Some(child) = &self.child {
            // A paused process must be thawed to die promptly on some kernels; harmless
            // otherwise. Never a panic here: one during a test's unwinding would abort the
            // test binary before the other servers' destructors stop them.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.stop();
    }
}

/// The last 40 lines of a log file, introduced for a panic message.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|err| format!("(unreadable: {err})"));
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("\n--- last lines of {} ---\n{tail}", path.display())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
