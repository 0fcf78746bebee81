//! One coordinator connection's life: dial, authenticate, announce capabilities,
//! then read frames until the connection ends. A writer thread owns the sending
//! half; a ticker thread emits heartbeats, pings and capability updates.
//!
//! The session talks to the rest of the agent only through [`Parts`]: the
//! coordinator settings, the identity, and three narrow interfaces ([`Jobs`],
//! [`Offer`], [`Status`]) that the agent implements (src/agent.rs). Past the
//! dial, everything runs over any [`Conn`], so the handshake and the read loop
//! are unit-tested over an in-memory socket pair.

mod conn;
mod dial;
mod duplex;
mod error;
mod handshake;
mod nonce;
mod parts;
mod ticker;
mod wire;

pub use conn::Conn;
pub use dial::{dial, max_inbound_message, timeouts, trust_anchors};
pub use duplex::Duplex;
pub use error::{HandshakeError, SessionError};
pub use nonce::NonceError;
pub use parts::{Change, Jobs, Offer, Parts, Status};

use crate::lock::lock;
use crate::outgoing::{Outbox, Outgoing, OUTBOUND_CAPACITY};
use crate::protocol::{parse_inbound, ErrorCode, Inbound, Outbound};
use crate::reconnect::{classify_close, CloseKind};
use crate::untrusted::{self, shown};
use crossbeam_channel::{bounded, select, Receiver};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};
use wire::{Frame, Wire};

/// How a session ended, for the reconnect decision.
#[derive(Debug)]
pub struct SessionEnd {
    pub authenticated: bool,
    pub kind: CloseKind,
    pub detail: String,
    /// Why it could not be established, when it was not.
    pub error: Option<SessionError>,
}

impl SessionEnd {
    fn pre_auth(e: SessionError) -> SessionEnd {
        SessionEnd {
            authenticated: false,
            kind: CloseKind::Unexpected,
            detail: e.to_string(),
            error: Some(e),
        }
    }

    fn ended(kind: CloseKind, detail: String) -> SessionEnd {
        SessionEnd {
            authenticated: true,
            kind,
            detail,
            error: None,
        }
    }
}

/// Runs one session to its end. Never panics on coordinator input.
pub fn run(parts: &Parts) -> SessionEnd {
    log::debug!("connecting to {}", parts.coordinator.url);
    match dial::dial(
        parts.coordinator,
        parts.tls,
        parts.max_inbound,
        &parts.host.env,
    ) {
        Ok(ws) => serve(ws, parts),
        Err(e) => SessionEnd::pre_auth(e),
    }
}

