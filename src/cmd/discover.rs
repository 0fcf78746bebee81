//! `usepod-edge discover`: one discovery round, printed: the backends, their models,
//! which are offered, and the hardware as capabilities describe it.

use crate::config::Config;
use crate::host::Host;
use crate::{discovery, hardware};
use std::process::ExitCode;
use std::sync::Arc;

pub fn run(config: &Config, host: &Host) -> ExitCode {
    let d = discovery::Discovery::new(config);
    d.round();
    let snap = d.snapshot();
    if snap.backends.is_empty() {
        println!("no backend found");
    }
    for (t, probe) in &snap.backends {
        let Some(p) = probe else { continue };
        let state = if p.healthy {
            "healthy".to_owned()
        } else {
            format!("unavailable: {}", p.problem.as_deref().unwrap_or("?"))
        };
        let slots = p.slots.map(|s| format!(", {s} slots")).unwrap_or_default();
        println!("{} {} ({state}{slots})", t.kind.as_str(), t.url);
        for m in &p.models {
            let routed = snap
                .routes
                .get(&m.id)
                .is_some_and(|r| r.members.iter().any(|m| Arc::ptr_eq(&m.target, t)));
            let ctx = m
                .context_window
                .map(|c| format!(" context {c}"))
                .unwrap_or_default();
            let note = if routed { "" } else { " (not offered here)" };
            println!("  {}{ctx}{note}", m.id);
        }
    }
    // What capabilities will say about this machine.
    println!("hardware: {}", hardware::describe(&host.root));
    if snap.routes.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
