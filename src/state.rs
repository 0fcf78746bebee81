//! The running agent's state file (read by `usepod-edge status`) and its
//! Prometheus textfile, both rewritten atomically every few seconds.

use crate::agent::Agent;
use crate::clock::{ago, rfc3339, unix};
use crate::config::Config;
use crate::untrusted::shown;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

/// Everything `status` shows, as JSON.
pub fn snapshot(agent: &Agent) -> Value {
    let now = SystemTime::now();
    let link = agent.link();
    let identity = agent.lock_identity();
    let snap = agent.discovery.snapshot();
    let backends: Vec<Value> = snap
        .backends
        .iter()
        .map(|(t, p)| {
            json!({
                "kind": t.kind.as_str(),
                "url": t.url.to_string(),
                "healthy": p.as_ref().map(|p| p.healthy),
                "problem": p.as_ref().and_then(|p| p.problem.as_deref()).map(|e| shown(e, 300).to_string()),
                "models": p.as_ref().map(|p| p.models.iter().map(|m| shown(&m.id, 128).to_string()).collect::<Vec<_>>()),
                "slots": p.as_ref().and_then(|p| p.slots),
            })
        })
        .collect();
    // Model ids come from the backends: shown, for `status` prints them as they are.
    // While the gate withdraws them, none is offered.
    let offered: Vec<String> = snap
        .routes
        .keys()
        .filter(|_| agent.gate.admitting())
        .map(|id| shown(id, 128).to_string())
        .collect();
    let totals = agent.jobs.metrics.totals();
    let last_error = agent
        .jobs
        .metrics
        .last_error()
        .map(|(at, code)| json!({"at": at, "code": code.as_str()}));
    json!({
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "written_at": rfc3339(now),
        "written_unix": unix(now),
        "interval_s": agent.config.status.interval.as_secs_f64(),
        "connection": {
            "state": link.state,
            "since": rfc3339(link.since),
            "since_unix": unix(link.since),
            // Remote text inside is shown already; this bounds the whole.
            "detail": shown(&link.detail, 1000).to_string(),
            "coordinator": agent.config.coordinator.url.to_string(),
            // What the operator must fix before connecting can work (src/supervisor.rs).
            "config_problem": link.config_problem.as_deref().map(|p| shown(p, 1000).to_string()),
        },
        "provider_id": identity.provider_id().map(|p| shown(p, 140).to_string()),
        "public_key": identity.public_b64(),
        "backends": backends,
        "models_offered": offered,
        "jobs": {"in_flight": agent.jobs.in_flight(), "done": totals.done, "failed": totals.failed},
        "last_error": last_error,
        "ledger": agent.jobs.ledger.snapshot(),
        "heartbeat": agent.heartbeat_stats(),
        "serving": agent.gate.status(),
    })
}

/// Prometheus text exposition of the same figures.
pub fn prometheus(s: &Value) -> String {
    let mut out = String::new();
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut gauge = |name: &str, help: &str, labels: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP usepod_edge_{name} {help}\n# TYPE usepod_edge_{name} gauge"
        );
        let _ = writeln!(out, "usepod_edge_{name}{labels} {value}");
    };
    let connected = f64::from(u8::from(s["connection"]["state"] == "connected"));
    gauge(
        "connected",
        "1 while authenticated to the coordinator",
        "",
        connected,
    );
    gauge(
        "jobs_in_flight",
        "jobs running now",
        "",
        num(&s["jobs"]["in_flight"]),
    );
    gauge(
        "jobs_done",
        "jobs finished with job_done since start",
        "",
        num(&s["jobs"]["done"]),
    );
    gauge(
        "jobs_failed",
        "jobs answered with job_error since start",
        "",
        num(&s["jobs"]["failed"]),
    );
    let hb = &s["heartbeat"];
    gauge(
        "ttfb_p50_ms",
        "time to first byte, median over 5 min",
        "",
        num(&hb["p50_latency_ms"]),
    );
    gauge(
        "ttfb_p95_ms",
        "time to first byte, p95 over 5 min",
        "",
        num(&hb["p95_latency_ms"]),
    );
    gauge(
        "tokens_per_second_p50",
        "generation speed, median over 5 min",
        "",
        num(&hb["tokens_per_sec_p50"]),
    );
    gauge(
        "error_rate_60s",
        "share of jobs that failed in the last minute",
        "",
        num(&hb["error_rate_60s"]),
    );
    gauge(
        "admitting",
        "1 while the agent takes jobs (not paused, in schedule, no local use, heat or battery)",
        "",
        f64::from(u8::from(s["serving"]["admitting"] != json!(false))),
    );
    let offered = s["models_offered"].as_array().map_or(0, Vec::len);
    gauge(
        "models_offered",
        "models advertised to the coordinator",
        "",
        offered as f64,
    );
    let _ = writeln!(
        out,
        "# HELP usepod_edge_backend_up 1 if the backend answered its last probe\n# TYPE usepod_edge_backend_up gauge"
    );
    for b in s["backends"].as_array().into_iter().flatten() {
        let up = f64::from(u8::from(b["healthy"] == json!(true)));
        let url = b["url"].as_str().unwrap_or_default().replace('"', "");
        let kind = b["kind"].as_str().unwrap_or_default();
        let _ = writeln!(
            out,
            "usepod_edge_backend_up{{kind=\"{kind}\",url=\"{url}\"}} {up}"
        );
    }
    out.push_str(&crate::ledger::prometheus(&s["ledger"]));
    out
}

