//! Release versions (`MAJOR.MINOR.PATCH[-PRE]`, semver's order) and the
//! version this process reports.
//!
//! Test hook: with `USEPOD_EDGE_TEST_TRAILER=1` in its environment a binary
//! reads a line `#usepod-edge-test version=V [crash=run]` at the end of its
//! own file (bytes appended to an ELF file do not change what runs) and
//! reports V, and with `crash=run` panics as `run` starts. The end-to-end
//! tests make "a newer build" and "a build that crashes at start" that way
//! from the one binary cargo built; a signature covers the trailer like any
//! other byte. Without the variable nothing is read.

use std::cmp::Ordering;
use std::io::{Read, Seek, SeekFrom};

pub const ENV_TEST_TRAILER: &str = "USEPOD_EDGE_TEST_TRAILER";
const TRAILER_TAG: &str = "#usepod-edge-test ";

/// A parsed version; ordered as semver orders versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub core: [u64; 3],
    /// Pre-release identifiers (after `-`); build metadata (`+`) is dropped.
    pub pre: Vec<String>,
}

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let text = text.split_once('+').map_or(text, |(v, _)| v);
        let (core, pre) = match text.split_once('-') {
            Some((c, p)) if !p.is_empty() => (c, p.split('.').map(str::to_owned).collect()),
            Some(_) => return None,
            None => (text, Vec::new()),
        };
        let mut parts = core.split('.');
        let mut n = [0u64; 3];
        for slot in &mut n {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = p.parse().ok()?;
        }
        if parts.next().is_some() || pre.iter().any(String::is_empty) {
            return None;
        }
        Some(Version { core: n, pre })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core.cmp(&other.core).then_with(|| {
            match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                // A pre-release comes before its release.
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            }
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The version in `usepod-edge --version`'s answer (`usepod-edge 0.2.0`).
pub fn from_version_output(out: &str) -> Option<Version> {
    let rest = out.lines().next()?.strip_prefix("usepod-edge ")?;
    Version::parse(rest)
}

/// What the test hook found at the end of this binary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trailer {
    pub version: Option<String>,
    pub crash_on_run: bool,
}

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

/// The test trailer of this process's binary, when the hook is switched on.
pub fn test_trailer() -> Option<Trailer> {
    if std::env::var_os(ENV_TEST_TRAILER).is_none_or(|v| v != "1") {
        return None;
    }
    // /proc/self/exe opens the file this process runs, even once it is replaced.
    let mut f = std::fs::File::open("/proc/self/exe").ok()?;
    let len = f.seek(SeekFrom::End(0)).ok()?;
    f.seek(SeekFrom::Start(len.saturating_sub(256))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    parse_trailer(&tail)
}

/// The version this process reports: the crate's, or the test hook's.
pub fn running() -> String {
    test_trailer()
        .and_then(|t| t.version)
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn orders_as_semver() {
        let ordered = [
            "0.1.0",
            "0.1.1",
            "0.2.0-alpha",
            "0.2.0-alpha.1",
            "0.2.0-alpha.beta",
            "0.2.0-beta.2",
            "0.2.0-beta.11",
            "0.2.0-rc.1",
            "0.2.0",
            "0.10.0",
            "1.0.0",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.2.3+build.5"), v("1.2.3"));
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "1.x.3",
            "1.2.3-",
            "1.2.3-a..b",
            "v1.2.3",
            "-1.2.3",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_the_answer_to_version() {
        assert_eq!(from_version_output("usepod-edge 0.2.0\n"), Some(v("0.2.0")));
        assert_eq!(from_version_output("usepod-agent 0.2.0\n"), None);
        assert_eq!(from_version_output(""), None);
    }

    #[test]
    fn the_test_trailer() {
        let mut file = b"\x7fELF....".to_vec();
        file.extend_from_slice(b"\n#usepod-edge-test version=0.2.0 crash=run\n");
        assert_eq!(
            parse_trailer(&file),
            Some(Trailer {
                version: Some("0.2.0".into()),
                crash_on_run: true
            })
        );
        assert_eq!(parse_trailer(b"\x7fELF no trailer"), None);
        // Unit tests run without the variable: the crate's version.
        assert_eq!(running(), env!("CARGO_PKG_VERSION"));
    }
}
