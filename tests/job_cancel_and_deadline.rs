//! Stopping a running job: `job_cancel`, the job's `deadline_ms`, and the end of the
//! coordinator session all close the backend connection at once (asserted from the
//! backend's side), free the slot (max_concurrent 1: the next job runs), and a cancelled
//! job sends nothing more.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::agent::Setup;
use support::fake_backend::{FakeBackend, Fault, Kind};
use support::jobs::{
    assert_no_frame_for, backend_entry, cancel, chat_request, collect, job, new_job_id,
    offered_ids, start_agent, wait_offer, Running, S10, S5,
};
use support::{wait_until, watchdog};

/// Cancel latency bound, from sending job_cancel to the backend seeing its client go away.
const CANCEL_CLOSE: Duration = Duration::from_millis(500);

fn one_slot(name: &str, fb: &FakeBackend, model: &str) -> Running {
    let mut setup = Setup::new(name);
    setup.set("/limits/max_concurrent", json!(1));
    start_agent(setup, vec![backend_entry(fb)], &[], &[model])
}

/// The job frame with its deadline.
fn job_with_deadline(id: &str, model: &str, deadline_ms: u64) -> serde_json::Value {
    let mut j = job(id, model, chat_request("hi"));
    j["deadline_ms"] = json!(deadline_ms);
    j
}

/// Wait for the first job_chunk of `id` (frames of other types skipped).
fn first_chunk(r: &Running, id: &str) {
    let deadline = Instant::now() + S5;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let t = r
            .conn
            .recv_timed(left)
            .unwrap_or_else(|| panic!("no job_chunk for {id} within 5 s"));
        if t.value["job_id"] == id {
            assert_eq!(
                t.ty(),
                "job_chunk",
                "expected the job to be streaming, got {}",
                t.value
            );
            return;
        }
    }
}

/// A short, normal job now succeeds: the slot is free and nothing of the old job arrives
/// while it runs.
fn next_job_succeeds_and_old_is_silent(r: &Running, fb: &FakeBackend, old: &str) {
    fb.set_fault(Fault::None);
    fb.set_stream_len(3, Duration::ZERO);
    let id = new_job_id();
    r.conn.send_json(&job(&id, "m", chat_request("next")));
    // `collect` panics on any frame of `old`, which is not among the ids it expects.
    let deadline = Instant::now() + S10;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let t = r
            .conn
            .recv_timed(left)
            .unwrap_or_else(|| panic!("no terminal frame for the next job {id}"));
        let jid = t.value["job_id"].as_str().unwrap_or("");
        assert_ne!(
            jid, old,
            "a frame for the stopped job {old} arrived: {}",
            t.value
        );
        if jid == id && t.ty() != "job_chunk" {
            assert_eq!(
                t.ty(),
                "job_done",
                "the next job (max_concurrent 1) must run: {}",
                t.value
            );
            break;
        }
    }
    assert_no_frame_for(&r.conn, old, Duration::from_millis(200));
}

#[test]
fn cancel_mid_stream_closes_the_backend_at_once_and_sends_nothing_more() {
    let _w = watchdog(Duration::from_secs(15), "cancel_mid_stream");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    // 10 s of events, 50 ms apart.
    fb.set_stream_len(200, Duration::from_millis(50));
    let r = one_slot("cancel", &fb, "m");

    // Unknown ids are ignored.
    r.conn.send_json(&cancel(&new_job_id()));

    let id = new_job_id();
    r.conn.send_json(&job(&id, "m", chat_request("hi")));
    first_chunk(&r, &id);
    r.conn.send_json(&cancel(&id));
    let closed = fb.wait_client_closed(Duration::from_secs(3));
    let closed = closed.expect("the backend never saw its client go away after job_cancel");
    assert!(
        closed < CANCEL_CLOSE,
        "backend connection closed {closed:?} after job_cancel (bound {CANCEL_CLOSE:?})"
    );
    assert!(wait_until(S5, || fb.open_streams() == 0));
    next_job_succeeds_and_old_is_silent(&r, &fb, &id);
    // A cancel for the finished job is ignored too.
    r.conn.send_json(&cancel(&id));
    let again = new_job_id();
    r.run_job(&job(&again, "m", chat_request("hi")))
        .expect_done();
}

