//! Coordinator faults (issue 5, "Fault injection: coordinator"): the agent keeps serving
//! or reconnects, never panics, never loses its identity. Already covered elsewhere, not
//! repeated here:
//!
//! - TCP drop mid-job with one job (backend closed < 1 s, slot free on the next session):
//!   `job_cancel_and_deadline::coordinator_disconnect_mid_job_closes_the_backend_within_a_second`
//!   (here: the same with four jobs at once).
//! - a few junk frames of each kind: `inbound_frames.rs` (here: 1000 in a row, mixed).
//! - 20 MiB frame, 32 MiB in fragments: `inbound_frames.rs` (here: 64 MiB, with memory
//!   and identity checks).
//! - a frozen link declared dead: `heartbeat_and_ping::a_frozen_link_is_declared_dead_within_three_ping_intervals_and_reconnected`
//!   (here: while four jobs push chunks at it, with the agent's memory watched).

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::agent::{Agent, Setup};
use support::coordinator::Conn;
use support::fake_backend::{FakeBackend, Kind};
use support::jobs::{
    backend_entry, chat_request, collect, job, new_job_id, offered_ids, start_agent, wait_offer,
    Running, S10, S5,
};
use support::{wait_until, watchdog};

/// A field of /proc/PID/status in kB (VmRSS, VmHWM) or as a count (Threads).
fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn assert_alive_no_panic(agent: &mut Agent) {
    assert!(agent.is_running(), "the agent exited:\n{}", agent.logs());
    let logs = agent.logs();
    assert!(!logs.contains("panicked"), "the agent panicked:\n{logs}");
}

/// Accept the agent's next connection, authenticate it with the same provider_id, check
/// it is the same key as before, and wait until it offers `model` again.
fn reconnected(r: &Running, pubkey: &[u8; 32], model: &str, within: Duration) -> Conn {
    let conn = r.setup.coord.accept(within);
    let auth = conn.authenticate(Some("prov-jobs"));
    assert_eq!(&auth.pubkey, pubkey, "the agent came back with another key");
    assert_eq!(
        auth.enrollment_code, None,
        "an enrolled agent never sends its enrollment code again"
    );
    let caps = conn.expect_capabilities(S5).value;
    if !offered_ids(&caps).iter().any(|m| m == model) {
        wait_offer(&conn, &[model], S5);
    }
    conn
}

fn agent(name: &str, fb: &FakeBackend, model: &str, max_concurrent: u32) -> (Running, [u8; 32]) {
    let mut setup = Setup::new(name);
    setup.set("/limits/max_concurrent", json!(max_concurrent));
    setup.set("/coordinator/enrollment_code", json!("ENROLL-ONCE"));
    let r = start_agent(setup, vec![backend_entry(fb)], &[], &[model]);
    let text = std::fs::read_to_string(&r.setup.key_path).expect("identity file");
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("public: "))
        .expect("public line");
    let pk = support::identity::parse_identity(&text).public;
    assert_eq!(support::identity::b64(&pk), public);
    (r, pk)
}

