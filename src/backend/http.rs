//! A small blocking HTTP/1.1 client for the local backends (plain sockets)
//! and the pairing API (TLS over a socket the caller opened).
//!
//! Why not ureq: a job must be stoppable from another thread at once
//! (cancel, deadline, session end), and the only immediate way to stop a
//! blocked read is to shut its socket down. Owning the `TcpStream` gives us
//! that, and per-phase timeouts (connect, first byte, idle, total deadline).
//! It also keeps a second HTTP stack out of a binary with a size budget.

use crate::endpoint::Endpoint;
use rustls::{ClientConnection, StreamOwned};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest status line or header line accepted.
const MAX_HEADER_LINE: usize = 8 * 1024;
const MAX_HEADERS: usize = 100;

/// The phase in which a request ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    FirstByte,
    Idle,
    Deadline,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connecting",
            Phase::FirstByte => "waiting for the first byte",
            Phase::Idle => "waiting between events",
            Phase::Deadline => "the job deadline",
        }
    }
}

#[derive(Debug)]
pub enum HttpError {
    /// Nothing accepted the connection (refused, unreachable, DNS).
    Unreachable(String),
    Timeout(Phase),
    /// Stopped from another thread.
    Cancelled,
    /// The response broke HTTP/1.1 framing.
    Malformed(String),
    /// A header, line or body exceeded its cap.
    TooLarge(&'static str),
    /// The connection failed after it was established.
    Io(io::Error),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Unreachable(e) => write!(f, "backend unreachable: {e}"),
            HttpError::Timeout(p) => write!(f, "timed out {}", p.as_str()),
            HttpError::Cancelled => f.write_str("cancelled"),
            HttpError::Malformed(e) => write!(f, "malformed HTTP response: {e}"),
            HttpError::TooLarge(what) => write!(f, "{what} too large"),
            HttpError::Io(e) => write!(f, "connection failed: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Lets another thread stop a request at once by shutting its socket down.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    socket: Mutex<Option<TcpStream>>,
}

impl fmt::Debug for Cancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cancel({})", self.is_cancelled())
    }
}

impl Cancel {
    /// Stops the request; returns false if it was already cancelled.
    pub fn cancel(&self) -> bool {
        if self.inner.cancelled.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Some(s) = self
            .inner
            .socket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        true
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    fn attach(&self, sock: &TcpStream) -> Result<(), HttpError> {
        let mut slot = self.inner.socket.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock so a cancel cannot slip between check and attach.
        if self.is_cancelled() {
            return Err(HttpError::Cancelled);
        }
        *slot = Some(sock.try_clone().map_err(HttpError::Io)?);
        Ok(())
    }
}

/// Time limits for one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    /// Absolute end; every wait is cut to it.
    pub deadline: Option<Instant>,
}

impl Limits {
    /// One overall budget for short calls such as discovery probes.
    pub fn quick(total: Duration) -> Limits {
        Limits {
            connect: total,
            first_byte: total,
            idle: total,
            deadline: Some(Instant::now() + total),
        }
    }

    fn wait(&self, phase_limit: Duration, phase: Phase) -> Result<(Duration, Phase), HttpError> {
        match self.deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(HttpError::Timeout(Phase::Deadline));
                }
                Ok(if left < phase_limit {
                    (left, Phase::Deadline)
                } else {
                    (phase_limit, phase)
                })
            }
            None => Ok((phase_limit, phase)),
        }
    }
}

/// The bytes under one request: a plain socket, or TLS over one.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The socket beneath, for timeouts and cancellation.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            // A server that closes without close_notify: the end of the bytes,
            // as over plain TCP. Length and chunked framing still call an early
            // end an error, and a close-delimited body is checked by its parser.
            Stream::Tls(t) => match t.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
}

enum Framing {
    Length(u64),
    Chunked { left_in_chunk: u64, done: bool },
    UntilClose,
}

