//! The sending half of a session's connection, shared by every thread that sends.
//!
//! Job threads write their own frames (a `job_chunk` goes out from the thread that read
//! it from the backend, with no hop through the writer thread and its wake-ups), the
//! writer thread sends what is queued (heartbeats, pings, replies, the Close). One lock
//! keeps frames whole and in order. Frames are built here, into one reused buffer, and
//! leave in one `write` each: tungstenite's `send` takes an owned message, which costs an
//! allocation per frame.
//!
//! The reader's own WebSocket still answers pings and Close on the reader's handle; the
//! connection ([`super::Duplex`]) takes each `write` whole, so the two never interleave.

use super::conn::Conn;
use crate::cancel::Cancel;
use crate::lock::lock;
use crate::outgoing::Direct;
use std::io;
use std::sync::Mutex;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// A frame this side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Text(&'a [u8]),
    Ping,
    Close(u16, &'a str),
}

/// Appends one final, masked client frame (RFC 6455 section 5.2) to `out`: the header
/// by tungstenite, the payload written and masked in place.
pub fn encode(out: &mut Vec<u8>, frame: Frame, mask: [u8; 4]) {
    let code;
    let (opcode, head, body): (OpCode, &[u8], &[u8]) = match frame {
        Frame::Text(text) => (OpCode::Data(Data::Text), &[], text),
        Frame::Ping => (OpCode::Control(Control::Ping), &[], &[]),
        Frame::Close(c, reason) => {
            code = c.to_be_bytes();
            (OpCode::Control(Control::Close), &code, reason.as_bytes())
        }
    };
    let header = FrameHeader {
        opcode,
        mask: Some(mask),
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format((head.len() + body.len()) as u64, out);
    let at = out.len();
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    for (i, b) in out[at..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Frame masks from the OS's secure random source, drawn a pool at a time so that a
/// frame costs no system call of its own.
struct Masks {
    pool: [u8; 512],
    used: usize,
}

impl Masks {
    fn new() -> Masks {
        Masks {
            pool: [0; 512],
            used: 512,
        }
    }

    fn next(&mut self) -> [u8; 4] {
        if self.used + 4 > self.pool.len() {
            let source = rustls::crypto::ring::default_provider().secure_random;
            if source.fill(&mut self.pool).is_err() {
                // Masks only keep intermediaries from reading frames as HTTP; a
                // non-cryptographic draw still does that.
                for chunk in self.pool.chunks_mut(8) {
                    let bits = (crate::jitter::unit() * (1u64 << 53) as f64) as u64;
                    chunk.copy_from_slice(&bits.to_le_bytes()[..chunk.len()]);
                }
            }
            self.used = 0;
        }
        let mut mask = [0; 4];
        mask.copy_from_slice(&self.pool[self.used..self.used + 4]);
        self.used += 4;
        mask
    }
}

struct State<S> {
    conn: S,
    /// The frame being sent; reused, so sending allocates nothing once it has grown.
    buf: Vec<u8>,
    masks: Masks,
    /// After our Close, or after a failed write: nothing more goes out.
    closed: bool,
}

/// The connection's sending half; see the module comment.
pub struct Wire<S> {
    state: Mutex<State<S>>,
}

impl<S: Conn> Wire<S> {
    /// `conn`: a writer handle on the session's connection.
    pub fn new(conn: S) -> Wire<S> {
        Wire {
            state: Mutex::new(State {
                conn,
                buf: Vec::new(),
                masks: Masks::new(),
                closed: false,
            }),
        }
    }

    /// Sends one frame in one write. After a Close, or once a write failed (the
    /// connection is then shut down, which wakes the reader), every send fails.
    pub fn send(&self, frame: Frame) -> io::Result<()> {
        self.send_unless(frame, || false).map(|_| ())
    }

    /// As [`Wire::send`], but sends nothing when `skip` says so under the lock;
    /// Ok(false) then.
    fn send_unless(&self, frame: Frame, skip: impl FnOnce() -> bool) -> io::Result<bool> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        if st.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the session is closing",
            ));
        }
        if skip() {
            return Ok(false);
        }
        st.buf.clear();
        let mask = st.masks.next();
        encode(&mut st.buf, frame, mask);
        if matches!(frame, Frame::Close(..)) {
            st.closed = true;
        }
        if let Err(e) = st.conn.write_all(&st.buf) {
            st.closed = true;
            st.conn.shutdown();
            return Err(e);
        }
        Ok(true)
    }
}

