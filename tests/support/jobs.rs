//! Job-level helpers for the job tests (tests/job_*.rs, tests/anthropic_jobs.rs): config
//! entries for fake backends, an agent that is authenticated and offers given models, job
//! frames, collecting each job's frames (chunks, then exactly one terminal frame), and
//! decoding the relayed SSE bytes.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::agent::{Agent, Setup};
use super::coordinator::Conn;
use super::fake_backend::{FakeBackend, Kind};

pub const S5: Duration = Duration::from_secs(5);
pub const S10: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------

/// The config `kind` string of a fake backend.
pub fn kind_str(k: Kind) -> &'static str {
    match k {
        Kind::LlamaCpp => "llamacpp",
        Kind::Ollama => "ollama",
        Kind::Vllm => "vllm",
        Kind::LmStudio => "lmstudio",
    }
}

/// A `backends[]` entry for `fb`.
pub fn backend_entry(fb: &FakeBackend) -> Value {
    json!({"kind": kind_str(fb.kind()), "url": fb.url()})
}

// ---------------------------------------------------------------------------------------
// A running, authenticated agent
// ---------------------------------------------------------------------------------------

/// An agent that completed its handshake and whose capabilities offer the wanted models.
/// Field order is drop order: the agent process is killed before the coordinator
/// connection and the setup (temp dir, coordinator) go away.
pub struct Running {
    pub agent: Agent,
    pub conn: Conn,
    /// The capabilities frame that first offered every wanted model.
    pub caps: Value,
    pub setup: Setup,
}

impl Running {
    /// Send one job frame and collect its outcome.
    pub fn run_job(&self, job: &Value) -> JobResult {
        run_job(&self.conn, job)
    }

    /// The latest capabilities for which `pred` holds: the ones `start_agent` saw, or a
    /// later re-send (routes settle as each backend's probe finishes). Panics after 10 s.
    pub fn caps_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if !pred(&self.caps) {
            self.caps = wait_caps(&self.conn, S10, what, pred);
        }
        self.caps.clone()
    }
}

/// Put `backends` in the config, start the agent (with extra environment variables),
/// authenticate it and wait for a capabilities frame that offers every model in `offered`.
pub fn start_agent(
    mut setup: Setup,
    backends: Vec<Value>,
    envs: &[(&str, &str)],
    offered: &[&str],
) -> Running {
    setup.set("/backends", Value::Array(backends));
    let path = setup.write_config();
    let agent = Agent::spawn(
        &setup.name,
        &[
            "--config",
            path.to_str().unwrap(),
            "--log-level",
            "debug",
            "run",
        ],
        envs,
        setup.dir.path(),
    );
    let conn = setup.coord.accept(S5);
    conn.authenticate(Some("prov-jobs"));
    let first = conn.expect_capabilities(S5).value;
    let caps = if offers_all(&first, offered) {
        first
    } else {
        wait_offer(&conn, offered, S10)
    };
    Running {
        agent,
        conn,
        caps,
        setup,
    }
}

/// The model ids a capabilities frame offers.
pub fn offered_ids(caps: &Value) -> Vec<String> {
    caps["models"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["model_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The capabilities entry for `model`, if offered.
pub fn offer<'a>(caps: &'a Value, model: &str) -> Option<&'a Value> {
    caps["models"]
        .as_array()?
        .iter()
        .find(|m| m["model_id"] == model)
}

fn offers_all(caps: &Value, models: &[&str]) -> bool {
    let ids = offered_ids(caps);
    models.iter().all(|m| ids.iter().any(|i| i == m))
}

/// The next capabilities frame that offers every model in `models` (earlier ones, and any
/// other frame, are skipped). Panics after `timeout`.
pub fn wait_offer(conn: &Conn, models: &[&str], timeout: Duration) -> Value {
    wait_caps(conn, timeout, &format!("offering {models:?}"), |c| {
        offers_all(c, models)
    })
}

/// The next capabilities frame for which `pred` holds. Panics after `timeout`.
pub fn wait_caps(
    conn: &Conn,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_type("capabilities", left) {
            Some(t) if pred(&t.value) => return t.value,
            Some(t) => seen.push(offered_ids(&t.value)),
            None => panic!(
                "no capabilities frame {what} within {timeout:?}; capabilities seen meanwhile \
                 offered: {seen:?}"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Job frames
// ---------------------------------------------------------------------------------------

/// A fresh lowercase hyphenated UUID (version 4 layout; unique within the test binary).
pub fn new_job_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let pid = u64::from(std::process::id());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (t >> 32) as u32,
        (t >> 16) as u16,
        (n & 0xfff) as u16,
        (pid & 0xfff) as u16,
        (t ^ (n << 24)) & 0xffff_ffff_ffff
    )
}

/// A small OpenAI chat-completions body (no `model`, no `stream`).
pub fn chat_request(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}], "max_tokens": 16})
}

