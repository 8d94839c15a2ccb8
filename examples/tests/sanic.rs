//! The round trip with Python: one browser goes between a Sanic app on sanic-sessions (the
//! maintained fork of `sanic_session`, `tests/sanic/app.py`) and this crate's counter
//! example on one store, and each app goes on with the session the other wrote. Needs the
//! venv `scripts/test.sh` makes in `tests/sanic/.venv`, and the example binaries, which
//! `cargo test -p examples --all-features` builds but `--test sanic` alone does not:
//!
//! ```sh
//! cargo build -p examples --examples --all-features
//! cargo test -p examples --all-features --test sanic
//! ```

#[cfg(any(feature = "redis", feature = "memcached"))]
mod apps {
    //! The two apps as processes, a browser with a cookie jar, and what the store holds.

    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::{TcpListener, TcpStream},
        path::{Path, PathBuf},
        process::{Child, Command, Stdio},
        sync::{Arc, Mutex, PoisonError},
        thread::{self, JoinHandle},
        time::{Duration, Instant},
    };

    /// The workspace's root directory.
    fn workspace_root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("examples/ is inside the workspace")
    }

    /// The venv's Python, which has Sanic, sanic-sessions and their store clients.
    fn python() -> PathBuf {
        let python = workspace_root().join("tests/sanic/.venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/test.sh, which makes the venv of the Sanic round trip \
             (python3 -m venv tests/sanic/.venv && tests/sanic/.venv/bin/pip install -r \
             tests/sanic/requirements.txt)",
            python.display()
        );
        python
    }

    /// An HTTP app running as a child process on a free loopback port (`BIND_ADDR`); killed
    /// by its PID when dropped, its output printed when the test failed.
    pub(crate) struct App {
        name: String,
        child: Child,
        port: u16,
        output: Arc<Mutex<Vec<u8>>>,
        readers: Vec<JoinHandle<()>>,
    }

    impl App {
        /// `tests/sanic/app.py` on the store `kind` (`redis` or `memcached`), with `env`.
        pub(crate) fn sanic(kind: &str, env: &[(&str, String)]) -> Self {
            let mut command = Command::new(python());
            command
                .arg(workspace_root().join("tests/sanic/app.py"))
                .arg(kind)
                // No __pycache__ in the source tree.
                .env("PYTHONDONTWRITEBYTECODE", "1");
            Self::start(&format!("sanic ({kind})"), command, env)
        }

        /// The example binary `name`, which `cargo test` builds beside this test.
        pub(crate) fn example(name: &str, env: &[(&str, String)]) -> Self {
            // Tests run from target/<profile>/deps; cargo builds examples into ../examples.
            let exe = std::env::current_exe().expect("test binary path");
            let examples = exe
                .parent()
                .and_then(Path::parent)
                .expect("target dir")
                .join("examples");
            let exe = examples.join(name);
            assert!(
                exe.exists(),
                "{} is missing: `cargo test -p examples --all-features` builds it, \
                 `cargo test --test sanic` alone does not (`cargo build -p examples --examples \
                 --all-features` first)",
                exe.display()
            );
            Self::start(name, Command::new(exe), env)
        }

        fn start(name: &str, mut command: Command, env: &[(&str, String)]) -> Self {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let mut child = command
                .env("BIND_ADDR", format!("127.0.0.1:{port}"))
                // Plain text in the output a failed test prints.
                .env("NO_COLOR", "1")
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
            let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped"));
            let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped"));
            let output = Arc::new(Mutex::new(Vec::new()));
            // Drained as it comes, so that a chatty app never blocks on a full pipe.
            let readers = [stdout, stderr]
                .into_iter()
                .map(|mut pipe| {
                    let output = Arc::clone(&output);
                    thread::spawn(move || {
                        let mut buf = [0; 4096];
                        while let Ok(n @ 1..) = pipe.read(&mut buf) {
                            output.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                    })
                })
                .collect();
            let mut app = Self {
                name: name.to_owned(),
                child,
                port,
                output,
                readers,
            };
            app.wait_until_listening();
            app
        }

        /// Panics (and the drop prints the app's output) when the app exits or does not
        /// listen within 20 seconds.
        fn wait_until_listening(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("{} exited at start-up with {status}", self.name);
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not listen on {}",
                    self.name,
                    self.port
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for App {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            // The pipes closed with the process: the readers end.
            for reader in self.readers.drain(..) {
                let _ = reader.join();
            }
            if thread::panicking() {
                let output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
                eprintln!(
                    "--- output of {} ---\n{}",
                    self.name,
                    String::from_utf8_lossy(&output)
                );
            }
        }
    }

    /// One browser: a cookie jar for the `session` cookie, whichever app set it.
    #[derive(Default)]
    pub(crate) struct Browser {
        session: Option<String>,
    }

    impl Browser {
        /// The session cookie's value, which both apps use as the session id.
        pub(crate) fn session(&self) -> &str {
            self.session.as_deref().expect("a session cookie")
        }

        /// Sends a request with the jar's cookie to `app`, keeps the `session` cookie it
        /// sets (dropping it when the app removes it), returns (status, body).
        pub(crate) fn request(&mut self, app: &App, method: &str, path: &str) -> (u16, String) {
            let mut stream = TcpStream::connect(("127.0.0.1", app.port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let cookie = self
                .session
                .as_ref()
                .map(|id| format!("Cookie: session={id}\r\n"))
                .unwrap_or_default();
            // Sanic logs "body not consumed" for a GET with any Content-Length.
            let length = if method == "GET" {
                ""
            } else {
                "Content-Length: 0\r\n"
            };
            write!(
                stream,
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{cookie}{length}\
                 Connection: close\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            stream
                .read_to_string(&mut response)
                .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", app.name));
            let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            for line in head.lines() {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                if !name.eq_ignore_ascii_case("set-cookie") {
                    continue;
                }
                if let Some(value) = value.trim().strip_prefix("session=") {
                    let (value, attributes) = value.split_once(';').unwrap_or((value, ""));
                    let removed =
                        value.is_empty() || attributes.to_ascii_lowercase().contains("max-age=0");
                    self.session = (!removed).then(|| value.to_owned());
                }
            }
            (status, body.trim_end().to_owned())
        }
    }

    /// `text` parsed by ujson, as sanic-sessions reads a session, and written back as
    /// compact JSON with sorted keys, so that a test can compare it with a literal.
    pub(crate) fn canonical_json(text: &str) -> String {
        const SCRIPT: &str = "import json, sys, ujson\n\
             value = ujson.loads(sys.stdin.read())\n\
             print(json.dumps(value, sort_keys=True, separators=(',', ':')))";
        let mut child = Command::new(python())
            .args(["-c", SCRIPT])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the venv's Python");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ujson cannot read {text:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    /// The string at `key` in the Redis on `port`, asked in Redis's own protocol (RESP).
    #[cfg(feature = "redis")]
    pub(crate) fn redis_string(port: u16, key: &str) -> String {
        let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
        write!(
            conn.get_mut(),
            "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n",
            key.len()
        )
        .unwrap();
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        let len: i64 = match line.trim_end().strip_prefix('$') {
            Some(len) => len.parse().unwrap(),
            // `-WRONGTYPE ...` when the key holds something else than a string, a hash say.
            None => panic!("GET {key}: {}", line.trim_end()),
        };
        let len = usize::try_from(len).unwrap_or_else(|_| panic!("nothing at {key}"));
        let mut value = vec![0; len + 2];
        conn.read_exact(&mut value).unwrap();
        value.truncate(len);
        String::from_utf8(value).expect("a UTF-8 value")
    }

    /// The item at `key` in the memcached on `port`, asked in memcached's text protocol (as
    /// aiomcache asks): its client flags and its value.
    #[cfg(feature = "memcached")]
    pub(crate) fn memcached_item(port: u16, key: &str) -> (u32, String) {
        let mut conn = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
        write!(conn.get_mut(), "get {key}\r\n").unwrap();
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        let header: Vec<&str> = line.split_whitespace().collect();
        let ["VALUE", _, flags, len] = header[..] else {
            panic!("get {key}: {}", line.trim_end());
        };
        let (flags, len): (u32, usize) = (flags.parse().unwrap(), len.parse().unwrap());
        let mut value = vec![0; len + 2];
        conn.read_exact(&mut value).unwrap();
        value.truncate(len);
        (flags, String::from_utf8(value).expect("a UTF-8 value"))
    }
}

#[cfg(any(feature = "redis", feature = "memcached"))]
use apps::{canonical_json, App, Browser};
#[cfg(any(feature = "redis", feature = "memcached"))]
use tests::servers::ServerProcess;

/// Asserts that `app` answers `method path` with 200 and `body`, and that the browser
/// still holds the session `id`.
#[cfg(any(feature = "redis", feature = "memcached"))]
fn visit(browser: &mut Browser, app: &App, method: &str, path: &str, body: &str, id: &str) {
    assert_eq!(
        browser.request(app, method, path),
        (200, body.to_owned()),
        "{method} {path}"
    );
    assert_eq!(
        browser.session(),
        id,
        "the session cookie after {method} {path}"
    );
}

/// Logs in and counts on Sanic, counts on actix, sees actix's count on Sanic. `stored`
/// reads the store's JSON object of a session id.
#[cfg(any(feature = "redis", feature = "memcached"))]
fn sanic_then_actix_then_sanic(sanic: &App, actix: &App, stored: impl Fn(&str) -> String) {
    let mut browser = Browser::default();
    assert_eq!(
        browser.request(sanic, "POST", "/login?user=ada"),
        (200, "logged in".to_owned())
    );
    let id = browser.session().to_owned();
    visit(&mut browser, sanic, "GET", "/", "1", &id);
    assert_eq!(stored(&id), r#"{"foo":1,"user":"ada"}"#);

    visit(&mut browser, actix, "GET", "/", "2", &id);
    visit(&mut browser, actix, "GET", "/", "3", &id);
    // actix wrote `foo` and kept `user`, which it never read.
    assert_eq!(stored(&id), r#"{"foo":3,"user":"ada"}"#);

    visit(&mut browser, sanic, "GET", "/whoami", "user=ada foo=3", &id);
    visit(&mut browser, sanic, "GET", "/", "4", &id);
    assert_eq!(stored(&id), r#"{"foo":4,"user":"ada"}"#);
}

/// Counts on actix, logs in and counts on Sanic, goes on counting on actix.
#[cfg(any(feature = "redis", feature = "memcached"))]
fn actix_then_sanic_then_actix(actix: &App, sanic: &App, stored: impl Fn(&str) -> String) {
    let mut browser = Browser::default();
    assert_eq!(browser.request(actix, "GET", "/"), (200, "1".to_owned()));
    let id = browser.session().to_owned();
    assert_eq!(stored(&id), r#"{"foo":1}"#);

    visit(&mut browser, sanic, "GET", "/whoami", "user=- foo=1", &id);
    visit(
        &mut browser,
        sanic,
        "POST",
        "/login?user=ada",
        "logged in",
        &id,
    );
    visit(&mut browser, sanic, "GET", "/", "2", &id);
    assert_eq!(stored(&id), r#"{"foo":2,"user":"ada"}"#);

    visit(&mut browser, actix, "GET", "/", "3", &id);
    assert_eq!(stored(&id), r#"{"foo":3,"user":"ada"}"#);
}

/// The apps on one Redis: both keep a session as a JSON string at `session:<id>` (ours
/// with `REDIS_LAYOUT=json`).
#[cfg(feature = "redis")]
fn apps_on_redis(redis: &ServerProcess) -> (App, App) {
    let sanic = App::sanic("redis", &[("REDIS_URL", redis.redis_url())]);
    let actix = App::example(
        "counter_redis",
        &[
            ("REDIS_URL", redis.redis_url()),
            ("REDIS_LAYOUT", "json".to_owned()),
        ],
    );
    (sanic, actix)
}

/// The session `id` in Redis, as canonical JSON.
#[cfg(feature = "redis")]
fn stored_in_redis(redis: &ServerProcess) -> impl Fn(&str) -> String + '_ {
    |id| canonical_json(&apps::redis_string(redis.port(), &format!("session:{id}")))
}

#[cfg(feature = "redis")]
#[test]
fn sanic_then_actix_then_sanic_on_redis() {
    let redis = ServerProcess::redis();
    let (sanic, actix) = apps_on_redis(&redis);
    sanic_then_actix_then_sanic(&sanic, &actix, stored_in_redis(&redis));
}

#[cfg(feature = "redis")]
#[test]
fn actix_then_sanic_then_actix_on_redis() {
    let redis = ServerProcess::redis();
    let (sanic, actix) = apps_on_redis(&redis);
    actix_then_sanic_then_actix(&actix, &sanic, stored_in_redis(&redis));
}

/// The apps on one memcached: both keep a session as one item at `session:<id>` holding
/// its JSON object.
#[cfg(feature = "memcached")]
fn apps_on_memcached(memcached: &ServerProcess) -> (App, App) {
    let sanic = App::sanic("memcached", &[("MEMCACHED_ADDR", memcached.addr())]);
    let actix = App::example("counter_memcached", &[("MEMCACHED_ADDR", memcached.addr())]);
    (sanic, actix)
}

/// The session `id` in memcached, as canonical JSON; its client flags must be 0, as
/// aiomcache refuses an item with flags unless given a handler for them.
#[cfg(feature = "memcached")]
fn stored_in_memcached(memcached: &ServerProcess) -> impl Fn(&str) -> String + '_ {
    |id| {
        let (flags, value) = apps::memcached_item(memcached.port(), &format!("session:{id}"));
        assert_eq!(flags, 0, "the client flags of {value}");
        canonical_json(&value)
    }
}

#[cfg(feature = "memcached")]
#[test]
fn sanic_then_actix_then_sanic_on_memcached() {
    let memcached = ServerProcess::memcached();
    let (sanic, actix) = apps_on_memcached(&memcached);
    sanic_then_actix_then_sanic(&sanic, &actix, stored_in_memcached(&memcached));
}

#[cfg(feature = "memcached")]
#[test]
fn actix_then_sanic_then_actix_on_memcached() {
    let memcached = ServerProcess::memcached();
    let (sanic, actix) = apps_on_memcached(&memcached);
    actix_then_sanic_then_actix(&actix, &sanic, stored_in_memcached(&memcached));
}
