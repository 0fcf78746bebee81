//! The earnings ledger on the real binary (issue 14): each job that reached a worker
//! leaves one line with its exact tokens, prices and expected amount; `usepod-edge
//! ledger` sums the file and its rotated siblings to the micro-unit; the Prometheus
//! textfile carries the same totals; rotation, a torn last line and an unwritable path
//! neither break the reader nor stop the agent.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::agent::{run_cli, CliOutput, Setup};
use support::fake_backend::{FakeBackend, Fault, Kind};
use support::jobs::{backend_entry, cancel, chat_request, job, new_job_id, start_agent, Running};
use support::{wait_until, watchdog};

const S5: Duration = Duration::from_secs(5);

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("ledger line {l:?}: {e}")))
        .collect()
}

fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    assert!(
        wait_until(S5, || lines(path).len() >= n),
        "{} should hold {n} line(s), has {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
    lines(path)
}

fn ledger_cli(r: &Running, args: &[&str]) -> CliOutput {
    let config = r.setup.write_config();
    let mut argv = vec!["--config", config.to_str().unwrap(), "ledger"];
    argv.extend_from_slice(args);
    let out = run_cli(&argv, &[], r.setup.dir.path(), Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.describe());
    out
}

fn ledger_json(r: &Running, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = ledger_cli(r, &a);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()))
}

fn rotated(base: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", base.display()))
}

#[test]
fn every_job_that_ran_is_a_line_and_the_command_sums_them_exactly() {
    let _w = watchdog(Duration::from_secs(60), "ledger sums");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["alpha", "beta"]);
    let mut s = Setup::new("ledger-sums");
    let textfile = s.dir.join("usepod_edge.prom");
    s.set(
        "/status",
        json!({"interval_s": 0.2, "metrics_textfile": textfile}),
    );
    s.set(
        "/pricing/models",
        json!({"beta": {"input_per_1m": 2_000_000, "output_per_1m": 3_000_000}}),
    );
    // No ledger section: the default path is beside the state file.
    let ledger = s.key_path.with_file_name("ledger.jsonl");
    let r = start_agent(s, vec![backend_entry(&fb)], &[], &["alpha", "beta"]);

    let ids: Vec<String> = (0..4).map(|_| new_job_id()).collect();
    // 1200 * 0.5 + 345 * 1 = 945 micro-USDC.
    fb.set_reply(&["a", "b"], (1200, 345));
    r.run_job(&job(&ids[0], "alpha", chat_request("one")))
        .expect_done();
    // 1001 * 2 + 7 * 3 = 2023.
    fb.set_reply(&["a"], (1001, 7));
    r.run_job(&job(&ids[1], "beta", chat_request("two")))
        .expect_done();
    fb.set_fault(Fault::Status(500, "{\"error\":\"boom\"}".into()));
    r.run_job(&job(&ids[2], "alpha", chat_request("three")))
        .expect_error("internal");
    fb.set_fault(Fault::None);
    // 3 * 0.5 + 1 * 1 = 2.5: rounded down to 2.
    fb.set_reply(&["a"], (3, 1));
    r.run_job(&job(&ids[3], "alpha", chat_request("four")))
        .expect_done();
    // Refused at admission: nothing ran, no line.
    r.run_job(&job(&new_job_id(), "gamma", chat_request("no")))
        .expect_error("model_not_loaded");
    // Cancelled mid-stream: a line with outcome "cancelled" and nothing expected.
    fb.set_stream_len(200, Duration::from_millis(20));
    let cancelled = new_job_id();
    r.conn
        .send_json(&job(&cancelled, "alpha", chat_request("five")));
    assert!(wait_until(S5, || fb.open_streams() == 1));
    r.conn.send_json(&cancel(&cancelled));
    assert!(fb.wait_client_closed(S5).is_some());

    let got = wait_lines(&ledger, 5);
    assert_eq!(got.len(), 5, "{got:#?}");
    let backend = json!({"kind": "llamacpp", "url": format!("{}/", fb.url())});
    let want = [
        (&ids[0], "alpha", 1200, 345, 500_000, 1_000_000, 945, "done"),
        (&ids[1], "beta", 1001, 7, 2_000_000, 3_000_000, 2023, "done"),
        (&ids[2], "alpha", 0, 0, 500_000, 1_000_000, 0, "internal"),
        (&ids[3], "alpha", 3, 1, 500_000, 1_000_000, 2, "done"),
        (
            &cancelled,
            "alpha",
            0,
            0,
            500_000,
            1_000_000,
            0,
            "cancelled",
        ),
    ];
    for (line, (id, model, tin, tout, pin, pout, micro, outcome)) in got.iter().zip(want) {
        let shape = json!({
            "job_id": id, "model": model, "backend": backend,
            "input_tokens": tin, "output_tokens": tout,
            "input_per_1m": pin, "output_per_1m": pout,
            "expected_micro_usdc": micro, "outcome": outcome,
        });
        for (k, v) in shape.as_object().unwrap() {
            assert_eq!(&line[k], v, "{k} of {line}");
        }
        let time = line["time"].as_str().unwrap();
        assert!(time.ends_with("+00:00") && time.len() == 35, "{time}");
        assert!(line["duration_ms"].is_u64(), "{line}");
        assert_eq!(
            line.as_object().unwrap().len(),
            11,
            "no extra fields: {line}"
        );
    }
    let mode = std::fs::metadata(&ledger).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let text = ledger_cli(&r, &[]).stdout;
    assert_eq!(
        text,
        format!(
            "ledger: {}\n       jobs  errors  cancelled  tokens in  tokens out  expected USDC\n\
             total     5       1          1       2204         353       0.002970\n",
            ledger.display()
        )
    );
    let v = ledger_json(&r, &["--by", "model"]);
    assert_eq!(
        v["total"],
        json!({"jobs": 5, "done": 3, "errors": 1, "cancelled": 1, "input_tokens": 2204,
               "output_tokens": 353, "expected_micro_usdc": 2970, "expected_usdc": "0.002970"})
    );
    assert_eq!(v["files"], json!([ledger.display().to_string()]));
    assert_eq!(v["skipped_lines"], 0);
    let groups: Vec<(&str, u64, u64)> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap(),
                g["jobs"].as_u64().unwrap(),
                g["expected_micro_usdc"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(groups, [("alpha", 4, 947), ("beta", 1, 2023)]);
    let by_day = ledger_json(&r, &["--by", "day", "--since", "1d"]);
    assert_eq!(by_day["total"]["jobs"], 5);
    assert_eq!(by_day["groups"][0]["key"].as_str().map(str::len), Some(10));
    let future = ledger_json(&r, &["--since", "2999-01-01"]);
    assert_eq!(future["total"]["jobs"], 0);
    assert_eq!(future["since"], "2999-01-01T00:00:00.000000000+00:00");

    // The textfile carries the same totals as running counters.
    let want = [
        "usepod_edge_ledger_jobs_total 5",
        "usepod_edge_ledger_errors_total 1",
        "usepod_edge_ledger_cancelled_total 1",
        "usepod_edge_ledger_input_tokens_total 2204",
        "usepod_edge_ledger_output_tokens_total 353",
        "usepod_edge_ledger_expected_micro_usdc_total 2970",
        "usepod_edge_ledger_lines_lost_total 0",
    ];
    let read = || std::fs::read_to_string(&textfile).unwrap_or_default();
    assert!(
        wait_until(S5, || want.iter().all(|w| read().lines().any(|l| l == *w))),
        "textfile lacks one of {want:?}:\n{}",
        read()
    );
}

