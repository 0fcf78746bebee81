//! Backend faults that `job_errors.rs` does not already pin (issue 5, "Fault injection:
//! backend"). Already covered elsewhere, not repeated here:
//!
//! - dies mid-stream: `job_errors::stream_closed_mid_way_is_internal_after_the_chunks_already_sent`
//! - garbage bytes / not SSE: `job_errors::a_stream_that_ends_without_done_or_is_not_sse_is_internal`
//! - endless line: `job_errors::an_endless_sse_line_is_cut_off_as_internal_and_the_backend_closed`
//! - hang before headers: `job_errors::hang_before_headers_ends_at_the_first_byte_timeout`
//! - silence after the first event: `job_errors::silence_mid_stream_ends_at_the_idle_timeout`
//!
//! Each of those ends with the right code and then runs a next job at max_concurrent 1
//! (the slot was freed). This file adds: a slow trickle below the idle timeout (must
//! succeed, byte for byte, one chunk per event), headers and then nothing, faults of one
//! job not disturbing a healthy job running beside it, and a broken stream through the
//! Anthropic translator never being dressed up as a finished message.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::agent::Setup;
use support::fake_backend::{FakeBackend, Fault, Kind};
use support::jobs::{
    anthropic_job, anthropic_request, backend_entry, chat_request, collect, job, new_job_id,
    start_agent, Running, S10, S5,
};
use support::watchdog;

fn agent_with(name: &str, backends: &[&FakeBackend], models: &[&str], limits: Value) -> Running {
    let mut setup = Setup::new(name);
    setup.set("/limits/max_concurrent", json!(1));
    if let Value::Object(m) = limits {
        for (k, v) in m {
            setup.set(&format!("/limits/{k}"), v);
        }
    }
    let entries = backends.iter().map(|b| backend_entry(b)).collect();
    start_agent(setup, entries, &[], models)
}

/// No panic and no unexpected WARN/ERROR about the session in the agent's log.
fn assert_no_panic(r: &Running) {
    let logs = r.agent.logs();
    assert!(!logs.contains("panicked"), "the agent panicked:\n{logs}");
}

#[test]
fn a_slow_trickle_below_the_idle_timeout_is_relayed_byte_for_byte_one_chunk_per_event() {
    let _w = watchdog(Duration::from_secs(20), "trickle");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    fb.set_reply(&["Hi", "!"], (3, 2));
    // The gaps between bytes (~1 ms) are far below the idle timeout; whole events take
    // ~0.2-0.3 s to arrive, also below it.
    let r = agent_with(
        "trickle",
        &[&fb],
        &["m"],
        json!({"idle_timeout_s": 1.5, "first_byte_timeout_s": 3}),
    );
    // Reference: the same reply at full speed.
    let fast = r.run_job(&job(&new_job_id(), "m", chat_request("hi")));
    fast.expect_done();

    fb.set_fault(Fault::Trickle(Duration::from_millis(1)));
    let id = new_job_id();
    let t0 = Instant::now();
    r.conn.send_json(&job(&id, "m", chat_request("hi")));
    let slow = collect(&r.conn, &[&id], Duration::from_secs(15))
        .remove(id.as_str())
        .unwrap();
    let took = t0.elapsed();
    let done = slow.expect_done();
    slow.assert_chunks_on_event_boundaries();
    assert!(
        took > Duration::from_millis(500),
        "the trickle was not slow ({took:?}): the fault did not apply"
    );
    // Same events as the fast run (ids/timestamps aside: compare the event count and
    // the text).
    let (fe, se) = (fast.events(), slow.events());
    assert_eq!(fe.len(), se.len(), "event count differs: {:?}", slow.text());
    assert_eq!(
        support::jobs::openai_text(&fe),
        support::jobs::openai_text(&se)
    );
    // Events complete tens of ms apart: each must have gone out on its own, at once.
    assert_eq!(
        slow.chunks.len(),
        se.len(),
        "a trickled stream must be relayed one event per chunk, as each completes"
    );
    assert_eq!(done["tokens"]["output"], 2, "{done}");
    // The slot is free: a normal job runs (max_concurrent 1).
    fb.set_fault(Fault::None);
    r.run_job(&job(&new_job_id(), "m", chat_request("again")))
        .expect_done();
    assert_no_panic(&r);
}