#[test]
fn cancel_while_the_backend_has_not_answered_closes_it_too() {
    let _w = watchdog(Duration::from_secs(15), "cancel_before_headers");
    let fb = FakeBackend::start(Kind::Ollama, &["m"]);
    fb.set_fault(Fault::HangBeforeHeaders);
    let r = one_slot("cancelhdr", &fb, "m");
    let id = new_job_id();
    r.conn.send_json(&job(&id, "m", chat_request("hi")));
    assert!(
        wait_until(S5, || fb.open_streams() == 1),
        "the job never reached the backend"
    );
    r.conn.send_json(&cancel(&id));
    let closed = fb
        .wait_client_closed(Duration::from_secs(3))
        .expect("the backend never saw its client go away after job_cancel");
    assert!(
        closed < CANCEL_CLOSE,
        "backend connection closed {closed:?} after job_cancel (bound {CANCEL_CLOSE:?})"
    );
    next_job_succeeds_and_old_is_silent(&r, &fb, &id);
}

#[test]
fn cancel_racing_completion_never_leaks_or_double_frees_a_slot() {
    let _w = watchdog(Duration::from_secs(15), "cancel_race");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    fb.set_stream_len(2, Duration::ZERO);
    let r = one_slot("race", &fb, "m");
    for i in 0..15u64 {
        let id = new_job_id();
        r.conn.send_json(&job(&id, "m", chat_request("hi")));
        if i % 3 == 1 {
            // A little later, so some cancels land mid-stream or after the end.
            std::thread::sleep(Duration::from_millis(2));
        }
        r.conn.send_json(&cancel(&id));
        // The next job must be admitted: if the cancelled job's slot leaked it would be
        // refused with out_of_capacity. Frames of the cancelled job may precede the
        // cancel (job_done when it won the race) but never follow a terminal frame.
        let next = new_job_id();
        r.conn.send_json(&job(&next, "m", chat_request("next")));
        let deadline = Instant::now() + S5;
        let mut old_terminal = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let t = r
                .conn
                .recv_timed(left)
                .unwrap_or_else(|| panic!("round {i}: no terminal frame for {next}"));
            let jid = t.value["job_id"].as_str().unwrap_or("");
            if jid == id {
                assert!(
                    !old_terminal,
                    "round {i}: frame after the terminal: {}",
                    t.value
                );
                if t.ty() != "job_chunk" {
                    assert_eq!(t.ty(), "job_done", "round {i}: {}", t.value);
                    old_terminal = true;
                }
            } else if jid == next && t.ty() != "job_chunk" {
                // A cancelled job gives its slot back at once: the next one is never
                // refused, whichever side of the race it landed on.
                assert_eq!(
                    t.ty(),
                    "job_done",
                    "round {i}: the job after a cancel was not run: {}",
                    t.value
                );
                break;
            }
        }
    }
    // Still exactly one slot: two at once → one refused (a double free would admit both).
    fb.set_stream_len(5, Duration::from_millis(60));
    let a = new_job_id();
    let b = new_job_id();
    r.conn.send_json(&job(&a, "m", chat_request("a")));
    r.conn.send_json(&job(&b, "m", chat_request("b")));
    let res = collect(&r.conn, &[&a, &b], S10);
    let refused = [&a, &b]
        .iter()
        .filter(|x| res[x.as_str()].error_code() == Some("out_of_capacity"))
        .count();
    assert_eq!(
        refused, 1,
        "max_concurrent 1 after many cancels: exactly one of two simultaneous jobs refused"
    );
}

