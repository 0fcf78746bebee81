//! The checked configuration: what the rest of the agent reads, with every
//! default applied.

use crate::backend::BackendKind;
use crate::endpoint::Endpoint;
use rustls::pki_types::CertificateDer;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_COORDINATOR_URL: &str = "wss://api.usepod.ai/provider/connect";
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
    /// Request policy (src/jobs/policy/): the most output tokens a job may ask
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
    pub upgrade: UpgradeConfig,
}

/// `upgrade`: ed25519 public keys trusted to sign releases besides the
/// built-in release key (an operator's own builds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradeConfig {
    pub trusted_keys: Vec<[u8; 32]>,
}

/// Local reporting: the state file `usepod-edge status` reads, and an optional
/// Prometheus textfile for node_exporter.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub state_file: PathBuf,
    pub metrics_textfile: Option<PathBuf>,
    pub interval: Duration,
    /// The log's level unless `--log-level` or `$USEPOD_EDGE_LOG` says otherwise.
    pub log_level: Option<log::LevelFilter>,
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
