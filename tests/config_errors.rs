//! Bad configuration, end to end: the binary logs the config parser's message as its one
//! stderr line and exits 2, the same through `validate` and `run`, and `run` does not
//! connect. Which configs are refused, and in which words, is the parser's table test
//! (src/config/tests.rs, `every_rejection_names_file_key_and_problem_exactly`); the lines below
//! are copied from it, one per place a problem can come from.

mod support;

use std::time::Duration;

use serde_json::json;
use support::agent::{run_cli, write_config, Setup};
use support::watchdog;

type Env<'a> = &'a [(&'a str, &'a str)];

#[test]
fn a_bad_config_prints_the_parsers_line_and_exits_2_without_connecting() {
    let _w = watchdog(Duration::from_secs(60), "config_errors_end_to_end");
    let s = Setup::new("badconfig");
    let home = s.dir.path();

    // The same config as the failing cases, valid: what fails below is the one change.
    let good = s.write_config();
    let good = good.to_str().unwrap().to_string();
    let out = run_cli(
        &["--config", &good, "validate"],
        &[],
        home,
        Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(0), "{}", out.describe());

    let mut bad = s.config.clone();
    bad["limits"]["max_concurrent"] = json!(0);
    let bad = write_config(home, "bad.json", &bad);
    let bad = bad.to_str().unwrap().to_string();

    // An API key whose variable is set, for a backend it would reach in clear text: the
    // line names the variable's setting, never its value.
    let mut remote = s.config.clone();
    remote["backends"] = json!([{"kind": "vllm", "url": "http://192.0.2.10:8000",
                                 "api_key_env": "USEPOD_TEST_REMOTE_KEY"}]);
    let remote = write_config(home, "remote.json", &remote);
    let remote = remote.to_str().unwrap().to_string();

    let missing = s.dir.join("nope.json");
    let missing = missing.to_str().unwrap().to_string();
    let enoent = std::io::Error::from_raw_os_error(2);

    // (config file, environment, the line expected)
    let cases: [(&str, Env, String); 4] = [
        (
            &bad,
            &[],
            format!(
                "config error in {bad}: limits.max_concurrent: must be between 1 and 256, got 0"
            ),
        ),
        (
            &good,
            &[(
                "USEPOD_EDGE_COORDINATOR_URL",
                "http://localhost:1/provider/connect",
            )],
            "config error in environment: USEPOD_EDGE_COORDINATOR_URL: must be a wss:// (or \
             loopback ws://) URL, got http://localhost:1/provider/connect"
                .to_string(),
        ),
        (
            &remote,
            &[("USEPOD_TEST_REMOTE_KEY", "sk-hunter2")],
            format!(
                "config error in {remote}: backends[0].api_key_env: the backend's API key would \
                 go in clear text over http to http://192.0.2.10:8000/, which is not this host; \
                 reach the backend through a loopback address (an SSH or TLS tunnel), or set \
                 backends[0].allow_insecure to true if that network is trusted"
            ),
        ),
        (
            &missing,
            &[],
            format!("config error in {missing}: cannot read file: {enoent}"),
        ),
    ];
    for (path, envs, line) in &cases {
        for sub in ["validate", "run"] {
            let out = run_cli(
                &["--config", path, sub],
                envs,
                home,
                Duration::from_secs(10),
            );
            assert!(
                !out.timed_out,
                "{sub} {path}: did not exit\n{}",
                out.describe()
            );
            assert_eq!(out.code, Some(2), "{sub} {path}\n{}", out.describe());
            // One log line: its timestamp, the level, then the parser's message itself.
            let lines = out.stderr_lines();
            assert_eq!(lines.len(), 1, "{sub} {path}: one line\n{}", out.describe());
            let (at, message) = lines[0]
                .split_once(" ERROR [usepod_edge] ")
                .unwrap_or_else(|| panic!("{sub} {path}: an ERROR log line: {:?}", lines[0]));
            assert!(
                at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
                "{sub} {path}: a UTC timestamp first: {at:?}"
            );
            assert_eq!(message, line, "{sub} {path}: the parser's message");
        }
    }
    assert_eq!(
        s.coord.tcp_accepts(),
        0,
        "`run` connected despite a bad config"
    );
}
