//! Heartbeats (docs/protocol.md, "heartbeat") and WebSocket pings: interval, fields and
//! types, answering the coordinator's pings, and dead-link detection on a frozen
//! connection.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::agent::Setup;
use support::coordinator::Timed;
use support::fake_backend::{FakeBackend, Fault, Kind};
use support::jobs::{backend_entry, chat_request, job, new_job_id, start_agent};
use support::{secs, watchdog};

const S5: Duration = Duration::from_secs(5);

/// Every field of a heartbeat with exactly the protocol's types; extra fields are allowed
/// (the coordinator tolerates them). An idle agent reports no queue, no error and, having
/// run no job, no latency.
fn check_heartbeat(hb: &Value) {
    let obj = hb.as_object().expect("heartbeat is an object");
    assert_eq!(hb["type"], "heartbeat");
    let u32_field = |k: &str| {
        let v = obj
            .get(k)
            .unwrap_or_else(|| panic!("heartbeat lacks `{k}`: {hb}"));
        let n = v
            .as_u64()
            .unwrap_or_else(|| panic!("heartbeat `{k}` must be an unsigned integer: {hb}"));
        assert!(n <= u32::MAX as u64, "`{k}` must fit u32: {hb}");
        n
    };
    let f64_field = |k: &str| {
        let v = obj
            .get(k)
            .unwrap_or_else(|| panic!("heartbeat lacks `{k}`: {hb}"));
        let x = v
            .as_f64()
            .unwrap_or_else(|| panic!("heartbeat `{k}` must be a number: {hb}"));
        assert!(
            x.is_finite() && x >= 0.0,
            "`{k}` must be finite and >= 0: {hb}"
        );
        x
    };
    let opt_string = |k: &str| {
        let v = obj
            .get(k)
            .unwrap_or_else(|| panic!("heartbeat lacks `{k}` (null when none): {hb}"));
        assert!(
            v.is_null() || v.is_string(),
            "`{k}` must be a string or null: {hb}"
        );
        v.clone()
    };
    assert_eq!(u32_field("queue_depth"), 0, "idle agent: queue_depth 0");
    f64_field("tokens_per_sec_p50");
    let p50 = u32_field("p50_latency_ms");
    let p95 = u32_field("p95_latency_ms");
    assert_eq!((p50, p95), (0, 0), "no job ran: no latency figures: {hb}");
    let er = f64_field("error_rate_60s");
    assert!(er <= 1.0, "error_rate_60s is a rate in [0, 1]: {hb}");
    assert_eq!(opt_string("last_error_at"), Value::Null, "no error yet");
    assert_eq!(opt_string("last_error_code"), Value::Null, "no error yet");
}

#[test]
fn heartbeats_start_one_interval_after_capabilities_and_repeat_with_protocol_fields() {
    let _w = watchdog(Duration::from_secs(15), "heartbeat_interval_and_fields");
    let mut s = Setup::new("heartbeat");
    s.set("/coordinator/heartbeat_interval_s", json!(0.5));
    let (_agent, conn, _) = s.spawn_and_authenticate(Some("prov-hb"));
    let caps = conn.expect_capabilities(S5);

    let mut beats: Vec<Timed> = Vec::new();
    while beats.len() < 4 {
        let m = conn
            .recv_timed(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("heartbeat {} did not arrive", beats.len() + 1));
        assert_eq!(m.ty(), "heartbeat", "unexpected message: {}", m.value);
        check_heartbeat(&m.value);
        beats.push(m);
    }
    let first = secs(beats[0].at - caps.at);
    assert!(
        (0.35..=1.0).contains(&first),
        "first heartbeat must come ~1 interval (0.5 s) after capabilities, came after {first:.3} s"
    );
    for w in beats.windows(2) {
        let gap = secs(w[1].at - w[0].at);
        assert!(
            (0.3..=0.9).contains(&gap),
            "heartbeats must be ~0.5 s apart, gap {gap:.3} s"
        );
    }
}

#[test]
fn heartbeat_latency_percentiles_are_those_of_the_jobs_run() {
    let _w = watchdog(Duration::from_secs(20), "heartbeat_percentiles");
    // The backend holds the first byte of the slow jobs back this long.
    const SLOW_MS: u64 = 600;
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    let mut setup = Setup::new("hbpercentiles");
    setup.set("/coordinator/heartbeat_interval_s", json!(0.5));
    let r = start_agent(setup, vec![backend_entry(&fb)], &[], &["m"]);
    // Nearest rank over 5 samples: p50 is the 3rd fastest, p95 the 5th. Three fast and two
    // slow jobs put p50 among the fast and p95 among the slow.
    for slow in [false, false, false, true, true] {
        let first_byte = Duration::from_millis(if slow { SLOW_MS } else { 0 });
        fb.set_fault(Fault::DelayHeaders(first_byte));
        r.run_job(&job(&new_job_id(), "m", chat_request("hi")))
            .expect_done();
    }
    // A job's figures are recorded before its job_done is queued, and heartbeats share
    // that queue. The first heartbeat after the last job_done may have been computed
    // before it; the second was computed after the first was queued, so it counts all 5.
    let mut hb = Value::Null;
    for _ in 0..2 {
        hb = conn_heartbeat(&r.conn);
    }
    let p50 = hb["p50_latency_ms"].as_u64().expect("p50_latency_ms");
    let p95 = hb["p95_latency_ms"].as_u64().expect("p95_latency_ms");
    assert!(
        p50 < SLOW_MS,
        "p50 must be a fast job's latency (< {SLOW_MS} ms): {hb}"
    );
    assert!(
        (SLOW_MS..SLOW_MS + 2000).contains(&p95),
        "p95 must be a slow job's latency ({SLOW_MS} ms + relay time): {hb}"
    );
    assert_eq!(hb["error_rate_60s"], 0.0, "every job succeeded: {hb}");
    assert_eq!(hb["queue_depth"], 0, "nothing waits: {hb}");
}

