//! Headless Chromium for one test: a chromedriver of its own on a free port, browsers on it
//! (each a Chromium process with its own profile), and, when the test fails, screenshots of
//! what they showed in `target/browser-screenshots/<test>/`.

use std::{
    any::Any,
    cell::RefCell,
    fs,
    future::Future,
    io::{ErrorKind, Write as _},
    net::{TcpListener, TcpStream},
    panic::{resume_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    rc::Rc,
    thread,
    time::{Duration, Instant},
};

use fantoccini::{
    elements::Element,
    wd::{Capabilities, WindowHandle},
    Client, ClientBuilder, Locator,
};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// The longest a browser test may take before it fails (with screenshots).
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// How long the screenshots of a failure, and quitting the browsers, may take.
const CLEAN_UP_LIMIT: Duration = Duration::from_secs(20);
/// How long to wait for a page to show what a test expects.
const PAGE_WAIT: Duration = Duration::from_secs(10);

/// Runs one browser test: starts chromedriver, runs `test`, and if it panics or takes longer
/// than [`TEST_LIMIT`], saves what every open browser showed before failing. Every browser
/// is closed and chromedriver stopped (by its PID) whatever happened.
///
/// Without Chromium on the machine the test is skipped with a loud message, except under CI
/// (`CI` set), where scripts/test.sh has installed it and a skip would hide the suite.
pub(crate) fn run<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Rc<Chromium>) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Err(why) = installed() {
        let ci = std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "false");
        assert!(!ci, "{test}: {why}; scripts/test.sh installs it");
        // Straight to stderr: the test harness captures `eprintln!` of tests that pass.
        let _ = writeln!(
            std::io::stderr(),
            "\n**********\nSKIPPED browser test {test}: {why}.\n\
             Install it (apt-get install chromium chromium-driver, as scripts/test.sh does).\n**********\n"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let chromium = Rc::new(Chromium::start(test));
        let outcome = tokio::time::timeout(
            TEST_LIMIT,
            AssertUnwindSafe(body(Rc::clone(&chromium))).catch_unwind(),
        )
        .await;
        let failure: Option<Box<dyn Any + Send>> = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(panic)) => Some(panic),
            Err(_) => Some(Box::new(format!("{test} took longer than {TEST_LIMIT:?}"))),
        };
        // Bounded too: a browser that hung the test may not answer these either.
        if failure.is_some() {
            let _ =
                tokio::time::timeout(CLEAN_UP_LIMIT, chromium.save_what_the_browsers_show()).await;
        }
        let _ = tokio::time::timeout(CLEAN_UP_LIMIT, chromium.close_all()).await;
        match failure {
            Some(panic) => {
                eprintln!(
                    "{test}: screenshots, pages and app logs in {}",
                    chromium.artifacts.display()
                );
                resume_unwind(panic)
            }
            None => {
                let _ = fs::remove_dir_all(&chromium.artifacts);
            }
        }
    });
}

/// Whether chromedriver and Chromium are there to be started.
fn installed() -> Result<(), String> {
    for program in ["chromedriver", "chromium"] {
        match Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => return Err(format!("`{program} --version` exited with {status}")),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                return Err(format!("`{program}` is not on PATH"))
            }
            Err(err) => return Err(format!("`{program}` cannot run: {err}")),
        }
    }
    Ok(())
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// Waits until something listens on the loopback `port`, or panics naming `what`.
pub(crate) fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start-up with {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    })
}

/// A Chromium profile (`--user-data-dir`): what a browser keeps across restarts. Made by
/// [`Chromium::profile`], which removes it after the last browser on it has quit (Chromium
/// writes to it as it quits).
#[derive(Debug)]
pub(crate) struct Profile(tempfile::TempDir);

impl Profile {
    fn new_in(dir: &Path) -> Self {
        Self(
            tempfile::Builder::new()
                .prefix("profile-")
                .tempdir_in(dir)
                .expect("a temporary profile directory"),
        )
    }

