//! `usepod-edge upgrade --from PATH|URL [--sig PATH|URL] [--dry-run]
//! [--allow-downgrade]`: a signed release in place of this binary, the
//! running agent restarted on it, and the outcome of its probation.
//!
//! In order, each step refusing with the installed binary untouched: the
//! binary's directory is writable; the file and its signature (`<from>.sig`)
//! are read or fetched (`fetch.rs`); the signature is by a trusted key
//! (`release::signature`); the file is an ELF binary for this machine; staged
//! beside the installed binary, it answers `--version` with a newer version,
//! `validate`s the live config and reads the identity (`newbin.rs`). Then the
//! probation files are written (`probation.rs`), the binary is swapped in with
//! the old one kept as `.prev` (`swap.rs`), and the running agent is asked
//! (SIGUSR1) to drain and exit with status 75 for its service manager to start
//! the new binary. The init scripts' `usepod-edge-probation` restores `.prev`
//! if the new binary fails its starts (docs/upgrades.md).

pub mod fetch;
pub mod newbin;
mod progress;
pub mod sign;
pub mod swap;

use crate::config::Config;
use crate::host::Host;
use crate::identity::Identity;
use crate::probation;
use crate::release::signature::{self, SignatureError};
use crate::release::{elf, version};
use fetch::FetchError;
pub use progress::{Outcome, Step};
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest binary accepted (the aarch64 release is about 2.2 MB).
const MAX_BINARY: u64 = 64 << 20;
const MAX_SIGNATURE: u64 = 64 << 10;
/// How long `upgrade` waits for the restarted agent's probation to end,
/// beyond the drain.
const WAIT_BEYOND_DRAIN: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

/// `upgrade`'s command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub from: Option<String>,
    pub sig: Option<String>,
    pub dry_run: bool,
    pub allow_downgrade: bool,
}

/// Why an upgrade was refused or failed.
#[derive(Debug)]
pub enum UpgradeError {
    NoSource,
    /// This process cannot create files beside the binary.
    NotWritable {
        dir: PathBuf,
        mode: String,
        source: std::io::Error,
    },
    Fetch {
        what: &'static str,
        src: String,
        source: FetchError,
    },
    Signature(SignatureError),
    NotElf,
    WrongArch(u16),
    /// The new binary could not be staged, or the swap failed.
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The new binary failed a check (which, and what it said).
    Check {
        step: &'static str,
        said: String,
    },
    NotNewer {
        new: String,
        running: String,
    },
    RestorePending,
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::NoSource => f.write_str("--from PATH|URL is required"),
            UpgradeError::NotWritable { dir, mode, source } => write!(
                f,
                "cannot replace the binary: {} is not writable by this user ({source}); this is {mode}",
                dir.display()
            ),
            UpgradeError::Fetch { what, src, source } => {
                write!(f, "cannot read the {what} {src}: {source}")
            }
            UpgradeError::Signature(e) => write!(f, "signature check failed: {e}"),
            UpgradeError::NotElf => f.write_str("the new file is not an ELF binary"),
            UpgradeError::WrongArch(m) => write!(
                f,
                "the new binary is for {}, this machine runs {}",
                elf::name(*m),
                elf::name(elf::HERE)
            ),
            UpgradeError::Io { what, source } => write!(f, "{what}: {source}"),
            UpgradeError::Check { step, said } => {
                write!(f, "the new binary failed `{step}`: {said}")
            }
            UpgradeError::NotNewer { new, running } => write!(
                f,
                "the new binary is version {new}, not newer than the running {running} (--allow-downgrade installs it anyway)"
            ),
            UpgradeError::RestorePending => f.write_str(
                "a rollback is waiting for root to restore the previous binary: restart the service as root first",
            ),
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpgradeError::NotWritable { source, .. } | UpgradeError::Io { source, .. } => {
                Some(source)
            }
            UpgradeError::Fetch { source, .. } => Some(source),
            UpgradeError::Signature(e) => Some(e),
            _ => None,
        }
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> UpgradeError {
    move |source| UpgradeError::Io { what, source }
}

/// What `upgrade` needs: the live config and its path, the command line, the host.
pub struct Upgrade<'a> {
    pub config: &'a Config,
    pub config_path: &'a Path,
    pub args: &'a Args,
    pub host: &'a Host,
}

