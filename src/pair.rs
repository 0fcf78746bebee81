//! `usepod-edge pair`: the device-flow pairing of docs/protocol.md ("Pairing"): issue
//! a code, show it, poll until the operator confirms it, then write the config
//! and keep the provider_id in the identity file.

use crate::client::coordinator::CoordinatorHost;
use crate::client::{HttpError, Limits, Request};
use crate::config::{Config, CoordinatorConfig};
use crate::endpoint::{Endpoint, Scheme};
use crate::host::{Env, Host, ENV_SSL_CERT_FILE};
use crate::identity::{Identity, IdentityError};
use crate::untrusted::shown;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Upper bound on waiting for the operator, whatever the server says.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
const POLL_EVERY: Duration = Duration::from_secs(3);
const MAX_BODY: usize = 1 << 20;
/// One pairing call, connect to last byte.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Why pairing stopped.
#[derive(Debug)]
pub enum PairError {
    /// `--api` or the coordinator settings cannot be used; says why.
    Setup(String),
    /// The trust anchors (`ca_file`, `$SSL_CERT_FILE`) cannot be read.
    Trust(crate::config::ConfigError),
    /// TLS cannot be set up with them.
    Tls(crate::net::TlsError),
    Identity(IdentityError),
    /// The call did not complete.
    Call {
        url: String,
        source: HttpError,
    },
    /// The API answered, but not with success.
    Status {
        url: String,
        status: u16,
        excerpt: String,
    },
    /// The answer is not what the pairing API sends (or the request could not be made).
    Answer {
        url: String,
        source: AnswerError,
    },
    Expired {
        code: String,
    },
    NotConfirmed,
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for PairError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairError::Setup(what) => f.write_str(what),
            PairError::Trust(e) => write!(f, "{e}"),
            PairError::Tls(e) => write!(f, "{e}"),
            PairError::Identity(e) => write!(f, "{e}"),
            PairError::Call { url, source } => write!(f, "POST {url}: {source}"),
            PairError::Status {
                url,
                status,
                excerpt,
            } => write!(f, "POST {url} answered HTTP {status}: {excerpt}"),
            PairError::Answer { url, source } => write!(f, "POST {url}: {source}"),
            PairError::Expired { code } => write!(
                f,
                "the code {code} expired before it was confirmed; run pair again"
            ),
            PairError::NotConfirmed => write!(
                f,
                "not confirmed within {} minutes",
                MAX_WAIT.as_secs() / 60
            ),
            PairError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for PairError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PairError::Identity(e) => Some(e),
            PairError::Trust(e) => Some(e),
            PairError::Tls(e) => Some(e),
            PairError::Call { source, .. } => Some(source),
            PairError::Answer { source, .. } => Some(source),
            PairError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// How a pairing answer (or the request for it) failed to be what the API sends.
#[derive(Debug)]
pub enum AnswerError {
    Encode(serde_json::Error),
    /// Not the JSON this call expects.
    Unexpected(serde_json::Error),
    /// A poll answer that is not a JSON object.
    NotAnObject(serde_json::Error),
    /// An `active` poll answer that cannot be read.
    Active(serde_json::Error),
    /// A poll status this agent does not know (as received).
    UnknownStatus(String),
    /// A poll answer without a status (the answer's text).
    NoStatus(String),
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::Encode(e) => write!(f, "cannot encode the request ({e})"),
            AnswerError::Unexpected(e) => write!(f, "unexpected answer ({e})"),
            AnswerError::NotAnObject(e) => write!(f, "answer is not a JSON object ({e})"),
            AnswerError::Active(e) => write!(f, "unreadable active answer ({e})"),
            AnswerError::UnknownStatus(s) => {
                write!(f, "unknown pairing status \"{}\"", shown(s, 64))
            }
            AnswerError::NoStatus(text) => {
                write!(f, "pairing answer without a status: {}", shown(text, 300))
            }
        }
    }
}

