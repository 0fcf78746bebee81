//! Bad configuration: exit code 2 and one stderr line naming the config file, the key and
//! what is wrong, the same through `run` and `validate`; `run` must not connect.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::agent::{run_cli, CliOutput, Setup};
use support::watchdog;

fn cli(s: &Setup, cfg: &Value, sub: &str, envs: &[(&str, &str)]) -> (String, CliOutput) {
    let path = support::agent::write_config(s.dir.path(), "config.json", cfg);
    let p = path.to_str().unwrap().to_string();
    let out = run_cli(
        &["--config", &p, sub],
        envs,
        s.dir.path(),
        Duration::from_secs(10),
    );
    (p, out)
}

/// `edit` breaks one thing; both subcommands must exit 2 with one stderr line holding the
/// config path, `key` and one of `hints` (what is wrong).
fn rejects(tag: &str, edit: impl Fn(&mut Setup), key: &str, hints: &[&str]) {
    rejects_env(tag, edit, &[], key, hints)
}

/// With `envs`: a bad value that came from the environment is reported by the variable's
/// name (in `key`) instead of the file.
fn rejects_env(
    tag: &str,
    edit: impl Fn(&mut Setup),
    envs: &[(&str, &str)],
    key: &str,
    hints: &[&str],
) {
    let mut s = Setup::new(tag);
    edit(&mut s);
    for sub in ["validate", "run"] {
        let (path, out) = cli(&s, &s.config, sub, envs);
        assert!(
            !out.timed_out,
            "{tag}/{sub}: did not exit\n{}",
            out.describe()
        );
        assert_eq!(
            out.code,
            Some(2),
            "{tag}/{sub}: exit code\n{}",
            out.describe()
        );
        let lines = out.stderr_lines();
        assert_eq!(
            lines.len(),
            1,
            "{tag}/{sub}: expected exactly one stderr line\n{}",
            out.describe()
        );
        let line = lines[0];
        if envs.is_empty() {
            assert!(
                line.contains(&path),
                "{tag}/{sub}: line must name {path}: {line:?}"
            );
        }
        assert!(
            line.contains(key),
            "{tag}/{sub}: line must name `{key}`: {line:?}"
        );
        assert!(
            hints.iter().any(|h| line.contains(h)),
            "{tag}/{sub}: line must say what is wrong (one of {hints:?}): {line:?}"
        );
    }
    assert_eq!(
        s.coord.tcp_accepts(),
        0,
        "{tag}: `run` connected despite a bad config"
    );
}

fn accepts(tag: &str, edit: impl Fn(&mut Setup)) {
    let mut s = Setup::new(tag);
    edit(&mut s);
    let (_, out) = cli(&s, &s.config, "validate", &[]);
    assert_eq!(
        out.code,
        Some(0),
        "{tag}: a valid config was rejected\n{}",
        out.describe()
    );
}

const W: Duration = Duration::from_secs(30);

#[test]
fn a_valid_config_validates() {
    let _w = watchdog(W, "valid_config");
    accepts("valid", |_| {});
}

#[test]
fn unknown_backend_kind() {
    let _w = watchdog(W, "unknown_kind");
    rejects(
        "kind",
        |s| {
            s.set("/backends/0/kind", json!("tgi"));
        },
        "backends[0].kind",
        &["tgi"],
    );
}

#[test]
fn coordinator_url_with_an_http_scheme() {
    let _w = watchdog(W, "coordinator_scheme");
    rejects(
        "coordscheme",
        |s| {
            s.set(
                "/coordinator/url",
                json!("https://localhost:1/provider/connect"),
            );
        },
        "coordinator.url",
        &["scheme", "ws://", "wss://"],
    );
}

#[test]
fn backend_url_with_a_non_http_scheme() {
    let _w = watchdog(W, "backend_scheme");
    rejects(
        "backendscheme",
        |s| {
            s.set("/backends/0/url", json!("ftp://127.0.0.1:8080"));
        },
        "backends[0].url",
        &["scheme", "http://", "ftp"],
    );
}