#[test]
fn validate_names_the_ledger_and_a_bad_since_or_by_is_a_usage_error() {
    let _w = watchdog(Duration::from_secs(20), "ledger usage");
    let s = Setup::new("ledger-usage");
    let config = s.write_config();
    let run = |args: &[&str]| {
        let mut argv = vec!["--config", config.to_str().unwrap(), "ledger"];
        argv.extend_from_slice(args);
        run_cli(&argv, &[], s.dir.path(), Duration::from_secs(10))
    };
    let out = run(&["--since", "last tuesday"]);
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains("--since wants a date"),
        "{}",
        out.describe()
    );
    let out = run(&["--by", "week"]);
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains("--by wants day or model"),
        "{}",
        out.describe()
    );
    let out = s.cli("validate");
    let want = format!(
        "ledger: {} (rotated past 4194304 bytes, 4 old file(s) kept)",
        s.key_path.with_file_name("ledger.jsonl").display()
    );
    assert!(out.stdout.lines().any(|l| l == want), "{}", out.describe());
    // No ledger yet: zero totals, and success.
    let out = run(&["--json"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (
            v["total"]["jobs"].as_u64(),
            v["files"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
}

#[test]
fn a_tiny_max_bytes_rotates_every_line_and_keeps_n_files() {
    let _w = watchdog(Duration::from_secs(40), "ledger rotation");
    let fb = FakeBackend::start(Kind::Ollama, &["m"]);
    fb.set_reply(&["a"], (1_000_000, 0));
    let mut s = Setup::new("ledger-rotation");
    let ledger = s.dir.join("books").join("ledger.jsonl");
    s.set(
        "/ledger",
        json!({"path": ledger, "max_bytes": 1, "keep": 2}),
    );
    let r = start_agent(s, vec![backend_entry(&fb)], &[], &["m"]);
    let ids: Vec<String> = (0..4).map(|_| new_job_id()).collect();
    for id in &ids {
        r.run_job(&job(id, "m", chat_request("x"))).expect_done();
    }
    let id_of = |p: &Path| -> Vec<String> {
        lines(p)
            .iter()
            .map(|l| l["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        wait_until(S5, || id_of(&ledger) == [ids[3].clone()]),
        "{:?}",
        id_of(&ledger)
    );
    assert_eq!(id_of(&rotated(&ledger, 1)), [ids[2].clone()]);
    assert_eq!(id_of(&rotated(&ledger, 2)), [ids[1].clone()]);
    assert!(
        !rotated(&ledger, 3).exists(),
        "keep 2: the first job's file is gone"
    );
    let v = ledger_json(&r, &[]);
    assert_eq!(v["total"]["jobs"], 3);
    // 1M input tokens at 0.5 USDC per 1M, three times.
    assert_eq!(v["total"]["expected_usdc"], "1.500000");
    let files: Vec<String> = [rotated(&ledger, 2), rotated(&ledger, 1), ledger.clone()]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(v["files"], json!(files));
}

/// A line as an earlier run would have left it.
fn old_line(id: &str, micro: u64) -> String {
    json!({"time": "2026-11-20T10:00:00.000000000+00:00", "job_id": id, "model": "m",
           "backend": {"kind": "vllm", "url": "http://127.0.0.1:8000/"},
           "input_tokens": 10, "output_tokens": 20, "duration_ms": 5,
           "input_per_1m": 1, "output_per_1m": 1, "expected_micro_usdc": micro,
           "outcome": "done"})
    .to_string()
}

#[test]
fn a_torn_line_is_sealed_skipped_and_reported_never_fatal() {
    let _w = watchdog(Duration::from_secs(40), "ledger torn");
    let fb = FakeBackend::start(Kind::Vllm, &["m"]);
    fb.set_reply(&["a"], (2_000_000, 0));
    let mut s = Setup::new("ledger-torn");
    let ledger = s.dir.join("ledger.jsonl");
    s.set("/ledger/path", json!(ledger));
    // A crash tore the last line of an earlier run.
    let old = old_line("11111111-1111-4111-8111-111111111111", 7);
    std::fs::write(&ledger, format!("{old}\n{}", &old[..50])).unwrap();
    let mut r = start_agent(s, vec![backend_entry(&fb)], &[], &["m"]);
    let id = new_job_id();
    r.run_job(&job(&id, "m", chat_request("x"))).expect_done();
    // The new line starts on a line of its own: the fragment does not swallow it.
    assert!(wait_until(S5, || std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .any(|l| l.contains(&id) && l.starts_with('{'))));
    r.agent.kill();
    // And this run is cut in the middle of a line too.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&ledger)
        .unwrap();
    std::io::Write::write_all(&mut f, &old.as_bytes()[..30]).unwrap();
    drop(f);

    let v = ledger_json(&r, &[]);
    // 2M input tokens at 0.5 per 1M = 1 USDC, plus the old line's 7 micro-units.
    assert_eq!(v["total"]["jobs"], 2);
    assert_eq!(v["total"]["expected_micro_usdc"], 1_000_007);
    assert_eq!(v["skipped_lines"], 2);
    let path = ledger.display().to_string();
    assert_eq!(
        v["skipped"],
        json!([{"file": path, "line": 2}, {"file": path, "line": 4}])
    );
    let text = ledger_cli(&r, &[]).stdout;
    assert!(
        text.ends_with(&format!(
            "total     2       0          0    2000010          20       1.000007\n\
             skipped 2 unreadable line(s) (torn by a crash, or not a ledger entry): \
             {path}:2, {path}:4\n"
        )),
        "{text}"
    );
}

#[test]
fn an_unwritable_ledger_is_logged_once_and_jobs_go_on() {
    let _w = watchdog(Duration::from_secs(40), "ledger unwritable");
    let fb = FakeBackend::start(Kind::LlamaCpp, &["m"]);
    let mut s = Setup::new("ledger-unwritable");
    // A regular file where a directory should be: refused even to root.
    let blocker = s.dir.join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let ledger = blocker.join("ledger.jsonl");
    s.set("/ledger/path", json!(ledger));
    s.set("/status/interval_s", json!(0.2));
    let state_file = s.key_path.with_file_name("state.json");
    let mut r = start_agent(s, vec![backend_entry(&fb)], &[], &["m"]);
    for _ in 0..3 {
        r.run_job(&job(&new_job_id(), "m", chat_request("x")))
            .expect_done();
    }
    let state = || -> Value {
        std::fs::read_to_string(&state_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    assert!(
        wait_until(S5, || state()["ledger"]["lines_lost"] == 3),
        "{}",
        state()
    );
    assert_eq!(
        state()["ledger"]["jobs"],
        3,
        "counted even though not written"
    );
    let warning = format!("cannot write the earnings ledger {}", ledger.display());
    assert_eq!(r.agent.count_logs(&warning), 1, "{}", r.agent.logs());
    assert!(r.agent.is_running());
    // Once the path can be written, lines come again.
    std::fs::remove_file(&blocker).unwrap();
    let id = new_job_id();
    r.run_job(&job(&id, "m", chat_request("x"))).expect_done();
    let got = wait_lines(&ledger, 1);
    assert_eq!(got[0]["job_id"], id.as_str());
    assert!(r
        .agent
        .wait_for_log("is written again (3 line(s) were lost)", S5));
}