/// A response whose body is read incrementally.
pub struct Response {
    pub status: u16,
    reader: BufReader<Stream>,
    framing: Framing,
    limits: Limits,
    cancel: Cancel,
}

fn connect(target: &Endpoint, limits: &Limits) -> Result<TcpStream, HttpError> {
    let (timeout, phase) = limits.wait(limits.connect, Phase::Connect)?;
    let addrs = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Unreachable(format!("cannot resolve {}: {e}", target.host)))?;
    let mut last = HttpError::Unreachable(format!("{} has no address", target.host));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                last = HttpError::Timeout(phase)
            }
            Err(e) => last = HttpError::Unreachable(format!("{addr}: {e}")),
        }
    }
    Err(last)
}

fn io_err(e: io::Error, phase: Phase, cancel: &Cancel) -> HttpError {
    if cancel.is_cancelled() {
        HttpError::Cancelled
    } else if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        HttpError::Timeout(phase)
    } else {
        HttpError::Io(e)
    }
}

/// Connects to `target` and sends a request; see [`exchange`].
pub fn send(
    target: &Endpoint,
    req: &Request,
    limits: Limits,
    cancel: &Cancel,
) -> Result<Response, HttpError> {
    let sock = connect(target, &limits)?;
    exchange(Stream::Plain(sock), target, req, limits, cancel)
}

/// Sends a request over an open stream and reads the status line and headers.
pub fn exchange(
    mut stream: Stream,
    target: &Endpoint,
    req: &Request,
    limits: Limits,
    cancel: &Cancel,
) -> Result<Response, HttpError> {
    cancel.attach(stream.tcp())?;
    let _ = stream.tcp().set_nodelay(true);
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: usepod-edge/{}\r\nConnection: close\r\n",
        req.method,
        target.join(req.path),
        target.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in req.headers {
        head += &format!("{k}: {v}\r\n");
    }
    if let Some(body) = req.body {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    head += "\r\n";
    let (t, phase) = limits.wait(limits.first_byte, Phase::FirstByte)?;
    stream
        .tcp()
        .set_write_timeout(Some(t))
        .and_then(|_| stream.tcp().set_read_timeout(Some(t)))
        .map_err(HttpError::Io)?;
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(req.body.unwrap_or_default()))
        .and_then(|_| stream.flush())
        .map_err(|e| io_err(e, phase, cancel))?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    reader
        .get_ref()
        .tcp()
        .set_read_timeout(Some(t))
        .map_err(HttpError::Io)?;
    let status_line = read_line(&mut reader, phase, cancel)?;
    let status = parse_status(&status_line)?;
    let mut headers = Vec::new();
    loop {
        let (t, phase) = limits.wait(limits.idle, Phase::Idle)?;
        reader
            .get_ref()
            .tcp()
            .set_read_timeout(Some(t))
            .map_err(HttpError::Io)?;
        let line = read_line(&mut reader, phase, cancel)?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::TooLarge("response header count"));
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let framing = if header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        Framing::Chunked {
            left_in_chunk: 0,
            done: false,
        }
    } else if let Some(len) = header("content-length") {
        Framing::Length(
            len.parse()
                .map_err(|_| HttpError::Malformed(format!("content-length {len:?}")))?,
        )
    } else {
        Framing::UntilClose
    };
    Ok(Response {
        status,
        reader,
        framing,
        limits,
        cancel: cancel.clone(),
    })
}

fn parse_status(line: &str) -> Result<u16, HttpError> {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse()
            .map_err(|_| HttpError::Malformed(format!("status line {line:?}"))),
        _ => Err(HttpError::Malformed(format!("status line {line:?}"))),
    }
}

