//! Configuration: the JSON file, then environment overrides, validated into a
//! [`Config`]. Every error names the file (or variable), the key and the problem.

use crate::backend::BackendKind;
use crate::endpoint::{redact_url, Endpoint, Scheme};
use crate::json_fields::{json_fields, Fields};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
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
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_str(&origin, &text, over),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                build(&origin, None, RawConfig::default(), &Unknown::new(), over)
            }
            Err(e) => Err(ConfigError {
                origin,
                key: String::new(),
                problem: format!("cannot read file: {e}"),
            }),
        }
    }

    /// Parses config text (used by `load` and by tests and fuzzing).
    pub fn from_str(origin: &str, text: &str, over: &Overrides) -> Result<Config, ConfigError> {
        let (raw, unknown) = parse_raw(origin, text)?;
        build(origin, Some(PathBuf::from(origin)), raw, &unknown, over)
    }
}

fn parse_raw(origin: &str, text: &str) -> Result<(RawConfig, Unknown), ConfigError> {
    let whole = |problem: String| ConfigError {
        origin: origin.into(),
        key: String::new(),
        problem,
    };
    // Every setting takes any value, so the only errors here are bad JSON.
    match serde_json::from_str::<Obj<RawConfig>>(text) {
        Ok(Obj::Ok(raw, unknown)) => Ok((raw, unknown)),
        Ok(Obj::Wrong) => Err(whole("the top level must be a JSON object".into())),
        Err(e) => Err(whole(format!("invalid JSON: {e}"))),
    }
}

// The file as serde reads it, straight from the text. A setting is `Opt<T>`:
// absent or null is None, and a value of the wrong JSON type is kept as
// `Typed::Wrong` instead of failing the parse, so that `build`, which knows the
// key's path, can name it (serde's own message names only a line and column).
// Sections and lists of them are `Obj` and `List`, which say only whether the
// value was an object or an array.
//
// The binary has a size budget, and generic code is copied per type: every
// setting is read by one visitor (`Leaf`'s) and converted after, and sections
// are declared with `json_fields!` (see there why not the derive).

/// A setting: absent or null is None.
type Opt<T> = Option<Typed<T>>;
/// A section of settings: absent or null is None.
type Section<T> = Option<Obj<T>>;
/// The keys of an object that its type does not know: warnings, not errors, so a
/// config written for a newer agent still starts an older one.
type Unknown = BTreeSet<String>;

/// Prices keyed by model id: every key is one.
impl<V: DeserializeOwned> Fields for BTreeMap<String, V> {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        self.insert(key.to_owned(), map.next_value()?);
        Ok(true)
    }
}

json_fields! {
    #[derive(Default)]
    struct RawConfig {
        coordinator: Section<RawCoordinator>,
        identity: Section<RawIdentity>,
        backends: Option<List<Obj<RawBackend>>>,
        pricing: Section<RawPricing>,
        limits: Section<RawLimits>,
        status: Section<RawStatus>,
        ledger: Section<RawLedger>,
        schedule: Option<List<Obj<RawWindow>>>,
        local_first: Section<RawLocalFirst>,
        upgrade: Section<RawUpgrade>,
    }
}

json_fields! {
    #[derive(Default)]
    struct RawUpgrade {
        trusted_keys: Opt<Vec<Typed<String>>>,
    }
}

json_fields! {
    #[derive(Default)]
    struct RawCoordinator {
        url: Opt<String>,
        enrollment_code: Opt<Secret>,
        ca_file: Opt<String>,
        allow_insecure: Opt<bool>,
        heartbeat_interval_s: Opt<f64>,
        ping_interval_s: Opt<f64>,
        drain_spread_s: Opt<f64>,
        connect_timeout_s: Opt<f64>,
        handshake_timeout_s: Opt<f64>,
    }
}

json_fields! {
    #[derive(Default)]
    struct RawIdentity {
        key_path: Opt<String>,
    }
}

json_fields! {
    #[derive(Default)]
    struct RawBackend {
        kind: Opt<String>,
        url: Opt<String>,
        models: Opt<Vec<Typed<String>>>,
        api_key_env: Opt<String>,
        native_anthropic: Opt<bool>,
        allow_insecure: Opt<bool>,
    }
}

json_fields! {
    #[derive(Default)]
    struct RawPricing {
        default_input_per_1m: Opt<u64>,
        default_output_per_1m: Opt<u64>,
        models: Section<BTreeMap<String, Obj<RawModelPrice>>>,
    }
}

json_fields! {
    #[derive(Default)]
    struct RawModelPrice {
        input_per_1m: Opt<u64>,
        output_per_1m: Opt<u64>,
    }
}

