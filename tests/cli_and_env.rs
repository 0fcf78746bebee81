//! The command line and environment: `--version`, `--help`, `run` as the default command,
//! and the USEPOD_EDGE_* variables overriding the config file.

mod support;

use std::time::Duration;

use serde_json::json;
use support::agent::{run_cli, Agent, Setup, VERSION};
use support::{refused_port, watchdog};

const S5: Duration = Duration::from_secs(5);

#[test]
fn version_prints_the_crate_version() {
    let _w = watchdog(Duration::from_secs(15), "version");
    let s = Setup::new("version");
    let out = run_cli(&["--version"], &[], s.dir.path(), Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(out.stdout.contains(VERSION), "{}", out.describe());
}

#[test]
fn help_lists_the_commands() {
    let _w = watchdog(Duration::from_secs(15), "help");
    let s = Setup::new("help");
    let out = run_cli(&["--help"], &[], s.dir.path(), Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{}", out.describe());
    for word in ["run", "validate", "identity", "--config"] {
        assert!(
            out.stdout.contains(word),
            "help lacks {word}\n{}",
            out.describe()
        );
    }
}

#[test]
fn environment_overrides_config_path_url_and_enrollment_code_and_run_is_the_default() {
    let _w = watchdog(Duration::from_secs(15), "env_overrides");
    let mut s = Setup::new("envover");
    // The file points nowhere useful; the environment fixes it.
    s.set(
        "/coordinator/url",
        json!(format!(
            "wss://localhost:{}/provider/connect",
            refused_port()
        )),
    );
    s.set("/coordinator/enrollment_code", json!("FROM-FILE"));
    let path = s.write_config();
    let url = s.coord.url();
    let agent = Agent::spawn(
        "envover",
        &[],
        &[
            ("USEPOD_EDGE_CONFIG", path.to_str().unwrap()),
            ("USEPOD_EDGE_COORDINATOR_URL", &url),
            ("USEPOD_EDGE_ENROLLMENT_CODE", "FROM-ENV"),
        ],
        s.dir.path(),
    );
    let Some(conn) = s.coord.try_accept(S5) else {
        panic!(
            "no connection: USEPOD_EDGE_CONFIG and USEPOD_EDGE_COORDINATOR_URL with no \
             arguments (run by default) should reach the test coordinator\n{}",
            agent.logs()
        );
    };
    let auth = conn.authenticate(Some("prov-env"));
    assert_eq!(
        auth.enrollment_code.as_deref(),
        Some("FROM-ENV"),
        "USEPOD_EDGE_ENROLLMENT_CODE overrides the file"
    );
    conn.expect_capabilities(S5);
}

#[test]
fn log_level_flag_and_environment_filter_the_logs() {
    let _w = watchdog(Duration::from_secs(15), "log_level");
    let s = Setup::new("loglevel");
    let path = s.write_config();
    let p = path.to_str().unwrap();

    // --log-level error: the INFO line about authentication must not appear.
    let mut quiet = Agent::spawn(
        "quiet",
        &["--config", p, "--log-level", "error", "run"],
        &[],
        s.dir.path(),
    );
    let c = s.coord.accept(S5);
    c.authenticate(Some("prov-quiet"));
    c.expect_capabilities(S5);
    // Absence is only proven by the whole output: stop the agent (a drain, which has
    // nothing to do) and read until it closes its end.
    quiet.signal("TERM");
    assert!(
        quiet.wait_exit(S5).is_some_and(|st| st.success()),
        "the quiet agent did not exit on TERM:\n{}",
        quiet.logs()
    );
    assert!(quiet.wait_output_closed(S5), "its output never ended");
    assert!(
        !quiet.has_log("authenticated as"),
        "INFO line printed at --log-level error:\n{}",
        quiet.logs()
    );
    drop(c);
    drop(quiet);

    // USEPOD_EDGE_LOG=info: it appears.
    let loud = Agent::spawn(
        "loud",
        &["--config", p, "run"],
        &[("USEPOD_EDGE_LOG", "info")],
        s.dir.path(),
    );
    let c = s.coord.accept(S5);
    c.authenticate(Some("prov-loud"));
    c.expect_capabilities(S5);
    assert!(
        loud.wait_for_log("authenticated as prov-loud", S5),
        "USEPOD_EDGE_LOG=info did not show the INFO line:\n{}",
        loud.logs()
    );
}
