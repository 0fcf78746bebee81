//! A coordinator that tries to turn the agent against its operator, against the real
//! binary over real sockets on 127.0.0.1: a provider_id that would add lines to the
//! identity file, challenges that would make the agent sign arbitrary data, remote text
//! that would forge log lines or state, and key files others can read.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use support::agent::{Agent, Setup};
use support::coordinator::Conn;
use support::fake_backend::{FakeBackend, Kind};
use support::identity::{
    b64, parse_identity, usepod_identity_text, write_identity_file, write_identity_file_mode,
};
use support::jobs::{backend_entry, cancel, chat_request, job, new_job_id, run_job, wait_offer};
use support::{wait_until, watchdog};

const S5: Duration = Duration::from_secs(5);
const S10: Duration = Duration::from_secs(10);

/// A setup whose one backend is a fake llama-server offering `tiny`.
fn setup_with_backend(name: &str) -> (Setup, FakeBackend) {
    let fb = FakeBackend::start(Kind::LlamaCpp, &["tiny"]);
    let mut s = Setup::new(name);
    s.set("/backends", json!([backend_entry(&fb)]));
    (s, fb)
}

/// The agent still does its job: `tiny` is offered and a well-formed job completes.
fn serves_a_job(conn: &Conn) {
    wait_offer(conn, &["tiny"], S10);
    runs_a_job(conn);
}

/// A well-formed job completes (on a connection whose offer was already seen).
fn runs_a_job(conn: &Conn) {
    let id = new_job_id();
    let done = run_job(conn, &job(&id, "tiny", chat_request("still there?")));
    done.expect_done();
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// No line of the agent's output was forged or carries a raw escape: every line is
/// one the logger started (a timestamp or `[stdout]`), none holds a control character,
/// and none is long enough to be a hostile string logged whole.
fn assert_clean_log(agent: &Agent) {
    for line in agent.log_lines() {
        assert!(
            !has_control(&line),
            "raw control character in a log line: {line:?}"
        );
        assert!(
            line.starts_with("20") || line.starts_with("[stdout]"),
            "a line the logger did not start (forged by a newline?): {line:?}"
        );
        assert!(
            line.chars().count() < 2000,
            "a {}-char log line",
            line.chars().count()
        );
    }
}

/// Every string in the state file is free of control characters.
fn assert_clean_json(v: &Value, at: &str) {
    match v {
        Value::String(s) => assert!(!has_control(s), "{at}: {s:?}"),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| assert_clean_json(x, &format!("{at}[{i}]"))),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| assert_clean_json(x, &format!("{at}.{k}"))),
        _ => {}
    }
}