json_fields! {
    #[derive(Default)]
    struct RawLimits {
        max_concurrent: Opt<u64>,
        max_tokens_per_minute: Opt<u64>,
        max_request_bytes: Opt<u64>,
        max_output_tokens: Opt<u64>,
        max_messages: Opt<u64>,
        max_prompt_bytes: Opt<u64>,
        allow_remote_media: Opt<bool>,
        allow_fields: Opt<Vec<Typed<String>>>,
        backend_connect_timeout_s: Opt<f64>,
        first_byte_timeout_s: Opt<f64>,
        idle_timeout_s: Opt<f64>,
        drain_timeout_s: Opt<f64>,
        max_temp_c: Opt<f64>,
        resume_temp_c: Opt<f64>,
        allow_battery: Opt<bool>,
    }
}

json_fields! {
    #[derive(Default)]
    struct RawStatus {
        state_file: Opt<String>,
        metrics_textfile: Opt<String>,
        interval_s: Opt<f64>,
    }
}

json_fields! {
    #[derive(Default)]
    struct RawLedger {
        path: Opt<String>,
        max_bytes: Opt<u64>,
        keep: Opt<u64>,
    }
}

json_fields! {
    /// A serving window of `schedule`.
    #[derive(Default)]
    struct RawWindow {
        days: Opt<Days>,
        from: Opt<String>,
        to: Opt<String>,
    }
}

/// `days`: one name or range (`"Mon-Fri"`), or a list of them.
enum Days {
    One(String),
    Many(Vec<Typed<String>>),
}

json_fields! {
    #[derive(Default)]
    struct RawLocalFirst {
        enabled: Opt<bool>,
        busy_s: Opt<f64>,
        idle_s: Opt<f64>,
        gpu_busy_pct: Opt<f64>,
    }
}

/// A setting of type `T`, or the JSON text of what stood there instead (quoted
/// back in the error).
enum Typed<T> {
    Ok(T),
    Wrong(String),
}

/// `T` read from a JSON object, with the keys `T` does not have; or `Wrong`:
/// something else stood there.
enum Obj<T> {
    Ok(T, Unknown),
    Wrong,
}

/// A JSON array, or `Wrong`: something else stood there.
enum List<T> {
    Ok(Vec<T>),
    Wrong,
}

/// A setting's value before its type is checked: a JSON scalar, a list of them,
/// or an object kept as text (no setting is an object; it is only quoted back).
enum Leaf {
    Null,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Leaf>),
    Object(String),
}

impl Leaf {
    /// As compact JSON, printed the way the walker this replaced printed a
    /// `serde_json::Value` (object keys sorted, a repeated key's last value
    /// kept), so errors quoting a wrong value read as they did.
    fn shown(&self) -> String {
        match self {
            Leaf::Null => "null".into(),
            Leaf::Bool(b) => b.to_string(),
            Leaf::Uint(n) => n.to_string(),
            Leaf::Int(n) => n.to_string(),
            Leaf::Float(n) => json_text(n),
            Leaf::Str(s) => json_text(s),
            Leaf::List(items) => {
                let items: Vec<String> = items.iter().map(Leaf::shown).collect();
                format!("[{}]", items.join(","))
            }
            Leaf::Object(text) => text.clone(),
        }
    }
}

/// A value as compact JSON text.
fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl<'de> Deserialize<'de> for Leaf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LeafVisitor)
    }
}

struct LeafVisitor;

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Leaf;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Leaf, E> {
        Ok(Leaf::Bool(b))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Leaf, E> {
        Ok(Leaf::Uint(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Leaf, E> {
        Ok(Leaf::Int(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Leaf, E> {
        Ok(Leaf::Float(n))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Leaf, E> {
        Ok(Leaf::Str(s.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Leaf, E> {
        Ok(Leaf::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Leaf::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Leaf>()? {
            entries.insert(key, value);
        }
        let entries: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{}:{}", json_text(k), v.shown()))
            .collect();
        Ok(Leaf::Object(format!("{{{}}}", entries.join(","))))
    }
}

/// The settings' types: which leaves make one (the leaf back if it does not).
trait FromLeaf: Sized {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf>;
}

impl FromLeaf for String {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::Str(s) => Ok(s),
            other => Err(other),
        }
    }
}

impl FromLeaf for Secret {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        String::from_leaf(leaf).map(Secret)
    }
}

impl FromLeaf for bool {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::Bool(b) => Ok(b),
            other => Err(other),
        }
    }
}

/// Negative numbers and fractions are the wrong type, not a range problem.
impl FromLeaf for u64 {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::Uint(n) => Ok(n),
            other => Err(other),
        }
    }
}

/// Any number: seconds may be fractional (and their range is checked later).
impl FromLeaf for f64 {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::Uint(n) => Ok(n as f64),
            Leaf::Int(n) => Ok(n as f64),
            Leaf::Float(n) => Ok(n),
            other => Err(other),
        }
    }
}

/// A list whose items are checked one by one (`models[2]` can be named).
impl<T: FromLeaf> FromLeaf for Vec<Typed<T>> {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::List(items) => Ok(items.into_iter().map(Typed::from).collect()),
            other => Err(other),
        }
    }
}

