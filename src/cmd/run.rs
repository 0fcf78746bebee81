//! `usepod-edge run`: the agent itself. Here its parts are put together: identity,
//! trust, discovery, the gate, the state writer, signal handling, then the supervisor's
//! session loop until a shutdown.

use super::codes::{EXIT_CONFIG, TARGET};
use crate::config::Config;
use crate::host::Host;
use crate::identity::Identity;
use crate::{agent, discovery, net, session, shutdown, supervisor, untrusted, upkeep};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(config: Config, config_path: PathBuf, host: Host) -> ExitCode {
    for hook in host.test_hooks() {
        log::warn!(
            target: TARGET,
            "test hook {hook} is set: for tests only (it changes what the agent reads or reports); unset it on a device"
        );
    }
    if host.crash_on_run {
        panic!("test hook: this build crashes as it starts (USEPOD_EDGE_TEST_TRAILER)");
    }
    let (identity, created) = match Identity::load_or_create(&config.key_path) {
        Ok(r) => r,
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            return ExitCode::FAILURE;
        }
    };
    if created {
        log::info!(target: TARGET, "created a new identity at {}", config.key_path.display());
    }
    let pid = identity
        .provider_id()
        .map(|p| untrusted::shown(p, 140).to_string());
    log::info!(
        target: TARGET,
        "usepod-edge {} public key {} provider_id {}",
        host.version,
        identity.public_b64(),
        pid.as_deref().unwrap_or("(none yet)")
    );
    let roots = match session::trust_anchors(&config.coordinator, &host.env) {
        Ok(r) => r,
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // A proxy variable that can never work (socks5://, https://) is a config
    // error now, not a reconnect loop later.
    if let Err(e) = net::proxy::for_target(&config.coordinator.url, &host.env) {
        log::error!(target: TARGET, "config error in environment: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let tls = match net::tls::client_config(&roots) {
        Ok(t) => t,
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let agent = Arc::new(agent::Agent::new(config, config_path, identity, tls, host));
    discovery::spawn(Arc::clone(&agent.discovery));
    // Before the first session, so its first capabilities already obey a pause.
    upkeep::start(Arc::clone(&agent));
    let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
    if let Err(e) = shutdown::install(Arc::clone(&agent), wake_tx) {
        log::error!(target: TARGET, "cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    supervisor::run(&agent, &wake_rx);
    // Lines of the last jobs may still be queued for the ledger.
    agent.jobs.ledger.flush(std::time::Duration::from_secs(2));
    let status = shutdown::exit_status(&agent);
    log::info!(target: TARGET, "stopped");
    ExitCode::from(status)
}