impl<S: Conn> Direct for Wire<S> {
    fn send_job(&self, cancel: &Cancel, text: &[u8]) -> bool {
        // Checked under the lock: once job_cancel is handled, nothing of the job
        // follows it.
        matches!(
            self.send_unless(Frame::Text(text), || cancel.is_cancelled()),
            Ok(true)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tungstenite::protocol::frame::FrameHeader;

    /// Reads `wire` back with tungstenite's own parser: header, then the unmasked payload.
    fn parse(wire: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut cursor = std::io::Cursor::new(wire);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let at = cursor.position() as usize;
        assert_eq!(wire.len() - at, len as usize, "length field");
        let mask = header.mask.expect("client frames are masked");
        let payload = wire[at..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        (header, payload)
    }

    #[test]
    fn frames_parse_back_for_every_length_form() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let text = vec![b'a'; len];
            let mut out = Vec::new();
            encode(&mut out, Frame::Text(&text), [1, 2, 3, 4]);
            let (header, payload) = parse(&out);
            assert!(header.is_final);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert_eq!(header.mask, Some([1, 2, 3, 4]));
            assert_eq!(payload, text, "len {len}");
        }
    }

    #[test]
    fn ping_and_close_frames() {
        let mut out = Vec::new();
        encode(&mut out, Frame::Ping, [9, 9, 9, 9]);
        let (header, payload) = parse(&out);
        assert_eq!(header.opcode, OpCode::Control(Control::Ping));
        assert!(payload.is_empty());

        out.clear();
        encode(&mut out, Frame::Close(1001, "bye"), [7, 0, 7, 0]);
        let (header, payload) = parse(&out);
        assert_eq!(header.opcode, OpCode::Control(Control::Close));
        assert_eq!(payload, b"\x03\xe9bye");
    }

    #[test]
    fn masks_vary_and_refill() {
        let mut masks = Masks::new();
        let drawn: Vec<[u8; 4]> = (0..300).map(|_| masks.next()).collect();
        let distinct: std::collections::HashSet<_> = drawn.iter().collect();
        assert!(distinct.len() > 290, "{} distinct of 300", distinct.len());
    }

    /// A connection that records what it was given, in writes.
    #[derive(Clone, Default)]
    struct Record {
        writes: std::sync::Arc<Mutex<Vec<Vec<u8>>>>,
        fail: bool,
        shut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl io::Read for Record {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Ok(0)
        }
    }

    impl io::Write for Record {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.fail {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            lock(&self.writes).push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Conn for Record {
        fn writer(&self) -> io::Result<Self> {
            Ok(self.clone())
        }
        fn seal_writers(&self) {}
        fn set_read_timeout(&self, _: Option<std::time::Duration>) -> io::Result<()> {
            Ok(())
        }
        fn set_write_timeout(&self, _: Option<std::time::Duration>) -> io::Result<()> {
            Ok(())
        }
        fn shutdown(&self) {
            self.shut.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn one_write_per_frame_and_nothing_after_close() {
        let rec = Record::default();
        let wire = Wire::new(rec.clone());
        let cancel = Cancel::default();
        assert!(wire.send_job(&cancel, b"{\"a\":1}"));
        wire.send(Frame::Ping).unwrap();
        wire.send(Frame::Close(1000, "")).unwrap();
        assert!(!wire.send_job(&cancel, b"late"));
        assert!(wire.send(Frame::Ping).is_err());
        let writes = lock(&rec.writes).clone();
        assert_eq!(writes.len(), 3);
        assert_eq!(parse(&writes[0]).1, b"{\"a\":1}");
    }

    #[test]
    fn a_cancelled_job_sends_nothing() {
        let rec = Record::default();
        let wire = Wire::new(rec.clone());
        let cancel = Cancel::default();
        cancel.cancel();
        assert!(!wire.send_job(&cancel, b"x"));
        assert!(lock(&rec.writes).is_empty());
        // The connection itself is still fine for others.
        assert!(wire.send_job(&Cancel::default(), b"y"));
    }

    #[test]
    fn a_failed_write_shuts_the_connection_and_closes_the_wire() {
        let rec = Record {
            fail: true,
            ..Record::default()
        };
        let wire = Wire::new(rec.clone());
        assert!(wire.send(Frame::Ping).is_err());
        assert!(rec.shut.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!wire.send_job(&Cancel::default(), b"x"));
    }
}
