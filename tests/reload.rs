//! Live reload and operator commands that answer at once, end to end with the real
//! binary, a TLS coordinator and fake backends on loopback: `usepod-edge reload` and
//! SIGHUP apply a new config on the same session while a job streams; an invalid one
//! is refused whole; `pause` and `resume` return as soon as the agent took them up.

mod support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use support::agent::Setup;
use support::fake_backend::{FakeBackend, Kind};
use support::jobs::{
    backend_entry, chat_request, collect, job, new_job_id, offer, offered_ids, sse_events,
    start_agent, wait_caps, Running, S10,
};
use support::watchdog;

const MODEL: &str = "m1";

/// An agent serving `MODEL` from one fake llama-server, with the status interval at its
/// default (5 s): anything faster than that was woken, not polled.
fn serving(name: &str) -> (Running, FakeBackend) {
    let fb = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    let mut s = Setup::new(name);
    s.set(
        "/pricing/models",
        json!({MODEL: {"input_per_1m": 500000, "output_per_1m": 1000000}}),
    );
    let r = start_agent(s, vec![backend_entry(&fb)], &[], &[MODEL]);
    (r, fb)
}

fn output_price(caps: &Value) -> Option<u64> {
    offer(caps, MODEL).and_then(|m| m["output_per_1m"].as_u64())
}

/// Changes the config file in place (the agent keeps its path).
fn edit(r: &mut Running, pointer: &str, value: Value) {
    r.setup.set(pointer, value);
    r.setup.write_config();
}

