//! Anthropic jobs (`format: "anthropic"`): sent to the backend's `/v1/messages` when it
//! serves it; when it answers 404 the agent translates the request to chat completions,
//! translates the stream back into a valid Anthropic event stream (message_start …
//! message_stop, usage included), and remembers not to try `/v1/messages` again.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::agent::Setup;
use support::fake_backend::{FakeBackend, Fault, Kind};
use support::jobs::{
    anthropic_job, anthropic_request, backend_entry, done_tokens, new_job_id, start_agent,
    JobResult, Running, SseEvent,
};
use support::watchdog;

const REPLY: &str = "Hello from the fake backend.";

fn agent_for(name: &str, fb: &FakeBackend, model: &str) -> Running {
    let mut setup = Setup::new(name);
    setup.set("/limits/max_concurrent", json!(1));
    start_agent(setup, vec![backend_entry(fb)], &[], &[model])
}

/// Checks that `events` form one valid Anthropic Messages stream and returns
/// (text, message_start usage, message_delta usage).
fn check_anthropic_stream(events: &[SseEvent]) -> (String, Value, Value) {
    let events: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            assert_ne!(
                e.data, "[DONE]",
                "OpenAI's [DONE] leaked into an Anthropic stream"
            );
            let v = e.json();
            let ty = v["type"].as_str().unwrap_or_default().to_string();
            assert_eq!(
                e.event.as_deref(),
                Some(ty.as_str()),
                "every event's `event:` line names its data.type: {v}"
            );
            (ty, v)
        })
        .filter(|(ty, _)| ty != "ping")
        .collect();
    let names: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert!(names.len() >= 6, "too few events: {names:?}");
    assert_eq!(names[0], "message_start", "{names:?}");
    assert_eq!(names[1], "content_block_start", "{names:?}");
    let n = names.len();
    assert_eq!(
        &names[n - 3..],
        &["content_block_stop", "message_delta", "message_stop"],
        "{names:?}"
    );
    assert!(
        names[2..n - 3].iter().all(|t| *t == "content_block_delta"),
        "only content_block_delta between the block's start and stop: {names:?}"
    );
    assert!(n - 5 >= 1, "at least one content_block_delta: {names:?}");

    let start = &events[0].1["message"];
    assert!(
        start["id"].as_str().is_some_and(|s| s.starts_with("msg_")),
        "message_start.message.id: {start}"
    );
    assert_eq!(start["type"], "message", "{start}");
    assert_eq!(start["role"], "assistant", "{start}");
    assert_eq!(start["content"], json!([]), "{start}");
    assert!(start["model"].is_string(), "{start}");
    assert!(
        start["usage"]["input_tokens"].is_u64(),
        "message_start carries usage: {start}"
    );
    let block = &events[1].1;
    assert_eq!(block["index"], 0, "{block}");
    assert_eq!(block["content_block"]["type"], "text", "{block}");
    let mut text = String::new();
    for (_, d) in &events[2..n - 3] {
        assert_eq!(d["index"], 0, "{d}");
        assert_eq!(d["delta"]["type"], "text_delta", "{d}");
        text.push_str(d["delta"]["text"].as_str().expect("text_delta text"));
    }
    assert_eq!(events[n - 3].1["index"], 0);
    let delta = &events[n - 2].1;
    assert!(
        delta["delta"]["stop_reason"].is_string(),
        "message_delta.delta.stop_reason: {delta}"
    );
    assert!(
        delta["usage"]["output_tokens"].is_u64(),
        "message_delta.usage.output_tokens: {delta}"
    );
    (text, start["usage"].clone(), delta["usage"].clone())
}

fn paths(fb: &FakeBackend) -> Vec<String> {
    fb.inference_requests()
        .into_iter()
        .map(|r| r.path)
        .collect()
}

