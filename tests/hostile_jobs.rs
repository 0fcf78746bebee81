//! Hostile jobs against the real binary: each request-policy rule is checked on the body
//! the backend actually received (or on the backend receiving nothing at all), in both
//! formats and on the native and translated Anthropic paths, and every hostile case ends
//! with the agent still serving. Also the memory bound for a request at the size cap.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::agent::Setup;
use support::fake_backend::{FakeBackend, Kind};
use support::jobs::{
    anthropic_job, anthropic_request, backend_entry, chat_request, job, new_job_id, start_agent,
    Running,
};
use support::watchdog;

const POLICY: &str = "refused by provider policy: ";

/// A llama-server fake offering `tiny` with a context window of 4096.
fn agent_with(tag: &str, limits: Value, kind: Kind) -> (FakeBackend, Running) {
    let fb = FakeBackend::start(kind, &["tiny"]);
    fb.set_context_window(Some(4096));
    let mut setup = Setup::new(tag);
    setup.set("/limits", limits);
    let r = start_agent(setup, vec![backend_entry(&fb)], &[], &["tiny"]);
    (fb, r)
}

/// Runs `request` as an OpenAI job and returns the one body the backend received.
fn sent_openai(fb: &FakeBackend, r: &Running, request: Value) -> Value {
    fb.clear_requests();
    r.run_job(&job(&new_job_id(), "tiny", request))
        .expect_done();
    let sent = fb.inference_requests();
    assert_eq!(sent.len(), 1, "one backend call: {sent:?}");
    sent[0].body.clone()
}

