//! Configuration: the JSON file, then environment overrides, validated into a
//! [`Config`]. Every error names the file (or variable), the key and the problem.

use crate::backend::BackendKind;
use crate::endpoint::{redact_url, Endpoint, Scheme};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_COORDINATOR_URL: &str = "wss://api.usepod.ai/provider/connect";
/// Where a service install keeps its config and state.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/usepod-edge/config.json";
pub const SYSTEM_KEY_PATH: &str = "/var/lib/usepod-edge/identity.key";
pub const DEFAULT_INPUT_PER_1M: u64 = 500_000;
pub const DEFAULT_OUTPUT_PER_1M: u64 = 1_000_000;
pub const DEFAULT_MAX_CONCURRENT: u32 = 8;
pub const MAX_CONCURRENT_LIMIT: u32 = 256;
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 8 << 20;
pub const DEFAULT_MAX_MESSAGES: usize = 1024;

/// A credential from the config or the environment. `{:?}` prints `<redacted>`
/// and there is no `Display`, so a config, or anything holding one, can be
/// debug-printed without leaking it; the value is reached through `Deref`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub url: Endpoint,
    pub enrollment_code: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    /// Certificates from `ca_file`, added to (never replacing) webpki-roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub allow_insecure: bool,
    pub heartbeat_interval: Duration,
    pub ping_interval: Duration,
    /// The first reconnect after a `drain:*` close is drawn uniformly from [0, this).
    pub drain_spread: Duration,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub url: Endpoint,
    /// Allow-list; None offers everything the backend lists.
    pub models: Option<Vec<String>>,
    pub api_key_env: Option<String>,
    /// Read once at load; never logged.
    pub api_key: Option<Secret>,
    /// The operator accepts sending `api_key` in clear text to a backend that is
    /// not on this host.
    pub allow_insecure: bool,
    /// Send Anthropic jobs to the backend's own `/v1/messages` (default); false
    /// always translates them to chat completions.
    pub native_anthropic: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelPrice {
    pub input_per_1m: Option<u64>,
    pub output_per_1m: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Pricing {
    pub default_input_per_1m: u64,
    pub default_output_per_1m: u64,
    pub models: BTreeMap<String, ModelPrice>,
}

impl Pricing {
    /// (input, output) per 1M tokens for a model; a zero in either means "not offered".
    pub fn resolve(&self, model: &str) -> (u64, u64) {
        let p = self.models.get(model).copied().unwrap_or_default();
        (
            p.input_per_1m.unwrap_or(self.default_input_per_1m),
            p.output_per_1m.unwrap_or(self.default_output_per_1m),
        )
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_concurrent: u32,
    pub max_tokens_per_minute: Option<u64>,
    pub max_request_bytes: usize,
    /// Request policy (jobs/policy.rs): the most output tokens a job may ask
    /// for (None: the model's context window), messages per job, raw bytes of
    /// the conversation, whether remote media URLs may reach the backend, and
    /// the extra request fields the operator lets through by name.
    pub max_output_tokens: Option<u32>,
    pub max_messages: usize,
    pub max_prompt_bytes: usize,
    pub allow_remote_media: bool,
    pub allow_fields: Vec<String>,
    /// Backend call limits: connect, first byte (allows a cold model load), and
    /// the longest silence between streamed events.
    pub backend_connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight jobs may run before they are stopped.
    pub drain_timeout: Duration,
    /// Thermal guard: no new jobs above `max_temp_c` on a GPU/SoC zone, until it is
    /// `resume_temp_c` or cooler.
    pub max_temp_c: f64,
    pub resume_temp_c: f64,
    /// Serve while the board runs from its battery.
    pub allow_battery: bool,
}

pub const DEFAULT_MAX_TEMP_C: f64 = 85.0;
pub const DEFAULT_RESUME_TEMP_C: f64 = 75.0;

/// Local first: the agent steps aside while the backend or the GPU is busy with
/// work that is not its own (src/gate/local.rs).
#[derive(Debug, Clone)]
pub struct LocalFirst {
    pub enabled: bool,
    /// Foreign load this long stops admission ...
    pub busy: Duration,
    /// ... and this long without it brings it back.
    pub idle: Duration,
    /// GPU load, in percent, that counts as busy while none of our jobs runs.
    pub gpu_busy_pct: f64,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; None when running on defaults.
    pub source: Option<PathBuf>,
    pub coordinator: CoordinatorConfig,
    pub key_path: PathBuf,
    /// Empty: probe the default ports on 127.0.0.1.
    pub backends: Vec<BackendConfig>,
    pub pricing: Pricing,
    pub limits: Limits,
    /// Non-fatal findings (unknown keys, unset api_key_env) for the log and `validate`.
    pub warnings: Vec<String>,
    pub status: StatusConfig,
    pub ledger: LedgerConfig,
    /// Serving windows in local time; empty serves at all hours.
    pub schedule: Vec<crate::schedule::Window>,
    pub local_first: LocalFirst,
}

/// Local reporting: the state file `usepod-edge status` reads, and an optional
/// Prometheus textfile for node_exporter.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub state_file: PathBuf,
    pub metrics_textfile: Option<PathBuf>,
    pub interval: Duration,
}

/// The earnings ledger (src/ledger/): one JSON line per finished job, rotated
/// by size so it never outgrows `(keep + 1) * max_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    pub path: PathBuf,
    pub max_bytes: u64,
    /// Rotated files kept (`path.1` newest .. `path.keep` oldest).
    pub keep: u32,
}

pub const DEFAULT_LEDGER_MAX_BYTES: u64 = 4 << 20;
pub const DEFAULT_LEDGER_KEEP: u32 = 4;
pub const MAX_LEDGER_KEEP: u32 = 100;

/// Settings taken from the environment, applied over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub coordinator_url: Option<String>,
    pub enrollment_code: Option<Secret>,
    pub key_path: Option<String>,
}

pub const ENV_CONFIG: &str = "USEPOD_EDGE_CONFIG";
pub const ENV_COORDINATOR_URL: &str = "USEPOD_EDGE_COORDINATOR_URL";
pub const ENV_ENROLLMENT_CODE: &str = "USEPOD_EDGE_ENROLLMENT_CODE";
pub const ENV_KEY_PATH: &str = "USEPOD_EDGE_KEY_PATH";

impl Overrides {
    pub fn from_env() -> Overrides {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        Overrides {
            coordinator_url: var(ENV_COORDINATOR_URL),
            enrollment_code: var(ENV_ENROLLMENT_CODE).map(Secret::new),
            key_path: var(ENV_KEY_PATH),
        }
    }
}

