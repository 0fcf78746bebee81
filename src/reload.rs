//! Live reload: the config file read again and applied to the running agent without
//! dropping the session or a job, or refused whole.
//!
//! Applied: backends and model allow-lists (discovery re-routes at once; a gone
//! backend takes no new job and its running jobs finish), pricing, limits (a lower
//! `max_concurrent` admits nothing new until running jobs fall under it), schedule,
//! local first, the guards, ledger and status settings, the log level. Not applied, and said so:
//! what belongs to the session or the process (`config::needs_restart`).

use crate::agent::Agent;
use crate::clock::{rfc3339, unix};
use crate::config::{self, Config, Overrides, Reloaded};
use std::time::SystemTime;

/// Reads the config again and applies what it can; the outcome is also kept for
/// the state file.
pub fn reload(agent: &Agent) -> Reloaded {
    let now = SystemTime::now();
    let base = Reloaded {
        seq: agent.reloaded().map_or(0, |r| r.seq) + 1,
        at: rfc3339(now),
        unix: unix(now),
        ..Reloaded::default()
    };
    // The file named at start; a default path that was absent may be absent still.
    let explicit = agent.config.source.is_some();
    let outcome = match Config::load(&agent.config_path, explicit, &Overrides::from_env()) {
        Ok(new) => apply(agent, new, base),
        Err(e) => {
            log::error!("reload refused, the running config stays: {e}");
            Reloaded {
                error: Some(e.to_string()),
                ..base
            }
        }
    };
    agent.set_reloaded(outcome.clone());
    outcome
}

fn apply(agent: &Agent, new: Config, base: Reloaded) -> Reloaded {
    for w in &new.warnings {
        log::warn!("{w}");
    }
    let running = agent.live();
    let (restart, changes): (Vec<_>, Vec<_>) = config::diff(&running, &new)
        .into_iter()
        .partition(|c| config::needs_restart(&c.key));
    for c in &restart {
        log::warn!("reload: {c} needs a restart; not applied");
    }
    if changes.is_empty() {
        log::info!("reload: nothing to apply");
    } else {
        let offered = agent.offer();
        agent.set_live(config::keep_restart_only(new, &running));
        let live = agent.live();
        agent.discovery.reconfigure(&live);
        agent.jobs.reconfigure(&live);
        crate::logging::follow_config(live.status.log_level);
        for c in &changes {
            log::info!("reload: {c}");
        }
        if agent.offer() != offered {
            agent.offer_changed();
        }
    }
    let lines = |v: Vec<config::Change>| v.iter().map(ToString::to_string).collect();
    Reloaded {
        ok: true,
        changes: lines(changes),
        restart_needed: lines(restart),
        ..base
    }
}
