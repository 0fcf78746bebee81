//! OpenAI jobs relayed from a (fake) backend: the SSE body as job_chunk frames cut on
//! event boundaries and sent at once, usage in both key styles, how the backend request is
//! rewritten (stream, include_usage, model, bearer key), which backend runs a model served
//! twice, what capabilities report per backend kind, and `usepod-edge discover`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::agent::Setup;
use support::fake_backend::{FakeBackend, Fault, Kind};
use support::jobs::{
    anthropic_job, anthropic_request, backend_entry, chat_request, done_tokens, job, new_job_id,
    offer, offered_ids, openai_text, start_agent, S10,
};
use support::watchdog;

const REPLY: &str = "Hello from the fake backend.";

#[test]
fn openai_stream_is_relayed_verbatim_in_event_chunks_with_usage() {
    let _w = watchdog(Duration::from_secs(15), "openai_stream_relayed");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["tiny"]);
    let r = start_agent(
        Setup::new("relay"),
        vec![backend_entry(&fb)],
        &[],
        &["tiny"],
    );
    let id = new_job_id();
    let res = r.run_job(&job(&id, "tiny", chat_request("hi")));
    let done = res.expect_done();
    assert_eq!(done["job_id"], id.as_str(), "job_id echoed: {done}");
    assert_eq!(done_tokens(done), (11, 6), "usage from the stream: {done}");

    assert!(!res.chunks.is_empty(), "no job_chunk before job_done");
    res.assert_chunks_on_event_boundaries();
    let events = res.events();
    assert_eq!(
        openai_text(&events),
        REPLY,
        "relayed text; stream: {}",
        res.text()
    );
    assert_eq!(
        events.last().map(|e| e.data.as_str()),
        Some("[DONE]"),
        "the backend's [DONE] is relayed: {}",
        res.text()
    );
    // Raw bytes, not re-encoded: llama-server's own fields survive.
    for e in events.iter().filter(|e| e.data != "[DONE]") {
        let v = e.json();
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        assert_eq!(v["system_fingerprint"], "b10434-fake", "{v}");
    }
    let usage_chunk = events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| e.json())
        .find(|v| v.get("usage").is_some_and(|u| !u.is_null()))
        .expect("the usage chunk is relayed too");
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 11);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 6);
}

#[test]
fn each_event_is_sent_as_soon_as_it_is_complete() {
    let _w = watchdog(Duration::from_secs(15), "each_event_sent_at_once");
    let fb = FakeBackend::start(Kind::Vllm, &["slow"]);
    // Eight content events 150 ms apart.
    fb.set_stream_len(8, Duration::from_millis(150));
    let r = start_agent(
        Setup::new("prompt"),
        vec![backend_entry(&fb)],
        &[],
        &["slow"],
    );
    let id = new_job_id();
    let res = r.run_job(&job(&id, "slow", chat_request("hi")));
    res.expect_done();
    res.assert_chunks_on_event_boundaries();
    // Each content event is its own chunk, read roughly when the backend wrote it.
    let content_chunks: Vec<_> = res
        .chunks
        .iter()
        .filter(|(_, b)| String::from_utf8_lossy(b).contains("\"content\":\""))
        .collect();
    assert!(
        content_chunks.len() >= 8,
        "expected the 8 paced content events in separate chunks, got {} chunk(s): {:?}",
        res.chunks.len(),
        res.text()
    );
    let first = content_chunks.first().unwrap().0;
    let last = content_chunks.last().unwrap().0;
    let spread = last - first;
    assert!(
        spread >= Duration::from_millis(700),
        "content chunks arrived within {spread:?}: batched instead of sent as each event completed"
    );
    // No chunk waits for the next event: consecutive content chunks ~150 ms apart.
    for w in content_chunks.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            gap >= Duration::from_millis(60),
            "two content events arrived {gap:?} apart (one was held back)"
        );
    }
}

#[test]
fn a_trickled_body_is_still_cut_on_event_boundaries() {
    let _w = watchdog(Duration::from_secs(15), "trickled_body_boundaries");
    let fb = FakeBackend::start(Kind::Ollama, &["llama3.2:1b"]);
    fb.set_reply(&["Hi", " there"], (5, 2));
    // The whole response one byte at a time: every read ends mid-event.
    fb.set_fault(Fault::Trickle(Duration::from_micros(300)));
    let r = start_agent(
        Setup::new("trickle"),
        vec![backend_entry(&fb)],
        &[],
        &["llama3.2:1b"],
    );
    let id = new_job_id();
    let res = r.run_job(&job(&id, "llama3.2:1b", chat_request("hi")));
    let done = res.expect_done();
    res.assert_chunks_on_event_boundaries();
    assert_eq!(openai_text(&res.events()), "Hi there");
    assert_eq!(done_tokens(done), (5, 2));
    // Every chunk holds whole events only.
    for (_, c) in &res.chunks {
        for e in support::jobs::sse_events(c) {
            if e.data != "[DONE]" {
                e.json();
            }
        }
    }
}

