//! The files an upgrade leaves in the agent's state directory (the identity's
//! directory, `STATE_DIR` of the init scripts), shared with the shell script
//! `init/usepod-edge-probation` that runs before every start:
//!
//! - `upgrade-probation`, while a new binary is on probation: `from=`, `to=`,
//!   `at=` and `binary=` lines written by `upgrade`, then one `start UNIX` line
//!   per start (appended by the script) and one `stop UNIX` line per graceful
//!   exit (appended by the new binary itself). A start without its stop is a
//!   crash or an error exit; after `PROBATION_MAX_FAILURES` of them (3) the
//!   script restores `<binary>.prev`. A coordinator that cannot be reached
//!   never ends the process, so it never counts. The new binary removes the
//!   file once it has held an authenticated session.
//! - `upgrade-last`: the last upgrade's outcome, `name=value` lines: `from`,
//!   `to`, `at`, `outcome` (`probation`, `confirmed`, `rolled-back`) and
//!   `detail`; `restore=pending` while a rollback waits for root to put the
//!   previous binary back in place.
//!
//! Plain `name=value` text, so that a POSIX shell can read and write them.

use crate::json_fields::json_fields;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const PROBATION_FILE: &str = "upgrade-probation";
pub const LAST_FILE: &str = "upgrade-last";

/// The directory the upgrade files live in, for an identity at `key_path`.
pub fn dir(key_path: &Path) -> PathBuf {
    match key_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The value of `name=` in `text` (its first line).
pub fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

json_fields! {
    /// What `status` says about upgrades.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct UpgradeStatus {
        pub from: String,
        pub to: String,
        pub at: u64,
        /// `probation`, `confirmed` or `rolled-back`.
        pub outcome: String,
        pub detail: String,
        /// Starts on probation that ended in a crash or an error exit.
        pub failed_starts: u32,
        /// A rollback waits for root to put the previous binary back.
        pub restore_pending: bool,
    }
}

/// Pure: the status from the two files' texts.
pub fn status_of(probation: Option<&str>, last: Option<&str>) -> Option<UpgradeStatus> {
    if let Some(p) = probation {
        let count = |w: &str| p.lines().filter(|l| l.starts_with(w)).count();
        let failed = count("start ").saturating_sub(count("stop ") + 1);
        return Some(UpgradeStatus {
            from: field(p, "from").unwrap_or("?").to_owned(),
            to: field(p, "to").unwrap_or("?").to_owned(),
            at: field(p, "at").and_then(|a| a.parse().ok()).unwrap_or(0),
            outcome: "probation".into(),
            detail: "on probation until it has held an authenticated session".into(),
            failed_starts: u32::try_from(failed).unwrap_or(u32::MAX),
            restore_pending: false,
        });
    }
    let l = last?;
    Some(UpgradeStatus {
        from: field(l, "from").unwrap_or("?").to_owned(),
        to: field(l, "to").unwrap_or("?").to_owned(),
        at: field(l, "at").and_then(|a| a.parse().ok()).unwrap_or(0),
        outcome: field(l, "outcome").unwrap_or("?").to_owned(),
        detail: field(l, "detail").unwrap_or_default().to_owned(),
        failed_starts: field(l, "failed_starts")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        restore_pending: field(l, "restore") == Some("pending"),
    })
}

/// The upgrade status of the state directory `dir`.
pub fn status(dir: &Path) -> Option<UpgradeStatus> {
    let read = |name| std::fs::read_to_string(dir.join(name)).ok();
    status_of(read(PROBATION_FILE).as_deref(), read(LAST_FILE).as_deref())
}

fn now() -> u64 {
    crate::clock::unix(std::time::SystemTime::now())
}

/// The `upgrade-last` text.
pub fn last_text(from: &str, to: &str, at: u64, outcome: &str, detail: &str) -> String {
    format!("from={from}\nto={to}\nat={at}\noutcome={outcome}\ndetail={detail}\n")
}

