//! Honest reports: heartbeats carry measured figures, the state file feeds
//! `usepod-edge status`, and the Prometheus textfile follows it.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::agent::{run_cli, Setup};
use support::fake_backend::{FakeBackend, Fault, Kind};
use support::jobs::{backend_entry, chat_request, job, new_job_id as new_id, start_agent};
use support::{wait_until, watchdog};

const MODEL: &str = "status-model";

#[test]
fn heartbeat_status_and_metrics_report_real_figures() {
    let _w = watchdog(Duration::from_secs(60), "status and heartbeat");
    let fake = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    fake.set_reply(&[" a", " b", " c", " d"], (9, 4));
    fake.set_stream_len(4, Duration::from_millis(60));
    let mut s = Setup::new("status");
    let textfile = s.dir.join("usepod_edge.prom");
    s.set("/coordinator/heartbeat_interval_s", json!(0.5));
    s.set(
        "/status",
        json!({"interval_s": 0.2, "metrics_textfile": textfile}),
    );
    let state_file = s.key_path.with_file_name("state.json");
    let run = start_agent(s, vec![backend_entry(&fake)], &[], &[MODEL]);

    // Byte by byte, so the first whole event takes a measurable time to arrive.
    fake.set_fault(Fault::Trickle(Duration::from_micros(300)));
    run.run_job(&job(&new_id(), MODEL, chat_request("hi")))
        .expect_done();
    fake.set_fault(Fault::Status(500, "{\"error\":\"boom\"}".into()));
    run.run_job(&job(&new_id(), MODEL, chat_request("hi")))
        .expect_error("internal");

    // The next heartbeat after both jobs reports them.
    let mut hb = Value::Null;
    assert!(wait_until(Duration::from_secs(5), || {
        match run.conn.recv_type("heartbeat", Duration::from_millis(600)) {
            Some(t) if t.value["last_error_code"] == "internal" => {
                hb = t.value;
                true
            }
            _ => false,
        }
    }));
    assert_eq!(hb["queue_depth"], 0, "{hb}");
    assert!(
        hb["p50_latency_ms"].as_u64().unwrap() >= 50,
        "time to first byte: {hb}"
    );
    assert!(
        hb["p95_latency_ms"].as_u64() >= hb["p50_latency_ms"].as_u64(),
        "{hb}"
    );
    assert!(hb["tokens_per_sec_p50"].as_f64().unwrap() > 0.0, "{hb}");
    assert_eq!(hb["error_rate_60s"], 0.5, "{hb}");
    let at = hb["last_error_at"].as_str().unwrap();
    assert!(
        at.len() >= 20 && at.ends_with("+00:00") && at.contains('T'),
        "RFC 3339: {at}"
    );

    // status reads the state file the running agent keeps.
    let cfg = run.setup.write_config();
    let home = run.setup.dir.path();
    assert!(wait_until(Duration::from_secs(3), || state_file.exists()));
    // The file is rewritten every 0.2 s, so the last job may not be in it yet.
    let status = || {
        run_cli(
            &["--config", cfg.to_str().unwrap(), "status"],
            &[],
            home,
            Duration::from_secs(10),
        )
    };
    let mut out = status();
    for _ in 0..20 {
        if out.stdout.contains("1 done, 1 failed") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        out = status();
    }
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    for needle in [
        "running",
        "coordinator: connected",
        "prov-jobs",
        MODEL,
        "1 done, 1 failed",
        "last error: internal",
    ] {
        assert!(
            out.stdout.contains(needle),
            "missing {needle:?} in:\n{}",
            out.stdout
        );
    }
    let out = run_cli(
        &["--config", cfg.to_str().unwrap(), "status", "--json"],
        &[],
        home,
        Duration::from_secs(10),
    );
    let v: Value = serde_json::from_str(&out.stdout).expect("status --json prints JSON");
    assert_eq!(v["running"], true);
    assert_eq!(v["jobs"], json!({"in_flight": 0, "done": 1, "failed": 1}));
    assert_eq!(v["connection"]["state"], "connected");
    assert_eq!(v["provider_id"], "prov-jobs");

    let prom = std::fs::read_to_string(&textfile).expect("metrics textfile written");
    for line in [
        "usepod_edge_connected 1",
        "usepod_edge_jobs_done 1",
        "usepod_edge_jobs_failed 1",
        "usepod_edge_models_offered 1",
    ] {
        assert!(
            prom.lines().any(|l| l == line),
            "missing {line:?} in\n{prom}"
        );
    }

    // A hung agent (stopped; its file last written long ago) is reported stale.
    let mut agent = run.agent;
    agent.signal("STOP");
    // Once stopped it cannot rewrite the file under the edit below.
    let pid = agent.pid();
    assert!(
        wait_until(Duration::from_secs(3), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                st.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            })
        }),
        "the agent did not stop on SIGSTOP"
    );
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap())
        .expect("state file is JSON");
    let written = state["written_unix"].as_u64().expect("written_unix");
    state["written_unix"] = json!(written - 100);
    std::fs::write(&state_file, state.to_string()).unwrap();
    let out = run_cli(
        &["--config", cfg.to_str().unwrap(), "status"],
        &[],
        home,
        Duration::from_secs(10),
    );
    agent.signal("CONT");
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("has not updated its state for"),
        "{}",
        out.stdout
    );

    // A dead agent's file is reported as such.
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(5)).expect("killed");
    let out = run_cli(
        &["--config", cfg.to_str().unwrap(), "status"],
        &[],
        home,
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stdout.contains("not running"), "{}", out.stdout);
}

#[test]
fn status_without_a_state_file_says_not_running() {
    let _w = watchdog(Duration::from_secs(20), "status no file");
    let s = Setup::new("status-none");
    let out = s.cli("status");
    assert_eq!(out.code, Some(3), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("not running") && out.stdout.contains("state.json"),
        "{}",
        out.stdout
    );
}
