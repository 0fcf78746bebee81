//! Every HTTP exchange the agent makes, carried by ureq: jobs and probes to
//! the local backends, doctor's test completion, and the pairing API.
//!
//! ureq speaks HTTP; this module decides how a call is reached and bounded:
//!
//! - **Reach.** Backends directly, never through a proxy (ureq would take one
//!   from the environment); the coordinator's host the way the session reaches
//!   it, through our proxy rules and TLS ([`coordinator`]).
//! - **One ureq agent per call.** A cancel shuts exactly that call down
//!   ([`ureq::Agent::shutdown`] closes its socket, which ends a blocked read at
//!   once), and nothing is pooled between calls.
//! - **Four limits.** Connect (`timeout_connect`), first byte: sending the
//!   request and receiving the response head (`timeout_send_request`,
//!   `timeout_send_body`, `timeout_recv_response`), idle between body reads,
//!   and the overall deadline (`timeout_global`). The idle limit is ureq's
//!   per-read timeout, switched on only once the head is in ([`Watch`]): set
//!   for the whole call it would also cut the wait for the first byte, which
//!   may rightly be much longer (a cold model load).

pub mod coordinator;

use crate::cancel::Cancel;
use crate::endpoint::Endpoint;
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, NextTimeout, TcpConnector, Transport,
};
use ureq::Agent;

use crate::host::USER_AGENT;

/// The phase in which a call ran out of time.
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
            Phase::Deadline => "the deadline",
        }
    }

    fn of(t: ureq::Timeout) -> Phase {
        match t {
            ureq::Timeout::Resolve | ureq::Timeout::Connect => Phase::Connect,
            ureq::Timeout::PerRead | ureq::Timeout::RecvBody => Phase::Idle,
            ureq::Timeout::Global | ureq::Timeout::PerCall => Phase::Deadline,
            // Sending the request and waiting for the head: the first-byte allowance.
            _ => Phase::FirstByte,
        }
    }
}

/// Why a call failed.
#[derive(Debug)]
pub enum HttpError {
    /// No connection was made: no such host, refused, no route, or (for the
    /// coordinator's host) the proxy or TLS said no.
    Unreachable(ureq::Error),
    /// A time limit passed; the phase says which.
    Timeout(Phase),
    /// Stopped through the call's [`Cancel`].
    Cancelled,
    /// The exchange failed once connected: HTTP framing broken, the peer gone
    /// early, a head or body over its cap.
    Failed(ureq::Error),
}

/// ureq's text without its "io: " and "other: " prefixes.
struct Plain<'a>(&'a ureq::Error);

impl fmt::Display for Plain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ureq::Error::Io(e) => write!(f, "{e}"),
            ureq::Error::Other(e) => write!(f, "{e}"),
            e => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Unreachable(e) => write!(f, "cannot connect: {}", Plain(e)),
            HttpError::Timeout(p) => write!(f, "timed out {}", p.as_str()),
            HttpError::Cancelled => f.write_str("cancelled"),
            HttpError::Failed(e) => write!(f, "{}", Plain(e)),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Unreachable(e) | HttpError::Failed(e) => Some(e),
            HttpError::Timeout(_) | HttpError::Cancelled => None,
        }
    }
}

/// Time limits for one call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    /// From the request's first byte out to the response head in.
    pub first_byte: Duration,
    /// Each wait for more of the body.
    pub idle: Duration,
    /// Absolute end; every phase ends there at the latest.
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
}

pub struct Request<'a> {
    pub method: &'a str,
    /// Joined under the target's base path.
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// Sent as `Authorization: Bearer <key>` (OpenAI-compatible servers' scheme).
    pub api_key: Option<&'a str>,
    pub body: Option<&'a [u8]>,
}

/// What a call's [`Watch`] has seen, for the caller to read.
#[derive(Debug, Default)]
struct CallState {
    connected: AtomicBool,
    head_received: AtomicBool,
}

/// Last link of every connector chain: notes that a connection exists (so a
/// failure can be told apart from "unreachable") and wraps it in [`Watched`].
#[derive(Debug)]
struct Watch {
    state: Arc<CallState>,
    idle: Duration,
}

impl<In: Transport> Connector<In> for Watch {
    type Out = Watched<In>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Watched<In>>, ureq::Error> {
        Ok(chained.map(|inner| {
            self.state.connected.store(true, Ordering::SeqCst);
            Watched {
                inner,
                state: Arc::clone(&self.state),
                idle: self.idle,
            }
        }))
    }
}

/// A transport whose reads, once the response head is in, each wait at most
/// the idle limit.
#[derive(Debug)]
struct Watched<T> {
    inner: T,
    state: Arc<CallState>,
    idle: Duration,
}

