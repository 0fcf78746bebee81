//! Reaching a host over the network: name resolution, TCP connects under a
//! timeout, the way through an HTTP proxy ([`proxy`]: curl's variables and
//! `NO_PROXY`; [`tunnel`]: the CONNECT exchange) and a verified TLS client handshake
//! ([`tls`]). The session, pairing (src/client/coordinator.rs) and doctor reach
//! the coordinator's host through [`open`], so all three take the same route
//! and name the same hop when it fails.
//!
//! This module knows nothing of the config or the session: it takes an
//! [`Endpoint`], [`Timeouts`] and the environment it honours (the proxy variables
//! of [`Env`]), and its errors are its own ([`NetError`]),
//! which the session's and the HTTP client's errors carry as their source.

pub mod proxy;
mod timeouts;
pub mod tls;
pub mod tunnel;

use crate::endpoint::Endpoint;
use crate::host::Env;
use proxy::{Proxy, ProxyConfigError};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;
use tunnel::TunnelError;

pub use timeouts::{timed_out, Timeouts};
pub use tls::TlsError;

/// Why a host could not be reached.
#[derive(Debug)]
pub enum NetError {
    /// The name did not resolve.
    Resolve {
        host: String,
        source: io::Error,
    },
    /// The name resolved to no address.
    NoAddress {
        host: String,
    },
    /// No address took the connection; the last one tried and its error.
    Connect {
        addr: SocketAddr,
        source: io::Error,
    },
    /// A proxy variable that cannot be used.
    ProxySetting(ProxyConfigError),
    /// The proxy itself could not be reached.
    Proxy {
        proxy: String,
        source: Box<NetError>,
    },
    /// The proxy did not open a tunnel to `target` (`host:port`).
    Tunnel {
        proxy: String,
        target: String,
        source: TunnelError,
    },
    /// A socket option or a clone of the socket failed; `what` names which.
    Socket {
        what: &'static str,
        source: io::Error,
    },
    Tls(TlsError),
}

// Each message carries its cause's text as well as returning it from
// `source()`: every log line and status detail prints one error with `{}`,
// and must say on its own which hop failed and how.
impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            NetError::NoAddress { host } => write!(f, "{host} resolved to no address"),
            NetError::Connect { addr, source } => write!(f, "connect to {addr}: {source}"),
            NetError::ProxySetting(e) => write!(f, "proxy setting {e}"),
            NetError::Proxy { proxy, source } => write!(f, "proxy {proxy}: {source}"),
            NetError::Tunnel {
                proxy,
                target,
                source,
            } => write!(f, "proxy {proxy} CONNECT {target}: {source}"),
            NetError::Socket { what, source } => write!(f, "socket {what}: {source}"),
            NetError::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetError::Resolve { source, .. }
            | NetError::Connect { source, .. }
            | NetError::Socket { source, .. } => Some(source),
            NetError::NoAddress { .. } => None,
            NetError::ProxySetting(e) => Some(e),
            NetError::Proxy { source, .. } => Some(source.as_ref()),
            NetError::Tunnel { source, .. } => Some(source),
            NetError::Tls(e) => Some(e),
        }
    }
}

impl From<TlsError> for NetError {
    fn from(e: TlsError) -> NetError {
        NetError::Tls(e)
    }
}

impl NetError {
    /// Whether trying again unchanged may succeed. A proxy variable that
    /// cannot work, credentials the proxy refuses, a host name no certificate
    /// can match and a certificate that does not verify stay that way until
    /// the operator changes something; refusals, timeouts, resets and a name
    /// that does not resolve (often a network not up yet) can pass.
    pub fn retry_can_help(&self) -> bool {
        match self {
            NetError::ProxySetting(_) => false,
            NetError::Tunnel {
                source: TunnelError::AuthRequired { .. },
                ..
            } => false,
            NetError::Proxy { source, .. } => source.retry_can_help(),
            NetError::Tls(e) => e.retry_can_help(),
            _ => true,
        }
    }
}

/// The addresses of `host` (an IP literal or a name; IPv6 without brackets).
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, NetError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| NetError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(NetError::NoAddress {
            host: host.to_owned(),
        });
    }
    Ok(addrs)
}

/// A TCP connection to the first of `host`'s addresses that accepts within
/// `timeout`, trying them in the resolver's order.
pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, NetError> {
    let mut last = None;
    for addr in resolve(host, port)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(source) => last = Some(NetError::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| NetError::NoAddress {
        host: host.to_owned(),
    }))
}

/// A TCP connection to `url`'s host, directly or through the proxy the
/// environment names for it; over a proxy, the returned socket carries the
/// tunnel, so TLS and HTTP then run over it as over a direct connection.
pub fn open(url: &Endpoint, env: &Env, timeouts: Timeouts) -> Result<TcpStream, NetError> {
    match proxy::for_target(url, env).map_err(NetError::ProxySetting)? {
        None => connect(&url.host, url.port, timeouts.connect),
        Some(p) => via_proxy(&p, url, timeouts),
    }
}

/// The proxy resolves the target's name, so nothing is resolved here but the
/// proxy's own.
fn via_proxy(p: &Proxy, url: &Endpoint, timeouts: Timeouts) -> Result<TcpStream, NetError> {
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
    let mut sock = connect(&p.endpoint.host, p.endpoint.port, timeouts.connect).map_err(|e| {
        NetError::Proxy {
            proxy: p.to_string(),
            source: Box::new(e),
        }
    })?;
    tunnel::connect_tunnel(&mut sock, p, &url.authority(), timeouts.handshake).map_err(|e| {
        NetError::Tunnel {
            proxy: p.to_string(),
            target: url.authority(),
            // A bare "resource temporarily unavailable" would not say that the
            // proxy kept us waiting.
            source: match e {
                TunnelError::Io(io) if timed_out(&io) => TunnelError::Timeout,
                other => other,
            },
        }
    })?;
    log::debug!("tunnel to {} open through {p}", url.authority());
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::net::TcpListener;

    #[test]
    fn connect_tries_the_address_and_says_which_failed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(connect("127.0.0.1", port, Duration::from_secs(5)).is_ok());
        drop(listener);
        let e = connect("127.0.0.1", port, Duration::from_secs(5)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("connect to 127.0.0.1:{port}: ")),
            "{e}"
        );
        assert!(e.source().is_some());
        assert!(e.retry_can_help());
    }

    #[test]
    fn an_unresolvable_name_is_named() {
        let e = resolve("no-such-host.invalid", 1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot resolve no-such-host.invalid: "),
            "{e}"
        );
        assert!(e.retry_can_help(), "DNS may come up later");
    }

    #[test]
    fn timeouts_are_told_apart_from_other_socket_errors() {
        for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
            assert!(timed_out(&kind.into()));
        }
        assert!(!timed_out(&io::ErrorKind::ConnectionReset.into()));
    }

    #[test]
    fn a_proxy_that_wants_credentials_is_a_setting_to_fix() {
        let tunnel = |source| NetError::Tunnel {
            proxy: "http://p:1".into(),
            target: "h:443".into(),
            source,
        };
        let e = tunnel(TunnelError::AuthRequired {
            sent_credentials: false,
            offered: vec![],
        });
        assert!(!e.retry_can_help(), "{e}");
        assert!(tunnel(TunnelError::Timeout).retry_can_help());
        let refused = tunnel(TunnelError::Refused {
            status: 502,
            reason: "Bad Gateway".into(),
        });
        assert!(refused.retry_can_help());
        assert_eq!(
            refused.to_string(),
            "proxy http://p:1 CONNECT h:443: the proxy refused CONNECT: 502 Bad Gateway"
        );
    }
}
