//! SIGTERM/SIGINT drain: running jobs finish (or are stopped at the drain
//! timeout), new ones are refused, the session closes with 1001, exit 0.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::agent::{Agent, Setup};
use support::coordinator::Conn;
use support::fake_backend::{FakeBackend, Kind};
use support::watchdog;

const MODEL: &str = "drain-model";

fn start(name: &str, drain_s: f64, events: usize) -> (Setup, FakeBackend, Agent, Conn) {
    let fake = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    fake.set_reply(&[" tick"], (5, events as u64));
    fake.set_stream_len(events, Duration::from_millis(100));
    let mut s = Setup::new(name);
    s.set("/backends", json!([{"kind":"llamacpp","url":fake.url()}]));
    s.set("/limits/drain_timeout_s", json!(drain_s));
    let (agent, conn, _) = s.spawn_and_authenticate(Some("prov-drain"));
    let mut caps = conn.expect_capabilities(Duration::from_secs(5)).value;
    let t = Instant::now();
    while !caps.to_string().contains(MODEL) && t.elapsed() < Duration::from_secs(10) {
        if let Some(c) = conn.recv_type("capabilities", Duration::from_millis(300)) {
            caps = c.value;
        }
    }
    assert!(caps.to_string().contains(MODEL), "{caps}");
    (s, fake, agent, conn)
}

fn job(id: &str) -> Value {
    json!({"type":"job","job_id":id,"model_id":MODEL,"request":{"messages":[]},"deadline_ms":60000})
}

/// Frames until the agent's Close: returns (types in order, job_ids with them).
fn frames_until_close(conn: &Conn, within: Duration) -> Vec<Value> {
    let mut seen = Vec::new();
    let end = Instant::now() + within;
    while Instant::now() < end && conn.peer_close().is_none() {
        if let Some(m) = conn.recv_json(Duration::from_millis(100)) {
            seen.push(m);
        }
    }
    while let Some(m) = conn.recv_json(Duration::from_millis(50)) {
        seen.push(m);
    }
    seen
}

#[test]
fn a_job_in_flight_at_sigterm_completes_before_the_close_and_the_agent_exits_0() {
    let _w = watchdog(Duration::from_secs(40), "drain completes");
    let (_s, _fake, mut agent, conn) = start("drain-complete", 10.0, 10);
    let id = "0d7a1f00-0000-4000-8000-000000000001";
    conn.send_json(&job(id));
    assert!(conn
        .recv_type("job_chunk", Duration::from_secs(5))
        .is_some());
    agent.signal("TERM");
    assert!(
        agent.wait_for_log("shutting down", Duration::from_secs(5)),
        "{}",
        agent.logs()
    );
    // A job arriving during the drain is refused at once.
    let late = "0d7a1f00-0000-4000-8000-000000000002";
    conn.send_json(&job(late));
    let seen = frames_until_close(&conn, Duration::from_secs(15));
    let done_at = seen
        .iter()
        .position(|m| m["type"] == "job_done" && m["job_id"] == id)
        .unwrap_or_else(|| {
            panic!(
                "no job_done for the running job: {seen:?}\n{}",
                agent.logs()
            )
        });
    assert!(
        seen[done_at + 1..].iter().all(|m| m["job_id"] != id),
        "{seen:?}"
    );
    let refusal = seen
        .iter()
        .find(|m| m["job_id"] == late)
        .expect("the late job is answered");
    assert_eq!(refusal["error_code"], "out_of_capacity", "{refusal}");
    assert_eq!(
        conn.peer_close(),
        Some(Some((1001, "agent shutting down".to_string()))),
        "the agent closes with 1001"
    );
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent exits");
    assert_eq!(status.code(), Some(0), "{}", agent.logs());
}

#[test]
fn a_job_outliving_the_drain_timeout_has_its_backend_connection_closed() {
    let _w = watchdog(Duration::from_secs(40), "drain timeout");
    let (_s, fake, mut agent, conn) = start("drain-timeout", 0.5, 300);
    let id = "0d7a1f00-0000-4000-8000-000000000003";
    conn.send_json(&job(id));
    assert!(conn
        .recv_type("job_chunk", Duration::from_secs(5))
        .is_some());
    let signalled = Instant::now();
    agent.signal("INT");
    let closed = fake
        .wait_client_closed(Duration::from_secs(5))
        .expect("backend connection closed");
    let _ = closed;
    let after = signalled.elapsed();
    assert!(
        after < Duration::from_secs(3),
        "backend closed only after {after:?}"
    );
    let seen = frames_until_close(&conn, Duration::from_secs(10));
    assert!(
        seen.iter().all(|m| m["type"] != "job_done"),
        "the stopped job must not report done: {seen:?}"
    );
    assert_eq!(
        conn.peer_close().and_then(|c| c).map(|(c, _)| c),
        Some(1001)
    );
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent exits");
    assert_eq!(status.code(), Some(0), "{}", agent.logs());
}

#[test]
fn a_second_signal_exits_at_once() {
    let _w = watchdog(Duration::from_secs(40), "second signal");
    let (_s, _fake, mut agent, conn) = start("drain-twice", 30.0, 300);
    conn.send_json(&job("0d7a1f00-0000-4000-8000-000000000004"));
    assert!(conn
        .recv_type("job_chunk", Duration::from_secs(5))
        .is_some());
    agent.signal("TERM");
    assert!(agent.wait_for_log("shutting down", Duration::from_secs(5)));
    let t = Instant::now();
    agent.signal("TERM");
    let status = agent
        .wait_exit(Duration::from_secs(5))
        .expect("exits at once");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_ne!(
        status.code(),
        Some(0),
        "an interrupted drain is not a clean exit"
    );
}
