//! What the library logs through `tracing`, captured for a test to read.

use std::{
    cell::RefCell,
    io::Write,
    sync::{Arc, Mutex, Once, PoisonError},
};

/// The lines logged on this thread while its [`Capture`] lives.
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// Where the global subscriber writes what this thread logs.
    static CAPTURE: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// Ends a capture when dropped.
#[derive(Debug)]
pub struct Capture(());

impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

/// Writes to this thread's capture, or nowhere.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| match &mut *capture.borrow_mut() {
            Some(logs) => logs.write(buf),
            None => Ok(buf.len()),
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures what is logged on this thread (the test's runtime thread: the test service's
    /// requests run on it) until the guard is dropped.
    ///
    /// One global subscriber serves every test of the binary, writing each thread's lines
    /// to that thread's capture: per-thread subscribers would race on `tracing`'s cached
    /// interest of each call site when tests run in parallel.
    #[must_use]
    pub fn capture() -> (Self, Capture) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .with_writer(|| ThreadWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the test binaries");
        });
        let logs = Self::default();
        CAPTURE.with(|capture| *capture.borrow_mut() = Some(logs.clone()));
        (logs, Capture(()))
    }

    /// The lines so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lines at level ERROR.
    #[must_use]
    pub fn errors(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|line| line.contains(" ERROR "))
            .collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails if a line repeats part of an error's cause chain: each `: `-separated part of the
/// `error=` field must appear once.
pub fn assert_each_cause_once(line: &str) {
    let Some(at) = line.find("error=") else {
        return;
    };
    let parts: Vec<&str> = line[at + 6..].split(": ").map(str::trim).collect();
    for (i, part) in parts.iter().enumerate() {
        for other in &parts[i + 1..] {
            assert!(
                !other.contains(part) && !part.contains(other),
                "a cause repeats in {line:?}: {part:?} and {other:?}"
            );
        }
    }
}
