//! The signed handshake (docs/protocol.md, "Handshake"), enrollment and provider_id, TLS
//! trust, and pre-auth failures, against the real binary.

mod support;

use std::time::Duration;

use serde_json::json;
use support::agent::{Setup, VERSION};
use support::coordinator::{Conn, Coordinator};
use support::identity::{parse_identity, usepod_identity_text, write_identity_file};
use support::tls::TestCa;
use support::watchdog;

const S5: Duration = Duration::from_secs(5);

fn read_identity(s: &Setup) -> support::identity::ParsedIdentity {
    let text = std::fs::read_to_string(&s.key_path)
        .unwrap_or_else(|e| panic!("identity file {}: {e}", s.key_path.display()));
    parse_identity(&text)
}

#[test]
fn signature_verifies_over_the_raw_nonce_on_every_connection() {
    let _w = watchdog(
        Duration::from_secs(20),
        "signature_verifies_over_the_raw_nonce",
    );
    let s = Setup::new("sig");
    let (agent, conn, a1) = s.spawn_and_authenticate(Some("prov-sig"));
    // authenticate() already verified: base64 lengths 44/88, ed25519 over the raw nonce.
    assert_eq!(conn.path, "/provider/connect", "upgrade request path");
    assert_eq!(
        a1.agent_version, VERSION,
        "agent_version must be the crate version"
    );
    assert_eq!(a1.nonce.len(), 32);
    conn.expect_capabilities(S5);
    assert!(
        agent.wait_for_log("authenticated as prov-sig", S5),
        "no `authenticated as prov-sig` log line"
    );

    // A second connection gets a new nonce; the signature must follow it.
    conn.send_close(1001, "bye");
    let conn2 = s.coord.accept(support::FIRST_RECONNECT);
    let a2 = conn2.authenticate(Some("prov-sig"));
    assert_ne!(a1.nonce, a2.nonce);
    assert_ne!(a1.signature_b64, a2.signature_b64);
    assert_eq!(a1.pubkey, a2.pubkey, "same identity on every connection");
    conn2.expect_capabilities(S5);
}

#[test]
fn enrollment_code_is_sent_until_a_provider_id_is_persisted_then_dropped() {
    let _w = watchdog(Duration::from_secs(20), "enrollment_code_then_provider_id");
    let mut s = Setup::new("enroll");
    s.set("/coordinator/enrollment_code", json!("ENROLL-7f3a"));
    let agent = s.spawn();

    let c1 = s.coord.accept(S5);
    let a1 = c1.authenticate(Some("prov-enrolled-1"));
    assert_eq!(
        a1.enrollment_code.as_deref(),
        Some("ENROLL-7f3a"),
        "enrollment_code must be sent while the identity has no provider_id: {}",
        a1.raw
    );
    // Persisted before the session goes on: on disk by the time capabilities arrive.
    c1.expect_capabilities(S5);
    let id = read_identity(&s);
    assert_eq!(id.provider_id.as_deref(), Some("prov-enrolled-1"));
    assert_eq!(
        id.public, a1.pubkey,
        "the file's key is the key on the wire"
    );

    // Next connection: code no longer sent, same key.
    c1.drop_tcp();
    let c2 = s.coord.accept(support::FIRST_RECONNECT);
    let a2 = c2.authenticate(Some("prov-enrolled-1"));
    assert_eq!(
        a2.enrollment_code, None,
        "enrollment_code must not be sent once a provider_id is stored: {}",
        a2.raw
    );
    assert_eq!(a2.pubkey, a1.pubkey);
    c2.expect_capabilities(S5);
    assert!(agent.has_log("authenticated as prov-enrolled-1"));
    // The secret never reaches the logs.
    let secret = support::identity::b64(&id.secret);
    assert!(
        !agent.logs().contains(&secret),
        "the identity secret was logged"
    );
}

#[test]
fn auth_ok_without_provider_id_is_accepted_and_enrollment_continues() {
    let _w = watchdog(Duration::from_secs(20), "auth_ok_without_provider_id");
    let mut s = Setup::new("noprov");
    s.set("/coordinator/enrollment_code", json!("CODE-1"));
    let agent = s.spawn();
    let c1 = s.coord.accept(S5);
    let a1 = c1.authenticate(None);
    assert_eq!(a1.enrollment_code.as_deref(), Some("CODE-1"));
    c1.expect_capabilities(S5);
    assert!(agent.wait_for_log("authenticated as (no provider_id)", S5));
    assert_eq!(read_identity(&s).provider_id, None);
    // Still no provider_id, so the code is sent again.
    c1.send_close(1001, "bye");
    let c2 = s.coord.accept(support::FIRST_RECONNECT);
    let a2 = c2.authenticate(None);
    assert_eq!(a2.enrollment_code.as_deref(), Some("CODE-1"));
}

