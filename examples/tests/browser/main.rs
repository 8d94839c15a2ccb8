//! End to end in headless Chromium: the example apps as a browser uses them, on the memory
//! store and on Redis. Each test starts its own chromedriver and browsers (a browser is a
//! Chromium process with its own profile, about half a second to start), runs the example
//! binaries on free loopback ports, and leaves screenshots in
//! `target/browser-screenshots/<test>/` when it fails.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (scripts/test.sh installs
//! them) and the examples built (`cargo test -p examples --all-features` builds both).

mod apps;
mod harness;

mod counter;
mod login;
mod races;
mod restart;
mod same_site;
