//! How a session's frames leave: job threads write their own frames straight to the
//! connection ([`Direct`]); everything else (heartbeats, pings, replies, the Close)
//! waits in a bounded queue for the session's writer thread. Jobs, the ticker and the
//! shutdown send through here, so nothing else needs to know about the socket.

use crate::cancel::Cancel;
use crate::protocol::Outbound;
use crossbeam_channel::Sender;
use std::sync::Arc;

/// Frames waiting for the writer; bounded so a slow coordinator pushes back instead of
/// growing memory.
pub const OUTBOUND_CAPACITY: usize = 64;

/// What the writer thread sends.
#[derive(Debug)]
pub enum Outgoing {
    Text(String),
    Ping,
    /// The agent closes the connection (shutdown); nothing is sent after it.
    Close(u16, String),
}

impl From<Outbound> for Outgoing {
    fn from(m: Outbound) -> Self {
        Outgoing::Text(m.to_text())
    }
}

/// The connection, as a job thread writes to it.
pub trait Direct: Send + Sync {
    /// Sends one of a job's text frames from the calling thread, blocking while the
    /// connection is full (the coordinator pushes back). Sends nothing, and returns
    /// false, once the job is cancelled (so nothing of it follows a job_cancel) or the
    /// session is closing or gone.
    fn send_job(&self, cancel: &Cancel, text: &[u8]) -> bool;
}

/// Where a session's jobs send: their own frames directly, replies through the queue.
#[derive(Clone)]
pub struct Outbox {
    queue: Sender<Outgoing>,
    direct: Arc<dyn Direct>,
}

impl Outbox {
    pub fn new(queue: Sender<Outgoing>, direct: Arc<dyn Direct>) -> Outbox {
        Outbox { queue, direct }
    }

    /// The writer thread's queue.
    pub fn queue(&self) -> &Sender<Outgoing> {
        &self.queue
    }

    /// See [`Direct::send_job`].
    pub fn send_job(&self, cancel: &Cancel, text: &[u8]) -> bool {
        self.direct.send_job(cancel, text)
    }
}