fn conn_heartbeat(conn: &support::coordinator::Conn) -> Value {
    conn.recv_type("heartbeat", Duration::from_secs(3))
        .expect("a heartbeat every 0.5 s")
        .value
}

#[test]
fn the_default_heartbeat_interval_is_not_shorter_than_the_protocols() {
    let _w = watchdog(Duration::from_secs(15), "heartbeat_default_interval");
    let mut s = Setup::new("hbdefault");
    s.config["coordinator"]
        .as_object_mut()
        .unwrap()
        .remove("heartbeat_interval_s");
    let (_agent, conn, _) = s.spawn_and_authenticate(Some("prov-hbd"));
    conn.expect_capabilities(S5);
    // Default 15 s: nothing within the first 3 s.
    if let Some(m) = conn.recv_timed(Duration::from_secs(3)) {
        panic!(
            "nothing expected 3 s into a 15 s heartbeat interval, got {}",
            m.value
        );
    }
}

#[test]
fn the_agent_pings_at_its_ping_interval_and_a_live_link_stays_up() {
    let _w = watchdog(Duration::from_secs(15), "pings_and_live_link");
    let mut s = Setup::new("pings");
    s.set("/coordinator/ping_interval_s", json!(0.5));
    s.set("/coordinator/heartbeat_interval_s", json!(1));
    let (agent, conn, _) = s.spawn_and_authenticate(Some("prov-ping"));
    conn.expect_capabilities(S5);
    let t0 = Instant::now();
    // The harness answers every ping: the link is alive for 3.5 s = 7 ping intervals.
    std::thread::sleep(Duration::from_millis(3500));
    let pings = conn.pings_seen();
    assert!(
        (4..=10).contains(&pings),
        "expected ~7 pings at 0.5 s over {:.1} s, saw {pings}",
        secs(t0.elapsed())
    );
    assert!(
        conn.ended().is_none(),
        "a link that answers pings was closed: {:?}",
        conn.ended()
    );
    assert!(
        s.coord.try_accept(Duration::from_millis(10)).is_none(),
        "the agent reconnected although the link was alive"
    );
    assert!(!agent.has_log("dead link"), "live link declared dead");
    // Heartbeats still flow on the same connection.
    assert!(conn
        .recv_type("heartbeat", Duration::from_secs(2))
        .is_some());
}

#[test]
fn a_frozen_link_is_declared_dead_within_three_ping_intervals_and_reconnected() {
    let _w = watchdog(Duration::from_secs(15), "dead_link_detection");
    let mut s = Setup::new("deadlink");
    s.set("/coordinator/ping_interval_s", json!(0.5));
    let (agent, conn, _) = s.spawn_and_authenticate(Some("prov-dead"));
    conn.expect_capabilities(S5);
    assert!(
        support::wait_until(Duration::from_secs(3), || conn.pings_seen() >= 1),
        "no ping before the freeze"
    );
    let frozen_at = conn.stop_reading();
    // ~3 intervals (1.5 s) to notice + the first reconnect (< 4 s) + a dial.
    let next = s.coord.try_accept(Duration::from_secs(8));
    let Some(next) = next else {
        panic!(
            "no new connection within 8 s of freezing the link (dead link not detected)\n{}",
            agent.logs()
        );
    };
    let after = secs(next.accepted_at - frozen_at);
    assert!(
        after >= 0.5,
        "reconnected {after:.3} s after the freeze: too early for ping-based detection"
    );
    assert!(agent.has_log("dead link"), "no `dead link` log line");
    // The new connection is a full session.
    next.authenticate(Some("prov-dead"));
    next.expect_capabilities(S5);
}

#[test]
fn the_agent_answers_the_coordinators_pings() {
    let _w = watchdog(Duration::from_secs(15), "answers_pings");
    let s = Setup::new("pongs");
    let (_agent, conn, _) = s.spawn_and_authenticate(Some("prov-pong"));
    conn.expect_capabilities(S5);
    for i in 0..3u8 {
        let payload = [b'p', i, 0xff];
        conn.send_ping(&payload);
        assert!(
            conn.wait_pong(&payload, Duration::from_secs(2)),
            "no pong with payload {payload:?}"
        );
    }
}
