//! Which HTTP proxy, if any, carries the coordinator connection (the CONNECT
//! exchange that turns a proxy connection into a tunnel is tunnel.rs).
//!
//! Operators behind a corporate egress proxy set `HTTPS_PROXY`/`ALL_PROXY`
//! (and `NO_PROXY`) for every tool on the host; the agent honours the same
//! variables, with curl's conventions, for the coordinator only. Backends are
//! local by design and never go through a proxy, and neither does a loopback
//! coordinator. TLS runs inside the tunnel, end to end with the coordinator:
//! the proxy sees a host name and opaque bytes, never the session.
//!
//! Selection is a pure function of the target and a variable lookup so the
//! rules are unit-tested without touching the process environment.

use crate::endpoint::{Endpoint, Scheme, UrlError};
use crate::host::Env;
use base64::Engine as _;
use std::fmt;
use std::net::IpAddr;

/// An HTTP proxy taken from the environment. Credentials stay private and out
/// of `Debug`/`Display`, so logging a `Proxy` never leaks them.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Where to open the TCP connection (`http`, host, port).
    pub endpoint: Endpoint,
    /// The variable it came from, for log lines and errors.
    pub source: &'static str,
    credentials: Option<(String, String)>,
}

impl Proxy {
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// The `Proxy-Authorization` value (Basic), when the URL had user info.
    pub(super) fn authorization(&self) -> Option<String> {
        self.credentials.as_ref().map(|(user, pass)| {
            let raw = format!("{user}:{pass}");
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
    }
}

impl fmt::Display for Proxy {
    /// `http://host:port`, without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.endpoint.authority())
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.to_string())
            .field("source", &self.source)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "(redacted)"),
            )
            .finish()
    }
}

/// A proxy variable that cannot be used. Never contains the variable's value,
/// which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfigError {
    pub var: &'static str,
    pub problem: ProxyUrlError,
}

impl fmt::Display for ProxyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.problem)
    }
}

impl std::error::Error for ProxyConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.problem)
    }
}

/// Why a proxy URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyUrlError {
    /// `https://`: TLS to the proxy itself.
    Https,
    /// `socks4://`, `socks5h://`, ...: the scheme as written, lowercased.
    Socks(String),
    UnsupportedScheme(String),
    /// The host and port part is not an address.
    Address(UrlError),
}

impl fmt::Display for ProxyUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyUrlError::Https => f.write_str(
                "https:// proxies (TLS to the proxy) are not supported; \
                 use an http:// proxy that allows CONNECT",
            ),
            ProxyUrlError::Socks(s) => write!(
                f,
                "{s}:// proxies are not supported; use an http:// proxy that allows CONNECT"
            ),
            ProxyUrlError::UnsupportedScheme(s) => {
                write!(f, "unsupported proxy scheme {s:?}; use http://host:port")
            }
            ProxyUrlError::Address(e) => write!(f, "not a usable proxy address: {e}"),
        }
    }
}

impl std::error::Error for ProxyUrlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyUrlError::Address(e) => Some(e),
            _ => None,
        }
    }
}

/// Proxy variables for a target scheme, most specific first; lowercase before
/// uppercase as curl does. Uppercase `HTTP_PROXY` is not read (curl ignores it
/// too: CGI servers put a request's `Proxy:` header there, "httpoxy").
fn proxy_vars(scheme: Scheme) -> &'static [&'static str] {
    match scheme {
        Scheme::Wss | Scheme::Https => &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"],
        Scheme::Ws | Scheme::Http => &["http_proxy", "all_proxy", "ALL_PROXY"],
    }
}