/// `upgrade` puts `to` on probation: the marker, and `upgrade-last` saying so.
pub fn begin(dir: &Path, from: &str, to: &str, binary: &Path) -> std::io::Result<()> {
    let at = now();
    let text = format!(
        "from={from}\nto={to}\nat={at}\nbinary={}\n",
        binary.display()
    );
    crate::atomic_file::write(&dir.join(PROBATION_FILE), text.as_bytes(), 0o644)?;
    crate::atomic_file::write(
        &dir.join(LAST_FILE),
        last_text(from, to, at, "probation", "installed; on probation").as_bytes(),
        0o644,
    )
}

/// Undoes [`begin`] when the swap did not happen.
pub fn abandon(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(PROBATION_FILE));
    let _ = std::fs::remove_file(dir.join(LAST_FILE));
}

/// The probation marker's text when it puts `version` on probation.
fn marker_for(dir: &Path, version: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(PROBATION_FILE)).ok()?;
    (field(&text, "to") == Some(version)).then_some(text)
}

/// The agent running `version` held an authenticated session: its probation
/// (if it is the one on probation) ends well.
pub fn confirm(dir: &Path, version: &str) -> std::io::Result<bool> {
    let Some(text) = marker_for(dir, version) else {
        return Ok(false);
    };
    let from = field(&text, "from").unwrap_or("?");
    let at = field(&text, "at").and_then(|a| a.parse().ok()).unwrap_or(0);
    crate::atomic_file::write(
        &dir.join(LAST_FILE),
        last_text(
            from,
            version,
            at,
            "confirmed",
            "held an authenticated session",
        )
        .as_bytes(),
        0o644,
    )?;
    std::fs::remove_file(dir.join(PROBATION_FILE))?;
    Ok(true)
}

/// The agent running `version` exits gracefully: on probation, that start
/// did not fail.
pub fn note_stop(dir: &Path, version: &str) {
    if marker_for(dir, version).is_none() {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(PROBATION_FILE))
    {
        let _ = writeln!(f, "stop {}", now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_starts_without_a_stop_as_failures() {
        let p =
            "from=0.1.0\nto=0.2.0\nat=100\nbinary=/b\nstart 1\nstop 2\nstart 3\nstart 4\nstart 5\n";
        let s = status_of(Some(p), Some("outcome=confirmed\n")).unwrap();
        assert_eq!(
            (s.from.as_str(), s.to.as_str(), s.at, s.outcome.as_str()),
            ("0.1.0", "0.2.0", 100, "probation")
        );
        // Starts 3 and 4 failed; the last one is running, not (yet) a failure.
        assert_eq!(s.failed_starts, 2);
        assert_eq!(
            status_of(Some("from=a\nto=b\n"), None)
                .unwrap()
                .failed_starts,
            0
        );
        let last = "from=0.1.0\nto=0.2.0\nat=7\noutcome=rolled-back\ndetail=3 failed starts\nfailed_starts=3\nrestore=pending\n";
        let s = status_of(None, Some(last)).unwrap();
        assert_eq!(
            (
                s.outcome.as_str(),
                s.failed_starts,
                s.restore_pending,
                s.detail.as_str()
            ),
            ("rolled-back", 3, true, "3 failed starts")
        );
        assert_eq!(status_of(None, None), None);
    }

    #[test]
    fn confirm_and_stop_touch_only_their_own_version() {
        let dir =
            std::env::temp_dir().join(format!("usepod-edge-probation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        begin(
            &dir,
            "0.1.0",
            "0.2.0",
            Path::new("/usr/local/bin/usepod-edge"),
        )
        .unwrap();
        assert_eq!(status(&dir).unwrap().outcome, "probation");
        // The old agent draining for the restart: not the one on probation.
        note_stop(&dir, "0.1.0");
        assert!(!confirm(&dir, "0.1.0").unwrap());
        let text = std::fs::read_to_string(dir.join(PROBATION_FILE)).unwrap();
        assert!(!text.contains("stop "), "{text}");
        note_stop(&dir, "0.2.0");
        let text = std::fs::read_to_string(dir.join(PROBATION_FILE)).unwrap();
        assert!(text.ends_with('\n') && text.contains("\nstop "), "{text}");
        assert!(confirm(&dir, "0.2.0").unwrap());
        assert!(!dir.join(PROBATION_FILE).exists());
        let s = status(&dir).unwrap();
        assert_eq!(
            (s.from.as_str(), s.to.as_str(), s.outcome.as_str()),
            ("0.1.0", "0.2.0", "confirmed")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
