//! The agent against a real llama.cpp llama-server with a tiny generated model
//! (tests/real/setup_llama.sh prepares both). Reported as SKIPPED when they are
//! not there; in CI (`CI` set) a missing llama-server fails instead.

mod support;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::agent::Setup;
use support::coordinator::Conn;
use support::{wait_until, watchdog};

const SENTENCE: &str = " Hello from the tiny test model.";

fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/.cache")
}

/// True when the real llama-server and models are not there: locally the test then
/// reports itself SKIPPED; in CI (which prepares them) it fails instead.
fn skipped(test: &str) -> bool {
    let missing: Vec<&str> = ["llama-server", "tiny.gguf", "tiny-loop.gguf"]
        .into_iter()
        .filter(|f| !cache().join(f).exists())
        .collect();
    if missing.is_empty() {
        return false;
    }
    support::skip_or_fail(
        test,
        &format!(
            "no {} in tests/.cache (run `make llama`, i.e. tests/real/setup_llama.sh)",
            missing.join(", ")
        ),
    );
    true
}

struct Llama {
    child: Child,
    port: u16,
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Llama {
    fn start(model: &str, parallel: u32) -> Llama {
        let port = support::refused_port();
        let child = Command::new(cache().join("llama-server"))
            .args([
                "-m",
                cache().join(model).to_str().unwrap(),
                "--alias",
                "tiny",
            ])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "-c",
                &(2048 * parallel).to_string(),
                "--parallel",
                &parallel.to_string(),
            ])
            .args(["-t", "2", "-ngl", "0", "--no-webui"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let l = Llama { child, port };
        assert!(
            wait_until(Duration::from_secs(30), || l
                .get("/health")
                .is_some_and(|(s, _)| s == 200)),
            "llama-server did not become healthy"
        );
        l
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A tiny GET for /health and /slots.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::Read;
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split(' ').nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    }

    fn busy_slots(&self) -> Option<usize> {
        let (_, body) = self.get("/slots")?;
        // Connection: close answers are not chunked; tolerate it either way.
        let start = body.find('[')?;
        let v: Value = serde_json::from_str(body[start..].trim_end_matches(|c| c != ']')).ok()?;
        Some(
            v.as_array()?
                .iter()
                .filter(|s| s["is_processing"] == json!(true))
                .count(),
        )
    }
}

fn connect(
    s: &mut Setup,
    llama: &Llama,
    native_anthropic: bool,
    max_concurrent: u32,
) -> (support::agent::Agent, Conn) {
    s.set(
        "/backends",
        json!([{"kind":"llamacpp","url":llama.url(),"native_anthropic":native_anthropic}]),
    );
    s.set("/limits/max_concurrent", json!(max_concurrent));
    let (agent, conn, _) = s.spawn_and_authenticate(Some("prov-real"));
    let mut caps = conn.expect_capabilities(Duration::from_secs(5)).value;
    let t = Instant::now();
    while !caps.to_string().contains("\"tiny\"") && t.elapsed() < Duration::from_secs(10) {
        if let Some(c) = conn.recv_type("capabilities", Duration::from_millis(500)) {
            caps = c.value;
        }
    }
    let model = caps["models"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["model_id"] == "tiny"))
        .cloned();
    let model = model.unwrap_or_else(|| panic!("tiny not offered: {caps}"));
    assert_eq!(model["backend"], "llamacpp");
    assert!(
        model["context_window"].as_u64().is_some_and(|c| c > 0),
        "{model}"
    );
    (agent, conn)
}

