//! A fake Use Pod coordinator: a WebSocket server on 127.0.0.1 (TLS through the test CA,
//! or plain `ws://`). Each accepted connection is handed to the test as a [`Conn`], which
//! a background thread keeps reading (answering and counting the agent's pings) while the
//! test sends frames, closes, freezes or drops it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError};
use serde_json::{json, Value};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Bytes, Message, WebSocket};

use super::tls::TestCa;

/// How long the per-connection thread blocks in one read before it looks at commands.
const POLL: Duration = Duration::from_millis(15);
/// Bound on the TLS + WebSocket upgrade of one accepted connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one blocking write (a frozen agent must not hang the harness forever).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Coordinator
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    tcp_accepts: Mutex<Vec<Instant>>,
    handshake_failures: Mutex<Vec<String>>,
    next_id: AtomicUsize,
}

pub struct Coordinator {
    port: u16,
    tls: bool,
    conns: Receiver<Conn>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Coordinator {
    /// A `wss://` coordinator whose certificate is signed by `ca`.
    pub fn start_tls(ca: &TestCa) -> Coordinator {
        Coordinator::start(Some(ca.server_config()))
    }

    /// A plain `ws://` coordinator on 127.0.0.1.
    pub fn start_plain() -> Coordinator {
        Coordinator::start(None)
    }

    /// A plain `ws://` coordinator on 127.0.0.1:`port`: one that comes back where an
    /// earlier one (dropped) was.
    pub fn start_plain_on(port: u16) -> Coordinator {
        Coordinator::start_on(port, None)
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Coordinator {
        Coordinator::start_on(0, tls)
    }

    fn start_on(port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Coordinator {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind coordinator");
        let port = listener.local_addr().expect("local addr").port();
        let (tx, rx) = unbounded();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let is_tls = tls.is_some();
        let thread = {
            let stats = stats.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("coordinator-{port}"))
                .spawn(move || accept_loop(listener, tls, tx, stats, stop))
                .expect("spawn coordinator")
        };
        Coordinator {
            port,
            tls: is_tls,
            conns: rx,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `wss://localhost:PORT/provider/connect` (TLS) or `ws://127.0.0.1:PORT/provider/connect`.
    pub fn url(&self) -> String {
        if self.tls {
            format!("wss://localhost:{}/provider/connect", self.port)
        } else {
            format!("ws://127.0.0.1:{}/provider/connect", self.port)
        }
    }

    /// The next connection that completed TLS and the WebSocket upgrade. Panics after
    /// `timeout` with the handshake failures seen so far.
    pub fn accept(&self, timeout: Duration) -> Conn {
        match self.try_accept(timeout) {
            Some(c) => c,
            None => panic!(
                "coordinator: no WebSocket connection within {:?} (TCP accepts so far: {}, \
                 failed handshakes: {:?})",
                timeout,
                self.tcp_accepts(),
                self.handshake_failures()
            ),
        }
    }

    pub fn try_accept(&self, timeout: Duration) -> Option<Conn> {
        self.conns.recv_timeout(timeout).ok()
    }

    /// How many TCP connections were accepted (whether or not their handshake worked).
    pub fn tcp_accepts(&self) -> usize {
        self.stats.tcp_accepts.lock().unwrap().len()
    }

    pub fn tcp_accept_times(&self) -> Vec<Instant> {
        self.stats.tcp_accepts.lock().unwrap().clone()
    }

    /// Errors of connections whose TLS or WebSocket handshake failed.
    pub fn handshake_failures(&self) -> Vec<String> {
        self.stats.handshake_failures.lock().unwrap().clone()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblock accept().
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    tx: Sender<Conn>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    for tcp in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(tcp) = tcp else { continue };
        let accepted_at = Instant::now();
        stats.tcp_accepts.lock().unwrap().push(accepted_at);
        let tls = tls.clone();
        let tx = tx.clone();
        let stats = stats.clone();
        std::thread::spawn(move || {
            let id = stats.next_id.fetch_add(1, Ordering::SeqCst);
            match handshake(tcp, tls) {
                Ok((ws, raw, path, user_agent)) => {
                    let conn = Conn::spawn(id, accepted_at, ws, raw, path, user_agent);
                    let _ = tx.send(conn);
                }
                Err(e) => stats.handshake_failures.lock().unwrap().push(e),
            }
        });
    }
}

type Handshaken = (WebSocket<Stream>, TcpStream, String, Option<String>);

// tungstenite's callback signature fixes the (large) error type.
#[allow(clippy::result_large_err)]
fn handshake(tcp: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) -> Result<Handshaken, String> {
    tcp.set_nodelay(true).ok();
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).ok();
    tcp.set_write_timeout(Some(WRITE_TIMEOUT)).ok();
    let raw = tcp.try_clone().map_err(|e| format!("clone: {e}"))?;
    let stream = match tls {
        Some(cfg) => {
            let sc = rustls::ServerConnection::new(cfg).map_err(|e| format!("tls: {e}"))?;
            Stream::Tls(Box::new(rustls::StreamOwned::new(sc, tcp)))
        }
        None => Stream::Plain(tcp),
    };
    let seen: Arc<Mutex<(String, Option<String>)>> = Arc::default();
    let seen2 = seen.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let ua = req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        *seen2.lock().unwrap() = (req.uri().path().to_string(), ua);
        Ok(resp)
    };
    // The harness must be able to receive what the agent sends and send what tests ask
    // for; its own read limits are generous.
    let config = WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let ws = tungstenite::accept_hdr_with_config(stream, callback, Some(config))
        .map_err(|e| format!("handshake: {e}"))?;
    raw.set_read_timeout(Some(POLL)).ok();
    let (path, ua) = seen.lock().unwrap().clone();
    Ok((ws, raw, path, ua))
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    /// End TLS politely (close_notify) before the TCP close, as a real server does.
    fn close_notify(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Conn
// ---------------------------------------------------------------------------------------

/// A frame the agent sent, with the moment the harness read it.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub at: Instant,
    pub kind: InboundKind,
}

#[derive(Debug, Clone)]
pub enum InboundKind {
    Text(String),
    Binary(Vec<u8>),
}

/// A JSON message from the agent and when it was read.
#[derive(Debug, Clone)]
pub struct Timed {
    pub value: Value,
    pub at: Instant,
}

impl Timed {
    pub fn ty(&self) -> &str {
        self.value.get("type").and_then(Value::as_str).unwrap_or("")
    }
}

/// How a connection ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub at: Instant,
    pub reason: String,
}

/// What the agent's `auth_response` held (already verified by [`Conn::authenticate`]).
#[derive(Debug, Clone)]
pub struct AuthResponse {
    pub raw: Value,
    pub at: Instant,
    pub nonce: Vec<u8>,
    pub pubkey_b64: String,
    pub pubkey: [u8; 32],
    pub signature_b64: String,
    pub agent_version: String,
    /// `None` when the field is absent or null.
    pub enrollment_code: Option<String>,
    /// When `auth_ok` was written to the socket.
    pub auth_ok_at: Instant,
}

#[derive(Default)]
struct ConnState {
    inbox: VecDeque<Inbound>,
    pings: Vec<Instant>,
    pongs: Vec<Vec<u8>>,
    /// The first Close frame the agent sent (`Some(None)` = Close without code).
    peer_close: Option<Option<(u16, String)>>,
    peer_close_at: Option<Instant>,
    /// We sent a Close and the agent answered it with a Close.
    close_acknowledged: bool,
    we_closed_at: Option<Instant>,
    ended: Option<Ended>,
    write_errors: Vec<String>,
}

struct Shared {
    state: Mutex<ConnState>,
    cv: Condvar,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut ConnState)) {
        let mut st = self.state.lock().unwrap();
        f(&mut st);
        self.cv.notify_all();
    }
}

