//! A config as a flat list of settings (`limits.max_concurrent` = `8`), and what a
//! reload changes: which settings differ, and which of those a running agent can
//! take up and which need a restart. Pure, so `reload` and its tests agree on every
//! key.

use super::types::Config;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Settings that belong to a session or the process: a reload leaves them as the
/// agent started (the coordinator connection and its trust, the identity, the
/// inbound frame cap the session was dialled with).
const RESTART_ONLY: &[&str] = &["coordinator.", "identity.", "limits.max_request_bytes"];

/// Whether a reload can apply a change of `key`.
pub fn needs_restart(key: &str) -> bool {
    RESTART_ONLY.iter().any(|p| key.starts_with(p))
}

fn secs(d: Duration) -> String {
    d.as_secs_f64().to_string()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

fn list(v: &[String]) -> String {
    format!("[{}]", v.join(", "))
}

/// Every setting with its value as the agent uses it (defaults applied), keyed
/// as in the file. Secrets show whether they are set, never their value.
pub fn settings(c: &Config) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        s.insert(k.to_owned(), v);
    };
    let co = &c.coordinator;
    put("coordinator.url", co.url.to_string());
    let code = co.enrollment_code.as_ref().map(|_| "(set)");
    put("coordinator.enrollment_code", opt(code));
    let ca = co.ca_file.as_ref().map(|p| p.display());
    put("coordinator.ca_file", opt(ca));
    put("coordinator.allow_insecure", co.allow_insecure.to_string());
    put(
        "coordinator.heartbeat_interval_s",
        secs(co.heartbeat_interval),
    );
    put("coordinator.ping_interval_s", secs(co.ping_interval));
    put("coordinator.drain_spread_s", secs(co.drain_spread));
    put("coordinator.connect_timeout_s", secs(co.connect_timeout));
    put(
        "coordinator.handshake_timeout_s",
        secs(co.handshake_timeout),
    );
    put("identity.key_path", c.key_path.display().to_string());
    for b in &c.backends {
        let url = b.url.to_string();
        let at = format!("backends[{}]", url.strip_suffix('/').unwrap_or(&url));
        put(&at, b.kind.as_str().to_owned());
        put(&format!("{at}.models"), opt(b.models.as_deref().map(list)));
        put(&format!("{at}.api_key_env"), opt(b.api_key_env.as_ref()));
        put(
            &format!("{at}.allow_insecure"),
            b.allow_insecure.to_string(),
        );
        let native = b.native_anthropic.to_string();
        put(&format!("{at}.native_anthropic"), native);
    }
    let p = &c.pricing;
    put(
        "pricing.default_input_per_1m",
        p.default_input_per_1m.to_string(),
    );
    put(
        "pricing.default_output_per_1m",
        p.default_output_per_1m.to_string(),
    );
    for (model, price) in &p.models {
        let at = format!("pricing.models.{model}");
        put(&format!("{at}.input_per_1m"), opt(price.input_per_1m));
        put(&format!("{at}.output_per_1m"), opt(price.output_per_1m));
    }
    let l = &c.limits;
    put("limits.max_concurrent", l.max_concurrent.to_string());
    put("limits.max_tokens_per_minute", opt(l.max_tokens_per_minute));
    put("limits.max_request_bytes", l.max_request_bytes.to_string());
    put("limits.max_output_tokens", opt(l.max_output_tokens));
    put("limits.max_messages", l.max_messages.to_string());
    put("limits.max_prompt_bytes", l.max_prompt_bytes.to_string());
    put(
        "limits.allow_remote_media",
        l.allow_remote_media.to_string(),
    );
    put("limits.allow_fields", list(&l.allow_fields));
    put(
        "limits.backend_connect_timeout_s",
        secs(l.backend_connect_timeout),
    );
    put("limits.first_byte_timeout_s", secs(l.first_byte_timeout));
    put("limits.idle_timeout_s", secs(l.idle_timeout));
    put("limits.drain_timeout_s", secs(l.drain_timeout));
    put("limits.max_temp_c", l.max_temp_c.to_string());
    put("limits.resume_temp_c", l.resume_temp_c.to_string());
    put("limits.allow_battery", l.allow_battery.to_string());
    let st = &c.status;
    put("status.state_file", st.state_file.display().to_string());
    let textfile = st.metrics_textfile.as_ref().map(|p| p.display());
    put("status.metrics_textfile", opt(textfile));
    put("status.interval_s", secs(st.interval));
    put("status.log_level", opt(st.log_level));
    put("ledger.path", c.ledger.path.display().to_string());
    put("ledger.max_bytes", c.ledger.max_bytes.to_string());
    put("ledger.keep", c.ledger.keep.to_string());
    let schedule = if c.schedule.is_empty() {
        "none".to_owned()
    } else {
        crate::schedule::describe(&c.schedule)
    };
    put("schedule", schedule);
    let lf = &c.local_first;
    put("local_first.enabled", lf.enabled.to_string());
    put("local_first.busy_s", secs(lf.busy));
    put("local_first.idle_s", secs(lf.idle));
    put("local_first.gpu_busy_pct", lf.gpu_busy_pct.to_string());
    let keys: Vec<String> = c
        .upgrade
        .trusted_keys
        .iter()
        .map(|k| crate::release::signature::b64(k))
        .collect();
    put("upgrade.trusted_keys", list(&keys));
    s
}

