//! `usepod-edge pause [--drain]` and `resume`: a control file beside the state file,
//! which the running agent reads on its status interval. No listening socket and no
//! signal: the file is the whole interface, it survives a restart (a paused agent
//! starts paused), and the state directory's permissions decide who may write it.
//!
//! The agent trusts the file only when it is private to the agent's user, by the rule
//! the identity key follows (`identity::not_private`): otherwise anyone who could
//! write it could stop the agent serving, or start it again.

use crate::clock::rfc3339;
use crate::config::Config;
use crate::state::State;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_CONTROL_BYTES: u64 = 4096;

/// How long `pause --drain` waits for running jobs before giving up (they go on).
const DRAIN_WAIT: Duration = Duration::from_secs(15 * 60);

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

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The pause the file holds: Ok(None) without a file; Err when the file is there but
/// cannot be trusted or read (the agent then ignores it and says why).
pub fn read(path: &Path) -> Result<Option<Pause>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "control file {}: cannot read it: {e}",
                path.display()
            ))
        }
    };
    // Checked on the handle it is read from, so it cannot be swapped in between.
    let meta = file
        .metadata()
        .map_err(|e| format!("control file {}: {e}", path.display()))?;
    let me = crate::identity::running_uid().map_err(|e| {
        format!(
            "control file {}: cannot tell which user runs usepod-edge: {e}",
            path.display()
        )
    })?;
    if let Some((problem, fix)) = crate::identity::not_private(path, meta.uid(), meta.mode(), me) {
        return Err(format!(
            "control file {} ignored: {problem}; only the agent's user may pause it: {fix}",
            path.display()
        ));
    }
    let mut text = String::new();
    file.take(MAX_CONTROL_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("control file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("control file {} ignored: {e}", path.display()))
}

fn parse(text: &str) -> Result<Option<Pause>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if v["paused"] != json!(true) {
        return Ok(None);
    }
    let since = v["since_unix"]
        .as_u64()
        .ok_or("no since_unix")
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))?;
    Ok(Some(Pause {
        since,
        drain: v["drain"] == json!(true),
    }))
}

