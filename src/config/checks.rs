//! Each section of the file checked into its part of [`Config`], with the
//! defaults it leaves unset.

use super::certs::load_certs;
use super::checker::{join, Checker};
use super::env::{Overrides, ENV_COORDINATOR_URL};
use super::error::ConfigError;
use super::lenient::{List, Obj, Opt, Section, Typed, Unknown};
use super::paths::default_key_path;
use super::raw::{
    Days, RawBackend, RawConfig, RawCoordinator, RawLedger, RawLimits, RawLocalFirst, RawPricing,
    RawUpgrade, RawWindow,
};
use super::types::*;
use crate::backend::BackendKind;
use crate::endpoint::{redact_url, Endpoint, Scheme};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// The order below is the order problems are reported in, and the order of the
// warnings: sections as the file format lists them, keys within each.
pub(super) fn build(
    origin: &str,
    source: Option<PathBuf>,
    mut raw: RawConfig,
    unknown: &Unknown,
    over: &Overrides,
) -> Result<Config, ConfigError> {
    let mut w = Checker {
        origin,
        warnings: Vec::new(),
    };
    w.unknown("", unknown);
    let coordinator = build_coordinator(&mut w, &mut raw.coordinator, over)?;

    let mut ident = w.section(&mut raw.identity, "identity")?;
    // Checked even when the environment overrides it: the file stays valid either way.
    let file_key_path = w.string(&mut ident.key_path, "identity.key_path")?;
    let key_path = match (&over.key_path, file_key_path) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(p)) if !p.is_empty() => PathBuf::from(p),
        (None, Some(_)) => return Err(w.err("identity.key_path", "must not be empty")),
        (None, None) => default_key_path(source.as_deref()),
    };

    let backends = build_backends(&mut w, &mut raw.backends)?;
    let pricing = build_pricing(&mut w, &mut raw.pricing)?;
    let limits = build_limits(&mut w, &mut raw.limits)?;
    let schedule = build_schedule(&mut w, &mut raw.schedule)?;
    let local_first = build_local_first(&mut w, &mut raw.local_first)?;
    let upgrade = build_upgrade(&mut w, &mut raw.upgrade)?;

    let mut st = w.section(&mut raw.status, "status")?;
    let state_file = match w
        .string(&mut st.state_file, "status.state_file")?
        .filter(|s| !s.is_empty())
    {
        Some(p) => PathBuf::from(p),
        // Beside the identity: a directory the agent can always write.
        None => key_path.with_file_name("state.json"),
    };
    let status = StatusConfig {
        state_file,
        metrics_textfile: w
            .string(&mut st.metrics_textfile, "status.metrics_textfile")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        interval: w.seconds(&mut st.interval_s, "status.interval_s", 5.0, 300.0)?,
        log_level: match w.string(&mut st.log_level, "status.log_level")? {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                w.err(
                    "status.log_level",
                    format!("{text:?} is not a level (error, warn, info, debug, trace)"),
                )
            })?),
        },
    };
    let ledger = build_ledger(&mut w, &mut raw.ledger, &status.state_file)?;

    Ok(Config {
        status,
        ledger,
        schedule,
        local_first,
        upgrade,
        source,
        coordinator,
        key_path,
        backends,
        pricing,
        limits,
        warnings: w.warnings,
    })
}

fn build_pricing(w: &mut Checker, raw: &mut Section<RawPricing>) -> Result<Pricing, ConfigError> {
    let mut p = w.section(raw, "pricing")?;
    let default_input_per_1m = w
        .uint(&mut p.default_input_per_1m, "pricing.default_input_per_1m")?
        .unwrap_or(DEFAULT_INPUT_PER_1M);
    let default_output_per_1m = w
        .uint(
            &mut p.default_output_per_1m,
            "pricing.default_output_per_1m",
        )?
        .unwrap_or(DEFAULT_OUTPUT_PER_1M);
    for (key, v) in [
        ("pricing.default_input_per_1m", default_input_per_1m),
        ("pricing.default_output_per_1m", default_output_per_1m),
    ] {
        if v == 0 {
            return Err(w.err(
                key,
                "must be greater than 0 (a zero price means \"not offered\"; set 0 per model under pricing.models instead)",
            ));
        }
    }
    let mut models = BTreeMap::new();
    let price_map = match p.models.take() {
        None => BTreeMap::new(),
        Some(Obj::Ok(m, _)) => m,
        Some(Obj::Wrong) => return Err(w.err("pricing.models", "must be an object of model ids")),
    };
    for (model, price) in price_map {
        let path = format!("pricing.models.{model}");
        let Obj::Ok(mut price, unknown) = price else {
            return Err(w.err(
                &path,
                "must be an object with input_per_1m and/or output_per_1m",
            ));
        };
        w.unknown(&path, &unknown);
        let input_per_1m = w.uint(&mut price.input_per_1m, &join(&path, "input_per_1m"))?;
        let output_per_1m = w.uint(&mut price.output_per_1m, &join(&path, "output_per_1m"))?;
        models.insert(
            model,
            ModelPrice {
                input_per_1m,
                output_per_1m,
            },
        );
    }
    Ok(Pricing {
        default_input_per_1m,
        default_output_per_1m,
        models,
    })
}

