//! A fake inference backend for integration tests: a small HTTP/1.1 server on
//! 127.0.0.1 that answers the probe and streaming APIs of llama.cpp's
//! llama-server, Ollama, vLLM and LM Studio, with faults on demand.
//!
//! ```ignore
//! let fb = FakeBackend::start(Kind::Ollama, &["llama3.2:latest"]);
//! fb.set_reply(&["Hi", " there"], (12, 2));          // prompt, completion tokens
//! fb.set_stream_len(500, Duration::from_millis(10)); // a long stream, for cancel tests
//! // ... point the agent at fb.url(), cancel the job ...
//! assert!(fb.wait_client_closed(Duration::from_secs(2)).is_some());
//! assert_eq!(fb.requests()[0].body["stream"], true);
//! ```
//!
//! std only (plus serde_json). One thread accepts; each connection gets its own
//! thread, with keep-alive. Sockets use short read/write timeouts and the
//! server watches the socket while it waits between events, so it notices a
//! client that went away at once; every thread ends when the `FakeBackend` is
//! dropped (drop shuts the sockets down and joins the threads).
//!
//! Shapes follow what the real servers send: llama-server as captured from a
//! real one (`tests/real/NOTES.md`), the others from their public docs and
//! issue reports. Chunked SSE with one event per chunk; the usage chunk
//! (`choices: []`) comes only when `stream_options.include_usage` is true.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Which server the fake imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    LlamaCpp,
    Ollama,
    Vllm,
    LmStudio,
}

/// A misbehaviour. `set_fault` applies it to the inference endpoints
/// (`/v1/chat/completions`, `/v1/messages`); `set_probe_fault` to every other path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    None,
    /// Answer this status with this body (sent as `application/json`).
    Status(u16, String),
    /// Read the request, then send nothing until the client goes away.
    HangBeforeHeaders,
    /// Read the request, wait this long, then answer normally (a slow first byte).
    DelayHeaders(Duration),
    /// Send the headers and the first event, then nothing until the client goes away.
    HangMidStream,
    /// Send the headers and the first event, then close the socket without ending
    /// the chunked body (no `[DONE]`, no terminating chunk).
    CloseMidStream,
    /// Answer bytes that are not HTTP at all, then close.
    Garbage,
    /// A valid `200 text/event-stream` whose body is not SSE, then a normal end.
    GarbageSse,
    /// Headers, then one `data:` line that never ends (until the client goes away).
    EndlessLine,
    /// Send the response body one byte at a time with this pause between bytes.
    Trickle(Duration),
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path including any query string.
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, `Value::Null` when empty or not JSON.
    pub body: Value,
    pub raw_body: Vec<u8>,
}

impl RecordedRequest {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake does; changed at any time through the setters.
#[derive(Clone, Debug)]
struct Config {
    fault: Fault,
    probe_fault: Fault,
    messages_endpoint: bool,
    words: Vec<String>,
    usage: (u64, u64),
    stream_len: Option<(usize, Duration)>,
    context: Option<u32>,
    slots: u32,
    loading: bool,
    api_key: Option<String>,
}

struct Shared {
    kind: Kind,
    models: Vec<String>,
    addr: SocketAddr,
    cfg: Mutex<Config>,
    requests: Mutex<Vec<RecordedRequest>>,
    open_streams: AtomicUsize,
    /// Requests "somebody else" runs: extra busy llama.cpp slots and vLLM requests.
    foreign_busy: AtomicUsize,
    /// Ollama's loaded models and how often each was used (its `expires_at` moves with it).
    loaded: Mutex<Vec<(String, u64)>>,
    /// When a client went away while an inference response was unfinished.
    closes: Mutex<Closes>,
    closes_cv: Condvar,
    shutdown: AtomicBool,
    next_conn: AtomicU64,
    /// A clone of each live connection, so drop can shut it down.
    conns: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct Closes {
    at: Vec<Instant>,
    /// How many `wait_client_closed` has already returned.
    taken: usize,
}

/// A running fake backend. Dropping it stops every thread it started.
pub struct FakeBackend {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// Pauses shorter than this are slept (socket timeouts are too coarse).
const SLEEP_BELOW: Duration = Duration::from_millis(10);
/// Longest single blocking read while pausing, so the shutdown flag is seen.
const MAX_WAIT: Duration = Duration::from_millis(100);
const IO_TIMEOUT: Duration = Duration::from_millis(20);
const MAX_HEAD: usize = 64 * 1024;
const DEFAULT_CONTEXT: u32 = 4096;
const LMSTUDIO_MAX_CONTEXT: u32 = 131072;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeBackend {
    /// Listen on 127.0.0.1:0 and serve `models` as `kind` would.
    pub fn start(kind: Kind, models: &[&str]) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Self::serve(kind, models, listener)
    }

    /// Like [`FakeBackend::start`] on `addr`: a backend that was dropped (stopped) comes
    /// back where the agent knows it. Retried for a while, in case the port is not free
    /// again yet.
    pub fn start_on(kind: Kind, models: &[&str], addr: SocketAddr) -> FakeBackend {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => panic!("bind {addr} again: {e}"),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        Self::serve(kind, models, listener)
    }

