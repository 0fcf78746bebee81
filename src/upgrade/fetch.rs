//! The new binary and its signature: a local file, or an http(s) URL fetched
//! the way pairing reaches the API (our proxy rules, our TLS trust: webpki
//! roots plus `coordinator.ca_file` and `$SSL_CERT_FILE`).

use crate::client::coordinator::CoordinatorHost;
use crate::client::{HttpError, Limits, Request};
use crate::config::CoordinatorConfig;
use crate::endpoint::{redact_url, Endpoint, Scheme};
use crate::host::Env;
use std::fmt;
use std::io::Read;
use std::time::Duration;

/// Why a file could not be had.
#[derive(Debug)]
pub enum FetchError {
    Read(std::io::Error),
    /// Not a URL we fetch from (the text says why).
    Url(String),
    /// The TLS trust anchors could not be set up.
    Trust(Box<dyn std::error::Error + Send + Sync>),
    Http(HttpError),
    Status(u16),
    TooBig(u64),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Read(e) => write!(f, "{e}"),
            FetchError::Url(e) => f.write_str(e),
            FetchError::Trust(e) => write!(f, "{e}"),
            FetchError::Http(e) => write!(f, "{e}"),
            FetchError::Status(s) => write!(f, "the server answered HTTP {s}"),
            FetchError::TooBig(max) => write!(f, "larger than {max} bytes"),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Read(e) => Some(e),
            FetchError::Http(e) => Some(e),
            FetchError::Trust(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

pub fn is_url(src: &str) -> bool {
    src.starts_with("https://") || src.starts_with("http://")
}

/// At most `max` bytes from `src`, a path or an http(s) URL.
pub fn fetch(
    src: &str,
    max: u64,
    coordinator: &CoordinatorConfig,
    env: &Env,
) -> Result<Vec<u8>, FetchError> {
    if !is_url(src) {
        let f = std::fs::File::open(src).map_err(FetchError::Read)?;
        let mut out = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut out)
            .map_err(FetchError::Read)?;
        return if out.len() as u64 > max {
            Err(FetchError::TooBig(max))
        } else {
            Ok(out)
        };
    }
    let shown = redact_url(src);
    let base = Endpoint::parse(src).map_err(|e| FetchError::Url(format!("{shown}: {e}")))?;
    match base.scheme {
        Scheme::Https => {}
        Scheme::Http if base.is_loopback() || coordinator.allow_insecure => {}
        _ => {
            return Err(FetchError::Url(format!(
                "{shown}: only https:// (http:// to loopback hosts, or with coordinator.allow_insecure)"
            )))
        }
    }
    let roots = crate::session::trust_anchors(coordinator, env)
        .map_err(|e| FetchError::Trust(Box::new(e)))?;
    let tls = crate::net::tls::client_config(&roots).map_err(|e| FetchError::Trust(Box::new(e)))?;
    let host = CoordinatorHost::new(base, crate::session::timeouts(coordinator), tls, env);
    let req = Request {
        method: "GET",
        path: "",
        headers: &[],
        api_key: None,
        body: None,
    };
    let limits = Limits {
        connect: Duration::from_secs(15),
        first_byte: Duration::from_secs(30),
        idle: Duration::from_secs(30),
        deadline: Some(std::time::Instant::now() + Duration::from_secs(600)),
    };
    let mut resp = host.send(&req, limits).map_err(FetchError::Http)?;
    if !(200..300).contains(&resp.status) {
        return Err(FetchError::Status(resp.status));
    }
    resp.read_to_end(usize::try_from(max).unwrap_or(usize::MAX))
        .map_err(|e| match e {
            HttpError::Failed(ureq::Error::BodyExceedsLimit(_)) => FetchError::TooBig(max),
            e => FetchError::Http(e),
        })
}