/// Waits until a job's response streams from `fb`.
fn wait_streaming(fb: &FakeBackend) {
    let deadline = Instant::now() + S10;
    while fb.open_streams() == 0 {
        assert!(
            Instant::now() < deadline,
            "the job never reached the backend"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads frames until job `id` ended and a capabilities frame for which `pred` holds
/// came, in either order: (the job's terminal frame, those capabilities, the bytes
/// its chunks carried).
fn job_end_and_caps(
    r: &Running,
    id: &str,
    pred: impl Fn(&Value) -> bool,
) -> (Value, Value, Vec<u8>) {
    let deadline = Instant::now() + S10;
    let (mut done, mut caps, mut seen, mut bytes) = (None, None, Vec::new(), Vec::new());
    while done.is_none() || caps.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let t = r
            .conn
            .recv_timed(left)
            .unwrap_or_else(|| panic!("no job end ({done:?}) or capabilities; seen {seen:?}"));
        match t.ty() {
            "capabilities" if pred(&t.value) => caps = Some(t.value),
            "capabilities" => seen.push(offered_ids(&t.value)),
            "job_chunk" if t.value["job_id"] == id => {
                let data = t.value["data"].as_str().unwrap_or_default();
                bytes.extend(B64.decode(data).expect("base64 chunk data"));
            }
            "job_done" | "job_error" if t.value["job_id"] == id => done = Some(t.value),
            _ => {}
        }
    }
    (done.unwrap(), caps.unwrap(), bytes)
}

#[test]
fn a_reload_reprices_on_the_same_session_while_a_job_streams_every_byte() {
    let _w = watchdog(Duration::from_secs(60), "reload_reprices");
    let (mut r, fb) = serving("reload-price");
    assert_eq!(output_price(&r.caps), Some(1_000_000));
    // About two seconds of streaming: the reload lands in the middle of it.
    fb.set_stream_len(40, Duration::from_millis(50));
    let id = new_job_id();
    r.conn.send_json(&job(&id, MODEL, chat_request("hello")));
    wait_streaming(&fb);

    edit(&mut r, "/pricing/models/m1/output_per_1m", json!(800000));
    let out = r.setup.cli("reload");
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .contains("pricing.models.m1.output_per_1m: 1000000 -> 800000"),
        "{}",
        out.describe()
    );

    // The new price goes out on the same connection, and the job finishes whole.
    let (done, caps, bytes) = job_end_and_caps(&r, &id, |c| output_price(c) == Some(800_000));
    assert_eq!(done["type"], "job_done", "{done}");
    // Every one of the backend's 40 content events, and its [DONE] last.
    let events = sse_events(&bytes);
    let content = events
        .iter()
        .filter(|e| e.data.contains(r#""content":""#))
        .count();
    assert_eq!(content, 40, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    assert_eq!(offered_ids(&caps), [MODEL]);
    assert!(r
        .setup
        .coord
        .try_accept(Duration::from_millis(200))
        .is_none());
    assert!(r.agent.is_running());
    let status = r.setup.cli("status");
    assert!(
        status.stdout.contains("last reload:") && status.stdout.contains("1 change(s) applied"),
        "{}",
        status.describe()
    );
}

#[test]
fn an_invalid_config_is_refused_whole_and_the_old_one_keeps_serving() {
    let _w = watchdog(Duration::from_secs(60), "reload_invalid");
    let (mut r, _fb) = serving("reload-invalid");
    // A valid change beside an invalid one: neither is applied.
    edit(&mut r, "/pricing/models/m1/output_per_1m", json!(700000));
    edit(&mut r, "/limits/max_concurrent", json!("many"));
    let out = r.setup.cli("reload");
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("limits.max_concurrent") && out.stderr.contains("reload refused"),
        "{}",
        out.describe()
    );
    // The same file through SIGHUP: the agent refuses it itself and says so.
    r.agent.signal("HUP");
    assert!(
        r.agent
            .wait_for_log("reload refused, the running config stays", S10),
        "{}",
        r.agent.logs()
    );
    // `status` reads the config to find the state file: with the file fixed (and
    // not reloaded), it shows the refusal the agent keeps (written right after the log
    // line, so looked for a few times).
    edit(&mut r, "/limits/max_concurrent", json!(8));
    let deadline = Instant::now() + S10;
    loop {
        let status = r.setup.cli("status");
        if status.stdout.contains("REFUSED") && status.stdout.contains("limits.max_concurrent") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", status.describe());
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = new_job_id();
    r.conn
        .send_json(&job(&id, MODEL, chat_request("still there?")));
    let res = collect(&r.conn, &[id.as_str()], S10).remove(&id).unwrap();
    res.expect_done();
    assert!(
        !r.agent.has_log("reload: pricing"),
        "nothing was half-applied: {}",
        r.agent.logs()
    );
}

#[test]
fn sighup_applies_like_reload_and_session_settings_wait_for_a_restart() {
    let _w = watchdog(Duration::from_secs(60), "reload_sighup");
    let (mut r, _fb) = serving("reload-sighup");
    assert_eq!(r.caps["limits"]["max_concurrent_total"], 8);
    edit(&mut r, "/limits/max_concurrent", json!(3));
    edit(&mut r, "/coordinator/heartbeat_interval_s", json!(20));
    r.agent.signal("HUP");
    let caps = wait_caps(&r.conn, S10, "with 3 slots in all", |c| {
        c["limits"]["max_concurrent_total"] == 3
    });
    assert_eq!(offer(&caps, MODEL).unwrap()["max_concurrent"], 3);
    assert!(
        r.agent.wait_for_log(
            "reload: coordinator.heartbeat_interval_s: 30 -> 20 needs a restart",
            S10
        ),
        "{}",
        r.agent.logs()
    );
    // The reload command says the same, and that nothing else changed since.
    let out = r.setup.cli("reload");
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .contains("not applied, needs a restart: coordinator.heartbeat_interval_s: 30 -> 20"),
        "{}",
        out.describe()
    );
    assert!(r
        .setup
        .coord
        .try_accept(Duration::from_millis(200))
        .is_none());
}

#[test]
fn pause_and_resume_return_as_soon_as_the_agent_took_them_up() {
    let _w = watchdog(Duration::from_secs(60), "pause_wakes");
    let (r, _fb) = serving("pause-wakes");
    // Generous against the 5 s status interval: a wakeup, not a speed figure.
    let bound = Duration::from_secs(3);
    let t = Instant::now();
    let out = r.setup.cli("pause");
    let took = t.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(took < bound, "pause took {took:?}: {}", out.describe());
    eprintln!("pause answered in {took:?}");
    let caps = wait_caps(&r.conn, bound, "withdrawn", |c| offered_ids(c).is_empty());
    assert!(offered_ids(&caps).is_empty());
    let t = Instant::now();
    let out = r.setup.cli("resume");
    let took = t.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(took < bound, "resume took {took:?}: {}", out.describe());
    eprintln!("resume answered in {took:?}");
    assert!(
        out.stdout.contains("takes jobs again"),
        "{}",
        out.describe()
    );
    wait_caps(&r.conn, bound, "offered again", |c| {
        offered_ids(c) == [MODEL]
    });
}

#[test]
fn a_reload_adds_a_backend_and_a_gone_one_finishes_its_running_job() {
    let _w = watchdog(Duration::from_secs(60), "reload_backends");
    let (mut r, fb) = serving("reload-backends");
    let second = FakeBackend::start(Kind::LlamaCpp, &["m2"]);
    fb.set_stream_len(40, Duration::from_millis(50));
    let id = new_job_id();
    r.conn
        .send_json(&job(&id, MODEL, chat_request("keep going")));
    wait_streaming(&fb);
    // The first backend goes, the second comes, while the first streams.
    edit(&mut r, "/backends", json!([backend_entry(&second)]));
    let out = r.setup.cli("reload");
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let added = format!(
        "backends: + {} (llamacpp)",
        second.url().trim_end_matches('/')
    );
    let gone = format!("backends: - {}", fb.url().trim_end_matches('/'));
    assert!(
        out.stdout.contains(&added) && out.stdout.contains(&gone),
        "{}",
        out.describe()
    );
    let (done, caps, _) = job_end_and_caps(&r, &id, |c| offered_ids(c) == ["m2"]);
    assert_eq!(done["type"], "job_done", "{done}");
    assert_eq!(offered_ids(&caps), ["m2"]);
    // A new job for the gone backend's model is refused; the new one serves.
    let refused = new_job_id();
    r.conn.send_json(&job(&refused, MODEL, chat_request("m1?")));
    let res = collect(&r.conn, &[refused.as_str()], S10)
        .remove(&refused)
        .unwrap();
    res.expect_error("model_not_loaded");
    let served = new_job_id();
    r.conn.send_json(&job(&served, "m2", chat_request("m2!")));
    let res = collect(&r.conn, &[served.as_str()], S10)
        .remove(&served)
        .unwrap();
    res.expect_done();
}

#[test]
fn a_reload_moves_the_log_level_the_config_sets() {
    let _w = watchdog(Duration::from_secs(60), "reload_log_level");
    let fb = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    let mut s = Setup::new("reload-log");
    s.set("/backends", json!([backend_entry(&fb)]));
    s.set("/status/log_level", json!("warn"));
    let path = s.write_config();
    // No --log-level: the config's level rules.
    let agent = support::agent::Agent::spawn(
        &s.name,
        &["--config", path.to_str().unwrap(), "run"],
        &[],
        s.dir.path(),
    );
    let conn = s.coord.accept(S10);
    conn.authenticate(Some("prov-log"));
    support::jobs::wait_offer(&conn, &[MODEL], S10);
    assert!(!agent.has_log(" INFO "), "{}", agent.logs());
    s.set("/status/log_level", json!("debug"));
    let out = s.cli("reload");
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains("status.log_level: WARN -> DEBUG"),
        "{}",
        out.describe()
    );
    let id = new_job_id();
    conn.send_json(&job(&id, MODEL, chat_request("louder")));
    collect(&conn, &[id.as_str()], S10)
        .remove(&id)
        .unwrap()
        .expect_done();
    assert!(agent.wait_for_log(" DEBUG ", S10), "{}", agent.logs());
}
