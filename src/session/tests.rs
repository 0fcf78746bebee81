//! The session past the dial, over an in-memory socket pair: the agent's end is a
//! [`Mem`] (a Unix socket pair, no network, no TLS), the coordinator's a tungstenite
//! server WebSocket driven by hand. Jobs, offer and status are fakes that record
//! what the session told them. Every read has a timeout, so a broken session fails
//! these tests instead of hanging them.

use super::*;
use crate::config::{Config, Overrides};
use crate::identity::Identity;
use crate::protocol::{HeartbeatStats, JobRequest};
use base64::Engine as _;
use crossbeam_channel::Sender;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use tungstenite::protocol::Role;

const LIMIT: Duration = Duration::from_secs(10);

/// One end of an in-memory connection, with writer handles that a seal stops.
struct Mem {
    sock: UnixStream,
    sealed: Arc<AtomicBool>,
    is_writer: bool,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(buf)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.is_writer && self.sealed.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.sock.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn for Mem {
    fn writer(&self) -> io::Result<Mem> {
        Ok(Mem {
            sock: self.sock.try_clone()?,
            sealed: Arc::clone(&self.sealed),
            is_writer: true,
        })
    }

    fn seal_writers(&self) {
        self.sealed.store(true, Ordering::SeqCst);
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(t)
    }

    fn shutdown(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// The agent's WebSocket and the coordinator's, already upgraded.
fn connected() -> (WebSocket<Mem>, WebSocket<UnixStream>) {
    connected_with_limit(1 << 20)
}

/// As [`connected`], the agent refusing inbound messages over `max_inbound` bytes.
fn connected_with_limit(max_inbound: usize) -> (WebSocket<Mem>, WebSocket<UnixStream>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    for s in [&ours, &theirs] {
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.set_write_timeout(Some(LIMIT)).unwrap();
    }
    let mem = Mem {
        sock: ours,
        sealed: Arc::new(AtomicBool::new(false)),
        is_writer: false,
    };
    (
        WebSocket::from_raw_socket(mem, Role::Client, Some(dial::ws_config(max_inbound))),
        WebSocket::from_raw_socket(theirs, Role::Server, None),
    )
}

#[derive(Default)]
struct FakeJobs {
    submitted: Mutex<Vec<String>>,
    cancelled: Mutex<Vec<String>>,
    all_cancelled: AtomicUsize,
    /// Refuse every job with this frame's reason.
    refuse: Option<&'static str>,
}

impl Jobs for FakeJobs {
    fn submit(&self, job: JobRequest, _: &crate::outgoing::Outbox) -> Option<Outbound> {
        lock(&self.submitted).push(job.job_id.clone());
        self.refuse
            .map(|why| Outbound::job_error(&job.job_id, ErrorCode::OutOfCapacity, why, 0))
    }

    fn cancel(&self, job_id: &str) {
        lock(&self.cancelled).push(job_id.to_owned());
    }

    fn cancel_all(&self, _: &str) {
        self.all_cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

struct FakeOffer {
    caps: Mutex<String>,
    changed: (Sender<()>, Receiver<()>),
}

impl FakeOffer {
    fn new() -> FakeOffer {
        FakeOffer {
            caps: Mutex::new(r#"{"type":"capabilities","models":[]}"#.into()),
            changed: bounded(1),
        }
    }
}

impl Offer for FakeOffer {
    fn capabilities(&self) -> String {
        lock(&self.caps).clone()
    }

    fn first_capabilities(&self) -> String {
        self.capabilities()
    }

    fn heartbeat(&self) -> HeartbeatStats {
        HeartbeatStats::default()
    }

    fn changes(&self) -> Vec<Change<'_>> {
        vec![Change {
            signal: self.changed.1.clone(),
            why: Box::new(|| "the fake's models changed".into()),
        }]
    }
}

#[derive(Default)]
struct FakeStatus {
    authenticated: Mutex<Vec<String>>,
    /// Every attach, Some or None, in order.
    attached: Mutex<Vec<bool>>,
    stopping: AtomicBool,
}

impl Status for FakeStatus {
    fn authenticated(&self, detail: String) {
        lock(&self.authenticated).push(detail);
    }

    fn attach(&self, queue: Option<Sender<Outgoing>>) {
        lock(&self.attached).push(queue.is_some());
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

struct World {
    dir: PathBuf,
    config: Config,
    tls: Arc<rustls::ClientConfig>,
    host: crate::host::Host,
    identity: Mutex<Identity>,
    jobs: FakeJobs,
    offer: FakeOffer,
    status: FakeStatus,
}

impl World {
    fn new(name: &str) -> World {
        let dir =
            std::env::temp_dir().join(format!("usepod-edge-session-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (identity, _) = Identity::load_or_create(&dir.join("identity.key")).unwrap();
        let mut config = Config::from_str("test", "{}", &Overrides::default()).unwrap();
        config.coordinator.ping_interval = Duration::from_secs(60);
        World {
            dir,
            config,
            tls: crate::net::tls::client_config(&[]).unwrap(),
            host: crate::host::Host::default(),
            identity: Mutex::new(identity),
            jobs: FakeJobs::default(),
            offer: FakeOffer::new(),
            status: FakeStatus::default(),
        }
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            coordinator: &self.config.coordinator,
            host: &self.host,
            tls: &self.tls,
            max_inbound: 1 << 20,
            identity: &self.identity,
            jobs: &self.jobs,
            offer: &self.offer,
            status: &self.status,
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn send(peer: &mut WebSocket<UnixStream>, text: &str) {
    peer.send(Message::text(text)).unwrap();
}

/// The next text frame from the agent; control frames are answered on the way.
fn recv(peer: &mut WebSocket<UnixStream>) -> serde_json::Value {
    loop {
        match peer.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(f) => panic!("the agent closed: {f:?}"),
            _ => {}
        }
    }
}

/// The coordinator's half of a good handshake; returns the agent's auth_response.
fn handshake(peer: &mut WebSocket<UnixStream>, provider_id: &str) -> serde_json::Value {
    let nonce = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    send(
        peer,
        &format!(r#"{{"type":"auth_challenge","nonce":"{nonce}"}}"#),
    );
    let response = recv(peer);
    send(
        peer,
        &format!(r#"{{"type":"auth_ok","provider_id":"{provider_id}"}}"#),
    );
    response
}

const JOB: &str = "0b9e6f1c-6a43-4c8e-9d6e-3f2a1b0c9d8e";

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + LIMIT;
    while !done() {
        assert!(std::time::Instant::now() < end, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the agent's session on `ws` while `coordinator` plays the other end on its
/// own `peer`; what `coordinator` returns lives until the session ended (return the
/// peer to keep the connection open, drop it to end it).
fn with_session<R>(
    w: &World,
    (ws, peer): (WebSocket<Mem>, WebSocket<UnixStream>),
    coordinator: impl FnOnce(WebSocket<UnixStream>) -> R,
) -> SessionEnd {
    std::thread::scope(|s| {
        let session = s.spawn(|| serve(ws, &w.parts()));
        let kept = coordinator(peer);
        let end = session.join().unwrap();
        drop(kept);
        end
    })
}

/// The Close frame the agent sends, skipping what comes before it.
fn await_close(peer: &mut WebSocket<UnixStream>) -> CloseFrame {
    loop {
        if let Message::Close(f) = peer.read().unwrap() {
            return f.expect("a Close with a code");
        }
    }
}

#[test]
fn a_session_authenticates_announces_takes_jobs_and_ends_on_the_coordinators_close() {
    let w = World::new("life");
    let end = with_session(&w, connected(), |mut peer| {
        let response = handshake(&mut peer, "prov-mem-1");
        assert_eq!(response["type"], "auth_response");
        assert_eq!(
            response["pubkey"],
            lock(&w.identity).public_b64().as_str(),
            "{response}"
        );
        assert_eq!(recv(&mut peer)["type"], "capabilities");

        // A job goes to the jobs interface; its cancel too.
        send(
            &mut peer,
            &format!(r#"{{"type":"job","job_id":"{JOB}","model_id":"m","request":{{}}}}"#),
        );
        wait_until("the job submitted", || lock(&w.jobs.submitted).len() == 1);
        send(
            &mut peer,
            &format!(r#"{{"type":"job_cancel","job_id":"{JOB}"}}"#),
        );
        wait_until("the job cancelled", || lock(&w.jobs.cancelled).len() == 1);

        // A job without a model is answered here, never submitted.
        send(
            &mut peer,
            &format!(r#"{{"type":"job","job_id":"{JOB}","request":{{}}}}"#),
        );
        let refusal = recv(&mut peer);
        assert_eq!(refusal["type"], "job_error", "{refusal}");
        assert_eq!(refusal["job_id"], JOB);

        // A change of the offer re-sends capabilities, once they differ.
        *lock(&w.offer.caps) = r#"{"type":"capabilities","models":["new"]}"#.into();
        w.offer.changed.0.send(()).unwrap();
        assert_eq!(recv(&mut peer)["models"][0], "new");

        peer.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .unwrap();
        // The agent answers the Close, then the connection ends.
        loop {
            match peer.read() {
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert!(end.authenticated && end.error.is_none(), "{end:?}");
    assert_eq!(end.detail, "close code 1000 \"bye\"");
    assert_eq!(*lock(&w.jobs.submitted), [JOB]);
    assert_eq!(*lock(&w.jobs.cancelled), [JOB]);
    assert_eq!(w.jobs.all_cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(*lock(&w.status.attached), [true, false]);
    let connected = lock(&w.status.authenticated).clone();
    assert_eq!(connected.len(), 1);
    assert!(connected[0].ends_with(" as prov-mem-1"), "{connected:?}");
    assert_eq!(lock(&w.identity).provider_id(), Some("prov-mem-1"));
}

#[test]
fn a_refused_job_is_answered_by_the_session() {
    let mut w = World::new("refused");
    w.jobs.refuse = Some("all 8 slots are busy");
    let end = with_session(&w, connected(), |mut peer| {
        handshake(&mut peer, "prov-mem-2");
        assert_eq!(recv(&mut peer)["type"], "capabilities");
        send(
            &mut peer,
            &format!(r#"{{"type":"job","job_id":"{JOB}","model_id":"m","request":{{}}}}"#),
        );
        let refusal = recv(&mut peer);
        assert_eq!(refusal["error_code"], "out_of_capacity", "{refusal}");
    });
    assert!(end.authenticated, "{end:?}");
}

#[test]
fn auth_failed_about_the_key_is_a_config_problem_and_ends_before_any_frame() {
    let w = World::new("auth_failed");
    let end = with_session(&w, connected(), |mut peer| {
        let nonce = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        send(
            &mut peer,
            &format!(r#"{{"type":"auth_challenge","nonce":"{nonce}"}}"#),
        );
        recv(&mut peer);
        send(
            &mut peer,
            r#"{"type":"auth_failed","reason":"unknown public key"}"#,
        );
        peer
    });
    assert!(!end.authenticated);
    assert_eq!(end.detail, "authentication refused: \"unknown public key\"");
    let e = end.error.expect("the error is kept");
    assert!(!e.retry_can_help());
    assert!(e.what_to_fix().unwrap().contains("identity key"));
    assert!(lock(&w.status.attached).is_empty());
    assert_eq!(w.jobs.all_cancelled.load(Ordering::SeqCst), 0);
}

#[test]
fn a_bad_challenge_is_a_handshake_error_that_a_retry_may_get_past() {
    let w = World::new("bad_challenge");
    for (frame, said) in [
        (
            r#"{"type":"auth_ok"}"#,
            "expected auth_challenge, got auth_ok",
        ),
        ("not json", "expected auth_challenge: not valid JSON"),
        (
            r#"{"type":"auth_challenge","nonce":"AAAA"}"#,
            "auth_challenge nonce is 3 bytes, outside 16-64; not signed",
        ),
    ] {
        let end = with_session(&w, connected(), |mut peer| {
            send(&mut peer, frame);
            peer
        });
        assert!(end.detail.starts_with("handshake failed: "), "{end:?}");
        assert!(end.detail.contains(said), "{frame}: {}", end.detail);
        assert!(end.error.unwrap().retry_can_help(), "{frame}");
    }
}

#[test]
fn silence_past_three_ping_intervals_is_a_dead_link() {
    let mut w = World::new("dead_link");
    w.config.coordinator.ping_interval = Duration::from_millis(100);
    let end = with_session(&w, connected(), |mut peer| {
        handshake(&mut peer, "prov-mem-3");
        // Kept open but never read again, so no pong ever answers a ping.
        peer
    });
    assert_eq!(end.detail, "dead link", "{end:?}");
    assert!(end.authenticated);
    assert_eq!(w.jobs.all_cancelled.load(Ordering::SeqCst), 1);
}

#[test]
fn a_shutdown_under_way_closes_the_session_with_1001_at_once() {
    let w = World::new("stopping");
    w.status.stopping.store(true, Ordering::SeqCst);
    let end = with_session(&w, connected(), |mut peer| {
        handshake(&mut peer, "prov-mem-4");
        assert_eq!(u16::from(await_close(&mut peer).code), 1001);
        // The reply to the agent's Close.
        let _ = peer.flush();
    });
    assert_eq!(end.detail, "closed by this agent", "{end:?}");
}

#[test]
fn an_oversized_message_is_refused_with_1009_and_ends_the_session() {
    let w = World::new("oversized");
    let end = with_session(&w, connected_with_limit(4096), |mut peer| {
        handshake(&mut peer, "prov-mem-5");
        send(&mut peer, &"x".repeat(10_000));
        assert_eq!(await_close(&mut peer).code, CloseCode::Size);
    });
    assert!(end.detail.starts_with("oversized message"), "{end:?}");
    assert!(lock(&w.jobs.submitted).is_empty());
}