const PRICE_HINTS: &[&str] = &[
    "greater than 0",
    "zero",
    "positive",
    "> 0",
    "at least 1",
    "non-zero",
];

#[test]
fn zero_default_input_price() {
    let _w = watchdog(W, "zero_input_price");
    rejects(
        "zeroin",
        |s| {
            s.set("/pricing/default_input_per_1m", json!(0));
        },
        "pricing.default_input_per_1m",
        PRICE_HINTS,
    );
}

#[test]
fn zero_default_output_price() {
    let _w = watchdog(W, "zero_output_price");
    rejects(
        "zeroout",
        |s| {
            s.set("/pricing/default_output_per_1m", json!(0));
        },
        "pricing.default_output_per_1m",
        PRICE_HINTS,
    );
}

#[test]
fn max_concurrent_zero() {
    let _w = watchdog(W, "max_concurrent_0");
    rejects(
        "conc0",
        |s| {
            s.set("/limits/max_concurrent", json!(0));
        },
        "limits.max_concurrent",
        &["256"],
    );
}

#[test]
fn max_concurrent_257() {
    let _w = watchdog(W, "max_concurrent_257");
    rejects(
        "conc257",
        |s| {
            s.set("/limits/max_concurrent", json!(257));
        },
        "limits.max_concurrent",
        &["256"],
    );
}

#[test]
fn max_concurrent_of_the_wrong_type() {
    let _w = watchdog(W, "max_concurrent_type");
    rejects(
        "conctype",
        |s| {
            s.set("/limits/max_concurrent", json!("eight"));
        },
        "limits.max_concurrent",
        &["integer", "number", "eight", "invalid type"],
    );
}

#[test]
fn max_concurrent_bounds_1_and_256_are_valid() {
    let _w = watchdog(W, "max_concurrent_bounds");
    accepts("conc1", |s| {
        s.set("/limits/max_concurrent", json!(1));
    });
    accepts("conc256", |s| {
        s.set("/limits/max_concurrent", json!(256));
    });
}

#[test]
fn missing_ca_file() {
    let _w = watchdog(W, "missing_ca_file");
    rejects(
        "nocafile",
        |s| {
            let p = s.dir.join("no-such-ca.pem");
            s.set("/coordinator/ca_file", json!(p.to_str().unwrap()));
        },
        "coordinator.ca_file",
        &["no-such-ca.pem"],
    );
}

#[test]
fn unreadable_ca_file() {
    let _w = watchdog(W, "unreadable_ca_file");
    // Tests may run as root, for whom modes do not stop reads: a directory cannot be read
    // as a file by anyone.
    rejects(
        "cadir",
        |s| {
            let d = s.dir.join("ca-is-a-dir.pem");
            std::fs::create_dir_all(&d).unwrap();
            s.set("/coordinator/ca_file", json!(d.to_str().unwrap()));
        },
        "coordinator.ca_file",
        &["ca-is-a-dir.pem"],
    );
}

#[test]
fn ca_file_without_certificates() {
    let _w = watchdog(W, "ca_file_no_certs");
    rejects(
        "caempty",
        |s| {
            std::fs::write(&s.ca_file, "not a certificate\n").unwrap();
        },
        "coordinator.ca_file",
        &["certificate", "PEM", "pem"],
    );
}

#[test]
fn duplicate_backend() {
    let _w = watchdog(W, "duplicate_backend");
    rejects(
        "dupbackend",
        |s| {
            let b = s.config["backends"][0].clone();
            s.config["backends"].as_array_mut().unwrap().push(b);
        },
        "backends[1]",
        &["duplicate", "Duplicate", "same"],
    );
}

#[test]
fn plain_ws_to_a_remote_host_needs_allow_insecure() {
    let _w = watchdog(W, "ws_remote_insecure");
    rejects(
        "wsremote",
        |s| {
            s.set(
                "/coordinator/url",
                json!("ws://coordinator.example.com/provider/connect"),
            );
        },
        "coordinator.url",
        &["allow_insecure"],
    );
    accepts("wsremoteok", |s| {
        s.set(
            "/coordinator/url",
            json!("ws://coordinator.example.com/provider/connect"),
        );
        s.set("/coordinator/allow_insecure", json!(true));
    });
}