fn write_all(agent: &Agent) -> std::io::Result<()> {
    let s = snapshot(agent);
    let cfg = &agent.config.status;
    let text = serde_json::to_string_pretty(&s).unwrap_or_default();
    crate::atomic_file::write(&cfg.state_file, text.as_bytes(), 0o644)?;
    if let Some(path) = &cfg.metrics_textfile {
        crate::atomic_file::write(path, prometheus(&s).as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Starts the thread that rewrites the files every `status.interval_s`.
pub fn spawn_writer(agent: Arc<Agent>) {
    let spawned = std::thread::Builder::new()
        .name("state".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                match write_all(&agent) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        log::warn!(
                            "cannot write {}: {e}",
                            agent.config.status.state_file.display()
                        );
                    }
                    Err(_) => {}
                }
                std::thread::sleep(agent.config.status.interval);
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the state writer: {e}");
    }
}

/// What `status` concludes from a state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Running,
    /// The process is gone (the file is left from a past run).
    NotRunning,
    /// The process exists but has not rewritten the file for `age` seconds.
    Stale {
        age: u64,
    },
}

/// Pure: judges a state file by its age and whether its pid is alive.
pub fn assess(state: &Value, now_unix: u64, pid_alive: bool) -> Verdict {
    if !pid_alive {
        return Verdict::NotRunning;
    }
    let written = state["written_unix"].as_u64().unwrap_or(0);
    let interval = state["interval_s"].as_f64().unwrap_or(5.0);
    let age = now_unix.saturating_sub(written);
    // Three missed rewrites, and at least 15 s for slow interval settings.
    if age as f64 > (interval * 3.0).max(15.0) {
        Verdict::Stale { age }
    } else {
        Verdict::Running
    }
}

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| c.trim_end().starts_with("usepod-edge"))
}

/// The running agent's state file, when its process is alive and writing it.
pub fn read_running(config: &Config) -> Option<Value> {
    let text = std::fs::read_to_string(&config.status.state_file).ok()?;
    let state: Value = serde_json::from_str(&text).ok()?;
    let alive = state["pid"].as_u64().is_some_and(pid_alive);
    (assess(&state, unix(SystemTime::now()), alive) == Verdict::Running).then_some(state)
}

