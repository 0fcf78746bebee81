//! `usepod-edge status [--json]`: the running agent's state file, judged (running,
//! stale, gone) and shown in words or as JSON.

use crate::clock::{ago, unix};
use crate::config::Config;
use crate::gate::{tz, Serving};
use crate::host::Host;
use crate::schedule;
use crate::state::{self, assess, pid_alive, PoolState, ReadError, State, Verdict};
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

/// What `status --json` prints when there is no state file.
#[derive(Serialize)]
struct Missing {
    running: bool,
    error: String,
}

/// `usepod-edge status [--json]`: 0 running, 1 stale or not running, 3 no state file.
pub fn run(config: &Config, host: &Host, as_json: bool) -> ExitCode {
    let path: &Path = &config.status.state_file;
    let state = match state::read(path) {
        Ok(state) => state,
        Err(ReadError::Missing(e)) => {
            if as_json {
                let missing = Missing {
                    running: false,
                    error: format!("no state file at {}: {e}", path.display()),
                };
                println!("{}", serde_json::to_string(&missing).unwrap_or_default());
            } else {
                println!(
                    "usepod-edge is not running (no state file at {}: {e})",
                    path.display()
                );
            }
            return ExitCode::from(3);
        }
        Err(e) => {
            println!(
                "state file {} {e}; is another program writing it?",
                path.display()
            );
            return ExitCode::from(1);
        }
    };
    let now = unix(SystemTime::now());
    let verdict = assess(&state, now, pid_alive(state.pid));
    let upgrade = crate::probation::status(&crate::probation::dir(&config.key_path));
    if as_json {
        let shown = State {
            running: Some(verdict == Verdict::Running),
            stale: Some(matches!(verdict, Verdict::Stale { .. })),
            upgrade,
            ..state
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&shown).unwrap_or_default()
        );
    } else {
        print_human(&state, &verdict, now, host);
        if let Some(u) = &upgrade {
            print_upgrade(u, now);
        }
    }
    match verdict {
        Verdict::Running => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn print_upgrade(u: &crate::probation::UpgradeStatus, now: u64) {
    let when = ago(now, u.at);
    match u.outcome.as_str() {
        "rolled-back" => {
            println!(
                "last upgrade: {} -> {} ROLLED BACK {when} ago: {}",
                u.from, u.to, u.detail
            );
            if u.restore_pending {
                println!(
                    "rollback: {} runs as .prev until the service is restarted as root",
                    u.from
                );
            }
        }
        "probation" => println!(
            "last upgrade: {} -> {} {when} ago, on probation ({} failed start(s) so far)",
            u.from, u.to, u.failed_starts
        ),
        other => println!("last upgrade: {} -> {} {when} ago: {other}", u.from, u.to),
    }
}

/// `text`, or `?` where a file from another version left it out.
fn or_unknown(text: &str) -> &str {
    if text.is_empty() {
        "?"
    } else {
        text
    }
}

fn print_human(s: &State, verdict: &Verdict, now: u64, host: &Host) {
    let pid = s.pid;
    match verdict {
        Verdict::Running => println!("usepod-edge {} running (pid {pid})", or_unknown(&s.version)),
        Verdict::NotRunning => println!(
            "usepod-edge is not running (pid {pid} is gone; state last written {} ago)",
            ago(now, s.written_unix)
        ),
        Verdict::Stale { age } => println!(
            "usepod-edge pid {pid} has not updated its state for {} (hung?)",
            ago(now, now.saturating_sub(*age))
        ),
    }
    let c = &s.connection;
    println!(
        "coordinator: {} for {} ({})",
        or_unknown(&c.state),
        ago(now, c.since_unix),
        c.detail
    );
    if let Some(p) = &c.config_problem {
        println!("fix the configuration: {p}");
    }
    println!(
        "provider_id: {}",
        s.provider_id.as_deref().unwrap_or("none yet")
    );
    for b in &s.backends {
        let health = match b.healthy {
            Some(true) => "up".to_owned(),
            Some(false) => format!("down: {}", b.problem.as_deref().unwrap_or("?")),
            None => "not probed yet".to_owned(),
        };
        println!(
            "backend: {} {} {health}",
            or_unknown(&b.kind),
            or_unknown(&b.url)
        );
    }
    for p in &s.pools {
        print_pool(p);
    }
    println!(
        "models offered: {}",
        if s.models_offered.is_empty() {
            "none".into()
        } else {
            s.models_offered.join(", ")
        }
    );
    let j = &s.jobs;
    println!(
        "jobs: {} running, {} done, {} failed",
        j.in_flight, j.done, j.failed
    );
    if let Some(serving) = &s.serving {
        print_serving(serving, now, host);
    }
    if let Some(r) = &s.reload {
        let when = format!("{} ago", ago(now, r.unix));
        if r.ok {
            let mut what = format!("{} change(s) applied", r.changes.len());
            if !r.restart_needed.is_empty() {
                what += &format!(", {} need a restart", r.restart_needed.len());
            }
            println!("last reload: {when}: {what}");
        } else {
            println!(
                "last reload: {when}: REFUSED, the running config stays: {}",
                r.error.as_deref().unwrap_or("?")
            );
        }
    }
    for hook in &s.test_hooks {
        println!("warning: test hook {hook} is set (for tests only; unset it on a device)");
    }
    if let Some(e) = &s.last_error {
        println!(
            "last error: {} at {}",
            or_unknown(&e.code),
            or_unknown(&e.at)
        );
    }
}

/// A model's pool: what it offers, then each member's slots in use.
fn print_pool(p: &PoolState) {
    let offered = if p.offered == 0 {
        "withdrawn".to_owned()
    } else {
        format!("{} slot(s) offered", p.offered)
    };
    println!(
        "pool {}: {}, {offered}",
        or_unknown(&p.model),
        or_unknown(&p.kind)
    );
    for m in &p.members {
        let slots = m.slots.map(|n| format!(" of {n}")).unwrap_or_default();
        let out = m
            .local_use
            .as_ref()
            .map(|why| format!("; out of the pool for local use: {why}"))
            .unwrap_or_default();
        println!("  {}: {}{slots} in use{out}", or_unknown(&m.url), m.in_use);
    }
}

/// `status`'s lines for the `serving` section of a state file.
fn print_serving(serving: &Serving, now_unix: u64, host: &Host) {
    let zone = tz::system(&host.env).zone;
    let local = |unix: i64| {
        let now_local = zone.to_local(now_unix as i64).div_euclid(60);
        schedule::when_text(now_local, zone.to_local(unix).div_euclid(60))
    };
    if serving.admitting {
        println!("admitting jobs: yes");
    } else {
        println!("admitting jobs: no (models withdrawn; running jobs finish)");
    }
    for b in &serving.blocks {
        let since = b.since.unix;
        let text = if b.text.is_empty() { "?" } else { &b.text };
        let mut line = format!(
            "  {text} since {} ({} ago)",
            local(since),
            crate::clock::ago(now_unix, since.max(0) as u64)
        );
        if let Some(until) = b.until.as_ref().map(|u| u.unix) {
            line += &format!(
                ", until {} (in {})",
                local(until),
                crate::clock::ago(until.max(0) as u64, now_unix)
            );
        }
        println!("{line}");
    }
    if let Some(s) = &serving.schedule {
        println!("schedule: {s}");
    }
    if let Some(m) = &serving.power_mode {
        println!(
            "power mode: {} (nvpmodel {})",
            m.name.as_deref().unwrap_or("?"),
            m.id
        );
    }
    for n in &serving.notes {
        println!("warning: {n}");
    }
}
