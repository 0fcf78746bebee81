//! Why a session could not be established, and whether trying again can help.

use super::nonce::NonceError;
use crate::net::{tls::TlsError, NetError};
use crate::protocol::ParseError;
use crate::untrusted::shown;
use std::error::Error;
use std::fmt;

/// Why a session could not be established or went down.
#[derive(Debug)]
pub enum SessionError {
    /// The coordinator's host could not be reached: DNS, TCP, proxy or TLS.
    Net(NetError),
    /// A phase did not finish in time; names the phase.
    Timeout(&'static str),
    /// No WebSocket upgrade request can be made from the URL.
    Request(tungstenite::Error),
    /// The coordinator broke the handshake protocol.
    Handshake(HandshakeError),
    /// The coordinator answered auth_failed.
    AuthFailed(Option<String>),
    /// The WebSocket failed while in a named phase.
    WebSocket(&'static str, tungstenite::Error),
}

impl SessionError {
    pub(super) fn from_ws(phase: &'static str, e: tungstenite::Error) -> SessionError {
        match e {
            tungstenite::Error::Io(io) if crate::net::timed_out(&io) => {
                SessionError::Timeout(phase)
            }
            other => SessionError::WebSocket(phase, other),
        }
    }

    /// What the operator has to change before this can work, when trying
    /// again unchanged cannot help; None for what may pass by itself
    /// (refused, timed out, reset, a coordinator that is down or restarting).
    pub fn what_to_fix(&self) -> Option<&'static str> {
        match self {
            SessionError::Net(e) => net_fix(e),
            SessionError::Request(_) => Some(URL),
            SessionError::WebSocket(_, tungstenite::Error::Url(_)) => Some(URL),
            SessionError::WebSocket(_, tungstenite::Error::Http(answer)) => {
                let status = answer.status().as_u16();
                // The coordinator is busy or restarting, or we were slow: the
                // next attempt may be answered. Anything else (404, a redirect,
                // 401/403 before any key was shown) says the URL is not a
                // coordinator's WebSocket endpoint.
                let passing = status >= 500 || status == 408 || status == 429;
                (!passing).then_some(URL)
            }
            SessionError::AuthFailed(Some(reason)) if about_the_key(reason) => Some(KEY),
            SessionError::AuthFailed(_)
            | SessionError::Timeout(_)
            | SessionError::Handshake(_)
            | SessionError::WebSocket(..) => None,
        }
    }

    /// Whether trying again unchanged may succeed; see [`Self::what_to_fix`].
    pub fn retry_can_help(&self) -> bool {
        self.what_to_fix().is_none()
    }
}

const URL: &str = "coordinator.url";
const KEY: &str = "the identity key (key_path) and coordinator.enrollment_code";
const TRUST: &str = "coordinator.ca_file or SSL_CERT_FILE (the CA that signed the \
                     coordinator's certificate), coordinator.url (the name it is for) \
                     and the system clock";

fn net_fix(e: &NetError) -> Option<&'static str> {
    if e.retry_can_help() {
        return None;
    }
    Some(match e {
        NetError::ProxySetting(_) => "the proxy variables (https_proxy, all_proxy, no_proxy)",
        NetError::Tunnel { .. } => {
            "the credentials in the proxy URL (http://user:password@host:port)"
        }
        NetError::Proxy { source, .. } => return net_fix(source),
        NetError::Tls(TlsError::BadName { .. }) => URL,
        NetError::Tls(TlsError::Roots(_)) => "coordinator.ca_file or SSL_CERT_FILE",
        _ => TRUST,
    })
}

/// Whether an auth_failed reason is about who we are (the key, its
/// enrollment), which only the operator can change, rather than about the
/// coordinator's state. The coordinator's reasons are free text
/// (docs/protocol.md, "Handshake"), so this reads words: a reason that says to
/// come back later wins over one that names the key.
fn about_the_key(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    const LATER: [&str; 7] = [
        "try again",
        "later",
        "rate",
        "busy",
        "unavailable",
        "overload",
        "maintenance",
    ];
    const KEYISH: [&str; 9] = [
        "key",
        "signature",
        "enrol",
        "provider",
        "revoked",
        "unknown",
        "not registered",
        "invalid",
        "code",
    ];
    !LATER.iter().any(|w| r.contains(w)) && KEYISH.iter().any(|w| r.contains(w))
}

// As in net: the message carries its cause's text too (see NetError).
impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // TLS says itself what failed; "cannot connect" is for reaching the host.
            SessionError::Net(e @ NetError::Tls(_)) => write!(f, "{e}"),
            SessionError::Net(e) => write!(f, "cannot connect: {e}"),
            SessionError::Timeout(phase) => write!(f, "timed out during {phase}"),
            SessionError::Request(e) => write!(f, "WebSocket upgrade failed: {e}"),
            SessionError::Handshake(e) => write!(f, "handshake failed: {e}"),
            SessionError::AuthFailed(Some(r)) => {
                write!(f, "authentication refused: \"{}\"", shown(r, 200))
            }
            SessionError::AuthFailed(None) => {
                f.write_str("authentication refused: (no reason given)")
            }
            SessionError::WebSocket(phase, e) => write!(f, "WebSocket error during {phase}: {e}"),
        }
    }
}