impl std::error::Error for AnswerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AnswerError::Encode(e)
            | AnswerError::Unexpected(e)
            | AnswerError::NotAnObject(e)
            | AnswerError::Active(e) => Some(e),
            AnswerError::UnknownStatus(_) | AnswerError::NoStatus(_) => None,
        }
    }
}

impl From<IdentityError> for PairError {
    fn from(e: IdentityError) -> PairError {
        PairError::Identity(e)
    }
}

// ---- the pairing API's messages -------------------------------------------------------

#[derive(Serialize)]
struct IssueRequest<'a> {
    agent_pubkey: &'a str,
}

#[derive(Deserialize)]
struct Issued {
    pair_code: String,
    poll_token: String,
    #[serde(default)]
    expires_at: Option<String>,
}

/// A backend as pairing reports it and as the written config lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendEntry {
    pub kind: &'static str,
    pub url: String,
    pub models: Vec<String>,
}

#[derive(Serialize)]
struct PollRequest<'a> {
    poll_token: &'a str,
    capabilities: PollCapabilities<'a>,
}

#[derive(Serialize)]
struct PollCapabilities<'a> {
    backends: &'a [BackendEntry],
    agent_version: &'a str,
}

/// Only the status first: its other fields depend on it.
#[derive(Deserialize)]
struct PollHead {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct ActiveAnswer {
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    model_config: Vec<ChoiceAnswer>,
}

/// One model the operator configured on the site. Entries without a model id
/// are skipped and a price that is not a whole number is left unset: the site
/// may grow fields, and one odd entry must not fail a pairing.
#[derive(Deserialize)]
struct ChoiceAnswer {
    #[serde(default)]
    model_id: Option<Lenient<String>>,
    #[serde(default)]
    input_per_1m: Option<Lenient<u64>>,
    #[serde(default)]
    output_per_1m: Option<Lenient<u64>>,
    #[serde(default)]
    max_concurrent: Option<Lenient<u64>>,
}

/// A value of the wanted type, or anything else (read and ignored).
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Is(T),
    Other(IgnoredAny),
}

impl<T> Lenient<T> {
    fn get(this: Option<Lenient<T>>) -> Option<T> {
        match this {
            Some(Lenient::Is(v)) => Some(v),
            _ => None,
        }
    }
}

/// What the operator chose for one model on the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice {
    pub model_id: String,
    pub input_per_1m: Option<u64>,
    pub output_per_1m: Option<u64>,
    pub max_concurrent: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PollState {
    Pending,
    Expired,
    Active {
        provider_id: Option<String>,
        model_config: Vec<ModelChoice>,
    },
}

/// Reads a poll answer; an unknown status is a problem naming it.
pub fn parse_poll(text: &[u8]) -> Result<PollState, AnswerError> {
    let head: PollHead = serde_json::from_slice(text).map_err(AnswerError::NotAnObject)?;
    match head.status.as_deref() {
        Some("pending") => Ok(PollState::Pending),
        Some("expired") => Ok(PollState::Expired),
        Some("active") => {
            let a: ActiveAnswer = serde_json::from_slice(text).map_err(AnswerError::Active)?;
            let model_config = a
                .model_config
                .into_iter()
                .filter_map(|m| {
                    Some(ModelChoice {
                        model_id: Lenient::get(m.model_id)?,
                        input_per_1m: Lenient::get(m.input_per_1m),
                        output_per_1m: Lenient::get(m.output_per_1m),
                        max_concurrent: Lenient::get(m.max_concurrent),
                    })
                })
                .collect();
            Ok(PollState::Active {
                provider_id: a.provider_id,
                model_config,
            })
        }
        Some(other) => Err(AnswerError::UnknownStatus(other.to_owned())),
        None => Err(AnswerError::NoStatus(
            String::from_utf8_lossy(text).into_owned(),
        )),
    }
}

