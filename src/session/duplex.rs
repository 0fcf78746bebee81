//! One TCP (optionally TLS) connection shared by a blocking reader thread and a
//! blocking writer thread. See DESIGN.md, "The one hard problem".
//!
//! The reader waits on the raw socket without holding any lock and only locks to
//! decrypt what arrived; a writer encrypts under the connection lock, then writes
//! the TLS records under a separate socket lock, taken before the connection lock
//! is released so records stay in order. A writer blocked on a full socket
//! therefore never stops the reader from decrypting. Every `write` consumes the
//! whole buffer in one call, so WebSocket frames from the two threads never
//! interleave.

use rustls::ClientConnection;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Size of one raw socket read; rustls records are at most ~16 KiB.
const RAW_READ: usize = 16 * 1024;

struct TlsState {
    conn: ClientConnection,
    /// Raw bytes read from the socket but not yet accepted by rustls (it refuses
    /// more input while ~16 KiB of plaintext waits unread).
    pending: Vec<u8>,
    eof: bool,
}

struct Shared {
    tls: Option<Mutex<TlsState>>,
    socket: Mutex<TcpStream>,
    /// Set once the session is closing: writer handles refuse further frames so
    /// nothing follows the Close reply.
    sealed: AtomicBool,
}

/// A handle on the shared connection; `Read` and `Write` work on every handle.
pub struct Duplex {
    shared: Arc<Shared>,
    /// This handle's own clone of the socket, read without any lock.
    sock: TcpStream,
    /// Writer handles stop at the seal; the reader's handle sends the Close reply.
    is_writer: bool,
    raw: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave the socket or rustls state half-updated in a
    // way that matters more than dropping the session, which follows anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A socket read that a signal does not fail: reads on sockets with a timeout
/// return EINTR even when the handler asked for restarts (signal(7)).
fn read_retrying(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match (&mut &*sock).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Duplex {
    /// Wraps a connected socket; `conn` is a TLS session whose handshake is done.
    pub fn new(sock: TcpStream, conn: Option<ClientConnection>) -> io::Result<Duplex> {
        let shared = Arc::new(Shared {
            tls: conn.map(|conn| {
                Mutex::new(TlsState {
                    conn,
                    pending: Vec::new(),
                    eof: false,
                })
            }),
            socket: Mutex::new(sock.try_clone()?),
            sealed: AtomicBool::new(false),
        });
        Ok(Duplex {
            shared,
            sock,
            is_writer: false,
            raw: Vec::new(),
        })
    }

    /// A handle for the writer thread.
    pub fn writer(&self) -> io::Result<Duplex> {
        Ok(Duplex {
            shared: Arc::clone(&self.shared),
            sock: self.sock.try_clone()?,
            is_writer: true,
            raw: Vec::new(),
        })
    }

    /// After this, writer handles fail. A frame a writer already encrypted still
    /// goes out first, so nothing the writer sends can follow the Close reply.
    pub fn seal_writers(&self) {
        let _guard = match &self.shared.tls {
            Some(tls) => (Some(lock(tls)), None),
            None => (None, Some(lock(&self.shared.socket))),
        };
        self.shared.sealed.store(true, Ordering::SeqCst);
    }

    fn refuse_if_sealed(&self) -> io::Result<()> {
        if self.is_writer && self.shared.sealed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection is closing",
            ));
        }
        Ok(())
    }

    /// Ends the connection for every handle: blocked reads and writes return.
    pub fn shutdown(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Feeds buffered raw bytes (or EOF) to rustls; true if it made progress.
    fn feed(&self, st: &mut TlsState) -> io::Result<bool> {
        if !st.pending.is_empty() {
            let mut slice = &st.pending[..];
            let n = st.conn.read_tls(&mut slice)?;
            st.pending.drain(..n);
            self.after_input(st)?;
            return Ok(n > 0);
        }
        if st.eof {
            // An empty read tells rustls the peer is gone; without it a missing
            // close_notify would make the reader spin on WouldBlock.
            st.conn.read_tls(&mut &[][..])?;
            self.after_input(st)?;
            return Ok(false);
        }
        Ok(false)
    }

    fn after_input(&self, st: &mut TlsState) -> io::Result<()> {
        st.conn.process_new_packets().map_err(tls_err)?;
        if st.conn.wants_write() {
            // Alerts or key updates rustls owes the peer.
            let mut out = Vec::new();
            while st.conn.wants_write() {
                st.conn.write_tls(&mut out)?;
            }
            lock(&self.shared.socket).write_all(&out)?;
        }
        Ok(())
    }

    fn read_tls_plain(&mut self, tls: &Mutex<TlsState>, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut st = lock(tls);
                loop {
                    match st.conn.reader().read(buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    if st.eof && st.pending.is_empty() {
                        // After EOF rustls either yields data, Ok(0) or UnexpectedEof.
                        self.feed(&mut st)?;
                        return match st.conn.reader().read(buf) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                Err(io::ErrorKind::UnexpectedEof.into())
                            }
                            other => other,
                        };
                    }
                    if !self.feed(&mut st)? && st.pending.is_empty() {
                        break;
                    }
                }
            }
            // No lock held while waiting for the network.
            self.raw.resize(RAW_READ, 0);
            let n = read_retrying(&self.sock, &mut self.raw)?;
            let mut st = lock(tls);
            if n == 0 {
                st.eof = true;
            } else {
                st.pending.extend_from_slice(&self.raw[..n]);
            }
        }
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let shared = Arc::clone(&self.shared);
        match &shared.tls {
            None => read_retrying(&self.sock, buf),
            Some(tls) => self.read_tls_plain(tls, buf),
        }
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.shared.tls {
            None => {
                let mut sock = lock(&self.shared.socket);
                self.refuse_if_sealed()?;
                sock.write_all(buf)?;
            }
            Some(tls) => {
                let mut st = lock(tls);
                self.refuse_if_sealed()?;
                let mut out = Vec::with_capacity(buf.len() + 64);
                let mut rest = buf;
                while !rest.is_empty() {
                    let n = st.conn.writer().write(rest)?;
                    rest = &rest[n..];
                    // Drain records as we go: rustls caps its own send buffer.
                    while st.conn.wants_write() {
                        st.conn.write_tls(&mut out)?;
                    }
                    if n == 0 && !rest.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "TLS refused plaintext",
                        ));
                    }
                }
                let mut sock = lock(&self.shared.socket);
                drop(st);
                sock.write_all(&out)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