impl FromLeaf for Days {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::Str(s) => Ok(Days::One(s)),
            list @ Leaf::List(_) => Vec::from_leaf(list).map(Days::Many),
            other => Err(other),
        }
    }
}

impl<T: FromLeaf> From<Leaf> for Typed<T> {
    fn from(leaf: Leaf) -> Self {
        match T::from_leaf(leaf) {
            Ok(t) => Typed::Ok(t),
            Err(leaf) => Typed::Wrong(leaf.shown()),
        }
    }
}

impl<'de, T: FromLeaf> Deserialize<'de> for Typed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Leaf::deserialize(d).map(Typed::from)
    }
}

/// What `Obj` and `List` take from an object or an array; from anything else
/// (the default for the one they do not take), `wrong()`. The rest of a value
/// that is not taken is read as any value is, so that bad JSON inside it is
/// still reported as such.
trait Container<'de>: Sized {
    fn wrong() -> Self;

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        skip_map(map).map(|()| Self::wrong())
    }

    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        skip_seq(seq).map(|()| Self::wrong())
    }
}

// Out of line: one copy each, not one per section type.
#[inline(never)]
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<String, Leaf>()?.is_some() {}
    Ok(())
}

#[inline(never)]
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Leaf>()?.is_some() {}
    Ok(())
}

impl<'de, T: Fields> Container<'de> for Obj<T> {
    fn wrong() -> Self {
        Obj::Wrong
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut t = T::default();
        let mut unknown = Unknown::new();
        while let Some(key) = map.next_key::<String>()? {
            if !t.read(&key, &mut map)? {
                map.next_value::<Leaf>()?;
                unknown.insert(key);
            }
        }
        Ok(Obj::Ok(t, unknown))
    }
}

impl<'de, T: Deserialize<'de>> Container<'de> for List<T> {
    fn wrong() -> Self {
        List::Wrong
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(List::Ok(items))
    }
}

impl<'de, T: Fields> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContainerVisitor(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContainerVisitor(PhantomData))
    }
}

struct ContainerVisitor<C>(PhantomData<C>);

impl<'de, C: Container<'de>> Visitor<'de> for ContainerVisitor<C> {
    type Value = C;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_unit<E: de::Error>(self) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<C, A::Error> {
        C::from_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<C, A::Error> {
        C::from_map(map)
    }
}

/// Turns raw settings into checked ones, naming the key of each problem.
struct Checker<'a> {
    origin: &'a str,
    warnings: Vec<String>,
}

