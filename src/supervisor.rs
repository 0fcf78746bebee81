//! The main loop: run a session, decide how long to wait, run the next one.

use crate::agent::Agent;
use crate::reconnect::Backoff;
use crossbeam_channel::Receiver;
use std::time::Instant;

/// Runs sessions until a shutdown begins; `wake` cuts a backoff sleep short.
pub fn run(agent: &Agent, wake: &Receiver<()>) {
    let mut backoff = Backoff::new(agent.config.coordinator.drain_spread);
    let origin = Instant::now();
    while !agent.stopping() {
        agent.set_link("connecting", agent.config.coordinator.url.to_string());
        let mut end = crate::session::run(&agent.session_parts());
        // Remote text in it is shown already; this also bounds what a library's
        // error message (tungstenite, rustls) may have carried.
        end.detail = crate::untrusted::shown(&end.detail, 1000).to_string();
        if agent.stopping() {
            log::info!("session closed for shutdown ({})", end.detail);
            return;
        }
        let decision = backoff.next(
            end.authenticated,
            end.kind,
            crate::jitter::unit(),
            origin.elapsed(),
        );
        if end.authenticated {
            log::log!(
                end.kind.log_level(),
                "session closed: {} ({})",
                end.kind.as_str(),
                end.detail
            );
        } else {
            log::warn!(
                "connection attempt {} failed: {}",
                decision.consecutive_failures,
                end.detail
            );
        }
        if decision.alarm {
            log::error!(
                "{} consecutive connection attempts to {} failed; still retrying (check the network, the coordinator URL and the enrollment code)",
                decision.consecutive_failures,
                agent.config.coordinator.url
            );
        }
        log::info!("reconnecting in {}ms", decision.delay.as_millis());
        agent.set_link(
            "reconnecting",
            format!(
                "{} ({}); next attempt in {} ms",
                end.kind.as_str(),
                end.detail,
                decision.delay.as_millis()
            ),
        );
        let _ = wake.recv_timeout(decision.delay);
    }
}
