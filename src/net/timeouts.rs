//! How long each step of reaching a host may take, and telling a timeout from
//! other socket errors.

use std::io;
use std::time::Duration;

/// Whether a socket error is a timeout: a read or write past the socket's
/// timeout fails with `WouldBlock` on Unix and `TimedOut` elsewhere, and
/// `connect_timeout` with `TimedOut`.
pub fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How long each step of reaching a host may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Each TCP connect (one per address tried).
    pub connect: Duration,
    /// Each exchange after it: the proxy's CONNECT, the TLS handshake.
    pub handshake: Duration,
}
