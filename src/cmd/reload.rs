//! `usepod-edge reload`: the running agent reads its config again (SIGHUP) and
//! applies it without dropping its session or a job; this prints what changed, or
//! why the reload was refused, once the agent has taken it up.

use crate::config::{Config, Reloaded};
use crate::state::{self, State};
use std::process::ExitCode;
use std::time::Duration;

/// How long the agent may take to answer: it reloads at once when signalled, but
/// probing a new backend may take the rest of a round.
const WAIT: Duration = Duration::from_secs(15);

fn last_reload(s: &State) -> u64 {
    s.reload.as_ref().map_or(0, |r| r.seq)
}

/// The config the command read is valid (an invalid one ended it before this, and
/// the agent would refuse it the same way).
pub fn run(config: &Config) -> ExitCode {
    let Some(running) = state::read_running(config) else {
        eprintln!(
            "usepod-edge: no running agent writes {} (is it running with this config? `usepod-edge status`); \
             the config is read when it starts",
            config.status.state_file.display()
        );
        return ExitCode::FAILURE;
    };
    let before = last_reload(&running);
    if !state::signal(running.pid, "HUP") {
        eprintln!(
            "usepod-edge: cannot signal the running agent (pid {}): run reload as its user or root",
            running.pid
        );
        return ExitCode::FAILURE;
    }
    let (answered, last) = state::wait_running(config, 0, WAIT, |s| last_reload(s) > before);
    match last.filter(|_| answered).and_then(|s| s.reload) {
        Some(r) if r.ok => {
            show(&r);
            ExitCode::SUCCESS
        }
        Some(r) => {
            eprintln!(
                "usepod-edge: reload refused, the running config stays: {}",
                r.error.as_deref().unwrap_or("?")
            );
            ExitCode::FAILURE
        }
        None => {
            eprintln!(
                "usepod-edge: the agent (pid {}) has not answered the reload in {} s (`usepod-edge status`)",
                running.pid,
                WAIT.as_secs()
            );
            ExitCode::FAILURE
        }
    }
}

fn show(r: &Reloaded) {
    if r.changes.is_empty() && r.restart_needed.is_empty() {
        println!("reloaded: no change");
    }
    for c in &r.changes {
        println!("{c}");
    }
    for c in &r.restart_needed {
        println!("not applied, needs a restart: {c}");
    }
}
