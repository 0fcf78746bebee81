//! HTTP to the coordinator's own host (the pairing API), reached exactly as
//! the session reaches it: our proxy rules (`NO_PROXY`, loopback never
//! proxied) and CONNECT tunnel, and our TLS trust (webpki-roots plus
//! `coordinator.ca_file` and `$SSL_CERT_FILE`). ureq's proxy support cannot
//! apply our rules, and its rustls setup cannot add trust anchors to the
//! built-in roots, so ureq is given the finished stream: plain, or TLS over
//! the (possibly tunnelled) socket.

use super::{exchange, HttpError, Limits, Request, Response};
use crate::cancel::Cancel;
use crate::endpoint::{Endpoint, Scheme};
use crate::host::Env;
use crate::net::{self, NetError, Timeouts};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// How calls reach the coordinator's host at `base`.
#[derive(Clone)]
pub struct CoordinatorHost {
    base: Endpoint,
    timeouts: Timeouts,
    tls: Arc<ClientConfig>,
    /// Its proxy variables decide the way to the host, as for the session.
    env: Env,
}

impl fmt::Debug for CoordinatorHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CoordinatorHost({})", self.base)
    }
}

impl CoordinatorHost {
    /// `timeouts`: the coordinator's, as the session uses them.
    pub fn new(
        base: Endpoint,
        timeouts: Timeouts,
        tls: Arc<ClientConfig>,
        env: &Env,
    ) -> CoordinatorHost {
        CoordinatorHost {
            base,
            timeouts,
            tls,
            env: env.clone(),
        }
    }

    /// Sends a request (its path under the base) and reads the response head.
    pub fn send(&self, req: &Request, limits: Limits) -> Result<Response, HttpError> {
        exchange(
            self.clone(),
            ProxyDecides,
            &self.base,
            req,
            limits,
            &Cancel::default(),
        )
    }

    fn open(&self) -> Result<Stream, NetError> {
        let timeout = self.timeouts.handshake;
        let mut sock = net::open(&self.base, &self.env, self.timeouts)?;
        let _ = sock.set_nodelay(true);
        sock.set_read_timeout(Some(timeout))
            .and_then(|_| sock.set_write_timeout(Some(timeout)))
            .map_err(|source| NetError::Socket {
                what: "setup",
                source,
            })?;
        Ok(match self.base.scheme {
            Scheme::Https | Scheme::Wss => {
                let conn = net::tls::handshake(&mut sock, &self.tls, &self.base.host, timeout)?;
                Stream::Tls(Box::new(StreamOwned::new(conn, sock)))
            }
            Scheme::Http | Scheme::Ws => Stream::Plain(sock),
        })
    }
}

impl Connector for CoordinatorHost {
    type Out = Socket;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _: Option<()>,
    ) -> Result<Option<Socket>, ureq::Error> {
        // Kept whole, so HttpError::Unreachable has it as its source.
        let stream = self.open().map_err(|e| ureq::Error::Other(Box::new(e)))?;
        let config = details.config;
        Ok(Some(Socket {
            stream,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
        }))
    }
}

/// The connector resolves (the coordinator's name, or only the proxy's when a
/// proxy carries the call): nothing for ureq to look up.
#[derive(Debug)]
struct ProxyDecides;

impl Resolver for ProxyDecides {
    fn resolve(
        &self,
        _: &Uri,
        _: &Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        Ok(self.empty())
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The socket beneath, for timeouts.
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
            // end an error.
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

/// The finished stream as a ureq transport.
pub struct Socket {
    stream: Stream,
    buffers: LazyBuffers,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Socket({:?})", self.stream.tcp().peer_addr().ok())
    }
}

/// The socket timeout for the next wait, or the timeout error if none is left.
fn wait_for(timeout: NextTimeout) -> Result<Option<std::time::Duration>, ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|d| *d))
}

fn io_error(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    if net::timed_out(&e) {
        ureq::Error::Timeout(timeout.reason)
    } else {
        ureq::Error::Io(e)
    }
}

impl Transport for Socket {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.stream.tcp().set_write_timeout(wait_for(timeout)?)?;
        let output = &self.buffers.output()[..amount];
        self.stream
            .write_all(output)
            .and_then(|_| self.stream.flush())
            .map_err(|e| io_error(e, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        self.stream.tcp().set_read_timeout(wait_for(timeout)?)?;
        let n = loop {
            match self.stream.read(self.buffers.input_append_buf()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|e| io_error(e, timeout))?,
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        // Never reused: each call opens its own connection (and tunnel).
        false
    }

    fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }
}
