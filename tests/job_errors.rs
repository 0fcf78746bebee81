//! Every way a job can fail ends with exactly one `job_error` carrying its error code
//! (docs/protocol.md, "Error codes"), and the agent is fine afterwards: the next job
//! succeeds (most tests run with max_concurrent 1, so that also proves the failed job's
//! slot was freed).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::agent::Setup;
use support::fake_backend::{FakeBackend, Fault, Kind};
use support::jobs::{
    backend_entry, chat_request, collect, job, new_job_id, start_agent, wait_caps, Running, S10, S5,
};
use support::{wait_until, watchdog};

/// An agent with one fake backend serving `model`, at max_concurrent 1, plus `limits`.
fn one_slot(name: &str, fb: &FakeBackend, model: &str, limits: Value) -> Running {
    let mut setup = Setup::new(name);
    setup.set("/limits/max_concurrent", json!(1));
    if let Value::Object(m) = limits {
        for (k, v) in m {
            setup.set(&format!("/limits/{k}"), v);
        }
    }
    start_agent(setup, vec![backend_entry(fb)], &[], &[model])
}

/// The fault is cleared and a normal job for `model` must now succeed.
fn next_job_succeeds(r: &Running, fb: &FakeBackend, model: &str) {
    fb.set_fault(Fault::None);
    let res = r.run_job(&job(&new_job_id(), model, chat_request("again")));
    res.expect_done();
}

