//! `usepod-edge pair`: the device-flow pairing of docs/protocol.md ("Pairing"): issue
//! a code, show it, poll until the operator confirms it, then write the config
//! and keep the provider_id in the identity file.

use crate::client::coordinator::CoordinatorHost;
use crate::client::{Limits, Request};
use crate::config::{Config, CoordinatorConfig};
use crate::endpoint::{Endpoint, Scheme};
use crate::identity::Identity;
use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Upper bound on waiting for the operator, whatever the server says.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
const POLL_EVERY: Duration = Duration::from_secs(3);
const MAX_BODY: usize = 1 << 20;
/// One pairing call, connect to last byte.
const CALL_LIMIT: Duration = Duration::from_secs(30);

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

/// Reads a poll answer; an unknown status is an error naming it.
pub fn parse_poll(v: &Value) -> Result<PollState, String> {
    match v.get("status").and_then(Value::as_str) {
        Some("pending") => Ok(PollState::Pending),
        Some("expired") => Ok(PollState::Expired),
        Some("active") => Ok(PollState::Active {
            provider_id: v
                .get("provider_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            model_config: v
                .get("model_config")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| {
                            Some(ModelChoice {
                                model_id: m.get("model_id")?.as_str()?.to_owned(),
                                input_per_1m: m.get("input_per_1m").and_then(Value::as_u64),
                                output_per_1m: m.get("output_per_1m").and_then(Value::as_u64),
                                max_concurrent: m.get("max_concurrent").and_then(Value::as_u64),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        Some(other) => Err(format!(
            "unknown pairing status \"{}\"",
            crate::untrusted::shown(other, 64)
        )),
        None => Err(format!(
            "pairing answer without a status: {}",
            crate::untrusted::shown(&v.to_string(), 300)
        )),
    }
}

/// The coordinator's WebSocket URL for an API base: http→ws, https→wss, + /provider/connect.
pub fn ws_url(api: &str) -> Result<String, String> {
    let api = api.trim_end_matches('/');
    let rest = api
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| api.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .ok_or_else(|| {
            format!(
                "--api must be an http(s):// URL, got {:?}",
                crate::endpoint::redact_url(api)
            )
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

/// The config written after pairing: coordinator, identity path, the backends
/// found now, and the prices the operator chose on the site.
pub fn render_config(ws: &str, key_path: &Path, backends: &[Value], state: &PollState) -> Value {
    let mut models = Map::new();
    let mut max_concurrent = None;
    if let PollState::Active { model_config, .. } = state {
        for m in model_config {
            let mut p = Map::new();
            if let Some(i) = m.input_per_1m {
                p.insert("input_per_1m".into(), json!(i));
            }
            if let Some(o) = m.output_per_1m {
                p.insert("output_per_1m".into(), json!(o));
            }
            models.insert(m.model_id.clone(), Value::Object(p));
            max_concurrent = max_concurrent.max(m.max_concurrent);
        }
    }
    let mut config = json!({
        "coordinator": {"url": ws},
        "identity": {"key_path": key_path},
        "backends": backends,
        "pricing": {"models": models},
    });
    if let Some(c) = max_concurrent.filter(|c| (1..=256).contains(c)) {
        config["limits"] = json!({"max_concurrent": c});
    }
    config
}

/// How pairing reaches the API: the coordinator's timeouts and proxy rules,
/// and its trust anchors (webpki-roots, `ca_file`, `$SSL_CERT_FILE`).
struct ApiClient {
    /// As the operator gave it, without a trailing slash; for messages.
    shown: String,
    host: CoordinatorHost,
}

impl ApiClient {
    fn new(api: &str, coordinator: &CoordinatorConfig) -> Result<ApiClient, String> {
        let shown = api.trim_end_matches('/').to_owned();
        let base = Endpoint::parse(&shown)
            .map_err(|e| format!("--api {}: {e}", crate::endpoint::redact_url(&shown)))?;
        match base.scheme {
            Scheme::Https => {}
            Scheme::Http if base.is_loopback() || coordinator.allow_insecure => {}
            Scheme::Http => {
                return Err(format!(
                    "--api {shown}: http:// (no TLS) is only allowed to loopback hosts; use https:// or set coordinator.allow_insecure"
                ))
            }
            _ => return Err(format!("--api must be an http(s):// URL, got {shown}")),
        }
        let roots = crate::session::trust_anchors(
            coordinator,
            std::env::var_os(crate::session::ENV_SSL_CERT_FILE),
        )
        .map_err(|e| e.to_string())?;
        let tls = crate::session::tls_config(&roots)?;
        // TLS for https; plain only where the session itself would go without
        // it (loopback, or `allow_insecure`), as checked above.
        Ok(ApiClient {
            shown,
            host: CoordinatorHost::new(base, coordinator, tls),
        })
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.shown);
        let body = body.to_string();
        let req = Request {
            method: "POST",
            path,
            headers: &[("Content-Type", "application/json")],
            body: Some(body.as_bytes()),
        };
        // The call's budget starts before the connection, proxy and TLS included.
        let mut resp = self
            .host
            .send(&req, Limits::quick(CALL_LIMIT))
            .map_err(|e| format!("POST {url}: {e}"))?;
        if !(200..300).contains(&resp.status) {
            let excerpt = String::from_utf8_lossy(&resp.read_prefix(300)).into_owned();
            return Err(format!(
                "POST {url} answered HTTP {}: {}",
                resp.status,
                crate::untrusted::shown(&excerpt, 300)
            ));
        }
        let text = resp
            .read_to_end(MAX_BODY)
            .map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
        serde_json::from_slice(&text).map_err(|e| format!("POST {url}: answer is not JSON ({e})"))
    }
}

/// The whole flow; `config_path` is where the config is written.
pub fn run(config_path: &Path, api: Option<&str>, force: bool, config: &Config) -> ExitCode {
    if config_path.exists() && !force {
        eprintln!(
            "usepod-edge: {} already exists; pairing would replace it. Run `pair --force` to do so.",
            config_path.display()
        );
        return ExitCode::from(2);
    }
    // Without --api, pair with whatever coordinator the config names.
    let api = api
        .map(str::to_owned)
        .unwrap_or_else(|| api_base(&config.coordinator.url));
    let ws = match ws_url(&api) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("usepod-edge: {e}");
            return ExitCode::from(2);
        }
    };
    match pair(config_path, &api, &ws, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usepod-edge: pairing failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pair(config_path: &Path, api: &str, ws: &str, config: &Config) -> Result<(), String> {
    let client = ApiClient::new(api, &config.coordinator)?;
    let (mut identity, _) =
        Identity::load_or_create(&config.key_path).map_err(|e| e.to_string())?;

    let d = crate::discovery::Discovery::new(config);
    d.round();
    let snap = d.snapshot();
    let backends: Vec<Value> = snap
        .backends
        .iter()
        .filter_map(|(t, p)| {
            let p = p.as_ref().filter(|p| p.healthy)?;
            Some(json!({"kind": t.kind.as_str(), "url": t.url.to_string(),
                        "models": p.models.iter().map(|m| m.id.clone()).collect::<Vec<_>>()}))
        })
        .collect();

    let issued = client.post(
        "/v1/host/pair/issue",
        &json!({"agent_pubkey": identity.public_b64()}),
    )?;
    let code = issued
        .get("pair_code")
        .and_then(Value::as_str)
        .ok_or("issue answer has no pair_code")?;
    let token = issued
        .get("poll_token")
        .and_then(Value::as_str)
        .ok_or("issue answer has no poll_token")?;
    let expires = issued
        .get("expires_at")
        .and_then(Value::as_str)
        .unwrap_or("in a few minutes");
    // Both come from the server and go to the operator's terminal.
    println!(
        "To pair this device, open {} and enter the code:\n\n    {}\n\n(expires {})",
        pair_page(api),
        crate::untrusted::shown(code, 64),
        crate::untrusted::shown(expires, 64)
    );
    let poll_body = json!({"poll_token": token,
        "capabilities": {"backends": backends, "agent_version": env!("CARGO_PKG_VERSION")}});
    let started = Instant::now();
    let state = loop {
        if started.elapsed() > MAX_WAIT {
            return Err(format!(
                "not confirmed within {} minutes",
                MAX_WAIT.as_secs() / 60
            ));
        }
        match parse_poll(&client.post("/v1/host/pair/poll", &poll_body)?)? {
            PollState::Pending => std::thread::sleep(POLL_EVERY),
            PollState::Expired => {
                return Err(format!(
                    "the code {} expired before it was confirmed; run pair again",
                    crate::untrusted::shown(code, 64)
                ))
            }
            active => break active,
        }
    };
    if let PollState::Active {
        provider_id: Some(pid),
        ..
    } = &state
    {
        if crate::identity::valid_provider_id(pid) {
            identity.set_provider_id(pid).map_err(|e| e.to_string())?;
            println!(
                "paired as {pid}; provider_id saved in {}",
                identity.path().display()
            );
        } else {
            // Never persisted (it could add lines to the identity file); the
            // session's auth_ok brings the provider_id again.
            eprintln!(
                "usepod-edge: warning: ignoring the provider_id in the pairing answer, \"{}\": not 1-128 of A-Z a-z 0-9 . _ : -; not saved",
                crate::untrusted::shown(pid, 140)
            );
        }
    }
    let mut paired = render_config(ws, &config.key_path, &backends, &state);
    // The trust the pairing itself needed, the session needs too; the CA path
    // absolute, since a service runs from another working directory.
    if let Some(ca) = &config.coordinator.ca_file {
        let ca = std::fs::canonicalize(ca).unwrap_or_else(|_| ca.clone());
        paired["coordinator"]["ca_file"] = json!(ca);
    }
    if std::env::var_os(crate::session::ENV_SSL_CERT_FILE).is_some_and(|v| !v.is_empty()) {
        println!(
            "note: {} added trust anchors for pairing; the service needs the same variable, or \
             coordinator.ca_file in the config",
            crate::session::ENV_SSL_CERT_FILE
        );
    }
    if config.coordinator.allow_insecure {
        paired["coordinator"]["allow_insecure"] = json!(true);
    }
    let text = serde_json::to_string_pretty(&paired).unwrap_or_default();
    crate::atomic_file::ensure_private_dir(config_path)
        .map_err(|e| format!("{}: {e}", config_path.display()))?;
    crate::atomic_file::write(config_path, format!("{text}\n").as_bytes(), 0o640)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    println!(
        "config written to {}; start the agent with `usepod-edge --config {} run`",
        config_path.display(),
        config_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = ws_url("u:hunter2@api.example").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let coordinator = Config::from_str("f", "{}", &Default::default())
            .unwrap()
            .coordinator;
        let e = ApiClient::new("https://u:hun/ter2@api.example", &coordinator)
            .err()
            .unwrap();
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
        assert_eq!(
            parse_poll(&json!({"status":"pending"})),
            Ok(PollState::Pending)
        );
        assert_eq!(
            parse_poll(&json!({"status":"expired"})),
            Ok(PollState::Expired)
        );
        let active = parse_poll(&json!({"status":"active","host_token":"t","provider_id":"prov-1",
            "model_config":[{"model_id":"m","input_per_1m":7,"output_per_1m":9,"max_concurrent":2},{"bad":1}]}))
        .unwrap();
        assert_eq!(
            active,
            PollState::Active {
                provider_id: Some("prov-1".into()),
                model_config: vec![choice()]
            }
        );
        assert!(parse_poll(&json!({"status":"weird"}))
            .unwrap_err()
            .contains("weird"));
        assert!(parse_poll(&json!({})).is_err());
    }

    #[test]
    fn written_config_is_valid_and_carries_prices() {
        let state = PollState::Active {
            provider_id: None,
            model_config: vec![choice()],
        };
        let backends =
            vec![json!({"kind":"llamacpp","url":"http://127.0.0.1:8080/","models":["m"]})];
        let v = render_config(
            "wss://api.usepod.ai/provider/connect",
            Path::new("/k"),
            &backends,
            &state,
        );
        let c = Config::from_str(
            "paired.json",
            &v.to_string(),
            &crate::config::Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.pricing.resolve("m"), (7, 9));
        assert_eq!(c.limits.max_concurrent, 2);
        assert_eq!(c.backends.len(), 1);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}