fn build_limits(w: &mut Checker, raw: &mut Section<RawLimits>) -> Result<Limits, ConfigError> {
    let mut l = w.section(raw, "limits")?;
    let max_concurrent = w
        .uint(&mut l.max_concurrent, "limits.max_concurrent")?
        .unwrap_or(u64::from(DEFAULT_MAX_CONCURRENT));
    if !(1..=u64::from(MAX_CONCURRENT_LIMIT)).contains(&max_concurrent) {
        return Err(w.err(
            "limits.max_concurrent",
            format!("must be between 1 and {MAX_CONCURRENT_LIMIT}, got {max_concurrent}"),
        ));
    }
    let max_request_bytes = w
        .uint(&mut l.max_request_bytes, "limits.max_request_bytes")?
        .unwrap_or(DEFAULT_MAX_REQUEST_BYTES as u64);
    if max_request_bytes < 1024 {
        return Err(w.err(
            "limits.max_request_bytes",
            format!("must be at least 1024, got {max_request_bytes}"),
        ));
    }
    let max_request_bytes = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
    let max_output_tokens = w
        .positive(
            &mut l.max_output_tokens,
            "limits.max_output_tokens",
            u64::from(u32::MAX),
        )?
        .map(|n| n as u32);
    let max_messages = w
        .positive(&mut l.max_messages, "limits.max_messages", 1 << 20)?
        .unwrap_or(DEFAULT_MAX_MESSAGES as u64);
    let max_prompt_bytes = w
        .positive(&mut l.max_prompt_bytes, "limits.max_prompt_bytes", u64::MAX)?
        .map_or(max_request_bytes, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    let allow_fields = w
        .names(
            &mut l.allow_fields,
            "limits.allow_fields",
            "must be an array of request field names",
            "must be a non-empty field name",
        )?
        .unwrap_or_default();
    let max_tokens_per_minute =
        w.uint(&mut l.max_tokens_per_minute, "limits.max_tokens_per_minute")?;
    let allow_remote_media = w
        .boolean(&mut l.allow_remote_media, "limits.allow_remote_media")?
        .unwrap_or(false);
    let backend_connect_timeout = w.seconds(
        &mut l.backend_connect_timeout_s,
        "limits.backend_connect_timeout_s",
        5.0,
        300.0,
    )?;
    let first_byte_timeout = w.seconds(
        &mut l.first_byte_timeout_s,
        "limits.first_byte_timeout_s",
        120.0,
        3600.0,
    )?;
    let idle_timeout = w.seconds(&mut l.idle_timeout_s, "limits.idle_timeout_s", 60.0, 3600.0)?;
    let drain_timeout = w.seconds(
        &mut l.drain_timeout_s,
        "limits.drain_timeout_s",
        30.0,
        3600.0,
    )?;
    let allow_battery = w
        .boolean(&mut l.allow_battery, "limits.allow_battery")?
        .unwrap_or(false);
    let celsius = |v: &mut Opt<f64>, key: &str, default: f64| -> Result<f64, ConfigError> {
        let v = w.value(v, key, "a temperature in °C")?.unwrap_or(default);
        if !(20.0..=150.0).contains(&v) {
            return Err(w.err(key, format!("must be between 20 and 150 °C, got {v}")));
        }
        Ok(v)
    };
    let max_temp_c = celsius(&mut l.max_temp_c, "limits.max_temp_c", DEFAULT_MAX_TEMP_C)?;
    // Without an explicit resume point, 10 °C of cooling before serving again.
    let resume_default = if max_temp_c == DEFAULT_MAX_TEMP_C {
        DEFAULT_RESUME_TEMP_C
    } else {
        (max_temp_c - 10.0).max(20.0)
    };
    let resume_temp_c = celsius(&mut l.resume_temp_c, "limits.resume_temp_c", resume_default)?;
    if resume_temp_c >= max_temp_c {
        return Err(w.err(
            "limits.resume_temp_c",
            format!("must be below limits.max_temp_c ({max_temp_c}), got {resume_temp_c}"),
        ));
    }
    Ok(Limits {
        max_concurrent: max_concurrent as u32,
        max_tokens_per_minute,
        max_request_bytes,
        max_output_tokens,
        max_messages: usize::try_from(max_messages).unwrap_or(usize::MAX),
        max_prompt_bytes,
        allow_remote_media,
        allow_fields,
        backend_connect_timeout,
        first_byte_timeout,
        idle_timeout,
        drain_timeout,
        max_temp_c,
        resume_temp_c,
        allow_battery,
    })
}

fn build_ledger(
    w: &mut Checker,
    raw: &mut Section<RawLedger>,
    state_file: &Path,
) -> Result<LedgerConfig, ConfigError> {
    let mut l = w.section(raw, "ledger")?;
    let path = match w.string(&mut l.path, "ledger.path")? {
        Some(p) if p.is_empty() => return Err(w.err("ledger.path", "must not be empty")),
        Some(p) => PathBuf::from(p),
        // Beside the state file: the agent writes there already.
        None => state_file.with_file_name("ledger.jsonl"),
    };
    let max_bytes = match w.uint(&mut l.max_bytes, "ledger.max_bytes")? {
        Some(0) => return Err(w.err("ledger.max_bytes", "must be at least 1, got 0")),
        Some(n) => n,
        None => DEFAULT_LEDGER_MAX_BYTES,
    };
    let keep = match w.uint(&mut l.keep, "ledger.keep")? {
        Some(n) if n > u64::from(MAX_LEDGER_KEEP) => {
            return Err(w.err(
                "ledger.keep",
                format!("must be at most {MAX_LEDGER_KEEP}, got {n}"),
            ))
        }
        Some(n) => n as u32,
        None => DEFAULT_LEDGER_KEEP,
    };
    Ok(LedgerConfig {
        path,
        max_bytes,
        keep,
    })
}

fn build_schedule(
    w: &mut Checker,
    raw: &mut Option<List<Obj<RawWindow>>>,
) -> Result<Vec<crate::schedule::Window>, ConfigError> {
    use crate::schedule::{parse_days, parse_time, Window};
    let list = match raw.take() {
        None => return Ok(Vec::new()),
        Some(List::Ok(list)) => list,
        Some(List::Wrong) => {
            return Err(w.err(
                "schedule",
                "must be an array of {\"days\", \"from\", \"to\"} windows",
            ))
        }
    };
    let mut out = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        let path = format!("schedule[{i}]");
        let Obj::Ok(mut o, unknown) = item else {
            return Err(w.err(&path, "must be an object with days, from and to"));
        };
        w.unknown(&path, &unknown);
        let days_key = join(&path, "days");
        let days = match o.days.take() {
            None => [true; 7],
            Some(Typed::Ok(Days::One(s))) => {
                parse_days(&[s.as_str()]).map_err(|p| w.err(&days_key, p))?
            }
            Some(Typed::Ok(Days::Many(names))) => {
                let names = names
                    .iter()
                    .map(|d| match d {
                        Typed::Ok(s) => Ok(s.as_str()),
                        Typed::Wrong(_) => Err(w.err(&days_key, "must list day names as strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                parse_days(&names).map_err(|p| w.err(&days_key, p))?
            }
            Some(Typed::Wrong(got)) => {
                return Err(w.err(
                    &days_key,
                    format!("must be a string such as \"Mon-Fri\" or an array of them, got {got}"),
                ))
            }
        };
        let time = |v: &mut Opt<String>, key: &str, end: bool| -> Result<u16, ConfigError> {
            let key = join(&path, key);
            let text = w
                .string(v, &key)?
                .ok_or_else(|| w.err(&key, "missing (a time HH:MM)"))?;
            parse_time(&text, end).map_err(|p| w.err(&key, p))
        };
        let (from, to) = (
            time(&mut o.from, "from", false)?,
            time(&mut o.to, "to", true)?,
        );
        if from == to {
            return Err(w.err(
                &join(&path, "to"),
                "is the same time as from; use \"from\": \"00:00\", \"to\": \"24:00\" for the whole day",
            ));
        }
        out.push(Window { days, from, to });
    }
    Ok(out)
}

fn build_local_first(
    w: &mut Checker,
    raw: &mut Section<RawLocalFirst>,
) -> Result<LocalFirst, ConfigError> {
    let mut o = w.section(raw, "local_first")?;
    let gpu_busy_pct = w
        .value(
            &mut o.gpu_busy_pct,
            "local_first.gpu_busy_pct",
            "a percentage",
        )?
        .unwrap_or(30.0);
    if !(gpu_busy_pct > 0.0 && gpu_busy_pct <= 100.0) {
        return Err(w.err(
            "local_first.gpu_busy_pct",
            format!("must be greater than 0 and at most 100, got {gpu_busy_pct}"),
        ));
    }
    Ok(LocalFirst {
        enabled: w
            .boolean(&mut o.enabled, "local_first.enabled")?
            .unwrap_or(true),
        busy: w.seconds(&mut o.busy_s, "local_first.busy_s", 10.0, 86_400.0)?,
        idle: w.seconds(&mut o.idle_s, "local_first.idle_s", 120.0, 86_400.0)?,
        gpu_busy_pct,
    })
}

fn build_upgrade(
    w: &mut Checker,
    raw: &mut Section<RawUpgrade>,
) -> Result<UpgradeConfig, ConfigError> {
    let mut u = w.section(raw, "upgrade")?;
    let key = "upgrade.trusted_keys";
    let keys = w
        .names(
            &mut u.trusted_keys,
            key,
            "must be a list of ed25519 public keys (base64)",
            "must be an ed25519 public key: standard base64 of 32 bytes",
        )?
        .unwrap_or_default();
    let mut trusted_keys = Vec::new();
    for (j, k) in keys.iter().enumerate() {
        let Some(bytes) = crate::release::signature::b64_array(k) else {
            return Err(w.err(
                &format!("{key}[{j}]"),
                "must be an ed25519 public key: standard base64 of 32 bytes",
            ));
        };
        trusted_keys.push(bytes);
    }
    Ok(UpgradeConfig { trusted_keys })
}

fn build_coordinator(
    w: &mut Checker,
    raw: &mut Section<RawCoordinator>,
    over: &Overrides,
) -> Result<CoordinatorConfig, ConfigError> {
    let mut c = w.section(raw, "coordinator")?;
    let allow_insecure = w
        .boolean(&mut c.allow_insecure, "coordinator.allow_insecure")?
        .unwrap_or(false);
    let (url_text, url_err): (String, Box<dyn Fn(String) -> ConfigError>) =
        match &over.coordinator_url {
            // The file's url is not read at all then, so a wrong one there cannot
            // stop an agent whose environment names the right one.
            Some(u) => (
                u.clone(),
                Box::new(|problem| ConfigError {
                    origin: "environment".into(),
                    key: ENV_COORDINATOR_URL.into(),
                    problem,
                }),
            ),
            None => {
                let origin = w.origin.to_owned();
                (
                    w.string(&mut c.url, "coordinator.url")?
                        .unwrap_or_else(|| DEFAULT_COORDINATOR_URL.into()),
                    Box::new(move |problem| ConfigError {
                        origin: origin.clone(),
                        key: "coordinator.url".into(),
                        problem,
                    }),
                )
            }
        };
    let url = Endpoint::parse(&url_text).map_err(|e| url_err(e.into()))?;
    match url.scheme {
        Scheme::Wss => {}
        Scheme::Ws if url.is_loopback() || allow_insecure => {}
        Scheme::Ws => {
            return Err(url_err(format!(
                "ws:// (no TLS) is only allowed to loopback hosts; use wss:// or set coordinator.allow_insecure (got {})",
                redact_url(&url_text)
            )))
        }
        Scheme::Http | Scheme::Https => {
            return Err(url_err(format!(
                "must be a wss:// (or loopback ws://) URL, got {}",
                redact_url(&url_text)
            )))
        }
    }
    let file_code = w.value(
        &mut c.enrollment_code,
        "coordinator.enrollment_code",
        "a string",
    )?;
    let enrollment_code = over
        .enrollment_code
        .clone()
        .or(file_code)
        .filter(|s| !s.is_empty());
    let ca_file = w
        .string(&mut c.ca_file, "coordinator.ca_file")?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let extra_roots = match &ca_file {
        None => Vec::new(),
        Some(path) => load_certs(path).map_err(|e| w.err("coordinator.ca_file", e.to_string()))?,
    };
    Ok(CoordinatorConfig {
        url,
        enrollment_code,
        ca_file,
        extra_roots,
        allow_insecure,
        heartbeat_interval: w.seconds(
            &mut c.heartbeat_interval_s,
            "coordinator.heartbeat_interval_s",
            15.0,
            3600.0,
        )?,
        ping_interval: w.seconds(
            &mut c.ping_interval_s,
            "coordinator.ping_interval_s",
            15.0,
            3600.0,
        )?,
        // The default is reconnect::DRAIN_SPREAD (a test there says so); spelled out
        // because fuzz/ builds this file without the reconnect module.
        drain_spread: w.seconds(
            &mut c.drain_spread_s,
            "coordinator.drain_spread_s",
            5.0,
            600.0,
        )?,
        connect_timeout: w.seconds(
            &mut c.connect_timeout_s,
            "coordinator.connect_timeout_s",
            10.0,
            300.0,
        )?,
        handshake_timeout: w.seconds(
            &mut c.handshake_timeout_s,
            "coordinator.handshake_timeout_s",
            15.0,
            300.0,
        )?,
    })
}

fn build_backends(
    w: &mut Checker,
    raw: &mut Option<List<Obj<RawBackend>>>,
) -> Result<Vec<BackendConfig>, ConfigError> {
    let list = match raw.take() {
        None => return Ok(Vec::new()),
        Some(List::Ok(list)) => list,
        Some(List::Wrong) => return Err(w.err("backends", "must be an array")),
    };
    let mut out: Vec<BackendConfig> = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        let path = format!("backends[{i}]");
        let Obj::Ok(mut b, unknown) = item else {
            return Err(w.err(&path, "must be an object"));
        };
        w.unknown(&path, &unknown);
        let kind_key = join(&path, "kind");
        let kind_text = w.string(&mut b.kind, &kind_key)?.ok_or_else(|| {
            w.err(
                &kind_key,
                "missing (one of vllm, llamacpp, lmstudio, ollama)",
            )
        })?;
        let kind = BackendKind::parse(&kind_text).ok_or_else(|| {
            w.err(
                &kind_key,
                format!("unknown backend kind {kind_text:?} (expected one of vllm, llamacpp, lmstudio, ollama)"),
            )
        })?;
        let url_key = join(&path, "url");
        let url = match w.string(&mut b.url, &url_key)? {
            Some(u) => Endpoint::parse(&u).map_err(|p| w.err(&url_key, p))?,
            None => Endpoint::parse(&format!("http://127.0.0.1:{}", kind.default_port()))
                .map_err(|p| w.err(&url_key, p))?,
        };
        if url.scheme != Scheme::Http {
            return Err(w.err(
                &url_key,
                format!("must be an http:// URL (local backends speak plain HTTP), got {url}"),
            ));
        }
        if let Some(j) = out.iter().position(|o| o.url == url) {
            return Err(w.err(
                &url_key,
                format!("duplicate backend: {url} is already backends[{j}]"),
            ));
        }
        let models = w.names(
            &mut b.models,
            &join(&path, "models"),
            "must be an array of model ids",
            "must be a non-empty string",
        )?;
        let api_key_env = w
            .string(&mut b.api_key_env, &join(&path, "api_key_env"))?
            .filter(|s| !s.is_empty());
        let allow_insecure = w
            .boolean(&mut b.allow_insecure, &join(&path, "allow_insecure"))?
            .unwrap_or(false);
        // Backends speak plain HTTP: a key sent off this host crosses the network
        // in clear text. Judged on the setting, not on whether the variable is
        // set now, so a config does not turn unsafe when the environment changes.
        if api_key_env.is_some() && !url.is_loopback() && !allow_insecure {
            return Err(w.err(
                &join(&path, "api_key_env"),
                format!(
                    "the backend's API key would go in clear text over http to {url}, which is not this host; \
                     reach the backend through a loopback address (an SSH or TLS tunnel), or set \
                     {path}.allow_insecure to true if that network is trusted"
                ),
            ));
        }
        let api_key = api_key_env.as_ref().and_then(|name| {
            let v = std::env::var(name).ok().filter(|v| !v.is_empty());
            if v.is_none() {
                w.warnings.push(format!(
                    "{}: {path}.api_key_env names {name}, which is not set; requests go without a key",
                    w.origin
                ));
            }
            v.map(Secret::new)
        });
        let native_anthropic = w
            .boolean(&mut b.native_anthropic, &join(&path, "native_anthropic"))?
            .unwrap_or(true);
        out.push(BackendConfig {
            kind,
            url,
            models,
            api_key_env,
            api_key,
            allow_insecure,
            native_anthropic,
        });
    }
    Ok(out)
}
