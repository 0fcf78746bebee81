//! TLS toward the coordinator's host: the client configuration (webpki-roots
//! plus the operator's extra CAs, never fewer) and a verified handshake over an
//! open socket, bounded as a whole.

use rustls::pki_types::{CertificateDer, InvalidDnsNameError, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::fmt;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why TLS could not be set up or did not complete.
#[derive(Debug)]
pub enum TlsError {
    /// An extra CA certificate (`ca_file`, `SSL_CERT_FILE`) is not usable.
    Roots(rustls::Error),
    /// The TLS configuration could not be built.
    Setup(rustls::Error),
    /// The host is not a name a certificate can be checked against.
    BadName {
        host: String,
        source: InvalidDnsNameError,
    },
    /// The connection state could not be created.
    Start(rustls::Error),
    /// The handshake did not finish within its timeout.
    Timeout,
    /// The handshake failed: the certificate did not verify, the peer sent an
    /// alert, or the socket failed. A rustls error travels inside the
    /// `io::Error` (kind `InvalidData`).
    Handshake(io::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Roots(e) => write!(f, "extra CA certificate rejected: {e}"),
            TlsError::Setup(e) => write!(f, "TLS setup: {e}"),
            TlsError::BadName { host, source } => {
                write!(f, "TLS failed: bad server name {host}: {source}")
            }
            TlsError::Start(e) => write!(f, "TLS failed: {e}"),
            TlsError::Timeout => f.write_str("timed out during TLS handshake"),
            TlsError::Handshake(e) => write!(f, "TLS failed: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Roots(e) | TlsError::Setup(e) | TlsError::Start(e) => Some(e),
            TlsError::BadName { source, .. } => Some(source),
            TlsError::Timeout => None,
            TlsError::Handshake(e) => Some(e),
        }
    }
}

impl TlsError {
    /// The rustls error behind a failed handshake, if that is what it was.
    pub fn rustls(&self) -> Option<&rustls::Error> {
        match self {
            TlsError::Roots(e) | TlsError::Setup(e) | TlsError::Start(e) => Some(e),
            TlsError::Handshake(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
            TlsError::BadName { .. } | TlsError::Timeout => None,
        }
    }

    /// A certificate that does not verify stays unverified until the trust
    /// anchors, the URL's host or the clock change; so do a bad name and an
    /// unusable CA. Alerts, resets and timeouts can pass.
    pub fn retry_can_help(&self) -> bool {
        match self {
            TlsError::Roots(_) | TlsError::Setup(_) | TlsError::BadName { .. } => false,
            TlsError::Timeout | TlsError::Start(_) => true,
            TlsError::Handshake(_) => {
                !matches!(self.rustls(), Some(rustls::Error::InvalidCertificate(_)))
            }
        }
    }
}

/// TLS sessions kept for resumption.
const SESSIONS_KEPT: usize = 8;

/// The client configuration, built once per process: webpki-roots plus
/// `extra_roots`, ring as the crypto provider, the safe default versions.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        roots.add(cert.clone()).map_err(TlsError::Roots)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The agent talks TLS to a handful of hosts (the coordinator, its pairing API, a
    // release URL): rustls's default cache of 256 sessions is ~14 KiB held for nothing.
    config.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS_KEPT);
    Ok(Arc::new(config))
}

/// A verified TLS client handshake with `host` over `sock`, whole within
/// `timeout` (the socket's own timeouts bound each read and write in it).
pub fn handshake(
    sock: &mut TcpStream,
    tls: &Arc<ClientConfig>,
    host: &str,
    timeout: Duration,
) -> Result<ClientConnection, TlsError> {
    let started = Instant::now();
    let name = ServerName::try_from(host.to_owned()).map_err(|source| TlsError::BadName {
        host: host.to_owned(),
        source,
    })?;
    let mut conn = ClientConnection::new(Arc::clone(tls), name).map_err(TlsError::Start)?;
    while conn.is_handshaking() {
        if started.elapsed() > timeout {
            return Err(TlsError::Timeout);
        }
        conn.complete_io(sock).map_err(|e| {
            if super::timeouts::timed_out(&e) {
                TlsError::Timeout
            } else {
                TlsError::Handshake(e)
            }
        })?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    #[test]
    fn a_certificate_that_does_not_verify_is_not_retried_blindly() {
        let bad = TlsError::Handshake(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        assert!(!bad.retry_can_help());
        assert!(bad.to_string().starts_with("TLS failed: "), "{bad}");
        let alert = TlsError::Handshake(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::InternalError),
        ));
        assert!(alert.retry_can_help());
        let reset = TlsError::Handshake(io::ErrorKind::ConnectionReset.into());
        assert!(reset.retry_can_help() && reset.rustls().is_none());
        assert!(TlsError::Timeout.retry_can_help());
        assert_eq!(
            TlsError::Timeout.to_string(),
            "timed out during TLS handshake"
        );
    }

    #[test]
    fn an_ip_literal_or_a_name_can_be_verified_and_nothing_else() {
        let cfg = client_config(&[]).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let e = handshake(&mut sock, &cfg, "bad name!", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, TlsError::BadName { .. }), "{e:?}");
        assert!(!e.retry_can_help());
    }

    #[test]
    fn a_certificate_that_is_not_one_is_refused_as_an_extra_root() {
        let e = client_config(&[CertificateDer::from(vec![1, 2, 3])]).unwrap_err();
        assert!(
            e.to_string().starts_with("extra CA certificate rejected"),
            "{e}"
        );
        assert!(!e.retry_can_help());
    }
}
