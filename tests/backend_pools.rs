//! Several backends of one kind serving one model form a pool: capabilities offer the
//! pool's slot total, each job goes to the member with the most free slots, a member
//! that stops or turns a job down leaves it to the others, and a member its owner uses
//! leaves the pool. End to end on the real binary with two fake llama-servers.

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::agent::{run_cli, Setup};
use support::fake_backend::{FakeBackend, Fault, Kind};
use support::jobs::{
    backend_entry, chat_request, collect, job, new_job_id, offer, offered_ids, start_agent,
    wait_caps, Running, S10,
};
use support::{watchdog, TempDir};

const MODEL: &str = "m1";

fn llama(slots: u32) -> FakeBackend {
    let fb = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    fb.set_slots(slots);
    fb
}

/// What capabilities offer for the model: its max_concurrent, None while withdrawn.
fn slots_offered(caps: &Value) -> Option<u64> {
    offer(caps, MODEL).and_then(|m| m["max_concurrent"].as_u64())
}

/// The URL of a fake as the agent writes it (the state file, the metrics).
fn shown(fb: &FakeBackend) -> String {
    format!("{}/", fb.url())
}

/// An agent with `a` and `b` as backends (concurrency 8, status every 0.2 s), once
/// its capabilities offer both members' slots.
fn pool_agent(
    name: &str,
    a: &FakeBackend,
    b: &FakeBackend,
    envs: &[(&str, &str)],
    edit: impl FnOnce(&mut Setup),
) -> Running {
    let mut s = Setup::new(name);
    s.set("/limits/max_concurrent", json!(8));
    s.set("/status/interval_s", json!(0.2));
    edit(&mut s);
    let backends = vec![backend_entry(a), backend_entry(b)];
    let mut run = start_agent(s, backends, envs, &[MODEL]);
    run.caps_where("offering both members' slots", |c| {
        slots_offered(c) == Some(4)
    });
    run
}

fn run_one(run: &Running) {
    run.run_job(&job(&new_job_id(), MODEL, chat_request("x")))
        .expect_done();
}

/// Like [`run_one`], and what the capabilities frames sent meanwhile offered (a job that
/// finds a member stopped starts a discovery round, whose new offer may come before the
/// job ends).
fn run_one_seeing_offers(run: &Running) -> Vec<Option<u64>> {
    let id = new_job_id();
    run.conn.send_json(&job(&id, MODEL, chat_request("x")));
    let mut offered = Vec::new();
    let until = Instant::now() + S10;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let t = run.conn.recv_timed(left).expect("the job ends within 10 s");
        let ours = t.value["job_id"] == id.as_str();
        match t.ty() {
            "capabilities" => offered.push(slots_offered(&t.value)),
            "job_done" if ours => return offered,
            "job_error" if ours => panic!("the job failed: {}", t.value),
            _ => {}
        }
    }
}

