//! `usepod-edge pause [--drain]` and `resume`: write or remove the pause file
//! (src/gate/control.rs), wake the running agent (SIGUSR2), then watch its state
//! file until it took the change up.

use crate::clock::{rfc3339, unix};
use crate::config::Config;
use crate::gate::control::{path, read, remove, write_pause};
use crate::state::{read_running, wait_running, State};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

/// How long `pause --drain` waits for running jobs before giving up (they go on).
const DRAIN_WAIT: Duration = Duration::from_secs(15 * 60);

fn has_block(state: &State, reason: &str) -> bool {
    state
        .serving
        .as_ref()
        .is_some_and(|s| s.blocks.iter().any(|b| b.reason == reason))
}

/// How long the agent may take to notice the file: its status interval, a few times.
fn notice_limit(config: &Config) -> Duration {
    config.status.interval * 3 + Duration::from_secs(3)
}

fn in_flight(s: &State) -> u32 {
    s.jobs.in_flight
}

/// `usepod-edge pause [--drain]`.
pub fn pause(config: &Config, drain: bool) -> ExitCode {
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
    let Some(running) = read_running(config) else {
        println!("usepod-edge is not running; it will start paused until `usepod-edge resume`");
        return ExitCode::SUCCESS;
    };
    // The agent looks at the file at once; without the signal, on its next interval.
    crate::state::signal(running.pid, "USR2");
    let (seen, state) = wait_running(config, unix(now), notice_limit(config), |s| {
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
        let (done, s) = wait_running(
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
pub fn resume(config: &Config) -> ExitCode {
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
    let Some(running) = read_running(config) else {
        println!("usepod-edge is not running");
        return ExitCode::SUCCESS;
    };
    crate::state::signal(running.pid, "USR2");
    let (seen, state) = wait_running(config, unix(now), notice_limit(config), |s| {
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
