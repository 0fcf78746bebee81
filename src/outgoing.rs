//! The frames a session's writer thread sends, and the bounded queue they wait
//! in. Jobs, the ticker and the shutdown put frames here; only the session's
//! writer takes them out, so nothing else needs to know about the socket.

use crate::cancel::Cancel;
use crate::protocol::Outbound;

/// Frames waiting for the writer; bounded so a slow coordinator pushes back on
/// job threads instead of growing memory.
pub const OUTBOUND_CAPACITY: usize = 64;

/// What the writer thread sends.
#[derive(Debug)]
pub enum Outgoing {
    Text(String),
    /// A job's frame: dropped unsent once the job is cancelled, so nothing
    /// follows a job_cancel.
    Job(Cancel, String),
    Ping,
    /// The agent closes the connection (shutdown); nothing is sent after it.
    Close(u16, String),
}

impl From<Outbound> for Outgoing {
    fn from(m: Outbound) -> Self {
        Outgoing::Text(m.to_text())
    }
}
