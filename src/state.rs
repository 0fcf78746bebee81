//! The running agent's state file (read by `usepod-edge status`) and its
//! Prometheus textfile, both rewritten atomically every few seconds.

use crate::agent::Agent;
use crate::clock::{rfc3339, unix};
use crate::config::Config;
use crate::discovery::{Member, Route};
use crate::gate::Serving;
use crate::json_fields::json_fields;
use crate::ledger::LedgerState;
use crate::protocol::HeartbeatStats;
use crate::untrusted::shown;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

json_fields! {
    /// The state file: written by the running agent, read back by `status`. Every
    /// field has a default, so a `status` of another version reads what it knows
    /// of the file and skips what it does not.
    #[derive(Debug, Clone, Default, PartialEq, Serialize)]
    pub struct State {
        pub pid: u32,
        pub version: String,
        pub written_at: String,
        pub written_unix: u64,
        pub interval_s: f64,
        pub connection: Connection,
        pub provider_id: Option<String>,
        pub public_key: String,
        pub backends: Vec<BackendState>,
        /// Per model, the backends that run its jobs and the slots our jobs take there.
        pub pools: Vec<PoolState>,
        pub models_offered: Vec<String>,
        pub jobs: JobCounts,
        pub last_error: Option<LastError>,
        pub ledger: LedgerState,
        pub heartbeat: HeartbeatStats,
        /// Whether the gate admits jobs, and why not; None in a file from an agent
        /// without the gate.
        pub serving: Option<Serving>,
        /// How the last reload went; None before the first.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub reload: Option<crate::config::Reloaded>,
        /// Test hooks the agent runs with (src/host.rs); none on a real device,
        /// and then not in the file.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub test_hooks: Vec<String>,
        /// `status --json`'s verdict on the file, never in the file itself. (Not a
        /// wrapper with `#[serde(flatten)]`: that costs serde's buffering machinery.)
        #[serde(skip_serializing_if = "Option::is_none")]
        pub running: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub stale: Option<bool>,
        /// `status`'s reading of the upgrade files (src/probation.rs), never in
        /// the file itself.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub upgrade: Option<crate::probation::UpgradeStatus>,
    }
}

json_fields! {
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct Connection {
        /// `connecting`, `connected`, `reconnecting` or `stopping`.
        pub state: String,
        pub since: String,
        pub since_unix: u64,
        pub detail: String,
        pub coordinator: String,
        /// What the operator must fix before connecting can work.
        pub config_problem: Option<String>,
    }
}

json_fields! {
    /// A configured backend and its last probe (all None before the first).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct BackendState {
        pub kind: String,
        pub url: String,
        pub healthy: Option<bool>,
        pub problem: Option<String>,
        pub models: Option<Vec<String>>,
        pub slots: Option<u32>,
        /// Our jobs running on it now.
        pub in_flight: u32,
    }
}

json_fields! {
    /// A model's pool: the backends of the advertised kind that serve it.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct PoolState {
        pub model: String,
        pub kind: String,
        /// The `max_concurrent` capabilities offer now; 0 while the model is withdrawn.
        pub offered: u32,
        pub members: Vec<MemberState>,
    }
}

json_fields! {
    /// One backend of a pool.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct MemberState {
        pub url: String,
        /// Its own limit (llama-server's total_slots); None: only the agent's.
        pub slots: Option<u32>,
        /// Our jobs running on it now.
        pub in_use: u32,
        /// Why it takes no new jobs while the owner uses it; None while it does.
        pub local_use: Option<String>,
    }
}