#[test]
fn usage_is_read_in_openai_and_anthropic_key_styles() {
    let _w = watchdog(Duration::from_secs(15), "usage_both_styles");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["tiny"]);
    fb.set_messages_endpoint(true);
    fb.set_reply(&["a", "b", "c"], (17, 3));
    let r = start_agent(
        Setup::new("usage"),
        vec![backend_entry(&fb)],
        &[],
        &["tiny"],
    );
    // prompt_tokens / completion_tokens
    let res = r.run_job(&job(&new_job_id(), "tiny", chat_request("hi")));
    assert_eq!(done_tokens(res.expect_done()), (17, 3), "OpenAI usage");
    // message_start.message.usage.input_tokens / message_delta.usage.output_tokens
    let res = r.run_job(&anthropic_job(
        &new_job_id(),
        "tiny",
        anthropic_request("hi"),
    ));
    assert_eq!(done_tokens(res.expect_done()), (17, 3), "Anthropic usage");
    assert!(
        res.text().contains("event: message_start"),
        "went through /v1/messages: {}",
        res.text()
    );
}

#[test]
fn backend_request_forces_stream_adds_usage_fills_model_and_sends_the_bearer_key() {
    let _w = watchdog(Duration::from_secs(15), "backend_request_rewritten");
    let fb = FakeBackend::start(Kind::Vllm, &["qwen", "alias"]);
    fb.set_api_key(Some("sk-test-7731"));
    let mut setup = Setup::new("rewrite");
    let mut entry = backend_entry(&fb);
    entry["api_key_env"] = json!("USEPOD_JOBS_TEST_KEY");
    setup.set("/limits/max_concurrent", json!(1));
    let r = start_agent(
        setup,
        vec![entry],
        &[("USEPOD_JOBS_TEST_KEY", "sk-test-7731")],
        &["qwen", "alias"],
    );

    // No model, stream false, no stream_options: all rewritten; other fields untouched.
    let mut req = chat_request("hi");
    req["stream"] = json!(false);
    req["temperature"] = json!(0.25);
    let res = r.run_job(&job(&new_job_id(), "qwen", req));
    assert_eq!(done_tokens(res.expect_done()), (11, 6));
    let sent = fb.inference_requests();
    assert_eq!(sent.len(), 1, "one backend call: {sent:?}");
    let s = &sent[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path, "/v1/chat/completions");
    assert_eq!(s.header("authorization"), Some("Bearer sk-test-7731"));
    assert_eq!(s.body["stream"], true, "stream forced on: {}", s.body);
    assert_eq!(
        s.body["stream_options"]["include_usage"], true,
        "include_usage added: {}",
        s.body
    );
    assert_eq!(s.body["model"], "qwen", "model set: {}", s.body);
    assert_eq!(s.body["temperature"], 0.25);
    assert_eq!(s.body["max_tokens"], 16);
    assert_eq!(
        s.body["messages"],
        json!([{"role": "user", "content": "hi"}])
    );

    // A client's own model and include_usage never survive: the operator offered
    // `qwen` (at its price) and is paid by the usage the backend reports.
    fb.clear_requests();
    let mut req = chat_request("hi");
    req["model"] = json!("alias");
    req["stream_options"] = json!({"include_usage": false});
    let res = r.run_job(&job(&new_job_id(), "qwen", req));
    res.expect_done();
    let sent = fb.inference_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["model"], "qwen", "{}", sent[0].body);
    assert_eq!(sent[0].body["stream"], true);
    assert_eq!(
        sent[0].body["stream_options"],
        json!({"include_usage": true}),
        "usage always requested: {}",
        sent[0].body
    );
    assert_eq!(sent[0].header("authorization"), Some("Bearer sk-test-7731"));
}

