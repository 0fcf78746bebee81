//! The CONNECT exchange that turns a connection to an HTTP proxy into a tunnel to
//! the coordinator; TLS then runs inside it, end to end.

use super::proxy::Proxy;
use crate::host::USER_AGENT;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Cap on the proxy's answer to CONNECT (status line and headers): a real one
/// is a few hundred bytes; anything bigger is not a proxy we can talk to.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;
const MAX_RESPONSE_HEADERS: usize = 64;

/// Why a CONNECT did not open a tunnel.
#[derive(Debug)]
pub enum TunnelError {
    /// Socket error; `WouldBlock`/`TimedOut` mean the deadline passed.
    Io(io::Error),
    /// The deadline passed between reads.
    Timeout,
    /// 407: the proxy wants (other) credentials.
    AuthRequired {
        sent_credentials: bool,
        /// The schemes offered in `Proxy-Authenticate`, e.g. `Basic`, `Negotiate`.
        offered: Vec<String>,
    },
    /// Any other non-2xx answer.
    Refused { status: u16, reason: String },
    /// Not HTTP, cut short, or too big.
    Malformed(String),
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::Io(e) => write!(f, "{e}"),
            TunnelError::Timeout => write!(f, "no answer to CONNECT in time (handshake_timeout_s)"),
            TunnelError::AuthRequired {
                sent_credentials,
                offered,
            } => {
                if *sent_credentials {
                    write!(f, "407 Proxy Authentication Required: the proxy rejected the credentials in the proxy URL")?;
                } else {
                    write!(f, "407 Proxy Authentication Required: the proxy needs credentials; put them in the proxy URL (http://user:password@host:port)")?;
                }
                if !offered.is_empty() && !offered.iter().any(|s| s.eq_ignore_ascii_case("basic")) {
                    write!(
                        f,
                        " (it offers {}; only Basic is supported)",
                        offered.join(", ")
                    )?;
                }
                Ok(())
            }
            TunnelError::Refused { status, reason } => {
                write!(f, "the proxy refused CONNECT: {status} {reason}")
            }
            TunnelError::Malformed(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TunnelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TunnelError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Asks the proxy on `sock` for a tunnel to `target` (`host:port`). On success
/// the socket carries the tunnel; nothing past the proxy's header has been read.
/// Leaves `timeout` as the socket's read and write timeout.
pub fn connect_tunnel(
    sock: &mut TcpStream,
    proxy: &Proxy,
    target: &str,
    timeout: Duration,
) -> Result<(), TunnelError> {
    sock.set_read_timeout(Some(timeout))
        .and_then(|_| sock.set_write_timeout(Some(timeout)))
        .map_err(TunnelError::Io)?;
    tunnel(sock, proxy, target, Instant::now() + timeout)
}

/// The exchange itself, over any stream (unit tests use an in-memory one).
fn tunnel<S: Read + Write>(
    stream: &mut S,
    proxy: &Proxy,
    target: &str,
    deadline: Instant,
) -> Result<(), TunnelError> {
    let mut request =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {USER_AGENT}\r\n");
    if let Some(auth) = proxy.authorization() {
        request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|_| stream.flush())
        .map_err(TunnelError::Io)?;

    // One byte at a time: after a 2xx the next bytes belong to the tunnel (the
    // TLS handshake), so reading ahead would swallow them. Once per session,
    // a few hundred bytes; the syscalls do not matter.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !(head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n")) {
        if Instant::now() > deadline {
            return Err(TunnelError::Timeout);
        }
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(TunnelError::Malformed(format!(
                "the proxy's answer to CONNECT exceeds {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(TunnelError::Malformed(if head.is_empty() {
                    "the proxy closed the connection without answering CONNECT".into()
                } else {
                    "the proxy closed the connection in the middle of its answer".into()
                }))
            }
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TunnelError::Io(e)),
        }
    }
    // Whatever of the proxy's text is shown loses its control characters
    // anyway; dropping them before parsing lets a reason phrase such as
    // "Forbidden\x07", which HTTP does not allow, still give its status.
    head.retain(|b| !b.is_ascii_control() || matches!(b, b'\r' | b'\n' | b'\t'));
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    match answer.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(TunnelError::Malformed(format!(
                "the proxy's answer to CONNECT has more than {MAX_RESPONSE_HEADERS} headers"
            )))
        }
        // Partial cannot happen (the head was read to its blank line), but it
        // is no answer either.
        Ok(httparse::Status::Partial) | Err(_) => {
            let first_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
            return Err(TunnelError::Malformed(format!(
                "the proxy did not answer CONNECT with HTTP: {:?}",
                printable(&String::from_utf8_lossy(first_line), 60)
            )));
        }
    }
    let status = answer.code.unwrap_or_default();
    match status {
        200..=299 => Ok(()),
        407 => Err(TunnelError::AuthRequired {
            sent_credentials: proxy.has_credentials(),
            offered: answer
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("proxy-authenticate"))
                .filter_map(|h| {
                    let value = String::from_utf8_lossy(h.value);
                    let scheme = value.split_whitespace().next()?;
                    Some(printable(scheme.trim_end_matches(','), 20))
                })
                .collect(),
        }),
        _ => Err(TunnelError::Refused {
            status,
            reason: printable(answer.reason.unwrap_or_default(), 80),
        }),
    }
}