#[test]
fn a_different_provider_id_from_auth_ok_replaces_the_stored_one() {
    let _w = watchdog(Duration::from_secs(20), "different_provider_id_replaces");
    let mut s = Setup::new("newprov");
    write_identity_file(
        &s.key_path,
        &usepod_identity_text([42u8; 32], Some("prov-old")),
    );
    s.set("/coordinator/enrollment_code", json!("CODE-2"));
    let (_agent, conn, auth) = s.spawn_and_authenticate(Some("prov-new"));
    assert_eq!(auth.enrollment_code, None, "stored provider_id: no code");
    conn.expect_capabilities(S5);
    let id = read_identity(&s);
    assert_eq!(id.provider_id.as_deref(), Some("prov-new"));
    assert_eq!(id.secret, [42u8; 32], "the key must not change");
}

#[test]
fn plain_ws_to_a_loopback_coordinator_works_without_allow_insecure() {
    let _w = watchdog(Duration::from_secs(15), "plain_ws_loopback");
    let s = Setup::new_plain("plainws");
    assert_eq!(s.config["coordinator"]["allow_insecure"], json!(false));
    let (_agent, conn, _) = s.spawn_and_authenticate(Some("prov-plain"));
    conn.expect_capabilities(S5);
}

/// The agent must never complete TLS with a coordinator it cannot verify.
fn assert_refused(s: &Setup, what: &str) {
    let agent = s.spawn();
    if let Some(conn) = s.coord.try_accept(Duration::from_secs(3)) {
        drop(agent);
        panic!(
            "{what}: the agent completed TLS + upgrade (conn {})",
            conn.id
        );
    }
    assert!(
        !s.coord.handshake_failures().is_empty(),
        "{what}: the agent never even tried to connect"
    );
    // It keeps retrying (with backoff) rather than giving up or crashing.
    assert!(
        support::wait_until(Duration::from_secs(4), || s.coord.tcp_accepts() >= 2),
        "{what}: no retry after the failed TLS handshake"
    );
    drop(agent);
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_refused() {
    let _w = watchdog(Duration::from_secs(15), "untrusted_ca_refused");
    let mut s = Setup::new("untrusted");
    let other = TestCa::new();
    let other_pem = s.dir.join("other-ca.pem");
    std::fs::write(&other_pem, &other.ca_pem).unwrap();
    s.set("/coordinator/ca_file", json!(other_pem.to_str().unwrap()));
    assert_refused(&s, "certificate signed by a CA that is not configured");
}

#[test]
fn without_ca_file_the_test_ca_is_not_trusted() {
    let _w = watchdog(Duration::from_secs(15), "no_ca_file_not_trusted");
    let mut s = Setup::new("noca");
    s.config["coordinator"]
        .as_object_mut()
        .unwrap()
        .remove("ca_file");
    assert_refused(&s, "no ca_file (webpki roots only)");
}

#[test]
fn a_certificate_for_another_host_name_is_refused() {
    let _w = watchdog(Duration::from_secs(15), "hostname_mismatch_refused");
    let mut s = Setup::new("wrongname");
    let ca = TestCa::with_server_names(&["coordinator.example"]);
    std::fs::write(&s.ca_file, &ca.ca_pem).unwrap();
    s.coord = Coordinator::start_tls(&ca);
    let url = s.coord.url();
    s.set("/coordinator/url", json!(url));
    assert_refused(
        &s,
        "certificate for coordinator.example, URL host localhost",
    );
}

/// The agent must answer a bad first message by ending the connection without an
/// auth_response, then come back (a first pre-auth failure: the retry is drawn over
/// [0, 4 s)).
fn assert_preauth_failure(s: &Setup, conn: &Conn, what: &str) {
    if let Some(m) = conn.recv(Duration::from_secs(2)) {
        panic!("{what}: the agent answered instead of failing the handshake: {m:?}");
    }
    assert!(
        conn.wait_closed(Duration::from_secs(3)),
        "{what}: the agent kept the connection open"
    );
    let next = s.coord.try_accept(support::FIRST_RECONNECT);
    assert!(next.is_some(), "{what}: no reconnect after the failure");
}

#[test]
fn a_challenge_with_an_undecodable_nonce_fails_the_handshake() {
    let _w = watchdog(Duration::from_secs(15), "undecodable_nonce");
    let s = Setup::new("badnonce");
    let _agent = s.spawn();
    let conn = s.coord.accept(S5);
    conn.send_json(&json!({"type": "auth_challenge", "nonce": "%%% not base64 %%%"}));
    assert_preauth_failure(&s, &conn, "undecodable nonce");
}

#[test]
fn a_challenge_without_a_nonce_fails_the_handshake() {
    let _w = watchdog(Duration::from_secs(15), "missing_nonce");
    let s = Setup::new("nononce");
    let _agent = s.spawn();
    let conn = s.coord.accept(S5);
    conn.send_json(&json!({"type": "auth_challenge"}));
    assert_preauth_failure(&s, &conn, "missing nonce");
}

#[test]
fn another_message_instead_of_the_challenge_fails_the_handshake() {
    let _w = watchdog(Duration::from_secs(15), "not_a_challenge");
    let s = Setup::new("notchallenge");
    let _agent = s.spawn();
    let conn = s.coord.accept(S5);
    conn.send_json(&json!({"type": "auth_ok", "provider_id": "prov-x"}));
    assert_preauth_failure(&s, &conn, "auth_ok before any challenge");
}

#[test]
fn a_binary_frame_during_the_handshake_fails_it() {
    let _w = watchdog(Duration::from_secs(15), "binary_during_handshake");
    let s = Setup::new("binhandshake");
    let _agent = s.spawn();
    let conn = s.coord.accept(S5);
    conn.send_binary(b"{\"type\":\"auth_challenge\",\"nonce\":\"AAAA\"}");
    assert_preauth_failure(&s, &conn, "binary frame as the challenge");
}

#[test]
fn another_message_instead_of_auth_ok_fails_the_handshake() {
    let _w = watchdog(Duration::from_secs(15), "not_auth_ok");
    let s = Setup::new("notauthok");
    let agent = s.spawn();
    let conn = s.coord.accept(S5);
    conn.challenge_and_verify();
    conn.send_json(
        &json!({"type": "job_cancel", "job_id": "00000000-0000-0000-0000-000000000000"}),
    );
    assert_preauth_failure(&s, &conn, "job_cancel instead of auth_ok");
    assert!(
        !agent.has_log("authenticated as"),
        "it must not count as authenticated"
    );
}

/// A failure only the operator can fix is said as one: an ERROR line "fix the
/// configuration: ..." once (not at every retry), `connection.config_problem` in the
/// state file and in `status`; retries go on, and a session that gets through clears it.
#[test]
fn a_config_problem_is_shown_as_one_and_cleared_once_a_session_gets_through() {
    let _w = watchdog(Duration::from_secs(40), "config_problem_shown");
    let mut s = Setup::new("config_problem");
    s.set("/status", json!({"interval_s": 0.2}));
    let state_file = s.key_path.with_file_name("state.json");
    let agent = s.spawn();
    // An auth_failed about the key: the operator's to fix (enrollment, key_path).
    let conn = s.coord.accept(S5);
    conn.reject("unknown provider key");
    let line = agent
        .wait_for_log_line("fix the configuration:", S5)
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("no config problem line:\n{}", agent.logs()));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("unknown provider key"), "{line}");
    assert!(line.contains("enrollment_code"), "{line}");
    let problem = || -> Option<String> {
        let text = std::fs::read_to_string(&state_file).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["connection"]["config_problem"]
            .as_str()
            .map(str::to_owned)
    };
    assert!(support::wait_until(S5, || problem().is_some()));
    assert!(problem().unwrap().contains("unknown provider key"));
    let status = s.cli("status");
    assert!(
        status
            .stdout
            .contains("fix the configuration: authentication refused"),
        "{}",
        status.describe()
    );

    // The same problem again: retried, not said again.
    let conn = s.coord.accept(Duration::from_secs(10));
    conn.reject("unknown provider key");
    let conn = s.coord.accept(Duration::from_secs(15));
    assert_eq!(
        agent.count_logs("fix the configuration:"),
        1,
        "{}",
        agent.logs()
    );

    // Fixed on the coordinator's side: the next session clears it.
    conn.authenticate(Some("prov-fixed"));
    conn.expect_capabilities(S5);
    assert!(
        support::wait_until(S5, || std::fs::read_to_string(&state_file).is_ok_and(|t| t
            .contains("\"connected\"")
            && t.contains("\"config_problem\": null"))),
        "{}",
        std::fs::read_to_string(&state_file).unwrap_or_default()
    );
}