#[test]
fn the_best_kind_is_advertised_and_runs_the_job() {
    let _w = watchdog(Duration::from_secs(15), "route_priority");
    let vllm = FakeBackend::start(Kind::Vllm, &["m-all"]);
    let llama = FakeBackend::start(Kind::LlamaCpp, &["m-all", "m-three"]);
    let lms = FakeBackend::start(Kind::LmStudio, &["m-all", "m-three", "m-two"]);
    let ollama = FakeBackend::start(Kind::Ollama, &["m-all", "m-three", "m-two", "m-one"]);
    // Config order is the reverse of priority: the first listed must not win.
    let mut r = start_agent(
        Setup::new("priority"),
        vec![
            backend_entry(&ollama),
            backend_entry(&lms),
            backend_entry(&llama),
            backend_entry(&vllm),
        ],
        &[],
        &["m-all", "m-three", "m-two", "m-one"],
    );
    // Routes settle as probes finish; wait for the final table.
    let caps = r.caps_where("with the final routes", |c| {
        offer(c, "m-all").is_some_and(|m| m["backend"] == "vllm")
            && offer(c, "m-three").is_some_and(|m| m["backend"] == "llamacpp")
            && offer(c, "m-two").is_some_and(|m| m["backend"] == "lmstudio")
    });
    let expect = [
        ("m-all", "vllm", &vllm),
        ("m-three", "llamacpp", &llama),
        ("m-two", "lmstudio", &lms),
        ("m-one", "ollama", &ollama),
    ];
    for (model, kind, _) in &expect {
        assert_eq!(
            offer(&caps, model).unwrap()["backend"],
            *kind,
            "{model}: {caps}"
        );
    }
    let all = [&vllm, &llama, &lms, &ollama];
    for (model, kind, winner) in &expect {
        for fb in all {
            fb.clear_requests();
        }
        let res = r.run_job(&job(&new_job_id(), model, chat_request("hi")));
        res.expect_done();
        for fb in all {
            let n = fb.inference_requests().len();
            let want = usize::from(std::ptr::eq(fb, *winner));
            assert_eq!(
                n,
                want,
                "{model} must run on the advertised {kind}; the {:?} backend got {n} call(s)",
                fb.kind()
            );
        }
    }
}

#[test]
fn capabilities_carry_each_kinds_context_window() {
    let _w = watchdog(Duration::from_secs(15), "context_window_per_kind");
    let llama = FakeBackend::start(Kind::LlamaCpp, &["c-llama"]);
    llama.set_context_window(Some(8192));
    let vllm = FakeBackend::start(Kind::Vllm, &["c-vllm"]);
    vllm.set_context_window(Some(16384));
    let lms = FakeBackend::start(Kind::LmStudio, &["c-lms"]);
    lms.set_context_window(Some(32768));
    let ollama = FakeBackend::start(Kind::Ollama, &["c-ollama"]);
    ollama.set_context_window(Some(65536));
    // Unknown or not-loaded context: LM Studio falls back to max_context_length, the
    // others leave context_window out.
    let lms_unloaded = FakeBackend::start(Kind::LmStudio, &["c-lms-unloaded"]);
    lms_unloaded.set_context_window(None);
    let vllm_unknown = FakeBackend::start(Kind::Vllm, &["c-vllm-unknown"]);
    vllm_unknown.set_context_window(None);
    let ollama_unknown = FakeBackend::start(Kind::Ollama, &["c-ollama-unknown"]);
    ollama_unknown.set_context_window(None);
    let all = [
        &llama,
        &vllm,
        &lms,
        &ollama,
        &lms_unloaded,
        &vllm_unknown,
        &ollama_unknown,
    ];
    let models = [
        "c-llama",
        "c-vllm",
        "c-lms",
        "c-ollama",
        "c-lms-unloaded",
        "c-vllm-unknown",
        "c-ollama-unknown",
    ];
    let r = start_agent(
        Setup::new("ctx"),
        all.iter().map(|fb| backend_entry(fb)).collect(),
        &[],
        &models,
    );
    let caps = &r.caps;
    let ids = offered_ids(caps);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "models sorted by model_id: {caps}");
    let ctx = |m: &str| offer(caps, m).unwrap().get("context_window").cloned();
    assert_eq!(
        ctx("c-llama"),
        Some(json!(8192)),
        "llama /props n_ctx: {caps}"
    );
    assert_eq!(ctx("c-vllm"), Some(json!(16384)), "vLLM max_model_len");
    assert_eq!(
        ctx("c-lms"),
        Some(json!(32768)),
        "LM Studio loaded_context_length"
    );
    assert_eq!(ctx("c-ollama"), Some(json!(65536)), "Ollama /api/show");
    assert_eq!(
        ctx("c-lms-unloaded"),
        Some(json!(131072)),
        "LM Studio max_context_length when not loaded"
    );
    assert!(
        ctx("c-vllm-unknown").is_none_or(|v| v.is_null()),
        "unknown context_window is omitted: {caps}"
    );
    assert!(
        ctx("c-ollama-unknown").is_none_or(|v| v.is_null()),
        "unknown context_window is omitted: {caps}"
    );
    for (m, kind) in [
        ("c-llama", "llamacpp"),
        ("c-vllm", "vllm"),
        ("c-lms", "lmstudio"),
        ("c-ollama", "ollama"),
    ] {
        let o = offer(caps, m).unwrap();
        assert_eq!(o["backend"], kind, "{o}");
        assert_eq!(o["input_per_1m"], 500000, "{o}");
        assert_eq!(o["output_per_1m"], 1000000, "{o}");
        assert!(o["max_concurrent"].as_u64().is_some_and(|n| n >= 1), "{o}");
    }
    // Ollama's context came from POST /api/show for that model.
    assert!(
        ollama
            .requests()
            .iter()
            .any(|q| q.path == "/api/show" && q.body["model"] == "c-ollama"),
        "Ollama was asked /api/show for its model"
    );
}

