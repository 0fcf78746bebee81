//! The session's timer thread: heartbeats, WebSocket pings, and capability
//! updates when discovery changes the routable model set or the admission gate
//! opens or closes. It holds no socket.

use super::Outgoing;
use crate::agent::Agent;
use crate::protocol::Outbound;
use crossbeam_channel::{select, tick, Receiver, Sender};

pub fn run(agent: &Agent, tx: Sender<Outgoing>, halted: Receiver<()>, mut last_caps: String) {
    let cfg = &agent.config.coordinator;
    // `tick` fires first after one full interval, as the protocol wants.
    let heartbeat = tick(cfg.heartbeat_interval);
    let ping = tick(cfg.ping_interval);
    let changes = agent.discovery.changes();
    let gate = agent.gate.changes();
    loop {
        select! {
            recv(halted) -> _ => return,
            recv(heartbeat) -> _ => {
                let hb = Outbound::Heartbeat(agent.heartbeat_stats());
                // A full queue means the link is congested; the next beat will do.
                if tx.try_send(hb.into()).is_err() {
                    log::debug!("heartbeat skipped: outbound queue full");
                }
            }
            recv(ping) -> _ => {
                let _ = tx.try_send(Outgoing::Ping);
            }
            recv(changes) -> _ => {
                if !resend(agent, &tx, &mut last_caps, "routable models changed") {
                    return;
                }
            }
            recv(gate) -> _ => {
                let why = if agent.gate.admitting() {
                    "admitting jobs again"
                } else {
                    "not admitting jobs (models withdrawn)"
                };
                if !resend(agent, &tx, &mut last_caps, why) {
                    return;
                }
            }
        }
    }
}

/// Sends capabilities when they differ from the last ones sent; false once the
/// session is gone.
fn resend(agent: &Agent, tx: &Sender<Outgoing>, last_caps: &mut String, why: &str) -> bool {
    let caps = agent.capabilities();
    if caps == *last_caps {
        return true;
    }
    log::info!("{why}; re-sending capabilities");
    if tx.send(Outgoing::Text(caps.clone())).is_err() {
        return false;
    }
    *last_caps = caps;
    true
}