/// Proxy-supplied text made safe for one log line.
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;
    use crate::host::Env;
    use crate::net::proxy::for_target;
    use base64::Engine as _;

    const COORD: &str = "wss://api.usepod.ai/provider/connect";

    /// Scripted proxy answer; records what the agent wrote.
    struct Script {
        answer: io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.answer.read(buf)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn exchange(proxy_url: &str, answer: &str) -> (Result<(), TunnelError>, String, Script) {
        let target = Endpoint::parse(COORD).unwrap();
        let proxy = for_target(&target, &Env::of(&[("HTTPS_PROXY", proxy_url)]))
            .unwrap()
            .unwrap();
        let mut s = Script {
            answer: io::Cursor::new(answer.as_bytes().to_vec()),
            written: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let r = tunnel(&mut s, &proxy, "api.usepod.ai:443", deadline);
        let written = String::from_utf8(s.written.clone()).unwrap();
        (r, written, s)
    }

    #[test]
    fn connect_sends_the_request_and_stops_at_the_header_end() {
        let (r, written, mut s) = exchange(
            "http://p:3128",
            "HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n\x16\x03\x01TLS",
        );
        assert!(r.is_ok(), "{r:?}");
        assert!(written
            .starts_with("CONNECT api.usepod.ai:443 HTTP/1.1\r\nHost: api.usepod.ai:443\r\n"));
        assert!(written.ends_with("\r\n\r\n"));
        assert!(!written.contains("Proxy-Authorization"));
        // The tunnel's first bytes are still unread.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"\x16\x03\x01TLS");
        // HTTP/1.0 and any 2xx open the tunnel too.
        assert!(exchange("p:1", "HTTP/1.0 200 OK\r\n\r\n").0.is_ok());
        assert!(exchange("p:1", "HTTP/1.1 204\r\n\r\n").0.is_ok());
        assert!(exchange("p:1", "HTTP/1.0 200 OK\n\n").0.is_ok());
    }

    #[test]
    fn connect_sends_basic_credentials() {
        let (r, written, _) = exchange("http://alice:secret@p:3128", "HTTP/1.1 200 OK\r\n\r\n");
        assert!(r.is_ok());
        let expected = base64::engine::general_purpose::STANDARD.encode("alice:secret");
        assert!(
            written.contains(&format!("\r\nProxy-Authorization: Basic {expected}\r\n")),
            "{written}"
        );
    }

    #[test]
    fn connect_failures_say_what_happened() {
        let answer_407 = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                          Proxy-Authenticate: Basic realm=\"corp\"\r\n\r\nbody";
        let (r, _, _) = exchange("http://p:1", answer_407);
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                TunnelError::AuthRequired {
                    sent_credentials: false,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("needs credentials"), "{e}");
        let (r, _, _) = exchange("http://u:wrong@p:1", answer_407);
        let e = r.unwrap_err().to_string();
        assert!(e.contains("407") && e.contains("rejected"), "{e}");
        assert!(!e.contains("wrong"), "{e}");
        let (r, _, _) = exchange(
            "http://p:1",
            "HTTP/1.1 407 Nope\r\nProxy-Authenticate: Negotiate\r\nProxy-Authenticate: NTLM\r\n\r\n",
        );
        let e = r.unwrap_err().to_string();
        assert!(e.contains("Negotiate, NTLM; only Basic"), "{e}");

        let (r, _, _) = exchange("http://p:1", "HTTP/1.1 403 Forbidden\x07\r\n\r\n");
        let e = r.unwrap_err();
        assert!(
            matches!(e, TunnelError::Refused { status: 403, .. }),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "the proxy refused CONNECT: 403 Forbidden");

        let (r, _, _) = exchange("http://p:1", "SSH-2.0-OpenSSH\r\n\r\n");
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("did not answer CONNECT with HTTP"));
        let (r, _, _) = exchange("http://p:1", "");
        assert!(r.unwrap_err().to_string().contains("without answering"));
        let (r, _, _) = exchange("http://p:1", "HTTP/1.1 200 OK\r\nVia");
        assert!(r.unwrap_err().to_string().contains("middle of its answer"));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        let (r, _, _) = exchange("http://p:1", &huge);
        assert!(r.unwrap_err().to_string().contains("exceeds"));
    }

    #[test]
    fn a_silent_proxy_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sock = TcpStream::connect(addr).unwrap();
        let _held = listener.accept().unwrap();
        let proxy = for_target(
            &Endpoint::parse(COORD).unwrap(),
            &Env::of(&[("HTTPS_PROXY", &format!("http://{addr}"))]),
        )
        .unwrap()
        .unwrap();
        let t = Instant::now();
        let e = connect_tunnel(
            &mut sock,
            &proxy,
            "api.usepod.ai:443",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(
            matches!(&e, TunnelError::Io(io) if crate::net::timed_out(io)),
            "{e:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
