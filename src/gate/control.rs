//! The pause: a control file beside the state file, which the running agent reads on
//! its status interval and when SIGUSR2 wakes it (`usepod-edge pause [--drain]` and
//! `resume`, src/cmd/pause.rs, write and remove it, then send the signal). No listening
//! socket: the file is the whole interface, it survives a restart (a paused agent
//! starts paused), and the state directory's permissions decide who may write it.
//!
//! The agent trusts the file only when it is private to the agent's user, by the rule
//! the identity key follows (`identity::not_private`): otherwise anyone who could
//! write it could stop the agent serving, or start it again.

use crate::clock::{rfc3339, unix};
use crate::config::Config;
use crate::json_fields::json_fields;
use serde::Serialize;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAX_CONTROL_BYTES: u64 = 4096;

/// The control file: beside the state file, so in the agent's own directory.
pub fn path(config: &Config) -> PathBuf {
    config.status.state_file.with_file_name("control.json")
}

/// An operator's pause, as the control file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub since: SystemTime,
    /// `pause --drain`: the command waited for running jobs to finish.
    pub drain: bool,
}

/// Why the control file is not taken into account; the agent says it and
/// goes on as if there were no pause.
#[derive(Debug)]
pub struct ControlError {
    pub path: PathBuf,
    pub problem: ControlProblem,
}

#[derive(Debug)]
pub enum ControlProblem {
    Open(io::Error),
    Read(io::Error),
    /// The running user could not be found, so ownership cannot be checked.
    WhoAmI(io::Error),
    /// Someone but the agent's user could write it: what, and the fix.
    NotPrivate {
        problem: String,
        fix: String,
    },
    Format(FormatError),
}

json_fields! {
    /// The file as `pause` writes it. `since` is for people reading the file; the
    /// agent goes by `since_unix`.
    #[derive(Debug, Default, Serialize)]
    struct ControlFile {
        paused: bool,
        drain: bool,
        since: String,
        since_unix: Option<u64>,
    }
}

/// What is wrong with the file's contents.
#[derive(Debug)]
pub enum FormatError {
    /// Not JSON, or a key holds the wrong type (`"paused": "yes"`).
    Invalid(serde_json::Error),
    NoSince,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Invalid(e) => write!(f, "not a control file: {e}"),
            FormatError::NoSince => f.write_str("paused without since_unix"),
        }
    }
}

impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FormatError::Invalid(e) => Some(e),
            FormatError::NoSince => None,
        }
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.problem {
            ControlProblem::Open(e) => write!(f, "control file {p}: cannot read it: {e}"),
            ControlProblem::Read(e) => write!(f, "control file {p}: {e}"),
            ControlProblem::WhoAmI(e) => write!(
                f,
                "control file {p}: cannot tell which user runs usepod-edge: {e}"
            ),
            ControlProblem::NotPrivate { problem, fix } => write!(
                f,
                "control file {p} ignored: {problem}; only the agent's user may pause it: {fix}"
            ),
            ControlProblem::Format(e) => write!(f, "control file {p} ignored: {e}"),
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            ControlProblem::Open(e) | ControlProblem::Read(e) | ControlProblem::WhoAmI(e) => {
                Some(e)
            }
            ControlProblem::NotPrivate { .. } => None,
            ControlProblem::Format(e) => Some(e),
        }
    }
}

/// The pause the file holds: Ok(None) without a file; Err when the file is there but
/// cannot be trusted or read (the agent then ignores it and says why).
pub fn read(path: &Path) -> Result<Option<Pause>, ControlError> {
    let failed = |problem| ControlError {
        path: path.to_owned(),
        problem,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(ControlProblem::Open(e))),
    };
    // Checked on the handle it is read from, so it cannot be swapped in between.
    let meta = file
        .metadata()
        .map_err(|e| failed(ControlProblem::Read(e)))?;
    let me = crate::identity::running_uid().map_err(|e| failed(ControlProblem::WhoAmI(e)))?;
    if let Some((problem, fix)) = crate::identity::not_private(path, meta.uid(), meta.mode(), me) {
        return Err(failed(ControlProblem::NotPrivate { problem, fix }));
    }
    let mut text = String::new();
    file.take(MAX_CONTROL_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| failed(ControlProblem::Read(e)))?;
    parse(&text).map_err(|e| failed(ControlProblem::Format(e)))
}

fn parse(text: &str) -> Result<Option<Pause>, FormatError> {
    let file: ControlFile = serde_json::from_str(text).map_err(FormatError::Invalid)?;
    if !file.paused {
        return Ok(None);
    }
    let since = file.since_unix.ok_or(FormatError::NoSince)?;
    Ok(Some(Pause {
        since: UNIX_EPOCH + Duration::from_secs(since),
        drain: file.drain,
    }))
}

/// Records a pause; one already recorded keeps its start.
pub fn write_pause(path: &Path, drain: bool, now: SystemTime) -> io::Result<Pause> {
    let since = match read(path) {
        Ok(Some(p)) => p.since,
        _ => now,
    };
    let file = ControlFile {
        paused: true,
        drain,
        since: rfc3339(since),
        since_unix: Some(unix(since)),
    };
    let mut text = serde_json::to_vec(&file).map_err(io::Error::other)?;
    text.push(b'\n');
    crate::atomic_file::ensure_private_dir(path)?;
    crate::atomic_file::write(path, &text, 0o600)?;
    Ok(Pause { since, drain })
}

/// Removes the pause; false when there was none.
pub fn remove(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("usepod-edge-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn pause_is_recorded_kept_and_removed() {
        let dir = tmp("cycle");
        let path = dir.join("control.json");
        assert_eq!(read(&path).unwrap(), None);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let p = write_pause(&path, false, t0).unwrap();
        assert_eq!(
            p,
            Pause {
                since: t0,
                drain: false
            }
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second pause keeps the first one's start.
        let p = write_pause(&path, true, t0 + Duration::from_secs(60)).unwrap();
        assert_eq!(
            p,
            Pause {
                since: t0,
                drain: true
            }
        );
        assert_eq!(read(&path).unwrap(), Some(p));
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        assert_eq!(read(&path).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_others_could_write_is_ignored_with_the_fix() {
        let dir = tmp("mode");
        let path = dir.join("control.json");
        write_pause(&path, false, SystemTime::now()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.contains("ignored") && e.contains("mode 0666") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn contents_parse_strictly() {
        assert_eq!(parse(r#"{"paused":false}"#).unwrap(), None);
        assert_eq!(
            parse(r#"{"paused":true,"since_unix":5}"#).unwrap(),
            Some(Pause {
                since: UNIX_EPOCH + Duration::from_secs(5),
                drain: false
            })
        );
        assert_eq!(
            parse(r#"{"paused":true}"#).unwrap_err().to_string(),
            "paused without since_unix"
        );
        let wrong_type = parse(r#"{"paused":"yes","since_unix":5}"#).unwrap_err();
        assert!(
            wrong_type
                .to_string()
                .starts_with("not a control file: invalid type: string"),
            "{wrong_type}"
        );
        assert!(parse("paused").is_err());
        // Keys a newer version may add are read past.
        assert!(parse(r#"{"paused":true,"since_unix":5,"by":"x"}"#)
            .unwrap()
            .is_some());
    }
}
