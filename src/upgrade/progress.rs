//! What an upgrade reports as it goes and how it ended, as values: the command
//! (src/cmd/upgrade.rs) shows them.

use std::fmt;
use std::path::PathBuf;

/// One step passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    SignatureGood {
        key: String,
    },
    /// The identity could not be read, so the new binary was not held to it (why).
    IdentityNotChecked(String),
    NewBinaryChecked {
        version: String,
        /// "the config", or "the config and the identity".
        accepts: &'static str,
    },
    Installed {
        version: String,
        bin: PathBuf,
        prev: PathBuf,
    },
    /// The running agent was asked to drain and exit.
    Restarting {
        pid: u32,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::SignatureGood { key } => write!(f, "signature: good, key {key}"),
            Step::IdentityNotChecked(why) => write!(f, "identity not checked: {why}"),
            Step::NewBinaryChecked { version, accepts } => {
                write!(f, "new binary: {version}, runs here, accepts {accepts}")
            }
            Step::Installed { version, bin, prev } => write!(
                f,
                "installed {version} at {} (the previous binary is {})",
                bin.display(),
                prev.display()
            ),
            Step::Restarting { pid } => write!(
                f,
                "the running agent (pid {pid}) drains and exits; its service manager starts the new binary"
            ),
        }
    }
}

/// How an upgrade that was not refused ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    DryRun {
        bin: PathBuf,
        running: String,
        new: String,
    },
    /// Installed; no agent runs, so the service starts the new binary.
    NoAgent,
    /// Installed, but the running agent could not be signalled.
    NotSignalled {
        pid: u32,
    },
    Confirmed {
        version: String,
    },
    RolledBack {
        to: String,
        detail: String,
        from: String,
    },
    /// Still on probation when `upgrade` stopped waiting.
    Waiting {
        secs: u64,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::DryRun { bin, running, new } => write!(
                f,
                "dry run: {} ({running}) would be replaced by {new}; nothing changed",
                bin.display()
            ),
            Outcome::NoAgent => f.write_str(
                "no agent is running: the new binary starts with the service (on probation until it holds an authenticated session)",
            ),
            Outcome::NotSignalled { pid } => write!(
                f,
                "could not signal the running agent (pid {pid}): restart the service to run the new binary"
            ),
            Outcome::Confirmed { version } => write!(
                f,
                "upgrade confirmed: {version} held an authenticated session"
            ),
            Outcome::RolledBack { to, detail, from } => {
                write!(f, "upgrade rolled back: {to} ({detail}); {from} runs again")
            }
            Outcome::Waiting { secs } => write!(
                f,
                "still on probation after {secs} s (the coordinator not reached yet?): `usepod-edge status` shows the outcome"
            ),
        }
    }
}