/// A small Anthropic Messages body (no `stream`).
pub fn anthropic_request(text: &str) -> Value {
    json!({
        "max_tokens": 32,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": text}]
    })
}

/// An OpenAI `job` frame with the default deadline.
pub fn job(job_id: &str, model: &str, request: Value) -> Value {
    json!({"type": "job", "job_id": job_id, "model_id": model, "request": request,
           "format": "openai", "deadline_ms": 60000})
}

/// An Anthropic `job` frame with the default deadline.
pub fn anthropic_job(job_id: &str, model: &str, request: Value) -> Value {
    json!({"type": "job", "job_id": job_id, "model_id": model, "request": request,
           "format": "anthropic", "deadline_ms": 60000})
}

pub fn cancel(job_id: &str) -> Value {
    json!({"type": "job_cancel", "job_id": job_id})
}

// ---------------------------------------------------------------------------------------
// Job results
// ---------------------------------------------------------------------------------------

/// Everything the agent sent for one job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub job_id: String,
    /// Decoded `data` of each `job_chunk`, with the time it was read.
    pub chunks: Vec<(Instant, Vec<u8>)>,
    /// The `job_done` or `job_error` frame.
    pub terminal: Value,
    pub terminal_at: Instant,
}

impl JobResult {
    pub fn is_done(&self) -> bool {
        self.terminal["type"] == "job_done"
    }

    pub fn error_code(&self) -> Option<&str> {
        (self.terminal["type"] == "job_error")
            .then(|| self.terminal["error_code"].as_str())
            .flatten()
    }

