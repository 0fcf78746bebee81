//! The few URL shapes the agent dials: `ws(s)://host[:port]/path` for the
//! coordinator and `http://host[:port][/base]` for backends.

use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ws,
    Wss,
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Ws | Scheme::Http => 80,
            Scheme::Wss | Scheme::Https => 443,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A parsed absolute URL without user info or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// Host name or IP literal, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, always starting with '/'.
    pub path: String,
}

/// Why text is not a URL the agent dials. The URL it quotes is
/// [`redact_url`]ed, and one with user info is refused without quoting it, so
/// an error never holds a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    NotAbsolute(String),
    Credentials,
    UnsupportedScheme(String),
    NoScheme(String),
    UnclosedIpv6(String),
    NoHost(String),
    BadPort(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::NotAbsolute(u) => write!(f, "{u:?} is not an absolute URL (no scheme://)"),
            UrlError::Credentials => f.write_str("credentials in URLs are not supported"),
            UrlError::UnsupportedScheme(s) => write!(f, "unsupported URL scheme {s:?}"),
            UrlError::NoScheme(u) => write!(f, "{u:?} does not start with a URL scheme"),
            UrlError::UnclosedIpv6(u) => write!(f, "unclosed IPv6 literal in {u:?}"),
            UrlError::NoHost(u) => write!(f, "no host in {u:?}"),
            UrlError::BadPort(p) => write!(f, "bad port {p:?}"),
        }
    }
}

impl std::error::Error for UrlError {}

// The config reports a problem as the text after its key.
impl From<UrlError> for String {
    fn from(e: UrlError) -> String {
        e.to_string()
    }
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, UrlError> {
        let shown = || redact_url(s);
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| UrlError::NotAbsolute(shown()))?;
        // Checked before anything splits at '/', '?' or '#': with a password that
        // holds one of them unescaped, a split would leave part of it as a host or port.
        if rest.contains('@') {
            return Err(UrlError::Credentials);
        }
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other if is_scheme(other) => return Err(UrlError::UnsupportedScheme(other.to_owned())),
            _ => return Err(UrlError::NoScheme(shown())),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError::UnclosedIpv6(shown()))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost(shown()));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| UrlError::BadPort(p.to_owned()))?,
        };
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Ok(Endpoint {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    /// True for localhost and loopback IP literals: the only hosts where plain
    /// `ws://` is safe without an explicit opt-in.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self.host.ends_with(".localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `host:port` with IPv6 bracketed, as used in Host headers and socket addresses.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header value: the port only when it is not the scheme's
    /// default, as browsers and curl send it (some virtual hosts compare it exactly).
    pub fn host_header(&self) -> String {
        if self.port != self.scheme.default_port() {
            return self.authority();
        }
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// Path joined under this endpoint's base path (`/v1` + `/models`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.path.trim_end_matches('/'), path)
    }
}

fn is_scheme(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// `s` with its user info, if any, replaced by `<redacted>`: everything between
/// `://` (or the start) and the last `@`. The last `@`, and not the first `/`, `?`
/// or `#`, ends it, because a password pasted unescaped may hold all four; an
/// `@` in a path costs the host in the shown text, which is the safe mistake.
pub fn redact_url(s: &str) -> String {
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => (Some(scheme), rest),
        _ => (None, s),
    };
    let Some(at) = rest.rfind('@') else {
        return s.to_owned();
    };
    let host = &rest[at + 1..];
    match scheme {
        Some(scheme) => format!("{scheme}://<redacted>@{host}"),
        None => format!("<redacted>@{host}"),
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shapes_we_use() {
        let e = Endpoint::parse("wss://api.usepod.ai/provider/connect").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port, e.path.as_str()),
            (Scheme::Wss, "api.usepod.ai", 443, "/provider/connect")
        );
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((e.port, e.path.as_str()), (8080, "/"));
        assert!(e.is_loopback());
        let e = Endpoint::parse("ws://[::1]:9/x?y=1").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 9, "/x?y=1")
        );
        assert_eq!(e.authority(), "[::1]:9");
        assert_eq!(e.host_header(), "[::1]:9");
        assert!(e.is_loopback());
        assert!(!Endpoint::parse("ws://10.0.0.2/").unwrap().is_loopback());
        assert_eq!(
            Endpoint::parse("http://h:1/v1/").unwrap().join("/models"),
            "/v1/models"
        );
        assert_eq!(
            Endpoint::parse("http://h:1").unwrap().join("/health"),
            "/health"
        );
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        for (url, needle) in [
            ("api.usepod.ai", "no scheme"),
            ("ftp://x/", "unsupported URL scheme"),
            ("ws:///x", "no host"),
            ("ws://h:0/", "bad port"),
            ("ws://h:99999/", "bad port"),
            ("ws://u:p@h/", "credentials"),
            ("ws://[::1/", "unclosed"),
        ] {
            let err = Endpoint::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn redaction_hides_user_info_up_to_the_last_at() {
        for (url, expected) in [
            (
                "http://user:pass@proxy:3128",
                "http://<redacted>@proxy:3128",
            ),
            (
                "http://user:p@ss@proxy:3128/",
                "http://<redacted>@proxy:3128/",
            ),
            ("http://u:pa/ss@h:1/x", "http://<redacted>@h:1/x"),
            ("http://u:pa?ss@h:1", "http://<redacted>@h:1"),
            ("http://u:pa#ss@h:1", "http://<redacted>@h:1"),
            (
                "wss://u:a/b?c#d@e@api.example/p",
                "wss://<redacted>@api.example/p",
            ),
            ("user:hunter2@proxy:8080", "<redacted>@proxy:8080"),
            ("u:hunter2@host://x", "<redacted>@host://x"),
            ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
            (
                "wss://api.usepod.ai/provider/connect",
                "wss://api.usepod.ai/provider/connect",
            ),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn parse_errors_never_show_a_password() {
        for url in [
            "http://u:hunter2@h/",
            "http://u:hun/ter2@h:1/",
            "http://u:hun?ter2@h:1",
            "http://u:hun#ter2@h:1",
            "ws://u:hunter2@[::1/",
            "wss://u:hunter2@:1/",
            "u:hunter2@host:1",
            "u:hunter2@host://x",
            "http://u:hunter2/@/",
        ] {
            let err = Endpoint::parse(url).unwrap_err().to_string();
            assert!(
                !err.contains("hunter2") && !err.contains("hun"),
                "{url}: {err}"
            );
        }
        // Nothing parses into an Endpoint with credentials, so its Display has none.
        assert!(Endpoint::parse("http://h:1/a@b").is_err());
    }

    #[test]
    fn host_header_leaves_out_the_default_port() {
        let e = Endpoint::parse("https://api.example").unwrap();
        assert_eq!(e.host_header(), "api.example");
        assert_eq!(e.authority(), "api.example:443");
        let e = Endpoint::parse("http://[fd00::1]").unwrap();
        assert_eq!(e.host_header(), "[fd00::1]");
        assert_eq!(
            Endpoint::parse("http://h:8080").unwrap().host_header(),
            "h:8080"
        );
    }
}
