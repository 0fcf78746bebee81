//! The same relay workload through several agents in one run, alternating rounds (so a
//! busy moment on a shared machine lands on every agent alike): the shipped static musl
//! build, the glibc release build, a baseline revision's musl build (BENCH_BASELINE),
//! usepod-agent 0.3.5 when `make bench-usepod` installed it, and the agent with a
//! counting allocator (allocations only; it runs glibc's malloc, so its CPU is not shown).
//!
//! Per agent: CPU per 1k relayed events (utime+stime, /proc/PID/stat), system calls per
//! event (read- and write-class, counted by strace over a paced round, where each event
//! arrives alone; /proc/PID/io syscr/syscw too, which count read(2)/write(2) but not the
//! recv/send that Rust's and tokio's sockets use), heap allocations per event, WS frames
//! per job and added latency p50/p99 against reading the backend directly.

use super::common::{self, *};
use super::support::agent::{Agent, Setup};
use super::support::coordinator::{Conn, Coordinator};
use super::support::jobs::{new_job_id, wait_offer};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MODEL: &str = "m";
/// The workload: 20 jobs of 2000 events, 4 at a time, three rounds.
const JOBS: usize = 20;
const EVENTS: u64 = 2000;
const AT_ONCE: usize = 4;
const ROUNDS: usize = 3;
/// Paced rounds (latency, syscalls): one event per ms, as a fast model streams.
const PACED_JOBS: usize = 2;
const PACED_EVENTS: u64 = 500;
const PACE_US: u64 = 1000;

enum Process {
    Edge(Agent),
    Other(Child),
}