/// The whole upgrade; each step passed is told to `step` as it passes.
pub fn upgrade(r: &Upgrade, step: &mut dyn FnMut(Step)) -> Result<Outcome, UpgradeError> {
    let Upgrade {
        config, args, host, ..
    } = *r;
    let from = args.from.as_deref().ok_or(UpgradeError::NoSource)?;
    let bin = std::env::current_exe().map_err(io("cannot find this binary".into()))?;
    let state_dir = probation::dir(&config.key_path);
    let before = probation::status(&state_dir);
    if before.as_ref().is_some_and(|s| s.restore_pending) {
        return Err(UpgradeError::RestorePending);
    }
    swap::check_writable(&bin).map_err(|source| UpgradeError::NotWritable {
        dir: bin.parent().map(Path::to_path_buf).unwrap_or_default(),
        mode: swap::install_mode(&bin),
        source,
    })?;

    let sig_src = args.sig.clone().unwrap_or_else(|| format!("{from}.sig"));
    let new = fetch::fetch(from, MAX_BINARY, &config.coordinator, &host.env).map_err(|source| {
        UpgradeError::Fetch {
            what: "binary",
            src: from.to_owned(),
            source,
        }
    })?;
    let sig = fetch::fetch(&sig_src, MAX_SIGNATURE, &config.coordinator, &host.env).map_err(
        |source| UpgradeError::Fetch {
            what: "signature",
            src: sig_src.clone(),
            source,
        },
    )?;
    let mut trusted = signature::release_keys();
    trusted.extend(config.upgrade.trusted_keys.iter().copied());
    let signed = signature::verify(&String::from_utf8_lossy(&sig), &new, &trusted)
        .map_err(UpgradeError::Signature)?;
    step(Step::SignatureGood {
        key: signature::b64(&signed.key),
    });
    match elf::machine(&new) {
        None => return Err(UpgradeError::NotElf),
        Some(m) if m != elf::HERE => return Err(UpgradeError::WrongArch(m)),
        Some(_) => {}
    }

    let staged = swap::stage(&bin, &new).map_err(io(format!(
        "cannot write the new binary beside {}",
        bin.display()
    )))?;
    let checked = check_new(r, &staged, step);
    let new_version = match checked {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    let running = host.version.clone();
    if args.dry_run {
        let _ = std::fs::remove_file(&staged);
        return Ok(Outcome::DryRun {
            bin,
            running,
            new: new_version,
        });
    }

    // On probation already, `.prev` is the last binary known to work: kept.
    let on_probation = before.as_ref().filter(|s| s.outcome == "probation");
    let good = on_probation.map_or(running.clone(), |s| s.from.clone());
    let begun = probation::begin(&state_dir, &good, &new_version, &bin);
    let swapped = begun.and_then(|()| swap::swap(&bin, &staged, on_probation.is_none()));
    if let Err(source) = swapped {
        probation::abandon(&state_dir);
        let _ = std::fs::remove_file(&staged);
        return Err(UpgradeError::Io {
            what: format!("cannot swap in the new binary at {}", bin.display()),
            source,
        });
    }
    step(Step::Installed {
        version: new_version,
        prev: swap::prev_path(&bin),
        bin,
    });
    Ok(restart(config, &state_dir, step))
}

/// The checks the staged binary must pass; its version when it does.
fn check_new(
    r: &Upgrade,
    staged: &Path,
    step: &mut dyn FnMut(Step),
) -> Result<String, UpgradeError> {
    let Upgrade {
        config,
        config_path,
        args,
        host,
    } = *r;
    let fail = |step: &'static str, said: String| UpgradeError::Check { step, said };
    let out = newbin::run(staged, &[OsStr::new("--version")])
        .map_err(|e| fail("--version", e.to_string()))?;
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    let new = version::from_version_output(&answer)
        .filter(|_| out.status.success())
        .ok_or_else(|| fail("--version", newbin::said(&out)))?;
    let new_text = answer
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("usepod-edge ")
        .to_owned();
    let running = host.version.clone();
    let newer = version::Version::parse(&running).is_none_or(|r| new > r);
    if !newer && !args.allow_downgrade {
        return Err(UpgradeError::NotNewer {
            new: new_text,
            running,
        });
    }
    let cfg = config_path.as_os_str();
    let out = newbin::run(
        staged,
        &[OsStr::new("--config"), cfg, OsStr::new("validate")],
    )
    .map_err(|e| fail("validate", e.to_string()))?;
    if !out.status.success() {
        return Err(fail("validate", newbin::said(&out)));
    }
    let checked = match Identity::load(&config.key_path) {
        Ok(id) => {
            let out = newbin::run(
                staged,
                &[OsStr::new("--config"), cfg, OsStr::new("identity")],
            )
            .map_err(|e| fail("identity", e.to_string()))?;
            let want = format!("public: {}", id.public_b64());
            if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains(&want) {
                return Err(fail("identity", newbin::said(&out)));
            }
            "the config and the identity"
        }
        // No identity yet (never paired or run), or one this user cannot read: the
        // new binary cannot be held to it, and the operator is told which.
        Err(e) => {
            step(Step::IdentityNotChecked(e.to_string()));
            "the config"
        }
    };
    step(Step::NewBinaryChecked {
        version: new_text.clone(),
        accepts: checked,
    });
    Ok(new_text)
}

/// Asks the running agent to drain and exit for its service manager to start
/// the new binary, and waits for the new binary's probation to end.
fn restart(config: &Config, state_dir: &Path, step: &mut dyn FnMut(Step)) -> Outcome {
    let Some(state) = crate::state::read_running(config) else {
        return Outcome::NoAgent;
    };
    if !crate::state::signal(state.pid, "USR1") {
        return Outcome::NotSignalled { pid: state.pid };
    }
    step(Step::Restarting { pid: state.pid });
    let limit = config.limits.drain_timeout + WAIT_BEYOND_DRAIN;
    let end = Instant::now() + limit;
    loop {
        let s = probation::status(state_dir);
        match s.as_ref().map(|s| s.outcome.as_str()) {
            Some("confirmed") => {
                return Outcome::Confirmed {
                    version: s.map(|s| s.to).unwrap_or_default(),
                }
            }
            Some("rolled-back") => {
                let s = s.unwrap_or_default();
                return Outcome::RolledBack {
                    to: s.to,
                    detail: s.detail,
                    from: s.from,
                };
            }
            _ => {}
        }
        if Instant::now() >= end {
            return Outcome::Waiting {
                secs: limit.as_secs(),
            };
        }
        std::thread::sleep(POLL);
    }
}