/// One setting that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// None: not set before (a new backend or model price).
    pub before: Option<String>,
    /// None: gone.
    pub after: Option<String>,
}

impl fmt::Display for Change {
    /// `pricing.models.m1.output_per_1m: 1000000 -> 800000`; a backend that comes
    /// or goes is one line, `backends: + http://127.0.0.1:8081`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = self
            .key
            .strip_prefix("backends[")
            .and_then(|k| k.strip_suffix(']'));
        match (backend, &self.before, &self.after) {
            (Some(url), None, Some(kind)) => write!(f, "backends: + {url} ({kind})"),
            (Some(url), Some(_), None) => write!(f, "backends: - {url}"),
            (_, None, Some(a)) => write!(f, "{}: + {a}", self.key),
            (_, Some(b), None) => write!(f, "{}: - {b}", self.key),
            (_, Some(b), Some(a)) => write!(f, "{}: {b} -> {a}", self.key),
            (_, None, None) => write!(f, "{}", self.key),
        }
    }
}

/// What differs from `old` to `new`, in key order. The settings of a backend that
/// comes or goes are left out: its one `backends[URL]` line says it.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let (a, b) = (settings(old), settings(new));
    let whole_backend = |key: &str, side: &BTreeMap<String, String>| {
        key.split_once("].")
            .is_some_and(|(at, _)| !side.contains_key(&format!("{at}]")))
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .filter(|k| !whole_backend(k, &a) && !whole_backend(k, &b))
        .map(|k| Change {
            key: k.clone(),
            before: a.get(k).cloned(),
            after: b.get(k).cloned(),
        })
        .collect()
}

/// `new`, but with every setting a reload cannot apply as it is in `running`: the
/// config a reload installs.
pub fn keep_restart_only(mut new: Config, running: &Config) -> Config {
    new.coordinator = running.coordinator.clone();
    new.key_path = running.key_path.clone();
    new.limits.max_request_bytes = running.limits.max_request_bytes;
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(text: &str) -> Config {
        Config::from_str("test.json", text, &Overrides::default()).expect("a valid config")
    }

    fn lines(old: &str, new: &str) -> Vec<String> {
        diff(&config(old), &config(new))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_price_change_is_one_line_with_both_values() {
        let old = r#"{"pricing": {"models": {"m1": {"output_per_1m": 1000000}}}}"#;
        let new = r#"{"pricing": {"models": {"m1": {"output_per_1m": 800000}}}}"#;
        assert_eq!(
            lines(old, new),
            ["pricing.models.m1.output_per_1m: 1000000 -> 800000"]
        );
        assert!(lines(old, old).is_empty());
    }

    #[test]
    fn a_backend_that_comes_or_goes_is_one_line() {
        let one = r#"{"backends": [{"kind": "llamacpp", "url": "http://127.0.0.1:8080"}]}"#;
        let two = r#"{"backends": [{"kind": "llamacpp", "url": "http://127.0.0.1:8080"},
                                   {"kind": "llamacpp", "url": "http://127.0.0.1:8081",
                                    "models": ["m1"]}]}"#;
        assert_eq!(
            lines(one, two),
            ["backends: + http://127.0.0.1:8081 (llamacpp)"]
        );
        assert_eq!(lines(two, one), ["backends: - http://127.0.0.1:8081"]);
        let allowed = two.replace(r#"["m1"]"#, r#"["m1", "m2"]"#);
        assert_eq!(
            lines(two, &allowed),
            ["backends[http://127.0.0.1:8081].models: [m1] -> [m1, m2]"]
        );
    }

    #[test]
    fn session_settings_need_a_restart_and_are_kept() {
        let old = config(r#"{"coordinator": {"url": "wss://a.example/provider/connect"}}"#);
        let new = config(
            r#"{"coordinator": {"url": "wss://b.example/provider/connect"},
                "limits": {"max_concurrent": 2, "max_request_bytes": 1000000}}"#,
        );
        let changes = diff(&old, &new);
        let restart: Vec<&str> = changes
            .iter()
            .filter(|c| needs_restart(&c.key))
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(restart, ["coordinator.url", "limits.max_request_bytes"]);
        let installed = keep_restart_only(new, &old);
        let left: Vec<String> = diff(&old, &installed)
            .iter()
            .map(ToString::to_string)
            .collect();
        // The prompt cap follows the request cap by default: the file changed both.
        assert_eq!(
            left,
            [
                "limits.max_concurrent: 8 -> 2",
                "limits.max_prompt_bytes: 8388608 -> 1000000"
            ]
        );
    }

    #[test]
    fn secrets_show_only_whether_they_are_set() {
        let c = config(r#"{"coordinator": {"enrollment_code": "hunter2-code"}}"#);
        let all = format!("{:?}", settings(&c));
        assert!(!all.contains("hunter2"), "{all}");
        assert_eq!(settings(&c)["coordinator.enrollment_code"], "(set)");
    }
}