fn state(run: &Running) -> Value {
    let path = run.setup.key_path.with_file_name("state.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// The state file once `pred` holds for it (10 s at most).
fn wait_state(run: &Running, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + S10;
    loop {
        let s = state(run);
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the state file never showed {what}: {s:#}\n{}",
            run.agent.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The members of the model's pool in the state file: (url, in_use, local_use).
fn members(state: &Value) -> Vec<(String, u64, Option<String>)> {
    let pools = state["pools"].as_array().cloned().unwrap_or_default();
    let Some(pool) = pools.iter().find(|p| p["model"] == MODEL) else {
        return Vec::new();
    };
    pool["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["url"].as_str().unwrap_or("").to_owned(),
                m["in_use"].as_u64().unwrap_or(0),
                m["local_use"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn status_text(run: &Running) -> String {
    let config = run.setup.dir.join("config.json");
    let out = run_cli(
        &["--config", config.to_str().unwrap(), "status"],
        &[],
        run.setup.dir.path(),
        Duration::from_secs(10),
    );
    out.stdout
}

#[test]
fn four_jobs_on_two_llama_servers_with_two_slots_each_split_two_and_two() {
    let _w = watchdog(Duration::from_secs(60), "pool split");
    let (a, b) = (llama(2), llama(2));
    for fb in [&a, &b] {
        fb.set_stream_len(20, Duration::from_millis(100));
    }
    let mut textfile = PathBuf::new();
    let run = pool_agent("pool-split", &a, &b, &[], |s| {
        textfile = s.dir.join("metrics.prom");
        s.set(
            "/status/metrics_textfile",
            json!(textfile.to_str().unwrap()),
        );
    });
    let m = offer(&run.caps, MODEL).unwrap();
    assert_eq!(m["backend"], "llamacpp", "{m}");
    assert_eq!(run.caps["limits"]["max_concurrent_total"], 8);
    let resent = run.agent.count_logs("re-sending capabilities");

    let ids: Vec<String> = (0..4).map(|_| new_job_id()).collect();
    for id in &ids {
        run.conn.send_json(&job(id, MODEL, chat_request("x")));
    }
    // While they run, the state file, `status` and the metrics show two slots in use
    // on each member.
    let (ua, ub) = (shown(&a), shown(&b));
    let s = wait_state(&run, "two jobs on each member", |s| {
        let m = members(s);
        m.len() == 2 && m.iter().all(|(_, n, _)| *n == 2)
    });
    let pool = &s["pools"][0];
    assert_eq!(
        (pool["kind"].as_str(), pool["offered"].as_u64()),
        (Some("llamacpp"), Some(4))
    );
    assert_eq!(
        members(&s).iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
        [ua.clone(), ub.clone()],
        "in config order"
    );
    let text = status_text(&run);
    assert!(
        text.contains("pool m1: llamacpp, 4 slot(s) offered"),
        "{text}"
    );
    for u in [&ua, &ub] {
        assert!(text.contains(&format!("  {u}: 2 of 2 in use")), "{text}");
    }
    let metrics = std::fs::read_to_string(&textfile).unwrap_or_default();
    for u in [&ua, &ub] {
        let line = format!("usepod_edge_backend_jobs_in_flight{{kind=\"llamacpp\",url=\"{u}\"}} ");
        assert!(
            metrics.lines().any(|l| l.starts_with(&line)),
            "{line}\n{metrics}"
        );
    }

    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let results = collect(&run.conn, &refs, Duration::from_secs(20));
    for id in &refs {
        results[*id].expect_done();
    }
    assert_eq!(
        (a.inference_requests().len(), b.inference_requests().len()),
        (2, 2),
        "the jobs split two and two"
    );
    // Jobs running change nothing that is advertised.
    assert_eq!(run.agent.count_logs("re-sending capabilities"), resent);
}

#[test]
fn a_member_that_stops_leaves_the_pool_and_is_back_once_it_answers() {
    let _w = watchdog(Duration::from_secs(90), "pool member down");
    let (a, b) = (llama(2), llama(2));
    let run = pool_agent("pool-down", &a, &b, &[], |_| {});
    let addr = a.addr();
    drop(a);
    // The next job may still find the stopped member in the pool: it goes to the other.
    if !run_one_seeing_offers(&run).contains(&Some(2)) {
        wait_caps(&run.conn, S10, "offering one member's slots", |c| {
            slots_offered(c) == Some(2)
        });
    }
    b.clear_requests();
    for _ in 0..2 {
        run_one(&run);
    }
    assert_eq!(
        b.inference_requests().len(),
        2,
        "every job on the member left"
    );

    let a = FakeBackend::start_on(Kind::LlamaCpp, &[MODEL], addr);
    a.set_slots(2);
    wait_caps(
        &run.conn,
        Duration::from_secs(15),
        "offering both again",
        |c| slots_offered(c) == Some(4),
    );
    b.clear_requests();
    for _ in 0..2 {
        run_one(&run);
    }
    assert_eq!(
        (a.inference_requests().len(), b.inference_requests().len()),
        (1, 1),
        "with both free, the members take turns"
    );
}

#[test]
fn a_round_that_finds_one_member_stopped_keeps_offering_the_other_while_its_probe_is_slow() {
    let _w = watchdog(Duration::from_secs(60), "pool partial round");
    let (a, b) = (llama(2), llama(2));
    let run = pool_agent("pool-partial", &a, &b, &[], |_| {});
    // In each round `a`'s probe is refused at once and `b`'s answers 1 s later (within the
    // agent's 1.5 s probe timeout): meanwhile `b` must count with what the last round
    // found, not as gone.
    b.set_probe_fault(Fault::DelayHeaders(Duration::from_secs(1)));
    drop(a);
    // The job that finds `a` stopped goes to `b` and starts a round; three more rounds
    // follow (every 3 s while a backend is down).
    let mut offered = run_one_seeing_offers(&run);
    let until = Instant::now() + Duration::from_secs(9);
    while let Some(t) = run.conn.recv_type(
        "capabilities",
        until.saturating_duration_since(Instant::now()),
    ) {
        offered.push(slots_offered(&t.value));
    }
    assert!(
        offered.contains(&Some(2)),
        "the stopped member leaves the pool; offered: {offered:?}"
    );
    assert!(
        offered.iter().all(|o| o.is_some()),
        "the model is never withdrawn while the other member's probe is pending; offered: \
         {offered:?}"
    );
}

#[test]
fn a_member_answering_500_before_any_byte_hands_the_job_to_the_other() {
    let _w = watchdog(Duration::from_secs(60), "pool member 500");
    let (a, b) = (llama(2), llama(2));
    let run = pool_agent("pool-500", &a, &b, &[], |_| {});
    a.set_fault(Fault::Status(500, r#"{"error":"boom"}"#.into()));
    for _ in 0..2 {
        run_one(&run);
    }
    assert!(
        !a.inference_requests().is_empty(),
        "a turn came to the failing member"
    );
    assert_eq!(b.inference_requests().len(), 2, "the other ran every job");
    assert!(run.agent.has_log("trying"), "{}", run.agent.logs());

    // Tried once on another member, not more: with both failing, the job fails.
    b.set_fault(Fault::Status(500, r#"{"error":"boom"}"#.into()));
    let before = a.inference_requests().len() + b.inference_requests().len();
    let r = run.run_job(&job(&new_job_id(), MODEL, chat_request("x")));
    let e = r.expect_error("internal");
    assert!(e["message"].as_str().unwrap_or("").contains("500"), "{e}");
    let after = a.inference_requests().len() + b.inference_requests().len();
    assert_eq!(after - before, 2, "one try on each member");
}

#[test]
fn a_member_its_owner_uses_leaves_the_pool_and_the_model_goes_only_with_the_last() {
    let _w = watchdog(Duration::from_secs(90), "pool local first");
    let root = TempDir::new("pool-local-root");
    let (a, b) = (llama(2), llama(2));
    let envs = [("USEPOD_EDGE_TEST_ROOT", root.path().to_str().unwrap())];
    let run = pool_agent("pool-local", &a, &b, &envs, |s| {
        s.set(
            "/local_first",
            json!({"enabled": true, "busy_s": 0.6, "idle_s": 1.0}),
        );
    });
    // Somebody on the device uses the first llama-server: it leaves the pool.
    a.set_foreign_busy(1);
    wait_caps(&run.conn, S10, "offering the other member's slots", |c| {
        slots_offered(c) == Some(2)
    });
    let s = wait_state(&run, "the member out for local use", |s| {
        members(s).first().is_some_and(|m| m.2.is_some())
    });
    let out = members(&s)[0].2.clone().unwrap();
    assert!(out.contains(&a.url()) && out.contains("not ours"), "{out}");
    assert_eq!(members(&s)[1].2, None);
    let text = status_text(&run);
    assert!(text.contains("out of the pool for local use"), "{text}");
    a.clear_requests();
    b.clear_requests();
    for _ in 0..2 {
        run_one(&run);
    }
    assert_eq!(
        (a.inference_requests().len(), b.inference_requests().len()),
        (0, 2),
        "jobs only on the member left"
    );

    // The other one too: nothing is left, the model is withdrawn.
    b.set_foreign_busy(1);
    wait_caps(&run.conn, S10, "withdrawing the model", |c| {
        offered_ids(c).is_empty()
    });
    let r = run.run_job(&job(&new_job_id(), MODEL, chat_request("x")));
    let e = r.expect_error("out_of_capacity");
    assert_eq!(
        e["message"], "not admitting jobs: the device is in local use",
        "{e}"
    );

    // The first is quiet again: the model is back with its slots alone, then with both.
    a.set_foreign_busy(0);
    wait_caps(&run.conn, S10, "offering the first member again", |c| {
        slots_offered(c) == Some(2)
    });
    b.set_foreign_busy(0);
    wait_caps(&run.conn, S10, "offering both again", |c| {
        slots_offered(c) == Some(4)
    });
}
