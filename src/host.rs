//! The process as the agent sees it: the filesystem root it reads hardware under,
//! the wall clock, the version it reports, and the environment variables it honours.
//!
//! Built once (`Host::from_process` in entry.rs) and passed down, so that nothing
//! below the command layer reads the process environment, and a test hook that is
//! switched on is known in one place: logged at start and shown by `status`. Only the
//! config layer reads variables of its own (overrides, a backend's `api_key_env`).

use crate::decimal::plain_decimal;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The crate's version, the only place it is compiled in; [`Host::version`] is what
/// the process reports.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// What the agent calls itself over HTTP and in a proxy's CONNECT.
pub const USER_AGENT: &str = concat!("usepod-edge/", env!("CARGO_PKG_VERSION"));

/// For tests: the filesystem root sensors and the hardware description are read under.
pub const ENV_TEST_ROOT: &str = "USEPOD_EDGE_TEST_ROOT";
/// For tests: the wall clock starts at this Unix time (seconds) and runs on.
pub const ENV_TEST_NOW: &str = "USEPOD_EDGE_TEST_NOW";
/// For tests: `1` makes the binary read a trailer at its own end (version, crash).
pub const ENV_TEST_TRAILER: &str = "USEPOD_EDGE_TEST_TRAILER";
/// The variable OpenSSL-based tools read for a CA bundle. Here it adds trust anchors
/// (like `coordinator.ca_file`) instead of replacing the built-in ones.
pub const ENV_SSL_CERT_FILE: &str = "SSL_CERT_FILE";
pub const ENV_LOG: &str = "USEPOD_EDGE_LOG";
pub const ENV_SIGNING_KEY_FILE: &str = "USEPOD_EDGE_SIGNING_KEY_FILE";
/// The release signing key itself (base64); never logged, never shown.
pub const ENV_SIGNING_KEY: &str = "USEPOD_EDGE_SIGNING_KEY";

const TEST_HOOKS: [&str; 3] = [ENV_TEST_ROOT, ENV_TEST_NOW, ENV_TEST_TRAILER];

/// Every variable the agent honours outside the config layer.
const HONOURED: &[&str] = &[
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    ENV_SSL_CERT_FILE,
    "TZ",
    "TZDIR",
    "HOME",
    ENV_LOG,
    ENV_SIGNING_KEY_FILE,
    ENV_SIGNING_KEY,
    ENV_TEST_ROOT,
    ENV_TEST_NOW,
    ENV_TEST_TRAILER,
];

/// The honoured variables as they were when the process started.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<&'static str, String>,
}

impl Env {
    fn from_process() -> Env {
        let vars = HONOURED
            .iter()
            .filter_map(|&name| {
                let v: OsString = std::env::var_os(name)?;
                Some((name, v.to_string_lossy().into_owned()))
            })
            .collect();
        Env { vars }
    }

    /// An environment of the given variables only (tests); names not honoured are
    /// ignored, as the process's would be.
    pub fn of(pairs: &[(&str, &str)]) -> Env {
        let vars = pairs
            .iter()
            .filter_map(|(k, v)| {
                let name = HONOURED.iter().find(|n| *n == k)?;
                Some((*name, (*v).to_owned()))
            })
            .collect();
        Env { vars }
    }

    /// The value as set, empty included (`TZ=` means UTC).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The value when it is set and not empty: how most variables are read.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }
}

/// Names only: values may hold a signing key or a proxy password.
impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

/// The wall clock: the system's, or (a test hook) one started at a given time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    fake: Option<(SystemTime, Instant)>,
}

impl Clock {
    /// A clock whose wall time starts at `unix` seconds now and runs on.
    pub fn starting_at(unix: f64) -> Clock {
        Clock {
            fake: Some((UNIX_EPOCH + Duration::from_secs_f64(unix), Instant::now())),
        }
    }

    /// (monotonic, wall): durations come from the first, dates from the second.
    pub fn now(&self) -> (Instant, SystemTime) {
        let mono = Instant::now();
        match self.fake {
            Some((wall0, mono0)) => (mono, wall0 + mono.saturating_duration_since(mono0)),
            None => (mono, SystemTime::now()),
        }
    }

    pub fn wall(&self) -> SystemTime {
        self.now().1
    }
}

/// What the test trailer at the end of a binary says. With `USEPOD_EDGE_TEST_TRAILER=1`
/// a binary reads a line `#usepod-edge-test version=V [crash=run]` at the end of its own
/// file (bytes appended to an ELF file do not change what runs), reports V, and with
/// `crash=run` panics as `run` starts: the upgrade tests make "a newer build" and "a
/// build that crashes at start" that way from the one binary cargo built (a signature
/// covers the trailer like any other byte). Without the variable nothing is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trailer {
    pub version: Option<String>,
    pub crash_on_run: bool,
}

/// The marker a trailer line starts with.
const TRAILER_TAG: &str = "#usepod-edge-test ";

