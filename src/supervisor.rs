//! The main loop: run a session, decide how long to wait, run the next one.
//!
//! A connection attempt that fails for a reason only the operator can remove
//! (a certificate that does not verify, a URL that is no coordinator, a key the
//! coordinator does not know, a proxy that wants other credentials; see
//! `SessionError::what_to_fix`) is said as such: one ERROR line starting "fix
//! the configuration:", repeated only when the problem changes, and the state
//! file's `connection.config_problem` until a session gets through. Attempts go
//! on with the usual backoff all the same: what these failures depend on often
//! changes without the agent (the coordinator's certificate is renewed, NTP
//! sets a clock that booted in 1970, the enrollment is approved, the proxy's
//! credentials are fixed), and a service manager would only restart an agent
//! that gave up.

use crate::agent::Agent;
use crate::reconnect::Backoff;
use crate::session::SessionError;
use crossbeam_channel::Receiver;
use std::time::Instant;

/// Runs sessions until a shutdown begins; `wake` cuts a backoff sleep short.
pub fn run(agent: &Agent, wake: &Receiver<()>) {
    let mut backoff = Backoff::new(agent.config.coordinator.drain_spread);
    let origin = Instant::now();
    // The config problem last logged, so each is logged once.
    let mut said: Option<String> = None;
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
            said = None;
            agent.set_config_problem(None);
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
            let problem = end
                .error
                .as_ref()
                .and_then(SessionError::what_to_fix)
                .map(|what| format!("{}; check {what}", end.detail));
            if let Some(p) = problem.as_ref().filter(|p| said.as_ref() != Some(*p)) {
                log::error!(
                    "fix the configuration: {p} (trying again will not help until then; \
                     still retrying with backoff)"
                );
                said = Some(p.clone());
            }
            agent.set_config_problem(problem);
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