pub(super) struct Peer {
    pub(super) label: String,
    process: Process,
    pub(super) conn: Conn,
    // Kept alive for the agent's life.
    _coord: Option<Coordinator>,
    _dir: Option<Setup>,
    pub(super) alloc_file: Option<PathBuf>,
    /// USEPOD_EDGE_ALLOC_SIZES of the counting build, when asked for.
    pub(super) sizes_file: Option<PathBuf>,
    cpu_ms_per_1k: Vec<f64>,
    syscr: u64,
    syscw: u64,
    events: u64,
    frames: u64,
    jobs: u64,
    allocs: Option<(u64, u64)>,
    paced_allocs: Option<(u64, u64)>,
    latencies: Vec<f64>,
    strace: Option<(f64, f64, f64)>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Process::Other(c) = &mut self.process {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Peer {
    pub(super) fn pid(&self) -> u32 {
        match &self.process {
            Process::Edge(a) => a.pid(),
            Process::Other(c) => c.id(),
        }
    }

    fn allocs_now(&self) -> Option<u64> {
        self.alloc_counters().map(|c| c[0])
    }

    /// The counting build's counters (benches/alloc_count): allocations so far, bytes
    /// live, blocks live, most bytes live at once.
    pub(super) fn alloc_counters(&self) -> Option<[u64; 4]> {
        let text = std::fs::read_to_string(self.alloc_file.as_ref()?).ok()?;
        let mut lines = text.lines().map(|l| l.trim().parse().ok());
        Some([
            lines.next()??,
            lines.next()??,
            lines.next()??,
            lines.next()??,
        ])
    }
}

/// Which counters the counting build keeps (benches/alloc_count).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Counting {
    Off,
    Allocs,
    /// Allocations and the live blocks by size.
    AllocsAndSizes,
}

/// One of our agents (the binary at `bin`) against its own TLS coordinator.
fn edge(label: &str, bin: &Path, backend_url: &str, counting: Counting) -> Peer {
    let count_allocs = counting != Counting::Off;
    let mut setup = Setup::new("bench-peer");
    setup.set("/backends", json!([{"kind": "vllm", "url": backend_url}]));
    setup.set("/limits/max_concurrent", json!(8));
    setup.set("/limits/max_output_tokens", json!(1_048_576));
    setup.set("/limits/allow_fields", json!(["bench_pace_us"]));
    setup.set("/coordinator/heartbeat_interval_s", json!(15));
    setup.set("/coordinator/ping_interval_s", json!(15));
    let path = setup.write_config();
    let alloc_file = count_allocs.then(|| setup.dir.join("allocs"));
    let sizes_file = (counting == Counting::AllocsAndSizes).then(|| setup.dir.join("alloc-sizes"));
    let mut envs: Vec<(&str, &str)> = SERVICE_ENV.to_vec();
    if let Some(f) = &alloc_file {
        envs.push(("USEPOD_EDGE_ALLOC_COUNT", f.to_str().unwrap()));
    }
    if let Some(f) = &sizes_file {
        envs.push(("USEPOD_EDGE_ALLOC_SIZES", f.to_str().unwrap()));
    }
    start_cold(bin);
    // tests/support starts $USEPOD_EDGE_BIN; the bench starts one agent at a time.
    std::env::set_var("USEPOD_EDGE_BIN", bin);
    let agent = Agent::spawn(
        "bench-peer",
        &[
            "--config",
            path.to_str().unwrap(),
            "--log-level",
            "warn",
            "run",
        ],
        &envs,
        setup.dir.path(),
    );
    std::env::remove_var("USEPOD_EDGE_BIN");
    let conn = setup.coord.accept(Duration::from_secs(10));
    conn.authenticate(Some("prov-bench"));
    settle(&conn);
    peer(
        label,
        Process::Edge(agent),
        conn,
        None,
        Some(setup),
        alloc_file,
        sizes_file,
    )
}

/// usepod-agent 0.3.5: it trusts webpki-roots only (no CA option, no SSL_CERT_FILE), so
/// it cannot verify a loopback test certificate; it runs over plain ws://
/// (`--allow-insecure`), which spares it the TLS cost our agents pay.
fn usepod(bin: &Path, backend_url: &str) -> Option<Peer> {
    let coord = Coordinator::start_plain();
    let dir = std::env::temp_dir().join(format!("usepod-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[coordinator]\nurl = \"{}\"\n\n[identity]\nkey_path = \"{}\"\n\n[[backends]]\nkind = \"vllm\"\nurl = \"{backend_url}\"\n\n[pricing]\ndefault_input_per_1m = 1\ndefault_output_per_1m = 1\n\n[limits]\nmax_concurrent = 8\n",
            coord.url(),
            dir.join("identity.key").display()
        ),
    )
    .ok()?;
    start_cold(bin);
    let child = Command::new(bin)
        .args([
            "--config",
            config.to_str()?,
            "--allow-insecure",
            "--log-level",
            "warn",
            "run",
        ])
        .env("HOME", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let conn = match coord.try_accept(Duration::from_secs(20)) {
        Some(c) => c,
        None => {
            eprintln!("bench: usepod-agent did not connect; left out");
            return None;
        }
    };
    conn.authenticate(Some("prov-usepod"));
    settle(&conn);
    Some(peer(
        "usepod-agent 0.3.5 (tokio, glibc; ws://)",
        Process::Other(child),
        conn,
        Some(coord),
        None,
        None,
        None,
    ))
}

fn peer(
    label: &str,
    process: Process,
    conn: Conn,
    coord: Option<Coordinator>,
    setup: Option<Setup>,
    alloc_file: Option<PathBuf>,
    sizes_file: Option<PathBuf>,
) -> Peer {
    Peer {
        label: label.to_string(),
        process,
        conn,
        _coord: coord,
        _dir: setup,
        alloc_file,
        sizes_file,
        cpu_ms_per_1k: Vec::new(),
        syscr: 0,
        syscw: 0,
        events: 0,
        frames: 0,
        jobs: 0,
        allocs: None,
        paced_allocs: None,
        latencies: Vec::new(),
        strace: None,
    }
}

/// Waits for the offer of MODEL, then lets the connection go quiet.
fn settle(conn: &Conn) {
    wait_offer(conn, &[MODEL], Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    while conn.recv(Duration::from_millis(20)).is_some() {}
}

fn job_frame(id: &str, events: u64, pace_us: u64) -> Value {
    json!({"type": "job", "job_id": id, "model_id": MODEL, "format": "openai",
           "deadline_ms": 600000,
           "request": {"messages": [{"role": "user", "content": "bench"}],
                       "max_tokens": events, "bench_pace_us": pace_us}})
}

/// `jobs` jobs, `at_once` in flight; returns (events, job_chunk frames, latencies µs).
fn run_jobs(
    conn: &Conn,
    jobs: usize,
    at_once: usize,
    events: u64,
    pace_us: u64,
) -> (u64, u64, Vec<f64>) {
    let mut ids: Vec<String> = Vec::new();
    let mut sent = 0;
    let (mut done, mut frames, mut got) = (0, 0u64, 0u64);
    let mut lat = Vec::new();
    let mut pending: std::collections::HashMap<String, Vec<u8>> = Default::default();
    while sent < at_once.min(jobs) {
        let id = new_job_id();
        conn.send_json(&job_frame(&id, events, pace_us));
        ids.push(id);
        sent += 1;
    }
    while done < jobs {
        let JobFrame { v, at, .. } = next_job_frame(conn, &ids, Duration::from_secs(60), "bench");
        match v["type"].as_str() {
            Some("job_chunk") => {
                frames += 1;
                let at = ns_of(at);
                // Another agent may cut chunks inside an event: stamps are read up to
                // the last event boundary only, the rest kept for the next chunk.
                let id = v["job_id"].as_str().unwrap().to_string();
                let buf = pending.entry(id).or_default();
                buf.extend(B64.decode(v["data"].as_str().unwrap()).unwrap());
                let cut = buf
                    .windows(2)
                    .rposition(|w| w == b"\n\n")
                    .map_or(0, |i| i + 2);
                for t in common::stamps(&buf[..cut]) {
                    got += 1;
                    lat.push(at.saturating_sub(t) as f64 / 1000.0);
                }
                buf.drain(..cut);
            }
            Some("job_done") => {
                done += 1;
                if sent < jobs {
                    let id = new_job_id();
                    conn.send_json(&job_frame(&id, events, pace_us));
                    ids.push(id);
                    sent += 1;
                }
            }
            _ => panic!("job failed during the bench: {v}"),
        }
    }
    assert_eq!(got, jobs as u64 * events, "events lost");
    (got, frames, lat)
}

fn proc_io(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("syscr:"), field("syscw:"))
}

/// Read-class, write-class and all system calls of every thread of `pid` while `work`
/// runs, from `strace -c`; None without strace (or without ptrace rights).
fn strace_counts(pid: u32, work: impl FnOnce() -> u64) -> Option<(f64, f64, f64)> {
    let out = std::env::temp_dir().join(format!("bench-strace-{pid}.txt"));
    let mut cmd = Command::new("strace");
    cmd.args(["-c", "-f", "-o"]).arg(&out);
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        cmd.arg("-p").arg(t.ok()?.file_name());
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let events = work();
    // SIGINT: strace detaches and writes its summary.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&out).ok()?;
    let (mut r, mut w, mut all) = (0u64, 0u64, 0u64);
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 5 || cols[0].starts_with('-') || cols[0] == "%" {
            continue;
        }
        let name = *cols.last().unwrap();
        let calls: u64 = cols[3].parse().unwrap_or(0);
        if name == "total" {
            all = calls;
            continue;
        }
        match name {
            "read" | "readv" | "recvfrom" | "recvmsg" | "recvmmsg" | "pread64" => r += calls,
            "write" | "writev" | "sendto" | "sendmsg" | "sendmmsg" | "pwrite64" => w += calls,
            _ => {}
        }
    }
    let e = events.max(1) as f64;
    Some((r as f64 / e, w as f64 / e, all as f64 / e))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn env_path(key: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os(key)?);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("bench: {key}={} is not a file; left out", p.display());
        None
    }
}