#[test]
fn over_capacity_exactly_one_of_n_plus_one_is_refused_before_model_lookup() {
    let _w = watchdog(Duration::from_secs(15), "out_of_capacity");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    fb.set_slots(8);
    fb.set_stream_len(10, Duration::from_millis(100));
    let mut setup = Setup::new("capacity");
    setup.set("/limits/max_concurrent", json!(2));
    let r = start_agent(setup, vec![backend_entry(&fb)], &[], &["m"]);

    // N+1 at once.
    let ids: Vec<String> = (0..3).map(|_| new_job_id()).collect();
    for id in &ids {
        r.conn.send_json(&job(id, "m", chat_request("hi")));
    }
    // While both slots are busy, even an unknown model is out_of_capacity.
    assert!(
        wait_until(S5, || fb.open_streams() == 2),
        "two jobs should be streaming (open: {})",
        fb.open_streams()
    );
    let unknown = new_job_id();
    r.conn
        .send_json(&job(&unknown, "no-such-model", chat_request("hi")));
    let mut all: Vec<&str> = ids.iter().map(String::as_str).collect();
    all.push(&unknown);
    let res = collect(&r.conn, &all, S10);
    let refused: Vec<&str> = ids
        .iter()
        .filter(|id| res[id.as_str()].error_code() == Some("out_of_capacity"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "exactly one of 3 simultaneous jobs at max_concurrent 2 is refused: {:?}",
        ids.iter()
            .map(|i| &res[i.as_str()].terminal)
            .collect::<Vec<_>>()
    );
    let refused_res = &res[refused[0]];
    refused_res.expect_error("out_of_capacity");
    assert!(refused_res.chunks.is_empty());
    assert_eq!(refused_res.terminal["tokens_emitted"], 0);
    for id in ids.iter().filter(|i| i.as_str() != refused[0]) {
        res[id.as_str()].expect_done();
    }
    res[unknown.as_str()].expect_error("out_of_capacity");
    assert_eq!(
        fb.inference_requests().len(),
        2,
        "refused jobs never reach the backend"
    );
    // Both slots are free again.
    fb.set_stream_len(2, Duration::ZERO);
    let a = new_job_id();
    let b = new_job_id();
    r.conn.send_json(&job(&a, "m", chat_request("x")));
    r.conn.send_json(&job(&b, "m", chat_request("y")));
    let res = collect(&r.conn, &[&a, &b], S10);
    res[a.as_str()].expect_done();
    res[b.as_str()].expect_done();
}

#[test]
fn unknown_model_is_model_not_loaded() {
    let _w = watchdog(Duration::from_secs(15), "model_not_loaded");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    let r = one_slot("notloaded", &fb, "m", json!({}));
    let res = r.run_job(&job(&new_job_id(), "llama-70b", chat_request("hi")));
    let e = res.expect_error("model_not_loaded");
    assert_eq!(e["tokens_emitted"], 0);
    assert!(res.chunks.is_empty());
    assert!(fb.inference_requests().is_empty());
    next_job_succeeds(&r, &fb, "m");
}

#[test]
fn refused_connection_is_backend_unreachable_and_the_model_is_withdrawn() {
    let _w = watchdog(Duration::from_secs(15), "backend_unreachable");
    let alive = FakeBackend::start(Kind::Ollama, &["stays"]);
    let doomed = FakeBackend::start(Kind::LlamaCpp, &["goes"]);
    let mut setup = Setup::new("unreachable");
    setup.set("/limits/max_concurrent", json!(1));
    let r = start_agent(
        setup,
        vec![backend_entry(&alive), backend_entry(&doomed)],
        &[],
        &["stays", "goes"],
    );
    drop(doomed); // its port now refuses connections
    let res = r.run_job(&job(&new_job_id(), "goes", chat_request("hi")));
    let e = res.expect_error("backend_unreachable");
    assert_eq!(e["tokens_emitted"], 0);
    // The failure triggers a discovery round at once (not the periodic one): the
    // capabilities are re-sent without the dead backend's model.
    let caps = wait_caps(&r.conn, S5, "without `goes`", |c| {
        let ids = support::jobs::offered_ids(c);
        ids.iter().any(|i| i == "stays") && !ids.iter().any(|i| i == "goes")
    });
    assert!(caps["models"].is_array());
    let res = r.run_job(&job(&new_job_id(), "goes", chat_request("hi")));
    res.expect_error("model_not_loaded");
    next_job_succeeds(&r, &alive, "stays");
}

#[test]
fn backend_401_and_403_are_auth_rejected_by_backend() {
    let _w = watchdog(Duration::from_secs(15), "auth_rejected");
    let fb = FakeBackend::start(Kind::LmStudio, &["m"]);
    let r = one_slot("auth", &fb, "m", json!({}));
    for status in [401u16, 403] {
        fb.set_fault(Fault::Status(
            status,
            r#"{"error":{"message":"Invalid or missing API token"}}"#.into(),
        ));
        let res = r.run_job(&job(&new_job_id(), "m", chat_request("hi")));
        let e = res.expect_error("auth_rejected_by_backend");
        assert_eq!(e["tokens_emitted"], 0, "{status}: {e}");
        assert!(res.chunks.is_empty());
    }
    next_job_succeeds(&r, &fb, "m");
}

#[test]
fn backend_missing_api_key_is_auth_rejected_by_backend() {
    let _w = watchdog(Duration::from_secs(15), "auth_rejected_missing_key");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    let r = one_slot("nokey", &fb, "m", json!({}));
    // The backend starts requiring a key the agent does not have.
    fb.set_api_key(Some("now-required"));
    let res = r.run_job(&job(&new_job_id(), "m", chat_request("hi")));
    res.expect_error("auth_rejected_by_backend");
    fb.set_api_key(None);
    next_job_succeeds(&r, &fb, "m");
}

#[test]
fn other_non_2xx_is_internal_with_status_and_body_excerpt() {
    let _w = watchdog(Duration::from_secs(15), "internal_500");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    let r = one_slot("status500", &fb, "m", json!({}));
    for (status, body) in [
        (
            500u16,
            r#"{"error":{"message":"CUDA error: out of memory"}}"#,
        ),
        (429, r#"{"error":"too many requests: queue full"}"#),
    ] {
        fb.set_fault(Fault::Status(status, body.into()));
        let res = r.run_job(&job(&new_job_id(), "m", chat_request("hi")));
        let e = res.expect_error("internal");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains(&status.to_string()),
            "message names the status {status}: {msg:?}"
        );
        let excerpt = if status == 500 {
            "CUDA error: out of memory"
        } else {
            "queue full"
        };
        assert!(
            msg.contains(excerpt),
            "message carries a body excerpt: {msg:?}"
        );
    }
    next_job_succeeds(&r, &fb, "m");
}

#[test]
fn stream_closed_mid_way_is_internal_after_the_chunks_already_sent() {
    let _w = watchdog(Duration::from_secs(15), "close_mid_stream");
    let fb = FakeBackend::start(Kind::Ollama, &["m"]);
    let r = one_slot("closemid", &fb, "m", json!({}));
    fb.set_fault(Fault::CloseMidStream);
    let res = r.run_job(&job(&new_job_id(), "m", chat_request("hi")));
    let e = res.expect_error("internal");
    res.assert_chunks_on_event_boundaries();
    assert!(
        e["tokens_emitted"].as_u64().unwrap() <= 1,
        "at most the one content event sent counts: {e}"
    );
    assert!(
        !res.text().contains("[DONE]"),
        "the stream never ended: {}",
        res.text()
    );
    next_job_succeeds(&r, &fb, "m");
}

#[test]
fn a_stream_that_ends_without_done_or_is_not_sse_is_internal() {
    let _w = watchdog(Duration::from_secs(15), "garbage_stream");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    let r = one_slot("garbage", &fb, "m", json!({}));
    for fault in [Fault::GarbageSse, Fault::Garbage] {
        fb.set_fault(fault.clone());
        let res = r.run_job(&job(&new_job_id(), "m", chat_request("hi")));
        let e = res.expect_error("internal");
        assert!(!e["message"].as_str().unwrap().is_empty(), "{fault:?}: {e}");
    }
    next_job_succeeds(&r, &fb, "m");
}

#[test]
fn an_endless_sse_line_is_cut_off_as_internal_and_the_backend_closed() {
    let _w = watchdog(Duration::from_secs(15), "endless_line");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    let r = one_slot("endless", &fb, "m", json!({}));
    fb.set_fault(Fault::EndlessLine);
    let t0 = Instant::now();
    let res = r.run_job(&job(&new_job_id(), "m", chat_request("hi")));
    let e = res.expect_error("internal");
    assert!(
        res.bytes().len() < 2 << 20,
        "the oversized event must not be relayed ({} bytes)",
        res.bytes().len()
    );
    assert!(
        fb.wait_client_closed(Duration::from_secs(2)).is_some(),
        "the backend connection is closed after an oversized event"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "an event over 1 MiB must be refused as soon as it passes the cap, took {:?}: {e}",
        t0.elapsed()
    );
    next_job_succeeds(&r, &fb, "m");
}

#[test]
fn a_request_body_over_max_request_bytes_is_refused_without_calling_the_backend() {
    let _w = watchdog(Duration::from_secs(15), "request_too_large");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    let r = one_slot("toolarge", &fb, "m", json!({"max_request_bytes": 2048}));
    let big = "x".repeat(4000);
    let res = r.run_job(&job(&new_job_id(), "m", chat_request(&big)));
    let e = res.expect_error("internal");
    // The request policy refuses it first: the messages alone (the 4000-byte prompt in
    // its JSON, 4030 bytes) are over the limit.
    assert_eq!(
        e["message"],
        "refused by provider policy: `messages` is 4030 bytes, over the 2048-byte limit",
        "the message says what is too big, by how much and the limit"
    );
    assert!(
        fb.inference_requests().is_empty(),
        "the backend never sees an oversized body"
    );
    // Just under the cap is fine.
    let res = r.run_job(&job(&new_job_id(), "m", chat_request(&"y".repeat(1500))));
    res.expect_done();
}

#[test]
fn malformed_job_with_a_readable_job_id_gets_an_internal_job_error() {
    let _w = watchdog(Duration::from_secs(15), "malformed_job");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    let r = one_slot("malformed", &fb, "m", json!({}));
    let cases = [
        (
            "model_id",
            json!({"type":"job","job_id":"@","request":{"messages":[]}}),
        ),
        (
            "model_id",
            json!({"type":"job","job_id":"@","model_id":7,"request":{"messages":[]}}),
        ),
        ("request", json!({"type":"job","job_id":"@","model_id":"m"})),
        (
            "deadline_ms",
            json!({"type":"job","job_id":"@","model_id":"m","request":{"messages":[]},
                   "deadline_ms":"soon"}),
        ),
    ];
    for (field, mut frame) in cases {
        let id = new_job_id();
        frame["job_id"] = json!(id);
        r.conn.send_json(&frame);
        let res = collect(&r.conn, &[&id], S5).remove(id.as_str()).unwrap();
        let e = res.expect_error("internal");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains(field),
            "the message says what is malformed ({field}): {msg:?} for {frame}"
        );
    }
    // No readable job_id: nothing to answer, and the connection stays up.
    r.conn
        .send_json(&json!({"type":"job","model_id":"m","request":{}}));
    r.conn.send_json(&json!({"type":"job","job_id":42}));
    // An upper-case job_id is echoed back lowercase.
    let id = new_job_id();
    r.conn
        .send_json(&job(&id.to_uppercase(), "m", chat_request("hi")));
    let res = collect(&r.conn, &[&id], S5).remove(id.as_str()).unwrap();
    res.expect_done();
    assert!(fb.inference_requests().len() == 1);
    assert!(r.conn.ended().is_none(), "the connection stays up");
}