    /// Sets "Continue where you left off" (`session.restore_on_startup` 1 in the
    /// preferences), as a person may; a new profile opens the New Tab page instead.
    fn continue_where_it_left_off(&self) {
        let default = self.path().join("Default");
        fs::create_dir_all(&default).expect("create the profile's Default directory");
        fs::write(
            default.join("Preferences"),
            json!({ "session": { "restore_on_startup": 1 } }).to_string(),
        )
        .expect("write the profile's preferences");
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Waits until no Chromium runs on this profile: a browser removes its `SingletonLock`
    /// as it exits, and one started on the profile before that would hand over to it.
    async fn wait_until_unused(&self) {
        let lock = self.path().join("SingletonLock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock.symlink_metadata().is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A screenshot kept until the test ends: written out only if it fails.
struct Shot {
    name: String,
    png: Vec<u8>,
}

/// A browser that has not quit yet.
#[derive(Clone)]
struct Open {
    id: usize,
    label: String,
    client: Client,
    profile: Rc<Profile>,
}

/// chromedriver for one test, and the browsers it runs.
pub(crate) struct Chromium {
    driver: Child,
    url: String,
    /// Where a failing test leaves its screenshots, pages and app logs.
    pub(crate) artifacts: PathBuf,
    /// The open browsers, for the screenshots of a failure and to quit them at the end.
    open: RefCell<Vec<Open>>,
    /// The profiles this test made, removed when it ends, after its browsers quit.
    profiles: RefCell<Vec<Rc<Profile>>>,
    shots: RefCell<Vec<Shot>>,
    next_id: RefCell<usize>,
    /// chromedriver's and Chromium's `TMPDIR`, which holds the profiles too: removed last.
    tmp: tempfile::TempDir,
}

impl Chromium {
    fn start(test: &str) -> Self {
        let artifacts = target_dir().join("browser-screenshots").join(test);
        let _ = fs::remove_dir_all(&artifacts);
        fs::create_dir_all(&artifacts).expect("create the screenshot directory");
        let tmp = tempfile::Builder::new()
            .prefix("kv-session-chromium-")
            .tempdir()
            .expect("a temporary directory");
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            .env("TMPDIR", tmp.path())
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                artifacts.join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        wait_for_port(port, "chromedriver", &mut driver);
        Self {
            driver,
            url: format!("http://127.0.0.1:{port}"),
            artifacts,
            open: RefCell::default(),
            profiles: RefCell::default(),
            shots: RefCell::default(),
            next_id: RefCell::new(0),
            tmp,
        }
    }

    /// A new, empty profile, kept until the test ends.
    pub(crate) fn profile(&self) -> Rc<Profile> {
        let profile = Rc::new(Profile::new_in(self.tmp.path()));
        self.profiles.borrow_mut().push(Rc::clone(&profile));
        profile
    }

    /// A new profile set to "Continue where you left off", as a person may set it.
    pub(crate) fn profile_continuing_where_it_left_off(&self) -> Rc<Profile> {
        let profile = self.profile();
        profile.continue_where_it_left_off();
        profile
    }

    /// A new browser with a fresh profile: no cookies, nothing shared with other browsers.
    pub(crate) async fn browser(&self, label: &str) -> Browser<'_> {
        self.browser_with(label, &[]).await
    }

    /// A new browser with a fresh profile and these Chromium switches.
    pub(crate) async fn browser_with(&self, label: &str, switches: &[&str]) -> Browser<'_> {
        self.launch(label, &self.profile(), switches).await
    }

    /// A new browser on `profile`: after another one on it quit, a restart of that one.
    pub(crate) async fn browser_on(&self, label: &str, profile: &Rc<Profile>) -> Browser<'_> {
        self.launch(label, profile, &[]).await
    }

    async fn launch(&self, label: &str, profile: &Rc<Profile>, switches: &[&str]) -> Browser<'_> {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-component-update".to_owned(),
            "--window-size=1000,700".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if is_root() {
            args.push("--no-sandbox".to_owned());
        }
        args.extend(switches.iter().map(|&switch| switch.to_owned()));
        let capabilities: Capabilities = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "args": args },
        }))
        .expect("capabilities are a JSON object");
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|err| panic!("start Chromium for {label}: {err}"));
        let id = {
            let mut next = self.next_id.borrow_mut();
            *next += 1;
            *next
        };
        self.open.borrow_mut().push(Open {
            id,
            label: label.to_owned(),
            client: client.clone(),
            profile: Rc::clone(profile),
        });
        Browser {
            chromium: self,
            id,
            label: label.to_owned(),
            client,
        }
    }

    /// Writes a screenshot, the address, the cookies and the text of every open browser's
    /// page, and the screenshots taken along the way.
    async fn save_what_the_browsers_show(&self) {
        let open: Vec<Open> = self.open.borrow().clone();
        for Open { label, client, .. } in open {
            if let Ok(png) = client.screenshot().await {
                let _ = fs::write(self.artifacts.join(format!("{label}-at-failure.png")), png);
            }
            let url = client
                .current_url()
                .await
                .map_or_else(|e| format!("({e})"), |url| url.to_string());
            let cookies = client.get_all_cookies().await.map_or_else(
                |e| format!("({e})"),
                |cookies| {
                    cookies
                        .iter()
                        .map(|c| format!("{c} (http_only {:?})", c.http_only()))
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
            let source = client.source().await.unwrap_or_default();
            let _ = fs::write(
                self.artifacts.join(format!("{label}-at-failure.txt")),
                format!("url: {url}\n\ncookies:\n{cookies}\n\npage:\n{source}\n"),
            );
        }
        for (n, shot) in self.shots.borrow().iter().enumerate() {
            let _ = fs::write(
                self.artifacts
                    .join(format!("{:02}-{}.png", n + 1, shot.name)),
                &shot.png,
            );
        }
    }

    async fn close_all(&self) {
        let open: Vec<Open> = self.open.borrow_mut().drain(..).collect();
        for Open {
            client, profile, ..
        } in open
        {
            let _ = client.close().await;
            profile.wait_until_unused().await;
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The browsers are closed by then (`close_all`): chromedriver quits each one, and
        // stopping chromedriver first would leave them running.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/`, from the test binary's path (`target/<profile>/deps/browser-…`).
pub(crate) fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// One Chromium process, driven through chromedriver.
pub(crate) struct Browser<'c> {
    chromium: &'c Chromium,
    id: usize,
    label: String,
    client: Client,
}

impl Browser<'_> {
    pub(crate) async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{}: open {url}: {e}", self.label));
    }

    pub(crate) async fn reload(&self) {
        self.client
            .refresh()
            .await
            .unwrap_or_else(|e| panic!("{}: reload: {e}", self.label));
    }

    pub(crate) async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("{}: current URL: {e}", self.label))
            .to_string()
    }

    /// The page's visible text.
    pub(crate) async fn text(&self) -> String {
        self.script("return document.body ? document.body.innerText : '';")
            .await
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Waits until the page's address ends with `path` (a path and query) and its text
    /// contains `text`; panics with what the page showed otherwise.
    pub(crate) async fn wait_for_page(&self, path: &str, text: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let url = self.url().await;
            let shown = self.text().await;
            if url.ends_with(path) && shown.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: expected {path} showing {text:?}, the browser is at {url} showing {shown:?}",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!("{}: no `{css}` on {} ({e})", self.label, self.url().await),
        }
    }

    /// Clicks the element `css` selects (a link or a button: the navigation it starts is
    /// waited for).
    pub(crate) async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("{}: click `{css}`: {e}", self.label));
    }

    /// Types `text` into the field `css` selects.
    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("{}: clear `{css}`: {e}", self.label));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{}: type into `{css}`: {e}", self.label));
    }

    /// Runs `js` in the page and returns what it returns.
    pub(crate) async fn script(&self, js: &str) -> Value {
        self.client
            .execute(js, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{}: script failed: {e}\n{js}", self.label))
    }

    /// Runs `js` in the page; it ends by calling `done(value)`, whose value is returned.
    pub(crate) async fn script_async(&self, js: &str) -> Value {
        let js = format!("const done = arguments[arguments.length - 1];\n{js}");
        self.client
            .execute_async(&js, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{}: script failed: {e}\n{js}", self.label))
    }

    /// The cookie `name` as the browser keeps it for the current page (HttpOnly ones too).
    pub(crate) async fn cookie(&self, name: &str) -> Option<fantoccini::cookies::Cookie<'static>> {
        self.client
            .get_all_cookies()
            .await
            .unwrap_or_else(|e| panic!("{}: cookies: {e}", self.label))
            .into_iter()
            .find(|cookie| cookie.name() == name)
    }

    /// Puts `cookie` in the browser's jar, for the current page's host.
    pub(crate) async fn add_cookie(&self, cookie: fantoccini::cookies::Cookie<'static>) {
        self.client
            .add_cookie(cookie)
            .await
            .unwrap_or_else(|e| panic!("{}: add a cookie: {e}", self.label));
    }

    /// A screenshot of the page now, kept for the failure report.
    pub(crate) async fn shot(&self, name: &str) {
        if let Ok(png) = self.client.screenshot().await {
            self.chromium.shots.borrow_mut().push(Shot {
                name: format!("{}-{name}", self.label),
                png,
            });
        }
    }

    /// The tab now shown.
    pub(crate) async fn tab(&self) -> WindowHandle {
        self.client
            .window()
            .await
            .unwrap_or_else(|e| panic!("{}: current tab: {e}", self.label))
    }

    /// Opens a new tab and shows it.
    pub(crate) async fn new_tab(&self) -> WindowHandle {
        let tab = self
            .client
            .new_window(true)
            .await
            .unwrap_or_else(|e| panic!("{}: open a tab: {e}", self.label))
            .handle;
        self.switch_to(&tab).await;
        tab
    }

    /// Shows `tab`: what the browser does next, it does there.
    pub(crate) async fn switch_to(&self, tab: &WindowHandle) {
        self.client
            .switch_to_window(tab.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: switch tabs: {e}", self.label));
    }

    /// Quits this Chromium, as a person closing it would: its profile is written to disk.
    pub(crate) async fn close(self) {
        let open = {
            let mut open = self.chromium.open.borrow_mut();
            let at = open
                .iter()
                .position(|open| open.id == self.id)
                .expect("an open browser");
            open.remove(at)
        };
        self.client
            .close()
            .await
            .unwrap_or_else(|e| panic!("{}: quit Chromium: {e}", self.label));
        open.profile.wait_until_unused().await;
    }
}