/// Every agent the bench has, each connected to its own coordinator and settled: the
/// shipped musl build (BENCH_MUSL_BIN), the glibc release build `glibc`, the baseline's
/// musl build (BENCH_BASELINE_BIN), usepod-agent (BENCH_USEPOD_BIN) and the counting
/// build with `counting` (when cargo built it).
pub(super) fn start_all(glibc: &str, url: &str, counting: Counting) -> Vec<Peer> {
    let mut peers = Vec::new();
    if let Some(bin) = env_path("BENCH_MUSL_BIN") {
        peers.push(edge(
            "usepod-edge, static musl (shipped)",
            &bin,
            url,
            Counting::Off,
        ));
    }
    peers.push(edge(
        "usepod-edge, glibc release",
        Path::new(glibc),
        url,
        Counting::Off,
    ));
    if let Some(bin) = env_path("BENCH_BASELINE_BIN") {
        let rev = std::env::var("BENCH_BASELINE_REV").unwrap_or_default();
        peers.push(edge(
            &format!("usepod-edge at {rev}, static musl (baseline)"),
            &bin,
            url,
            Counting::Off,
        ));
    }
    if let Some(bin) = env_path("BENCH_USEPOD_BIN") {
        peers.extend(usepod(&bin, url));
    }
    if let Some(bin) = option_env!("CARGO_BIN_EXE_usepod-edge-alloc-count") {
        peers.push(edge(
            "usepod-edge, glibc + counting allocator",
            Path::new(bin),
            url,
            counting,
        ));
    }
    peers
}

