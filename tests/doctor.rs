//! `usepod-edge doctor`: named checks, each with a verdict; exit 0 only when all pass.

mod support;

use serde_json::json;
use std::time::Duration;
use support::agent::Setup;
use support::fake_backend::{FakeBackend, Kind};
use support::identity::usepod_identity_text;
use support::watchdog;

fn with_identity(s: &Setup, mode: u32) {
    support::identity::write_identity_file_mode(
        &s.key_path,
        &usepod_identity_text([3; 32], Some("prov-doc")),
        mode,
    );
}

/// Whether this machine's clock is past the agent's release floor (2026-01-01), which an
/// RTC-less board after boot is not: the clock check's verdict depends on it, so the tests
/// expect what this host should get (the check itself is tested with fixed times in
/// src/doctor.rs).
fn host_clock_sane() -> bool {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|d| d.as_secs() >= 1_767_225_600)
}

fn clock_verdict() -> &'static str {
    if host_clock_sane() {
        "PASS"
    } else {
        "FAIL"
    }
}

fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name) || l[5..].starts_with(name))
        .unwrap_or_else(|| panic!("no {name} check in:\n{out}"))
}

#[test]
fn a_healthy_setup_passes_every_check() {
    let _w = watchdog(Duration::from_secs(40), "doctor pass");
    let fake = FakeBackend::start(Kind::LlamaCpp, &["doc-model"]);
    let mut s = Setup::new("doctor-ok");
    s.set(
        "/backends",
        json!([{"kind": "llamacpp", "url": fake.url()}]),
    );
    with_identity(&s, 0o600);
    let out = s.cli("doctor");
    let code = if host_clock_sane() { 0 } else { 1 };
    assert_eq!(out.code, Some(code), "{}{}", out.stdout, out.stderr);
    assert!(
        line(&out.stdout, "clock").starts_with(clock_verdict()),
        "{}",
        out.stdout
    );
    for name in [
        "config",
        "identity",
        "disk",
        "coordinator_dns",
        "coordinator_tcp",
        "coordinator_tls",
        "backend",
    ] {
        assert!(
            line(&out.stdout, name).starts_with("PASS"),
            "{name}:\n{}",
            out.stdout
        );
    }
    assert!(line(&out.stdout, "identity").contains("prov-doc"));
    assert!(
        line(&out.stdout, "coordinator_tls").contains("certificate verified"),
        "{}",
        out.stdout
    );
    assert!(
        line(&out.stdout, "backend").contains("one-token completion on doc-model"),
        "{}",
        out.stdout
    );
    let asked = fake.inference_requests();
    assert_eq!(asked.len(), 1, "one completion per backend");
    assert_eq!(asked[0].body["max_tokens"], 1);
}

#[test]
fn each_broken_part_fails_its_own_check() {
    let _w = watchdog(Duration::from_secs(40), "doctor fail");
    let mut s = Setup::new("doctor-bad");
    // No ca_file: the test CA is not trusted, so TLS must fail verification.
    s.set("/coordinator/ca_file", json!(null));
    with_identity(&s, 0o644);
    let out = s.cli("doctor");
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        line(&out.stdout, "identity").starts_with("FAIL") && out.stdout.contains("0600"),
        "{}",
        out.stdout
    );
    assert!(
        line(&out.stdout, "coordinator_tcp").starts_with("PASS"),
        "{}",
        out.stdout
    );
    assert!(
        line(&out.stdout, "coordinator_tls").starts_with("FAIL"),
        "{}",
        out.stdout
    );
    // base_config's backend is a refused port.
    assert!(
        line(&out.stdout, "backend").starts_with("FAIL"),
        "{}",
        out.stdout
    );
    assert!(line(&out.stdout, "clock").starts_with(clock_verdict()));
    assert!(out.stdout.contains("checks failed"), "{}", out.stdout);
}