fn read_state(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

// -- (a) provider_id injection -------------------------------------------------------------

#[test]
fn a_provider_id_with_a_newline_never_reaches_the_identity_file() {
    let _w = watchdog(Duration::from_secs(30), "provider_id_injection");
    let (s, _fb) = setup_with_backend("pidinject");
    let agent = s.spawn();
    let conn = s.coord.accept(S5);
    // The identity was created before the agent dialled.
    let before = std::fs::read_to_string(&s.key_path).expect("identity created at start");
    let forged_secret = b64(&[9u8; 32]);
    let hostile = format!("p1\nsecret: {forged_secret}");
    conn.authenticate(Some(&hostile));
    serves_a_job(&conn);

    let after = std::fs::read_to_string(&s.key_path).unwrap();
    assert_eq!(after, before, "the identity file changed");
    let secrets: Vec<&str> = after.lines().filter(|l| l.starts_with("secret:")).collect();
    assert_eq!(secrets.len(), 1, "exactly one secret line:\n{after}");
    assert!(!after.contains(&forged_secret), "injected line:\n{after}");
    assert!(
        !after.contains("provider_id"),
        "the bad provider_id was written:\n{after}"
    );
    assert_eq!(parse_identity(&after).provider_id, None);
    assert!(
        agent.wait_for_log("ignoring the provider_id in auth_ok, \"p1\\nsecret: ", S5),
        "no warning showing the escaped value:\n{}",
        agent.logs()
    );
    assert!(agent.has_log("authenticated as (no provider_id)"));
    assert_clean_log(&agent);

    // A good provider_id on the next connection is saved, next to the same single secret.
    conn.drop_tcp();
    let conn2 = s.coord.accept(support::FIRST_RECONNECT);
    conn2.authenticate(Some("prov-good"));
    serves_a_job(&conn2);
    let text = std::fs::read_to_string(&s.key_path).unwrap();
    let id = parse_identity(&text);
    assert_eq!(id.provider_id.as_deref(), Some("prov-good"));
    assert_eq!(id.secret, parse_identity(&before).secret, "same key");
    assert_eq!(text.lines().filter(|l| l.starts_with("secret:")).count(), 1);
}

#[test]
fn an_identity_file_with_a_key_twice_is_refused_naming_the_line() {
    let _w = watchdog(Duration::from_secs(20), "duplicate_key_refused");
    let s = Setup::new("dupkey");
    // What usepod-agent's raw write of "p1\nsecret: …" leaves behind.
    let text = usepod_identity_text([5u8; 32], Some(&format!("p1\nsecret: {}", b64(&[9u8; 32]))));
    write_identity_file(&s.key_path, &text);
    let out = s.cli("run");
    assert!(!out.timed_out, "{}", out.describe());
    assert!(matches!(out.code, Some(c) if c != 0), "{}", out.describe());
    let path = s.key_path.display().to_string();
    assert!(
        out.stderr.contains(&path) && out.stderr.contains("duplicate key `secret` on line 7"),
        "{}",
        out.describe()
    );
    assert!(!out.stderr.contains(&b64(&[9u8; 32])), "a value was shown");
    assert_eq!(std::fs::read_to_string(&s.key_path).unwrap(), text);
    assert_eq!(
        s.coord.tcp_accepts(),
        0,
        "connected with a refused identity"
    );
}

// -- (b) signing oracle ----------------------------------------------------------------------

/// Sends a challenge with `nonce`; the agent must hang up without answering.
fn refuses_to_sign(conn: &Conn, nonce: &[u8]) {
    conn.send_json(&json!({"type": "auth_challenge", "nonce": B64.encode(nonce)}));
    if let Some(m) = conn.recv(Duration::from_secs(2)) {
        panic!("a {}-byte nonce was answered: {m:?}", nonce.len());
    }
    assert!(
        conn.wait_closed(Duration::from_secs(3)),
        "the agent kept the connection open after a {}-byte nonce",
        nonce.len()
    );
}

#[test]
fn nonces_outside_16_to_64_bytes_are_never_signed_and_the_agent_reconnects() {
    let _w = watchdog(Duration::from_secs(40), "signing_oracle");
    let (s, _fb) = setup_with_backend("oracle");
    let agent = s.spawn();
    let c1 = s.coord.accept(S5);
    refuses_to_sign(&c1, &[0x41; 4096]);
    assert!(
        agent.wait_for_log("nonce of 5464 base64 characters", S5),
        "{}",
        agent.logs()
    );
    // Pre-auth failures back off over [0, 4 s) after the first, then [4, 12 s) after it.
    let c2 = s.coord.accept(support::FIRST_RECONNECT);
    refuses_to_sign(&c2, &[0x42; 8]);
    assert!(
        agent.wait_for_log("nonce is 8 bytes, outside 16-64; not signed", S5),
        "{}",
        agent.logs()
    );
    assert!(agent.has_log("connection attempt 2 failed"));
    let c3 = s.coord.accept(Duration::from_secs(14));
    let auth = c3.authenticate(Some("prov-oracle"));
    assert_eq!(auth.nonce.len(), 32);
    serves_a_job(&c3);
    assert_clean_log(&agent);
}

// -- (c) log and state forging ---------------------------------------------------------------

#[test]
fn remote_text_cannot_forge_log_lines_or_state() {
    let _w = watchdog(Duration::from_secs(40), "log_forging");
    let (mut s, _fb) = setup_with_backend("forging");
    s.set("/status/interval_s", json!(0.1));
    let state_file = s.key_path.with_file_name("state.json");
    let agent = s.spawn();

    // auth_failed with a reason that would add lines and colour the terminal.
    let c1 = s.coord.accept(S5);
    c1.reject("denied\nINJECTED-REASON ERROR [usepod_edge] all good\x1b[31m red\r\nmore");
    let mut detail = String::new();
    let seen = wait_until(Duration::from_secs(3), || {
        let Some(st) = read_state(&state_file) else {
            return false;
        };
        detail = st["connection"]["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        st["connection"]["state"] == "reconnecting" && detail.contains("authentication refused")
    });
    assert!(
        seen,
        "no reconnecting state with the reason; last detail {detail:?}"
    );
    assert!(
        detail.contains(
            r#""denied\nINJECTED-REASON ERROR [usepod_edge] all good\x1b[31m red\r\nmore""#
        ),
        "{detail:?}"
    );
    assert!(
        agent.wait_for_log("authentication refused: \"denied\\nINJECTED-REASON", S5),
        "{}",
        agent.logs()
    );

    let c2 = s.coord.accept(support::FIRST_RECONNECT);
    c2.authenticate(Some("prov-forging"));
    wait_offer(&c2, &["tiny"], S10);

    // A 200 KB job_id with newlines and escapes: answered, shown short and escaped.
    let hostile_id = format!(
        "{}\nINJECTED-ID ERROR forged\x1b[31m\n{}",
        "j".repeat(20),
        "x\n".repeat(100_000)
    );
    assert!(hostile_id.len() > 200_000);
    c2.send_json(
        &json!({"type": "job", "job_id": hostile_id, "model_id": "tiny",
                         "request": chat_request("hi")}),
    );
    let answer = c2
        .recv_type("job_error", S5)
        .expect("a job_error for the malformed job");
    assert_eq!(
        answer.value["job_id"],
        hostile_id.as_str(),
        "id echoed whole"
    );
    assert_eq!(answer.value["error_code"], "internal");

    // More remote text that reaches log lines.
    c2.send_json(&cancel("cancel\nINJECTED-CANCEL\x1b[2J"));
    c2.send_json(&json!({"type": "evil\nINJECTED-TYPE\x1b[0m"}));
    c2.send_text("not json\nINJECTED-FRAME\x1b]0;title\x07");
    c2.send_json(
        &json!({"type": "job", "job_id": new_job_id(), "model_id": "tiny",
                         "request": chat_request("hi"), "deadline_ms": "soon\nINJECTED-PROBLEM"}),
    );
    c2.recv_type("job_error", S5)
        .expect("job_error for a bad deadline");
    // And the agent still serves.
    runs_a_job(&c2);

    let (_, line) = agent
        .wait_for_log_line("malformed job ", S5)
        .unwrap_or_else(|| panic!("no malformed job line:\n{}", agent.logs()));
    let shown = line
        .split_once("malformed job ")
        .and_then(|(_, rest)| rest.split_once(": job_id is not a UUID"))
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    assert!(
        shown.chars().count() <= 64,
        "{} chars: {shown:?}",
        shown.chars().count()
    );
    assert!(
        shown.starts_with(&format!("{}\\nINJECTED-ID", "j".repeat(20))),
        "{shown:?}"
    );
    assert!(
        shown.ends_with(&format!("…({} bytes)", hostile_id.len())),
        "{shown:?}"
    );
    // In the order the frames were sent: one reader thread logs them all.
    for needle in [
        "job_cancel for unknown or finished job cancel\\nINJECTED-CANCEL\\x1b[2J",
        "ignoring message of unknown type \"evil\\nINJECTED-TYPE\\x1b[0m\"",
        "\"not json\\nINJECTED-FRAME\\x1b]0;title\\x07\"",
        "deadline_ms is not a non-negative integer: \"soon\\nINJECTED-PROBLEM\"",
    ] {
        assert!(
            agent.wait_for_log(needle, S5),
            "no line with {needle:?}:\n{}",
            agent.logs()
        );
    }
    assert_clean_log(&agent);

    // The state file, once more after all that, holds no raw control character.
    let state = read_state(&state_file).expect("state file");
    assert_clean_json(&state, "state");
    assert_eq!(state["provider_id"], "prov-forging");
}

// -- (d) key file ownership and mode ---------------------------------------------------------

#[test]
fn a_key_file_others_can_read_stops_the_agent_naming_the_file_and_the_fix() {
    let _w = watchdog(Duration::from_secs(30), "key_file_mode");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        let s = Setup::new(&format!("keymode{mode:o}"));
        let text = usepod_identity_text([6u8; 32], Some("prov-mode"));
        write_identity_file_mode(&s.key_path, &text, mode);
        let path = s.key_path.display().to_string();
        for sub in ["run", "identity"] {
            let out = s.cli(sub);
            assert!(!out.timed_out, "{mode:o}/{sub}: {}", out.describe());
            assert!(
                matches!(out.code, Some(c) if c != 0),
                "{mode:o}/{sub}: {}",
                out.describe()
            );
            for needle in [
                format!("identity file {path} is not private"),
                format!("mode {mode:04o}"),
                format!("chmod 600 {path}"),
            ] {
                assert!(
                    out.stderr.contains(&needle),
                    "{mode:o}/{sub}: no {needle:?}\n{}",
                    out.describe()
                );
            }
            assert!(
                !out.stderr.contains(&b64(&[6u8; 32])),
                "the secret was shown"
            );
        }
        assert_eq!(std::fs::read_to_string(&s.key_path).unwrap(), text);
        assert_eq!(s.coord.tcp_accepts(), 0, "{mode:o}: connected anyway");
    }
}