impl Checker<'_> {
    fn err(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.into(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn unknown(&mut self, path: &str, keys: &Unknown) {
        for k in keys {
            self.warnings.push(format!(
                "{}: unknown key {} ignored",
                self.origin,
                join(path, k)
            ));
        }
    }

    /// The section at `path`, its defaults if absent; its unknown keys become warnings.
    fn section<T: Default>(&mut self, s: &mut Section<T>, path: &str) -> Result<T, ConfigError> {
        match s.take() {
            None => Ok(T::default()),
            Some(Obj::Ok(t, unknown)) => {
                self.unknown(path, &unknown);
                Ok(t)
            }
            Some(Obj::Wrong) => Err(self.err(path, "must be an object")),
        }
    }

    /// A setting, or an error saying what it `must` be and what it was.
    fn value<T>(&self, v: &mut Opt<T>, key: &str, must: &str) -> Result<Option<T>, ConfigError> {
        match v.take() {
            None => Ok(None),
            Some(Typed::Ok(t)) => Ok(Some(t)),
            Some(Typed::Wrong(got)) => Err(self.err(key, format!("must be {must}, got {got}"))),
        }
    }

    fn string(&self, v: &mut Opt<String>, key: &str) -> Result<Option<String>, ConfigError> {
        self.value(v, key, "a string")
    }

    fn boolean(&self, v: &mut Opt<bool>, key: &str) -> Result<Option<bool>, ConfigError> {
        self.value(v, key, "true or false")
    }

    fn uint(&self, v: &mut Opt<u64>, key: &str) -> Result<Option<u64>, ConfigError> {
        self.value(v, key, "a non-negative integer")
    }

    /// An optional count within 1..=max.
    fn positive(&self, v: &mut Opt<u64>, key: &str, max: u64) -> Result<Option<u64>, ConfigError> {
        match self.uint(v, key)? {
            Some(n) if n == 0 || n > max => {
                Err(self.err(key, format!("must be between 1 and {max}, got {n}")))
            }
            n => Ok(n),
        }
    }

    /// Seconds as a positive number (fractions allowed), bounded above.
    fn seconds(
        &self,
        v: &mut Opt<f64>,
        key: &str,
        default: f64,
        max: f64,
    ) -> Result<Duration, ConfigError> {
        let v = self
            .value(v, key, "a number of seconds")?
            .unwrap_or(default);
        if !(v > 0.0 && v <= max) {
            return Err(self.err(
                key,
                format!("must be greater than 0 and at most {max}, got {v}"),
            ));
        }
        Ok(Duration::from_secs_f64(v))
    }

    /// A list of non-empty strings: `list` says what the whole must be, `item`
    /// what each element must be.
    fn names(
        &self,
        v: &mut Opt<Vec<Typed<String>>>,
        key: &str,
        list: &str,
        item: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        match v.take() {
            None => Ok(None),
            Some(Typed::Wrong(_)) => Err(self.err(key, list)),
            Some(Typed::Ok(items)) => items
                .into_iter()
                .enumerate()
                .map(|(j, s)| match s {
                    Typed::Ok(s) if !s.is_empty() => Ok(s),
                    _ => Err(self.err(&format!("{key}[{j}]"), item)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

// The order below is the order problems are reported in, and the order of the
// warnings: sections as the file format lists them, keys within each.
fn build(
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
        Some(path) => load_certs(path).map_err(|problem| w.err("coordinator.ca_file", problem))?,
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
    fn upgrade_trusted_keys() {
        assert!(parse("{}").unwrap().upgrade.trusted_keys.is_empty());
        let key = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
        let c = parse(&format!(r#"{{"upgrade":{{"trusted_keys":["{key}"]}}}}"#)).unwrap();
        assert_eq!(
            c.upgrade.trusted_keys,
            [crate::release::signature::b64_array::<32>(key).unwrap()]
        );
        let e = problem(&format!(
            r#"{{"upgrade":{{"trusted_keys":["{key}","AAAA"]}}}}"#
        ));
        assert_eq!(
            (e.key.as_str(), e.problem.as_str()),
            (
                "upgrade.trusted_keys[1]",
                "must be an ed25519 public key: standard base64 of 32 bytes"
            )
        );
        assert_eq!(
            problem(r#"{"upgrade":{"trusted_keys":"x"}}"#).key,
            "upgrade.trusted_keys"
        );
        let c = parse(r#"{"upgrade":{"trusted_key":[]}}"#).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.ends_with("unknown key upgrade.trusted_key ignored")),
            "{:?}",
            c.warnings
        );
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
    fn a_wrong_value_is_quoted_back_as_compact_json() {
        let e = problem(
            r#"{"limits":{"max_concurrent":{"b":1, "a":[2.50, -0, "\u00e9"], "b":[true,null]}}}"#,
        );
        assert_eq!(
            e.problem,
            r#"must be a non-negative integer, got {"a":[2.5,-0.0,"é"],"b":[true,null]}"#
        );
        let e = problem(r#"{"coordinator":{"ping_interval_s":[1, {}]}}"#);
        assert_eq!(e.problem, "must be a number of seconds, got [1,{}]");
    }

    #[test]
    fn a_repeated_key_takes_its_last_value() {
        let c = parse(r#"{"limits":{"max_concurrent":"x","max_concurrent":3},"limits":{"max_concurrent":5,"max_concurrent":4}}"#)
            .unwrap();
        assert_eq!(c.limits.max_concurrent, 4);
        let c = parse(r#"{"backends":[{"kind":"tgi","kind":"ollama","x":1,"x":2}]}"#).unwrap();
        assert_eq!(c.backends[0].kind, BackendKind::Ollama);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(
            problem(r#"{"ledger":{"keep":1,"keep":"all"}}"#).to_string(),
            r#"config error in /etc/usepod-edge/config.json: ledger.keep: must be a non-negative integer, got "all""#
        );
        // Bad syntax after a repeated key is still what is reported.
        assert_eq!(
            problem(r#"{"ledger":{"keep":1,"keep":2}, "x": tru}"#).problem,
            "invalid JSON: expected ident at line 1 column 40"
        );
    }

    #[test]
    fn warnings_come_in_file_format_order() {
        let c = parse(
            r#"{"z":1,"ledger":{"x":1},"pricing":{"models":{"m":{"y":1}}},"a":1,
                "backends":[{"kind":"vllm","w":1}],"coordinator":{"v":1}}"#,
        )
        .unwrap();
        let at = "/etc/usepod-edge/config.json: unknown key";
        assert_eq!(
            c.warnings,
            [
                format!("{at} a ignored"),
                format!("{at} z ignored"),
                format!("{at} coordinator.v ignored"),
                format!("{at} backends[0].w ignored"),
                format!("{at} pricing.models.m.y ignored"),
                format!("{at} ledger.x ignored"),
            ]
        );
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
