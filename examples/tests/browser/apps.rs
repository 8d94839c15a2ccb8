//! The example binaries the browsers visit, each on a free loopback port, on the memory
//! store or on a real Redis the test starts; stopped by PID when dropped.

use std::{
    fs::{self, File},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::harness::{free_port, target_dir, wait_for_port, Chromium};

/// Where an app keeps its sessions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Store {
    Memory,
    #[cfg(feature = "redis")]
    Redis,
}

/// A running example; killed when dropped (and its Redis, if it has one, after it).
pub(crate) struct App {
    child: Child,
    port: u16,
    log: PathBuf,
    #[cfg(feature = "redis")]
    _redis: Option<tests::servers::ServerProcess>,
}

impl App {
    /// Runs the counter of `store`: `counter` in memory, `counter_redis` on Redis.
    pub(crate) fn counter(chromium: &Chromium, store: Store) -> Self {
        match store {
            Store::Memory => Self::start(chromium, "counter", store, &[]),
            #[cfg(feature = "redis")]
            Store::Redis => Self::start(chromium, "counter_redis", store, &[]),
        }
    }

    /// Runs `examples/login.rs` on `store` with the settings `env`.
    pub(crate) fn login(chromium: &Chromium, store: Store, env: &[(&str, &str)]) -> Self {
        let mut env = env.to_vec();
        match store {
            Store::Memory => env.push(("SESSION_STORE", "memory")),
            #[cfg(feature = "redis")]
            Store::Redis => env.push(("SESSION_STORE", "redis")),
        }
        Self::start(chromium, "login", store, &env)
    }

    /// Runs example `name` with `BIND_ADDR` on a free port; its output goes to a log in the
    /// test's screenshot directory, kept if the test fails.
    fn start(chromium: &Chromium, name: &str, store: Store, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut command = Command::new(examples_dir().join(name));
        command
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .envs(env.iter().copied());
        #[cfg(feature = "redis")]
        let redis = match store {
            Store::Memory => None,
            Store::Redis => {
                let redis = tests::servers::ServerProcess::redis();
                command.env("REDIS_URL", redis.redis_url());
                Some(redis)
            }
        };
        #[cfg(not(feature = "redis"))]
        let _ = store;
        let log_path = chromium.artifacts.join(format!("{name}-{port}.log"));
        let log = File::create(&log_path).expect("create the app's log");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run example {name} ({e}): build the examples first \
                     (`cargo test -p examples --all-features` builds them)"
                )
            });
        wait_for_port(port, name, &mut child);
        Self {
            child,
            port,
            log: log_path,
            #[cfg(feature = "redis")]
            _redis: redis,
        }
    }

    /// `http://localhost:PORT{path}`: the app's site, as the tests visit it.
    pub(crate) fn url(&self, path: &str) -> String {
        self.url_on("localhost", path)
    }

    /// The app at another name of the loopback address (`127.0.0.1` is another site than
    /// `localhost`).
    pub(crate) fn url_on(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }
}

impl App {
    /// What the app has logged so far (its access log among it).
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).expect("read the app's log")
    }

    /// Waits until the app's log holds `line` `count` times (a request is logged once
    /// answered), and returns the log.
    pub(crate) async fn wait_for_log(&self, line: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.matches(line).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the app did not log {line:?} {count} times:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where cargo builds the examples: `target/<profile>/examples`, beside the test binary's
/// `deps`.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples");
    debug_assert!(dir.starts_with(target_dir()));
    dir
}
