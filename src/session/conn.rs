//! The connection beneath a session's WebSocket, as the session drives it.

use super::duplex::Duplex;
use std::io::{self, Read, Write};
use std::time::Duration;

/// A connection a session can run over: the reader's end, from which the
/// writer thread's end is made. [`Duplex`] (TCP, TLS or not) is the
/// one the agent dials; the unit tests use an in-memory socket pair.
pub trait Conn: Read + Write + Send + Sized {
    /// A handle for the writer thread on the same connection.
    fn writer(&self) -> io::Result<Self>;
    /// After this, writer handles refuse to write, so nothing they send can
    /// follow the Close reply the reader's handle sends.
    fn seal_writers(&self);
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Ends the connection for every handle: blocked reads and writes return.
    fn shutdown(&self);
}

impl Conn for Duplex {
    fn writer(&self) -> io::Result<Self> {
        Duplex::writer(self)
    }

    fn seal_writers(&self) {
        Duplex::seal_writers(self)
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(t)
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(t)
    }

    fn shutdown(&self) {
        Duplex::shutdown(self)
    }
}
