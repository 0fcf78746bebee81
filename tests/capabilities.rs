//! `capabilities` (docs/protocol.md, "capabilities"): sent right after auth_ok without
//! waiting on a backend that hangs, and shaped exactly as the coordinator expects.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::agent::{Setup, VERSION};
use support::stub_http::{Blackhole, StaticHttp};
use support::{secs, watchdog};

const S5: Duration = Duration::from_secs(5);

/// The protocol's shape for capabilities.
/// `conc`: the agent's concurrency; `per_model`: what each model may run at once
/// (the agent's concurrency, capped by llama-server's total_slots); `context_window`:
/// what every model must advertise, `None` where the backend does not say (then the
/// field must be absent, as docs/protocol.md has it).
fn check_shape(caps: &Value, conc: u64, per_model: u64, context_window: Option<u64>) {
    assert_eq!(caps["type"], "capabilities");
    let models = caps["models"]
        .as_array()
        .unwrap_or_else(|| panic!("`models` must be an array: {caps}"));
    let mut ids = Vec::new();
    for m in models {
        let id = m["model_id"]
            .as_str()
            .unwrap_or_else(|| panic!("model_id must be a string: {m}"));
        ids.push(id.to_string());
        for k in ["input_per_1m", "output_per_1m"] {
            let p = m[k]
                .as_u64()
                .unwrap_or_else(|| panic!("`{k}` must be an unsigned integer: {m}"));
            assert!(p > 0, "a model priced 0 must not be offered: {m}");
        }
        assert_eq!(
            m["max_concurrent"].as_u64(),
            Some(per_model),
            "per-model concurrency: {m}"
        );
        let backend = m["backend"].as_str().unwrap_or("");
        assert!(
            ["vllm", "llamacpp", "lmstudio", "ollama"].contains(&backend),
            "backend kind: {m}"
        );
        match (m.get("context_window"), context_window) {
            (None, None) => {}
            (Some(cw), Some(want)) => assert_eq!(
                cw.as_u64(),
                Some(want),
                "context_window must be the backend's n_ctx as a u32: {m}"
            ),
            (got, want) => panic!("context_window {got:?}, expected {want:?}: {m}"),
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "models sorted by model_id, one entry per id");
    assert_eq!(
        caps["limits"]["max_concurrent_total"].as_u64(),
        Some(conc),
        "limits.max_concurrent_total: {caps}"
    );
    assert!(
        caps["limits"].get("max_tokens_per_minute").is_some(),
        "limits.max_tokens_per_minute must be present (null when unset): {caps}"
    );
    assert_eq!(
        caps["metadata"]["agent_version"].as_str(),
        Some(VERSION),
        "metadata.agent_version: {caps}"
    );
}

#[test]
fn capabilities_come_within_one_second_of_auth_ok_while_a_backend_hangs() {
    let _w = watchdog(Duration::from_secs(20), "capabilities_with_blackhole");
    let hole = Blackhole::start();
    let mut s = Setup::new("blackhole");
    s.set(
        "/backends",
        json!([{"kind": "llamacpp", "url": hole.url(), "models": ["m1"]}]),
    );
    s.set("/limits/max_concurrent", json!(3));
    s.set("/limits/max_tokens_per_minute", json!(12345));
    let agent = s.spawn();
    let conn = s.coord.accept(S5);
    // Make sure a probe is stuck in the black hole before auth_ok goes out.
    assert!(
        support::wait_until(Duration::from_secs(5), || hole.accepted() >= 1),
        "the agent never contacted the configured backend"
    );
    let auth = conn.authenticate(Some("prov-caps"));
    let caps = conn.expect_capabilities(Duration::from_secs(3));
    let after = secs(caps.at - auth.auth_ok_at);
    assert!(
        after < 1.0,
        "capabilities came {after:.3} s after auth_ok; must be < 1 s with a hanging backend"
    );
    check_shape(&caps.value, 3, 3, None);
    assert_eq!(caps.value["limits"]["max_tokens_per_minute"], json!(12345));

    // Again on a reconnect, with the backend still hanging.
    conn.send_close(1001, "bye");
    let conn2 = s.coord.accept(support::FIRST_RECONNECT);
    let auth2 = conn2.authenticate(Some("prov-caps"));
    let caps2 = conn2.expect_capabilities(Duration::from_secs(3));
    let after2 = secs(caps2.at - auth2.auth_ok_at);
    assert!(
        after2 < 1.0,
        "second session: capabilities after {after2:.3} s"
    );
    check_shape(&caps2.value, 3, 3, None);
    drop(agent);
}

/// A llama-server stand-in serving three models; `n_ctx` is what its /props reports (none:
/// a build that does not say, so the context window is unknown).
fn llamacpp_stub(n_ctx: Option<u64>) -> StaticHttp {
    let mut settings = json!({});
    if let Some(n) = n_ctx {
        settings["n_ctx"] = json!(n);
    }
    StaticHttp::start(vec![
        (
            "GET",
            "/health",
            200,
            json!({"status": "ok"}).to_string().into(),
        ),
        (
            "GET",
            "/v1/models",
            200,
            json!({"object": "list", "data": [
                {"id": "zeta-model", "object": "model", "owned_by": "llamacpp"},
                {"id": "alpha-model", "object": "model", "owned_by": "llamacpp"},
                {"id": "free-model", "object": "model", "owned_by": "llamacpp"}
            ]})
            .to_string()
            .into(),
        ),
        (
            "GET",
            "/props",
            200,
            json!({"default_generation_settings": settings, "total_slots": 2})
                .to_string()
                .into(),
        ),
    ])
}

/// Authenticate sessions until capabilities list models (discovery runs in the
/// background, so the first session may advertise none yet).
fn discovered_caps(s: &Setup) -> Value {
    let mut conn = s.coord.accept(S5);
    for _ in 0..5 {
        conn.authenticate(Some("prov-models"));
        let caps = conn.expect_capabilities(Duration::from_secs(3));
        // The hardware description may still be in the making (nvidia-smi can
        // take longer than capabilities wait); the next session carries it.
        if caps.value["models"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
            && caps.value["metadata"].get("hardware").is_some()
        {
            return caps.value;
        }
        std::thread::sleep(Duration::from_millis(300));
        conn.send_close(1001, "again");
        conn = s.coord.accept(support::FIRST_RECONNECT);
    }
    panic!("capabilities never listed the backend's models with the hardware description");
}

#[test]
fn capabilities_list_discovered_models_sorted_and_priced() {
    let _w = watchdog(Duration::from_secs(20), "capabilities_models");
    let stub = llamacpp_stub(Some(4096));
    let mut s = Setup::new("models");
    s.set(
        "/backends",
        json!([{"kind": "llamacpp", "url": stub.url()}]),
    );
    s.set("/limits/max_concurrent", json!(3));
    s.set(
        "/pricing",
        json!({"default_input_per_1m": 500000, "default_output_per_1m": 1000000,
               "models": {"free-model": {"input_per_1m": 0, "output_per_1m": 0},
                          "alpha-model": {"input_per_1m": 7, "output_per_1m": 9}}}),
    );
    let _agent = s.spawn();
    let caps = discovered_caps(&s);
    check_shape(&caps, 3, 2, Some(4096));
    let models = caps["models"].as_array().unwrap();
    let ids: Vec<&str> = models
        .iter()
        .map(|m| m["model_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["alpha-model", "zeta-model"],
        "free-model (price 0) is not offered"
    );
    assert_eq!(models[0]["input_per_1m"], 7);
    assert_eq!(models[0]["output_per_1m"], 9);
    assert_eq!(models[1]["input_per_1m"], 500000);
    assert_eq!(models[1]["output_per_1m"], 1000000);
    for m in models {
        assert_eq!(m["backend"], "llamacpp");
    }
    assert_eq!(caps["limits"]["max_tokens_per_minute"], Value::Null);

    // The hardware description is this machine's, read from its own /proc.
    let hw = &caps["metadata"]["hardware"];
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(hw["memory"]["total_mb"], total_kb / 1024, "{hw}");
    assert!(hw["cpu"]["cores"].as_u64().is_some_and(|c| c >= 1), "{hw}");
    let jetson = std::path::Path::new("/etc/nv_tegra_release").exists()
        || std::fs::read("/proc/device-tree/compatible")
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("nvidia,tegra"));
    assert_eq!(
        hw.get("jetson").is_some(),
        jetson,
        "Jetson iff L4T or a Tegra device tree: {hw}"
    );
}

#[test]
fn a_backend_model_allow_list_limits_what_is_advertised() {
    let _w = watchdog(Duration::from_secs(20), "capabilities_allow_list");
    // This llama-server does not report n_ctx: no context_window is advertised.
    let stub = llamacpp_stub(None);
    let mut s = Setup::new("allowlist");
    s.set(
        "/backends",
        json!([{"kind": "llamacpp", "url": stub.url(), "models": ["zeta-model"]}]),
    );
    let _agent = s.spawn();
    let caps = discovered_caps(&s);
    check_shape(&caps, 8, 2, None);
    let ids: Vec<&str> = caps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["zeta-model"], "only the allow-listed model");
}

#[test]
fn a_model_list_of_the_wrong_shape_is_named_by_discover() {
    let _w = watchdog(Duration::from_secs(20), "capabilities_wrong_shape");
    // An id that is a number: the list cannot be read, and discover says where and why.
    let stub = StaticHttp::start(vec![
        (
            "GET",
            "/health",
            200,
            json!({"status": "ok"}).to_string().into(),
        ),
        (
            "GET",
            "/v1/models",
            200,
            json!({"data": [{"id": 7}]}).to_string().into(),
        ),
    ]);
    let mut s = Setup::new("wrongshape");
    s.set("/backends", json!([{"kind": "vllm", "url": stub.url()}]));
    let out = s.cli("discover");
    assert!(!out.timed_out, "discover must exit: {}", out.describe());
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("GET /v1/models"))
        .unwrap_or_else(|| panic!("no word on /v1/models:\n{}", out.describe()));
    assert!(
        line.contains("not the expected answer: invalid type: integer `7`, expected a string"),
        "{line}"
    );
}
