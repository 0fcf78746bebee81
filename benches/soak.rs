//! Soak (`make soak`): 10,000 jobs over 200 reconnect cycles against the bench backend
//! and the loopback TLS coordinator, with the release agent. Prints RSS, open fds and
//! threads after warm-up and at the end, and fails if the end is more than 10% above
//! the warm-up figures. The run is bounded by the agent's reconnect backoff (the first
//! reconnect after an authenticated session is drawn over [0, 4 s): 2 s per cycle on
//! average), so about 8 minutes.
//!
//! `SOAK_JOBS` and `SOAK_CYCLES` override the counts. A `harness = false` bench for the
//! same reasons as benches/relay.rs; without `--bench` it returns at once.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use serde_json::json;
use support::agent::{Agent, Setup};
use support::coordinator::Conn;
use support::jobs::{new_job_id, offered_ids, wait_offer};

const MODEL: &str = "m";
const MAX_CONCURRENT: usize = 8;
const EVENTS: u64 = 20;
/// Cycles before the warm-up snapshot: 2,500 jobs, past the point where the agent's
/// bounded structures are full (the heartbeat metrics keep the last 2,048 jobs), so
/// "end vs warm-up" measures growth, not filling.
const WARM_CYCLES: usize = 50;

#[derive(Clone, Copy, Debug)]
struct Snap {
    rss_kb: u64,
    hwm_kb: u64,
    fds: usize,
    threads: u64,
}

fn snap(pid: u32) -> Snap {
    Snap {
        rss_kb: status_field(pid, "VmRSS"),
        hwm_kb: status_field(pid, "VmHWM"),
        fds: fd_count(pid),
        threads: status_field(pid, "Threads"),
    }
}

fn env_num(k: &str, default: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Run `ids.len()` jobs at once and check each streamed every event and ended done.
fn run_batch(conn: &Conn, n: usize) {
    let ids: Vec<String> = (0..n).map(|_| new_job_id()).collect();
    for id in &ids {
        conn.send_json(&json!({"type": "job", "job_id": id, "model_id": MODEL,
            "request": {"messages": [{"role": "user", "content": "soak"}],
                        "max_tokens": EVENTS}}));
    }
    let mut events = vec![0u64; n];
    let mut done = 0;
    while done < n {
        let JobFrame { v, job: i, .. } =
            next_job_frame(conn, &ids, Duration::from_secs(20), "soak");
        match v["type"].as_str() {
            Some("job_chunk") => {
                let data = B64.decode(v["data"].as_str().unwrap()).unwrap();
                events[i] += stamps(&data).len() as u64;
            }
            Some("job_done") => {
                assert_eq!(events[i], EVENTS, "job lost events: {v}");
                done += 1;
            }
            _ => panic!("job failed during the soak: {v}"),
        }
    }
}

fn main() {
    if !invoked_as_bench() {
        println!("soak: built; run it with `make soak` (cargo bench --bench soak)");
        return;
    }
    let jobs = env_num("SOAK_JOBS", 10_000);
    let cycles = env_num("SOAK_CYCLES", 200).max(WARM_CYCLES + 1);
    let backend = BenchBackend::start(MODEL);
    let mut setup = Setup::new("soak");
    setup.set("/backends", json!([{"kind": "vllm", "url": backend.url()}]));
    setup.set("/limits/max_concurrent", json!(MAX_CONCURRENT));
    // Jobs ask for up to 20k events, paced by a field the request policy would drop.
    setup.set("/limits/max_output_tokens", json!(1_048_576));
    setup.set("/limits/allow_fields", json!(["bench_pace_us"]));
    let path = setup.write_config();
    let mut agent = Agent::spawn(
        "soak",
        &[
            "--config",
            path.to_str().unwrap(),
            "--log-level",
            "info",
            "run",
        ],
        &[],
        setup.dir.path(),
    );
    let pid = agent.pid();
    let hz = clk_tck();
    let t0 = Instant::now();
    let mut done_jobs = 0usize;
    let mut warm = None;
    let mut last = None;
    eprintln!("soak: {jobs} jobs over {cycles} reconnect cycles, agent pid {pid}");
    for cycle in 0..cycles {
        let conn = setup.coord.accept(Duration::from_secs(15));
        let auth = conn.authenticate(Some("prov-soak"));
        assert!(auth.enrollment_code.is_none());
        let caps = conn.expect_capabilities(Duration::from_secs(10)).value;
        if !offered_ids(&caps).iter().any(|m| m == MODEL) {
            wait_offer(&conn, &[MODEL], Duration::from_secs(10));
        }
        // This cycle's share of the jobs.
        let target = jobs * (cycle + 1) / cycles;
        while done_jobs < target {
            let n = (target - done_jobs).min(MAX_CONCURRENT);
            run_batch(&conn, n);
            done_jobs += n;
        }
        // Snapshots while connected and idle, so warm-up and end are comparable.
        if cycle + 1 == WARM_CYCLES || cycle + 1 == cycles {
            std::thread::sleep(Duration::from_millis(300));
            let s = snap(pid);
            if cycle + 1 == WARM_CYCLES {
                warm = Some(s);
            } else {
                last = Some(s);
            }
        }
        // End the session three different ways, in turn.
        match cycle % 3 {
            0 => {
                conn.drop_tcp();
            }
            1 => {
                conn.send_close(1000, "soak");
            }
            _ => {
                conn.send_close_bare();
            }
        }
        conn.wait_closed(Duration::from_secs(5));
        if (cycle + 1) % 20 == 0 {
            eprintln!(
                "soak: cycle {}/{cycles}, {done_jobs} jobs, {:.0} s, RSS {} kB, fds {}, threads {}",
                cycle + 1,
                t0.elapsed().as_secs_f64(),
                status_field(pid, "VmRSS"),
                fd_count(pid),
                status_field(pid, "Threads")
            );
        }
    }
    let (w, e) = (warm.unwrap(), last.unwrap());
    let cpu_s = cpu_ticks(pid) as f64 / hz;
    assert!(agent.is_running(), "the agent exited:\n{}", agent.logs());
    let panicked = agent.logs().contains("panicked");
    println!(
        "\n### Soak, {} jobs, {cycles} reconnect cycles, {:.0} s",
        done_jobs,
        t0.elapsed().as_secs_f64()
    );
    println!("Machine: {}\n", machine());
    println!("| figure | after warm-up ({WARM_CYCLES} cycles) | end | end / warm-up |");
    println!("|---|---|---|---|");
    let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { f64::NAN };
    let lines = [
        ("VmRSS kB", w.rss_kb as f64, e.rss_kb as f64),
        ("VmHWM kB", w.hwm_kb as f64, e.hwm_kb as f64),
        ("open fds", w.fds as f64, e.fds as f64),
        ("threads", w.threads as f64, e.threads as f64),
    ];
    for (name, a, b) in lines {
        println!("| {name} | {a:.0} | {b:.0} | {:.3} |", ratio(a, b));
    }
    println!("\nagent CPU for the whole soak: {cpu_s:.2} s; panics in the log: {panicked}");
    let mut failed = Vec::new();
    for (name, a, b) in lines.iter().filter(|(n, _, _)| *n != "VmHWM kB") {
        if *b > a * 1.10 {
            failed.push(format!("{name}: {a:.0} → {b:.0} (> +10%)"));
        }
    }
    if panicked {
        failed.push("the agent logged a panic".into());
    }
    if failed.is_empty() {
        println!("soak: PASS (RSS, fds, threads at the end within 10% of after warm-up)");
    } else {
        println!("soak: FAIL: {}", failed.join("; "));
        std::process::exit(1);
    }
}
