//! The agent's one periodic thread: every `status.interval_s` the admission gate
//! reads its inputs and decides (src/gate/), then the state file and the Prometheus
//! textfile are written (src/state.rs). Woken early by the operator: a reload (the
//! config is read again first) or a pause/resume, so that those take effect, and show
//! in the state file, at once.

use crate::agent::{Agent, Wake};
use crate::config::Config;
use crate::gate::{Monitor, Parts};
use crossbeam_channel::RecvTimeoutError;
use std::sync::Arc;
use std::time::Instant;

/// What the thread touches on its stack: a gate step (an HTTP probe of a local
/// backend, an nvidia-smi spawn) and a state file write.
const STACK: usize = 256 * 1024;

fn parts<'a>(agent: &'a Agent, config: &'a Config) -> Parts<'a> {
    Parts {
        config,
        host: &agent.host,
        gate: &agent.gate,
        jobs: &agent.jobs,
        discovery: &agent.discovery,
    }
}

/// Takes the gate's first decision now (so the first capabilities already obey it)
/// and writes the state file, then keeps both going on a thread.
pub fn start(agent: Arc<Agent>) {
    let mut monitor = Monitor::start(&parts(&agent, &agent.live()));
    let mut failing = false;
    crate::state::write(&agent, &mut failing);
    let wakes = agent.wakes();
    let spawned = std::thread::Builder::new()
        .name("upkeep".into())
        .stack_size(STACK)
        .spawn(move || {
            let mut next = Instant::now() + agent.live().status.interval;
            loop {
                let full = match wakes.recv_deadline(next) {
                    Ok(Wake::Reload) => {
                        crate::reload::reload(&agent);
                        false
                    }
                    Ok(Wake::Look) => false,
                    Err(RecvTimeoutError::Timeout) => true,
                    Err(RecvTimeoutError::Disconnected) => return,
                };
                let config = agent.live();
                monitor.step(&parts(&agent, &config), full);
                crate::state::write(&agent, &mut failing);
                let interval = config.status.interval;
                next = if full {
                    Instant::now() + interval
                } else {
                    // A reload may have shortened the interval.
                    next.min(Instant::now() + interval)
                };
            }
        });
    if let Err(e) = spawned {
        log::error!(
            "cannot start the upkeep thread: {e}; pause, schedule and guards are off, and the state file is not written"
        );
    }
}