/// Runs `request` (OpenAI or Anthropic per `anthropic`), expects the policy's refusal and
/// that nothing reached the backend; returns the job_error's message.
fn refused(fb: &FakeBackend, r: &Running, request: Value, anthropic: bool) -> String {
    fb.clear_requests();
    let id = new_job_id();
    let frame = if anthropic {
        anthropic_job(&id, "tiny", request)
    } else {
        job(&id, "tiny", request)
    };
    let res = r.run_job(&frame);
    let err = res.expect_error("internal");
    assert!(res.chunks.is_empty(), "no chunk before a refusal");
    let message = err["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with(POLICY), "{message}");
    assert!(
        fb.inference_requests().is_empty(),
        "a refused job reached the backend: {:?}",
        fb.inference_requests()
    );
    still_serving(fb, r);
    message
}

/// A plain job still completes: the hostile one before it cost nothing lasting.
fn still_serving(fb: &FakeBackend, r: &Running) {
    fb.clear_requests();
    r.run_job(&job(&new_job_id(), "tiny", chat_request("still there?")))
        .expect_done();
}

#[test]
fn openai_bodies_are_forced_clamped_and_allow_listed() {
    let _w = watchdog(Duration::from_secs(40), "hostile_openai_body");
    let (fb, r) = agent_with(
        "hpolicy",
        json!({"max_output_tokens": 1000}),
        Kind::LlamaCpp,
    );

    // The client's model, stream and include_usage never survive; max_tokens is clamped.
    let body = sent_openai(
        &fb,
        &r,
        json!({
            "model": "some-zero-priced-model",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": false,
            "stream_options": {"include_usage": false},
            "max_tokens": 10_000_000,
            "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": ["\n\n"], "user": "u-1",
            "logprobs": true, "top_logprobs": 50,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "response_format": {"type": "json_object"},
            "grammar": "root ::= \"x\"", "json_schema": {"type": "object"},
            "guided_json": {"type": "object"}, "chat_template": "{{ evil }}",
            "chat_template_kwargs": {"x": 1}, "id_slot": 3, "n_probs": 100,
            "cache_prompt": false, "ignore_eos": true, "mystery": 1
        }),
    );
    assert_eq!(
        body,
        json!({
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 1000,
            "temperature": 0.5, "top_p": 0.9, "seed": 7, "stop": ["\n\n"], "user": "u-1",
            "logprobs": true, "top_logprobs": 20,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "response_format": {"type": "json_object"}
        }),
        "the body the backend received"
    );

    // No limit asked, or llama.cpp's "unlimited": the bound is set anyway.
    let body = sent_openai(
        &fb,
        &r,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(body["max_tokens"], 1000, "{body}");
    let mut req = chat_request("x");
    req["max_tokens"] = json!(-1);
    req["max_completion_tokens"] = json!(5000);
    let body = sent_openai(&fb, &r, req);
    assert_eq!(
        (&body["max_tokens"], &body["max_completion_tokens"]),
        (&json!(1000), &json!(1000)),
        "{body}"
    );
}

#[test]
fn the_context_window_bounds_output_when_the_operator_sets_no_limit() {
    let _w = watchdog(Duration::from_secs(30), "hostile_context_window");
    let (fb, r) = agent_with("hctx", json!({}), Kind::Vllm);
    let mut req = chat_request("x");
    req["max_tokens"] = json!(1_000_000);
    let body = sent_openai(&fb, &r, req);
    assert_eq!(body["max_tokens"], 4096, "{body}");
}

#[test]
fn openai_jobs_the_policy_refuses_never_reach_the_backend() {
    let _w = watchdog(Duration::from_secs(60), "hostile_openai_refusals");
    let (fb, r) = agent_with("hrefuse", json!({"max_messages": 4}), Kind::LlamaCpp);
    let with = |key: &str, v: Value| {
        let mut req = chat_request("x");
        req[key] = v;
        req
    };
    let msg = refused(&fb, &r, with("n", json!(4)), false);
    assert!(msg.contains("`n`"), "{msg}");
    let msg = refused(&fb, &r, with("best_of", json!(64)), false);
    assert!(msg.contains("`best_of`"), "{msg}");
    let msg = refused(&fb, &r, with("max_tokens", json!(1.5)), false);
    assert!(msg.contains("max_tokens"), "{msg}");

    let five: Vec<Value> = (0..5)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let msg = refused(&fb, &r, json!({"messages": five}), false);
    assert!(msg.contains("messages") && msg.contains('4'), "{msg}");

    // Remote media: the backend would fetch it from the operator's network.
    for part in [
        json!({"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}),
        json!({"type": "image_url", "image_url": "https://10.0.0.1/x.png"}),
        json!({"type": "input_audio", "input_audio": {"data": "http://192.168.1.1/a.wav", "format": "wav"}}),
        json!({"type": "file", "file": {"file_data": "https://intranet.local/secret.pdf"}}),
        json!({"type": "video_url", "video_url": {"url": "http://127.0.0.1:22/"}}),
    ] {
        let req = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, part]}]});
        let msg = refused(&fb, &r, req, false);
        assert!(msg.contains("messages[0].content[1]"), "{msg}");
    }

    // A tool schema past the size limit (64 KiB) is refused, not forwarded.
    let big: serde_json::Map<String, Value> = (0..5000)
        .map(|i| (format!("property_{i:05}"), json!({"type": "string"})))
        .collect();
    let req = with(
        "tools",
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": big}}}]),
    );
    let msg = refused(&fb, &r, req, false);
    assert!(msg.contains("tools[0]"), "{msg}");
}

#[test]
fn inline_media_passes_and_remote_media_only_when_the_operator_allows_it() {
    let _w = watchdog(Duration::from_secs(30), "hostile_media");
    let image = |url: &str| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": url}}
        ]}]})
    };
    let (fb, r) = agent_with("hmedia", json!({}), Kind::Vllm);
    let inline = "data:image/png;base64,iVBORw0KGgo=";
    let body = sent_openai(&fb, &r, image(inline));
    assert_eq!(body["messages"], image(inline)["messages"]);
    drop(r);

    let (fb, r) = agent_with(
        "hmediaok",
        json!({"allow_remote_media": true, "allow_fields": ["grammar"]}),
        Kind::Vllm,
    );
    let remote = "https://example.test/cat.png";
    let body = sent_openai(&fb, &r, image(remote));
    assert_eq!(body["messages"], image(remote)["messages"]);
    // An extension the operator names passes; others still do not.
    let mut req = chat_request("x");
    req["grammar"] = json!("root ::= \"y\"");
    req["chat_template"] = json!("x");
    let body = sent_openai(&fb, &r, req);
    assert_eq!(body["grammar"], "root ::= \"y\"", "{body}");
    assert!(body.get("chat_template").is_none(), "{body}");
}

