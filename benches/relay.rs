//! Relay benchmark (`make bench`): what the agent costs, against a baseline from the same
//! run. A fast vLLM-shaped backend (benches/common) stamps every event with the time it
//! was written; a client reads it (a) straight from the backend and (b) as `job_chunk`
//! frames through the real agent (release build) and a loopback TLS coordinator
//! (tests/support). Prints a Markdown table for docs/benchmarks.md; then every agent's
//! idle footprint, broken down (relay/footprint.rs), and the same workload through every
//! agent (relay/peers.rs).
//!
//! A `harness = false` bench rather than an example: the harness in tests/support needs
//! `CARGO_BIN_EXE_usepod-edge`, which cargo sets for tests and benches only, and
//! `cargo bench` builds the agent with the release profile, i.e. the binary operators run.
//! Under `cargo test --all-targets` it is built but returns at once (no `--bench` arg).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

#[path = "relay/peers.rs"]
mod peers;

#[path = "relay/footprint.rs"]
mod footprint;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use support::agent::{Agent, Setup};
use support::coordinator::{Conn, InboundKind};
use support::jobs::{new_job_id, wait_offer};

const MODEL: &str = "m";
const MAX_CONCURRENT: usize = 8;

fn job_frame(id: &str, events: u64, pace_us: u64) -> Value {
    json!({"type": "job", "job_id": id, "model_id": MODEL, "format": "openai",
           "deadline_ms": 600000,
           "request": {"messages": [{"role": "user", "content": "bench"}],
                       "max_tokens": events, "bench_pace_us": pace_us}})
}

/// Per job: (written_ns, read_ns) of every content event, in order.
type Stamps = Vec<(u64, u64)>;

/// Send `k` jobs of `events` events and read until all are done. Returns the stamps of
/// each job and the wall time from the first send to the last job_done.
fn through_agent(conn: &Conn, k: usize, events: u64, pace_us: u64) -> (Vec<Stamps>, Duration) {
    let ids: Vec<String> = (0..k).map(|_| new_job_id()).collect();
    let t0 = Instant::now();
    for id in &ids {
        conn.send_json(&job_frame(id, events, pace_us));
    }
    let mut stamps: Vec<Stamps> = vec![Vec::with_capacity(events as usize); k];
    let mut done = 0;
    let mut last = t0;
    while done < k {
        let JobFrame { v, at, job: i } =
            next_job_frame(conn, &ids, Duration::from_secs(60), "bench");
        match v["type"].as_str() {
            Some("job_chunk") => {
                let at = ns_of(at);
                let data = B64.decode(v["data"].as_str().unwrap()).unwrap();
                stamps[i].extend(common::stamps(&data).into_iter().map(|t| (t, at)));
            }
            Some("job_done") => {
                done += 1;
                last = at;
            }
            _ => panic!("job failed during the bench: {v}"),
        }
    }
    for s in &stamps {
        assert_eq!(s.len() as u64, events, "events lost through the agent");
    }
    (stamps, last - t0)
}

