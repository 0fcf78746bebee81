use super::*;
use crate::backend::BackendKind;
use std::path::PathBuf;
use std::time::Duration;

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
    let c = Config::from_str("f", r#"{"coordinator":{"enrollment_code":"FILE"}}"#, &over).unwrap();
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