#[test]
fn native_messages_endpoint_gets_the_job_and_its_stream_is_relayed() {
    let _w = watchdog(Duration::from_secs(15), "anthropic_native");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["tiny"]);
    fb.set_messages_endpoint(true);
    let r = agent_for("anth-native", &fb, "tiny");
    let mut req = anthropic_request("hi");
    req["stop_sequences"] = json!(["END"]);
    let res = r.run_job(&anthropic_job(&new_job_id(), "tiny", req.clone()));
    let done = res.expect_done();
    assert_eq!(
        done_tokens(done),
        (11, 6),
        "usage from message_start and message_delta"
    );
    res.assert_chunks_on_event_boundaries();
    let (text, start_usage, _) = check_anthropic_stream(&res.events());
    assert_eq!(text, REPLY);
    assert_eq!(start_usage["input_tokens"], 11);
    assert!(
        res.text().contains("msg_fake"),
        "the backend's own events are relayed: {}",
        res.text()
    );

    let sent = fb.inference_requests();
    assert_eq!(
        paths(&fb),
        vec!["/v1/messages"],
        "one call to /v1/messages, no translation"
    );
    let body = &sent[0].body;
    assert_eq!(body["stream"], true, "stream forced on: {body}");
    assert_eq!(body["model"], "tiny", "model filled in: {body}");
    assert_eq!(body["system"], req["system"], "passed through: {body}");
    assert_eq!(body["messages"], req["messages"]);
    assert_eq!(body["max_tokens"], 32);
    assert_eq!(body["stop_sequences"], json!(["END"]));
}

/// A job on a backend without /v1/messages; returns the result and checks the fallback.
fn translated_job(r: &Running, model: &str) -> JobResult {
    let mut req = anthropic_request("What is 2+2?");
    req["temperature"] = json!(0.3);
    req["stop_sequences"] = json!(["END"]);
    let res = r.run_job(&anthropic_job(&new_job_id(), model, req));
    let done = res.expect_done();
    assert_eq!(
        done_tokens(done),
        (11, 6),
        "usage from the translated stream"
    );
    res.assert_chunks_on_event_boundaries();
    let (text, _, end_usage) = check_anthropic_stream(&res.events());
    assert_eq!(text, REPLY, "stream: {}", res.text());
    assert_eq!(
        end_usage["output_tokens"], 6,
        "message_delta usage: {end_usage}"
    );
    assert!(
        !res.text().contains("chat.completion.chunk"),
        "OpenAI chunks leaked: {}",
        res.text()
    );
    res
}

fn check_translated_body(body: &Value, model: &str) {
    assert_eq!(body["stream"], true, "{body}");
    assert_eq!(
        body["stream_options"]["include_usage"], true,
        "usage asked for: {body}"
    );
    assert_eq!(body["model"], model, "{body}");
    assert_eq!(body["max_tokens"], 32, "max_tokens mapped: {body}");
    assert_eq!(body["temperature"], 0.3, "temperature mapped: {body}");
    assert_eq!(
        body["stop"],
        json!(["END"]),
        "stop_sequences → stop: {body}"
    );
    let msgs = body["messages"].as_array().expect("messages array");
    assert_eq!(
        msgs[0],
        json!({"role": "system", "content": "You are terse."}),
        "system prompt → first system message: {body}"
    );
    assert_eq!(msgs[1]["role"], "user", "{body}");
    assert!(
        msgs[1]["content"].to_string().contains("What is 2+2?"),
        "{body}"
    );
    assert!(
        body.get("system").is_none(),
        "no Anthropic-only keys: {body}"
    );
    assert!(body.get("stop_sequences").is_none(), "{body}");
}