#[test]
fn zero_priced_and_disallowed_models_are_not_offered_or_run() {
    let _w = watchdog(Duration::from_secs(15), "zero_price_not_offered");
    let fb = FakeBackend::start(Kind::Ollama, &["paid", "free-in", "free-out", "hidden"]);
    let mut setup = Setup::new("pricing");
    setup.set("/pricing/models/free-in", json!({"input_per_1m": 0}));
    setup.set("/pricing/models/free-out", json!({"output_per_1m": 0}));
    setup.set(
        "/pricing/models/paid",
        json!({"input_per_1m": 123, "output_per_1m": 456}),
    );
    let mut entry = backend_entry(&fb);
    entry["models"] = json!(["paid", "free-in", "free-out"]);
    let r = start_agent(setup, vec![entry], &[], &["paid"]);
    assert_eq!(
        offered_ids(&r.caps),
        vec!["paid".to_string()],
        "only the priced, allowed model: {}",
        r.caps
    );
    let paid = offer(&r.caps, "paid").unwrap();
    assert_eq!(paid["input_per_1m"], 123);
    assert_eq!(paid["output_per_1m"], 456);
    for m in ["free-in", "free-out", "hidden"] {
        let res = r.run_job(&job(&new_job_id(), m, chat_request("hi")));
        res.expect_error("model_not_loaded");
    }
    assert!(
        fb.inference_requests().is_empty(),
        "no backend call for models that are not offered"
    );
    r.run_job(&job(&new_job_id(), "paid", chat_request("hi")))
        .expect_done();
}

#[test]
fn discover_prints_each_backend_its_models_and_context_then_exits() {
    let _w = watchdog(Duration::from_secs(15), "discover_command");
    let llama = FakeBackend::start(Kind::LlamaCpp, &["disc-llama"]);
    llama.set_context_window(Some(8192));
    llama.set_slots(3);
    let ollama = FakeBackend::start(Kind::Ollama, &["disc-ollama"]);
    ollama.set_context_window(Some(32768));
    let dead = support::refused_port();
    let mut s = Setup::new("discover");
    s.set(
        "/backends",
        json!([
            backend_entry(&llama),
            backend_entry(&ollama),
            {"kind": "vllm", "url": format!("http://127.0.0.1:{dead}")}
        ]),
    );
    let started = std::time::Instant::now();
    let out = s.cli("discover");
    assert!(!out.timed_out, "discover must exit: {}", out.describe());
    assert!(
        started.elapsed() < S10,
        "discover took {:?}",
        started.elapsed()
    );
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let o = &out.stdout;
    for needle in [
        "llamacpp",
        llama.url().as_str(),
        "disc-llama",
        "8192",
        "3 slots",
        "ollama",
        ollama.url().as_str(),
        "disc-ollama",
        "32768",
        "vllm",
    ] {
        assert!(
            o.contains(needle),
            "discover output lacks {needle:?}:\n{}",
            out.describe()
        );
    }
    // And what capabilities will say about this machine.
    let hw: serde_json::Value = o
        .lines()
        .find_map(|l| l.strip_prefix("hardware: "))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no hardware line:\n{}", out.describe()));
    assert!(hw["cpu"]["cores"].as_u64().is_some_and(|c| c >= 1), "{hw}");
    assert!(
        hw["memory"]["total_mb"].as_u64().is_some_and(|m| m > 0),
        "{hw}"
    );
    // It does not connect to the coordinator.
    assert_eq!(
        s.coord.tcp_accepts(),
        0,
        "discover must not dial the coordinator"
    );
}
