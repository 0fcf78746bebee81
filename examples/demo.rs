//! `make demo`: the agent's main job on a built-in local default, no account
//! needed. It starts a TLS coordinator on 127.0.0.1 (certificate from a CA made
//! now) and a local llama-server-shaped backend, runs the real agent binary
//! against them, streams two jobs (OpenAI and Anthropic format) through it, then
//! pauses and resumes it as an operator would (`usepod-edge pause` / `resume`).
//!
//! With `USEPOD_EDGE_DEMO_LLAMA=/path/to/llama-server` and
//! `USEPOD_EDGE_DEMO_MODEL=/path/to/model.gguf` it uses a real llama-server.
//!
//! The coordinator and backend are the test suite's own (tests/support).

#[path = "../tests/support/coordinator.rs"]
#[allow(dead_code)]
mod coordinator;
#[path = "../tests/support/fake_backend.rs"]
mod fake_backend;
#[path = "../tests/support/tls.rs"]
#[allow(dead_code)]
mod tls;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "demo-model";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn say(s: &str) {
    println!("\x1b[1mdemo:\x1b[0m {s}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real llama-server if the environment names one, else the fake backend.
fn backend() -> (String, Option<Kill>, Option<fake_backend::FakeBackend>) {
    if let (Ok(bin), Ok(model)) = (
        std::env::var("USEPOD_EDGE_DEMO_LLAMA"),
        std::env::var("USEPOD_EDGE_DEMO_MODEL"),
    ) {
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "-m",
                &model,
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--alias",
                MODEL,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let url = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            && t.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        say(&format!("real llama-server at {url}"));
        return (url, Some(Kill(child)), None);
    }
    let fake = fake_backend::FakeBackend::start(fake_backend::Kind::LlamaCpp, &[MODEL]);
    fake.set_reply(
        &[" Hello", " from", " the", " edge", " agent", "."],
        (12, 6),
    );
    fake.set_stream_len(6, Duration::from_millis(120));
    fake.set_messages_endpoint(true);
    say(&format!(
        "local llama-server-shaped backend at {}",
        fake.url()
    ));
    (fake.url(), None, Some(fake))
}

/// Prints the text a job streams, as the coordinator's client would see it.
fn run_job(conn: &coordinator::Conn, format: &str, request: Value) {
    let job_id = uuid_like();
    let mut job = json!({"type":"job","job_id":job_id,"model_id":MODEL,"request":request,"deadline_ms":30000});
    if format == "anthropic" {
        job["format"] = json!("anthropic");
    }
    say(&format!("sending job {job_id} ({format} format)"));
    conn.send_json(&job);
    print!("      ");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(m) = conn.recv_json(Duration::from_secs(5)) else {
            continue;
        };
        match m["type"].as_str() {
            Some("job_chunk") => {
                let raw = B64
                    .decode(m["data"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                for line in String::from_utf8_lossy(&raw).lines() {
                    let Some(data) = line.strip_prefix("data: ") else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_str::<Value>(data) else {
                        continue;
                    };
                    let text = v
                        .pointer("/choices/0/delta/content")
                        .or_else(|| v.pointer("/delta/text"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                }
            }
            Some("job_done") => {
                println!();
                say(&format!(
                    "job_done: tokens {} in {} ms",
                    m["tokens"], m["duration_ms"]
                ));
                return;
            }
            Some("job_error") => {
                println!();
                say(&format!("job_error: {} {}", m["error_code"], m["message"]));
                return;
            }
            _ => {}
        }
    }
    say("no result within a minute");
}

/// Runs `usepod-edge --config PATH <args>` as the operator would, showing its output.
fn operator(agent_bin: &std::path::Path, config: &std::path::Path, args: &[&str]) {
    say(&format!("operator: usepod-edge {}", args.join(" ")));
    let out = Command::new(agent_bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run the agent binary");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("      {line}");
    }
    if !out.status.success() {
        say(&format!("{} exited with {}", args[0], out.status));
    }
}

/// Waits for capabilities whose model list satisfies `pred`, and shows them.
fn wait_caps(conn: &coordinator::Conn, what: &str, pred: impl Fn(&Value) -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Some(m) = conn.recv_type("capabilities", Duration::from_secs(1)) {
            if pred(&m.value["models"]) {
                say(&format!(
                    "capabilities ({what}): models {}",
                    m.value["models"]
                ));
                return;
            }
        }
    }
    say(&format!("no capabilities {what} within 30 s"));
}

fn uuid_like() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let h = format!("{:032x}", n ^ 0x5eed_0000_0000_0000_0000_0000_0000_0000);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn main() {
    let agent_bin = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/debug/usepod-edge"));
    let dir = std::env::temp_dir().join("usepod-edge-demo");
    std::fs::create_dir_all(&dir).unwrap();
    // A pause left over from an interrupted run would start the agent paused.
    let _ = std::fs::remove_file(dir.join("control.json"));

    let ca = tls::TestCa::new();
    let ca_file = ca.write_ca_pem(&dir);
    let coord = coordinator::Coordinator::start_tls(&ca);
    say(&format!(
        "local coordinator at {} (CA {})",
        coord.url(),
        ca_file.display()
    ));
    let (backend_url, _llama, _fake) = backend();

    let config = json!({
        "coordinator": {"url": coord.url(), "enrollment_code": "DEMO-CODE", "ca_file": ca_file,
                        "heartbeat_interval_s": 2, "ping_interval_s": 5},
        "identity": {"key_path": dir.join("identity.key")},
        "backends": [{"kind": "llamacpp", "url": backend_url}],
        // allow_battery: a laptop running the demo unplugged still serves it.
        "limits": {"max_concurrent": 4, "allow_battery": true},
        // The agent reads `pause` and `resume` on this interval.
        "status": {"interval_s": 0.5}
    });
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    say(&format!(
        "starting {} --config {}",
        agent_bin.display(),
        config_path.display()
    ));
    let _agent = Kill(
        Command::new(&agent_bin)
            .args(["--config", config_path.to_str().unwrap(), "run"])
            .spawn()
            .expect("start the agent (run `cargo build` first)"),
    );

    let conn = coord.accept(Duration::from_secs(20));
    let auth = conn.authenticate(Some("prov-demo"));
    say(&format!(
        "agent authenticated: pubkey {} signature verified over the nonce, enrollment_code {:?}",
        auth.pubkey_b64,
        auth.raw.get("enrollment_code")
    ));
    let mut caps = conn.expect_capabilities(Duration::from_secs(5)).value;
    let t = Instant::now();
    while caps["models"].as_array().is_none_or(|m| m.is_empty())
        && t.elapsed() < Duration::from_secs(30)
    {
        if let Some(m) = conn.recv_type("capabilities", Duration::from_secs(1)) {
            caps = m.value;
        }
    }
    say(&format!("capabilities: {}", caps["models"]));

    run_job(
        &conn,
        "openai",
        json!({"messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}),
    );
    run_job(
        &conn,
        "anthropic",
        json!({"model":MODEL,"max_tokens":16,"messages":[{"role":"user","content":"Say hello"}]}),
    );
    if let Some(hb) = conn.recv_type("heartbeat", Duration::from_secs(5)) {
        say(&format!("heartbeat: {}", hb.value));
    }

    // The operator needs the device: pause withdraws the models (capabilities with
    // none), a job that still arrives is refused, resume brings them back.
    operator(&agent_bin, &config_path, &["pause"]);
    wait_caps(&conn, "paused", |m| {
        m.as_array().is_some_and(|m| m.is_empty())
    });
    run_job(
        &conn,
        "openai",
        json!({"messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}),
    );
    operator(&agent_bin, &config_path, &["status"]);
    operator(&agent_bin, &config_path, &["resume"]);
    wait_caps(&conn, "resumed", |m| {
        m.as_array().is_some_and(|m| !m.is_empty())
    });
    run_job(
        &conn,
        "openai",
        json!({"messages":[{"role":"user","content":"Say hello again"}],"max_tokens":16}),
    );
    say("closing with 1001 drain:deploy; the agent completes the close and schedules a spread reconnect");
    conn.send_close(1001, "drain:deploy");
    conn.wait_closed(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    say("done");
}
