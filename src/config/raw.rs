//! The config file's sections as the lenient reader takes them from the text:
//! every setting an `Opt`, every section an `Obj`, nothing checked yet.

use super::error::ConfigError;
use super::lenient::{FromLeaf, Leaf, List, Obj, Opt, Section, Typed, Unknown};
use super::types::Secret;
use crate::json_fields::json_fields;
use std::collections::BTreeMap;

/// The file's text as its sections; the only errors are bad JSON and a top
/// level that is not an object, since every setting takes any value here.
pub(super) fn parse(origin: &str, text: &str) -> Result<(RawConfig, Unknown), ConfigError> {
    let whole = |problem: String| ConfigError {
        origin: origin.into(),
        key: String::new(),
        problem,
    };
    match serde_json::from_str::<Obj<RawConfig>>(text) {
        Ok(Obj::Ok(raw, unknown)) => Ok((raw, unknown)),
        Ok(Obj::Wrong) => Err(whole("the top level must be a JSON object".into())),
        Err(e) => Err(whole(format!("invalid JSON: {e}"))),
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawConfig {
        pub(super) coordinator: Section<RawCoordinator>,
        pub(super) identity: Section<RawIdentity>,
        pub(super) backends: Option<List<Obj<RawBackend>>>,
        pub(super) pricing: Section<RawPricing>,
        pub(super) limits: Section<RawLimits>,
        pub(super) status: Section<RawStatus>,
        pub(super) ledger: Section<RawLedger>,
        pub(super) schedule: Option<List<Obj<RawWindow>>>,
        pub(super) local_first: Section<RawLocalFirst>,
        pub(super) upgrade: Section<RawUpgrade>,
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawUpgrade {
        pub(super) trusted_keys: Opt<Vec<Typed<String>>>,
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawCoordinator {
        pub(super) url: Opt<String>,
        pub(super) enrollment_code: Opt<Secret>,
        pub(super) ca_file: Opt<String>,
        pub(super) allow_insecure: Opt<bool>,
        pub(super) heartbeat_interval_s: Opt<f64>,
        pub(super) ping_interval_s: Opt<f64>,
        pub(super) drain_spread_s: Opt<f64>,
        pub(super) connect_timeout_s: Opt<f64>,
        pub(super) handshake_timeout_s: Opt<f64>,
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawIdentity {
        pub(super) key_path: Opt<String>,
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawBackend {
        pub(super) kind: Opt<String>,
        pub(super) url: Opt<String>,
        pub(super) models: Opt<Vec<Typed<String>>>,
        pub(super) api_key_env: Opt<String>,
        pub(super) native_anthropic: Opt<bool>,
        pub(super) allow_insecure: Opt<bool>,
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawPricing {
        pub(super) default_input_per_1m: Opt<u64>,
        pub(super) default_output_per_1m: Opt<u64>,
        pub(super) models: Section<BTreeMap<String, Obj<RawModelPrice>>>,
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawModelPrice {
        pub(super) input_per_1m: Opt<u64>,
        pub(super) output_per_1m: Opt<u64>,
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawLimits {
        pub(super) max_concurrent: Opt<u64>,
        pub(super) max_tokens_per_minute: Opt<u64>,
        pub(super) max_request_bytes: Opt<u64>,
        pub(super) max_output_tokens: Opt<u64>,
        pub(super) max_messages: Opt<u64>,
        pub(super) max_prompt_bytes: Opt<u64>,
        pub(super) allow_remote_media: Opt<bool>,
        pub(super) allow_fields: Opt<Vec<Typed<String>>>,
        pub(super) backend_connect_timeout_s: Opt<f64>,
        pub(super) first_byte_timeout_s: Opt<f64>,
        pub(super) idle_timeout_s: Opt<f64>,
        pub(super) drain_timeout_s: Opt<f64>,
        pub(super) max_temp_c: Opt<f64>,
        pub(super) resume_temp_c: Opt<f64>,
        pub(super) allow_battery: Opt<bool>,
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawStatus {
        pub(super) state_file: Opt<String>,
        pub(super) metrics_textfile: Opt<String>,
        pub(super) interval_s: Opt<f64>,
        pub(super) log_level: Opt<String>,
    }
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawLedger {
        pub(super) path: Opt<String>,
        pub(super) max_bytes: Opt<u64>,
        pub(super) keep: Opt<u64>,
    }
}

json_fields! {
    /// A serving window of `schedule`.
    #[derive(Default)]
    pub(super) struct RawWindow {
        pub(super) days: Opt<Days>,
        pub(super) from: Opt<String>,
        pub(super) to: Opt<String>,
    }
}

/// `days`: one name or range (`"Mon-Fri"`), or a list of them.
pub(super) enum Days {
    One(String),
    Many(Vec<Typed<String>>),
}

json_fields! {
    #[derive(Default)]
    pub(super) struct RawLocalFirst {
        pub(super) enabled: Opt<bool>,
        pub(super) busy_s: Opt<f64>,
        pub(super) idle_s: Opt<f64>,
        pub(super) gpu_busy_pct: Opt<f64>,
    }
}

impl FromLeaf for Secret {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        String::from_leaf(leaf).map(Secret::new)
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
