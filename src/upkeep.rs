//! The agent's one thread for what only waits: every `status.interval_s` the admission
//! gate reads its inputs and decides (src/gate/), then the state file and the Prometheus
//! textfile are written (src/state.rs); between those it writes the ledger's lines as
//! finished jobs queue them (src/ledger/). Woken early by the operator: a reload (the
//! config is read again first) or a pause/resume, so that those take effect, and show
//! in the state file, at once.

use crate::agent::{Agent, Wake};
use crate::config::Config;
use crate::gate::{Monitor, Parts};
use crate::ledger::Queued;
use crossbeam_channel::{Receiver, RecvError, Select};
use std::sync::Arc;
use std::time::Instant;

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
    let mut ledger = agent.jobs.ledger.take_writer();
    let spawned = crate::stack::thread("upkeep").spawn(move || {
        let mut next = Instant::now() + agent.live().status.interval;
        loop {
            let queue = ledger.as_ref().map(|w| w.queue());
            let full = match next_event(&wakes, queue, next) {
                Event::Line(Ok(q)) => {
                    if let Some(w) = ledger.as_mut() {
                        w.handle(q);
                    }
                    continue;
                }
                Event::Line(Err(RecvError)) => {
                    ledger = None;
                    continue;
                }
                Event::Woken(Some(Wake::Reload)) => {
                    crate::reload::reload(&agent);
                    false
                }
                Event::Woken(Some(Wake::Look)) => false,
                Event::Woken(None) => return,
                Event::Due => true,
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

enum Event {
    /// A wake-up; None once the agent is gone.
    Woken(Option<Wake>),
    Line(Result<Queued, RecvError>),
    /// The status interval is up.
    Due,
}

/// Waits for a wake-up, a ledger line or the deadline, whichever comes first.
fn next_event(wakes: &Receiver<Wake>, ledger: Option<&Receiver<Queued>>, due: Instant) -> Event {
    let mut sel = Select::new();
    sel.recv(wakes);
    let on_line = ledger.map(|q| (sel.recv(q), q));
    match sel.select_deadline(due) {
        Err(_) => Event::Due,
        Ok(op) => match on_line {
            Some((i, q)) if op.index() == i => Event::Line(op.recv(q)),
            // The only other operation registered.
            _ => Event::Woken(op.recv(wakes).ok()),
        },
    }
}
