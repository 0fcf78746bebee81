//! SIGTERM/SIGINT: drain, then close the session with 1001 and exit 0. SIGUSR1
//! (sent by `upgrade` once a new binary is in place): the same drain, then
//! exit 75 ([`EXIT_RESTART`]) for the service manager to start the new binary.
//! A second signal exits at once. SIGHUP reloads the config (src/reload.rs) and
//! SIGUSR2 makes the gate look at the control file now; neither drains anything.

use crate::agent::{Agent, Wake};
use crossbeam_channel::Sender;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the coordinator gets to answer our Close before we exit anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// Exit status when a second signal cuts the drain short.
const EXIT_INTERRUPTED: i32 = 130;

/// Exit status after a drain asked for by SIGUSR1: "start me again". The init
/// files restart on it (systemd: RestartForceExitStatus=75; the SysV and
/// OpenRC supervisors restart on any exit but a stop's).
pub const EXIT_RESTART: u8 = 75;

/// Set when the drain was asked for by SIGUSR1.
static RESTART: AtomicBool = AtomicBool::new(false);

/// The status a drained agent exits with; on probation, the exit is noted as
/// graceful first (src/probation.rs).
pub fn exit_status(agent: &Agent) -> u8 {
    crate::probation::note_stop(
        &crate::probation::dir(&agent.config.key_path),
        &agent.host.version,
    );
    if RESTART.load(Ordering::SeqCst) {
        EXIT_RESTART
    } else {
        0
    }
}

pub fn install(agent: Arc<Agent>, wake: Sender<()>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2])?;
    crate::stack::thread("signals").spawn(move || {
        let mut draining = false;
        for sig in signals.forever() {
            match sig {
                SIGHUP => {
                    log::info!("SIGHUP: reading the config again");
                    agent.wake(Wake::Reload);
                }
                // `pause`/`resume` changed the control file: look now.
                SIGUSR2 => agent.wake(Wake::Look),
                _ if draining => {
                    log::warn!("second signal: exiting now");
                    std::process::exit(EXIT_INTERRUPTED);
                }
                _ => {
                    draining = true;
                    if sig == SIGUSR1 {
                        log::info!("SIGUSR1: restarting for an upgrade");
                        RESTART.store(true, Ordering::SeqCst);
                    }
                    let (agent, wake) = (Arc::clone(&agent), wake.clone());
                    let spawned = crate::stack::thread("drain").spawn(move || drain(&agent, &wake));
                    if let Err(e) = spawned {
                        log::error!("cannot start the drain: {e}; exiting");
                        std::process::exit(1);
                    }
                }
            }
        }
    })?;
    Ok(())
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// Stops taking jobs, lets running ones finish up to the drain timeout, stops
/// the rest, closes the session with 1001 and lets `main` return.
fn drain(agent: &Agent, wake: &Sender<()>) {
    agent.begin_stop();
    let _ = wake.try_send(());
    let limit = agent.live().limits.drain_timeout;
    let n = agent.jobs.in_flight();
    log::info!(
        "shutting down: {n} job(s) in flight, waiting up to {:.0}s",
        limit.as_secs_f64()
    );
    if !wait_for(limit, || agent.jobs.in_flight() == 0) {
        agent.jobs.cancel_all("drain timeout reached");
    }
    if agent.close_session(1001, "agent shutting down")
        && !wait_for(CLOSE_GRACE, || !agent.has_session())
    {
        log::warn!("the coordinator did not answer our Close; exiting anyway");
        std::process::exit(i32::from(exit_status(agent)));
    }
    // Normally the supervisor has returned by now and main exits 0 first. A
    // session still being dialled closes itself once authenticated; this bounds it.
    std::thread::sleep(CLOSE_GRACE * 3);
    log::warn!("shutdown did not finish in time; exiting");
    std::process::exit(i32::from(exit_status(agent)));
}