impl Error for SessionError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            SessionError::Net(e) => Some(e),
            SessionError::Request(e) | SessionError::WebSocket(_, e) => Some(e),
            SessionError::Handshake(e) => Some(e),
            SessionError::Timeout(_) | SessionError::AuthFailed(_) => None,
        }
    }
}

impl From<NetError> for SessionError {
    fn from(e: NetError) -> SessionError {
        SessionError::Net(e)
    }
}

impl From<HandshakeError> for SessionError {
    fn from(e: HandshakeError) -> SessionError {
        SessionError::Handshake(e)
    }
}

/// How the coordinator broke the handshake (docs/protocol.md, "Handshake").
#[derive(Debug)]
pub enum HandshakeError {
    /// A binary frame came while waiting for a message.
    Binary { waiting_for: &'static str },
    /// The coordinator closed the connection; `frame` is its code and reason as shown.
    Closed {
        waiting_for: &'static str,
        frame: String,
    },
    /// The challenge is not answered.
    Nonce(NonceError),
    /// Another message came; `got` names it without its fields.
    Unexpected { expected: &'static str, got: String },
    /// The text is not a message at all.
    Unreadable {
        expected: &'static str,
        source: ParseError,
    },
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Binary { waiting_for } => {
                write!(f, "binary frame while waiting for {waiting_for}")
            }
            HandshakeError::Closed { waiting_for, frame } => write!(
                f,
                "coordinator closed the connection ({frame}) while we waited for {waiting_for}"
            ),
            HandshakeError::Nonce(e) => write!(f, "{e}"),
            HandshakeError::Unexpected { expected, got } => {
                write!(f, "expected {expected}, got {got}")
            }
            HandshakeError::Unreadable { expected, source } => {
                write!(
                    f,
                    "expected {expected}: {}",
                    shown(&source.to_string(), 200)
                )
            }
        }
    }
}

impl Error for HandshakeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            HandshakeError::Nonce(e) => Some(e),
            HandshakeError::Unreadable { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tunnel::TunnelError;
    use std::io;

    fn upgrade_answer(status: u16) -> SessionError {
        let answer = tungstenite::http::Response::builder()
            .status(status)
            .body(None)
            .unwrap();
        SessionError::WebSocket("WebSocket upgrade", tungstenite::Error::Http(answer.into()))
    }

    #[test]
    fn config_problems_are_told_from_passing_trouble() {
        // Passing: try again.
        let refused = SessionError::Net(NetError::Connect {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io::ErrorKind::ConnectionRefused.into(),
        });
        assert!(refused.retry_can_help());
        assert!(refused
            .to_string()
            .starts_with("cannot connect: connect to 127.0.0.1:1"));
        assert!(refused.source().is_some());
        for passing in [
            SessionError::Timeout("TLS handshake"),
            SessionError::AuthFailed(None),
            SessionError::AuthFailed(Some("coordinator busy, try again later".into())),
            SessionError::AuthFailed(Some("invalid key; rate limited, try again".into())),
            SessionError::WebSocket(
                "reading",
                tungstenite::Error::Io(io::ErrorKind::ConnectionReset.into()),
            ),
            SessionError::Handshake(HandshakeError::Binary {
                waiting_for: "auth_ok",
            }),
            upgrade_answer(502),
            upgrade_answer(503),
            upgrade_answer(429),
        ] {
            assert!(passing.retry_can_help(), "{passing}");
        }
        // Config: only the operator can change these.
        let bad_cert = SessionError::Net(NetError::Tls(TlsError::Handshake(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        ))));
        assert!(bad_cert.what_to_fix().unwrap().contains("ca_file"));
        assert!(
            bad_cert.to_string().starts_with("TLS failed: "),
            "{bad_cert}"
        );
        let proxy_auth = SessionError::Net(NetError::Tunnel {
            proxy: "http://p:1".into(),
            target: "h:443".into(),
            source: TunnelError::AuthRequired {
                sent_credentials: true,
                offered: vec![],
            },
        });
        assert!(proxy_auth.what_to_fix().unwrap().contains("proxy URL"));
        assert_eq!(upgrade_answer(404).what_to_fix(), Some(URL));
        assert_eq!(upgrade_answer(301).what_to_fix(), Some(URL));
        for reason in [
            "unknown provider key",
            "invalid signature",
            "enrollment code expired",
            "key revoked",
        ] {
            let e = SessionError::AuthFailed(Some(reason.into()));
            assert_eq!(e.what_to_fix(), Some(KEY), "{reason}");
        }
    }

    #[test]
    fn nonce_errors_keep_their_text() {
        assert_eq!(
            NonceError::Length { bytes: 8 }.to_string(),
            "auth_challenge nonce is 8 bytes, outside 16-64; not signed"
        );
        let e = SessionError::Handshake(HandshakeError::Nonce(NonceError::TooLong { chars: 100 }));
        assert_eq!(
            e.to_string(),
            "handshake failed: auth_challenge nonce of 100 base64 characters is longer than 64 bytes; not signed"
        );
        // SessionError -> HandshakeError -> NonceError, which has no cause of its own.
        let nonce = e.source().and_then(|h| h.source()).unwrap();
        assert!(nonce.to_string().contains("longer than 64"));
        assert!(nonce.source().is_none());
    }
}