    /// All chunk bytes, concatenated as the coordinator does.
    pub fn bytes(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|(_, b)| b.clone()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// The relayed SSE events.
    pub fn events(&self) -> Vec<SseEvent> {
        sse_events(&self.bytes())
    }

    /// Panics unless the job ended with `job_done`; returns that frame.
    pub fn expect_done(&self) -> &Value {
        assert!(
            self.is_done(),
            "job {} should have ended with job_done, got {} (after {} chunk(s): {:?})",
            self.job_id,
            self.terminal,
            self.chunks.len(),
            self.text()
        );
        &self.terminal
    }

    /// Panics unless the job ended with a `job_error` of `code`; returns that frame.
    pub fn expect_error(&self, code: &str) -> &Value {
        assert_eq!(
            self.error_code(),
            Some(code),
            "job {} should have ended with job_error {code}, got {} (after {} chunk(s): {:?})",
            self.job_id,
            self.terminal,
            self.chunks.len(),
            self.text()
        );
        let t = &self.terminal;
        assert!(
            t["message"].is_string(),
            "job_error needs a string message: {t}"
        );
        assert!(
            t["tokens_emitted"].is_u64(),
            "job_error needs an unsigned tokens_emitted: {t}"
        );
        t
    }

    /// Every chunk ends on an SSE event boundary (a blank line) and is not empty.
    pub fn assert_chunks_on_event_boundaries(&self) {
        for (i, (_, c)) in self.chunks.iter().enumerate() {
            assert!(!c.is_empty(), "job {}: chunk {i} is empty", self.job_id);
            assert!(
                c.ends_with(b"\n\n") || c.ends_with(b"\r\n\r\n") || c.ends_with(b"\r\r"),
                "job {}: chunk {i} does not end on an SSE event boundary: {:?}",
                self.job_id,
                String::from_utf8_lossy(c)
            );
        }
    }
}

/// The usage block of a `job_done`: (input, output), asserting both key styles agree.
pub fn done_tokens(done: &Value) -> (u64, u64) {
    let t = &done["tokens"];
    let get = |k: &str| {
        t[k].as_u64()
            .unwrap_or_else(|| panic!("job_done tokens.{k} missing or not a u64: {done}"))
    };
    let (input, output) = (get("input"), get("output"));
    assert_eq!(get("input_tokens"), input, "both key styles: {done}");
    assert_eq!(get("output_tokens"), output, "both key styles: {done}");
    assert!(
        done["duration_ms"]
            .as_u64()
            .is_some_and(|d| d <= u64::from(u32::MAX)),
        "job_done needs duration_ms as u32: {done}"
    );
    (input, output)
}

fn frame_job_id(v: &Value) -> Option<&str> {
    match v["type"].as_str()? {
        "job_chunk" | "job_done" | "job_error" => v["job_id"].as_str(),
        _ => None,
    }
}

/// Read frames until every job in `ids` has its terminal frame. Frames of other types
/// (capabilities, heartbeat) are skipped. Panics on a frame for a job not in `ids`, on a
/// frame after a job's terminal frame, on a bad `job_chunk`, or after `timeout`.
pub fn collect(conn: &Conn, ids: &[&str], timeout: Duration) -> HashMap<String, JobResult> {
    let deadline = Instant::now() + timeout;
    let mut chunks: HashMap<String, Vec<(Instant, Vec<u8>)>> = HashMap::new();
    let mut out: HashMap<String, JobResult> = HashMap::new();
    while out.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(t) = conn.recv_timed(left) else {
            let missing: Vec<&&str> = ids.iter().filter(|i| !out.contains_key(**i)).collect();
            panic!(
                "no terminal frame within {timeout:?} for job(s) {missing:?} (chunks so far: {:?}; \
                 connection ended: {:?})",
                missing
                    .iter()
                    .map(|i| chunks.get(**i).map_or(0, Vec::len))
                    .collect::<Vec<_>>(),
                conn.ended()
            );
        };
        let Some(id) = frame_job_id(&t.value) else {
            continue;
        };
        let id = id.to_string();
        assert!(
            ids.contains(&id.as_str()),
            "frame for a job that was not expected here ({id}): {}",
            t.value
        );
        assert!(
            !out.contains_key(&id),
            "frame for job {id} after its terminal frame: {}",
            t.value
        );
        match t.ty() {
            "job_chunk" => {
                let data = t.value["data"]
                    .as_str()
                    .unwrap_or_else(|| panic!("job_chunk without a string data: {}", t.value));
                let bytes = B64.decode(data).unwrap_or_else(|e| {
                    panic!("job_chunk data is not standard base64 ({e}): {}", t.value)
                });
                chunks.entry(id).or_default().push((t.at, bytes));
            }
            _ => {
                let r = JobResult {
                    chunks: chunks.remove(&id).unwrap_or_default(),
                    job_id: id.clone(),
                    terminal: t.value.clone(),
                    terminal_at: t.at,
                };
                out.insert(id, r);
            }
        }
    }
    out
}

/// Send one job frame and collect its outcome (10 s at most).
pub fn run_job(conn: &Conn, job: &Value) -> JobResult {
    let id = job["job_id"].as_str().expect("job frame with a job_id");
    conn.send_json(job);
    collect(conn, &[id], S10).remove(id).unwrap()
}

/// Read frames for `window`; panics if any of them belongs to `job_id`.
pub fn assert_no_frame_for(conn: &Conn, job_id: &str, window: Duration) {
    let deadline = Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match conn.recv_timed(left) {
            Some(t) if frame_job_id(&t.value) == Some(job_id) => {
                panic!(
                    "frame for job {job_id}, which must be silent now: {}",
                    t.value
                )
            }
            Some(_) => {}
            None => return,
        }
    }
}

// ---------------------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// `data` as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }
}

/// Split an SSE byte stream into events (lines `event:` and `data:`; comments and other
/// fields ignored; multi-line data joined with `\n`).
pub fn sse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim_start().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if event.is_some() || !data.is_empty() {
            out.push(SseEvent {
                event,
                data: data.join("\n"),
            });
        }
    }
    out
}

/// The assistant text of an OpenAI chat-completions stream.
pub fn openai_text(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}