/// Records a pause; one already recorded keeps its start.
pub fn write_pause(path: &Path, drain: bool, now: SystemTime) -> io::Result<Pause> {
    let since = match read(path) {
        Ok(Some(p)) => p.since,
        _ => now,
    };
    let text = json!({
        "paused": true,
        "drain": drain,
        "since": rfc3339(since),
        "since_unix": unix(since),
    });
    crate::atomic_file::ensure_private_dir(path)?;
    crate::atomic_file::write(path, format!("{text}\n").as_bytes(), 0o600)?;
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

/// The running agent's state file, if the agent is running.
fn running_state(config: &Config) -> Option<State> {
    crate::state::read_running(config)
}

fn has_block(state: &State, reason: &str) -> bool {
    state
        .serving
        .as_ref()
        .is_some_and(|s| s.blocks.iter().any(|b| b.reason == reason))
}

/// Waits (polling the state file) until `done` holds for a state written after `after`;
/// the last state seen, whether or not it did.
fn wait_state(
    config: &Config,
    after: u64,
    limit: Duration,
    mut done: impl FnMut(&State) -> bool,
) -> (bool, Option<State>) {
    let end = Instant::now() + limit;
    loop {
        let Some(s) = running_state(config) else {
            return (false, None);
        };
        let fresh = s.written_unix >= after;
        if fresh && done(&s) {
            return (true, Some(s));
        }
        if Instant::now() >= end {
            return (false, Some(s));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How long the agent may take to notice the file: its status interval, a few times.
fn notice_limit(config: &Config) -> Duration {
    config.status.interval * 3 + Duration::from_secs(3)
}

fn in_flight(s: &State) -> u32 {
    s.jobs.in_flight
}

/// `usepod-edge pause [--drain]`.
pub fn pause_cmd(config: &Config, drain: bool) -> ExitCode {
    let path = path(config);
    let now = SystemTime::now();
    let before = read(&path).ok().flatten();
    if let Err(e) = write_pause(&path, drain, now) {
        eprintln!(
            "usepod-edge: cannot write {}: {e} (run pause as the agent's user or root)",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    match before {
        Some(p) => println!("already paused since {}", rfc3339(p.since)),
        None => println!(
            "paused ({}): no new jobs; running jobs finish",
            path.display()
        ),
    }
    if running_state(config).is_none() {
        println!("usepod-edge is not running; it will start paused until `usepod-edge resume`");
        return ExitCode::SUCCESS;
    }
    let (seen, state) = wait_state(config, unix(now), notice_limit(config), |s| {
        has_block(s, "paused")
    });
    let Some(state) = state.filter(|_| seen) else {
        eprintln!(
            "usepod-edge: the agent has not taken the pause up yet (is it running with this config? `usepod-edge status`)"
        );
        return ExitCode::FAILURE;
    };
    println!("the agent stopped taking jobs and withdrew its models");
    let mut running = in_flight(&state);
    if !drain {
        if running > 0 {
            println!(
                "{running} job(s) still running; they finish (`pause --drain` waits for them)"
            );
        }
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    while running > 0 {
        println!("waiting for {running} running job(s) to finish");
        let (done, s) = wait_state(
            config,
            0,
            DRAIN_WAIT.saturating_sub(started.elapsed()),
            |s| in_flight(s) < running,
        );
        match s {
            Some(s) if done => running = in_flight(&s),
            Some(s) => {
                eprintln!(
                    "usepod-edge: {} job(s) still running after {}s; they go on, and the agent stays paused",
                    in_flight(&s),
                    DRAIN_WAIT.as_secs()
                );
                return ExitCode::FAILURE;
            }
            None => {
                eprintln!("usepod-edge: the agent stopped while draining");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("drained: no job is running");
    ExitCode::SUCCESS
}

/// `usepod-edge resume`.
pub fn resume_cmd(config: &Config) -> ExitCode {
    let path = path(config);
    let now = SystemTime::now();
    match remove(&path) {
        Ok(true) => println!("resumed ({} removed)", path.display()),
        Ok(false) => println!("not paused (no {})", path.display()),
        Err(e) => {
            eprintln!("usepod-edge: cannot remove {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if running_state(config).is_none() {
        println!("usepod-edge is not running");
        return ExitCode::SUCCESS;
    }
    let (seen, state) = wait_state(config, unix(now), notice_limit(config), |s| {
        !has_block(s, "paused")
    });
    match state.filter(|_| seen) {
        Some(s) if s.serving.as_ref().is_some_and(|g| g.admitting) => {
            println!("the agent takes jobs again and re-announced its models");
            ExitCode::SUCCESS
        }
        Some(s) => {
            println!("the agent still does not take jobs:");
            for b in s.serving.iter().flat_map(|g| &g.blocks) {
                println!("  {}", if b.text.is_empty() { "?" } else { &b.text });
            }
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "usepod-edge: the agent has not taken the resume up yet (`usepod-edge status`)"
            );
            ExitCode::FAILURE
        }
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
        assert_eq!(read(&path), Ok(None));
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
        assert_eq!(read(&path), Ok(Some(p)));
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        assert_eq!(read(&path), Ok(None));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_others_could_write_is_ignored_with_the_fix() {
        let dir = tmp("mode");
        let path = dir.join("control.json");
        write_pause(&path, false, SystemTime::now()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read(&path).unwrap_err();
        assert!(
            e.contains("ignored") && e.contains("mode 0666") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn contents_parse_strictly() {
        assert_eq!(parse(r#"{"paused":false}"#), Ok(None));
        assert_eq!(
            parse(r#"{"paused":true,"since_unix":5}"#),
            Ok(Some(Pause {
                since: UNIX_EPOCH + Duration::from_secs(5),
                drain: false
            }))
        );
        assert!(parse(r#"{"paused":true}"#).is_err());
        assert!(parse("paused").is_err());
    }
}