#[test]
fn hang_before_headers_ends_at_the_first_byte_timeout() {
    let _w = watchdog(Duration::from_secs(15), "first_byte_timeout");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    let r = one_slot("firstbyte", &fb, "m", json!({"first_byte_timeout_s": 0.6}));
    fb.set_fault(Fault::HangBeforeHeaders);
    let id = new_job_id();
    let sent = r.conn.send_json(&job(&id, "m", chat_request("hi")));
    let res = collect(&r.conn, &[&id], S5).remove(id.as_str()).unwrap();
    res.expect_error("backend_timeout");
    let took = res.terminal_at - sent;
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(1500),
        "first_byte_timeout_s 0.6 took {took:?}"
    );
    assert!(
        fb.wait_client_closed(Duration::from_secs(1)).is_some(),
        "the hung backend request is closed"
    );
    next_job_succeeds(&r, &fb, "m");
}

#[test]
fn silence_mid_stream_ends_at_the_idle_timeout() {
    let _w = watchdog(Duration::from_secs(15), "idle_timeout");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    let r = one_slot("idle", &fb, "m", json!({"idle_timeout_s": 0.6}));
    fb.set_fault(Fault::HangMidStream);
    let id = new_job_id();
    r.conn.send_json(&job(&id, "m", chat_request("hi")));
    let res = collect(&r.conn, &[&id], S5).remove(id.as_str()).unwrap();
    let e = res.expect_error("backend_timeout");
    assert!(
        !res.chunks.is_empty(),
        "the events before the silence are relayed"
    );
    res.assert_chunks_on_event_boundaries();
    let last_chunk = res.chunks.last().unwrap().0;
    let silence = res.terminal_at - last_chunk;
    assert!(
        silence >= Duration::from_millis(500) && silence < Duration::from_millis(1500),
        "idle_timeout_s 0.6 fired {silence:?} after the last event"
    );
    assert_eq!(
        e["tokens_emitted"], 1,
        "one content event was streamed before the silence: {e}"
    );
    assert!(
        fb.wait_client_closed(Duration::from_secs(1)).is_some(),
        "the silent backend request is closed"
    );
    next_job_succeeds(&r, &fb, "m");
}