impl<T: Transport> Transport for Watched<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, mut timeout: NextTimeout) -> Result<bool, ureq::Error> {
        if self.state.head_received.load(Ordering::Relaxed) {
            timeout.per_read = Some(self.idle.into());
        }
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// Name lookup on the calling thread, as any blocking client does. ureq's
/// default resolver starts a thread per lookup whenever a call has a deadline
/// (every call here has one), and backend hosts are nearly always IP literals.
#[derive(Debug)]
struct Lookup;

impl Resolver for Lookup {
    fn resolve(
        &self,
        uri: &Uri,
        _: &Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let default_port = match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let found = crate::net::resolve(host, port).map_err(|e| ureq::Error::Other(Box::new(e)))?;
        let mut addrs = self.empty();
        for a in found {
            if addrs.try_push(a).is_err() {
                break;
            }
        }
        Ok(addrs)
    }
}

/// Sends a request to a backend and reads the response head.
pub fn send(
    target: &Endpoint,
    req: &Request,
    limits: Limits,
    cancel: &Cancel,
) -> Result<Response, HttpError> {
    exchange(TcpConnector::default(), Lookup, target, req, limits, cancel)
}

/// The one way a call runs, whatever connects it.
fn exchange(
    connector: impl Connector<Out = impl Transport>,
    resolver: impl Resolver,
    target: &Endpoint,
    req: &Request,
    limits: Limits,
    cancel: &Cancel,
) -> Result<Response, HttpError> {
    if cancel.is_cancelled() {
        return Err(HttpError::Cancelled);
    }
    let global = match limits.deadline {
        None => None,
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Some(left),
            _ => return Err(HttpError::Timeout(Phase::Deadline)),
        },
    };
    let config = Agent::config_builder()
        // Backends are local by design, and the coordinator's host goes
        // through our own proxy rules: never a proxy from ureq's reading of
        // the environment.
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(USER_AGENT)
        .max_idle_connections(0)
        .timeout_global(global)
        .timeout_connect(Some(limits.connect))
        .timeout_send_request(Some(limits.first_byte))
        .timeout_send_body(Some(limits.first_byte))
        .timeout_recv_response(Some(limits.first_byte))
        .build();
    let state = Arc::new(CallState::default());
    let watch = Watch {
        state: Arc::clone(&state),
        idle: limits.idle,
    };
    let agent = Agent::with_parts(config, connector.chain(watch), resolver);
    let stop = agent.clone();
    cancel.on_cancel(move || stop.shutdown());

    // Without the scheme's default port, which ureq then leaves out of the
    // Host header too (some virtual hosts compare it exactly).
    let url = format!(
        "{}://{}{}",
        target.scheme.as_str(),
        target.host_header(),
        target.join(req.path)
    );
    // Nothing is pooled, so the connection ends with the exchange; saying so
    // lets the server free what it holds for it at once too.
    let mut builder = ureq::http::Request::builder()
        .method(req.method)
        .uri(url)
        .header("Connection", "close");
    for (k, v) in req.headers {
        builder = builder.header(*k, *v);
    }
    if let Some(key) = req.api_key {
        builder = builder.header("Authorization", format!("Bearer {key}"));
    }
    let result = match req.body {
        Some(body) => builder.body(body).map(|r| agent.run(r)),
        None => builder.body(()).map(|r| agent.run(r)),
    };
    let failed = |e| classify(e, state.connected.load(Ordering::SeqCst), cancel);
    let resp = result
        .map_err(|e| HttpError::Failed(ureq::Error::Http(e)))?
        .map_err(failed)?;
    state.head_received.store(true, Ordering::SeqCst);
    Ok(Response {
        status: resp.status().as_u16(),
        body: resp.into_body().into_reader(),
        cancel: cancel.clone(),
    })
}

fn classify(e: ureq::Error, connected: bool, cancel: &Cancel) -> HttpError {
    match e {
        // Whatever the shutdown looked like from inside (an EOF, a reset).
        _ if cancel.is_cancelled() => HttpError::Cancelled,
        ureq::Error::Timeout(t) => HttpError::Timeout(Phase::of(t)),
        e if !connected => HttpError::Unreachable(e),
        e => HttpError::Failed(e),
    }
}

/// A response whose body is read as it arrives.
pub struct Response {
    pub status: u16,
    body: ureq::BodyReader<'static>,
    cancel: Cancel,
}