/// A configuration problem, located precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file path, or the environment variable that was wrong.
    pub origin: String,
    /// Dotted key path such as `backends[1].kind`; empty for whole-file problems.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config error in {}: {}", self.origin, self.problem)
        } else {
            write!(
                f,
                "config error in {}: {}: {}",
                self.origin, self.key, self.problem
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where to look for the config when none is named: the user's file if it
/// exists, else the system one.
pub fn default_config_path() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME") {
        let user = Path::new(&home).join(".config/usepod-edge/config.json");
        if user.exists() {
            return user;
        }
    }
    PathBuf::from(SYSTEM_CONFIG_PATH)
}

fn default_key_path(config_path: Option<&Path>) -> PathBuf {
    let system = config_path.is_some_and(|p| p.starts_with("/etc"));
    match std::env::var_os("HOME") {
        // usepod-agent's location, so an operator moving over keeps their identity.
        Some(home) if !system => Path::new(&home).join(".usepod-agent/identity.key"),
        _ => PathBuf::from(SYSTEM_KEY_PATH),
    }
}

impl Config {
    /// Loads `path` (an explicitly named file must exist; the default path may be
    /// absent, meaning "defaults") and applies `over`.
    pub fn load(path: &Path, explicit: bool, over: &Overrides) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let root = match std::fs::read_to_string(path) {
            Ok(text) => return Config::from_str(&origin, &text, over),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Map::new(),
            Err(e) => {
                return Err(ConfigError {
                    origin,
                    key: String::new(),
                    problem: format!("cannot read file: {e}"),
                })
            }
        };
        build(&origin, None, &root, over)
    }

    /// Parses config text (used by `load` and by tests and fuzzing).
    pub fn from_str(origin: &str, text: &str, over: &Overrides) -> Result<Config, ConfigError> {
        let root = parse_json(origin, text)?;
        build(origin, Some(PathBuf::from(origin)), &root, over)
    }
}

fn parse_json(origin: &str, text: &str) -> Result<Map<String, Value>, ConfigError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ConfigError {
            origin: origin.into(),
            key: String::new(),
            problem: "the top level must be a JSON object".into(),
        }),
        Err(e) => Err(ConfigError {
            origin: origin.into(),
            key: String::new(),
            problem: format!("invalid JSON: {e}"),
        }),
    }
}

/// Reads typed values out of JSON objects while tracking the key path for errors.
struct Walker<'a> {
    origin: &'a str,
    warnings: Vec<String>,
}