#[test]
fn anthropic_jobs_follow_the_same_policy_native_and_translated() {
    let _w = watchdog(Duration::from_secs(60), "hostile_anthropic");
    for (tag, native) in [("hanat", true), ("hatrans", false)] {
        let (fb, r) = agent_with(tag, json!({"max_output_tokens": 700}), Kind::LlamaCpp);
        fb.set_messages_endpoint(native);
        let mut req = anthropic_request("hi");
        req["model"] = json!("claude-other");
        req["max_tokens"] = json!(9_999_999);
        req["mcp_servers"] = json!([{"type": "url", "url": "http://10.0.0.5/mcp"}]);
        req["top_k"] = json!(5);
        fb.clear_requests();
        let id = new_job_id();
        r.run_job(&anthropic_job(&id, "tiny", req)).expect_done();
        let sent = fb.inference_requests();
        let last = sent.last().expect("a backend call");
        let body = &last.body;
        assert_eq!(body["model"], "tiny", "{tag}: {body}");
        assert_eq!(body["max_tokens"], 700, "{tag}: {body}");
        assert_eq!(body["stream"], true, "{tag}: {body}");
        assert_eq!(body["top_k"], 5, "{tag}: {body}");
        assert!(body.get("mcp_servers").is_none(), "{tag}: {body}");
        if native {
            assert_eq!(last.path, "/v1/messages", "{tag}");
        } else {
            assert_eq!(last.path, "/v1/chat/completions", "{tag}");
            assert_eq!(body["stream_options"], json!({"include_usage": true}));
        }

        let url_image = json!({
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/"}},
                {"type": "text", "text": "describe"}
            ]}]
        });
        let msg = refused(&fb, &r, url_image, true);
        assert!(msg.contains("messages[0].content[0]"), "{tag}: {msg}");
        let server_tool = json!({
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "fetch it"}],
            "tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]
        });
        let msg = refused(&fb, &r, server_tool, true);
        assert!(msg.contains("tools[0]"), "{tag}: {msg}");
    }
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn a_request_at_the_size_cap_of_tiny_values_costs_a_small_multiple_of_its_size() {
    let _w = watchdog(Duration::from_secs(60), "hostile_memory");
    let cap: usize = 4 << 20;
    let (fb, r) = agent_with("hmem", json!({"max_request_bytes": cap}), Kind::LlamaCpp);
    let before = peak_rss_kib(r.agent.pid());
    // Just under the cap: a message list plus a field of ~2 million tiny values, which a
    // generic JSON tree would turn into ~30x its bytes.
    let filler = "1,".repeat((cap - 4096) / 2);
    let text = format!(
        r#"{{"messages":[{{"role":"user","content":"x"}}],"max_tokens":4,"logit_bias_extra":[{}1]}}"#,
        filler
    );
    let req: Value = serde_json::from_str(&text).unwrap();
    fb.clear_requests();
    r.run_job(&job(&new_job_id(), "tiny", req)).expect_done();
    let body = &fb.inference_requests()[0].body;
    assert!(
        body.get("logit_bias_extra").is_none(),
        "unknown field dropped"
    );
    let grew = peak_rss_kib(r.agent.pid()).saturating_sub(before) as usize * 1024;
    eprintln!("peak RSS grew by {grew} bytes for a {cap}-byte request");
    assert!(
        grew < 4 * cap,
        "peak RSS grew by {grew} bytes for a {cap}-byte request (bound: 4x)"
    );
    still_serving(&fb, &r);
}