#[test]
fn without_messages_endpoint_the_job_is_translated_and_the_fallback_remembered() {
    let _w = watchdog(Duration::from_secs(15), "anthropic_fallback");
    let fb = FakeBackend::start(Kind::Ollama, &["llama3.2:1b"]);
    let r = agent_for("anth-fallback", &fb, "llama3.2:1b");

    translated_job(&r, "llama3.2:1b");
    let sent = fb.inference_requests();
    assert_eq!(
        paths(&fb),
        vec!["/v1/messages", "/v1/chat/completions"],
        "tries /v1/messages, then falls back on its 404"
    );
    check_translated_body(&sent[1].body, "llama3.2:1b");

    // Remembered: the next Anthropic job goes straight to chat completions.
    fb.clear_requests();
    translated_job(&r, "llama3.2:1b");
    assert_eq!(
        paths(&fb),
        vec!["/v1/chat/completions"],
        "the 404 is remembered"
    );
}

#[test]
fn each_kinds_404_leads_to_translation() {
    let _w = watchdog(Duration::from_secs(15), "anthropic_fallback_kinds");
    for kind in [Kind::LlamaCpp, Kind::Vllm, Kind::LmStudio] {
        let fb = FakeBackend::start(kind, &["m"]);
        let r = agent_for("anth-kinds", &fb, "m");
        translated_job(&r, "m");
        let sent = fb.inference_requests();
        assert_eq!(
            paths(&fb),
            vec!["/v1/messages", "/v1/chat/completions"],
            "{kind:?}"
        );
        check_translated_body(&sent[1].body, "m");
    }
}

#[test]
fn content_blocks_are_flattened_when_translating() {
    let _w = watchdog(Duration::from_secs(15), "anthropic_blocks");
    // llama-server serves whatever it loaded, whatever `model` says.
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    let r = agent_for("anth-blocks", &fb, "m");
    let req = json!({
        "model": "client-model",
        "max_tokens": 20,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use English."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "First question"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "First answer"}]},
            {"role": "user", "content": "Second question"}
        ]
    });
    let res = r.run_job(&anthropic_job(&new_job_id(), "m", req));
    res.expect_done();
    check_anthropic_stream(&res.events());
    let sent = fb.inference_requests();
    let body = &sent.last().expect("a chat completions call").body;
    assert_eq!(sent.last().unwrap().path, "/v1/chat/completions");
    assert_eq!(
        body["model"], "m",
        "the routed model, never the client's: {body}"
    );
    let msgs = body["messages"].as_array().expect("messages");
    let roles: Vec<&str> = msgs.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{body}");
    let sys = msgs[0]["content"].as_str().expect("system content as text");
    assert!(
        sys.contains("Be brief.") && sys.contains("Use English."),
        "{body}"
    );
    for (i, needle) in [
        (1, "First question"),
        (2, "First answer"),
        (3, "Second question"),
    ] {
        assert!(
            msgs[i]["content"].to_string().contains(needle),
            "message {i}: {body}"
        );
    }
}

#[test]
fn only_a_404_triggers_translation_other_errors_are_reported() {
    let _w = watchdog(Duration::from_secs(15), "anthropic_errors");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    fb.set_messages_endpoint(true);
    let r = agent_for("anth-errors", &fb, "m");
    fb.set_fault(Fault::Status(500, r#"{"error":"kv cache full"}"#.into()));
    let res = r.run_job(&anthropic_job(&new_job_id(), "m", anthropic_request("hi")));
    let e = res.expect_error("internal");
    assert!(
        e["message"].as_str().unwrap().contains("kv cache full"),
        "{e}"
    );
    assert_eq!(paths(&fb), vec!["/v1/messages"], "no fallback on a 500");
    fb.set_fault(Fault::Status(401, r#"{"error":"bad key"}"#.into()));
    let res = r.run_job(&anthropic_job(&new_job_id(), "m", anthropic_request("hi")));
    res.expect_error("auth_rejected_by_backend");
    // Still native afterwards.
    fb.set_fault(Fault::None);
    fb.clear_requests();
    let res = r.run_job(&anthropic_job(&new_job_id(), "m", anthropic_request("hi")));
    res.expect_done();
    assert_eq!(paths(&fb), vec!["/v1/messages"]);
}