/// The coordinator's WebSocket URL for an API base: http→ws, https→wss, + /provider/connect.
pub fn ws_url(api: &str) -> Result<String, PairError> {
    let api = api.trim_end_matches('/');
    let rest = api
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| api.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .ok_or_else(|| {
            PairError::Setup(format!(
                "--api must be an http(s):// URL, got {:?}",
                crate::endpoint::redact_url(api)
            ))
        })?;
    Ok(format!("{rest}/provider/connect"))
}

/// The HTTP(S) API base of a coordinator URL: wss://host/… → https://host.
pub fn api_base(coordinator: &crate::endpoint::Endpoint) -> String {
    use crate::endpoint::Scheme;
    let (scheme, default_port) = match coordinator.scheme {
        Scheme::Ws | Scheme::Http => ("http", 80),
        Scheme::Wss | Scheme::Https => ("https", 443),
    };
    if coordinator.port == default_port {
        let host = if coordinator.host.contains(':') {
            format!("[{}]", coordinator.host)
        } else {
            coordinator.host.clone()
        };
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{}", coordinator.authority())
    }
}

/// Where the operator confirms the code: the site beside the API host.
pub fn pair_page(api: &str) -> String {
    let api = api.trim_end_matches('/');
    let site = match api.split_once("://api.") {
        Some((scheme, host)) => format!("{scheme}://{host}"),
        None => api.to_owned(),
    };
    format!("{site}/host/pair")
}

/// The config `pair` writes: coordinator, identity path, the backends found
/// now, and the prices the operator chose on the site. Read back by
/// `Config::from_str`, so its keys are the config's.
#[derive(Debug, Serialize)]
pub struct PairedConfig {
    pub coordinator: PairedCoordinator,
    pub identity: PairedIdentity,
    pub backends: Vec<BackendEntry>,
    pub pricing: PairedPricing,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<PairedLimits>,
}

#[derive(Debug, Serialize)]
pub struct PairedCoordinator {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure: bool,
}

#[derive(Debug, Serialize)]
pub struct PairedIdentity {
    pub key_path: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct PairedPricing {
    pub models: BTreeMap<String, PairedPrice>,
}

#[derive(Debug, Serialize)]
pub struct PairedPrice {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_per_1m: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_per_1m: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct PairedLimits {
    pub max_concurrent: u64,
}

pub fn render_config(
    ws: &str,
    key_path: &Path,
    backends: &[BackendEntry],
    state: &PollState,
) -> PairedConfig {
    let mut models = BTreeMap::new();
    let mut max_concurrent = None;
    if let PollState::Active { model_config, .. } = state {
        for m in model_config {
            let price = PairedPrice {
                input_per_1m: m.input_per_1m,
                output_per_1m: m.output_per_1m,
            };
            models.insert(m.model_id.clone(), price);
            max_concurrent = max_concurrent.max(m.max_concurrent);
        }
    }
    let limits = max_concurrent
        .filter(|c| (1..=u64::from(crate::config::MAX_CONCURRENT_LIMIT)).contains(c))
        .map(|max_concurrent| PairedLimits { max_concurrent });
    PairedConfig {
        coordinator: PairedCoordinator {
            url: ws.to_owned(),
            ca_file: None,
            allow_insecure: false,
        },
        identity: PairedIdentity {
            key_path: key_path.to_owned(),
        },
        backends: backends.to_vec(),
        pricing: PairedPricing { models },
        limits,
    }
}

/// How pairing reaches the API: the coordinator's timeouts and proxy rules,
/// and its trust anchors (webpki-roots, `ca_file`, `$SSL_CERT_FILE`).
struct ApiClient {
    /// As the operator gave it, without a trailing slash; for messages.
    shown: String,
    host: CoordinatorHost,
}

impl ApiClient {
    fn new(api: &str, coordinator: &CoordinatorConfig, env: &Env) -> Result<ApiClient, PairError> {
        let shown = api.trim_end_matches('/').to_owned();
        let setup = |what: String| PairError::Setup(what);
        let base = Endpoint::parse(&shown).map_err(|e| {
            setup(format!(
                "--api {}: {e}",
                crate::endpoint::redact_url(&shown)
            ))
        })?;
        match base.scheme {
            Scheme::Https => {}
            Scheme::Http if base.is_loopback() || coordinator.allow_insecure => {}
            Scheme::Http => {
                return Err(setup(format!(
                    "--api {shown}: http:// (no TLS) is only allowed to loopback hosts; use https:// or set coordinator.allow_insecure"
                )))
            }
            _ => return Err(setup(format!("--api must be an http(s):// URL, got {shown}"))),
        }
        let roots = crate::session::trust_anchors(coordinator, env).map_err(PairError::Trust)?;
        let tls = crate::net::tls::client_config(&roots).map_err(PairError::Tls)?;
        // TLS for https; plain only where the session itself would go without
        // it (loopback, or `allow_insecure`), as checked above.
        Ok(ApiClient {
            shown,
            host: CoordinatorHost::new(base, crate::session::timeouts(coordinator), tls, env),
        })
    }