/// Authenticates over an upgraded connection, then serves it to its end.
pub fn serve<S: Conn + 'static>(mut ws: WebSocket<S>, parts: &Parts) -> SessionEnd {
    let cfg = parts.coordinator;
    let provider_id = {
        let identity = lock(parts.identity);
        let code = cfg.enrollment_code.as_deref();
        match handshake::authenticate(&mut ws, &identity, code, &parts.host.version) {
            Ok(p) => p,
            Err(e) => return SessionEnd::pre_auth(e),
        }
    };
    match &provider_id {
        Some(pid) if crate::identity::valid_provider_id(pid) => {
            let mut identity = lock(parts.identity);
            match identity.set_provider_id(pid) {
                Ok(true) => log::info!("provider_id {pid} saved to {}", identity.path().display()),
                Ok(false) => {}
                Err(e) => log::error!("{e}; continuing with provider_id {pid} in memory"),
            }
        }
        // Never persisted: in the file it could add lines (a second `secret:`).
        // The session itself does not depend on it.
        Some(pid) => log::warn!(
            "ignoring the provider_id in auth_ok, \"{}\": not 1-128 of A-Z a-z 0-9 . _ : -; not saved",
            shown(pid, 140)
        ),
        None => {}
    }
    // The stored id was read from a file usepod-agent may have written: shown, not trusted.
    let who = lock(parts.identity)
        .provider_id()
        .map(|p| shown(p, 140).to_string())
        .unwrap_or_else(|| "(no provider_id)".to_owned());
    log::info!("authenticated as {who}");
    parts.status.authenticated(format!("{} as {who}", cfg.url));

    // Pongs answer our pings, so silence for three intervals means the link is dead.
    let dead_after = cfg.ping_interval * 3;
    let conn = ws.get_ref();
    if let Err(e) = conn
        .set_read_timeout(Some(dead_after))
        .and_then(|_| conn.set_write_timeout(Some(dead_after.max(Duration::from_secs(10)))))
    {
        return SessionEnd::ended(CloseKind::Unexpected, format!("socket setup: {e}"));
    }
    let wire = match conn.writer() {
        Ok(w) => Arc::new(Wire::new(w)),
        Err(e) => return SessionEnd::ended(CloseKind::Unexpected, format!("socket clone: {e}")),
    };

    let (tx, rx) = bounded::<Outgoing>(OUTBOUND_CAPACITY);
    // Dropping `halt` wakes every thread of this session.
    let (halt, halted) = bounded::<()>(0);
    // Set when we sent our own Close: the server's answer then needs no reply.
    let closing = AtomicBool::new(false);
    let end = std::thread::scope(|scope| {
        // Out before the writer thread or any job can send: capabilities come first.
        let caps = parts.offer.first_capabilities();
        let _ = wire.send(Frame::Text(caps.as_bytes()));
        let (halted_w, closing, wire_w) = (halted.clone(), &closing, &*wire);
        // Like std's scope.spawn, a thread that cannot start ends the process.
        crate::stack::thread("writer")
            .spawn_scoped(scope, move || writer_loop(wire_w, rx, halted_w, closing))
            .expect("cannot start the session's writer thread");
        let (tx_t, halted_t) = (tx.clone(), halted.clone());
        let ticks = ticker::Intervals {
            heartbeat: cfg.heartbeat_interval,
            ping: cfg.ping_interval,
        };
        crate::stack::thread("ticker")
            .spawn_scoped(scope, move || {
                ticker::run(parts.offer, ticks, tx_t, halted_t, caps)
            })
            .expect("cannot start the session's ticker thread");
        parts.status.attach(Some(tx.clone()));
        if parts.status.stopping() {
            let _ = tx.send(Outgoing::Close(1001, "agent shutting down".into()));
        }
        let outbox = Outbox::new(tx.clone(), wire.clone());
        let end = read_loop(parts, &mut ws, &outbox, closing, dead_after);
        parts.status.attach(None);
        drop(halt);
        ws.get_ref().shutdown();
        end
    });
    parts.jobs.cancel_all("the coordinator session ended");
    end
}

fn read_loop<S: Conn>(
    parts: &Parts,
    ws: &mut WebSocket<S>,
    out: &Outbox,
    closing: &AtomicBool,
    dead_after: Duration,
) -> SessionEnd {
    let ended = SessionEnd::ended;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                if let Some(reply) = handle_text(parts.jobs, t.as_str(), out) {
                    if out.queue().send_timeout(reply, dead_after).is_err() {
                        return ended(CloseKind::Unexpected, "outbound queue stuck".into());
                    }
                }
            }
            Ok(Message::Binary(b)) => log::debug!("ignoring a {}-byte binary frame", b.len()),
            Ok(Message::Close(frame)) => {
                let code = frame
                    .as_ref()
                    .map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                let kind = classify_close(code.as_ref().map(|(c, r)| (*c, r.as_str())));
                if closing.load(Ordering::SeqCst) {
                    // The server answered our Close: the handshake is complete.
                    return ended(CloseKind::Graceful, "closed by this agent".into());
                }
                finish_close(ws);
                let detail = match code {
                    Some((c, r)) => format!("close code {c} \"{}\"", shown(&r, 123)),
                    None => "close without code".into(),
                };
                return ended(kind, detail);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if crate::net::timed_out(&e) => {
                log::warn!(
                    "dead link: no inbound traffic for {:.1}s",
                    dead_after.as_secs_f64()
                );
                return ended(CloseKind::Unexpected, "dead link".into());
            }
            Err(tungstenite::Error::Capacity(e)) => {
                log::error!(
                    "refusing an inbound message: {e} (limit {} bytes); dropping the connection",
                    parts.max_inbound
                );
                ws.get_ref().seal_writers();
                let _ = ws.close(Some(CloseFrame {
                    code: CloseCode::Size,
                    reason: "message too big".into(),
                }));
                let _ = ws.flush();
                return ended(CloseKind::Unexpected, format!("oversized message: {e}"));
            }
            Err(e) => return ended(CloseKind::Unexpected, e.to_string()),
        }
    }
}