/// Runs the comparison and prints its table.
pub fn compare(glibc: &str) {
    let backend = BenchBackend::start(MODEL);
    let url = backend.url();
    let hz = clk_tck();
    let mut peers = start_all(glibc, &url, Counting::Allocs);
    let counting = |p: &Peer| p.alloc_file.is_some();

    // Warm-up: a job each, so first-use buffers are not counted.
    for p in &peers {
        run_jobs(&p.conn, AT_ONCE, AT_ONCE, 500, 0);
    }
    eprintln!("bench: {} agents, {ROUNDS} alternating rounds of {JOBS} jobs x {EVENTS} events, {AT_ONCE} at a time", peers.len());
    for _ in 0..ROUNDS {
        for p in peers.iter_mut() {
            let pid = p.pid();
            let (c0, io0, a0) = (cpu_ticks(pid), proc_io(pid), p.allocs_now());
            let (events, frames, _) = run_jobs(&p.conn, JOBS, AT_ONCE, EVENTS, 0);
            let (c1, io1) = (cpu_ticks(pid), proc_io(pid));
            if !counting(p) {
                p.cpu_ms_per_1k
                    .push((c1 - c0) as f64 / hz * 1000.0 / (events as f64 / 1000.0));
            }
            p.syscr += io1.0 - io0.0;
            p.syscw += io1.1 - io0.1;
            p.events += events;
            p.frames += frames;
            p.jobs += JOBS as u64;
            if let Some(a0) = a0 {
                // The counter file is rewritten every 20 ms.
                std::thread::sleep(Duration::from_millis(100));
                let a1 = p.allocs_now().unwrap_or(a0);
                let (n, e) = p.allocs.unwrap_or((0, 0));
                p.allocs = Some((n + a1 - a0, e + events));
            }
        }
    }
    // Paced: added latency (and allocations when each event is its own frame).
    let direct: Vec<_> = (0..PACED_JOBS)
        .map(|_| direct_stream(backend.port(), PACED_EVENTS, PACE_US))
        .collect();
    let mut direct_lat: Vec<f64> = direct
        .iter()
        .flatten()
        .map(|(t, at)| at.saturating_sub(*t) as f64 / 1000.0)
        .collect();
    direct_lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for p in peers.iter_mut() {
        let a0 = p.allocs_now();
        let (events, _, mut lat) = run_jobs(&p.conn, PACED_JOBS, PACED_JOBS, PACED_EVENTS, PACE_US);
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        p.latencies = lat;
        if let Some(a0) = a0 {
            std::thread::sleep(Duration::from_millis(100));
            p.paced_allocs = Some((p.allocs_now().unwrap_or(a0) - a0, events));
        }
    }
    // Paced under strace: system calls per event as a token stream makes them.
    for p in peers.iter_mut().filter(|p| p.alloc_file.is_none()) {
        let conn = &p.conn;
        p.strace = strace_counts(p.pid(), || {
            run_jobs(conn, PACED_JOBS, PACED_JOBS, PACED_EVENTS, PACE_US).0
        });
    }

    println!("\n#### Same workload, alternating rounds\n");
    println!(
        "{ROUNDS} rounds of {JOBS} jobs x {EVENTS} events, {AT_ONCE} at a time (CPU: median round; frames: per job); \
         paced: {PACED_JOBS} jobs x {PACED_EVENTS} events at 1 event/ms (latency added over reading the backend directly; system calls from strace -c, all threads).\n"
    );
    println!(
        "| agent | CPU per 1k events | vs musl | syscr / syscw per event | paced: reads / writes / all syscalls per event | allocs per event (burst / paced) | frames per job | paced latency p50 / p99 (direct: {:.0} / {:.0} µs) |",
        pct(&direct_lat, 50.0),
        pct(&direct_lat, 99.0)
    );
    println!("|---|---|---|---|---|---|---|---|");
    let musl_cpu = peers
        .first()
        .filter(|p| p.label.contains("shipped"))
        .map(|p| median(p.cpu_ms_per_1k.clone()));
    for p in &peers {
        let cpu = median(p.cpu_ms_per_1k.clone());
        let cpu_s = if counting(p) {
            "–".to_string()
        } else {
            format!("{cpu:.2} ms")
        };
        let vs = match musl_cpu {
            Some(m) if !counting(p) => format!("{:.2}x", cpu / m),
            _ => "–".into(),
        };
        let e = p.events.max(1) as f64;
        let st = p
            .strace
            .map(|(r, w, a)| format!("{r:.2} / {w:.2} / {a:.2}"))
            .unwrap_or_else(|| "–".into());
        let allocs = match (p.allocs, p.paced_allocs) {
            (Some((n, ev)), Some((pn, pe))) => {
                format!(
                    "{:.3} / {:.3}",
                    n as f64 / ev.max(1) as f64,
                    pn as f64 / pe.max(1) as f64
                )
            }
            _ => "–".into(),
        };
        let lat = |q: f64| pct(&p.latencies, q);
        println!(
            "| {} | {cpu_s} | {vs} | {:.2} / {:.2} | {st} | {allocs} | {:.1} | {:.0} / {:.0} µs |",
            p.label,
            p.syscr as f64 / e,
            p.syscw as f64 / e,
            p.frames as f64 / p.jobs.max(1) as f64,
            lat(50.0),
            lat(99.0),
        );
    }
    let cpu_of = |needle: &str| {
        peers
            .iter()
            .find(|p| p.label.contains(needle))
            .map(|p| median(p.cpu_ms_per_1k.clone()))
    };
    println!();
    if let (Some(m), Some(u)) = (cpu_of("shipped"), cpu_of("usepod-agent")) {
        let mark = if m <= u { "met" } else { "MISSED" };
        println!("- bar: musl CPU per event ≤ usepod-agent's: {m:.2} vs {u:.2} ms per 1k ({:.2}x): {mark}", m / u);
        println!(
            "- goal: half of usepod-agent's: {}",
            if m <= u / 2.0 { "met" } else { "not yet" }
        );
    }
    if let (Some(m), Some(b)) = (cpu_of("shipped"), cpu_of("baseline")) {
        let mark = if m <= b * 1.05 {
            "no regression"
        } else {
            "REGRESSION"
        };
        println!(
            "- against the baseline build: {:.2}x its CPU per event: {mark}",
            m / b
        );
    }
}