/// `k` direct readers in parallel, `events` each.
fn direct(port: u16, k: usize, events: u64, pace_us: u64) -> (Vec<Stamps>, Duration) {
    let t0 = Instant::now();
    let out: Vec<Stamps> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..k)
            .map(|_| s.spawn(move || direct_stream(port, events, pace_us)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for s in &out {
        assert_eq!(s.len() as u64, events);
    }
    (out, t0.elapsed())
}

/// Latencies in µs, sorted.
fn latencies(runs: &[Stamps]) -> Vec<f64> {
    let mut v: Vec<f64> = runs
        .iter()
        .flatten()
        .map(|(t, at)| at.saturating_sub(*t) as f64 / 1000.0)
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Row {
    what: String,
    direct: String,
    agent: String,
    ratio: String,
}

fn row(what: &str, direct: String, agent: String, ratio: String) -> Row {
    Row {
        what: what.into(),
        direct,
        agent,
        ratio,
    }
}

fn main() {
    if !invoked_as_bench() {
        println!("relay bench: built; run it with `make bench` (cargo bench --bench relay)");
        return;
    }
    if std::env::var_os("BENCH_PEERS_ONLY").is_some() {
        peers::compare(support::agent::BIN);
        return;
    }
    if std::env::var_os("BENCH_FOOTPRINT_ONLY").is_some() {
        footprint::compare(support::agent::BIN);
        return;
    }
    let idle_s: u64 = std::env::var("BENCH_IDLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let hz = clk_tck();
    now_ns();
    let backend = BenchBackend::start(MODEL);
    let mut setup = Setup::new("bench");
    setup.set("/backends", json!([{"kind": "vllm", "url": backend.url()}]));
    setup.set("/limits/max_concurrent", json!(MAX_CONCURRENT));
    // Jobs ask for up to 20k events, paced by a field the request policy would drop.
    setup.set("/limits/max_output_tokens", json!(1_048_576));
    setup.set("/limits/allow_fields", json!(["bench_pace_us"]));
    // Production defaults for the idle figures.
    setup.set("/coordinator/heartbeat_interval_s", json!(15));
    setup.set("/coordinator/ping_interval_s", json!(15));
    let path = setup.write_config();
    let bin = std::env::var("USEPOD_EDGE_BIN").unwrap_or_else(|_| support::agent::BIN.into());
    start_cold(std::path::Path::new(&bin));
    let agent = Agent::spawn(
        "bench",
        &[
            "--config",
            path.to_str().unwrap(),
            "--log-level",
            "info",
            "run",
        ],
        SERVICE_ENV,
        setup.dir.path(),
    );
    let pid = agent.pid();
    let conn = setup.coord.accept(Duration::from_secs(10));
    conn.authenticate(Some("prov-bench"));
    let caps = conn.expect_capabilities(Duration::from_secs(10)).value;
    if !support::jobs::offered_ids(&caps).iter().any(|m| m == MODEL) {
        wait_offer(&conn, &[MODEL], Duration::from_secs(10));
    }
    eprintln!(
        "bench: agent {} (pid {pid}) connected; idle for {idle_s} s",
        support::agent::BIN
    );

    // ---- idle ----------------------------------------------------------------------
    std::thread::sleep(Duration::from_secs(2));
    let (c0, sw0) = (cpu_ticks(pid), ctxt_switches(pid));
    std::thread::sleep(Duration::from_secs(idle_s));
    let (c1, sw1) = (cpu_ticks(pid), ctxt_switches(pid));
    let idle_cpu_s = (c1 - c0) as f64 / hz;
    let idle_wakeups = (sw1.0 - sw0.0) + (sw1.1 - sw0.1);
    let idle_rss = status_field(pid, "VmRSS");
    let idle_hwm = status_field(pid, "VmHWM");
    let idle_threads = status_field(pid, "Threads");
    let idle_fds = fd_count(pid);
    // Drain the heartbeats of the idle time.
    while conn.recv(Duration::from_millis(10)).is_some() {}

    // ---- warm-up -------------------------------------------------------------------
    through_agent(&conn, 1, 2000, 0);
    direct(backend.port(), 1, 2000, 0);

    let mut rows = Vec::new();
    let mut cpu_per_10k = Vec::new();

    // ---- one job, unpaced: throughput ----------------------------------------------
    const N1: u64 = 20_000;
    let (mut d_eps, mut a_eps) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (_, dt) = direct(backend.port(), 1, N1, 0);
        d_eps.push(N1 as f64 / dt.as_secs_f64());
        let c0 = cpu_ticks(pid);
        let (_, at) = through_agent(&conn, 1, N1, 0);
        cpu_per_10k.push((cpu_ticks(pid) - c0) as f64 / hz / (N1 as f64 / 10_000.0));
        a_eps.push(N1 as f64 / at.as_secs_f64());
    }
    let (d1, a1) = (median(d_eps), median(a_eps));
    rows.push(row(
        "events/s, 1 job (20k events, unpaced, median of 3)",
        format!("{d1:.0}"),
        format!("{a1:.0}"),
        format!("{:.2}", a1 / d1),
    ));

    // ---- parallel ------------------------------------------------------------------
    const NK: u64 = 10_000;
    for k in [4, MAX_CONCURRENT] {
        let (_, dt) = direct(backend.port(), k, NK, 0);
        let d = (k as u64 * NK) as f64 / dt.as_secs_f64();
        let c0 = cpu_ticks(pid);
        let (_, at) = through_agent(&conn, k, NK, 0);
        cpu_per_10k.push((cpu_ticks(pid) - c0) as f64 / hz / ((k as u64 * NK) as f64 / 10_000.0));
        let a = (k as u64 * NK) as f64 / at.as_secs_f64();
        rows.push(row(
            &format!("events/s, {k} parallel jobs (10k events each, aggregate)"),
            format!("{d:.0}"),
            format!("{a:.0}"),
            format!("{:.2}", a / d),
        ));
    }

    // ---- latency, paced ------------------------------------------------------------
    const NL: u64 = 2000;
    const PACE_US: u64 = 1000;
    let mut lat = Vec::new();
    for k in [1usize, 4, MAX_CONCURRENT] {
        let (d, _) = direct(backend.port(), k, NL, PACE_US);
        let (a, _) = through_agent(&conn, k, NL, PACE_US);
        lat.push((k, latencies(&d), latencies(&a)));
    }
    for (k, d, a) in &lat {
        for (name, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
            let (dp, ap) = (pct(d, p), pct(a, p));
            rows.push(row(
                &format!("latency µs backend→reader, {k} job(s), {name} (1 event/ms)"),
                format!("{dp:.0}"),
                format!("{ap:.0}"),
                format!("{:+.0} µs", ap - dp),
            ));
        }
    }

    // ---- after load ----------------------------------------------------------------
    std::thread::sleep(Duration::from_millis(500));
    let load_rss = status_field(pid, "VmRSS");
    let load_hwm = status_field(pid, "VmHWM");
    let load_threads = status_field(pid, "Threads");
    let load_fds = fd_count(pid);
    let cpu10k = median(cpu_per_10k.clone());

    // ---- a job at the request cap, of tiny JSON values -------------------------------
    // The worst case for a generic JSON tree (~30x its bytes); the policy reads it through
    // typed structs and raw slices. Peak RSS growth against the after-load peak.
    let cap: usize = 8 << 20; // limits.max_request_bytes default
    let filler = "1,".repeat((cap - 4096) / 2);
    let text = format!(
        r#"{{"type":"job","job_id":"{}","model_id":"{MODEL}","format":"openai","request":{{"messages":[{{"role":"user","content":"x"}}],"max_tokens":4,"extra":[{filler}1]}}}}"#,
        new_job_id()
    );
    let frame_bytes = text.len();
    conn.send_text(&text);
    drop((text, filler));
    loop {
        let m = conn
            .recv(Duration::from_secs(60))
            .expect("agent went silent on the big job");
        if let InboundKind::Text(t) = m.kind {
            if t.contains("\"job_done\"") || t.contains("\"job_error\"") {
                break;
            }
        }
    }
    let big_hwm = status_field(pid, "VmHWM");
    let big_growth_kb = big_hwm.saturating_sub(load_hwm);

    // ---- binary sizes --------------------------------------------------------------
    let mut sizes = Vec::new();
    for (label, p) in [
        (
            "x86_64 musl (dist/)",
            "dist/usepod-edge-0.1.0-x86_64-unknown-linux-musl",
        ),
        (
            "aarch64 musl (dist/)",
            "dist/usepod-edge-0.1.0-aarch64-unknown-linux-musl",
        ),
        ("host release (cargo bench build)", support::agent::BIN),
    ] {
        let full = if p.starts_with('/') {
            std::path::PathBuf::from(p)
        } else {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
        };
        match std::fs::metadata(&full) {
            Ok(m) => sizes.push(format!(
                "{label}: {} bytes ({:.2} MiB)",
                m.len(),
                m.len() as f64 / 1048576.0
            )),
            Err(_) => sizes.push(format!("{label}: not built")),
        }
    }

    // ---- report --------------------------------------------------------------------
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("\n### Relay benchmark, {date}\n");
    println!("Machine: {}\n", machine());
    let (_, under_test) = support::agent::bin_command();
    println!("Agent under test: `{under_test}` (`$USEPOD_EDGE_BIN` picks another)\n");
    println!("| measure | direct (baseline) | through agent | agent / direct |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {} | {} |", r.what, r.direct, r.agent, r.ratio);
    }
    println!();
    println!("| footprint | value |");
    println!("|---|---|");
    println!("| agent CPU per 10k relayed events (median over runs) | {cpu10k:.3} s |");
    println!(
        "| idle {idle_s} s, connected: CPU | {idle_cpu_s:.2} s ({:.3} %) |",
        idle_cpu_s / idle_s as f64 * 100.0
    );
    println!("| idle {idle_s} s: context switches, all threads (wake-ups) | {idle_wakeups} |");
    println!("| RSS idle connected (VmRSS / VmHWM) | {idle_rss} kB / {idle_hwm} kB |");
    println!("| RSS after the load (VmRSS / VmHWM) | {load_rss} kB / {load_hwm} kB |");
    println!(
        "| peak RSS for one {frame_bytes}-byte job frame of tiny values (VmHWM growth) | {big_growth_kb} kB ({:.2}x the frame) |",
        (big_growth_kb * 1024) as f64 / frame_bytes as f64
    );
    println!("| threads idle / after load | {idle_threads} / {load_threads} |");
    println!("| open fds idle / after load | {idle_fds} / {load_fds} |");
    for s in &sizes {
        let (l, v) = s.split_once(": ").unwrap();
        println!("| stripped binary, {l} | {v} |");
    }
    let p99_added = lat
        .iter()
        .find(|(k, _, _)| *k == 1)
        .map(|(_, d, a)| pct(a, 99.0) - pct(d, 99.0))
        .unwrap_or(f64::NAN);
    println!("\nTargets (issue 5):");
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "- added latency p99 ≤ 1 ms per event (1 job): {p99_added:.0} µs: {}",
        mark(p99_added <= 1000.0)
    );
    println!(
        "- idle CPU indistinguishable from zero: {idle_cpu_s:.2} s in {idle_s} s: {}",
        mark(idle_cpu_s <= 0.02)
    );
    println!(
        "- RSS idle ≤ 4 MB: {idle_rss} kB: {}",
        mark(idle_rss <= 4096)
    );
    println!(
        "- relay ≥ 20k events/s on one job: {a1:.0}: {}",
        mark(a1 >= 20_000.0)
    );
    drop(conn);
    drop(agent);
    footprint::compare(support::agent::BIN);
    peers::compare(support::agent::BIN);
}
