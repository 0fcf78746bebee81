//! Opening the coordinator connection: TCP with a timeout and TCP_NODELAY, TLS
//! (webpki-roots plus the operator's extra CAs, always verified), WebSocket upgrade.

use super::duplex::Duplex;
use super::SessionError;
use crate::config::CoordinatorConfig;
use crate::endpoint::{Endpoint, Scheme};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::WebSocket;

/// Largest inbound message accepted; job requests are the big ones and a
/// coordinator has no reason to send more than this.
pub const MAX_INBOUND_MESSAGE: usize = 16 << 20;

/// Builds the TLS client configuration once per process.
pub fn tls_config(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("extra CA certificate rejected: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_INBOUND_MESSAGE))
        .max_frame_size(Some(MAX_INBOUND_MESSAGE))
}

fn connect_tcp(url: &Endpoint, timeout: Duration) -> Result<TcpStream, SessionError> {
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| SessionError::Connect(format!("cannot resolve {}: {e}", url.host)))?
        .collect();
    let mut last = format!("{} resolved to no address", url.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(SessionError::Connect(last))
}

/// Connects and upgrades; the returned socket has `handshake_timeout` as its
/// read and write timeout, for the caller to change once authenticated.
pub fn dial(
    cfg: &CoordinatorConfig,
    tls: &Arc<ClientConfig>,
) -> Result<WebSocket<Duplex>, SessionError> {
    let url = &cfg.url;
    let mut sock = connect_tcp(url, cfg.connect_timeout)?;
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(cfg.handshake_timeout))
        .and_then(|_| sock.set_write_timeout(Some(cfg.handshake_timeout)))
        .map_err(|e| SessionError::Connect(format!("socket setup: {e}")))?;
    let started = Instant::now();
    let conn = match url.scheme {
        Scheme::Wss => {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| SessionError::Tls(format!("bad server name {}: {e}", url.host)))?;
            let mut conn = ClientConnection::new(Arc::clone(tls), name)
                .map_err(|e| SessionError::Tls(e.to_string()))?;
            while conn.is_handshaking() {
                if started.elapsed() > cfg.handshake_timeout {
                    return Err(SessionError::Timeout("TLS handshake"));
                }
                conn.complete_io(&mut sock).map_err(|e| match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        SessionError::Timeout("TLS handshake")
                    }
                    _ => SessionError::Tls(e.to_string()),
                })?;
            }
            Some(conn)
        }
        _ => None,
    };
    let duplex =
        Duplex::new(sock, conn).map_err(|e| SessionError::Connect(format!("socket clone: {e}")))?;
    let request = format!("{url}");
    let request = tungstenite::client::IntoClientRequest::into_client_request(request.as_str())
        .map_err(|e| SessionError::Upgrade(e.to_string()))?;
    let mut request = request;
    request.headers_mut().insert(
        "User-Agent",
        tungstenite::http::HeaderValue::from_static(concat!(
            "usepod-edge/",
            env!("CARGO_PKG_VERSION")
        )),
    );
    match tungstenite::client::client_with_config(request, duplex, Some(ws_config())) {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => {
            Err(SessionError::from_ws("WebSocket upgrade", e))
        }
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            Err(SessionError::Timeout("WebSocket upgrade"))
        }
    }
}