#[test]
fn a_tcp_drop_with_four_jobs_running_closes_every_backend_request_within_a_second() {
    let _w = watchdog(Duration::from_secs(20), "drop_four_jobs");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    fb.set_stream_len(400, Duration::from_millis(25));
    let (mut r, pk) = agent("dropfour", &fb, "m", 4);
    let ids: Vec<String> = (0..4).map(|_| new_job_id()).collect();
    for id in &ids {
        r.conn.send_json(&job(id, "m", chat_request("long")));
    }
    assert!(
        wait_until(S5, || fb.open_streams() == 4),
        "four jobs should be streaming (open: {})",
        fb.open_streams()
    );
    // Wait until every job has relayed a chunk (all four are mid-stream), then cut the
    // link without a Close.
    let mut streaming: Vec<&String> = Vec::new();
    while streaming.len() < ids.len() {
        let Some(m) = r.conn.recv_json(S5) else {
            panic!("only jobs {streaming:?} relayed a chunk");
        };
        if m["type"] == "job_chunk" {
            if let Some(id) = ids.iter().find(|id| m["job_id"] == id.as_str()) {
                if !streaming.contains(&id) {
                    streaming.push(id);
                }
            }
        }
    }
    r.conn.drop_tcp();
    for i in 0..4 {
        let closed = fb
            .wait_client_closed(Duration::from_secs(2))
            .unwrap_or_else(|| panic!("backend request {i} outlived the session"));
        assert!(
            closed < Duration::from_secs(1),
            "backend request {i} closed {closed:?} after the drop"
        );
    }
    assert!(wait_until(S5, || fb.open_streams() == 0));
    // Back, same key, all four slots free.
    let conn = reconnected(&r, &pk, "m", support::FIRST_RECONNECT);
    fb.set_stream_len(3, Duration::ZERO);
    let ids: Vec<String> = (0..4).map(|_| new_job_id()).collect();
    for id in &ids {
        conn.send_json(&job(id, "m", chat_request("again")));
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let res = collect(&conn, &refs, S10);
    for id in &refs {
        res[*id].expect_done();
    }
    assert_alive_no_panic(&mut r.agent);
}

#[test]
fn a_coordinator_that_stops_reading_pushes_back_on_jobs_without_growing_memory() {
    let _w = watchdog(Duration::from_secs(25), "stop_reading_memory");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    // Four endless, fast streams of 4 KiB events: 400 MB each if nothing pushed back.
    let word = "x".repeat(4096);
    fb.set_reply(&[word.as_str()], (1, 1));
    fb.set_stream_len(100_000, Duration::ZERO);
    let mut setup = Setup::new("stopreading");
    setup.set("/limits/max_concurrent", json!(4));
    setup.set("/coordinator/ping_interval_s", json!(1));
    let r = start_agent(setup, vec![backend_entry(&fb)], &[], &["m"]);
    let pid = r.agent.pid();
    // Warm up: one short job so that every buffer the relay uses exists.
    fb.set_stream_len(50, Duration::ZERO);
    r.run_job(&job(&new_job_id(), "m", chat_request("warm")))
        .expect_done();
    fb.set_stream_len(100_000, Duration::ZERO);
    let rss_before = proc_status(pid, "VmRSS");

    let ids: Vec<String> = (0..4).map(|_| new_job_id()).collect();
    for id in &ids {
        r.conn.send_json(&job(id, "m", chat_request("flood")));
    }
    assert!(wait_until(S5, || fb.open_streams() == 4));
    let frozen_at = r.conn.stop_reading();
    // Watch memory until the agent gives the link up (3 ping intervals of silence).
    let mut peak = 0;
    while Instant::now() < frozen_at + Duration::from_secs(5) && fb.open_streams() > 0 {
        peak = peak.max(proc_status(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let growth_kb = peak.saturating_sub(rss_before);
    eprintln!("stop_reading: RSS before {rss_before} kB, peak while frozen {peak} kB");
    assert!(
        growth_kb < 8 * 1024,
        "RSS grew by {growth_kb} kB while the coordinator did not read (before {rss_before} kB)"
    );
    // The dead link is noticed and every backend request is closed.
    assert!(
        wait_until(Duration::from_secs(6), || fb.open_streams() == 0),
        "backend streams still open {:?} after the freeze",
        frozen_at.elapsed()
    );
    // And the agent comes back and serves.
    let conn = r.setup.coord.accept(Duration::from_secs(8));
    conn.authenticate(Some("prov-jobs"));
    let caps = conn.expect_capabilities(S5).value;
    if !offered_ids(&caps).iter().any(|m| m == "m") {
        wait_offer(&conn, &["m"], S5);
    }
    fb.set_stream_len(3, Duration::ZERO);
    let id = new_job_id();
    conn.send_json(&job(&id, "m", chat_request("after")));
    collect(&conn, &[&id], S10)[id.as_str()].expect_done();
    let mut agent = r.agent;
    assert_alive_no_panic(&mut agent);
}

#[test]
fn a_thousand_junk_frames_in_a_row_leave_the_session_serving() {
    let _w = watchdog(Duration::from_secs(20), "junk_1000");
    let fb = FakeBackend::start(Kind::Ollama, &["m"]);
    let (mut r, _) = agent("junk", &fb, "m", 2);
    // A job streams through the whole barrage (an event every ~1 ms) and must come out
    // intact.
    fb.set_stream_len(3000, Duration::from_millis(1));
    let streaming = new_job_id();
    r.conn
        .send_json(&job(&streaming, "m", chat_request("through the junk")));
    let mut answerable = Vec::new();
    for i in 0..1000usize {
        match i % 10 {
            0 => {
                r.conn.send_text("{\"type\":\"job\",\"job_id\":");
            }
            1 => {
                r.conn.send_text("\u{0}\u{1}\u{fffd} not json");
            }
            2 => {
                r.conn.send_json(&json!([i, "job"]));
            }
            3 => {
                r.conn
                    .send_json(&json!({"type": format!("x_{i}"), "job_id": new_job_id()}));
            }
            4 => {
                r.conn.send_binary(&[0xff, 0, (i % 256) as u8]);
            }
            5 => {
                r.conn
                    .send_json(&json!({"type": "job_cancel", "job_id": new_job_id()}));
            }
            6 => {
                r.conn.send_ping(b"junk");
            }
            7 => {
                // A malformed job with a readable job_id: answered with job_error.
                let id = new_job_id();
                r.conn
                    .send_json(&json!({"type": "job", "job_id": id, "model_id": 7}));
                answerable.push(id);
            }
            8 => {
                // Not a UUID, but readable: answered with job_error too.
                let id = format!("not-a-uuid-{i}");
                r.conn
                    .send_json(&json!({"type": "job", "job_id": id, "model_id": "m",
                            "request": {"messages": []}}));
                answerable.push(id);
            }
            _ => {
                r.conn
                    .send_json(&json!({"type": "config_update", "n": i, "deep": [[[[{}]]]]}));
            }
        }
    }
    let mut refs: Vec<&str> = answerable.iter().map(String::as_str).collect();
    refs.push(&streaming);
    let res = collect(&r.conn, &refs, S10);
    for id in &refs[..refs.len() - 1] {
        res[*id].expect_error("internal");
    }
    let through = &res[streaming.as_str()];
    through.expect_done();
    through.assert_chunks_on_event_boundaries();
    // 3000 content events + role + finish + usage + [DONE].
    assert_eq!(through.events().len(), 3004, "events lost or added");
    fb.set_stream_len(3, Duration::ZERO);
    // Same connection, still serving.
    r.run_job(&job(&new_job_id(), "m", chat_request("real")))
        .expect_done();
    assert!(r.conn.ended().is_none(), "the connection ended");
    assert!(
        r.setup
            .coord
            .try_accept(Duration::from_millis(10))
            .is_none(),
        "the agent reconnected"
    );
    assert_alive_no_panic(&mut r.agent);
}

#[test]
fn a_64_mib_frame_costs_the_connection_only_not_memory_nor_identity() {
    let _w = watchdog(Duration::from_secs(25), "frame_64mib");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    let (mut r, pk) = agent("frame64", &fb, "m", 2);
    let before = std::fs::read(&r.setup.key_path).unwrap();
    let pid = r.agent.pid();
    let pad = "a".repeat(64 << 20);
    r.conn
        .send_text(&format!("{{\"type\":\"config_update\",\"pad\":\"{pad}\"}}"));
    drop(pad);
    assert!(
        r.conn.wait_closed(Duration::from_secs(10)),
        "the agent kept the connection after a 64 MiB frame"
    );
    let hwm = proc_status(pid, "VmHWM");
    assert!(
        hwm < 48 * 1024,
        "the agent's peak RSS reached {hwm} kB: it buffered the oversized frame"
    );
    let conn = reconnected(&r, &pk, "m", support::FIRST_RECONNECT);
    let id = new_job_id();
    conn.send_json(&job(&id, "m", chat_request("after")));
    collect(&conn, &[&id], S10)[id.as_str()].expect_done();
    assert_eq!(
        std::fs::read(&r.setup.key_path).unwrap(),
        before,
        "identity file changed"
    );
    assert_alive_no_panic(&mut r.agent);
}

#[test]
fn a_close_in_the_middle_of_the_handshake_is_survived_with_the_same_identity() {
    // Three pre-auth failures: the fourth attempt comes within 28 s of the first failure.
    let _w = watchdog(Duration::from_secs(45), "close_mid_handshake");
    let mut s = Setup::new("closehs");
    s.set("/coordinator/enrollment_code", json!("CODE-1"));
    let mut agent = s.spawn();
    // 1: Close right after the challenge, before the agent's answer is read.
    let c1 = s.coord.accept(S5);
    c1.challenge();
    c1.send_close(1000, "not now");
    assert!(
        c1.wait_closed(S5),
        "the agent did not end the first connection"
    );
    // Pre-auth retries fall in windows laid end to end from this first failure:
    // [0, 4), [4, 12), [12, 28) s (src/reconnect.rs), each plus a dial.
    let failed_at = Instant::now();
    let within = |end_s: u64| {
        (failed_at + Duration::from_secs(end_s + 2)).saturating_duration_since(Instant::now())
    };
    let before = std::fs::read(&s.key_path).expect("identity created at start");
    // 2: the response verifies, then a Close instead of auth_ok.
    let c2 = s.coord.accept(within(4));
    let a2 = c2.challenge_and_verify();
    c2.send_close(1001, "drain:deploy");
    assert!(c2.wait_closed(S5));
    // 3: a Close before any challenge.
    let c3 = s.coord.accept(within(12));
    c3.send_close_bare();
    assert!(c3.wait_closed(S5));
    // 4: a normal session.
    let c4 = s.coord.accept(within(28));
    let a4 = c4.authenticate(None);
    c4.expect_capabilities(S5);
    assert_eq!(a2.pubkey, a4.pubkey, "the key changed across handshakes");
    assert_eq!(
        a4.enrollment_code.as_deref(),
        Some("CODE-1"),
        "still unenrolled: the code is still sent"
    );
    assert_eq!(
        std::fs::read(&s.key_path).unwrap(),
        before,
        "the identity file changed"
    );
    assert_alive_no_panic(&mut agent);
}

#[test]
fn a_job_storm_of_ten_times_capacity_admits_exactly_capacity_and_answers_every_job() {
    let _w = watchdog(Duration::from_secs(20), "job_storm");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    // 2 s per job: the storm is sent long before any admitted job can finish.
    fb.set_stream_len(10, Duration::from_millis(200));
    let (mut r, _) = agent("storm", &fb, "m", 4);
    // Watch the backend: never more than 4 requests at once.
    let max_open = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    for round in 0..2 {
        let ids: Vec<String> = (0..40).map(|_| new_job_id()).collect();
        std::thread::scope(|scope| {
            let (max_open, stop_w, fb) = (max_open.clone(), stop.clone(), &fb);
            scope.spawn(move || {
                while !stop_w.load(Ordering::SeqCst) {
                    max_open.fetch_max(fb.open_streams(), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            for id in &ids {
                r.conn.send_json(&job(id, "m", chat_request("storm")));
            }
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let res = collect(&r.conn, &refs, S10);
            stop.store(true, Ordering::SeqCst);
            let done = refs.iter().filter(|i| res[**i].is_done()).count();
            let refused = refs
                .iter()
                .filter(|i| res[**i].error_code() == Some("out_of_capacity"))
                .count();
            assert_eq!(
                (done, refused),
                (4, 36),
                "round {round}: 40 jobs at max_concurrent 4 sent well within one job's 2 s \
                 (done, out_of_capacity)"
            );
        });
        stop.store(false, Ordering::SeqCst);
        assert!(wait_until(S5, || fb.open_streams() == 0));
    }
    assert!(
        max_open.load(Ordering::SeqCst) <= 4,
        "the backend saw {} requests at once",
        max_open.load(Ordering::SeqCst)
    );
    assert_eq!(fb.inference_requests().len(), 8);
    assert!(r.conn.ended().is_none());
    assert_alive_no_panic(&mut r.agent);
}