#[test]
fn deadline_ends_a_streaming_job_with_backend_timeout_on_time() {
    let _w = watchdog(Duration::from_secs(15), "deadline_mid_stream");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    fb.set_stream_len(200, Duration::from_millis(50));
    let r = one_slot("deadline", &fb, "m");
    let id = new_job_id();
    let sent = r.conn.send_json(&job_with_deadline(&id, "m", 800));
    let res = collect(&r.conn, &[&id], S5).remove(id.as_str()).unwrap();
    let e = res.expect_error("backend_timeout");
    let took = res.terminal_at - sent;
    assert!(
        took >= Duration::from_millis(790),
        "ended {took:?} after sending, before its 800 ms deadline: {e}"
    );
    assert!(
        took <= Duration::from_millis(800 + 100 + 150),
        "deadline_ms 800 ended after {took:?} (bound: deadline + 100 ms + 150 ms slack)"
    );
    assert!(!res.chunks.is_empty(), "it was streaming");
    res.assert_chunks_on_event_boundaries();
    let streamed = res
        .chunks
        .iter()
        .filter(|(_, c)| String::from_utf8_lossy(c).contains("\"content\":\""))
        .count() as u64;
    let emitted = e["tokens_emitted"].as_u64().unwrap();
    assert!(
        emitted >= 1 && emitted <= streamed.max(1) + 1,
        "tokens_emitted counts output tokens (~{streamed} content events), got {emitted}"
    );
    let gone = fb
        .wait_client_closed(Duration::from_secs(1))
        .expect("the backend request is closed at the deadline");
    assert!(
        gone < Duration::from_millis(300),
        "{gone:?} after job_error"
    );
    next_job_succeeds_and_old_is_silent(&r, &fb, &id);
}

#[test]
fn deadline_before_the_backend_answers_is_backend_timeout_on_time() {
    let _w = watchdog(Duration::from_secs(15), "deadline_before_headers");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    fb.set_fault(Fault::HangBeforeHeaders);
    let r = one_slot("deadlinehdr", &fb, "m");
    let id = new_job_id();
    let sent = r.conn.send_json(&job_with_deadline(&id, "m", 600));
    let res = collect(&r.conn, &[&id], S5).remove(id.as_str()).unwrap();
    let e = res.expect_error("backend_timeout");
    assert_eq!(e["tokens_emitted"], 0);
    let took = res.terminal_at - sent;
    assert!(
        took >= Duration::from_millis(590) && took <= Duration::from_millis(600 + 100 + 150),
        "deadline_ms 600 ended after {took:?}"
    );
    assert!(fb.wait_client_closed(Duration::from_secs(1)).is_some());
    next_job_succeeds_and_old_is_silent(&r, &fb, &id);
}

#[test]
fn a_deadline_above_u32_max_is_not_truncated() {
    let _w = watchdog(Duration::from_secs(15), "deadline_u64");
    let fb = FakeBackend::start(Kind::LmStudio, &["m"]);
    // 300 ms of streaming: a deadline truncated to 5 ms would time out.
    fb.set_stream_len(6, Duration::from_millis(50));
    let r = one_slot("deadlineu64", &fb, "m");
    let id = new_job_id();
    let res = r.run_job(&job_with_deadline(&id, "m", (1u64 << 32) + 5));
    res.expect_done();
}

#[test]
fn coordinator_disconnect_mid_job_closes_the_backend_within_a_second() {
    let _w = watchdog(Duration::from_secs(15), "disconnect_mid_job");
    let fb = FakeBackend::start(Kind::Ollama, &["m"]);
    // One event, then silence: no later write can notice the session is gone, so only
    // stopping the job when the session ends closes the backend request.
    fb.set_fault(Fault::HangMidStream);
    let r = one_slot("disconnect", &fb, "m");
    let id = new_job_id();
    r.conn.send_json(&job(&id, "m", chat_request("hi")));
    first_chunk(&r, &id);
    r.conn.drop_tcp();
    let closed = fb
        .wait_client_closed(Duration::from_secs(3))
        .expect("the backend request outlived the coordinator session");
    assert!(
        closed < Duration::from_secs(1),
        "backend closed {closed:?} after the coordinator connection dropped"
    );
    // The agent reconnects; the slot is free on the new session (max_concurrent 1).
    let conn2 = r.setup.coord.accept(support::FIRST_RECONNECT);
    conn2.authenticate(Some("prov-jobs"));
    let caps = conn2.expect_capabilities(S5).value;
    if !offered_ids(&caps).iter().any(|m| m == "m") {
        wait_offer(&conn2, &["m"], S5);
    }
    fb.set_fault(Fault::None);
    let next = new_job_id();
    conn2.send_json(&job(&next, "m", chat_request("again")));
    let res = collect(&conn2, &[&next], S10);
    res[next.as_str()].expect_done();
}