/// The `pools` section: each route's members with the slots our jobs take on them
/// (`busy`, per URL) and whether local use keeps them out (`aside`, per URL).
pub fn pool_states(
    routes: &BTreeMap<String, Route>,
    busy: &HashMap<String, u32>,
    aside: &BTreeMap<String, String>,
    max: u32,
    admitting: bool,
) -> Vec<PoolState> {
    routes
        .iter()
        .map(|(model, route)| {
            let out = |m: &Member| aside.get(&m.target.url.to_string());
            let offered = route.capacity(max, |m| out(m).is_none());
            PoolState {
                model: shown(model, 128).to_string(),
                kind: route.kind.as_str().to_owned(),
                offered: offered.filter(|_| admitting).unwrap_or(0),
                members: route
                    .members
                    .iter()
                    .map(|m| {
                        let url = m.target.url.to_string();
                        MemberState {
                            in_use: busy.get(&url).copied().unwrap_or(0),
                            slots: m.slots,
                            local_use: out(m).map(|why| shown(why, 300).to_string()),
                            url,
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

json_fields! {
    /// Jobs since start.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
    pub struct JobCounts {
        pub in_flight: u32,
        pub done: u64,
        pub failed: u64,
    }
}

json_fields! {
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct LastError {
        pub at: String,
        /// An error code as the protocol spells it; text, so that a code this
        /// version does not know still shows.
        pub code: String,
    }
}

/// Everything `status` shows.
pub fn snapshot(agent: &Agent) -> State {
    let now = SystemTime::now();
    let link = agent.link();
    let identity = agent.lock_identity();
    let snap = agent.discovery.snapshot();
    let busy = agent.jobs.per_backend();
    let backends = snap
        .backends
        .iter()
        .map(|(t, p)| BackendState {
            kind: t.kind.as_str().to_owned(),
            url: t.url.to_string(),
            healthy: p.as_ref().map(|p| p.healthy),
            problem: p
                .as_ref()
                .and_then(|p| p.problem.as_deref())
                .map(|e| shown(e, 300).to_string()),
            models: p.as_ref().map(|p| {
                p.models
                    .iter()
                    .map(|m| shown(&m.id, 128).to_string())
                    .collect()
            }),
            slots: p.as_ref().and_then(|p| p.slots),
            in_flight: busy.get(&t.url.to_string()).copied().unwrap_or(0),
        })
        .collect();
    let admitting = agent.gate.admitting();
    let max = agent.config.limits.max_concurrent;
    let pools = pool_states(&snap.routes, &busy, &agent.jobs.aside(), max, admitting);
    // What capabilities offer: none while the gate withdraws them, nor a model whose
    // every backend is in local use.
    let models_offered = pools
        .iter()
        .filter(|p| p.offered > 0)
        .map(|p| p.model.clone())
        .collect();
    let totals = agent.jobs.metrics.totals();
    let last_error = agent.jobs.metrics.last_error().map(|(at, code)| LastError {
        at,
        code: code.as_str().to_owned(),
    });
    State {
        pid: std::process::id(),
        version: agent.host.version.clone(),
        test_hooks: agent.host.test_hooks(),
        reload: agent.reloaded(),
        written_at: rfc3339(now),
        written_unix: unix(now),
        interval_s: agent.live().status.interval.as_secs_f64(),
        connection: Connection {
            state: link.state.to_owned(),
            since: rfc3339(link.since),
            since_unix: unix(link.since),
            // Remote text inside is shown already; this bounds the whole.
            detail: shown(&link.detail, 1000).to_string(),
            coordinator: agent.config.coordinator.url.to_string(),
            // What the operator must fix before connecting can work (src/supervisor.rs).
            config_problem: link
                .config_problem
                .as_deref()
                .map(|p| shown(p, 1000).to_string()),
        },
        provider_id: identity.provider_id().map(|p| shown(p, 140).to_string()),
        public_key: identity.public_b64(),
        backends,
        pools,
        models_offered,
        jobs: JobCounts {
            in_flight: agent.jobs.in_flight(),
            done: totals.done,
            failed: totals.failed,
        },
        last_error,
        ledger: agent.jobs.ledger.snapshot(),
        heartbeat: agent.heartbeat_stats(),
        serving: Some(agent.gate.status()),
        running: None,
        stale: None,
        upgrade: None,
    }
}

/// Prometheus text exposition of the same figures.
pub fn prometheus(s: &State) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP usepod_edge_{name} {help}\n# TYPE usepod_edge_{name} gauge"
        );
        let _ = writeln!(out, "usepod_edge_{name} {value}");
    };
    let connected = f64::from(u8::from(s.connection.state == "connected"));
    gauge(
        "connected",
        "1 while authenticated to the coordinator",
        connected,
    );
    let j = &s.jobs;
    gauge("jobs_in_flight", "jobs running now", f64::from(j.in_flight));
    gauge(
        "jobs_done",
        "jobs finished with job_done since start",
        j.done as f64,
    );
    gauge(
        "jobs_failed",
        "jobs answered with job_error since start",
        j.failed as f64,
    );
    let hb = &s.heartbeat;
    gauge(
        "ttfb_p50_ms",
        "time to first byte, median over 5 min",
        f64::from(hb.p50_latency_ms),
    );
    gauge(
        "ttfb_p95_ms",
        "time to first byte, p95 over 5 min",
        f64::from(hb.p95_latency_ms),
    );
    gauge(
        "tokens_per_second_p50",
        "generation speed, median over 5 min",
        hb.tokens_per_sec_p50,
    );
    gauge(
        "error_rate_60s",
        "share of jobs that failed in the last minute",
        hb.error_rate_60s,
    );
    // A file without the gate's section comes from an agent that always admits.
    let admitting = s.serving.as_ref().is_none_or(|g| g.admitting);
    gauge(
        "admitting",
        "1 while the agent takes jobs (not paused, in schedule, no local use, heat or battery)",
        f64::from(u8::from(admitting)),
    );
    gauge(
        "models_offered",
        "models advertised to the coordinator",
        s.models_offered.len() as f64,
    );
    let _ = writeln!(
        out,
        "# HELP usepod_edge_backend_up 1 if the backend answered its last probe\n# TYPE usepod_edge_backend_up gauge"
    );
    for b in &s.backends {
        let up = u8::from(b.healthy == Some(true));
        let url = b.url.replace('"', "");
        let _ = writeln!(
            out,
            "usepod_edge_backend_up{{kind=\"{}\",url=\"{url}\"}} {up}",
            b.kind
        );
    }
    let _ = writeln!(
        out,
        "# HELP usepod_edge_backend_jobs_in_flight our jobs running on the backend now\n# TYPE usepod_edge_backend_jobs_in_flight gauge"
    );
    for b in &s.backends {
        let url = b.url.replace('"', "");
        let _ = writeln!(
            out,
            "usepod_edge_backend_jobs_in_flight{{kind=\"{}\",url=\"{url}\"}} {}",
            b.kind, b.in_flight
        );
    }
    out.push_str(&crate::ledger::prometheus(&s.ledger));
    out
}

fn write_all(agent: &Agent) -> std::io::Result<()> {
    let s = snapshot(agent);
    let config = agent.live();
    let cfg = &config.status;
    let text = serde_json::to_string_pretty(&s).unwrap_or_default();
    crate::atomic_file::write(&cfg.state_file, text.as_bytes(), 0o644)?;
    if let Some(path) = &cfg.metrics_textfile {
        crate::atomic_file::write(path, prometheus(&s).as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Rewrites the files (src/upkeep.rs calls it every `status.interval_s`); a failure
/// is logged once, until a write succeeds again (`failing` remembers).
pub fn write(agent: &Agent, failing: &mut bool) {
    match write_all(agent) {
        Ok(()) => *failing = false,
        Err(e) if !*failing => {
            *failing = true;
            log::warn!(
                "cannot write {}: {e}",
                agent.live().status.state_file.display()
            );
        }
        Err(_) => {}
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
pub fn assess(state: &State, now_unix: u64, pid_alive: bool) -> Verdict {
    if !pid_alive {
        return Verdict::NotRunning;
    }
    let age = now_unix.saturating_sub(state.written_unix);
    // Three missed rewrites, and at least 15 s for slow interval settings.
    if age as f64 > (state.interval_s * 3.0).max(15.0) {
        Verdict::Stale { age }
    } else {
        Verdict::Running
    }
}

/// Whether `pid` is a live usepod-edge process.
pub fn pid_alive(pid: u32) -> bool {
    // 0 is no process: a file without a pid.
    pid != 0
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim_end().starts_with("usepod-edge"))
}

/// Why a state file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// No file (or no access): the agent is not running with this config.
    Missing(std::io::Error),
    /// Not JSON at all.
    NotJson,
    /// JSON, but not a state file.
    NotState(serde_json::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Missing(e) => write!(f, "{e}"),
            ReadError::NotJson => f.write_str("is not valid JSON"),
            ReadError::NotState(e) => write!(f, "is not a usepod-edge state file ({e})"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads a state file as a running agent wrote it.
pub fn read(path: &Path) -> Result<State, ReadError> {
    let text = std::fs::read_to_string(path).map_err(ReadError::Missing)?;
    serde_json::from_str(&text).map_err(|e| {
        if e.is_data() {
            ReadError::NotState(e)
        } else {
            ReadError::NotJson
        }
    })
}

/// Sends `signal` (`HUP`, `USR1`, `USR2`) to the running agent at `pid`; false when
/// it could not be sent. Through kill(1): the crate has no unsafe code for kill(2).
pub fn signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// The running agent's state file, when its process is alive and writing it.
pub fn read_running(config: &Config) -> Option<State> {
    let state = read(&config.status.state_file).ok()?;
    let alive = pid_alive(state.pid);
    (assess(&state, unix(SystemTime::now()), alive) == Verdict::Running).then_some(state)
}

/// Waits, polling the running agent's state file, until `done` holds for a state
/// written at or after `after` (Unix seconds); whether it did, and the last state seen
/// (None once no agent runs).
pub fn wait_running(
    config: &Config,
    after: u64,
    limit: Duration,
    mut done: impl FnMut(&State) -> bool,
) -> (bool, Option<State>) {
    let end = Instant::now() + limit;
    loop {
        let Some(s) = read_running(config) else {
            return (false, None);
        };
        if s.written_unix >= after && done(&s) {
            return (true, Some(s));
        }
        if Instant::now() >= end {
            return (false, Some(s));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(v: serde_json::Value) -> State {
        serde_json::from_value(v).expect("a state file")
    }

    #[test]
    fn verdict_from_age_and_pid() {
        let s = state(json!({"written_unix": 1000, "interval_s": 5.0}));
        assert_eq!(assess(&s, 1010, true), Verdict::Running);
        assert_eq!(assess(&s, 1016, true), Verdict::Stale { age: 16 });
        assert_eq!(assess(&s, 1001, false), Verdict::NotRunning);
        let slow = state(json!({"written_unix": 1000, "interval_s": 20.0}));
        assert_eq!(assess(&slow, 1050, true), Verdict::Running);
        assert_eq!(
            assess(&state(json!({})), 100, true),
            Verdict::Stale { age: 100 }
        );
    }

    #[test]
    fn prometheus_text_has_each_gauge() {
        let s = state(
            json!({"connection":{"state":"connected"},"jobs":{"in_flight":2,"done":5,"failed":1},
            "heartbeat":{"p50_latency_ms":40,"p95_latency_ms":90,"tokens_per_sec_p50":12.5,"error_rate_60s":0.25},
            "models_offered":["a","b"],
            "backends":[{"kind":"llamacpp","url":"http://127.0.0.1:8080/","healthy":true,"in_flight":2},{"kind":"ollama","url":"u","healthy":false}]}),
        );
        let t = prometheus(&s);
        for line in [
            "usepod_edge_connected 1",
            "usepod_edge_jobs_in_flight 2",
            "usepod_edge_jobs_failed 1",
            "usepod_edge_ttfb_p95_ms 90",
            "usepod_edge_tokens_per_second_p50 12.5",
            "usepod_edge_error_rate_60s 0.25",
            "usepod_edge_models_offered 2",
            "usepod_edge_admitting 1",
            "usepod_edge_admitting 1",
            "usepod_edge_backend_up{kind=\"llamacpp\",url=\"http://127.0.0.1:8080/\"} 1",
            "usepod_edge_backend_up{kind=\"ollama\",url=\"u\"} 0",
            "usepod_edge_backend_jobs_in_flight{kind=\"llamacpp\",url=\"http://127.0.0.1:8080/\"} 2",
            "usepod_edge_backend_jobs_in_flight{kind=\"ollama\",url=\"u\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn a_pool_shows_its_members_slots_in_use_and_who_is_out() {
        use crate::backend::BackendKind;
        use crate::discovery::Target;
        use std::sync::Arc;
        let member = |port: u16, slots| Member {
            target: Arc::new(Target {
                kind: BackendKind::LlamaCpp,
                url: crate::endpoint::Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
                allow: None,
                api_key: None,
                serves_messages: Default::default(),
            }),
            slots,
        };
        let route = Route {
            kind: BackendKind::LlamaCpp,
            members: vec![member(1, Some(2)), member(2, Some(2))],
            context_window: None,
        };
        let routes = BTreeMap::from([("m1".to_string(), route)]);
        let (a, b) = ("http://127.0.0.1:1/", "http://127.0.0.1:2/");
        let busy = HashMap::from([(a.to_string(), 2)]);
        let none = BTreeMap::new();
        let p = &pool_states(&routes, &busy, &none, 8, true)[0];
        assert_eq!(
            (p.model.as_str(), p.kind.as_str(), p.offered),
            ("m1", "llamacpp", 4)
        );
        let m: Vec<_> = p
            .members
            .iter()
            .map(|m| (m.url.as_str(), m.in_use))
            .collect();
        assert_eq!(m, [(a, 2), (b, 0)]);
        let aside = BTreeMap::from([(b.to_string(), "owner".to_string())]);
        let p = &pool_states(&routes, &busy, &aside, 8, true)[0];
        assert_eq!(p.offered, 2);
        assert_eq!(p.members[1].local_use.as_deref(), Some("owner"));
        assert_eq!(pool_states(&routes, &busy, &aside, 8, false)[0].offered, 0);
        let both = BTreeMap::from([
            (a.to_string(), "x".to_string()),
            (b.to_string(), "y".to_string()),
        ]);
        assert_eq!(pool_states(&routes, &busy, &both, 8, true)[0].offered, 0);
    }

    #[test]
    fn the_file_reads_back_as_written() {
        let s = State {
            pid: 42,
            version: "0.1.0".into(),
            written_unix: 1000,
            interval_s: 0.2,
            provider_id: Some("prov-1".into()),
            backends: vec![BackendState {
                kind: "vllm".into(),
                url: "http://127.0.0.1:8000/".into(),
                ..BackendState::default()
            }],
            last_error: Some(LastError {
                at: "2025-01-01T00:00:00+00:00".into(),
                code: "internal".into(),
            }),
            ..State::default()
        };
        let text = serde_json::to_string_pretty(&s).unwrap();
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), s);
        // The shape readers of the file rely on.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["jobs"], json!({"in_flight": 0, "done": 0, "failed": 0}));
        assert_eq!(v["backends"][0]["healthy"], json!(null));
        assert_eq!(v["ledger"]["lines_lost"], 0);
        assert_eq!(v["heartbeat"]["last_error_code"], json!(null));
        // A field this version does not know is no reason to refuse the file.
        assert!(serde_json::from_str::<State>(r#"{"pid":1,"admitting":false}"#).is_ok());
    }

    /// The keys of the file as the agent wrote them before it had a type
    /// (`json!` in the writer): scripts and the tests read it.
    #[test]
    fn the_file_keeps_its_keys() {
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let s = State {
            serving: Some(Serving {
                admitting: false,
                blocks: vec![crate::gate::BlockState {
                    until: Some(crate::gate::At::default()),
                    ..Default::default()
                }],
                power_mode: Some(crate::hardware::PowerMode { id: 2, name: None }),
                ..Serving::default()
            }),
            ..State::default()
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            keys(&v),
            [
                "backends",
                "connection",
                "heartbeat",
                "interval_s",
                "jobs",
                "last_error",
                "ledger",
                "models_offered",
                "pid",
                "pools",
                "provider_id",
                "public_key",
                "serving",
                "version",
                "written_at",
                "written_unix"
            ]
        );
        assert_eq!(
            keys(&v["connection"]),
            [
                "config_problem",
                "coordinator",
                "detail",
                "since",
                "since_unix",
                "state"
            ]
        );
        assert_eq!(
            keys(&v["ledger"]),
            [
                "cancelled",
                "done",
                "errors",
                "expected_micro_usdc",
                "expected_usdc",
                "input_tokens",
                "jobs",
                "lines_lost",
                "output_tokens",
                "path"
            ]
        );
        assert_eq!(
            keys(&v["serving"]),
            ["admitting", "blocks", "notes", "power_mode", "schedule"]
        );
        assert_eq!(
            keys(&v["serving"]["blocks"][0]),
            ["detail", "reason", "since", "text", "until"]
        );
        assert_eq!(keys(&v["serving"]["blocks"][0]["since"]), ["at", "unix"]);
        assert_eq!(v["serving"]["power_mode"], json!({"id": 2}));
        let b = BackendState::default();
        assert_eq!(
            keys(&serde_json::to_value(b).unwrap()),
            [
                "healthy",
                "in_flight",
                "kind",
                "models",
                "problem",
                "slots",
                "url"
            ]
        );
        let p = PoolState {
            members: vec![MemberState::default()],
            ..PoolState::default()
        };
        let v = serde_json::to_value(p).unwrap();
        assert_eq!(keys(&v), ["kind", "members", "model", "offered"]);
        assert_eq!(
            keys(&v["members"][0]),
            ["in_use", "local_use", "slots", "url"]
        );
    }
}