impl Walker<'_> {
    fn err(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.into(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn section<'v>(
        &mut self,
        parent: &'v Map<String, Value>,
        key: &str,
        known: &[&str],
    ) -> Result<Option<&'v Map<String, Value>>, ConfigError> {
        match parent.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => {
                self.check_keys(m, key, known);
                Ok(Some(m))
            }
            Some(_) => Err(self.err(key, "must be an object")),
        }
    }

    fn check_keys(&mut self, obj: &Map<String, Value>, path: &str, known: &[&str]) {
        for k in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            self.warnings
                .push(format!("{}: unknown key {at} ignored", self.origin));
        }
    }

    /// An optional typed value: absent or null is None; a value `convert`
    /// rejects is an error saying it `must` be something else.
    fn typed<T>(
        &self,
        obj: Option<&Map<String, Value>>,
        path: &str,
        key: &str,
        must: &str,
        convert: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match obj.and_then(|o| o.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => convert(v)
                .map(Some)
                .ok_or_else(|| self.err(&join(path, key), format!("must be {must}, got {v}"))),
        }
    }

    fn string(
        &self,
        obj: Option<&Map<String, Value>>,
        path: &str,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        self.typed(obj, path, key, "a string", |v| {
            v.as_str().map(str::to_owned)
        })
    }

    fn boolean(
        &self,
        obj: Option<&Map<String, Value>>,
        path: &str,
        key: &str,
    ) -> Result<Option<bool>, ConfigError> {
        self.typed(obj, path, key, "true or false", Value::as_bool)
    }

    fn uint(
        &self,
        obj: Option<&Map<String, Value>>,
        path: &str,
        key: &str,
    ) -> Result<Option<u64>, ConfigError> {
        self.typed(obj, path, key, "a non-negative integer", Value::as_u64)
    }

    /// Seconds as a positive number (fractions allowed), bounded above.
    fn seconds(
        &self,
        obj: Option<&Map<String, Value>>,
        path: &str,
        key: &str,
        default: f64,
        max: f64,
    ) -> Result<Duration, ConfigError> {
        let v = match obj.and_then(|o| o.get(key)) {
            None | Some(Value::Null) => default,
            Some(v) => v.as_f64().ok_or_else(|| {
                self.err(
                    &join(path, key),
                    format!("must be a number of seconds, got {v}"),
                )
            })?,
        };
        if !(v > 0.0 && v <= max) {
            return Err(self.err(
                &join(path, key),
                format!("must be greater than 0 and at most {max}, got {v}"),
            ));
        }
        Ok(Duration::from_secs_f64(v))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn build(
    origin: &str,
    source: Option<PathBuf>,
    root: &Map<String, Value>,
    over: &Overrides,
) -> Result<Config, ConfigError> {
    let mut w = Walker {
        origin,
        warnings: Vec::new(),
    };
    w.check_keys(
        root,
        "",
        &[
            "coordinator",
            "identity",
            "backends",
            "pricing",
            "limits",
            "status",
            "ledger",
            "schedule",
            "local_first",
        ],
    );
    let coordinator = build_coordinator(&mut w, root, over)?;

    let ident = w.section(root, "identity", &["key_path"])?;
    let key_path = match (&over.key_path, w.string(ident, "identity", "key_path")?) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(p)) if !p.is_empty() => PathBuf::from(p),
        (None, Some(_)) => return Err(w.err("identity.key_path", "must not be empty")),
        (None, None) => default_key_path(source.as_deref()),
    };

    let backends = build_backends(&mut w, root)?;

    let pricing_obj = w.section(
        root,
        "pricing",
        &["default_input_per_1m", "default_output_per_1m", "models"],
    )?;
    let default_input_per_1m = w
        .uint(pricing_obj, "pricing", "default_input_per_1m")?
        .unwrap_or(DEFAULT_INPUT_PER_1M);
    let default_output_per_1m = w
        .uint(pricing_obj, "pricing", "default_output_per_1m")?
        .unwrap_or(DEFAULT_OUTPUT_PER_1M);
    for (key, v) in [
        ("default_input_per_1m", default_input_per_1m),
        ("default_output_per_1m", default_output_per_1m),
    ] {
        if v == 0 {
            return Err(w.err(
                &join("pricing", key),
                "must be greater than 0 (a zero price means \"not offered\"; set 0 per model under pricing.models instead)",
            ));
        }
    }
    let mut models = BTreeMap::new();
    // Keys here are model ids, not settings: nothing to warn about.
    let price_map = match pricing_obj.and_then(|p| p.get("models")) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(w.err("pricing.models", "must be an object of model ids")),
    };
    if let Some(m) = price_map {
        for (model, v) in m {
            let path = format!("pricing.models.{model}");
            let Value::Object(p) = v else {
                return Err(w.err(
                    &path,
                    "must be an object with input_per_1m and/or output_per_1m",
                ));
            };
            w.check_keys(p, &path, &["input_per_1m", "output_per_1m"]);
            models.insert(
                model.clone(),
                ModelPrice {
                    input_per_1m: w.uint(Some(p), &path, "input_per_1m")?,
                    output_per_1m: w.uint(Some(p), &path, "output_per_1m")?,
                },
            );
        }
    }

    let limits_obj = w.section(
        root,
        "limits",
        &[
            "max_concurrent",
            "max_tokens_per_minute",
            "max_request_bytes",
            "max_output_tokens",
            "max_messages",
            "max_prompt_bytes",
            "allow_remote_media",
            "allow_fields",
            "backend_connect_timeout_s",
            "first_byte_timeout_s",
            "idle_timeout_s",
            "drain_timeout_s",
            "max_temp_c",
            "resume_temp_c",
            "allow_battery",
        ],
    )?;
    let max_concurrent = w
        .uint(limits_obj, "limits", "max_concurrent")?
        .unwrap_or(u64::from(DEFAULT_MAX_CONCURRENT));
    if !(1..=u64::from(MAX_CONCURRENT_LIMIT)).contains(&max_concurrent) {
        return Err(w.err(
            "limits.max_concurrent",
            format!("must be between 1 and {MAX_CONCURRENT_LIMIT}, got {max_concurrent}"),
        ));
    }
    let max_request_bytes = w
        .uint(limits_obj, "limits", "max_request_bytes")?
        .unwrap_or(DEFAULT_MAX_REQUEST_BYTES as u64);
    if max_request_bytes < 1024 {
        return Err(w.err(
            "limits.max_request_bytes",
            format!("must be at least 1024, got {max_request_bytes}"),
        ));
    }
    let max_request_bytes = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
    let positive = |key: &str, max: u64| -> Result<Option<u64>, ConfigError> {
        match w.uint(limits_obj, "limits", key)? {
            Some(n) if n == 0 || n > max => Err(w.err(
                &format!("limits.{key}"),
                format!("must be between 1 and {max}, got {n}"),
            )),
            n => Ok(n),
        }
    };
    let max_output_tokens = positive("max_output_tokens", u64::from(u32::MAX))?.map(|n| n as u32);
    let max_messages = positive("max_messages", 1 << 20)?.unwrap_or(DEFAULT_MAX_MESSAGES as u64);
    let max_prompt_bytes = positive("max_prompt_bytes", u64::MAX)?.map_or(max_request_bytes, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let allow_fields = match limits_obj.and_then(|o| o.get("allow_fields")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(j, f)| match f {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(w.err(
                    &format!("limits.allow_fields[{j}]"),
                    "must be a non-empty field name",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(w.err(
                "limits.allow_fields",
                "must be an array of request field names",
            ))
        }
    };
    let limits = Limits {
        max_concurrent: max_concurrent as u32,
        max_tokens_per_minute: w.uint(limits_obj, "limits", "max_tokens_per_minute")?,
        max_request_bytes,
        max_output_tokens,
        max_messages: usize::try_from(max_messages).unwrap_or(usize::MAX),
        max_prompt_bytes,
        allow_remote_media: w
            .boolean(limits_obj, "limits", "allow_remote_media")?
            .unwrap_or(false),
        allow_fields,
        backend_connect_timeout: w.seconds(
            limits_obj,
            "limits",
            "backend_connect_timeout_s",
            5.0,
            300.0,
        )?,
        first_byte_timeout: w.seconds(
            limits_obj,
            "limits",
            "first_byte_timeout_s",
            120.0,
            3600.0,
        )?,
        idle_timeout: w.seconds(limits_obj, "limits", "idle_timeout_s", 60.0, 3600.0)?,
        drain_timeout: w.seconds(limits_obj, "limits", "drain_timeout_s", 30.0, 3600.0)?,
        max_temp_c: DEFAULT_MAX_TEMP_C,
        resume_temp_c: DEFAULT_RESUME_TEMP_C,
        allow_battery: w
            .boolean(limits_obj, "limits", "allow_battery")?
            .unwrap_or(false),
    };
    let limits = build_thermal(&w, limits_obj, limits)?;
    let schedule = build_schedule(&mut w, root)?;
    let local_first = build_local_first(&mut w, root)?;

    let st = w.section(
        root,
        "status",
        &["state_file", "metrics_textfile", "interval_s"],
    )?;
    let state_file = match w
        .string(st, "status", "state_file")?
        .filter(|s| !s.is_empty())
    {
        Some(p) => PathBuf::from(p),
        // Beside the identity: a directory the agent can always write.
        None => key_path.with_file_name("state.json"),
    };
    let status = StatusConfig {
        state_file,
        metrics_textfile: w
            .string(st, "status", "metrics_textfile")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        interval: w.seconds(st, "status", "interval_s", 5.0, 300.0)?,
    };
    let ledger = build_ledger(&mut w, root, &status.state_file)?;

    Ok(Config {
        status,
        ledger,
        schedule,
        local_first,
        source,
        coordinator,
        key_path,
        backends,
        pricing: Pricing {
            default_input_per_1m,
            default_output_per_1m,
            models,
        },
        limits,
        warnings: w.warnings,
    })
}

fn build_ledger(
    w: &mut Walker,
    root: &Map<String, Value>,
    state_file: &Path,
) -> Result<LedgerConfig, ConfigError> {
    const P: &str = "ledger";
    let l = w.section(root, P, &["path", "max_bytes", "keep"])?;
    let path = match w.string(l, P, "path")? {
        Some(p) if p.is_empty() => return Err(w.err("ledger.path", "must not be empty")),
        Some(p) => PathBuf::from(p),
        // Beside the state file: the agent writes there already.
        None => state_file.with_file_name("ledger.jsonl"),
    };
    let max_bytes = match w.uint(l, P, "max_bytes")? {
        Some(0) => return Err(w.err("ledger.max_bytes", "must be at least 1, got 0")),
        Some(n) => n,
        None => DEFAULT_LEDGER_MAX_BYTES,
    };
    let keep = match w.uint(l, P, "keep")? {
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

fn build_thermal(
    w: &Walker,
    obj: Option<&Map<String, Value>>,
    mut limits: Limits,
) -> Result<Limits, ConfigError> {
    let celsius = |key: &str, default: f64| -> Result<f64, ConfigError> {
        let v = w
            .typed(obj, "limits", key, "a temperature in °C", Value::as_f64)?
            .unwrap_or(default);
        if !(20.0..=150.0).contains(&v) {
            return Err(w.err(
                &join("limits", key),
                format!("must be between 20 and 150 °C, got {v}"),
            ));
        }
        Ok(v)
    };
    limits.max_temp_c = celsius("max_temp_c", DEFAULT_MAX_TEMP_C)?;
    // Without an explicit resume point, 10 °C of cooling before serving again.
    let resume_default = if limits.max_temp_c == DEFAULT_MAX_TEMP_C {
        DEFAULT_RESUME_TEMP_C
    } else {
        (limits.max_temp_c - 10.0).max(20.0)
    };
    limits.resume_temp_c = celsius("resume_temp_c", resume_default)?;
    if limits.resume_temp_c >= limits.max_temp_c {
        return Err(w.err(
            "limits.resume_temp_c",
            format!(
                "must be below limits.max_temp_c ({}), got {}",
                limits.max_temp_c, limits.resume_temp_c
            ),
        ));
    }
    Ok(limits)
}

fn build_schedule(
    w: &mut Walker,
    root: &Map<String, Value>,
) -> Result<Vec<crate::schedule::Window>, ConfigError> {
    use crate::schedule::{parse_days, parse_time, Window};
    let list = match root.get("schedule") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(w.err(
                "schedule",
                "must be an array of {\"days\", \"from\", \"to\"} windows",
            ))
        }
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = format!("schedule[{i}]");
        let Value::Object(o) = item else {
            return Err(w.err(&path, "must be an object with days, from and to"));
        };
        w.check_keys(o, &path, &["days", "from", "to"]);
        let days_key = join(&path, "days");
        let days = match o.get("days") {
            None | Some(Value::Null) => [true; 7],
            Some(Value::String(s)) => parse_days(&[s]).map_err(|p| w.err(&days_key, p))?,
            Some(Value::Array(a)) => {
                let names = a
                    .iter()
                    .map(|d| {
                        d.as_str()
                            .ok_or_else(|| w.err(&days_key, "must list day names as strings"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                parse_days(&names).map_err(|p| w.err(&days_key, p))?
            }
            Some(v) => {
                return Err(w.err(
                    &days_key,
                    format!("must be a string such as \"Mon-Fri\" or an array of them, got {v}"),
                ))
            }
        };
        let time = |key: &str, end: bool| -> Result<u16, ConfigError> {
            let text = w
                .string(Some(o), &path, key)?
                .ok_or_else(|| w.err(&join(&path, key), "missing (a time HH:MM)"))?;
            parse_time(&text, end).map_err(|p| w.err(&join(&path, key), p))
        };
        let (from, to) = (time("from", false)?, time("to", true)?);
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

fn build_local_first(w: &mut Walker, root: &Map<String, Value>) -> Result<LocalFirst, ConfigError> {
    const P: &str = "local_first";
    let o = w.section(root, P, &["enabled", "busy_s", "idle_s", "gpu_busy_pct"])?;
    let gpu_busy_pct = w
        .typed(o, P, "gpu_busy_pct", "a percentage", Value::as_f64)?
        .unwrap_or(30.0);
    if !(gpu_busy_pct > 0.0 && gpu_busy_pct <= 100.0) {
        return Err(w.err(
            "local_first.gpu_busy_pct",
            format!("must be greater than 0 and at most 100, got {gpu_busy_pct}"),
        ));
    }
    Ok(LocalFirst {
        enabled: w.boolean(o, P, "enabled")?.unwrap_or(true),
        busy: w.seconds(o, P, "busy_s", 10.0, 86_400.0)?,
        idle: w.seconds(o, P, "idle_s", 120.0, 86_400.0)?,
        gpu_busy_pct,
    })
}

fn build_coordinator(
    w: &mut Walker,
    root: &Map<String, Value>,
    over: &Overrides,
) -> Result<CoordinatorConfig, ConfigError> {
    const P: &str = "coordinator";
    let c = w.section(
        root,
        P,
        &[
            "url",
            "enrollment_code",
            "ca_file",
            "allow_insecure",
            "heartbeat_interval_s",
            "ping_interval_s",
            "drain_spread_s",
            "connect_timeout_s",
            "handshake_timeout_s",
        ],
    )?;
    let allow_insecure = w.boolean(c, P, "allow_insecure")?.unwrap_or(false);
    let (url_text, url_err): (String, Box<dyn Fn(String) -> ConfigError>) =
        match &over.coordinator_url {
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
                    w.string(c, P, "url")?
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
    let enrollment_code = over
        .enrollment_code
        .clone()
        .or(w.string(c, P, "enrollment_code")?.map(Secret::new))
        .filter(|s| !s.is_empty());
    let ca_file = w
        .string(c, P, "ca_file")?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let extra_roots = match &ca_file {
        None => Vec::new(),
        Some(path) => load_certs(path).map_err(|problem| w.err("coordinator.ca_file", problem))?,
    };
    Ok(CoordinatorConfig {
        url,
        enrollment_code,
        ca_file,
        extra_roots,
        allow_insecure,
        heartbeat_interval: w.seconds(c, P, "heartbeat_interval_s", 15.0, 3600.0)?,
        ping_interval: w.seconds(c, P, "ping_interval_s", 15.0, 3600.0)?,
        // The default is reconnect::DRAIN_SPREAD (a test there says so); spelled out
        // because fuzz/ builds this file without the reconnect module.
        drain_spread: w.seconds(c, P, "drain_spread_s", 5.0, 600.0)?,
        connect_timeout: w.seconds(c, P, "connect_timeout_s", 10.0, 300.0)?,
        handshake_timeout: w.seconds(c, P, "handshake_timeout_s", 15.0, 300.0)?,
    })
}

/// PEM certificates from a file, for `ca_file` and `SSL_CERT_FILE`.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e:?}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} contains no PEM CERTIFICATE block",
            path.display()
        ));
    }
    Ok(certs)
}

fn build_backends(
    w: &mut Walker,
    root: &Map<String, Value>,
) -> Result<Vec<BackendConfig>, ConfigError> {
    let list = match root.get("backends") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(w.err("backends", "must be an array")),
    };
    let mut out: Vec<BackendConfig> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = format!("backends[{i}]");
        let Value::Object(b) = item else {
            return Err(w.err(&path, "must be an object"));
        };
        w.check_keys(
            b,
            &path,
            &[
                "kind",
                "url",
                "models",
                "api_key_env",
                "native_anthropic",
                "allow_insecure",
            ],
        );
        let kind_text = w.string(Some(b), &path, "kind")?.ok_or_else(|| {
            w.err(
                &join(&path, "kind"),
                "missing (one of vllm, llamacpp, lmstudio, ollama)",
            )
        })?;
        let kind = BackendKind::parse(&kind_text).ok_or_else(|| {
            w.err(
                &join(&path, "kind"),
                format!("unknown backend kind {kind_text:?} (expected one of vllm, llamacpp, lmstudio, ollama)"),
            )
        })?;
        let url_key = join(&path, "url");
        let url = match w.string(Some(b), &path, "url")? {
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
        let models = match b.get("models") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .enumerate()
                    .map(|(j, m)| match m {
                        Value::String(s) if !s.is_empty() => Ok(s.clone()),
                        _ => {
                            Err(w.err(&format!("{path}.models[{j}]"), "must be a non-empty string"))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(w.err(&join(&path, "models"), "must be an array of model ids")),
        };
        let api_key_env = w
            .string(Some(b), &path, "api_key_env")?
            .filter(|s| !s.is_empty());
        let allow_insecure = w
            .boolean(Some(b), &path, "allow_insecure")?
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
        out.push(BackendConfig {
            kind,
            url,
            models,
            api_key_env,
            api_key,
            allow_insecure,
            native_anthropic: w
                .boolean(Some(b), &path, "native_anthropic")?
                .unwrap_or(true),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str("/etc/usepod-edge/config.json", text, &Overrides::default())
    }

    fn problem(text: &str) -> ConfigError {
        parse(text).expect_err("should be rejected")
    }

    #[test]
    fn request_policy_limits() {
        let l = parse("{}").unwrap().limits;
        assert_eq!(l.max_output_tokens, None, "the context window decides");
        assert_eq!(l.max_messages, DEFAULT_MAX_MESSAGES);
        assert_eq!(l.max_prompt_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert!(!l.allow_remote_media);
        assert!(l.allow_fields.is_empty());
        let l = parse(
            r#"{"limits":{"max_output_tokens":512,"max_messages":8,"max_prompt_bytes":4096,
                "allow_remote_media":true,"allow_fields":["grammar","cache_prompt"]}}"#,
        )
        .unwrap()
        .limits;
        assert_eq!(l.max_output_tokens, Some(512));
        assert_eq!((l.max_messages, l.max_prompt_bytes), (8, 4096));
        assert!(l.allow_remote_media);
        assert_eq!(l.allow_fields, ["grammar", "cache_prompt"]);
        let e = problem(r#"{"limits":{"max_output_tokens":0}}"#);
        assert_eq!(
            (e.key.as_str(), e.problem.as_str()),
            (
                "limits.max_output_tokens",
                "must be between 1 and 4294967295, got 0"
            )
        );
        let e = problem(r#"{"limits":{"allow_fields":["grammar",""]}}"#);
        assert_eq!(
            (e.key.as_str(), e.problem.as_str()),
            ("limits.allow_fields[1]", "must be a non-empty field name")
        );
        let e = problem(r#"{"limits":{"allow_fields":"grammar"}}"#);
        assert_eq!(e.key, "limits.allow_fields");
    }

    #[test]
    fn empty_object_gives_protocol_defaults() {
        let c = parse("{}").unwrap();
        assert_eq!(
            c.coordinator.url.to_string(),
            "wss://api.usepod.ai:443/provider/connect"
        );
        assert_eq!(c.coordinator.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(c.coordinator.ping_interval, Duration::from_secs(15));
        assert_eq!(c.coordinator.drain_spread, Duration::from_secs(5));
        assert_eq!(c.limits.max_concurrent, 8);
        assert_eq!(c.limits.max_tokens_per_minute, None);
        assert_eq!(c.pricing.resolve("x"), (500_000, 1_000_000));
        assert_eq!(c.key_path, PathBuf::from(SYSTEM_KEY_PATH));
        assert!(c.backends.is_empty());
    }

    #[test]
    fn ledger_defaults_beside_the_state_file() {
        let c = parse(r#"{"identity":{"key_path":"/k/identity.key"}}"#).unwrap();
        assert_eq!(
            c.ledger,
            LedgerConfig {
                path: PathBuf::from("/k/ledger.jsonl"),
                max_bytes: DEFAULT_LEDGER_MAX_BYTES,
                keep: DEFAULT_LEDGER_KEEP,
            }
        );
        let c = parse(r#"{"status":{"state_file":"/s/st.json"}}"#).unwrap();
        assert_eq!(c.ledger.path, PathBuf::from("/s/ledger.jsonl"));
        let c = parse(r#"{"ledger":{"path":"/l/e.jsonl","max_bytes":300,"keep":2}}"#).unwrap();
        assert_eq!(
            (c.ledger.path.to_str(), c.ledger.max_bytes, c.ledger.keep),
            (Some("/l/e.jsonl"), 300, 2)
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"{"coordinator":{"url":"wss://api.usepod.ai/provider/connect","enrollment_code":"E",
                "allow_insecure":false,"heartbeat_interval_s":0.5,"ping_interval_s":2,
                "drain_spread_s":12.5},
               "identity":{"key_path":"/tmp/k"},
               "backends":[{"kind":"llamacpp","url":"http://127.0.0.1:8080","models":["a"],"api_key_env":"USEPOD_TEST_UNSET_VAR"},
                           {"kind":"ollama"}],
               "pricing":{"default_input_per_1m":1,"default_output_per_1m":2,"models":{"a":{"input_per_1m":0}}},
               "limits":{"max_concurrent":3,"max_tokens_per_minute":1000}}"#,
        )
        .unwrap();
        assert_eq!(c.coordinator.enrollment_code.as_deref(), Some("E"));
        assert_eq!(c.coordinator.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.coordinator.drain_spread, Duration::from_millis(12_500));
        assert!(
            c.warnings.iter().all(|w| !w.contains("unknown key")),
            "{:?}",
            c.warnings
        );
        assert_eq!(c.backends[1].url.port, 11434);
        assert_eq!(
            c.backends[0].models.as_deref(),
            Some(&["a".to_string()][..])
        );
        assert_eq!(c.pricing.resolve("a"), (0, 2));
        assert_eq!(c.limits.max_tokens_per_minute, Some(1000));
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("USEPOD_TEST_UNSET_VAR")));
    }

    #[test]
    fn every_rejection_names_file_key_and_problem_exactly() {
        const ACCEPTED: &str = "accepted";
        let dir = std::env::temp_dir().join(format!("usepod-edge-cfgtable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("ca-is-a-dir.pem")).unwrap();
        std::fs::write(dir.join("not-a-cert.pem"), "not a certificate\n").unwrap();
        let d = dir.display().to_string();
        // The OS's own words for ENOENT and EISDIR (glibc and musl agree, but ask anyway).
        let os = |code: i32| std::io::Error::from_raw_os_error(code).to_string();
        let (enoent, eisdir) = (os(2), os(21));
        let e = |rest: &str| format!("config error in /etc/usepod-edge/config.json: {rest}");
        let cases: Vec<(Option<&str>, String, String)> = vec![
            // backends
            (None, r#"{"backends":[{"kind":"tgi"}]}"#.into(), e(r#"backends[0].kind: unknown backend kind "tgi" (expected one of vllm, llamacpp, lmstudio, ollama)"#)),
            (None, r#"{"backends":[{"kind":"vllm","url":"https://x:1"}]}"#.into(), e("backends[0].url: must be an http:// URL (local backends speak plain HTTP), got https://x:1/")),
            (None, r#"{"backends":[{"kind":"llamacpp","url":"ftp://127.0.0.1:8080"}]}"#.into(), e(r#"backends[0].url: unsupported URL scheme "ftp""#)),
            (
                None,
                r#"{"backends":[{"kind":"vllm","url":"http://127.0.0.1:8000"},
                                {"kind":"ollama","url":"http://127.0.0.1:8000/"}]}"#.into(),
                e("backends[1].url: duplicate backend: http://127.0.0.1:8000/ is already backends[0]"),
            ),
            (
                None,
                r#"{"backends":[{"kind":"vllm","url":"http://192.0.2.10:8000",
                                 "api_key_env":"USEPOD_TEST_REMOTE_KEY"}]}"#.into(),
                e("backends[0].api_key_env: the backend's API key would go in clear text over http to \
                   http://192.0.2.10:8000/, which is not this host; reach the backend through a \
                   loopback address (an SSH or TLS tunnel), or set backends[0].allow_insecure to \
                   true if that network is trusted"),
            ),
            (
                None,
                r#"{"backends":[{"kind":"vllm","url":"http://192.0.2.10:8000",
                                 "api_key_env":"K","allow_insecure":"yes"}]}"#.into(),
                e(r#"backends[0].allow_insecure: must be true or false, got "yes""#),
            ),
            (None, r#"{"backends":{}}"#.into(), e("backends: must be an array")),
            // coordinator
            (None, r#"{"coordinator":{"url":"http://x/"}}"#.into(), e("coordinator.url: must be a wss:// (or loopback ws://) URL, got http://x/")),
            (None, r#"{"coordinator":{"url":"https://localhost:1/provider/connect"}}"#.into(), e("coordinator.url: must be a wss:// (or loopback ws://) URL, got \
                   https://localhost:1/provider/connect")),
            (None, r#"{"coordinator":{"url":"ws://coordinator.example.com/provider/connect"}}"#.into(), e("coordinator.url: ws:// (no TLS) is only allowed to loopback hosts; use wss:// or set \
                   coordinator.allow_insecure (got ws://coordinator.example.com/provider/connect)")),
            (None, r#"{"coordinator":{"heartbeat_interval_s":0}}"#.into(), e("coordinator.heartbeat_interval_s: must be greater than 0 and at most 3600, got 0")),
            (None, r#"{"coordinator":{"drain_spread_s":0}}"#.into(), e("coordinator.drain_spread_s: must be greater than 0 and at most 600, got 0")),
            (None, r#"{"coordinator":{"drain_spread_s":-5}}"#.into(), e("coordinator.drain_spread_s: must be greater than 0 and at most 600, got -5")),
            (None, r#"{"coordinator":{"drain_spread_s":601}}"#.into(), e("coordinator.drain_spread_s: must be greater than 0 and at most 600, got 601")),
            (None, r#"{"coordinator":{"drain_spread_s":"5s"}}"#.into(), e(r#"coordinator.drain_spread_s: must be a number of seconds, got "5s""#)),
            (None, format!(r#"{{"coordinator":{{"ca_file":"{d}/no-such-ca.pem"}}}}"#), e(&format!("coordinator.ca_file: cannot read {d}/no-such-ca.pem: {enoent}"))),
            (None, format!(r#"{{"coordinator":{{"ca_file":"{d}/ca-is-a-dir.pem"}}}}"#), e(&format!("coordinator.ca_file: cannot read {d}/ca-is-a-dir.pem: {eisdir}"))),
            (None, format!(r#"{{"coordinator":{{"ca_file":"{d}/not-a-cert.pem"}}}}"#), e(&format!("coordinator.ca_file: {d}/not-a-cert.pem contains no PEM CERTIFICATE block"))),
            // pricing and limits
            (None, r#"{"pricing":{"default_input_per_1m":0}}"#.into(), e(r#"pricing.default_input_per_1m: must be greater than 0 (a zero price means "not offered"; set 0 per model under pricing.models instead)"#)),
            (None, r#"{"pricing":{"default_output_per_1m":0}}"#.into(), e(r#"pricing.default_output_per_1m: must be greater than 0 (a zero price means "not offered"; set 0 per model under pricing.models instead)"#)),
            (None, r#"{"limits":{"max_concurrent":0}}"#.into(), e("limits.max_concurrent: must be between 1 and 256, got 0")),
            (None, r#"{"limits":{"max_concurrent":257}}"#.into(), e("limits.max_concurrent: must be between 1 and 256, got 257")),
            (None, r#"{"limits":{"max_concurrent":"eight"}}"#.into(), e(r#"limits.max_concurrent: must be a non-negative integer, got "eight""#)),
            (None, r#"{"limits":{"max_concurrent":8.5}}"#.into(), e("limits.max_concurrent: must be a non-negative integer, got 8.5")),
            // ledger
            (None, r#"{"ledger":{"path":""}}"#.into(), e("ledger.path: must not be empty")),
            (None, r#"{"ledger":{"path":7}}"#.into(), e("ledger.path: must be a string, got 7")),
            (None, r#"{"ledger":{"max_bytes":0}}"#.into(), e("ledger.max_bytes: must be at least 1, got 0")),
            (None, r#"{"ledger":{"max_bytes":-1}}"#.into(), e("ledger.max_bytes: must be a non-negative integer, got -1")),
            (None, r#"{"ledger":{"keep":101}}"#.into(), e("ledger.keep: must be at most 100, got 101")),
            (None, r#"{"ledger":{"keep":"all"}}"#.into(), e(r#"ledger.keep: must be a non-negative integer, got "all""#)),
            (None, r#"{"ledger":[]}"#.into(), e("ledger: must be an object")),
            // operator control: schedule, thermal and power limits, local first
            (None, r#"{"schedule":{}}"#.into(), e(r#"schedule: must be an array of {"days", "from", "to"} windows"#)),
            (None, r#"{"schedule":[{"days":"Mon-Fry","from":"22:00","to":"07:00"}]}"#.into(), e(r#"schedule[0].days: unknown day "Fry" (Mon..Sun, a range such as Mon-Fri, or daily)"#)),
            (None, r#"{"schedule":[{"days":5,"from":"22:00","to":"07:00"}]}"#.into(), e(r#"schedule[0].days: must be a string such as "Mon-Fri" or an array of them, got 5"#)),
            (None, r#"{"schedule":[{"days":["Mon",1],"from":"22:00","to":"07:00"}]}"#.into(), e("schedule[0].days: must list day names as strings")),
            (None, r#"{"schedule":[{"days":"Mon","to":"07:00"}]}"#.into(), e("schedule[0].from: missing (a time HH:MM)")),
            (None, r#"{"schedule":[{"from":"22:00","to":"7:00"}]}"#.into(), e(r#"schedule[0].to: must be a time HH:MM (00:00 to 24:00), got "7:00""#)),
            (None, r#"{"schedule":[{"from":"24:00","to":"07:00"}]}"#.into(), e(r#"schedule[0].from: must be a time HH:MM (00:00 to 23:59), got "24:00""#)),
            (None, r#"{"schedule":[{"from":"08:00","to":"08:00"}]}"#.into(), e(r#"schedule[0].to: is the same time as from; use "from": "00:00", "to": "24:00" for the whole day"#)),
            (None, r#"{"schedule":["Mon-Fri 22:00-07:00"]}"#.into(), e("schedule[0]: must be an object with days, from and to")),
            (None, r#"{"limits":{"max_temp_c":200}}"#.into(), e("limits.max_temp_c: must be between 20 and 150 °C, got 200")),
            (None, r#"{"limits":{"max_temp_c":"hot"}}"#.into(), e(r#"limits.max_temp_c: must be a temperature in °C, got "hot""#)),
            (None, r#"{"limits":{"max_temp_c":80,"resume_temp_c":80}}"#.into(), e("limits.resume_temp_c: must be below limits.max_temp_c (80), got 80")),
            (None, r#"{"limits":{"allow_battery":1}}"#.into(), e("limits.allow_battery: must be true or false, got 1")),
            (None, r#"{"local_first":{"busy_s":0}}"#.into(), e("local_first.busy_s: must be greater than 0 and at most 86400, got 0")),
            (None, r#"{"local_first":{"gpu_busy_pct":0}}"#.into(), e("local_first.gpu_busy_pct: must be greater than 0 and at most 100, got 0")),
            (None, r#"{"local_first":{"enabled":"yes"}}"#.into(), e(r#"local_first.enabled: must be true or false, got "yes""#)),
            (None, r#"{"local_first":[]}"#.into(), e("local_first: must be an object")),
            // the file as a whole
            (None, r#"{"coordinator": {"url": "#.into(), e("invalid JSON: EOF while parsing a value at line 1 column 24")),
            (None, "[]".into(), e("the top level must be a JSON object")),
            // the environment: named instead of the file
            (
                Some("http://localhost:1/provider/connect"),
                "{}".into(),
                "config error in environment: USEPOD_EDGE_COORDINATOR_URL: must be a wss:// (or \
                 loopback ws://) URL, got http://localhost:1/provider/connect"
                    .into(),
            ),
            // and what is valid
            (None, r#"{"ledger":{"path":"/l.jsonl","max_bytes":1,"keep":0}}"#.into(), ACCEPTED.into()),
            (None, r#"{"ledger":{"keep":100}}"#.into(), ACCEPTED.into()),
            (
                None,
                r#"{"schedule":[{"days":"Mon-Fri","from":"22:00","to":"07:00"},
                                {"days":["Sat","sunday"],"from":"00:00","to":"24:00"},{"from":"12:00","to":"13:00"}],
                    "limits":{"max_temp_c":95,"allow_battery":true},
                    "local_first":{"enabled":false,"busy_s":2.5,"idle_s":30,"gpu_busy_pct":50}}"#.into(),
                ACCEPTED.into(),
            ),
            (None, r#"{"limits":{"max_concurrent":1}}"#.into(), ACCEPTED.into()),
            (None, r#"{"limits":{"max_concurrent":256}}"#.into(), ACCEPTED.into()),
            (None, r#"{"coordinator":{"url":"ws://127.0.0.1:9/provider/connect"}}"#.into(), ACCEPTED.into()),
            (None, r#"{"coordinator":{"drain_spread_s":0.5}}"#.into(), ACCEPTED.into()),
            (None, r#"{"coordinator":{"drain_spread_s":600}}"#.into(), ACCEPTED.into()),
            (None, r#"{"coordinator":{"drain_spread_s":null}}"#.into(), ACCEPTED.into()),
            (None, r#"{"coordinator":{"url":"ws://localhost:9/provider/connect"}}"#.into(), ACCEPTED.into()),
            (None, r#"{"coordinator":{"url":"ws://[::1]:9/provider/connect"}}"#.into(), ACCEPTED.into()),
            (
                None,
                r#"{"coordinator":{"url":"ws://coordinator.example.com/provider/connect",
                                   "allow_insecure":true}}"#.into(),
                ACCEPTED.into(),
            ),
            (
                None,
                r#"{"backends":[{"kind":"vllm","url":"http://192.0.2.10:8000",
                                 "api_key_env":"USEPOD_TEST_REMOTE_KEY","allow_insecure":true}]}"#.into(),
                ACCEPTED.into(),
            ),
            (
                None,
                r#"{"backends":[{"kind":"vllm","url":"http://127.0.0.1:8000",
                                 "api_key_env":"USEPOD_TEST_REMOTE_KEY"}]}"#.into(),
                ACCEPTED.into(),
            ),
        ];
        let mut wrong = Vec::new();
        for (env_url, text, want) in &cases {
            let over = Overrides {
                coordinator_url: env_url.map(String::from),
                ..Overrides::default()
            };
            let got = match Config::from_str("/etc/usepod-edge/config.json", text, &over) {
                Ok(_) => ACCEPTED.to_string(),
                Err(e) => e.to_string(),
            };
            if &got != want {
                wrong.push(format!("{text}\n   got: {got}\n  want: {want}"));
            }
        }
        // A named file that is not there (the one case `load` adds to `from_str`).
        let missing = dir.join("nope.json");
        let got = Config::load(&missing, true, &Overrides::default()).unwrap_err();
        assert_eq!(
            got.to_string(),
            format!("config error in {d}/nope.json: cannot read file: {enoent}")
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn environment_overrides_win_and_are_named_in_errors() {
        let over = Overrides {
            coordinator_url: Some("wss://other.example/x".into()),
            enrollment_code: Some(Secret::new("ENV")),
            key_path: Some("/tmp/env.key".into()),
        };
        let c =
            Config::from_str("f", r#"{"coordinator":{"enrollment_code":"FILE"}}"#, &over).unwrap();
        assert_eq!(c.coordinator.url.host, "other.example");
        assert_eq!(c.coordinator.enrollment_code.as_deref(), Some("ENV"));
        assert_eq!(c.key_path, PathBuf::from("/tmp/env.key"));
        let bad = Overrides {
            coordinator_url: Some("nope".into()),
            ..Overrides::default()
        };
        let e = Config::from_str("f", "{}", &bad).unwrap_err();
        assert_eq!(
            (e.origin.as_str(), e.key.as_str()),
            ("environment", ENV_COORDINATOR_URL)
        );
    }

    #[test]
    fn operator_control_defaults_and_values() {
        let c = parse("{}").unwrap();
        assert!(c.schedule.is_empty());
        assert_eq!((c.limits.max_temp_c, c.limits.resume_temp_c), (85.0, 75.0));
        assert!(!c.limits.allow_battery);
        let lf = &c.local_first;
        assert!(lf.enabled);
        assert_eq!(
            (lf.busy, lf.idle, lf.gpu_busy_pct),
            (Duration::from_secs(10), Duration::from_secs(120), 30.0)
        );
        let c = parse(
            r#"{"schedule":[{"days":"Fri-Mon","from":"22:00","to":"07:00"}],
                "limits":{"max_temp_c":95},"local_first":{"busy_s":0.5,"idle_s":1}}"#,
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.limits.resume_temp_c, 85.0, "10 °C below a custom maximum");
        assert_eq!(c.local_first.busy, Duration::from_millis(500));
        let w = &c.schedule[0];
        assert_eq!((w.from, w.to), (22 * 60, 7 * 60));
        assert_eq!(w.days, [true, false, false, false, true, true, true]);
        let c = parse(r#"{"schedule":[{"from":"08:00","to":"09:00","day":"Mon"}]}"#).unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("schedule[0].day")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn per_model_prices_are_not_unknown_keys() {
        let c = parse(r#"{"pricing":{"models":{"m":{"input_per_1m":3}}}}"#).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.pricing.resolve("m"), (3, DEFAULT_OUTPUT_PER_1M));
        assert_eq!(
            problem(r#"{"pricing":{"models":[]}}"#).key,
            "pricing.models"
        );
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        std::env::set_var("USEPOD_TEST_DEBUG_KEY", "sk-backend-hunter2");
        let over = Overrides {
            enrollment_code: Some(Secret::new("ENV-CODE-hunter3")),
            ..Overrides::default()
        };
        let c = Config::from_str(
            "f",
            r#"{"coordinator":{"enrollment_code":"FILE-CODE-hunter4"},
                "backends":[{"kind":"vllm","api_key_env":"USEPOD_TEST_DEBUG_KEY"}]}"#,
            &over,
        )
        .unwrap();
        assert_eq!(c.backends[0].api_key.as_deref(), Some("sk-backend-hunter2"));
        assert_eq!(
            c.coordinator.enrollment_code.as_deref(),
            Some("ENV-CODE-hunter3")
        );
        for shown in [format!("{c:?}"), format!("{c:#?}"), format!("{over:?}")] {
            assert!(!shown.contains("hunter"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        let c = parse(r#"{"coordinator":{"enrollment_code":"FILE-CODE-hunter4"}}"#).unwrap();
        assert!(!format!("{c:?}").contains("hunter4"));
    }

    #[test]
    fn an_api_key_goes_over_plain_http_only_to_this_host_or_with_allow_insecure() {
        let backend = |url: &str, extra: &str| {
            format!(
                r#"{{"backends":[{{"kind":"vllm","url":"{url}","api_key_env":"USEPOD_TEST_KEY_RULE"{extra}}}]}}"#
            )
        };
        let e = problem(&backend("http://10.0.0.5:8000", ""));
        assert_eq!(e.key, "backends[0].api_key_env");
        let shown = e.to_string();
        for needle in [
            "/etc/usepod-edge/config.json",
            "backends[0].api_key",
            "http://10.0.0.5:8000/",
            "clear text",
            "backends[0].allow_insecure",
        ] {
            assert!(shown.contains(needle), "{needle}: {shown}");
        }
        let c = parse(&backend(
            "http://10.0.0.5:8000",
            r#","allow_insecure":true"#,
        ))
        .unwrap();
        assert!(c.backends[0].allow_insecure);
        for local in [
            "http://127.0.0.1:8000",
            "http://localhost:8000",
            "http://[::1]:8000",
        ] {
            let c = parse(&backend(local, "")).unwrap();
            assert!(!c.backends[0].allow_insecure, "default false");
        }
        // Without a key nothing secret goes anywhere.
        assert!(parse(r#"{"backends":[{"kind":"vllm","url":"http://10.0.0.5:8000"}]}"#).is_ok());
        assert_eq!(
            problem(&backend(
                "http://10.0.0.5:8000",
                r#","allow_insecure":"yes""#
            ))
            .key,
            "backends[0].allow_insecure"
        );
        assert!(
            parse(&backend("http://127.0.0.1:1", r#","allow_insecure":false"#))
                .unwrap()
                .warnings
                .iter()
                .all(|w| !w.contains("allow_insecure"))
        );
    }

    #[test]
    fn url_errors_never_show_credentials() {
        for url in [
            "wss://user:hunter2@api.example/p",
            "wss://user:hun/ter2@api.example/p",
            "wss://user:hun#ter2@api.example/p",
            "ws://user:hunter2@10.0.0.1/p",
            "user:hunter2@api.example",
        ] {
            let text = format!(r#"{{"coordinator":{{"url":"{url}"}}}}"#);
            let e = problem(&text).to_string();
            assert!(e.contains("coordinator.url"), "{e}");
            assert!(!e.contains("hun") && !e.contains("ter2"), "{url}: {e}");
            let e = problem(&format!(
                r#"{{"backends":[{{"kind":"vllm","url":"{url}"}}]}}"#
            ))
            .to_string();
            assert!(!e.contains("hun") && !e.contains("ter2"), "{url}: {e}");
            let over = Overrides {
                coordinator_url: Some(url.into()),
                ..Overrides::default()
            };
            let e = Config::from_str("f", "{}", &over).unwrap_err().to_string();
            assert!(!e.contains("hun") && !e.contains("ter2"), "{url}: {e}");
        }
    }

    #[test]
    fn unknown_keys_warn_instead_of_failing() {
        let c = parse(r#"{"coordinator":{"heartbeat":3},"extra":1}"#).unwrap();
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("coordinator.heartbeat")));
        assert!(c.warnings.iter().any(|w| w.contains("extra")));
    }
}
