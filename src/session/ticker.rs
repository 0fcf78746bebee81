//! The session's timer thread: heartbeats, WebSocket pings, and capability
//! updates when something the offer depends on changed ([`Offer::changes`]:
//! discovery's routable model set, the admission gate opening or closing). It
//! holds no socket.

use super::{Offer, Outgoing};
use crate::protocol::Outbound;
use crossbeam_channel::{tick, Receiver, Select, Sender};
use std::time::Duration;

pub struct Intervals {
    pub heartbeat: Duration,
    pub ping: Duration,
}

pub fn run(
    offer: &dyn Offer,
    every: Intervals,
    tx: Sender<Outgoing>,
    halted: Receiver<()>,
    mut last_caps: String,
) {
    // `tick` fires first after one full interval, as the protocol wants.
    let heartbeat = tick(every.heartbeat);
    let ping = tick(every.ping);
    let changes = offer.changes();
    let mut sel = Select::new();
    let on_halt = sel.recv(&halted);
    let on_heartbeat = sel.recv(&heartbeat);
    let on_ping = sel.recv(&ping);
    let on_change: Vec<usize> = changes.iter().map(|c| sel.recv(&c.signal)).collect();
    loop {
        let op = sel.select();
        let i = op.index();
        if i == on_halt {
            let _ = op.recv(&halted);
            return;
        } else if i == on_heartbeat {
            let _ = op.recv(&heartbeat);
            let hb = Outbound::Heartbeat(offer.heartbeat());
            // A full queue means the link is congested; the next beat will do.
            if tx.try_send(hb.into()).is_err() {
                log::debug!("heartbeat skipped: outbound queue full");
            }
        } else if i == on_ping {
            let _ = op.recv(&ping);
            let _ = tx.try_send(Outgoing::Ping);
        } else if let Some(c) = on_change.iter().position(|&k| k == i).map(|k| &changes[k]) {
            if op.recv(&c.signal).is_err() {
                // Its sender is gone: nothing more will come, and a closed
                // channel would be ready on every select.
                sel.remove(i);
                continue;
            }
            let caps = offer.capabilities();
            if caps == last_caps {
                continue;
            }
            log::info!("{}; re-sending capabilities", (c.why)());
            if tx.send(Outgoing::Text(caps.clone())).is_err() {
                return;
            }
            last_caps = caps;
        }
    }
}