/// Frames of one job until its terminal frame: (decoded SSE bytes, terminal).
fn collect(conn: &Conn, job_id: &str, within: Duration) -> (String, Value) {
    let mut sse = String::new();
    let end = Instant::now() + within;
    while Instant::now() < end {
        let Some(m) = conn.recv_json(Duration::from_millis(200)) else {
            continue;
        };
        if m["job_id"] != job_id {
            continue;
        }
        match m["type"].as_str() {
            Some("job_chunk") => {
                let raw = B64.decode(m["data"].as_str().unwrap()).unwrap();
                let text = String::from_utf8(raw).unwrap();
                assert!(
                    text.ends_with("\n\n"),
                    "a chunk must end on an event boundary: {text:?}"
                );
                sse += &text;
            }
            Some("job_done") | Some("job_error") => return (sse, m),
            _ => {}
        }
    }
    panic!("job {job_id} did not finish within {within:?}; got so far {sse:?}");
}

fn data_events(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

fn job(id: &str, request: Value, format: &str) -> Value {
    json!({"type":"job","job_id":id,"model_id":"tiny","request":request,"format":format,"deadline_ms":30000})
}

#[test]
fn openai_job_streams_the_tiny_model_sentence_with_usage() {
    if skipped("openai_job_streams_the_tiny_model_sentence_with_usage") {
        return;
    }
    let _w = watchdog(Duration::from_secs(60), "openai real");
    let llama = Llama::start("tiny.gguf", 2);
    let mut s = Setup::new("real-openai");
    let (_agent, conn) = connect(&mut s, &llama, true, 2);
    let id = "6f1c2a4e-0000-4000-8000-000000000001";
    conn.send_json(&job(
        id,
        json!({"messages":[{"role":"user","content":"hi"}]}),
        "openai",
    ));
    let (sse, done) = collect(&conn, id, Duration::from_secs(20));
    assert_eq!(done["type"], "job_done", "{done}");
    let text: String = data_events(&sse)
        .iter()
        .filter_map(|e| {
            e.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, SENTENCE);
    assert!(sse.trim_end().ends_with("data: [DONE]"), "{sse}");
    let t = &done["tokens"];
    assert!(t["input"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(t["output"], t["output_tokens"]);
    assert_eq!(t["input"], t["input_tokens"]);
    assert!(t["output"].as_u64().unwrap() >= 7, "{done}");
}

fn anthropic_text(sse: &str) -> (String, Vec<String>) {
    let events = data_events(sse);
    let text = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .filter_map(|e| {
            e.pointer("/delta/text")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let kinds = events
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect();
    (text, kinds)
}

fn run_anthropic(native: bool, id: &str) -> (Value, Vec<String>, Value) {
    let llama = Llama::start("tiny.gguf", 2);
    let mut s = Setup::new(if native {
        "real-anthropic-native"
    } else {
        "real-anthropic-translated"
    });
    let (_agent, conn) = connect(&mut s, &llama, native, 2);
    let body = json!({"model":"tiny","max_tokens":64,"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]});
    conn.send_json(&job(id, body, "anthropic"));
    let (sse, done) = collect(&conn, id, Duration::from_secs(20));
    assert_eq!(done["type"], "job_done", "{done}");
    let (text, kinds) = anthropic_text(&sse);
    assert_eq!(text, SENTENCE);
    let start = data_events(&sse)
        .into_iter()
        .find(|e| e["type"] == "message_start")
        .expect("message_start");
    (start, kinds, done)
}

fn assert_anthropic_order(kinds: &[String]) {
    let first = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert_eq!(kinds.first().map(String::as_str), Some("message_start"));
    assert!(first("content_block_start") < first("content_block_delta"));
    assert!(first("content_block_delta") < first("content_block_stop"));
    assert!(first("content_block_stop") < first("message_delta"));
    assert_eq!(kinds.last().map(String::as_str), Some("message_stop"));
}

#[test]
fn anthropic_job_uses_llama_servers_own_messages_endpoint() {
    if skipped("anthropic_job_uses_llama_servers_own_messages_endpoint") {
        return;
    }
    let _w = watchdog(Duration::from_secs(60), "anthropic native");
    let id = "6f1c2a4e-0000-4000-8000-000000000002";
    let (start, kinds, done) = run_anthropic(true, id);
    assert_anthropic_order(&kinds);
    // Our translator names messages after the job; llama-server picks its own ids.
    assert_ne!(
        start.pointer("/message/id").and_then(Value::as_str),
        Some(&*format!("msg_{}", id.replace('-', "")))
    );
    assert!(done["tokens"]["input"].as_u64().unwrap() > 0, "{done}");
    assert!(done["tokens"]["output"].as_u64().unwrap() > 0, "{done}");
}

#[test]
fn anthropic_job_forced_through_translation() {
    if skipped("anthropic_job_forced_through_translation") {
        return;
    }
    let _w = watchdog(Duration::from_secs(60), "anthropic translated");
    let id = "6f1c2a4e-0000-4000-8000-000000000003";
    let (start, kinds, done) = run_anthropic(false, id);
    assert_anthropic_order(&kinds);
    assert_eq!(
        start.pointer("/message/id").and_then(Value::as_str),
        Some(&*format!("msg_{}", id.replace('-', "")))
    );
    assert!(
        done["tokens"]["input"].as_u64().unwrap() > 0,
        "usage from the final OpenAI chunk: {done}"
    );
    assert!(done["tokens"]["output"].as_u64().unwrap() >= 7, "{done}");
}

#[test]
fn cancelling_an_endless_generation_frees_the_llama_slot() {
    if skipped("cancelling_an_endless_generation_frees_the_llama_slot") {
        return;
    }
    let _w = watchdog(Duration::from_secs(60), "cancel real");
    let llama = Llama::start("tiny-loop.gguf", 2);
    let mut s = Setup::new("real-cancel");
    let (_agent, conn) = connect(&mut s, &llama, true, 2);
    let id = "6f1c2a4e-0000-4000-8000-000000000004";
    conn.send_json(&job(
        id,
        json!({"messages":[{"role":"user","content":"go"}],"max_tokens":1000000}),
        "openai",
    ));
    let first = conn
        .recv_type("job_chunk", Duration::from_secs(10))
        .expect("the endless job streams");
    assert_eq!(first.value["job_id"], id);
    assert!(
        wait_until(Duration::from_secs(5), || llama.busy_slots() == Some(1)),
        "llama-server is generating"
    );
    let cancelled_at = Instant::now();
    conn.send_json(&json!({"type":"job_cancel","job_id":id}));
    assert!(
        wait_until(Duration::from_secs(5), || llama.busy_slots() == Some(0)),
        "the slot must go idle after the cancel"
    );
    let idle_after = cancelled_at.elapsed();
    // Frames already in flight may still arrive; nothing terminal, and soon nothing at all.
    let quiet_from = Instant::now() + Duration::from_millis(300);
    while let Some(m) = conn.recv_json(Duration::from_millis(700)) {
        if m["job_id"] == id {
            assert_eq!(
                m["type"], "job_chunk",
                "no terminal frame after a cancel: {m}"
            );
            assert!(
                Instant::now() < quiet_from,
                "frames kept coming after the cancel: {m}"
            );
        }
    }
    assert!(
        idle_after < Duration::from_secs(2),
        "slot idle only after {idle_after:?}"
    );
}

#[test]
fn one_more_job_than_max_concurrent_gets_out_of_capacity() {
    if skipped("one_more_job_than_max_concurrent_gets_out_of_capacity") {
        return;
    }
    let _w = watchdog(Duration::from_secs(60), "capacity real");
    let llama = Llama::start("tiny-loop.gguf", 2);
    let mut s = Setup::new("real-capacity");
    let (_agent, conn) = connect(&mut s, &llama, true, 2);
    let ids: Vec<String> = (0..3)
        .map(|i| format!("6f1c2a4e-0000-4000-8000-00000000010{i}"))
        .collect();
    for id in &ids {
        conn.send_json(&job(
            id,
            json!({"messages":[{"role":"user","content":"go"}],"max_tokens":400}),
            "openai",
        ));
    }
    let mut terminal = std::collections::HashMap::new();
    let end = Instant::now() + Duration::from_secs(30);
    while terminal.len() < 3 && Instant::now() < end {
        if let Some(m) = conn.recv_json(Duration::from_millis(200)) {
            if matches!(m["type"].as_str(), Some("job_done" | "job_error")) {
                terminal.insert(m["job_id"].as_str().unwrap().to_owned(), m);
            }
        }
    }
    assert_eq!(terminal.len(), 3, "{terminal:?}");
    let refused: Vec<_> = terminal
        .values()
        .filter(|m| m["error_code"] == "out_of_capacity")
        .collect();
    let done: Vec<_> = terminal
        .values()
        .filter(|m| m["type"] == "job_done")
        .collect();
    assert_eq!((refused.len(), done.len()), (1, 2), "{terminal:?}");
    assert_eq!(refused[0]["job_id"], ids[2]);
    for d in done {
        assert_eq!(d["tokens"]["output"], 400, "{d}");
    }
}

/// Local first against the real server: llama-server's own `/slots` tells our job from
/// somebody else's request. Ours runs without the models being withdrawn; a request
/// sent straight to the server withdraws them, and they come back once it is gone.
#[test]
fn a_request_that_is_not_ours_on_the_real_llama_server_withdraws_the_models_until_quiet() {
    let name =
        "a_request_that_is_not_ours_on_the_real_llama_server_withdraws_the_models_until_quiet";
    if skipped(name) {
        return;
    }
    let _w = watchdog(Duration::from_secs(90), "local first real");
    let llama = Llama::start("tiny-loop.gguf", 2);
    let root = support::TempDir::new("real-local-root");
    let mut s = Setup::new("real-local");
    s.set("/backends", json!([{"kind":"llamacpp","url":llama.url()}]));
    s.set("/status/interval_s", json!(0.2));
    s.set(
        "/local_first",
        json!({"enabled": true, "busy_s": 0.6, "idle_s": 1.0}),
    );
    let config = s.write_config();
    let agent = support::agent::Agent::spawn(
        "real-local",
        &[
            "--config",
            config.to_str().unwrap(),
            "--log-level",
            "debug",
            "run",
        ],
        &[("USEPOD_EDGE_TEST_ROOT", root.path().to_str().unwrap())],
        s.dir.path(),
    );
    let conn = s.coord.accept(Duration::from_secs(5));
    conn.authenticate(Some("prov-real"));
    let offers = |c: &Value| {
        c["models"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["model_id"] == "tiny"))
    };
    let caps_where = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Some(c) = conn.recv_type("capabilities", Duration::from_millis(200)) {
                if pred(&c.value) {
                    return;
                }
            }
        }
        panic!("no capabilities {what}\n{}", agent.logs());
    };
    caps_where("offering tiny", &offers);

    // Our own endless job fills a slot while the gate samples /slots again and again.
    let own = "6f1c2a4e-0000-4000-8000-000000000201";
    conn.send_json(&job(
        own,
        json!({"messages":[{"role":"user","content":"go"}],"max_tokens":1000000}),
        "openai",
    ));
    assert!(
        wait_until(Duration::from_secs(10), || llama.busy_slots() == Some(1)),
        "llama-server is generating our job"
    );
    let state = s.key_path.with_file_name("state.json");
    let written = || -> u64 {
        std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["written_unix"].as_u64())
            .unwrap_or(0)
    };
    let from = written();
    let end = Instant::now() + Duration::from_secs(15);
    while written() < from + 3 {
        assert!(Instant::now() < end, "the state file stopped being written");
        if let Some(m) = conn.recv_json(Duration::from_millis(50)) {
            assert!(
                m["type"] != "capabilities" || offers(&m),
                "our own job was taken for local use: {m}\n{}",
                agent.logs()
            );
        }
    }
    conn.send_json(&json!({"type":"job_cancel","job_id":own}));
    assert!(wait_until(Duration::from_secs(5), || llama.busy_slots() == Some(0)));

    // Somebody on the device talks to the server directly.
    let body =
        json!({"messages":[{"role":"user","content":"mine"}],"max_tokens":1000000,"stream":true})
            .to_string();
    let mut theirs = TcpStream::connect(("127.0.0.1", llama.port)).unwrap();
    write!(
        theirs,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    caps_where("without models", &|c| !offers(c));
    let refused = "6f1c2a4e-0000-4000-8000-000000000202";
    conn.send_json(&job(
        refused,
        json!({"messages":[{"role":"user","content":"go"}]}),
        "openai",
    ));
    let end = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let m = conn.recv_json(Duration::from_millis(200));
        if let Some(m) = m.filter(|m| m["job_id"] == refused) {
            break m;
        }
        assert!(
            Instant::now() < end,
            "no answer to the job sent during local use"
        );
    };
    assert_eq!(answer["error_code"], "out_of_capacity", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("local use"),
        "{answer}"
    );
    // They hang up; quiet for idle_s brings the model back.
    drop(theirs);
    caps_where("offering tiny again", &offers);
}

/// Two llama-servers serving the same model form one pool: capabilities offer their
/// slots together, and two jobs at once run one on each.
#[test]
fn two_llama_servers_serve_the_tiny_model_as_one_pool() {
    if skipped("two_llama_servers_serve_the_tiny_model_as_one_pool") {
        return;
    }
    let _w = watchdog(Duration::from_secs(90), "pool real");
    let (one, two) = (
        Llama::start("tiny-loop.gguf", 1),
        Llama::start("tiny-loop.gguf", 1),
    );
    let mut s = Setup::new("real-pool");
    s.set(
        "/backends",
        json!([{"kind":"llamacpp","url":one.url()},{"kind":"llamacpp","url":two.url()}]),
    );
    s.set("/limits/max_concurrent", json!(4));
    let (agent, conn, _) = s.spawn_and_authenticate(Some("prov-real"));
    let slots = |c: &Value| {
        c["models"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["model_id"] == "tiny"))
            .and_then(|m| m["max_concurrent"].as_u64())
    };
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let c = conn.recv_type("capabilities", Duration::from_millis(200));
        if c.is_some_and(|c| slots(&c.value) == Some(2)) {
            break;
        }
        assert!(
            Instant::now() < end,
            "no capabilities offering both servers' slots\n{}",
            agent.logs()
        );
    }
    let ids = [
        "6f1c2a4e-0000-4000-8000-000000000301",
        "6f1c2a4e-0000-4000-8000-000000000302",
    ];
    for id in ids {
        conn.send_json(&job(
            id,
            json!({"messages":[{"role":"user","content":"go"}],"max_tokens":1500}),
            "openai",
        ));
    }
    assert!(
        wait_until(Duration::from_secs(10), || one.busy_slots() == Some(1)
            && two.busy_slots() == Some(1)),
        "each llama-server runs one of the jobs\n{}",
        agent.logs()
    );
    let mut terminal = std::collections::HashMap::new();
    let end = Instant::now() + Duration::from_secs(30);
    while terminal.len() < ids.len() && Instant::now() < end {
        if let Some(m) = conn.recv_json(Duration::from_millis(200)) {
            if matches!(m["type"].as_str(), Some("job_done" | "job_error")) {
                terminal.insert(m["job_id"].as_str().unwrap().to_owned(), m);
            }
        }
    }
    assert_eq!(terminal.len(), 2, "{terminal:?}\n{}", agent.logs());
    for done in terminal.values() {
        assert_eq!(done["type"], "job_done", "{done}");
        assert_eq!(done["tokens"]["output"], 1500, "{done}");
    }
}
