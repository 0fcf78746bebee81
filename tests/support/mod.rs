//! Test harness shared by the integration tests: a watchdog, unique temp dirs, a test CA,
//! a TLS WebSocket coordinator (`coordinator`), the agent process (`agent`), tiny HTTP
//! stubs for backends that must not answer (`stub_http`), usepod identity files
//! (`identity`); fake inference backends (`fake_backend`) and job helpers (`jobs`).
//!
//! Every integration test file does `mod support;` and uses what it needs, so most items
//! are unused in any one test binary.
#![allow(dead_code)]

pub mod agent;
pub mod coordinator;
pub mod fake_backend;
pub mod identity;
pub mod jobs;
pub mod proxy;
pub mod service;
pub mod stub_http;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

// ---------------------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------------------

/// Pids of agent processes started by this test binary, so that a watchdog that ends the
/// process does not leave agents running behind it.
static CHILD_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub(crate) fn register_child(pid: u32) {
    CHILD_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(pid);
}

pub(crate) fn unregister_child(pid: u32) {
    CHILD_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

fn kill_registered_children() {
    let pids: Vec<u32> = CHILD_PIDS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}

/// Guard returned by [`watchdog`]; dropping it (test finished, or panicked) disarms it.
pub struct Watchdog {
    _disarm: Sender<()>,
}

/// Fails a hung test instead of stalling CI: if the guard is still alive after `limit`,
/// print which test hung, kill the agents this binary started and exit the process with 1.
pub fn watchdog(limit: Duration, name: &str) -> Watchdog {
    let (tx, rx) = bounded::<()>(0);
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("watchdog-{name}"))
        .spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "\nWATCHDOG: test `{name}` still running after {limit:?}: it hung; \
                     failing the whole test binary"
                );
                kill_registered_children();
                std::process::exit(1);
            }
        })
        .expect("spawn watchdog thread");
    Watchdog { _disarm: tx }
}

// ---------------------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------------------

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory unique to one test under the system temp dir; removed on drop (kept, and
/// its path printed, when the test panicked, so the files can be inspected).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = TEMP_COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = std::env::temp_dir().join(format!(
            "usepod-edge-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(test failed: keeping temp dir {})", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// Poll `cond` every 10 ms until it is true or `timeout` passes; returns the last value.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound then released): connecting to it is
/// refused at once.
pub fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The longest the agent takes to come back after an authenticated session ends, or after
/// its first failed attempt: that reconnect is drawn over [0, 4 s) (src/reconnect.rs,
/// FIRST_WINDOW), then a TCP connect, TLS and the upgrade on a loaded 2-core machine.
pub const FIRST_RECONNECT: Duration = Duration::from_secs(6);

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// Skips
// ---------------------------------------------------------------------------------------

/// True when running in CI: `CI` set to anything but empty, `0` or `false` (`.ci/run`
/// exports `CI=1`; hosted CI services set `CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// A test that cannot run here (`why`: what is missing and how to get it) calls this and
/// returns. Locally that is a loud skip: a `SKIPPED` line that libtest's output capture
/// cannot swallow. In CI it is a failure, since CI prepares everything every test needs
/// and a skip there would pass without testing anything.
pub fn skip_or_fail(test: &str, why: &str) {
    assert!(
        !in_ci(),
        "{test} cannot run: {why}. CI (CI is set) must run every test, so this fails \
         instead of skipping"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "SKIPPED {test}: {why}");
}
