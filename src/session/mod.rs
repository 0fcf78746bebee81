//! One coordinator connection's life: dial, authenticate, announce capabilities,
//! then read frames until the connection ends. A writer thread owns the sending
//! half; a ticker thread emits heartbeats, pings and capability updates.

mod dial;
mod duplex;
mod error;
mod handshake;
mod ticker;

pub use dial::{dial, max_inbound_message, timeouts, trust_anchors, ENV_SSL_CERT_FILE};
pub use duplex::Duplex;
pub use error::{HandshakeError, NonceError, SessionError};

use crate::agent::Agent;
use crate::outgoing::{Outgoing, OUTBOUND_CAPACITY};
use crate::protocol::{parse_inbound, ErrorCode, Inbound, Outbound};
use crate::reconnect::{classify_close, CloseKind};
use crate::untrusted::{self, shown};
use crossbeam_channel::{bounded, select, Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// How a session ended, for the reconnect decision.
#[derive(Debug)]
pub struct SessionEnd {
    pub authenticated: bool,
    pub kind: CloseKind,
    pub detail: String,
}

impl SessionEnd {
    fn pre_auth(e: SessionError) -> SessionEnd {
        SessionEnd {
            authenticated: false,
            kind: CloseKind::Unexpected,
            detail: e.to_string(),
        }
    }
}

/// Runs one session to its end. Never panics on coordinator input.
pub fn run(agent: &Agent) -> SessionEnd {
    let cfg = &agent.config.coordinator;
    log::debug!("connecting to {}", cfg.url);
    let max_inbound = dial::max_inbound_message(agent.config.limits.max_request_bytes);
    let mut ws = match dial::dial(cfg, &agent.tls, max_inbound) {
        Ok(ws) => ws,
        Err(e) => return SessionEnd::pre_auth(e),
    };
    let provider_id = {
        let identity = agent.lock_identity();
        match handshake::authenticate(&mut ws, &identity, cfg.enrollment_code.as_deref()) {
            Ok(p) => p,
            Err(e) => return SessionEnd::pre_auth(e),
        }
    };
    match &provider_id {
        Some(pid) if crate::identity::valid_provider_id(pid) => {
            let mut identity = agent.lock_identity();
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
    let who = agent
        .lock_identity()
        .provider_id()
        .map(|p| shown(p, 140).to_string())
        .unwrap_or_else(|| "(no provider_id)".to_owned());
    log::info!("authenticated as {who}");
    agent.set_link("connected", format!("{} as {who}", cfg.url));

    // Pongs answer our pings, so silence for three intervals means the link is dead.
    let dead_after = cfg.ping_interval * 3;
    let sock = ws.get_ref().socket();
    if let Err(e) = sock
        .set_read_timeout(Some(dead_after))
        .and_then(|_| sock.set_write_timeout(Some(dead_after.max(Duration::from_secs(10)))))
    {
        return SessionEnd {
            authenticated: true,
            kind: CloseKind::Unexpected,
            detail: format!("socket setup: {e}"),
        };
    }
    let writer_ws = match ws.get_ref().writer() {
        Ok(w) => WebSocket::from_raw_socket(
            w,
            tungstenite::protocol::Role::Client,
            Some(dial::ws_config(max_inbound)),
        ),
        Err(e) => {
            return SessionEnd {
                authenticated: true,
                kind: CloseKind::Unexpected,
                detail: format!("socket clone: {e}"),
            }
        }
    };

    let (tx, rx) = bounded::<Outgoing>(OUTBOUND_CAPACITY);
    // Dropping `halt` wakes every thread of this session.
    let (halt, halted) = bounded::<()>(0);
    // Set when we sent our own Close: the server's answer then needs no reply.
    let closing = AtomicBool::new(false);
    let end = std::thread::scope(|scope| {
        let (halted_w, closing) = (halted.clone(), &closing);
        scope.spawn(move || writer_loop(writer_ws, rx, halted_w, closing));
        let caps = agent.capabilities_when_ready();
        let _ = tx.send(Outgoing::Text(caps.clone()));
        let (tx_t, halted_t) = (tx.clone(), halted.clone());
        scope.spawn(move || ticker::run(agent, tx_t, halted_t, caps));
        agent.set_session(Some(tx.clone()));
        if agent.stopping() {
            let _ = tx.send(Outgoing::Close(1001, "agent shutting down".into()));
        }
        let end = read_loop(agent, &mut ws, &tx, closing, dead_after);
        agent.set_session(None);
        drop(halt);
        ws.get_ref().shutdown();
        end
    });
    // Every job of this session stops now, freeing the GPU (docs/protocol.md,
    // "Closing and reconnecting").
    agent.jobs.cancel_all("the coordinator session ended");
    end
}

fn read_loop(
    agent: &Agent,
    ws: &mut WebSocket<Duplex>,
    tx: &Sender<Outgoing>,
    closing: &AtomicBool,
    dead_after: Duration,
) -> SessionEnd {
    let ended = |kind, detail: String| SessionEnd {
        authenticated: true,
        kind,
        detail,
    };
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                if let Some(reply) = handle_text(agent, t.as_str(), tx) {
                    if tx.send_timeout(reply, dead_after).is_err() {
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
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                log::warn!(
                    "dead link: no inbound traffic for {:.1}s",
                    dead_after.as_secs_f64()
                );
                return ended(CloseKind::Unexpected, "dead link".into());
            }
            Err(tungstenite::Error::Capacity(e)) => {
                let max_inbound = dial::max_inbound_message(agent.config.limits.max_request_bytes);
                log::error!("refusing an inbound message: {e} (limit {max_inbound} bytes); dropping the connection");
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
fn finish_close(ws: &mut WebSocket<Duplex>) {
    ws.get_ref().seal_writers();
    let _ = ws
        .get_ref()
        .socket()
        .set_read_timeout(Some(Duration::from_secs(2)));
    let _ = ws.flush();
    for _ in 0..64 {
        if ws.read().is_err() {
            break;
        }
    }
}

/// Acts on one inbound text frame; returns a frame to send back, if any.
fn handle_text(agent: &Agent, text: &str, tx: &Sender<Outgoing>) -> Option<Outgoing> {
    match parse_inbound(text) {
        Err(e) => {
            log::warn!(
                "ignoring inbound frame, {}: \"{}\"",
                shown(&e.to_string(), 200),
                shown(text, 120)
            );
            None
        }
        Ok(Inbound::Job(job)) => agent
            .jobs
            .submit(&agent.discovery, job, tx)
            .map(Outgoing::from),
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
            agent.jobs.cancel(&job_id);
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

fn writer_loop(
    mut ws: WebSocket<Duplex>,
    rx: Receiver<Outgoing>,
    halted: Receiver<()>,
    closing: &AtomicBool,
) {
    loop {
        let msg = select! {
            recv(rx) -> m => match m { Ok(m) => m, Err(_) => return },
            recv(halted) -> _ => return,
        };
        let res = match msg {
            Outgoing::Text(t) => ws.send(Message::text(t)),
            Outgoing::Job(cancel, _) if cancel.is_cancelled() => continue,
            Outgoing::Job(_, t) => ws.send(Message::text(t)),
            Outgoing::Ping => ws.send(Message::Ping(Default::default())),
            Outgoing::Close(code, reason) => {
                closing.store(true, Ordering::SeqCst);
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                let _ = ws.send(Message::Close(Some(frame)));
                return;
            }
        };
        if let Err(e) = res {
            log::debug!("writer stopping: {e}");
            // Wakes the reader so the session ends instead of waiting for a timeout.
            ws.get_ref().shutdown();
            return;
        }
    }
}