/// One CRLF- or LF-terminated line, capped in length.
fn read_line(
    r: &mut BufReader<Stream>,
    phase: Phase,
    cancel: &Cancel,
) -> Result<String, HttpError> {
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other.map_err(|e| io_err(e, phase, cancel))?,
        };
        if buf.is_empty() {
            return Err(if cancel.is_cancelled() {
                HttpError::Cancelled
            } else {
                HttpError::Malformed("connection closed inside the response head".into())
            });
        }
        let (take, found) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if line.len() > MAX_HEADER_LINE {
            return Err(HttpError::TooLarge("response header line"));
        }
        if found {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            return String::from_utf8(line)
                .map_err(|_| HttpError::Malformed("non-UTF-8 header".into()));
        }
    }
}

impl Response {
    /// Reads the next piece of the body; Ok(0) at its end. Each wait is bounded
    /// by the idle limit and the deadline.
    pub fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        let (t, phase) = self.limits.wait(self.limits.idle, Phase::Idle)?;
        self.reader
            .get_ref()
            .tcp()
            .set_read_timeout(Some(t))
            .map_err(HttpError::Io)?;
        let cancel = self.cancel.clone();
        let raw = |r: &mut BufReader<Stream>, buf: &mut [u8]| {
            loop {
                // Signals (the shutdown's SIGTERM) interrupt timed socket reads.
                match r.read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => return other.map_err(|e| io_err(e, phase, &cancel)),
                }
            }
        };
        let n = match &mut self.framing {
            Framing::Length(0) => 0,
            Framing::Length(left) => {
                let cap = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = raw(&mut self.reader, &mut buf[..cap])?;
                if n == 0 {
                    return Err(self.closed_early());
                }
                *left -= n as u64;
                n
            }
            Framing::UntilClose => raw(&mut self.reader, buf)?,
            Framing::Chunked { done: true, .. } => 0,
            Framing::Chunked {
                left_in_chunk,
                done,
            } => {
                if *left_in_chunk == 0 {
                    let size_line = read_line(&mut self.reader, phase, &cancel)?;
                    let size_line = if size_line.is_empty() {
                        // CRLF that ended the previous chunk
                        read_line(&mut self.reader, phase, &cancel)?
                    } else {
                        size_line
                    };
                    let hex = size_line.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(hex, 16)
                        .map_err(|_| HttpError::Malformed(format!("chunk size {size_line:?}")))?;
                    if size == 0 {
                        *done = true;
                        return Ok(0);
                    }
                    *left_in_chunk = size;
                }
                let cap = buf
                    .len()
                    .min(usize::try_from(*left_in_chunk).unwrap_or(usize::MAX));
                let n = raw(&mut self.reader, &mut buf[..cap])?;
                if n == 0 {
                    return Err(self.closed_early());
                }
                *left_in_chunk -= n as u64;
                n
            }
        };
        Ok(n)
    }

    fn closed_early(&self) -> HttpError {
        if self.cancel.is_cancelled() {
            HttpError::Cancelled
        } else {
            HttpError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "backend closed the stream early",
            ))
        }
    }

    /// At most the first `max` bytes of the body, for error messages; a body
    /// that breaks off yields what arrived.
    pub fn read_prefix(&mut self, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while out.len() < max {
            match self.read_body(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n.min(max - out.len())]),
            }
        }
        out
    }

    /// The whole body, up to `max` bytes.
    pub fn read_to_end(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = self.read_body(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > max {
                return Err(HttpError::TooLarge("response body"));
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// GET (or POST with a JSON body) returning status and parsed JSON, for probes.
pub fn json_call(
    target: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
    total: Duration,
    max_body: usize,
) -> Result<(u16, Option<serde_json::Value>), HttpError> {
    let body_bytes = body.map(|b| b.to_string().into_bytes());
    let mut all_headers: Vec<(&str, &str)> = headers.to_vec();
    if body_bytes.is_some() {
        all_headers.push(("Content-Type", "application/json"));
    }
    let req = Request {
        method,
        path,
        headers: &all_headers,
        body: body_bytes.as_deref(),
    };
    let mut resp = send(target, &req, Limits::quick(total), &Cancel::default())?;
    let bytes = resp.read_to_end(max_body)?;
    Ok((resp.status, serde_json::from_slice(&bytes).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn serve_once(reply: &'static [u8], hold: Duration) -> Endpoint {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(reply);
                thread::sleep(hold);
            }
        });
        Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap()
    }

    fn get(ep: &Endpoint, limits: Limits) -> Result<(u16, Vec<u8>), HttpError> {
        let req = Request {
            method: "GET",
            path: "/x",
            headers: &[],
            body: None,
        };
        let mut r = send(ep, &req, limits, &Cancel::default())?;
        let body = r.read_to_end(1 << 20)?;
        Ok((r.status, body))
    }

    #[test]
    fn reads_chunked_length_and_close_delimited_bodies() {
        let ep = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
            Duration::ZERO,
        );
        assert_eq!(
            get(&ep, Limits::quick(Duration::from_secs(5))).unwrap(),
            (200, b"hello world".to_vec())
        );
        let ep = serve_once(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabcdef",
            Duration::ZERO,
        );
        assert_eq!(
            get(&ep, Limits::quick(Duration::from_secs(5))).unwrap(),
            (404, b"abc".to_vec())
        );
        let ep = serve_once(b"HTTP/1.0 200 OK\n\nrest", Duration::ZERO);
        assert_eq!(
            get(&ep, Limits::quick(Duration::from_secs(5))).unwrap(),
            (200, b"rest".to_vec())
        );
    }

    #[test]
    fn refused_is_unreachable_and_silence_times_out_by_phase() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(matches!(
            get(&ep, Limits::quick(Duration::from_secs(2))),
            Err(HttpError::Unreachable(_))
        ));

        let ep = serve_once(b"", Duration::from_secs(3));
        let limits = Limits {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_millis(200),
            idle: Duration::from_secs(1),
            deadline: None,
        };
        assert!(matches!(
            get(&ep, limits),
            Err(HttpError::Timeout(Phase::FirstByte))
        ));

        let ep = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
            Duration::from_secs(3),
        );
        let limits = Limits {
            deadline: Some(Instant::now() + Duration::from_millis(300)),
            ..limits
        };
        let t = Instant::now();
        assert!(matches!(
            get(&ep, limits),
            Err(HttpError::Timeout(Phase::Deadline))
        ));
        assert!(t.elapsed() < Duration::from_millis(1000));
    }

    #[test]
    fn cancel_unblocks_a_read_at_once() {
        let ep = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
            Duration::from_secs(5),
        );
        let cancel = Cancel::default();
        let req = Request {
            method: "GET",
            path: "/",
            headers: &[],
            body: None,
        };
        let mut r = send(&ep, &req, Limits::quick(Duration::from_secs(10)), &cancel).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(r.read_body(&mut buf).unwrap(), 2);
        let c2 = cancel.clone();
        let t = Instant::now();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            assert!(c2.cancel());
        });
        assert!(matches!(r.read_body(&mut buf), Err(HttpError::Cancelled)));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(
            !cancel.cancel(),
            "second cancel reports it was already done"
        );
    }

    #[test]
    fn error_body_prefix_is_cut_not_lost() {
        let ep = serve_once(
            b"HTTP/1.1 500 Oops\r\nContent-Length: 5000\r\n\r\nboom and then",
            Duration::ZERO,
        );
        let req = Request {
            method: "GET",
            path: "/",
            headers: &[],
            body: None,
        };
        let mut r = send(
            &ep,
            &req,
            Limits::quick(Duration::from_secs(5)),
            &Cancel::default(),
        )
        .unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(r.read_prefix(4), b"boom");
    }

    #[test]
    fn oversized_header_line_is_refused() {
        static BIG: [u8; 20_000] = [b'a'; 20_000];
        let ep = serve_once(&BIG, Duration::ZERO);
        assert!(matches!(
            get(&ep, Limits::quick(Duration::from_secs(5))),
            Err(HttpError::TooLarge(_))
        ));
    }
}
