//! Opening the coordinator connection: TCP with a timeout and TCP_NODELAY
//! (directly, or through an HTTP CONNECT proxy from the environment), TLS
//! (webpki-roots plus the operator's extra CAs, always verified), WebSocket upgrade.

use super::duplex::Duplex;
use super::proxy;
use super::SessionError;
use crate::config::{load_certs, ConfigError, CoordinatorConfig};
use crate::endpoint::{Endpoint, Scheme};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::ffi::OsString;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::WebSocket;

/// Room a job frame needs around its request (type, ids, format, deadline).
const ENVELOPE_BYTES: usize = 64 * 1024;

/// Largest inbound message accepted: job requests are the big ones, and one
/// larger than `limits.max_request_bytes` would be refused anyway, so the
/// frame is refused before it is ever held in memory.
pub fn max_inbound_message(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(ENVELOPE_BYTES)
}

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

/// The variable OpenSSL-based tools read for a CA bundle. Here it adds trust
/// anchors (like `coordinator.ca_file`) instead of replacing the built-in
/// ones, so pointing it at a corporate CA never cuts off the public roots.
pub const ENV_SSL_CERT_FILE: &str = "SSL_CERT_FILE";

/// Trust anchors beyond webpki-roots: `coordinator.ca_file` (loaded with the
/// config) plus the certificates in `$SSL_CERT_FILE` when it is set and not
/// empty. An unreadable file is a config error, named like the others.
pub fn trust_anchors(
    cfg: &CoordinatorConfig,
    ssl_cert_file: Option<OsString>,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let mut roots = cfg.extra_roots.clone();
    if let Some(path) = ssl_cert_file.filter(|p| !p.is_empty()) {
        let certs = load_certs(Path::new(&path)).map_err(|problem| ConfigError {
            origin: "environment".into(),
            key: ENV_SSL_CERT_FILE.into(),
            problem,
        })?;
        roots.extend(certs);
    }
    Ok(roots)
}

pub fn ws_config(max_inbound: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(max_inbound))
        .max_frame_size(Some(max_inbound))
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

/// A TCP connection to the proxy, turned into a tunnel to `url`; TLS and the
/// upgrade then run through it exactly as over a direct connection. The proxy
/// resolves the coordinator's name, so nothing is resolved here but the proxy.
fn via_proxy(
    p: &proxy::Proxy,
    url: &Endpoint,
    cfg: &CoordinatorConfig,
) -> Result<TcpStream, SessionError> {
    let auth = if p.has_credentials() {
        " with credentials"
    } else {
        ""
    };
    log::info!(
        "connecting to {} through proxy {p} (from {}){auth}",
        url.authority(),
        p.source
    );
    let mut sock = connect_tcp(&p.endpoint, cfg.connect_timeout).map_err(|e| match e {
        SessionError::Connect(e) => SessionError::Connect(format!("proxy {p}: {e}")),
        other => other,
    })?;
    proxy::connect_tunnel(&mut sock, p, &url.authority(), cfg.handshake_timeout).map_err(|e| {
        // Named as a connect failure, with the proxy, so the log line says
        // which hop is at fault; a bare "timed out" would not.
        let what = match e {
            proxy::TunnelError::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                proxy::TunnelError::Timeout.to_string()
            }
            other => other.to_string(),
        };
        SessionError::Connect(format!("proxy {p} CONNECT {}: {what}", url.authority()))
    })?;
    log::debug!("tunnel to {} open through {p}", url.authority());
    Ok(sock)
}

/// A TCP connection to `url`'s host, directly or through the proxy the
/// environment names for it, under the coordinator's timeouts. Shared by the
/// session and the pairing API, which lives on the coordinator's host.
pub fn open_tcp(url: &Endpoint, cfg: &CoordinatorConfig) -> Result<TcpStream, SessionError> {
    match proxy::from_env(url).map_err(|e| SessionError::Connect(format!("proxy setting {e}")))? {
        None => connect_tcp(url, cfg.connect_timeout),
        Some(p) => via_proxy(&p, url, cfg),
    }
}

/// A verified TLS client handshake with `host` over `sock`, whole within
/// `timeout` (the socket's own timeouts bound each read and write in it).
pub fn tls_handshake(
    sock: &mut TcpStream,
    tls: &Arc<ClientConfig>,
    host: &str,
    timeout: Duration,
) -> Result<ClientConnection, SessionError> {
    let started = Instant::now();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| SessionError::Tls(format!("bad server name {host}: {e}")))?;
    let mut conn = ClientConnection::new(Arc::clone(tls), name)
        .map_err(|e| SessionError::Tls(e.to_string()))?;
    while conn.is_handshaking() {
        if started.elapsed() > timeout {
            return Err(SessionError::Timeout("TLS handshake"));
        }
        conn.complete_io(sock).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                SessionError::Timeout("TLS handshake")
            }
            _ => SessionError::Tls(e.to_string()),
        })?;
    }
    Ok(conn)
}

/// Connects and upgrades; the returned socket has `handshake_timeout` as its
/// read and write timeout, for the caller to change once authenticated.
pub fn dial(
    cfg: &CoordinatorConfig,
    tls: &Arc<ClientConfig>,
    max_inbound: usize,
) -> Result<WebSocket<Duplex>, SessionError> {
    let url = &cfg.url;
    let mut sock = open_tcp(url, cfg)?;
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(cfg.handshake_timeout))
        .and_then(|_| sock.set_write_timeout(Some(cfg.handshake_timeout)))
        .map_err(|e| SessionError::Connect(format!("socket setup: {e}")))?;
    let conn = match url.scheme {
        Scheme::Wss => Some(tls_handshake(
            &mut sock,
            tls,
            &url.host,
            cfg.handshake_timeout,
        )?),
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
    match tungstenite::client::client_with_config(request, duplex, Some(ws_config(max_inbound))) {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => {
            Err(SessionError::from_ws("WebSocket upgrade", e))
        }
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            Err(SessionError::Timeout("WebSocket upgrade"))
        }
    }
}