impl Response {
    /// Reads the next piece of the body; Ok(0) at its end. Each wait is
    /// bounded by the idle limit and the deadline.
    pub fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        let r = self.body.read(buf);
        // A shutdown can read as a clean end of a close-delimited body.
        if self.cancel.is_cancelled() {
            return Err(HttpError::Cancelled);
        }
        r.map_err(|e| classify(ureq::Error::from(e), true, &self.cancel))
    }

    /// At most the first `max` bytes of the body, for error messages; a body
    /// that breaks off yields what arrived.
    pub fn read_prefix(&mut self, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = (&mut self.body).take(max as u64).read_to_end(&mut out);
        out
    }

    /// The whole body, up to `max` bytes.
    pub fn read_to_end(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        (&mut self.body)
            .take((max as u64).saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| classify(ureq::Error::from(e), true, &self.cancel))?;
        if out.len() > max {
            return Err(HttpError::Failed(ureq::Error::BodyExceedsLimit(max as u64)));
        }
        Ok(out)
    }
}

/// A probe's answer: the status and the body read as `T` (the body's error when it is
/// not one; callers that only look at the status ask for `IgnoredAny`).
pub type JsonAnswer<T> = (u16, Result<T, serde_json::Error>);

/// GET (or POST with a JSON body) returning the status and the body as `T`, for probes.
pub fn json_call<T: serde::de::DeserializeOwned>(
    target: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    api_key: Option<&str>,
    total: Duration,
    max_body: usize,
) -> Result<JsonAnswer<T>, HttpError> {
    let json: &[(&str, &str)] = match body {
        Some(_) => &[("Content-Type", "application/json")],
        None => &[],
    };
    let req = Request {
        method,
        path,
        headers: json,
        api_key,
        body,
    };
    let mut resp = send(target, &req, Limits::quick(total), &Cancel::default())?;
    let bytes = resp.read_to_end(max_body)?;
    Ok((resp.status, serde_json::from_slice(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    /// Serves one connection: reads the request head, waits `pause`, writes
    /// `reply`, then holds the socket for `hold`. Sends what it read, and
    /// when it saw the client close, on the returned channel.
    fn serve_once(
        pause: Duration,
        reply: &'static [u8],
        hold: Duration,
    ) -> (Endpoint, mpsc::Receiver<(String, Option<Instant>)>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            thread::sleep(pause);
            let _ = s.write_all(reply);
            s.set_read_timeout(Some(hold.max(Duration::from_millis(1))))
                .unwrap();
            // Ok(0): the client closed; a timeout: it kept the socket for `hold`.
            let closed = matches!(s.read(&mut buf), Ok(0)).then(Instant::now);
            let _ = tx.send((String::from_utf8_lossy(&head).into_owned(), closed));
        });
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        (ep, rx)
    }

    fn get(path: &str) -> Request<'_> {
        Request {
            method: "GET",
            path,
            headers: &[],
            api_key: None,
            body: None,
        }
    }

    fn limits(first_byte_ms: u64, idle_ms: u64) -> Limits {
        Limits {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_millis(first_byte_ms),
            idle: Duration::from_millis(idle_ms),
            deadline: None,
        }
    }

    #[test]
    fn reads_chunked_length_and_close_delimited_bodies() {
        for (reply, status, body) in [
            (
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"[..],
                200,
                &b"hello world"[..],
            ),
            (b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabcdef", 404, b"abc"),
            (b"HTTP/1.0 200 OK\r\n\r\nrest", 200, b"rest"),
        ] {
            let (ep, _) = serve_once(Duration::ZERO, reply, Duration::ZERO);
            let mut r = send(&ep, &get("/x"), limits(2000, 2000), &Cancel::default()).unwrap();
            assert_eq!(r.status, status);
            assert_eq!(r.read_to_end(1 << 20).unwrap(), body);
        }
    }

    #[test]
    fn the_request_names_its_host_and_path_like_the_old_client() {
        let (ep, seen) = serve_once(
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            Duration::ZERO,
        );
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{}/v1/", ep.port)).unwrap();
        let req = Request {
            method: "POST",
            path: "/models",
            headers: &[],
            api_key: Some("k"),
            body: Some(b"{}"),
        };
        let mut r = send(&ep, &req, limits(2000, 2000), &Cancel::default()).unwrap();
        r.read_to_end(10).unwrap();
        let head = seen.recv().unwrap().0.to_ascii_lowercase();
        assert!(head.starts_with("post /v1/models http/1.1\r\n"), "{head}");
        for line in [
            format!("host: 127.0.0.1:{}\r\n", ep.port),
            "authorization: bearer k\r\n".into(),
            "content-length: 2\r\n".into(),
            "connection: close\r\n".into(),
            format!("user-agent: {}\r\n", USER_AGENT.to_ascii_lowercase()),
        ] {
            assert!(head.contains(&line), "{line:?} in {head}");
        }
    }

    #[test]
    fn refused_is_unreachable() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = send(&ep, &get("/"), limits(1000, 1000), &Cancel::default())
            .err()
            .unwrap();
        assert!(matches!(e, HttpError::Unreachable(_)), "{e:?}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn the_first_byte_may_take_longer_than_the_idle_limit() {
        // A cold model load: the head comes after 400 ms, well past the idle
        // limit of 150 ms but within the first-byte allowance.
        let (ep, _) = serve_once(
            Duration::from_millis(400),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Duration::ZERO,
        );
        let mut r = send(&ep, &get("/"), limits(2000, 150), &Cancel::default()).unwrap();
        assert_eq!(r.read_to_end(10).unwrap(), b"ok");
    }

    #[test]
    fn silence_times_out_in_the_phase_it_happens() {
        let (ep, _) = serve_once(Duration::from_secs(3), b"", Duration::ZERO);
        let t = Instant::now();
        let e = send(&ep, &get("/"), limits(200, 2000), &Cancel::default())
            .err()
            .unwrap();
        assert!(matches!(e, HttpError::Timeout(Phase::FirstByte)), "{e:?}");
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );

        let (ep, _) = serve_once(
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
            Duration::from_secs(3),
        );
        let mut r = send(&ep, &get("/"), limits(2000, 200), &Cancel::default()).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(r.read_body(&mut buf).unwrap(), 2);
        let t = Instant::now();
        let e = r.read_body(&mut buf).err().unwrap();
        assert!(matches!(e, HttpError::Timeout(Phase::Idle)), "{e:?}");
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );

        let (ep, _) = serve_once(
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
            Duration::from_secs(3),
        );
        let deadline = Limits {
            deadline: Some(Instant::now() + Duration::from_millis(300)),
            ..limits(2000, 2000)
        };
        let t = Instant::now();
        let mut r = send(&ep, &get("/"), deadline, &Cancel::default()).unwrap();
        let e = r.read_to_end(100).err().unwrap();
        assert!(matches!(e, HttpError::Timeout(Phase::Deadline)), "{e:?}");
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );

        let passed = Limits {
            deadline: Some(Instant::now()),
            ..limits(2000, 2000)
        };
        let e = send(&ep, &get("/"), passed, &Cancel::default())
            .err()
            .unwrap();
        assert!(matches!(e, HttpError::Timeout(Phase::Deadline)), "{e:?}");
    }

    #[test]
    fn cancel_closes_the_socket_under_a_blocked_read_at_once() {
        let (ep, seen) = serve_once(
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
            Duration::from_secs(5),
        );
        let cancel = Cancel::default();
        let mut r = send(&ep, &get("/"), limits(5000, 5000), &cancel).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(r.read_body(&mut buf).unwrap(), 2);
        let c2 = cancel.clone();
        let canceller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            let at = Instant::now();
            assert!(c2.cancel());
            at
        });
        let e = r.read_body(&mut buf).err().unwrap();
        assert!(matches!(e, HttpError::Cancelled), "{e:?}");
        let cancelled_at = canceller.join().unwrap();
        let closed = seen.recv().unwrap().1.expect("the server saw the close");
        assert!(
            closed.saturating_duration_since(cancelled_at) < Duration::from_millis(100),
            "the server saw the close {:?} after the cancel",
            closed.saturating_duration_since(cancelled_at)
        );
    }

    #[test]
    fn a_call_cancelled_before_it_starts_never_connects() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let ep = Endpoint::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap();
        let cancel = Cancel::default();
        cancel.cancel();
        let e = send(&ep, &get("/"), limits(1000, 1000), &cancel)
            .err()
            .unwrap();
        assert!(matches!(e, HttpError::Cancelled), "{e:?}");
        assert!(l.accept().is_err(), "no connection was made");
    }

    #[test]
    fn error_body_prefix_is_cut_not_lost_and_bodies_are_capped() {
        let (ep, _) = serve_once(
            Duration::ZERO,
            b"HTTP/1.1 500 Oops\r\nContent-Length: 5000\r\n\r\nboom and then",
            Duration::ZERO,
        );
        let mut r = send(&ep, &get("/"), limits(2000, 2000), &Cancel::default()).unwrap();
        assert_eq!(r.status, 500);
        assert_eq!(r.read_prefix(4), b"boom");

        let (ep, _) = serve_once(
            Duration::ZERO,
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
            Duration::ZERO,
        );
        let mut r = send(&ep, &get("/"), limits(2000, 2000), &Cancel::default()).unwrap();
        let e = r.read_to_end(5).err().unwrap();
        assert!(matches!(e, HttpError::Failed(_)), "{e:?}");
    }

    #[test]
    fn a_reply_that_is_not_http_fails_once_connected() {
        let (ep, _) = serve_once(
            Duration::ZERO,
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            Duration::ZERO,
        );
        let e = send(&ep, &get("/"), limits(2000, 2000), &Cancel::default())
            .err()
            .unwrap();
        assert!(matches!(e, HttpError::Failed(_)), "{e:?}");
    }
}