enum Cmd {
    Send(Message, Sender<Instant>),
    Close(Option<CloseFrame>, Sender<Instant>),
    DropTcp(Sender<Instant>),
    StopReading(Sender<Instant>),
}

/// One accepted, upgraded WebSocket connection from the agent.
pub struct Conn {
    pub id: usize,
    /// When the TCP connection was accepted.
    pub accepted_at: Instant,
    /// Path of the upgrade request (`/provider/connect`).
    pub path: String,
    pub user_agent: Option<String>,
    cmd: Sender<Cmd>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Conn {
    fn spawn(
        id: usize,
        accepted_at: Instant,
        ws: WebSocket<Stream>,
        raw: TcpStream,
        path: String,
        user_agent: Option<String>,
    ) -> Conn {
        let shared = Arc::new(Shared {
            state: Mutex::new(ConnState::default()),
            cv: Condvar::new(),
        });
        let (tx, rx) = unbounded();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("conn-{id}"))
                .spawn(move || conn_loop(ws, raw, rx, shared))
                .expect("spawn conn thread")
        };
        Conn {
            id,
            accepted_at,
            path,
            user_agent,
            cmd: tx,
            shared,
            thread: Some(thread),
        }
    }

    fn command(&self, make: impl FnOnce(Sender<Instant>) -> Cmd) -> Instant {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.cmd.send(make(tx)).is_err() {
            return Instant::now();
        }
        // Writes are bounded by WRITE_TIMEOUT per syscall; a huge frame takes longer.
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| Instant::now())
    }

    // -- sending --------------------------------------------------------------------------

    /// Send one text frame holding `v`; returns when it was written.
    pub fn send_json(&self, v: &Value) -> Instant {
        self.send_text(&v.to_string())
    }

    pub fn send_text(&self, raw: &str) -> Instant {
        let msg = Message::text(raw.to_string());
        self.command(|tx| Cmd::Send(msg, tx))
    }

    pub fn send_binary(&self, data: &[u8]) -> Instant {
        let msg = Message::binary(data.to_vec());
        self.command(|tx| Cmd::Send(msg, tx))
    }

    pub fn send_ping(&self, payload: &[u8]) -> Instant {
        let msg = Message::Ping(Bytes::from(payload.to_vec()));
        self.command(|tx| Cmd::Send(msg, tx))
    }

    /// One text message of `total` bytes (a JSON object padded with spaces... inside a
    /// string) sent as fragments of at most `fragment` bytes each.
    pub fn send_fragmented_text(&self, text: &str, fragment: usize) -> Instant {
        let bytes = text.as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(fragment.max(1)).collect();
        let n = chunks.len();
        let mut last = Instant::now();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Data(OpData::Text)
            } else {
                OpCode::Data(OpData::Continue)
            };
            let frame = Frame::message(Bytes::from(chunk.to_vec()), opcode, i + 1 == n);
            last = self.command(|tx| Cmd::Send(Message::Frame(frame), tx));
            if self.ended().is_some() {
                break;
            }
        }
        last
    }

    /// Start the closing handshake with `code` and `reason`.
    pub fn send_close(&self, code: u16, reason: &str) -> Instant {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        self.command(|tx| Cmd::Close(Some(frame), tx))
    }

    /// A Close frame with no code and no reason.
    pub fn send_close_bare(&self) -> Instant {
        self.command(|tx| Cmd::Close(None, tx))
    }

    /// Close the TCP connection without a Close frame (and without TLS close_notify).
    pub fn drop_tcp(&self) -> Instant {
        self.command(Cmd::DropTcp)
    }

    /// Freeze: stop reading the socket (pings go unanswered, nothing is sent) while the
    /// TCP connection stays open, like a half-open link.
    pub fn stop_reading(&self) -> Instant {
        self.command(Cmd::StopReading)
    }

    // -- receiving ------------------------------------------------------------------------

    /// The next data frame the agent sent, or `None` after `timeout` or once the
    /// connection ended with nothing left to read.
    pub fn recv(&self, timeout: Duration) -> Option<Inbound> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if let Some(m) = st.inbox.pop_front() {
                return Some(m);
            }
            if st.ended.is_some() {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self.shared.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// The next text frame, parsed as JSON, with its receive time. Panics if the agent
    /// sends a binary frame or a text frame that is not JSON (both break the protocol).
    pub fn recv_timed(&self, timeout: Duration) -> Option<Timed> {
        let m = self.recv(timeout)?;
        match m.kind {
            InboundKind::Text(t) => match serde_json::from_str::<Value>(&t) {
                Ok(value) => Some(Timed { value, at: m.at }),
                Err(e) => panic!("agent sent a text frame that is not JSON ({e}): {t:?}"),
            },
            InboundKind::Binary(b) => panic!(
                "agent sent a binary frame ({} bytes); every message must be a text frame",
                b.len()
            ),
        }
    }

    pub fn recv_json(&self, timeout: Duration) -> Option<Value> {
        self.recv_timed(timeout).map(|t| t.value)
    }

    /// The next JSON message; panics with `what` if none arrives in time.
    pub fn expect_json(&self, timeout: Duration, what: &str) -> Timed {
        match self.recv_timed(timeout) {
            Some(t) => t,
            None => panic!(
                "conn {}: expected {what} within {timeout:?}, got nothing (ended: {:?})",
                self.id,
                self.ended()
            ),
        }
    }

    /// The next message of type `ty`, skipping messages of other types. `None` on timeout.
    pub fn recv_type(&self, ty: &str, timeout: Duration) -> Option<Timed> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let t = self.recv_timed(left)?;
            if t.ty() == ty {
                return Some(t);
            }
        }
    }

    /// Messages already received and not yet taken (does not wait).
    pub fn pending(&self) -> usize {
        self.shared.state.lock().unwrap().inbox.len()
    }

    /// Pings the agent sent on this connection (each one was answered while reading).
    pub fn pings_seen(&self) -> usize {
        self.shared.state.lock().unwrap().pings.len()
    }

    pub fn ping_times(&self) -> Vec<Instant> {
        self.shared.state.lock().unwrap().pings.clone()
    }

    /// Payloads of pongs the agent sent.
    pub fn pongs_seen(&self) -> Vec<Vec<u8>> {
        self.shared.state.lock().unwrap().pongs.clone()
    }

    pub fn wait_pong(&self, payload: &[u8], timeout: Duration) -> bool {
        self.wait_state(timeout, |st| st.pongs.iter().any(|p| p == payload))
    }

    // -- closing --------------------------------------------------------------------------

    /// Wait until the connection is over: the agent completed the closing handshake (or
    /// started one that the harness answered) or closed the TCP connection.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        self.wait_state(timeout, |st| st.ended.is_some())
    }

    pub fn ended(&self) -> Option<Ended> {
        self.shared.state.lock().unwrap().ended.clone()
    }

    /// True when the harness sent a Close and the agent answered it with a Close frame.
    pub fn close_acknowledged(&self) -> bool {
        self.shared.state.lock().unwrap().close_acknowledged
    }

    /// The Close frame the agent sent, if any: `Some(Some((code, reason)))`, or
    /// `Some(None)` for a Close without a code.
    pub fn peer_close(&self) -> Option<Option<(u16, String)>> {
        self.shared.state.lock().unwrap().peer_close.clone()
    }

    pub fn peer_close_at(&self) -> Option<Instant> {
        self.shared.state.lock().unwrap().peer_close_at
    }

    pub fn write_errors(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().write_errors.clone()
    }

    fn wait_state(&self, timeout: Duration, pred: impl Fn(&ConnState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if pred(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.shared.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    // -- the handshake, coordinator side --------------------------------------------------

    /// Send `auth_challenge` with a fresh random 32-byte nonce; returns the raw nonce.
    pub fn challenge(&self) -> Vec<u8> {
        let nonce = ed25519_compact::Seed::generate().to_vec();
        self.send_json(&json!({"type": "auth_challenge", "nonce": B64.encode(&nonce)}));
        nonce
    }

    /// Challenge, receive and verify `auth_response` (shape, base64 lengths, ed25519
    /// signature over the raw nonce bytes), without answering it.
    pub fn challenge_and_verify(&self) -> AuthResponse {
        let nonce = self.challenge();
        let resp = self.expect_json(Duration::from_secs(5), "auth_response");
        verify_auth_response(&resp.value, &nonce, resp.at)
    }

    /// The whole handshake: challenge, verified `auth_response`, then `auth_ok` (with
    /// `provider_id` when given).
    pub fn authenticate(&self, provider_id: Option<&str>) -> AuthResponse {
        let mut auth = self.challenge_and_verify();
        let ok = match provider_id {
            Some(p) => json!({"type": "auth_ok", "provider_id": p}),
            None => json!({"type": "auth_ok"}),
        };
        auth.auth_ok_at = self.send_json(&ok);
        auth
    }

    /// Challenge, verify the response, then answer `auth_failed`.
    pub fn reject(&self, reason: &str) -> AuthResponse {
        let mut auth = self.challenge_and_verify();
        auth.auth_ok_at = self.send_json(&json!({"type": "auth_failed", "reason": reason}));
        auth
    }

    /// The first message after `auth_ok`, which must be `capabilities`.
    pub fn expect_capabilities(&self, timeout: Duration) -> Timed {
        let t = self.expect_json(timeout, "capabilities");
        assert_eq!(
            t.ty(),
            "capabilities",
            "the first message after auth_ok must be capabilities, got {}",
            t.value
        );
        t
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Closing the command channel ends the thread, which drops the socket.
        let (tx, _) = unbounded();
        self.cmd = tx;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Check an `auth_response` the way the coordinator does; panics with the reason.
pub fn verify_auth_response(v: &Value, nonce: &[u8], at: Instant) -> AuthResponse {
    assert_eq!(
        v.get("type").and_then(Value::as_str),
        Some("auth_response"),
        "expected auth_response, got {v}"
    );
    let field = |k: &str| -> String {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("auth_response: `{k}` missing or not a string: {v}"))
            .to_string()
    };
    let pubkey_b64 = field("pubkey");
    let signature_b64 = field("signature");
    let agent_version = field("agent_version");
    assert_eq!(
        pubkey_b64.len(),
        44,
        "pubkey must be standard padded base64 of 32 bytes (44 chars): {pubkey_b64:?}"
    );
    assert_eq!(
        signature_b64.len(),
        88,
        "signature must be standard padded base64 of 64 bytes (88 chars): {signature_b64:?}"
    );
    let pk_bytes = B64
        .decode(&pubkey_b64)
        .unwrap_or_else(|e| panic!("pubkey is not standard base64 ({e}): {pubkey_b64:?}"));
    let sig_bytes = B64
        .decode(&signature_b64)
        .unwrap_or_else(|e| panic!("signature is not standard base64 ({e}): {signature_b64:?}"));
    assert_eq!(pk_bytes.len(), 32, "pubkey must decode to 32 bytes");
    assert_eq!(sig_bytes.len(), 64, "signature must decode to 64 bytes");
    let pk = ed25519_compact::PublicKey::from_slice(&pk_bytes).expect("pubkey");
    let sig = ed25519_compact::Signature::from_slice(&sig_bytes).expect("signature");
    if let Err(e) = pk.verify(nonce, &sig) {
        let over_b64 = pk.verify(B64.encode(nonce), &sig).is_ok();
        panic!(
            "auth_response signature does not verify over the raw nonce bytes ({e}); \
             verifies over the base64 text instead: {over_b64}"
        );
    }
    let enrollment_code = match v.get("enrollment_code") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => panic!("enrollment_code must be a string when present: {other}"),
    };
    let mut pubkey = [0u8; 32];
    pubkey.copy_from_slice(&pk_bytes);
    AuthResponse {
        raw: v.clone(),
        at,
        nonce: nonce.to_vec(),
        pubkey_b64,
        pubkey,
        signature_b64,
        agent_version,
        enrollment_code,
        auth_ok_at: at,
    }
}

// ---------------------------------------------------------------------------------------
// The per-connection thread
// ---------------------------------------------------------------------------------------

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

fn conn_loop(mut ws: WebSocket<Stream>, raw: TcpStream, rx: Receiver<Cmd>, shared: Arc<Shared>) {
    let end = |reason: String| {
        shared.update(|st| {
            if st.ended.is_none() {
                st.ended = Some(Ended {
                    at: Instant::now(),
                    reason,
                });
            }
        })
    };
    let mut frozen = false;
    let mut finished = false;
    loop {
        // Commands first, in order.
        loop {
            let cmd = match rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = raw.shutdown(Shutdown::Both);
                    return;
                }
            };
            match cmd {
                Cmd::Send(msg, done) => {
                    if !finished && !frozen {
                        if let Err(e) = ws.send(msg) {
                            if !is_timeout(&e) {
                                let s = format!("write: {e}");
                                shared.update(|st| st.write_errors.push(s.clone()));
                                end(s);
                                finished = true;
                            }
                        }
                    }
                    let _ = done.send(Instant::now());
                }
                Cmd::Close(frame, done) => {
                    if !finished && !frozen {
                        let r = ws.close(frame);
                        shared.update(|st| st.we_closed_at = Some(Instant::now()));
                        if let Err(e) = r {
                            if !is_timeout(&e) {
                                let s = format!("close: {e}");
                                shared.update(|st| st.write_errors.push(s.clone()));
                                end(s);
                                finished = true;
                            }
                        }
                    }
                    let _ = done.send(Instant::now());
                }
                Cmd::DropTcp(done) => {
                    let _ = raw.shutdown(Shutdown::Both);
                    end("harness dropped the TCP connection".into());
                    finished = true;
                    let _ = done.send(Instant::now());
                }
                Cmd::StopReading(done) => {
                    frozen = true;
                    let _ = done.send(Instant::now());
                }
            }
        }

        if finished || frozen {
            // Nothing more to read: keep the socket as it is until told otherwise.
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Cmd::DropTcp(done)) => {
                    let _ = raw.shutdown(Shutdown::Both);
                    end("harness dropped the TCP connection".into());
                    finished = true;
                    let _ = done.send(Instant::now());
                }
                Ok(Cmd::Send(_, done)) | Ok(Cmd::Close(_, done)) | Ok(Cmd::StopReading(done)) => {
                    let _ = done.send(Instant::now());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = raw.shutdown(Shutdown::Both);
                    return;
                }
            }
            continue;
        }

        match ws.read() {
            Ok(Message::Text(t)) => shared.update(|st| {
                st.inbox.push_back(Inbound {
                    at: Instant::now(),
                    kind: InboundKind::Text(t.to_string()),
                })
            }),
            Ok(Message::Binary(b)) => shared.update(|st| {
                st.inbox.push_back(Inbound {
                    at: Instant::now(),
                    kind: InboundKind::Binary(b.to_vec()),
                })
            }),
            Ok(Message::Ping(_)) => shared.update(|st| st.pings.push(Instant::now())),
            Ok(Message::Pong(p)) => shared.update(|st| st.pongs.push(p.to_vec())),
            Ok(Message::Close(frame)) => {
                let we_closed = shared.state.lock().unwrap().we_closed_at.is_some();
                let frame = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                shared.update(|st| {
                    if st.peer_close.is_none() {
                        st.peer_close = Some(frame);
                        st.peer_close_at = Some(Instant::now());
                    }
                    if we_closed {
                        st.close_acknowledged = true;
                    }
                });
                // Keep reading: tungstenite sends our reply (if the agent started it) and
                // then reports ConnectionClosed.
            }
            Ok(Message::Frame(_)) => {}
            Err(e) if is_timeout(&e) => {}
            Err(tungstenite::Error::ConnectionClosed) => {
                let _ = ws.flush();
                ws.get_mut().close_notify();
                let _ = raw.shutdown(Shutdown::Both);
                end("closing handshake completed".into());
                finished = true;
            }
            Err(e) => {
                let _ = raw.shutdown(Shutdown::Both);
                end(format!("read: {e}"));
                finished = true;
            }
        }
    }
}