/// Pure: the trailer line at the end of `tail`, if any.
pub fn parse_trailer(tail: &[u8]) -> Option<Trailer> {
    let text = String::from_utf8_lossy(tail);
    let line = text.rsplit_once(TRAILER_TAG)?.1.lines().next()?;
    let mut t = Trailer::default();
    for word in line.split_whitespace() {
        match word.split_once('=') {
            Some(("version", v)) => t.version = Some(v.to_owned()),
            Some(("crash", "run")) => t.crash_on_run = true,
            _ => {}
        }
    }
    Some(t)
}

/// The trailer of the binary this process runs.
fn own_trailer() -> Option<Trailer> {
    // /proc/self/exe opens the file this process runs, even once it is replaced.
    let mut f = std::fs::File::open("/proc/self/exe").ok()?;
    let len = f.seek(SeekFrom::End(0)).ok()?;
    f.seek(SeekFrom::Start(len.saturating_sub(256))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    parse_trailer(&tail)
}

/// The process as the agent sees it.
#[derive(Debug, Clone)]
pub struct Host {
    /// `/`, or a fixture tree (test hook).
    pub root: PathBuf,
    pub clock: Clock,
    /// The version this process reports everywhere.
    pub version: String,
    /// The test trailer asks the agent to crash when it runs (upgrade rollback tests).
    pub crash_on_run: bool,
    pub env: Env,
}

impl Host {
    /// Reads the process: its environment once, and (with the trailer hook) its binary.
    pub fn from_process() -> Host {
        Host::from_env(Env::from_process(), own_trailer)
    }

    /// A host over a given environment; `trailer` is read only when the hook asks.
    pub fn from_env(env: Env, trailer: impl FnOnce() -> Option<Trailer>) -> Host {
        let root = env
            .path(ENV_TEST_ROOT)
            .unwrap_or_else(|| PathBuf::from("/"));
        let clock = env
            .get(ENV_TEST_NOW)
            .and_then(|v| plain_decimal(v.trim()))
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or_else(Clock::default, Clock::starting_at);
        let trailer = match env.get(ENV_TEST_TRAILER) {
            Some("1") => trailer().unwrap_or_default(),
            _ => Trailer::default(),
        };
        Host {
            root,
            clock,
            version: trailer.version.unwrap_or_else(|| CRATE_VERSION.to_owned()),
            crash_on_run: trailer.crash_on_run,
            env,
        }
    }

    /// The test hooks that are switched on, as `NAME=value`: a warning at start and
    /// in `status`, since on a device one turns off guards or reports false hardware.
    pub fn test_hooks(&self) -> Vec<String> {
        TEST_HOOKS
            .iter()
            .filter_map(|&name| Some(format!("{name}={}", self.env.get(name)?)))
            .collect()
    }
}

/// Whether this process runs in CI, where a test that cannot run must fail (the unit
/// tests' one look at the environment).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

impl Default for Host {
    /// The real root and clock, the crate's version, an empty environment.
    fn default() -> Host {
        Host::from_env(Env::default(), || None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_come_from_the_environment_and_are_listed() {
        let host = Host::from_env(
            Env::of(&[(ENV_TEST_ROOT, "/tmp/tree"), (ENV_TEST_NOW, "1000")]),
            || None,
        );
        assert_eq!(host.root, PathBuf::from("/tmp/tree"));
        let wall = host.clock.wall().duration_since(UNIX_EPOCH).unwrap();
        assert!((1000..1010).contains(&wall.as_secs()), "{wall:?}");
        assert_eq!(
            host.test_hooks(),
            [
                "USEPOD_EDGE_TEST_ROOT=/tmp/tree",
                "USEPOD_EDGE_TEST_NOW=1000"
            ]
        );
        assert_eq!(host.version, CRATE_VERSION);
    }

    #[test]
    fn no_hook_means_the_real_root_and_no_warning() {
        let host = Host::from_env(Env::of(&[("HOME", "/root"), ("PATH", "/bin")]), || {
            panic!("the trailer is read only when its hook is on")
        });
        assert_eq!(host.root, PathBuf::from("/"));
        assert!(host.test_hooks().is_empty());
        assert_eq!(host.env.get("HOME"), Some("/root"));
        assert_eq!(host.env.get("PATH"), None, "not honoured, not kept");
    }

    #[test]
    fn the_trailer_hook_sets_the_reported_version() {
        let host = Host::from_env(Env::of(&[(ENV_TEST_TRAILER, "1")]), || {
            parse_trailer(b"\x7fELF....\n#usepod-edge-test version=9.9.9 crash=run\n")
        });
        assert_eq!(host.version, "9.9.9");
        assert!(host.crash_on_run);
        assert_eq!(parse_trailer(b"\x7fELF no trailer"), None);
    }

    #[test]
    fn empty_values_are_unset_except_when_read_raw() {
        let env = Env::of(&[("TZ", ""), (ENV_SIGNING_KEY, "c2VjcmV0")]);
        assert_eq!(env.get("TZ"), None);
        assert_eq!(env.raw("TZ"), Some(""));
        let shown = format!("{env:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
    }
}