#[test]
fn headers_then_nothing_is_backend_timeout_and_the_backend_is_closed() {
    let _w = watchdog(Duration::from_secs(20), "headers_then_nothing");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    let r = agent_with(
        "headersonly",
        &[&fb],
        &["m"],
        json!({"idle_timeout_s": 0.6, "first_byte_timeout_s": 0.6}),
    );
    // Trickle with a 60 s pause: the status line and headers go out whole, then one byte
    // of the chunk-size line, then nothing: not one body byte reaches the SSE layer.
    fb.set_fault(Fault::Trickle(Duration::from_secs(60)));
    let id = new_job_id();
    let sent = r.conn.send_json(&job(&id, "m", chat_request("hi")));
    let res = collect(&r.conn, &[&id], S5).remove(id.as_str()).unwrap();
    let e = res.expect_error("backend_timeout");
    assert_eq!(e["tokens_emitted"], 0, "{e}");
    assert!(res.chunks.is_empty(), "nothing to relay: {:?}", res.text());
    let took = res.terminal_at - sent;
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(2000),
        "first-byte/idle timeout 0.6 s fired after {took:?}"
    );
    assert!(
        fb.wait_client_closed(Duration::from_secs(1)).is_some(),
        "the silent backend request is closed"
    );
    fb.set_fault(Fault::None);
    r.run_job(&job(&new_job_id(), "m", chat_request("again")))
        .expect_done();
    assert_no_panic(&r);
}

/// One job on a faulty backend and one on a healthy backend at the same time: the
/// healthy one is relayed complete and unchanged, the faulty one ends with its code.
#[test]
fn a_faulty_backend_does_not_disturb_a_healthy_job_running_beside_it() {
    let _w = watchdog(Duration::from_secs(20), "fault_isolation");
    let bad = FakeBackend::start(Kind::LlamaCpp, &["bad"]);
    let good = FakeBackend::start(Kind::Ollama, &["good"]);
    good.set_stream_len(40, Duration::from_millis(10));
    let r = agent_with(
        "isolation",
        &[&bad, &good],
        &["bad", "good"],
        json!({"max_concurrent": 2, "idle_timeout_s": 0.5, "first_byte_timeout_s": 0.5}),
    );
    let cases: [(Fault, &str); 5] = [
        (Fault::CloseMidStream, "internal"),
        (Fault::Garbage, "internal"),
        (Fault::GarbageSse, "internal"),
        (Fault::EndlessLine, "internal"),
        (Fault::HangMidStream, "backend_timeout"),
    ];
    for (fault, code) in cases {
        bad.set_fault(fault.clone());
        let (g, b) = (new_job_id(), new_job_id());
        r.conn.send_json(&job(&g, "good", chat_request("healthy")));
        r.conn.send_json(&job(&b, "bad", chat_request("faulty")));
        let res = collect(&r.conn, &[&g, &b], S10);
        res[b.as_str()].expect_error(code);
        let healthy = &res[g.as_str()];
        healthy.expect_done();
        healthy.assert_chunks_on_event_boundaries();
        let events = healthy.events();
        assert_eq!(
            events.last().map(|e| e.data.as_str()),
            Some("[DONE]"),
            "{fault:?}: the healthy stream is complete"
        );
        // 40 content events + role + finish + usage + [DONE].
        assert_eq!(events.len(), 44, "{fault:?}: healthy events lost or added");
    }
    assert_no_panic(&r);
}

/// A stream that breaks while the Anthropic translator is running must end as a
/// job_error; the translator must not finish the message (no message_stop) on its own.
#[test]
fn a_broken_stream_through_the_anthropic_translator_is_not_finished_as_a_message() {
    let _w = watchdog(Duration::from_secs(20), "translated_fault");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    fb.set_messages_endpoint(false); // 404 → translated to chat completions
    let r = agent_with(
        "translatedfault",
        &[&fb],
        &["m"],
        json!({"idle_timeout_s": 0.5}),
    );
    for (fault, code) in [
        (Fault::CloseMidStream, "internal"),
        (Fault::GarbageSse, "internal"),
        (Fault::HangMidStream, "backend_timeout"),
    ] {
        fb.set_fault(fault.clone());
        let res = r.run_job(&anthropic_job(&new_job_id(), "m", anthropic_request("hi")));
        res.expect_error(code);
        let text = res.text();
        assert!(
            !text.contains("message_stop"),
            "{fault:?}: a broken stream was finished as a complete message: {text:?}"
        );
        assert!(
            !text.contains("[DONE]"),
            "{fault:?}: OpenAI's [DONE] leaked into an Anthropic stream: {text:?}"
        );
    }
    fb.set_fault(Fault::None);
    r.run_job(&anthropic_job(&new_job_id(), "m", anthropic_request("ok")))
        .expect_done();
    assert_no_panic(&r);
}
