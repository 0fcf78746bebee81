//! One TCP (optionally TLS) connection shared by a blocking reader thread and a
//! blocking writer thread. See docs/design.md, "The one hard problem".
//!
//! The reader waits on the raw socket without holding any lock and only locks to
//! decrypt what arrived; a writer encrypts under the connection lock, then writes
//! the TLS records under a separate socket lock, taken before the connection lock
//! is released so records stay in order. A writer blocked on a full socket
//! therefore never stops the reader from decrypting. Every `write` consumes the
//! whole buffer in one call, so WebSocket frames from the two threads never
//! interleave.

use crate::lock::lock;
use rustls::ClientConnection;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
    /// TLS records of one write; reused, so a write allocates nothing of ours.
    sealed_out: Vec<u8>,
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
            sealed_out: Vec::new(),
        })
    }

    /// A handle for the writer thread.
    pub fn writer(&self) -> io::Result<Duplex> {
        Ok(Duplex {
            shared: Arc::clone(&self.shared),
            sock: self.sock.try_clone()?,
            is_writer: true,
            raw: Vec::new(),
            sealed_out: Vec::new(),
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
                let out = &mut self.sealed_out;
                out.clear();
                let mut rest = buf;
                while !rest.is_empty() {
                    let n = st.conn.writer().write(rest)?;
                    rest = &rest[n..];
                    // Drain records as we go: rustls caps its own send buffer.
                    while st.conn.wants_write() {
                        st.conn.write_tls(out)?;
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
                sock.write_all(out)?;
                // One huge frame should not keep its records' memory for good.
                if out.capacity() > 64 * 1024 {
                    *out = Vec::new();
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Over real loopback sockets: the agent's end is a `Duplex` (TLS or plain), the
    //! coordinator's a `Peer` driven by hand, so each test decides which bytes go out when.
    //! Every socket has read and write timeouts and every wait on another thread has a
    //! deadline, so a broken duplex fails these tests instead of hanging them.

    use super::*;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::mpsc::{self, TryRecvError};
    use std::thread;
    use std::time::{Duration, Instant};

    const LIMIT: Duration = Duration::from_secs(20);

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A server config with a fresh self-signed certificate for localhost, and a client
    /// config that trusts exactly that certificate.
    fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// The coordinator's end of the connection.
    struct Peer {
        sock: TcpStream,
        tls: Option<ServerConnection>,
    }

    impl Peer {
        /// `plain` as it goes on the wire: TLS records, or itself without TLS.
        fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
            let Some(tls) = &mut self.tls else {
                return plain.to_vec();
            };
            let mut out = Vec::new();
            let mut rest = plain;
            while !rest.is_empty() {
                let n = tls.writer().write(rest).unwrap();
                rest = &rest[n..];
                while tls.wants_write() {
                    tls.write_tls(&mut out).unwrap();
                }
            }
            out
        }

        fn send(&mut self, plain: &[u8]) {
            let wire = self.seal(plain);
            self.sock.write_all(&wire).unwrap();
        }

        /// Reads until exactly `n` bytes of plaintext came.
        fn recv_exact(&mut self, n: usize) -> Vec<u8> {
            let mut out = Vec::with_capacity(n);
            let mut buf = vec![0u8; 64 * 1024];
            while out.len() < n {
                let want = (n - out.len()).min(buf.len());
                let Some(tls) = &mut self.tls else {
                    let k = self.sock.read(&mut buf[..want]).unwrap();
                    assert!(k > 0, "peer: EOF after {} of {n} bytes", out.len());
                    out.extend_from_slice(&buf[..k]);
                    continue;
                };
                match tls.reader().read(&mut buf[..want]) {
                    Ok(0) => panic!("peer: close_notify after {} of {n} bytes", out.len()),
                    Ok(k) => {
                        out.extend_from_slice(&buf[..k]);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("peer: {e}"),
                }
                let k = tls.read_tls(&mut self.sock).unwrap();
                assert!(k > 0, "peer: EOF after {} of {n} bytes", out.len());
                tls.process_new_packets().unwrap();
            }
            out
        }

        /// A clean TLS end (close_notify), then no more writes from this side.
        fn close_notify(&mut self) {
            let tls = self.tls.as_mut().expect("a TLS peer");
            tls.send_close_notify();
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out).unwrap();
            }
            self.sock.write_all(&out).unwrap();
            self.sock.shutdown(Shutdown::Write).unwrap();
        }
    }

    fn timeouts(sock: &TcpStream) {
        sock.set_read_timeout(Some(LIMIT)).unwrap();
        sock.set_write_timeout(Some(LIMIT)).unwrap();
    }

    /// A connected pair on 127.0.0.1, TLS handshake done when `tls`.
    fn connect(tls: bool) -> (Duplex, Peer) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let configs = tls.then(tls_configs);
        let server_cfg = configs.as_ref().map(|(s, _)| Arc::clone(s));
        let server = thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            timeouts(&sock);
            let tls = server_cfg.map(|cfg| {
                let mut tls = ServerConnection::new(cfg).unwrap();
                while tls.is_handshaking() {
                    tls.complete_io(&mut sock).unwrap();
                }
                while tls.wants_write() {
                    tls.write_tls(&mut sock).unwrap();
                }
                tls
            });
            Peer { sock, tls }
        });
        let mut sock = TcpStream::connect(addr).unwrap();
        timeouts(&sock);
        let conn = configs.map(|(_, cfg)| {
            let name = ServerName::try_from("localhost").unwrap();
            let mut conn = ClientConnection::new(cfg, name).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).unwrap();
            }
            conn
        });
        let duplex = Duplex::new(sock, conn).unwrap();
        (duplex, server.join().unwrap())
    }

    /// Reads exactly `n` bytes on another thread; the result comes back on the channel.
    fn read_on_thread(mut d: Duplex, n: usize) -> mpsc::Receiver<io::Result<Vec<u8>>> {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = vec![0u8; n];
            let _ = tx.send(d.read_exact(&mut buf).map(|_| buf));
        });
        rx
    }

    /// Deterministic filler, different for each (writer, message).
    fn payload(writer: u8, seq: u32, len: usize) -> Vec<u8> {
        let mut x = (u32::from(writer) << 24) ^ seq.wrapping_mul(2_654_435_761) ^ 0x9e37_79b9;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// One framed message: writer id, sequence number, length, payload.
    fn message(writer: u8, seq: u32, len: usize) -> Vec<u8> {
        let mut m = vec![writer];
        m.extend_from_slice(&seq.to_le_bytes());
        m.extend_from_slice(&(len as u32).to_le_bytes());
        m.extend_from_slice(&payload(writer, seq, len));
        m
    }

    /// Splits a stream of messages, checking each is whole and each writer's in order.
    fn check_messages(stream: &[u8], writers: u8, per_writer: u32) {
        let mut next = vec![0u32; usize::from(writers)];
        let mut at = 0;
        while at < stream.len() {
            let w = stream[at];
            let seq = u32::from_le_bytes(stream[at + 1..at + 5].try_into().unwrap());
            let len = u32::from_le_bytes(stream[at + 5..at + 9].try_into().unwrap()) as usize;
            assert!(
                w < writers,
                "message at {at}: writer {w}: frames interleaved"
            );
            assert_eq!(
                seq,
                next[usize::from(w)],
                "writer {w}: out of order at {at}"
            );
            assert!(
                stream[at + 9..at + 9 + len] == payload(w, seq, len)[..],
                "writer {w} message {seq}: payload corrupted"
            );
            next[usize::from(w)] += 1;
            at += 9 + len;
        }
        assert_eq!(
            next,
            vec![per_writer; usize::from(writers)],
            "messages lost"
        );
    }

    fn sizes(writer: u8, n: u32) -> Vec<usize> {
        // Small frames and ones over a TLS record (16 KiB), in a fixed pseudo-random mix.
        (0..n)
            .map(|i| {
                (payload(writer, i, 4)
                    .iter()
                    .map(|b| usize::from(*b))
                    .product::<usize>())
                    % 40_000
            })
            .collect()
    }

    fn concurrent_reads_and_writes(tls: bool) {
        const WRITERS: u8 = 2;
        const PER_WRITER: u32 = 60;
        let (d, mut peer) = connect(tls);
        let all: Vec<Vec<usize>> = (0..WRITERS).map(|w| sizes(w, PER_WRITER)).collect();
        let total: usize = all.iter().flatten().map(|len| 9 + len).sum();
        // The peer echoes every byte back as it comes, while the writers still write:
        // both directions of the duplex are busy at once.
        let echo = thread::spawn(move || {
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                let chunk = peer.recv_exact((total - seen.len()).min(7_000));
                peer.send(&chunk);
                seen.extend_from_slice(&chunk);
            }
            seen
        });
        let writers: Vec<_> = all
            .into_iter()
            .enumerate()
            .map(|(w, lens)| {
                let mut h = d.writer().unwrap();
                thread::spawn(move || {
                    for (seq, len) in lens.into_iter().enumerate() {
                        // One write per frame: each must arrive whole.
                        h.write_all(&message(w as u8, seq as u32, len)).unwrap();
                    }
                })
            })
            .collect();
        let echoed = read_on_thread(d, total)
            .recv_timeout(LIMIT)
            .expect("the echo did not come back in time")
            .unwrap();
        for w in writers {
            w.join().unwrap();
        }
        let seen = echo.join().unwrap();
        check_messages(&seen, WRITERS, PER_WRITER);
        assert!(
            echoed == seen,
            "the reader got other bytes than the peer sent"
        );
    }

    #[test]
    fn concurrent_reads_and_writes_arrive_whole_and_in_order_over_tls() {
        concurrent_reads_and_writes(true);
    }

    #[test]
    fn concurrent_reads_and_writes_arrive_whole_and_in_order_without_tls() {
        concurrent_reads_and_writes(false);
    }

    /// More than the socket buffers on both sides can hold, so a write of it blocks until
    /// the peer reads (send buffers grow to tcp_wmem's max; a receive buffer the peer does
    /// not read from stays at tcp_rmem's default).
    fn more_than_the_sockets_hold() -> usize {
        let field = |file: &str, i: usize| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/{file}"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(i)?.parse::<usize>().ok())
        };
        match (field("tcp_wmem", 2), field("tcp_rmem", 1)) {
            (Some(w), Some(r)) => 2 * (w + r) + (1 << 20),
            _ => 32 << 20,
        }
    }

    #[test]
    fn a_writer_blocked_on_a_full_socket_does_not_stop_the_reader() {
        let (d, mut peer) = connect(true);
        let big = payload(9, 0, more_than_the_sockets_hold());
        let n = big.len();
        let mut w = d.writer().unwrap();
        let (done_tx, done) = mpsc::channel();
        thread::spawn(move || {
            let _ = done_tx.send(w.write_all(&big).map(|_| big));
        });
        // The writer has encrypted the whole buffer and is writing it out once its first
        // bytes reach the peer; the peer reads nothing more, so it stays blocked.
        peer.sock.peek(&mut [0u8; 1]).unwrap();
        let ping = [0x89, 0x04, b'p', b'i', b'n', b'g'];
        peer.send(&ping);
        let got = read_on_thread(d, ping.len())
            .recv_timeout(LIMIT)
            .expect("the reader was stopped by the blocked writer")
            .unwrap();
        assert_eq!(got, ping);
        assert!(
            matches!(done.try_recv(), Err(TryRecvError::Empty)),
            "the writer was not blocked: grow the write"
        );
        // Once the peer reads, the writer finishes, its bytes intact.
        let received = peer.recv_exact(n);
        let sent = done
            .recv_timeout(LIMIT)
            .expect("the writer never finished")
            .unwrap();
        assert!(received == sent, "the blocked write arrived corrupted");
    }

    #[test]
    fn a_close_notify_ends_reads_cleanly_and_a_bare_tcp_close_is_an_error() {
        // The peer says goodbye properly: the data, then end of stream, every time.
        let (mut d, mut peer) = connect(true);
        peer.send(b"bye");
        peer.close_notify();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 3];
            let first = d.read_exact(&mut buf).map(|_| buf);
            let eof = [d.read(&mut [0u8; 8]).ok(), d.read(&mut [0u8; 8]).ok()];
            let _ = tx.send((first.ok(), eof));
        });
        let (first, eof) = rx
            .recv_timeout(LIMIT)
            .expect("reads after close_notify did not return");
        assert_eq!(first, Some(*b"bye"));
        assert_eq!(eof, [Some(0), Some(0)], "a clean end reads as 0 bytes");

        // The peer's TCP goes away without close_notify: an error, not a spin or a hang.
        let (mut d, mut peer) = connect(true);
        peer.send(b"bye");
        drop(peer);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 3];
            let first = d.read_exact(&mut buf).map(|_| buf);
            let _ = tx.send((first.ok(), d.read(&mut [0u8; 8]).map_err(|e| e.kind())));
        });
        let (first, end) = rx
            .recv_timeout(LIMIT)
            .expect("a read after a bare TCP close did not return (spinning?)");
        assert_eq!(first, Some(*b"bye"));
        assert_eq!(end, Err(io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn shutting_down_our_side_unblocks_a_blocked_reader_and_a_blocked_writer() {
        let (d, mut peer) = connect(true);
        let big = payload(7, 0, more_than_the_sockets_hold());
        let mut w = d.writer().unwrap();
        let (wtx, writer_done) = mpsc::channel();
        thread::spawn(move || {
            let _ = wtx.send(w.write_all(&big).is_ok());
        });
        peer.sock.peek(&mut [0u8; 1]).unwrap();
        let closer = d.writer().unwrap();
        // Meanwhile the reader blocks too: the peer sends nothing.
        let (rtx, reader_done) = mpsc::channel();
        let mut reader = d;
        thread::spawn(move || {
            let _ = rtx.send(reader.read(&mut [0u8; 16]).ok());
        });
        assert!(
            matches!(writer_done.try_recv(), Err(TryRecvError::Empty)),
            "the writer was not blocked: grow the write"
        );
        closer.shutdown();
        let started = Instant::now();
        assert_eq!(
            writer_done.recv_timeout(LIMIT),
            Ok(false),
            "the blocked write must fail once the connection is shut down"
        );
        match reader_done.recv_timeout(LIMIT) {
            Ok(None) | Ok(Some(0)) => {}
            other => panic!("the blocked read must end with EOF or an error, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // And the peer sees the connection end.
        let mut sink = vec![0u8; 1 << 16];
        loop {
            match peer.sock.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn sealed_writers(tls: bool) {
        let (mut d, mut peer) = connect(tls);
        let mut w = d.writer().unwrap();
        w.write_all(b"frame;").unwrap();
        d.seal_writers();
        let refused = w.write_all(b"late frame;").unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::BrokenPipe);
        // The reader's handle still sends the Close reply, and it is the last thing out.
        d.write_all(b"close reply").unwrap();
        assert_eq!(peer.recv_exact(17), b"frame;close reply");
        d.shutdown();
        let mut rest = Vec::new();
        if let Some(tls) = &mut peer.tls {
            loop {
                match tls.read_tls(&mut peer.sock) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = tls.process_new_packets();
                        let _ = tls.reader().read_to_end(&mut rest);
                    }
                }
            }
        } else {
            let _ = peer.sock.read_to_end(&mut rest);
        }
        assert!(rest.is_empty(), "sent after the Close reply: {rest:?}");
    }

    #[test]
    fn sealed_writers_refuse_and_the_close_reply_goes_out_last_over_tls() {
        sealed_writers(true);
    }

    #[test]
    fn sealed_writers_refuse_and_the_close_reply_goes_out_last_without_tls() {
        sealed_writers(false);
    }

    /// Bytes waiting in the receive queue of the TCP socket `local` -> `remote`, and bytes
    /// sent on it but not yet acknowledged, from /proc/net/tcp.
    fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
        let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
        let port = |field: &str| {
            field
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        };
        table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if port(f.get(1)?)? != local.port() || port(f.get(2)?)? != remote.port() {
                return None;
            }
            let (tx, rx) = f.get(4)?.split_once(':')?;
            Some((
                u64::from_str_radix(tx, 16).ok()?,
                u64::from_str_radix(rx, 16).ok()?,
            ))
        })
    }

    /// Waits until the peer's bytes reached the agent's socket and the reader took them
    /// off it (nothing unacknowledged on the peer's side, nothing unread on ours).
    fn taken_off_the_socket(d_sock: &TcpStream) {
        let (ours, theirs) = (d_sock.local_addr().unwrap(), d_sock.peer_addr().unwrap());
        let deadline = Instant::now() + LIMIT;
        loop {
            let peer_unacked = tcp_queues(theirs, ours).map(|(tx, _)| tx);
            let our_unread = tcp_queues(ours, theirs).map(|(_, rx)| rx);
            match (peer_unacked, our_unread) {
                (Some(0), Some(0)) => return,
                (None, _) | (_, None) => panic!("no /proc/net/tcp entry for {ours} <-> {theirs}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "the reader never took the bytes");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn tls_records_split_across_reads_are_put_back_together() {
        let (d, mut peer) = connect(true);
        let sock = d.socket().try_clone().unwrap();
        // Full-size records (16 KiB of plaintext) are longer than one raw read, so each
        // arrives in at least two whatever the timing.
        let long = payload(3, 0, 3 * 16 * 1024 + 123);
        let got = read_on_thread(d, long.len() + 18);
        peer.send(&long);
        // One short record cut inside its 5-byte header, then inside its body, each part
        // taken off the socket before the next is sent.
        let wire = peer.seal(b"split record here!");
        for part in [&wire[..2], &wire[2..9], &wire[9..]] {
            peer.sock.write_all(part).unwrap();
            taken_off_the_socket(&sock);
        }
        let got = got
            .recv_timeout(LIMIT)
            .expect("the split records were never returned")
            .unwrap();
        assert!(
            got[..long.len()] == long[..],
            "the long records came back corrupted"
        );
        assert_eq!(&got[long.len()..], b"split record here!");
    }
}
