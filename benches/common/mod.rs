//! Shared by `benches/relay.rs` and `benches/soak.rs`: a minimal, fast vLLM-shaped
//! backend whose events carry the time they were written, a direct (agent-less) client
//! for the same backend, and /proc readers for the agent's footprint.
#![allow(dead_code)]

pub mod arrivals;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process (one clock for backend and readers).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// `t` on the `now_ns()` scale.
pub fn ns_of(t: Instant) -> u64 {
    t.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_nanos() as u64
}

/// True when the binary was started by `cargo bench` (which passes `--bench`); under
/// `cargo test --all-targets` it is only built and started without it.
pub fn invoked_as_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

// ---------------------------------------------------------------------------------------
// Backend
// ---------------------------------------------------------------------------------------

/// A vLLM-shaped backend: `/health`, `/v1/models`, and a streaming
/// `/v1/chat/completions` that sends `max_tokens` content events (each stamped with
/// `now_ns()` when written, one write per event), then finish, usage and `[DONE]`.
/// `bench_pace_us` in the request spaces the events. Thread per connection, keep-alive.
pub struct BenchBackend {
    port: u16,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicU64>,
}

impl BenchBackend {
    pub fn start(model: &str) -> BenchBackend {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (stop2, req2, model) = (stop.clone(), requests.clone(), model.to_string());
        std::thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = s else { continue };
                let (model, req2) = (model.clone(), req2.clone());
                std::thread::spawn(move || serve(s, &model, &req2));
            }
        });
        BenchBackend {
            port,
            stop,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for BenchBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(s: TcpStream, model: &str, requests: &AtomicU64) {
    let _ = s.set_nodelay(true);
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let ok = match (method.as_str(), path.as_str()) {
            ("GET", "/health") => reply(&mut w, "application/json", ""),
            ("GET", "/v1/models") => reply(
                &mut w,
                "application/json",
                &format!(
                    r#"{{"object":"list","data":[{{"id":"{model}","object":"model","owned_by":"vllm","max_model_len":1048576}}]}}"#
                ),
            ),
            ("POST", "/v1/chat/completions") => {
                requests.fetch_add(1, Ordering::Relaxed);
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let n = v["max_tokens"].as_u64().unwrap_or(16);
                let pace = Duration::from_micros(v["bench_pace_us"].as_u64().unwrap_or(0));
                stream(&mut w, model, n, pace)
            }
            _ => reply(&mut w, "text/plain", "not found"),
        };
        if !ok {
            return;
        }
    }
}

fn reply(w: &mut TcpStream, ct: &str, body: &str) -> bool {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    w.write_all(head.as_bytes()).is_ok()
}

fn chunk(w: &mut TcpStream, data: &str) -> bool {
    w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .is_ok()
}

fn stream(w: &mut TcpStream, model: &str, n: u64, pace: Duration) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n";
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let pre = format!(
        r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1763800000,"model":"{model}","choices":[{{"index":0,"delta":{{"content":" tok"}},"logprobs":null,"finish_reason":null}}],"t":"#
    );
    let mut next = Instant::now();
    for _ in 0..n {
        if !pace.is_zero() {
            next += pace;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        if !chunk(w, &format!("{pre}{}}}\n\n", now_ns())) {
            return false;
        }
    }
    let fin = format!(
        r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1763800000,"model":"{model}","choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}"#
    );
    let usage = format!(
        r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1763800000,"model":"{model}","choices":[],"usage":{{"prompt_tokens":8,"completion_tokens":{n},"total_tokens":{}}}}}"#,
        n + 8
    );
    chunk(w, &format!("{fin}\n\n"))
        && chunk(w, &format!("{usage}\n\n"))
        && chunk(w, "data: [DONE]\n\n")
        && w.write_all(b"0\r\n\r\n").is_ok()
}

/// A frame about one of the jobs a bench sent, as the coordinator read it.
pub struct JobFrame {
    pub v: Value,
    /// When the coordinator read it.
    pub at: Instant,
    /// Which of the jobs (its index in `ids`).
    pub job: usize,
}

/// The next text frame about one of `ids`'s jobs (anything else is skipped); panics,
/// naming `what`, when the agent is silent for `wait`.
pub fn next_job_frame(
    conn: &crate::support::coordinator::Conn,
    ids: &[String],
    wait: Duration,
    what: &str,
) -> JobFrame {
    loop {
        let m = conn
            .recv(wait)
            .unwrap_or_else(|| panic!("agent went silent during the {what}"));
        let crate::support::coordinator::InboundKind::Text(text) = m.kind else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).expect("json frame");
        let Some(job) = v["job_id"]
            .as_str()
            .and_then(|j| ids.iter().position(|x| x == j))
        else {
            continue;
        };
        return JobFrame { v, at: m.at, job };
    }
}

/// The `"t":NANOS` stamps of the content events in `sse`.
pub fn stamps(sse: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let text = std::str::from_utf8(sse).unwrap_or("");
    for part in text.split("\"t\":").skip(1) {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(t) = digits.parse() {
            out.push(t);
        }
    }
    out
}

/// Read one streamed completion straight from the backend (no agent). Returns, per
/// content event, (written_ns, read_ns).
pub fn direct_stream(port: u16, events: u64, pace_us: u64) -> Vec<(u64, u64)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect backend");
    s.set_nodelay(true).ok();
    let body = format!(
        r#"{{"model":"m","stream":true,"max_tokens":{events},"bench_pace_us":{pace_us},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // Status line and headers.
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut out = Vec::with_capacity(events as usize);
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let mut data = vec![0u8; size + 2];
        r.read_exact(&mut data).unwrap();
        let at = now_ns();
        for t in stamps(&data[..size]) {
            out.push((t, at));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------

/// A `/proc/PID/status` field as a number (kB for Vm*, a count for Threads).
pub fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of the whole process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Context switches (voluntary, involuntary) summed over every thread of the process.
pub fn ctxt_switches(pid: u32) -> (u64, u64) {
    let mut v = 0;
    let mut n = 0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let text = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            for l in text.lines() {
                if let Some(x) = l.strip_prefix("voluntary_ctxt_switches:") {
                    v += x.trim().parse::<u64>().unwrap_or(0);
                } else if let Some(x) = l.strip_prefix("nonvoluntary_ctxt_switches:") {
                    n += x.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    (v, n)
}

/// Open file descriptors of the process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The p-th percentile (0..=100) of sorted `v`, nearest rank.
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A short description of this machine for the results table.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!("{cpu}, {cores} cores visible, Linux {kernel}")
}

/// The environment the service files (init/) give the agent: a glibc build keeps one
/// malloc arena and trims its heap above 64 KiB (musl's malloc ignores both).
pub const SERVICE_ENV: &[(&str, &str)] = &[
    ("MALLOC_ARENA_MAX", "1"),
    ("MALLOC_TRIM_THRESHOLD_", "65536"),
];

/// Drops `bin` from the page cache (GNU dd's `iflag=nocache`), so every agent starts as a
/// service does at boot: how much of a binary is resident then depends on the code it
/// runs, not on how the file came into the cache (a binary just written by the linker or
/// `cp` is cached whole, in large folios that newer kernels map whole on a fault).
pub fn start_cold(bin: &std::path::Path) {
    let dropped = std::process::Command::new("dd")
        .arg(format!("if={}", bin.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .is_ok_and(|s| s.success());
    if !dropped {
        eprintln!(
            "bench: could not drop {} from the page cache (dd iflag=nocache)",
            bin.display()
        );
    }
}
