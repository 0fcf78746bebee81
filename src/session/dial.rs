//! Opening the coordinator connection: TCP with TCP_NODELAY, directly or
//! through an HTTP CONNECT proxy from the environment (src/net/), TLS
//! (webpki-roots plus the operator's extra CAs, always verified), WebSocket upgrade.

use super::duplex::Duplex;
use super::error::SessionError;
use crate::config::{load_certs, ConfigError, CoordinatorConfig};
use crate::endpoint::Scheme;
use crate::host::{Env, ENV_SSL_CERT_FILE, USER_AGENT};
use crate::net::{self, NetError, Timeouts};
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;
use std::sync::Arc;
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

/// Trust anchors beyond webpki-roots: `coordinator.ca_file` (loaded with the
/// config) plus the certificates in `$SSL_CERT_FILE` when it is set and not
/// empty. An unreadable file is a config error, named like the others.
pub fn trust_anchors(
    cfg: &CoordinatorConfig,
    env: &Env,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let mut roots = cfg.extra_roots.clone();
    if let Some(path) = env.path(ENV_SSL_CERT_FILE) {
        let certs = load_certs(&path).map_err(|e| ConfigError {
            origin: "environment".into(),
            key: ENV_SSL_CERT_FILE.into(),
            problem: e.to_string(),
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

/// The coordinator's timeouts as the network helpers take them.
pub fn timeouts(cfg: &CoordinatorConfig) -> Timeouts {
    Timeouts {
        connect: cfg.connect_timeout,
        handshake: cfg.handshake_timeout,
    }
}

/// Connects and upgrades; the returned socket has `handshake_timeout` as its
/// read and write timeout, for the caller to change once authenticated.
pub fn dial(
    cfg: &CoordinatorConfig,
    tls: &Arc<ClientConfig>,
    max_inbound: usize,
    env: &Env,
) -> Result<WebSocket<Duplex>, SessionError> {
    let url = &cfg.url;
    let mut sock = net::open(url, env, timeouts(cfg))?;
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(cfg.handshake_timeout))
        .and_then(|_| sock.set_write_timeout(Some(cfg.handshake_timeout)))
        .map_err(|source| NetError::Socket {
            what: "setup",
            source,
        })?;
    let conn = match url.scheme {
        Scheme::Wss => Some(
            net::tls::handshake(&mut sock, tls, &url.host, cfg.handshake_timeout)
                .map_err(NetError::Tls)?,
        ),
        _ => None,
    };
    let duplex = Duplex::new(sock, conn).map_err(|source| NetError::Socket {
        what: "clone",
        source,
    })?;
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(url.to_string().as_str())
            .map_err(SessionError::Request)?;
    request.headers_mut().insert(
        "User-Agent",
        tungstenite::http::HeaderValue::from_static(USER_AGENT),
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