    fn serve(kind: Kind, models: &[&str], listener: TcpListener) -> FakeBackend {
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            kind,
            models: models.iter().map(|m| m.to_string()).collect(),
            addr,
            cfg: Mutex::new(Config {
                fault: Fault::None,
                probe_fault: Fault::None,
                messages_endpoint: false,
                words: ["Hello", " from", " the", " fake", " backend", "."]
                    .iter()
                    .map(|w| w.to_string())
                    .collect(),
                usage: (11, 6),
                stream_len: None,
                context: Some(DEFAULT_CONTEXT),
                slots: 4,
                loading: false,
                api_key: None,
            }),
            requests: Mutex::new(Vec::new()),
            open_streams: AtomicUsize::new(0),
            foreign_busy: AtomicUsize::new(0),
            loaded: Mutex::new(Vec::new()),
            closes: Mutex::new(Closes::default()),
            closes_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let acceptor = thread::Builder::new()
            .name("fake-backend-accept".into())
            .spawn(move || accept_loop(listener, sh))
            .expect("spawn acceptor");
        FakeBackend {
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    pub fn kind(&self) -> Kind {
        self.shared.kind
    }

    /// Fault for the inference endpoints (chat completions, messages).
    pub fn set_fault(&self, f: Fault) {
        lock(&self.shared.cfg).fault = f;
    }

    /// Fault for every other endpoint (health, model lists, props, show...).
    pub fn set_probe_fault(&self, f: Fault) {
        lock(&self.shared.cfg).probe_fault = f;
    }

    /// Whether `POST /v1/messages` exists (default: off, answers 404).
    pub fn set_messages_endpoint(&self, on: bool) {
        lock(&self.shared.cfg).messages_endpoint = on;
    }

    /// What a completion streams: one SSE content event per word; `usage` is
    /// (prompt/input tokens, completion/output tokens) as reported in the stream.
    pub fn set_reply(&self, words: &[&str], usage: (u64, u64)) {
        let mut c = lock(&self.shared.cfg);
        c.words = words.iter().map(|w| w.to_string()).collect();
        c.usage = usage;
    }

    /// Stream `n_events` content events (cycling through the reply words) with
    /// `per_event_delay` before each one. Usage stays as set by `set_reply`.
    pub fn set_stream_len(&self, n_events: usize, per_event_delay: Duration) {
        lock(&self.shared.cfg).stream_len = Some((n_events, per_event_delay));
    }

    /// The context window every model reports (default 4096). `None` leaves the
    /// field out where the real server can: Ollama's `<arch>.context_length`,
    /// vLLM's `max_model_len`, LM Studio's `loaded_context_length` (the model is
    /// then listed as not loaded; `max_context_length` stays). llama.cpp always
    /// reports `n_ctx` (4096 when `None`).
    pub fn set_context_window(&self, n: Option<u32>) {
        lock(&self.shared.cfg).context = n;
    }

    /// llama.cpp: `total_slots` in /props and the length of /slots (default 4).
    pub fn set_slots(&self, n: u32) {
        lock(&self.shared.cfg).slots = n;
    }

    /// llama.cpp: while true, every path answers 503 "Loading model" (as the
    /// real server does until the model is loaded).
    pub fn set_loading(&self, on: bool) {
        lock(&self.shared.cfg).loading = on;
    }

    /// Require `Authorization: Bearer KEY` (or llama.cpp's `X-Api-Key: KEY`);
    /// others get 401. llama.cpp keeps /health public, as the real one does.
    pub fn set_api_key(&self, key: Option<&str>) {
        lock(&self.shared.cfg).api_key = key.map(str::to_string);
    }

    /// Load that is not the agent's: `n` more busy slots in llama.cpp's `/slots` and
    /// `n` more running requests in vLLM's `/metrics`, on top of the open streams.
    pub fn set_foreign_busy(&self, n: usize) {
        self.shared.foreign_busy.store(n, Ordering::SeqCst);
    }

    /// Ollama: a request for `model` that did not come through the agent; the model is
    /// loaded (if it was not) and its `expires_at` in `/api/ps` moves, as Ollama's does.
    pub fn touch_foreign(&self, model: &str) {
        touch(&self.shared, model);
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Requests to the inference endpoints only.
    pub fn inference_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| is_inference_path(path_only(&r.path)))
            .collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Inference responses in progress now (including hung ones).
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    /// Wait until a client has gone away while an inference response was still
    /// unfinished (streaming, hung before headers, ...): the next such close that
    /// an earlier call has not returned yet. Returns how long after this call the
    /// fake noticed it (zero if it already had), or `None` on timeout.
    /// Between events the fake notices a closed socket within a millisecond; while
    /// writing back to back, at the next write that fails.
    pub fn wait_client_closed(&self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut closes = lock(&self.shared.closes);
        loop {
            if let Some(&t) = closes.at.get(closes.taken) {
                closes.taken += 1;
                return Some(t.saturating_duration_since(start));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            closes = self
                .shared
                .closes_cv
                .wait_timeout(closes, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// When each early client disconnect was noticed (all of them).
    pub fn client_closes(&self) -> Vec<Instant> {
        lock(&self.shared.closes).at.clone()
    }

    /// Wait until no inference response is in progress; false on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.open_streams() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the acceptor with a throwaway connection.
        let _ = TcpStream::connect_timeout(&self.shared.addr, Duration::from_millis(200));
        for s in lock(&self.shared.conns).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    for stream in listener.incoming() {
        if sh.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = sh.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&sh.conns).insert(id, clone);
        }
        let sh2 = sh.clone();
        let spawned = thread::Builder::new()
            .name(format!("fake-backend-conn-{id}"))
            .spawn(move || {
                let mut conn = Conn::new(stream, sh2.clone());
                conn.serve();
                lock(&sh2.conns).remove(&id);
            });
        match spawned {
            Ok(h) => lock(&sh.threads).push(h),
            Err(_) => {
                lock(&sh.conns).remove(&id);
            }
        }
    }
}

/// Ollama loads a model on its first request and pushes its expiry on every one.
fn touch(sh: &Shared, model: &str) {
    let mut loaded = lock(&sh.loaded);
    match loaded.iter_mut().find(|(m, _)| m == model) {
        Some((_, n)) => *n += 1,
        None => loaded.push((model.to_string(), 1)),
    }
}

fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn is_inference_path(p: &str) -> bool {
    matches!(
        p,
        "/v1/chat/completions" | "/chat/completions" | "/v1/messages"
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Why a response stopped early.
#[derive(Debug)]
enum Gone {
    /// The client closed (or reset) the connection.
    Client,
    /// The fake is shutting down.
    Shutdown,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to do with the connection after a response.
enum After {
    KeepAlive,
    Close,
}

struct Conn {
    s: TcpStream,
    sh: Arc<Shared>,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
    /// Pause between single bytes of the body (Fault::Trickle).
    trickle: Option<Duration>,
    /// This response is counted in `open_streams`.
    counted: bool,
}

impl Conn {
    fn new(s: TcpStream, sh: Arc<Shared>) -> Conn {
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
        let _ = s.set_write_timeout(Some(IO_TIMEOUT));
        Conn {
            s,
            sh,
            buf: Vec::new(),
            trickle: None,
            counted: false,
        }
    }

    fn stopping(&self) -> bool {
        self.sh.shutdown.load(Ordering::SeqCst)
    }

    fn serve(&mut self) {
        while let Some(req) = self.read_request() {
            let close = req.close;
            match self.respond(&req) {
                Ok(After::KeepAlive) if !close => {}
                _ => break,
            }
        }
        let _ = self.s.shutdown(Shutdown::Both);
    }

    /// Read more bytes into `buf`. Ok(false) on EOF or shutdown.
    fn fill(&mut self) -> io::Result<bool> {
        let mut tmp = [0u8; 8192];
        loop {
            if self.stopping() {
                return Ok(false);
            }
            match self.s.read(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn read_request(&mut self) -> Option<Request> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD || !self.fill().ok()? {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split_whitespace();
        let method = first.next()?.to_string();
        let path = first.next()?.to_string();
        let version = first.next().unwrap_or("HTTP/1.1").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let hv = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let close = match hv("connection") {
            Some(c) if c.contains("close") => true,
            Some(c) if c.contains("keep-alive") => false,
            _ => version == "HTTP/1.0",
        };
        let body = if hv("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            self.read_chunked_body()?
        } else {
            let len: usize = hv("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while self.buf.len() < len {
                if !self.fill().ok()? {
                    return None;
                }
            }
            self.buf.drain(..len).collect()
        };
        Some(Request {
            method,
            path,
            headers,
            body,
            close,
        })
    }

    fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if self.buf.len() > MAX_HEAD || !self.fill().ok()? {
                return None;
            }
        }
    }

    fn read_chunked_body(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).ok()?;
            if size == 0 {
                // Trailers up to the empty line.
                while !self.read_line()?.is_empty() {}
                return Some(body);
            }
            while self.buf.len() < size + 2 {
                if !self.fill().ok()? {
                    return None;
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Write everything, retrying through write timeouts until shutdown.
    fn write_raw(&mut self, mut data: &[u8]) -> Result<(), Gone> {
        while !data.is_empty() {
            if self.stopping() {
                return Err(Gone::Shutdown);
            }
            match self.s.write(data) {
                Ok(0) => return Err(Gone::Client),
                Ok(n) => data = &data[n..],
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(Gone::Client),
            }
        }
        Ok(())
    }

    /// Write body bytes, one at a time under Fault::Trickle.
    fn write_body(&mut self, data: &[u8]) -> Result<(), Gone> {
        match self.trickle {
            None => self.write_raw(data),
            Some(d) => {
                for b in data {
                    self.write_raw(std::slice::from_ref(b))?;
                    self.pause(d)?;
                }
                Ok(())
            }
        }
    }

    /// Sleep `d` while watching the socket: Err as soon as the client closes.
    ///
    /// A blocked read wakes at once on EOF or reset, so the close is noticed
    /// within microseconds; drop shuts the socket down, which wakes it too.
    /// Linux rounds socket timeouts up to a scheduler tick, so the last few
    /// milliseconds are slept and followed by a non-blocking check.
    fn pause(&mut self, d: Duration) -> Result<(), Gone> {
        let deadline = Instant::now() + d;
        loop {
            if self.stopping() {
                return Err(Gone::Shutdown);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left < SLEEP_BELOW {
                thread::sleep(left);
                return self.check_open();
            }
            let step = (left - SLEEP_BELOW / 2).min(MAX_WAIT);
            let _ = self.s.set_read_timeout(Some(step));
            let r = self.read_some();
            let _ = self.s.set_read_timeout(Some(IO_TIMEOUT));
            r?;
        }
    }

    /// Non-blocking: Err if the client has closed the connection.
    fn check_open(&mut self) -> Result<(), Gone> {
        if self.s.set_nonblocking(true).is_err() {
            return Ok(());
        }
        let r = self.read_some();
        let _ = self.s.set_nonblocking(false);
        r
    }

    /// One read: EOF or an error other than a timeout means the client is gone;
    /// bytes (a pipelined request) are kept for later.
    fn read_some(&mut self) -> Result<(), Gone> {
        let mut tmp = [0u8; 4096];
        match self.s.read(&mut tmp) {
            Ok(0) => Err(Gone::Client),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(Gone::Client),
        }
    }

    /// Wait until the client goes away (or shutdown).
    fn hang(&mut self) -> Gone {
        loop {
            if let Err(g) = self.pause(Duration::from_millis(50)) {
                return g;
            }
        }
    }

    fn record(&self, req: &Request) {
        let body = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        lock(&self.sh.requests).push(RecordedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
            body,
            raw_body: req.body.clone(),
        });
    }

    fn server_headers(&self) -> &'static str {
        match self.sh.kind {
            Kind::LlamaCpp => "Server: llama.cpp\r\nAccess-Control-Allow-Origin: \r\n",
            Kind::Ollama => "",
            Kind::Vllm => "server: uvicorn\r\n",
            Kind::LmStudio => "X-Powered-By: Express\r\nAccess-Control-Allow-Origin: *\r\n",
        }
    }

    fn send_full(&mut self, status: u16, content_type: &str, body: &[u8]) -> Result<After, Gone> {
        let head = format!(
            "HTTP/1.1 {status} {}\r\n{}Content-Type: {content_type}\r\nContent-Length: {}\r\nKeep-Alive: timeout=5, max=100\r\n\r\n",
            status_text(status),
            self.server_headers(),
            body.len()
        );
        self.release();
        self.write_raw(head.as_bytes())?;
        self.write_body(body)?;
        Ok(After::KeepAlive)
    }

    fn send_json(&mut self, status: u16, v: &Value) -> Result<After, Gone> {
        let ct = match self.sh.kind {
            Kind::LlamaCpp => "application/json; charset=utf-8",
            _ => "application/json",
        };
        self.send_full(status, ct, v.to_string().as_bytes())
    }

    fn send_text(&mut self, status: u16, text: &str) -> Result<After, Gone> {
        self.send_full(status, "text/plain; charset=utf-8", text.as_bytes())
    }

    fn start_sse(&mut self) -> Result<(), Gone> {
        let ct = match self.sh.kind {
            Kind::Vllm => "text/event-stream; charset=utf-8",
            _ => "text/event-stream",
        };
        let extra = match self.sh.kind {
            Kind::LlamaCpp => "X-Accel-Buffering: no\r\n",
            _ => "Cache-Control: no-cache\r\n",
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\n{}{extra}Content-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n",
            self.server_headers()
        );
        self.write_raw(head.as_bytes())
    }

    /// One chunk of a chunked body (one SSE event per chunk, as real servers do).
    fn chunk(&mut self, data: &str) -> Result<(), Gone> {
        if data.is_empty() {
            return Ok(());
        }
        let framed = format!("{:x}\r\n{data}\r\n", data.len());
        self.write_body(framed.as_bytes())
    }

    fn end_chunks(&mut self) -> Result<(), Gone> {
        self.write_body(b"0\r\n\r\n")
    }

    fn respond(&mut self, req: &Request) -> Result<After, Gone> {
        self.record(req);
        let cfg = lock(&self.sh.cfg).clone();
        let path = path_only(&req.path).to_string();
        let inference = is_inference_path(&path) && req.method == "POST";

        if cfg.loading && self.sh.kind == Kind::LlamaCpp {
            return self.send_json(
                503,
                &json!({"error":{"message":"Loading model","type":"unavailable_error","code":503}}),
            );
        }
        if let Some(key) = &cfg.api_key {
            let public =
                self.sh.kind == Kind::LlamaCpp && (path == "/health" || path == "/v1/health");
            if !public && !authorized(req, key, self.sh.kind) {
                return self.unauthorized();
            }
        }

        let fault = if inference {
            cfg.fault.clone()
        } else {
            cfg.probe_fault.clone()
        };
        if inference {
            self.sh.open_streams.fetch_add(1, Ordering::SeqCst);
            self.counted = true;
        }
        let result = self.respond_with_fault(req, &path, &cfg, fault);
        if self.counted && matches!(result, Err(Gone::Client)) {
            lock(&self.sh.closes).at.push(Instant::now());
            self.sh.closes_cv.notify_all();
        }
        self.release();
        self.trickle = None;
        result
    }

    /// The response is complete from the fake's side: stop counting it as open.
    /// Called before its last bytes are written, so a client that has read the
    /// whole response always sees `open_streams()` without it.
    fn release(&mut self) {
        if self.counted {
            self.counted = false;
            self.sh.open_streams.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn unauthorized(&mut self) -> Result<After, Gone> {
        let body = match self.sh.kind {
            Kind::LlamaCpp => {
                json!({"error":{"message":"Invalid API Key","type":"authentication_error","code":401}})
            }
            Kind::Vllm => json!({"error":"Unauthorized"}),
            Kind::Ollama => json!({"error":"unauthorized"}),
            Kind::LmStudio => {
                json!({"error":{"message":"Invalid or missing API token","type":"invalid_request_error"}})
            }
        };
        self.send_json(401, &body)
    }

    fn respond_with_fault(
        &mut self,
        req: &Request,
        path: &str,
        cfg: &Config,
        fault: Fault,
    ) -> Result<After, Gone> {
        match fault {
            Fault::None => self.route(req, path, cfg, StreamFault::None),
            Fault::Status(code, body) => self.send_full(code, "application/json", body.as_bytes()),
            Fault::HangBeforeHeaders => Err(self.hang()),
            Fault::DelayHeaders(d) => {
                self.pause(d)?;
                self.route(req, path, cfg, StreamFault::None)
            }
            Fault::Garbage => {
                self.write_raw(b"\x00\xffthis is not HTTP\r\n\r\n{{{")?;
                Ok(After::Close)
            }
            Fault::GarbageSse => {
                self.start_sse()?;
                self.chunk("<html>not an event stream</html>\n\n")?;
                self.chunk("data: {not json\n\n")?;
                self.release();
                self.end_chunks()?;
                Ok(After::KeepAlive)
            }
            Fault::EndlessLine => {
                self.start_sse()?;
                self.chunk("data: {\"choices\":[{\"delta\":{\"content\":\"")?;
                let filler = "x".repeat(16 * 1024);
                loop {
                    self.chunk(&filler)?;
                    self.pause(Duration::from_millis(1))?;
                }
            }
            Fault::Trickle(d) => {
                self.trickle = Some(d);
                self.route(req, path, cfg, StreamFault::None)
            }
            Fault::HangMidStream => self.route(req, path, cfg, StreamFault::Hang),
            Fault::CloseMidStream => self.route(req, path, cfg, StreamFault::Close),
        }
    }

    fn route(
        &mut self,
        req: &Request,
        path: &str,
        cfg: &Config,
        sf: StreamFault,
    ) -> Result<After, Gone> {
        let m = req.method.as_str();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        match (m, path) {
            ("POST", "/v1/chat/completions") | ("POST", "/chat/completions") => {
                if let Some(err) = self.model_error(&body) {
                    return self.send_json(404, &err);
                }
                if self.sh.kind == Kind::Ollama {
                    if let Some(m) = body.get("model").and_then(Value::as_str) {
                        touch(&self.sh, m);
                    }
                }
                self.chat_completion(&body, cfg, sf)
            }
            ("POST", "/v1/messages") => {
                if !cfg.messages_endpoint {
                    return self.not_found(m, path);
                }
                if let Some(err) = self.model_error(&body) {
                    return self.send_json(404, &err);
                }
                self.anthropic_messages(&body, cfg, sf)
            }
            ("GET", _) | ("POST", _) => self.probe(m, path, &body, cfg),
            _ => self.not_found(m, path),
        }
    }

    /// The error a kind answers for a model it does not serve (llama.cpp
    /// ignores the field; it serves what it loaded).
    fn model_error(&self, body: &Value) -> Option<Value> {
        let model = body.get("model").and_then(Value::as_str)?;
        if self.sh.models.iter().any(|m| m == model) {
            return None;
        }
        match self.sh.kind {
            Kind::LlamaCpp => None,
            Kind::Ollama => Some(json!({"error":{
                "message": format!("model \"{model}\" not found, try pulling it first"),
                "type":"api_error","param":null,"code":null}})),
            Kind::Vllm => Some(json!({"object":"error",
                "message": format!("The model `{model}` does not exist."),
                "type":"NotFoundError","param":null,"code":404})),
            Kind::LmStudio => Some(json!({"error":{
                "message": format!("Model \"{model}\" not found. Please load the model first."),
                "type":"invalid_request_error","param":"model","code":"model_not_found"}})),
        }
    }

    fn not_found(&mut self, method: &str, path: &str) -> Result<After, Gone> {
        match self.sh.kind {
            Kind::LlamaCpp => self.send_json(
                404,
                &json!({"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}),
            ),
            Kind::Ollama => self.send_text(404, "404 page not found"),
            Kind::Vllm => self.send_json(404, &json!({"detail":"Not Found"})),
            Kind::LmStudio if path == "/v1/messages" => self.send_json(
                404,
                &json!({"error":format!("Unexpected endpoint or method. ({method} {path})")}),
            ),
            // LM Studio answers unknown routes with 200 and an error body.
            Kind::LmStudio => self.send_json(
                200,
                &json!({"error":format!("Unexpected endpoint or method. ({method} {path})")}),
            ),
        }
    }

    fn probe(&mut self, m: &str, path: &str, body: &Value, cfg: &Config) -> Result<After, Gone> {
        let created = now_secs();
        let ctx = cfg.context;
        let models = self.sh.models.clone();
        match (self.sh.kind, m, path) {
            // ---- llama.cpp llama-server ----
            (Kind::LlamaCpp, "GET", "/health") | (Kind::LlamaCpp, "GET", "/v1/health") => {
                self.send_json(200, &json!({"status":"ok"}))
            }
            (Kind::LlamaCpp, "GET", "/v1/models") | (Kind::LlamaCpp, "GET", "/models") => {
                let n_ctx_train = 4096;
                let n_ctx = ctx.unwrap_or(DEFAULT_CONTEXT);
                let data: Vec<Value> = models
                    .iter()
                    .map(|id| {
                        json!({"id":id,"aliases":[id],"tags":[],"object":"model",
                               "architecture":{"input_modalities":["text"],"output_modalities":["text"]},
                               "created":created,"owned_by":"llamacpp","meta":{"vocab_type":1,
                               "n_vocab":295,"n_ctx":n_ctx,"n_ctx_train":n_ctx_train,"n_embd":320,
                               "n_params":630080,"size":2520320,"ftype":"all F32"}})
                    })
                    .collect();
                let legacy: Vec<Value> = models
                    .iter()
                    .map(|id| {
                        json!({"name":id,"model":id,"modified_at":"","size":"","digest":"",
                               "type":"model","description":"","tags":[""],"capabilities":["completion"],
                               "parameters":"","details":{"parent_model":"","format":"gguf","family":"",
                               "families":[""],"parameter_size":"","quantization_level":""}})
                    })
                    .collect();
                self.send_json(200, &json!({"models":legacy,"object":"list","data":data}))
            }
            (Kind::LlamaCpp, "GET", "/props") => {
                let n_ctx = ctx.unwrap_or(DEFAULT_CONTEXT);
                let id = models.first().cloned().unwrap_or_default();
                self.send_json(
                    200,
                    &json!({
                        "default_generation_settings": {
                            "params": {"n_predict": -1, "temperature": 0.8, "top_k": 40,
                                       "top_p": 0.95, "stream": true},
                            "n_ctx": n_ctx
                        },
                        "total_slots": cfg.slots,
                        "model_alias": id,
                        "model_path": format!("/models/{id}.gguf"),
                        "modalities": {"vision": false, "audio": false},
                        "endpoint_slots": true,
                        "endpoint_props": false,
                        "endpoint_metrics": false,
                        "webui": false,
                        "chat_template": "",
                        "bos_token": "<s>",
                        "eos_token": "<|im_end|>",
                        "build_info": "b10434-fake",
                        "is_sleeping": false
                    }),
                )
            }
            (Kind::LlamaCpp, "GET", "/slots") => {
                let n_ctx = ctx.unwrap_or(DEFAULT_CONTEXT);
                let busy = self.sh.open_streams.load(Ordering::SeqCst)
                    + self.sh.foreign_busy.load(Ordering::SeqCst);
                let slots: Vec<Value> = (0..cfg.slots as usize)
                    .map(|i| json!({"id":i,"n_ctx":n_ctx,"speculative":false,"is_processing":i < busy}))
                    .collect();
                self.send_json(200, &Value::Array(slots))
            }

            // ---- Ollama ----
            (Kind::Ollama, "GET", "/") | (Kind::Ollama, "HEAD", "/") => {
                self.send_text(200, "Ollama is running")
            }
            (Kind::Ollama, "GET", "/api/version") => {
                self.send_json(200, &json!({"version":"0.12.6"}))
            }
            (Kind::Ollama, "GET", "/api/tags") => {
                let list: Vec<Value> = models
                    .iter()
                    .map(|id| {
                        json!({"name":id,"model":id,"modified_at":"2025-10-01T12:00:00.000000000Z",
                               "size":2019393189u64,
                               "digest":"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                               "details":{"parent_model":"","format":"gguf","family":"llama",
                                          "families":["llama"],"parameter_size":"3.2B",
                                          "quantization_level":"Q4_K_M"}})
                    })
                    .collect();
                self.send_json(200, &json!({"models":list}))
            }
            (Kind::Ollama, "POST", "/api/show") => {
                let want = body
                    .get("model")
                    .or_else(|| body.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !models.iter().any(|m| m == want) {
                    return self
                        .send_json(404, &json!({"error":format!("model '{want}' not found")}));
                }
                let mut info = json!({
                    "general.architecture":"llama",
                    "general.file_type":15,
                    "general.parameter_count":3212749888u64,
                    "general.quantization_version":2,
                    "llama.attention.head_count":24,
                    "llama.attention.head_count_kv":8,
                    "llama.attention.layer_norm_rms_epsilon":0.00001,
                    "llama.block_count":28,
                    "llama.embedding_length":3072,
                    "llama.feed_forward_length":8192,
                    "llama.rope.dimension_count":128,
                    "llama.rope.freq_base":500000,
                    "llama.vocab_size":128256,
                    "tokenizer.ggml.bos_token_id":128000,
                    "tokenizer.ggml.eos_token_id":128009,
                    "tokenizer.ggml.model":"gpt2"
                });
                if let Some(n) = ctx {
                    info["llama.context_length"] = json!(n);
                }
                self.send_json(
                    200,
                    &json!({
                        "license":"LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
                        "modelfile":format!("# Modelfile generated by \"ollama show\"\nFROM {want}\n"),
                        "parameters":"stop                           \"<|eot_id|>\"",
                        "template":"{{ .Prompt }}",
                        "details":{"parent_model":"","format":"gguf","family":"llama",
                                   "families":["llama"],"parameter_size":"3.2B",
                                   "quantization_level":"Q4_K_M"},
                        "model_info":info,
                        "tensors":[],
                        "capabilities":["completion","tools"],
                        "modified_at":"2025-10-01T12:00:00.000000000Z"
                    }),
                )
            }
            (Kind::Ollama, "GET", "/api/ps") => {
                let list: Vec<Value> = lock(&self.sh.loaded)
                    .iter()
                    .map(|(id, n)| {
                        json!({"name":id,"model":id,"size":5137025024u64,
                               "digest":"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                               "details":{"parent_model":"","format":"gguf","family":"llama",
                                          "families":["llama"],"parameter_size":"3.2B",
                                          "quantization_level":"Q4_K_M"},
                               "expires_at":format!("2030-01-01T00:{:02}:{:02}.{:09}+01:00", n / 3600 % 60, n / 60 % 60, n % 60),
                               "size_vram":5137025024u64,"context_length":4096})
                    })
                    .collect();
                self.send_json(200, &json!({"models":list}))
            }
            (Kind::Ollama, "GET", "/v1/models") => {
                let data: Vec<Value> = models
                    .iter()
                    .map(|id| json!({"id":id,"object":"model","created":created,"owned_by":"library"}))
                    .collect();
                self.send_json(200, &json!({"object":"list","data":data}))
            }

            // ---- vLLM ----
            (Kind::Vllm, "GET", "/health") => self.send_full(200, "application/json", b""),
            (Kind::Vllm, "GET", "/version") => self.send_json(200, &json!({"version":"0.11.0"})),
            (Kind::Vllm, "GET", "/v1/models") => {
                let data: Vec<Value> = models
                    .iter()
                    .map(|id| {
                        let mut m = json!({"id":id,"object":"model","created":created,"owned_by":"vllm",
                            "root":id,"parent":null,
                            "permission":[{"id":"modelperm-0a1b2c3d4e5f","object":"model_permission",
                                "created":created,"allow_create_engine":false,"allow_sampling":true,
                                "allow_logprobs":true,"allow_search_indices":false,"allow_view":true,
                                "allow_fine_tuning":false,"organization":"*","group":null,
                                "is_blocking":false}]});
                        if let Some(n) = ctx {
                            m["max_model_len"] = json!(n);
                        }
                        m
                    })
                    .collect();
                self.send_json(200, &json!({"object":"list","data":data}))
            }

            (Kind::Vllm, "GET", "/metrics") => {
                let running = self.sh.open_streams.load(Ordering::SeqCst)
                    + self.sh.foreign_busy.load(Ordering::SeqCst);
                let mut text = String::from(
                    "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
                     # TYPE vllm:num_requests_running gauge\n",
                );
                for m in &models {
                    // Every model reports; only the first carries the load.
                    let n = if Some(m) == models.first() {
                        running
                    } else {
                        0
                    };
                    text += &format!(
                        "vllm:num_requests_running{{engine=\"0\",model_name=\"{m}\"}} {n}.0\n"
                    );
                    text += &format!(
                        "vllm:num_requests_waiting{{engine=\"0\",model_name=\"{m}\"}} 0.0\n"
                    );
                }
                self.send_full(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.as_bytes(),
                )
            }

            // ---- LM Studio ----
            (Kind::LmStudio, "GET", "/v1/models") => {
                let data: Vec<Value> = models
                    .iter()
                    .map(|id| json!({"id":id,"object":"model","owned_by":"organization_owner"}))
                    .collect();
                self.send_json(200, &json!({"data":data,"object":"list"}))
            }
            (Kind::LmStudio, "GET", "/api/v0/models") => {
                let data: Vec<Value> = models
                    .iter()
                    .map(|id| {
                        let mut m = json!({"id":id,"object":"model","type":"llm",
                            "publisher":"lmstudio-community","arch":"llama",
                            "compatibility_type":"gguf","quantization":"Q4_K_M",
                            "state":"not-loaded","max_context_length":LMSTUDIO_MAX_CONTEXT});
                        if let Some(n) = ctx {
                            m["state"] = json!("loaded");
                            m["loaded_context_length"] = json!(n);
                        }
                        m
                    })
                    .collect();
                self.send_json(200, &json!({"object":"list","data":data}))
            }
            _ => self.not_found(m, path),
        }
    }

    /// Content events: (text, delay before it).
    fn events(cfg: &Config) -> Vec<(String, Duration)> {
        let words = if cfg.words.is_empty() {
            vec![String::new()]
        } else {
            cfg.words.clone()
        };
        match cfg.stream_len {
            None => words.into_iter().map(|w| (w, Duration::ZERO)).collect(),
            Some((n, d)) => (0..n)
                .map(|i| (words[i % words.len()].clone(), d))
                .collect(),
        }
    }

    fn model_name(&self, body: &Value) -> String {
        body.get("model")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| self.sh.models.first().cloned())
            .unwrap_or_else(|| "model".into())
    }

    fn chat_completion(
        &mut self,
        body: &Value,
        cfg: &Config,
        sf: StreamFault,
    ) -> Result<After, Gone> {
        let model = self.model_name(body);
        let created = now_secs();
        let id = format!("chatcmpl-fake{created}");
        let (prompt, completion) = cfg.usage;
        let usage = json!({"completion_tokens":completion,"prompt_tokens":prompt,
                           "total_tokens":prompt + completion});
        let events = Self::events(cfg);
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        if !stream {
            let text: String = events.iter().map(|(w, _)| w.as_str()).collect();
            return self.send_json(
                200,
                &json!({"id":id,"object":"chat.completion","created":created,"model":model,
                        "choices":[{"index":0,"message":{"role":"assistant","content":text},
                                    "logprobs":null,"finish_reason":"stop"}],
                        "usage":usage}),
            );
        }
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let kind = self.sh.kind;
        let chunk = |choices: Value, extra: Option<(&str, Value)>| -> Value {
            let mut v = match kind {
                // llama-server's fields (see tests/real/NOTES.md).
                Kind::LlamaCpp => json!({"choices":choices,"created":created,"id":id,"model":model,
                    "system_fingerprint":"b10434-fake","object":"chat.completion.chunk"}),
                Kind::Ollama => json!({"id":id,"object":"chat.completion.chunk","created":created,
                    "model":model,"system_fingerprint":"fp_ollama","choices":choices}),
                Kind::Vllm | Kind::LmStudio => json!({"id":id,"object":"chat.completion.chunk",
                    "created":created,"model":model,"system_fingerprint":"fp_fake","choices":choices}),
            };
            if let Some((k, val)) = extra {
                v[k] = val;
            }
            v
        };
        let data = |v: Value| format!("data: {v}\n\n");

        self.start_sse()?;
        let first = chunk(
            json!([{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}]),
            None,
        );
        self.chunk(&data(first))?;
        for (i, (word, delay)) in events.iter().enumerate() {
            if !delay.is_zero() {
                self.pause(*delay)?;
            }
            let ev = chunk(
                json!([{"index":0,"delta":{"content":word},"finish_reason":null}]),
                None,
            );
            self.chunk(&data(ev))?;
            if i == 0 {
                self.stream_fault(sf)?;
            }
        }
        if events.is_empty() {
            self.stream_fault(sf)?;
        }
        // All four send usage only when stream_options.include_usage is set, in an
        // extra chunk with empty choices after the finish chunk. llama-server adds
        // "timings": to that usage chunk, or to the finish chunk when usage is off.
        let timings = (kind == Kind::LlamaCpp).then(|| {
            json!({"cache_n":0,"prompt_n":prompt,"prompt_ms":0.9,"predicted_n":completion,
                   "predicted_ms":1.5})
        });
        let fin = json!([{"index":0,"delta":{},"finish_reason":"stop"}]);
        let fin_extra = match (&timings, include_usage) {
            (Some(t), false) => Some(("timings", t.clone())),
            _ => None,
        };
        self.chunk(&data(chunk(fin, fin_extra)))?;
        if include_usage {
            let mut u = chunk(json!([]), Some(("usage", usage)));
            if let Some(t) = timings {
                u["timings"] = t;
            }
            self.chunk(&data(u))?;
        }
        self.release();
        self.chunk("data: [DONE]\n\n")?;
        self.end_chunks()?;
        Ok(After::KeepAlive)
    }

    fn anthropic_messages(
        &mut self,
        body: &Value,
        cfg: &Config,
        sf: StreamFault,
    ) -> Result<After, Gone> {
        let model = self.model_name(body);
        let id = format!("msg_fake{}", now_secs());
        let (input, output) = cfg.usage;
        let events = Self::events(cfg);
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        if !stream {
            let text: String = events.iter().map(|(w, _)| w.as_str()).collect();
            return self.send_json(
                200,
                &json!({"id":id,"type":"message","role":"assistant","model":model,
                        "content":[{"type":"text","text":text}],"stop_reason":"end_turn",
                        "stop_sequence":null,"usage":{"input_tokens":input,"output_tokens":output}}),
            );
        }
        let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        self.start_sse()?;
        let start = ev(
            "message_start",
            json!({"type":"message_start","message":{"id":id,"type":"message","role":"assistant",
                "content":[],"model":model,"stop_reason":null,"stop_sequence":null,
                "usage":{"input_tokens":input,"output_tokens":0}}}),
        );
        self.chunk(&start)?;
        let block = ev(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        );
        self.chunk(&block)?;
        for (i, (word, delay)) in events.iter().enumerate() {
            if !delay.is_zero() {
                self.pause(*delay)?;
            }
            let d = ev(
                "content_block_delta",
                json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":word}}),
            );
            self.chunk(&d)?;
            if i == 0 {
                self.stream_fault(sf)?;
            }
        }
        if events.is_empty() {
            self.stream_fault(sf)?;
        }
        let stop = ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        );
        self.chunk(&stop)?;
        let delta = ev(
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
                   "usage":{"output_tokens":output}}),
        );
        self.chunk(&delta)?;
        self.release();
        self.chunk(&ev("message_stop", json!({"type":"message_stop"})))?;
        self.end_chunks()?;
        Ok(After::KeepAlive)
    }

    /// Apply a mid-stream fault after the first content event.
    fn stream_fault(&mut self, sf: StreamFault) -> Result<(), Gone> {
        match sf {
            StreamFault::None => Ok(()),
            StreamFault::Hang => Err(self.hang()),
            StreamFault::Close => {
                let _ = self.s.shutdown(Shutdown::Both);
                // Not the client's doing: report it as our own shutdown of the stream.
                Err(Gone::Shutdown)
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum StreamFault {
    None,
    Hang,
    Close,
}

fn authorized(req: &Request, key: &str, kind: Kind) -> bool {
    let bearer = req
        .header("authorization")
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v));
    let x_api = if kind == Kind::LlamaCpp {
        req.header("x-api-key")
    } else {
        None
    };
    bearer == Some(key) || x_api == Some(key)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