/// Completes a closing handshake the coordinator started: our Close reply goes
/// out (and nothing after it), then we wait briefly for the server to hang up.
fn finish_close<S: Conn>(ws: &mut WebSocket<S>) {
    ws.get_ref().seal_writers();
    let _ = ws.get_ref().set_read_timeout(Some(Duration::from_secs(2)));
    let _ = ws.flush();
    for _ in 0..64 {
        if ws.read().is_err() {
            break;
        }
    }
}

/// Acts on one inbound text frame; returns a frame to send back, if any.
fn handle_text(jobs: &dyn Jobs, text: &str, out: &Outbox) -> Option<Outgoing> {
    match parse_inbound(text) {
        Err(e) => {
            log::warn!(
                "ignoring inbound frame, {}: \"{}\"",
                shown(&e.to_string(), 200),
                shown(text, 120)
            );
            None
        }
        Ok(Inbound::Job(job)) => jobs.submit(job, out).map(Outgoing::from),
        Ok(Inbound::MalformedJob {
            job_id: Some(id),
            problem,
        }) => {
            log::warn!(
                "malformed job {}: {}",
                untrusted::job_id(&id),
                shown(&problem, 200)
            );
            Some(
                Outbound::job_error(
                    &id,
                    ErrorCode::Internal,
                    format!("malformed job: {problem}"),
                    0,
                )
                .into(),
            )
        }
        Ok(Inbound::MalformedJob {
            job_id: None,
            problem,
        }) => {
            log::warn!(
                "ignoring a job frame without a readable job_id: {}",
                shown(&problem, 200)
            );
            None
        }
        Ok(Inbound::JobCancel { job_id }) => {
            jobs.cancel(&job_id);
            None
        }
        Ok(Inbound::ConfigUpdate) => {
            log::debug!("ignoring config_update");
            None
        }
        Ok(Inbound::Unknown { kind }) => {
            log::debug!("ignoring message of unknown type \"{}\"", shown(&kind, 64));
            None
        }
        Ok(other) => {
            log::debug!(
                "ignoring {} after authentication",
                handshake::describe(&other)
            );
            None
        }
    }
}

fn writer_loop<S: Conn>(
    wire: &Wire<S>,
    rx: Receiver<Outgoing>,
    halted: Receiver<()>,
    closing: &AtomicBool,
) {
    loop {
        let msg = select! {
            recv(rx) -> m => match m { Ok(m) => m, Err(_) => return },
            recv(halted) -> _ => return,
        };
        let res = match &msg {
            Outgoing::Text(t) => wire.send(Frame::Text(t.as_bytes())),
            Outgoing::Ping => wire.send(Frame::Ping),
            Outgoing::Close(code, reason) => {
                closing.store(true, Ordering::SeqCst);
                let _ = wire.send(Frame::Close(*code, reason));
                return;
            }
        };
        // A failed write shut the connection, which wakes the reader so the session
        // ends instead of waiting for a timeout.
        if let Err(e) = res {
            log::debug!("writer stopping: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests;