/// The proxy to use for `target`, given a lookup of environment variables.
/// `None` means connect directly: a loopback target, a `NO_PROXY` match, or no
/// proxy variable set (empty values count as unset).
pub fn select(
    target: &Endpoint,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, ProxyConfigError> {
    // Loopback never leaves the host, whatever NO_PROXY says.
    if target.is_loopback() {
        return Ok(None);
    }
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if let Some(list) = set("no_proxy").or_else(|| set("NO_PROXY")) {
        if no_proxy_matches(&list, &target.host, target.port) {
            return Ok(None);
        }
    }
    for &name in proxy_vars(target.scheme) {
        if let Some(value) = set(name) {
            return parse_proxy_url(value.trim())
                .map(|(endpoint, credentials)| {
                    Some(Proxy {
                        endpoint,
                        source: name,
                        credentials,
                    })
                })
                .map_err(|problem| ProxyConfigError { var: name, problem });
        }
    }
    Ok(None)
}

/// [`select`] over the environment the agent honours.
pub fn for_target(target: &Endpoint, env: &Env) -> Result<Option<Proxy>, ProxyConfigError> {
    select(target, |name| env.raw(name).map(str::to_owned))
}

type Credentials = Option<(String, String)>;

/// `[http://][user[:pass]@]host[:port][/]`; errors never echo the input.
fn parse_proxy_url(value: &str) -> Result<(Endpoint, Credentials), ProxyUrlError> {
    let rest = match value.split_once("://") {
        None => value, // curl and Go read a bare host:port as http://
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => rest,
            "https" => return Err(ProxyUrlError::Https),
            s if s.starts_with("socks") => return Err(ProxyUrlError::Socks(s.to_owned())),
            other => return Err(ProxyUrlError::UnsupportedScheme(other.to_owned())),
        },
    };
    // The last '@' of the whole value ends the user info: a password pasted
    // unescaped may hold '@', '/', '?' or '#', and splitting at any of those
    // first would take part of it for the host (and show it in an error).
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let hostport = after.split(['/', '?', '#']).next().unwrap_or_default();
    let credentials = userinfo.map(|u| {
        let (user, pass) = u.split_once(':').unwrap_or((u, ""));
        (percent_decode(user), percent_decode(pass))
    });
    // Reuse the URL parser for host, port and IPv6 brackets; 80 is the default
    // port for an http:// proxy, as in Go and ureq.
    let endpoint =
        Endpoint::parse(&format!("http://{hostport}/")).map_err(ProxyUrlError::Address)?;
    Ok((endpoint, credentials))
}

/// `%XX` escapes in URL user info, so a password can hold `@`, `:` or `%`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `NO_PROXY` exempts `host:port`. Entries are separated by commas or
/// whitespace: `*` (everything), a domain (`example.com`, `.example.com` and
/// `*.example.com` all match the domain and its subdomains, as curl does), an IP
/// literal (IPv6 bare or bracketed), a CIDR block (`10.0.0.0/8`), any of them
/// with `:port` to exempt only that port.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let host_ip: Option<IpAddr> = host.parse().ok();
    list.split([',', ' ', '\t', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| entry_matches(&entry.to_ascii_lowercase(), &host, host_ip, port))
}

fn entry_matches(entry: &str, host: &str, host_ip: Option<IpAddr>, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    let (name, entry_port) = split_entry_port(entry);
    if entry_port.is_some_and(|p| p != port) {
        return false;
    }
    if let Some((net, bits)) = name.split_once('/') {
        return match (net.parse::<IpAddr>(), bits.parse::<u8>(), host_ip) {
            (Ok(net), Ok(bits), Some(ip)) => in_cidr(ip, net, bits),
            _ => false,
        };
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return host_ip == Some(ip);
    }
    // A domain entry says nothing about IP literals ("0.1" must not match
    // 10.0.0.1 by suffix).
    if host_ip.is_some() {
        return false;
    }
    let domain = name
        .trim_start_matches('*')
        .trim_start_matches('.')
        .trim_end_matches('.');
    !domain.is_empty()
        && (host == domain
            || host
                .strip_suffix(domain)
                .is_some_and(|head| head.ends_with('.')))
}

