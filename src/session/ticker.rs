//! The session's timer thread: heartbeats, WebSocket pings, and capability
//! updates when discovery changes the routable model set. It holds no socket.

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
                let caps = agent.capabilities();
                if caps != last_caps {
                    log::info!("routable models changed; re-sending capabilities");
                    if tx.send(Outgoing::Text(caps.clone())).is_err() {
                        return;
                    }
                    last_caps = caps;
                }
            }
        }
    }
}