    /// POSTs `body` and returns the answer's bytes (a 2xx answer only).
    fn post_raw(&self, path: &str, body: &impl Serialize) -> Result<Vec<u8>, PairError> {
        let url = format!("{}{path}", self.shown);
        let body = serde_json::to_vec(body).map_err(|e| PairError::Answer {
            url: url.clone(),
            source: AnswerError::Encode(e),
        })?;
        let req = Request {
            method: "POST",
            path,
            headers: &[("Content-Type", "application/json")],
            api_key: None,
            body: Some(&body),
        };
        // The call's budget starts before the connection, proxy and TLS included.
        let mut resp = match self.host.send(&req, Limits::quick(CALL_LIMIT)) {
            Ok(r) => r,
            Err(source) => return Err(PairError::Call { url, source }),
        };
        if !(200..300).contains(&resp.status) {
            let excerpt = String::from_utf8_lossy(&resp.read_prefix(300)).into_owned();
            return Err(PairError::Status {
                url,
                status: resp.status,
                excerpt: shown(&excerpt, 300).to_string(),
            });
        }
        match resp.read_to_end(MAX_BODY) {
            Ok(bytes) => Ok(bytes),
            Err(source) => Err(PairError::Call { url, source }),
        }
    }

    /// POSTs `body` and reads the answer as `T`.
    fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, PairError> {
        let bytes = self.post_raw(path, body)?;
        serde_json::from_slice(&bytes).map_err(|e| PairError::Answer {
            url: format!("{}{path}", self.shown),
            source: AnswerError::Unexpected(e),
        })
    }
}

/// What pairing tells the operator as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The code to enter, where, and until when (the last two from the server, shown).
    Code {
        page: String,
        code: String,
        expires: String,
    },
    Saved {
        provider_id: String,
        identity: PathBuf,
    },
    /// The answer's provider_id is not one (shown); not saved.
    IgnoredProviderId(String),
    /// `$SSL_CERT_FILE` was needed here and will be for the service.
    SslCertFileNeeded,
    Written {
        config: PathBuf,
    },
}

impl Progress {
    /// A warning rather than news.
    pub fn is_warning(&self) -> bool {
        matches!(self, Progress::IgnoredProviderId(_))
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Code {
                page,
                code,
                expires,
            } => write!(
                f,
                "To pair this device, open {page} and enter the code:\n\n    {code}\n\n(expires {expires})"
            ),
            Progress::Saved {
                provider_id,
                identity,
            } => write!(
                f,
                "paired as {provider_id}; provider_id saved in {}",
                identity.display()
            ),
            Progress::IgnoredProviderId(pid) => write!(
                f,
                "ignoring the provider_id in the pairing answer, \"{pid}\": not 1-128 of A-Z a-z 0-9 . _ : -; not saved"
            ),
            Progress::SslCertFileNeeded => write!(
                f,
                "note: {ENV_SSL_CERT_FILE} added trust anchors for pairing; the service needs the same variable, or \
                 coordinator.ca_file in the config"
            ),
            Progress::Written { config } => write!(
                f,
                "config written to {}; start the agent with `usepod-edge --config {} run`",
                config.display(),
                config.display()
            ),
        }
    }
}