#[test]
fn an_api_key_over_plain_http_to_another_host_needs_allow_insecure() {
    let _w = watchdog(W, "api_key_insecure");
    let remote = |s: &mut Setup| {
        s.set(
            "/backends",
            json!([{"kind": "vllm", "url": "http://192.0.2.10:8000",
                    "api_key_env": "USEPOD_TEST_REMOTE_KEY"}]),
        );
    };
    rejects(
        "apikeyremote",
        remote,
        "backends[0].api_key",
        &["clear text"],
    );
    let s = Setup::new("apikeyremote_text");
    let mut cfg = s.config.clone();
    cfg["backends"] = json!([{"kind": "vllm", "url": "http://192.0.2.10:8000",
                              "api_key_env": "USEPOD_TEST_REMOTE_KEY"}]);
    let (_, out) = cli(
        &s,
        &cfg,
        "validate",
        &[("USEPOD_TEST_REMOTE_KEY", "sk-hunter2")],
    );
    for needle in ["http://192.0.2.10:8000/", "backends[0].allow_insecure"] {
        assert!(out.stderr.contains(needle), "{needle}\n{}", out.describe());
    }
    assert!(!out.stderr.contains("hunter2"), "{}", out.describe());
    accepts("apikeyremoteok", |s| {
        remote(s);
        s.set("/backends/0/allow_insecure", json!(true));
    });
    accepts("apikeyloopback", |s| {
        s.set(
            "/backends",
            json!([{"kind": "vllm", "url": "http://127.0.0.1:8000",
                    "api_key_env": "USEPOD_TEST_REMOTE_KEY"}]),
        );
    });
}

#[test]
fn plain_ws_to_loopback_hosts_is_valid_without_allow_insecure() {
    let _w = watchdog(W, "ws_loopback_ok");
    for (i, url) in [
        "ws://127.0.0.1:9/provider/connect",
        "ws://localhost:9/provider/connect",
        "ws://[::1]:9/provider/connect",
    ]
    .iter()
    .enumerate()
    {
        accepts(&format!("wsloop{i}"), |s| {
            s.set("/coordinator/url", json!(url));
        });
    }
}

#[test]
fn a_bad_url_from_the_environment_is_reported() {
    let _w = watchdog(W, "env_bad_url");
    rejects_env(
        "envurl",
        |_| {},
        &[(
            "USEPOD_EDGE_COORDINATOR_URL",
            "http://localhost:1/provider/connect",
        )],
        "USEPOD_EDGE_COORDINATOR_URL",
        &["scheme", "ws://", "wss://"],
    );
}

#[test]
fn malformed_json() {
    let _w = watchdog(W, "malformed_json");
    let s = Setup::new("badjson");
    let path = s.dir.join("config.json");
    std::fs::write(&path, "{\"coordinator\": {\"url\": ").unwrap();
    let p = path.to_str().unwrap();
    for sub in ["validate", "run"] {
        let out = run_cli(
            &["--config", p, sub],
            &[],
            s.dir.path(),
            Duration::from_secs(10),
        );
        assert_eq!(out.code, Some(2), "{sub}\n{}", out.describe());
        assert_eq!(
            out.stderr_lines().len(),
            1,
            "{sub}: one line\n{}",
            out.describe()
        );
        assert!(
            out.stderr.contains(p),
            "{sub}: must name the file\n{}",
            out.describe()
        );
    }
}

#[test]
fn missing_config_file() {
    let _w = watchdog(W, "missing_config");
    let s = Setup::new("nocfg");
    let path = s.dir.join("nope.json");
    let p = path.to_str().unwrap();
    for sub in ["validate", "run"] {
        let out = run_cli(
            &["--config", p, sub],
            &[],
            s.dir.path(),
            Duration::from_secs(10),
        );
        assert_eq!(out.code, Some(2), "{sub}\n{}", out.describe());
        assert!(
            out.stderr.contains(p),
            "{sub}: must name the file\n{}",
            out.describe()
        );
    }
}
