//! llama-server's total_slots bounds the jobs sent to it, and the advertised
//! per-model max_concurrent says so.

mod support;

use std::time::Duration;
use support::agent::Setup;
use support::fake_backend::{FakeBackend, Kind};
use support::jobs::{backend_entry, chat_request, collect, job, new_job_id, offer, start_agent};
use support::watchdog;

#[test]
fn a_backend_with_one_slot_gets_one_job_at_a_time() {
    let _w = watchdog(Duration::from_secs(30), "backend slots");
    let fake = FakeBackend::start(Kind::LlamaCpp, &["one-slot"]);
    fake.set_slots(1);
    fake.set_stream_len(5, Duration::from_millis(80));
    let mut s = Setup::new("slots");
    s.set("/limits/max_concurrent", serde_json::json!(4));
    let run = start_agent(s, vec![backend_entry(&fake)], &[], &["one-slot"]);
    let m = offer(&run.caps, "one-slot").expect("offered");
    assert_eq!(m["max_concurrent"], 1, "{m}");
    assert_eq!(run.caps["limits"]["max_concurrent_total"], 4);

    let (a, b) = (new_job_id(), new_job_id());
    run.conn.send_json(&job(&a, "one-slot", chat_request("x")));
    run.conn.send_json(&job(&b, "one-slot", chat_request("x")));
    let results = collect(&run.conn, &[&a, &b], Duration::from_secs(10));
    results[&a].expect_done();
    let refused = results[&b].expect_error("out_of_capacity");
    assert!(
        refused["message"].as_str().unwrap().contains("slots"),
        "{refused}"
    );
    assert_eq!(
        fake.inference_requests().len(),
        1,
        "the backend saw only one job"
    );
    // The slot is back: the next job runs.
    let c = new_job_id();
    run.conn.send_json(&job(&c, "one-slot", chat_request("x")));
    collect(&run.conn, &[&c], Duration::from_secs(10))[&c].expect_done();
}