/// What one pairing needs: where the config goes, the API, the live config, the host.
pub struct Pairing<'a> {
    pub config_path: &'a Path,
    pub api: &'a str,
    /// The session URL the written config names.
    pub ws: &'a str,
    pub config: &'a Config,
    pub host: &'a Host,
}

/// The whole flow: issue, show, poll, save the provider_id, write the config.
pub fn pair(r: &Pairing, say: &mut dyn FnMut(Progress)) -> Result<(), PairError> {
    let Pairing {
        config_path,
        api,
        ws,
        config,
        host,
    } = *r;
    let client = ApiClient::new(api, &config.coordinator, &host.env)?;
    let (mut identity, _) = Identity::load_or_create(&config.key_path)?;

    let d = crate::discovery::Discovery::new(config);
    d.round();
    let snap = d.snapshot();
    let backends: Vec<BackendEntry> = snap
        .backends
        .iter()
        .filter_map(|(t, p)| {
            let p = p.as_ref().filter(|p| p.healthy)?;
            Some(BackendEntry {
                kind: t.kind.as_str(),
                url: t.url.to_string(),
                models: p.models.iter().map(|m| m.id.clone()).collect(),
            })
        })
        .collect();

    let issued: Issued = client.post(
        "/v1/host/pair/issue",
        &IssueRequest {
            agent_pubkey: &identity.public_b64(),
        },
    )?;
    let code = shown(&issued.pair_code, 64).to_string();
    let expires = issued.expires_at.as_deref().unwrap_or("in a few minutes");
    // Both come from the server and go to the operator's terminal.
    say(Progress::Code {
        page: pair_page(api),
        code: code.clone(),
        expires: shown(expires, 64).to_string(),
    });
    let poll = PollRequest {
        poll_token: &issued.poll_token,
        capabilities: PollCapabilities {
            backends: &backends,
            agent_version: &host.version,
        },
    };
    let started = Instant::now();
    let state = loop {
        if started.elapsed() > MAX_WAIT {
            return Err(PairError::NotConfirmed);
        }
        let answer = client.post_raw("/v1/host/pair/poll", &poll)?;
        let state = parse_poll(&answer).map_err(|source| PairError::Answer {
            url: format!("{}/v1/host/pair/poll", client.shown),
            source,
        })?;
        match state {
            PollState::Pending => std::thread::sleep(POLL_EVERY),
            PollState::Expired => return Err(PairError::Expired { code }),
            active => break active,
        }
    };
    if let PollState::Active {
        provider_id: Some(pid),
        ..
    } = &state
    {
        if crate::identity::valid_provider_id(pid) {
            identity.set_provider_id(pid)?;
            say(Progress::Saved {
                provider_id: pid.clone(),
                identity: identity.path().to_owned(),
            });
        } else {
            // Never persisted (it could add lines to the identity file); the
            // session's auth_ok brings the provider_id again.
            say(Progress::IgnoredProviderId(shown(pid, 140).to_string()));
        }
    }
    let mut paired = render_config(ws, &config.key_path, &backends, &state);
    // The trust the pairing itself needed, the session needs too; the CA path
    // absolute, since a service runs from another working directory.
    paired.coordinator.ca_file = config
        .coordinator
        .ca_file
        .as_ref()
        .map(|ca| std::fs::canonicalize(ca).unwrap_or_else(|_| ca.clone()));
    if host.env.get(ENV_SSL_CERT_FILE).is_some() {
        say(Progress::SslCertFileNeeded);
    }
    paired.coordinator.allow_insecure = config.coordinator.allow_insecure;
    let text = serde_json::to_string_pretty(&paired).unwrap_or_default();
    let write_error = |source| PairError::Write {
        path: config_path.to_owned(),
        source,
    };
    crate::atomic_file::ensure_private_dir(config_path).map_err(write_error)?;
    crate::atomic_file::write(config_path, format!("{text}\n").as_bytes(), 0o640)
        .map_err(write_error)?;
    say(Progress::Written {
        config: config_path.to_owned(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_follow_the_api_base() {
        assert_eq!(
            ws_url("https://api.usepod.ai").unwrap(),
            "wss://api.usepod.ai/provider/connect"
        );
        assert_eq!(
            ws_url("http://127.0.0.1:9/").unwrap(),
            "ws://127.0.0.1:9/provider/connect"
        );
        assert!(ws_url("ftp://x").is_err());
        let e = ws_url("u:hunter2@api.example").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let coordinator = Config::from_str("f", "{}", &Default::default())
            .unwrap()
            .coordinator;
        let e = ApiClient::new(
            "https://u:hun/ter2@api.example",
            &coordinator,
            &Env::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(!e.contains("hun") && !e.contains("ter2"), "{e}");
        assert_eq!(
            pair_page("https://api.usepod.ai"),
            "https://usepod.ai/host/pair"
        );
        assert_eq!(
            pair_page("http://127.0.0.1:9"),
            "http://127.0.0.1:9/host/pair"
        );
    }

    fn choice() -> ModelChoice {
        ModelChoice {
            model_id: "m".into(),
            input_per_1m: Some(7),
            output_per_1m: Some(9),
            max_concurrent: Some(2),
        }
    }

    #[test]
    fn poll_answers() {
        let poll =
            |v: serde_json::Value| parse_poll(v.to_string().as_bytes()).map_err(|e| e.to_string());
        assert_eq!(poll(json!({"status":"pending"})), Ok(PollState::Pending));
        assert_eq!(poll(json!({"status":"expired"})), Ok(PollState::Expired));
        let active = poll(json!({"status":"active","host_token":"t","provider_id":"prov-1",
            "model_config":[{"model_id":"m","input_per_1m":7,"output_per_1m":9,"max_concurrent":2},
                            {"bad":1},
                            {"model_id":"n","input_per_1m":"7","output_per_1m":-1,"max_concurrent":2.5}]}))
        .unwrap();
        assert_eq!(
            active,
            PollState::Active {
                provider_id: Some("prov-1".into()),
                model_config: vec![
                    choice(),
                    ModelChoice {
                        model_id: "n".into(),
                        input_per_1m: None,
                        output_per_1m: None,
                        max_concurrent: None
                    }
                ]
            }
        );
        assert_eq!(
            poll(json!({"status":"weird\n"})),
            Err("unknown pairing status \"weird\\n\"".into())
        );
        assert_eq!(
            poll(json!({})),
            Err("pairing answer without a status: {}".into())
        );
        assert!(parse_poll(b"[1]")
            .unwrap_err()
            .to_string()
            .starts_with("answer is not a JSON object"));
    }

    #[test]
    fn written_config_is_valid_and_carries_prices() {
        let state = PollState::Active {
            provider_id: None,
            model_config: vec![choice()],
        };
        let backends = vec![BackendEntry {
            kind: "llamacpp",
            url: "http://127.0.0.1:8080/".into(),
            models: vec!["m".into()],
        }];
        let v = render_config(
            "wss://api.usepod.ai/provider/connect",
            Path::new("/k"),
            &backends,
            &state,
        );
        let text = serde_json::to_string(&v).unwrap();
        let c =
            Config::from_str("paired.json", &text, &crate::config::Overrides::default()).unwrap();
        assert_eq!(c.pricing.resolve("m"), (7, 9));
        assert_eq!(c.limits.max_concurrent, 2);
        assert_eq!(c.backends.len(), 1);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}
