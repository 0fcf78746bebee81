//! A tiny HTTP CONNECT proxy on 127.0.0.1 (std only). It routes only the targets it was
//! given, so a made-up name such as `coordinator.test:PORT` reaches a local coordinator
//! through it and nowhere else; it records every request, counts tunnels, and can demand
//! a `Proxy-Authorization` value or answer 407 to everything.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the proxy treats authentication.
#[derive(Clone, Debug)]
pub enum ProxyAuth {
    /// Tunnels every routed CONNECT.
    Open,
    /// 407 unless `Proxy-Authorization` equals this value exactly.
    Require(String),
    /// 407 to every request.
    AlwaysDeny,
}

/// One CONNECT request as the proxy received it.
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    /// The request line, e.g. `CONNECT coordinator.test:4433 HTTP/1.1`.
    pub line: String,
    /// The request target (`host:port`).
    pub target: String,
    pub proxy_authorization: Option<String>,
    /// The status the proxy answered.
    pub status: u16,
}

#[derive(Default)]
struct Stats {
    tcp_accepts: usize,
    requests: Vec<ConnectRequest>,
    tunnels: usize,
}

pub struct ConnectProxy {
    port: u16,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ConnectProxy {
    /// Start with `routes` (`host:port` as the client names it → where to connect).
    pub fn start(routes: &[(&str, SocketAddr)], auth: ProxyAuth) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let routes: Arc<HashMap<String, SocketAddr>> = Arc::new(
            routes
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), *v))
                .collect(),
        );
        let stats: Arc<Mutex<Stats>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stats, stop) = (stats.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("connect-proxy-{port}"))
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(conn) = conn else { continue };
                        stats.lock().unwrap().tcp_accepts += 1;
                        let (stats, routes, auth) = (stats.clone(), routes.clone(), auth.clone());
                        std::thread::spawn(move || serve(conn, &routes, &auth, &stats));
                    }
                })
                .expect("spawn proxy")
        };
        ConnectProxy {
            port,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, for `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://USER:PASS@127.0.0.1:PORT`.
    pub fn url_with_credentials(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@127.0.0.1:{}", self.port)
    }

    pub fn tcp_accepts(&self) -> usize {
        self.stats.lock().unwrap().tcp_accepts
    }

    pub fn requests(&self) -> Vec<ConnectRequest> {
        self.stats.lock().unwrap().requests.clone()
    }

    /// Tunnels established (answered 200 and connected onward).
    pub fn tunnels(&self) -> usize {
        self.stats.lock().unwrap().tunnels
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads the request head one byte at a time, so whatever the client sends after it
/// (its TLS ClientHello, if it does not wait) stays in the socket for the tunnel.
fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || conn.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    String::from_utf8(head).ok()
}

fn serve(
    mut conn: TcpStream,
    routes: &HashMap<String, SocketAddr>,
    auth: &ProxyAuth,
    stats: &Mutex<Stats>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(head) = read_head(&mut conn) else {
        return;
    };
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default().to_string();
    let proxy_authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_string());
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let target = target.to_string();
    let authorized = match auth {
        ProxyAuth::Open => true,
        ProxyAuth::Require(v) => proxy_authorization.as_deref() == Some(v.as_str()),
        ProxyAuth::AlwaysDeny => false,
    };
    let upstream = if method != "CONNECT" || !authorized {
        None
    } else {
        routes
            .get(&target.to_ascii_lowercase())
            .and_then(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(5)).ok())
    };
    let (status, answer) = match (&upstream, method, authorized) {
        (_, m, _) if m != "CONNECT" => (405, "HTTP/1.1 405 Method Not Allowed\r\n\r\n"),
        (_, _, false) => (
            407,
            "HTTP/1.1 407 Proxy Authentication Required\r\n\
             Proxy-Authenticate: Basic realm=\"usepod-edge test proxy\"\r\n\
             Content-Length: 0\r\n\r\n",
        ),
        (None, _, _) => (502, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"),
        (Some(_), _, _) => (200, "HTTP/1.1 200 Connection established\r\n\r\n"),
    };
    stats.lock().unwrap().requests.push(ConnectRequest {
        line,
        target,
        proxy_authorization,
        status,
    });
    if conn.write_all(answer.as_bytes()).is_err() {
        return;
    }
    let Some(upstream) = upstream else {
        let _ = conn.shutdown(Shutdown::Both);
        return;
    };
    stats.lock().unwrap().tunnels += 1;
    let _ = conn.set_read_timeout(None);
    let (Ok(c2), Ok(u2)) = (conn.try_clone(), upstream.try_clone()) else {
        return;
    };
    std::thread::spawn(move || pump(c2, u2));
    pump(upstream, conn);
}

/// Copies `from` → `to` until EOF or error, then half-closes `to` so the other side
/// sees the end too.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