/// `usepod-edge status [--json]`: 0 running, 1 stale or not running, 3 no state file.
pub fn show(config: &Config, as_json: bool) -> ExitCode {
    let path: &Path = &config.status.state_file;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            if as_json {
                println!(
                    "{}",
                    json!({"running": false, "error": format!("no state file at {}: {e}", path.display())})
                );
            } else {
                println!(
                    "usepod-edge is not running (no state file at {}: {e})",
                    path.display()
                );
            }
            return ExitCode::from(3);
        }
    };
    let Ok(state) = serde_json::from_str::<Value>(&text) else {
        println!(
            "state file {} is not valid JSON; is another program writing it?",
            path.display()
        );
        return ExitCode::from(1);
    };
    let now = unix(SystemTime::now());
    let alive = state["pid"].as_u64().is_some_and(pid_alive);
    let verdict = assess(&state, now, alive);
    if as_json {
        let mut out = state.clone();
        out["running"] = json!(verdict == Verdict::Running);
        out["stale"] = json!(matches!(verdict, Verdict::Stale { .. }));
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_human(&state, &verdict, now);
    }
    match verdict {
        Verdict::Running => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn print_human(s: &Value, verdict: &Verdict, now: u64) {
    let pid = &s["pid"];
    match verdict {
        Verdict::Running => println!(
            "usepod-edge {} running (pid {pid})",
            s["version"].as_str().unwrap_or("?")
        ),
        Verdict::NotRunning => println!(
            "usepod-edge is not running (pid {pid} is gone; state last written {} ago)",
            ago(now, s["written_unix"].as_u64().unwrap_or(0))
        ),
        Verdict::Stale { age } => println!(
            "usepod-edge pid {pid} has not updated its state for {} (hung?)",
            ago(now, now.saturating_sub(*age))
        ),
    }
    let c = &s["connection"];
    println!(
        "coordinator: {} for {} ({})",
        c["state"].as_str().unwrap_or("?"),
        ago(now, c["since_unix"].as_u64().unwrap_or(now)),
        c["detail"].as_str().unwrap_or("")
    );
    if let Some(p) = c["config_problem"].as_str() {
        println!("fix the configuration: {p}");
    }
    println!(
        "provider_id: {}",
        s["provider_id"].as_str().unwrap_or("none yet")
    );
    for b in s["backends"].as_array().into_iter().flatten() {
        let health = match b["healthy"].as_bool() {
            Some(true) => "up".to_owned(),
            Some(false) => format!("down: {}", b["problem"].as_str().unwrap_or("?")),
            None => "not probed yet".to_owned(),
        };
        println!(
            "backend: {} {} {health}",
            b["kind"].as_str().unwrap_or("?"),
            b["url"].as_str().unwrap_or("?")
        );
    }
    let offered: Vec<&str> = s["models_offered"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "models offered: {}",
        if offered.is_empty() {
            "none".into()
        } else {
            offered.join(", ")
        }
    );
    let j = &s["jobs"];
    println!(
        "jobs: {} running, {} done, {} failed",
        j["in_flight"], j["done"], j["failed"]
    );
    crate::gate::print_status(&s["serving"], now);
    if let Some(e) = s["last_error"].as_object() {
        println!(
            "last error: {} at {}",
            e["code"].as_str().unwrap_or("?"),
            e["at"].as_str().unwrap_or("?")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_from_age_and_pid() {
        let s = json!({"written_unix": 1000, "interval_s": 5.0});
        assert_eq!(assess(&s, 1010, true), Verdict::Running);
        assert_eq!(assess(&s, 1016, true), Verdict::Stale { age: 16 });
        assert_eq!(assess(&s, 1001, false), Verdict::NotRunning);
        let slow = json!({"written_unix": 1000, "interval_s": 20.0});
        assert_eq!(assess(&slow, 1050, true), Verdict::Running);
        assert_eq!(assess(&json!({}), 100, true), Verdict::Stale { age: 100 });
    }

    #[test]
    fn prometheus_text_has_each_gauge() {
        let s = json!({"connection":{"state":"connected"},"jobs":{"in_flight":2,"done":5,"failed":1},
            "heartbeat":{"p50_latency_ms":40,"p95_latency_ms":90,"tokens_per_sec_p50":12.5,"error_rate_60s":0.25},
            "models_offered":["a","b"],
            "backends":[{"kind":"llamacpp","url":"http://127.0.0.1:8080/","healthy":true},{"kind":"ollama","url":"u","healthy":false}]});
        let t = prometheus(&s);
        for line in [
            "usepod_edge_connected 1",
            "usepod_edge_jobs_in_flight 2",
            "usepod_edge_jobs_failed 1",
            "usepod_edge_ttfb_p95_ms 90",
            "usepod_edge_tokens_per_second_p50 12.5",
            "usepod_edge_models_offered 2",
            "usepod_edge_admitting 1",
            "usepod_edge_backend_up{kind=\"llamacpp\",url=\"http://127.0.0.1:8080/\"} 1",
            "usepod_edge_backend_up{kind=\"ollama\",url=\"u\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }
}