/// Splits `host:port`, `[v6]:port`, `[v6]`, bare IPv6 (no port) or a name.
fn split_entry_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(v6) = entry.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((h, after)) => (h, after.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        // More than one ':' is an IPv6 literal, not host:port.
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(p) => (h, Some(p)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn target(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap()
    }

    fn pick(url: &str, vars: &[(&str, &str)]) -> Option<String> {
        select(&target(url), env(vars))
            .unwrap()
            .map(|p| format!("{p} {}", p.source))
    }

    const COORD: &str = "wss://api.usepod.ai/provider/connect";

    #[test]
    fn proxy_variables_in_curl_order() {
        assert_eq!(pick(COORD, &[]), None);
        assert_eq!(
            pick(COORD, &[("HTTPS_PROXY", "http://p:3128")]).as_deref(),
            Some("http://p:3128 HTTPS_PROXY")
        );
        assert_eq!(
            pick(
                COORD,
                &[
                    ("https_proxy", "http://lower:1"),
                    ("HTTPS_PROXY", "http://upper:2")
                ]
            )
            .as_deref(),
            Some("http://lower:1 https_proxy")
        );
        assert_eq!(
            pick(COORD, &[("ALL_PROXY", "http://all:1")]).as_deref(),
            Some("http://all:1 ALL_PROXY")
        );
        assert_eq!(
            pick(
                COORD,
                &[
                    ("ALL_PROXY", "http://all:1"),
                    ("HTTPS_PROXY", "http://https:2")
                ]
            )
            .as_deref(),
            Some("http://https:2 HTTPS_PROXY")
        );
        // Empty counts as unset and falls through.
        assert_eq!(
            pick(COORD, &[("https_proxy", ""), ("all_proxy", "http://all:1")]).as_deref(),
            Some("http://all:1 all_proxy")
        );
        // Plain HTTP proxy variables do not apply to wss://.
        assert_eq!(pick(COORD, &[("http_proxy", "http://p:1")]), None);
        // ws:// reads lowercase http_proxy, never uppercase HTTP_PROXY (httpoxy).
        let ws = "ws://10.1.2.3:8080/c";
        assert_eq!(
            pick(ws, &[("http_proxy", "http://p:1")]).as_deref(),
            Some("http://p:1 http_proxy")
        );
        assert_eq!(pick(ws, &[("HTTP_PROXY", "http://p:1")]), None);
        assert_eq!(pick(ws, &[("HTTPS_PROXY", "http://p:1")]), None);
    }

    #[test]
    fn loopback_coordinators_never_use_a_proxy() {
        let vars = [
            ("HTTPS_PROXY", "http://p:3128"),
            ("ALL_PROXY", "http://p:1"),
        ];
        for url in [
            "wss://localhost:8443/c",
            "wss://127.0.0.1/c",
            "wss://127.9.9.9/c",
            "wss://[::1]:9/c",
            "ws://127.0.0.1:9/c",
            "wss://agent.localhost/c",
        ] {
            assert_eq!(pick(url, &vars), None, "{url}");
        }
        // Even a broken proxy variable is irrelevant then.
        assert_eq!(
            select(
                &target("wss://localhost/c"),
                env(&[("HTTPS_PROXY", "socks5://x")])
            ),
            Ok(None)
        );
    }

    #[test]
    fn proxy_urls_parse_with_defaults_and_credentials() {
        let p = |v: &str| select(&target(COORD), env(&[("HTTPS_PROXY", v)]));
        let proxy = p("proxy.corp:3128").unwrap().unwrap();
        assert_eq!(proxy.to_string(), "http://proxy.corp:3128");
        assert!(!proxy.has_credentials());
        assert_eq!(p("http://proxy.corp").unwrap().unwrap().endpoint.port, 80);
        assert_eq!(
            p("HTTP://Proxy.Corp:8080/").unwrap().unwrap().to_string(),
            "http://proxy.corp:8080"
        );
        assert_eq!(
            p("http://[fd00::1]:3128").unwrap().unwrap().to_string(),
            "http://[fd00::1]:3128"
        );
        let proxy = p("http://alice:s%40cret:x@proxy:3128").unwrap().unwrap();
        assert!(proxy.has_credentials());
        assert_eq!(
            proxy.authorization().unwrap(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:s@cret:x")
            )
        );
        // Unescaped '@' in the password: the last '@' ends the user info.
        let proxy = p("http://bob:p@ss@proxy:3128").unwrap().unwrap();
        assert_eq!(proxy.endpoint.host, "proxy");
        assert_eq!(
            proxy.authorization().unwrap(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("bob:p@ss")
            )
        );
        // '/', '?' and '#' unescaped in the password: still all user info.
        for pass in ["pa/ss", "pa?ss", "pa#ss", "p/a?s#s@x"] {
            let proxy = p(&format!("http://carol:{pass}@proxy:3128"))
                .unwrap()
                .unwrap();
            assert_eq!(proxy.to_string(), "http://proxy:3128", "{pass}");
            assert_eq!(
                proxy.authorization().unwrap(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("carol:{pass}"))
                ),
                "{pass}"
            );
            let shown = format!("{proxy} {proxy:?}");
            assert!(!shown.contains("pa") && !shown.contains("carol"), "{shown}");
        }
        // Neither Display nor Debug shows credentials.
        let shown = format!("{proxy} {proxy:?}");
        assert!(!shown.contains("bob") && !shown.contains("p@ss"), "{shown}");
        assert!(shown.contains("(redacted)"), "{shown}");
    }

    #[test]
    fn unusable_proxy_urls_fail_clearly_without_echoing_secrets() {
        for (value, needle) in [
            (
                "socks5://u:hunter2@p:1080",
                "socks5:// proxies are not supported",
            ),
            ("socks5h://p:1080", "socks5h:// proxies are not supported"),
            ("socks4://p:1080", "socks4:// proxies are not supported"),
            ("https://u:hunter2@p:443", "https:// proxies"),
            ("ftp://p:21", "unsupported proxy scheme"),
            ("http://u:hunter2@:3128", "no host"),
            ("http://u:hunter2@p:99999", "bad port"),
            ("http://u:hunt/er2@p:99999", "bad port"),
            ("http://u:hunt#er2@:1", "no host"),
        ] {
            let err = select(&target(COORD), env(&[("ALL_PROXY", value)])).unwrap_err();
            assert_eq!(err.var, "ALL_PROXY");
            assert!(err.problem.to_string().contains(needle), "{value}: {err}");
            let shown = err.to_string();
            assert!(
                !shown.contains("hunt") && !shown.contains("er2"),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn no_proxy_rules() {
        let m = no_proxy_matches;
        // '*' and empty.
        assert!(m("*", "api.usepod.ai", 443));
        assert!(!m("", "api.usepod.ai", 443));
        assert!(!m(" , ,", "api.usepod.ai", 443));
        // Exact host, case-insensitive, trailing dots ignored.
        assert!(m("api.usepod.ai", "api.usepod.ai", 443));
        assert!(m("API.usepod.ai.", "api.usepod.ai", 443));
        assert!(m("api.usepod.ai", "api.usepod.ai.", 443));
        // Domain suffix, with or without a leading dot or '*.'.
        for entry in ["usepod.ai", ".usepod.ai", "*.usepod.ai"] {
            assert!(m(entry, "api.usepod.ai", 443), "{entry}");
            assert!(m(entry, "usepod.ai", 443), "{entry}");
            assert!(!m(entry, "notusepod.ai", 443), "{entry}");
            assert!(!m(entry, "usepod.ai.evil.com", 443), "{entry}");
        }
        // Lists: commas and/or whitespace.
        assert!(m(
            "localhost, 10.0.0.0/8 .corp  usepod.ai",
            "api.usepod.ai",
            443
        ));
        assert!(!m("localhost,.corp", "api.usepod.ai", 443));
        // host:port entries exempt only that port.
        assert!(m("api.usepod.ai:443", "api.usepod.ai", 443));
        assert!(!m("api.usepod.ai:8443", "api.usepod.ai", 443));
        assert!(m(".usepod.ai:443", "api.usepod.ai", 443));
        // IP literals and CIDR blocks.
        assert!(m("10.0.0.7", "10.0.0.7", 443));
        assert!(!m("10.0.0.7", "10.0.0.8", 443));
        assert!(m("10.0.0.7:443", "10.0.0.7", 443));
        assert!(!m("10.0.0.7:80", "10.0.0.7", 443));
        assert!(m("10.0.0.0/8", "10.200.3.4", 443));
        assert!(!m("10.0.0.0/8", "11.0.0.1", 443));
        assert!(m("0.0.0.0/0", "192.0.2.1", 443));
        assert!(!m("10.0.0.0/33", "10.0.0.1", 443));
        assert!(!m("10.0.0.0/8", "ten.example", 443));
        assert!(m("fd00::1", "fd00::1", 443));
        assert!(m("[fd00::1]", "fd00::1", 443));
        assert!(m("[fd00::1]:443", "fd00::1", 443));
        assert!(!m("[fd00::1]:80", "fd00::1", 443));
        assert!(m("fd00::/8", "fd12::5", 443));
        assert!(!m("fd00::/8", "fe80::1", 443));
        // A domain entry never matches an IP literal by suffix.
        assert!(!m("0.1", "10.0.0.1", 443));
        assert!(!m(".0.1", "10.0.0.1", 443));
    }

    #[test]
    fn no_proxy_applies_before_the_proxy_url_is_read() {
        let vars = [("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", ".usepod.ai")];
        assert_eq!(pick(COORD, &vars), None);
        // no_proxy (lowercase) wins over NO_PROXY, like curl.
        let vars = [
            ("HTTPS_PROXY", "http://p:3128"),
            ("no_proxy", "other.example"),
            ("NO_PROXY", ".usepod.ai"),
        ];
        assert!(pick(COORD, &vars).is_some());
        // A bypassed host does not care that the proxy variable is broken.
        let vars = [("HTTPS_PROXY", "socks5://p"), ("NO_PROXY", "*")];
        assert_eq!(select(&target(COORD), env(&vars)), Ok(None));
    }
}
