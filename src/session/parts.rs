//! What a session is given: the coordinator settings, the identity, and the
//! three narrow interfaces through which it reaches the rest of the agent.

use crate::config::CoordinatorConfig;
use crate::host::Host;
use crate::identity::Identity;
use crate::outgoing::{Outbox, Outgoing};
use crate::protocol::{HeartbeatStats, JobRequest, Outbound};
use crossbeam_channel::{Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Where the coordinator's jobs go.
pub trait Jobs: Sync {
    /// Admits a job, whose frames then go to `out`, or returns the frame
    /// that refuses it at once.
    fn submit(&self, job: JobRequest, out: &Outbox) -> Option<Outbound>;
    /// job_cancel: stops the job if it is running or queued.
    fn cancel(&self, job_id: &str);
    /// The session ended: every job of it stops, freeing the GPU
    /// (docs/protocol.md, "Closing and reconnecting").
    fn cancel_all(&self, why: &str);
}

/// What the session announces: capabilities and heartbeats.
pub trait Offer: Sync {
    /// The capabilities frame as things stand.
    fn capabilities(&self) -> String;
    /// The capabilities right after authentication, which may wait briefly
    /// for the first discovery round.
    fn first_capabilities(&self) -> String;
    fn heartbeat(&self) -> HeartbeatStats;
    /// What may change the capabilities; each fires when it did.
    fn changes(&self) -> Vec<Change<'_>>;
}

/// A source of capability changes.
pub struct Change<'a> {
    pub signal: Receiver<()>,
    /// Why the capabilities are re-sent, for the log line; read when `signal` fired.
    pub why: Box<dyn Fn() -> String + Send + Sync + 'a>,
}

/// Where the session reports how it stands.
pub trait Status: Sync {
    /// Authenticated; `detail` says to what, as whom.
    fn authenticated(&self, detail: String);
    /// The live session's outbound queue, from when capabilities are out
    /// (Some) to the session's end (None): a shutdown closes it through there.
    fn attach(&self, queue: Option<Sender<Outgoing>>);
    /// Whether a shutdown began; a session that finds one closes at once.
    fn stopping(&self) -> bool;
}

/// Everything a session uses.
pub struct Parts<'a> {
    pub coordinator: &'a CoordinatorConfig,
    /// The process as the agent sees it: the proxy variables, the version it reports.
    pub host: &'a Host,
    pub tls: &'a Arc<rustls::ClientConfig>,
    /// The largest inbound message accepted ([`max_inbound_message`](super::max_inbound_message)).
    pub max_inbound: usize,
    pub identity: &'a Mutex<Identity>,
    pub jobs: &'a dyn Jobs,
    pub offer: &'a dyn Offer,
    pub status: &'a dyn Status,
}
