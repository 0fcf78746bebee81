//! A smoke test of one binary, end to end: `--version`, `validate` on the shipped example
//! config, and a short session against the TLS test coordinator on 127.0.0.1 (handshake,
//! capabilities, one streamed job from a fake backend, SIGTERM ends it with a 1001 close
//! and exit 0).
//!
//! By default it runs the binary cargo built. `make smoke-aarch64` runs the cross-built
//! one from dist/ under qemu-user instead:
//!
//!   USEPOD_EDGE_BIN=dist/usepod-edge-0.1.0-aarch64-unknown-linux-musl \
//!   USEPOD_EDGE_RUNNER=qemu-aarch64-static cargo test --test smoke_binary
//!
//! Timeouts are generous: under emulation the TLS handshake is several times slower.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::agent::{run_cli, Setup, VERSION};
use support::fake_backend::{FakeBackend, Kind};
use support::jobs::{backend_entry, chat_request, done_tokens, job, new_job_id, start_agent};
use support::watchdog;

const S30: Duration = Duration::from_secs(30);

fn which_binary() -> String {
    let bin = std::env::var("USEPOD_EDGE_BIN").unwrap_or_else(|_| support::agent::BIN.into());
    match std::env::var("USEPOD_EDGE_RUNNER") {
        Ok(r) if !r.is_empty() => format!("{bin} (under {r})"),
        _ => bin,
    }
}

#[test]
fn version_validate_and_a_job_over_tls() {
    let _w = watchdog(Duration::from_secs(120), "smoke_binary");
    eprintln!("smoke test of {}", which_binary());
    let setup = Setup::new("smoke");

    let out = run_cli(&["--version"], &[], setup.dir.path(), S30);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(out.stdout.contains(VERSION), "{}", out.describe());

    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("init/config.example.json");
    let out = run_cli(
        &["--config", example.to_str().unwrap(), "validate"],
        &[],
        setup.dir.path(),
        S30,
    );
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(out.stdout.contains("is valid"), "{}", out.describe());
    assert!(!out.stderr.contains("unknown key"), "{}", out.describe());

    let out = setup.cli("validate");
    assert_eq!(out.code, Some(0), "{}", out.describe());

    // A session: TLS handshake with the test CA, auth, capabilities, one job.
    let fb = FakeBackend::start(Kind::LlamaCpp, &["tiny"]);
    let mut r = start_agent(setup, vec![backend_entry(&fb)], &[], &["tiny"]);
    let id = new_job_id();
    let res = r.run_job(&job(&id, "tiny", chat_request("hi")));
    let done = res.expect_done();
    assert_eq!(done["job_id"], id.as_str(), "{done}");
    assert_eq!(done_tokens(done), (11, 6), "usage from the stream: {done}");
    assert!(!res.chunks.is_empty(), "no job_chunk before job_done");

    // SIGTERM: drain, close 1001, exit 0 (a runner passes the signal on).
    r.agent.signal("TERM");
    let status = r.agent.wait_exit(S30);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit after SIGTERM: {status:?}\n{}",
        r.agent.logs()
    );
    assert!(r.conn.wait_closed(S30), "the session did not end");
    assert_eq!(
        r.conn.peer_close().flatten().map(|(code, _)| code),
        Some(1001),
        "close code after SIGTERM"
    );
}
