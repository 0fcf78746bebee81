//! The SysV init script, for real: `init/install.sh` into a scratch root (DESTDIR), then
//! `etc/init.d/usepod-edge` start / status / stop / restart run through start-stop-daemon
//! against a plain ws:// test coordinator on 127.0.0.1. Checks the process (pid, binary,
//! user), the pidfile, the log file, the LSB exit codes, the 1001 close of a stop's drain,
//! that a bad config is refused at start, and that install keeps an existing config.
//!
//! The script's paths come from the environment (DAEMON, CONFIG, PIDFILE, LOGFILE,
//! STATE_DIR, DAEMON_USER, DEFAULTS_FILE), so nothing outside the scratch root is touched.
//! As root the agent runs as `nobody` (start-stop-daemon --chuid); otherwise as the caller.
//! Without start-stop-daemon (not Debian/Ubuntu) the test prints SKIPPED, or fails in CI.

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::agent::base_config;
use support::coordinator::Coordinator;
use support::service::{alive, id, install_into, start_stop_daemon, Service, S10};
use support::{refused_port, wait_until, watchdog};

#[test]
fn sysv_script_starts_reports_and_stops_the_agent_through_start_stop_daemon() {
    let Some(ssd) = start_stop_daemon() else {
        support::skip_or_fail(
            "sysv_script_starts_reports_and_stops_the_agent_through_start_stop_daemon",
            "no start-stop-daemon on this machine (the SysV script needs it; Debian: dpkg)",
        );
        return;
    };
    let _w = watchdog(Duration::from_secs(120), "service_sysv");
    eprintln!("using {}", ssd.display());
    let svc = Service::install("svc");

    // What install put there.
    for f in [
        "usr/bin/usepod-edge",
        "etc/init.d/usepod-edge",
        "etc/logrotate.d/usepod-edge",
        "etc/usepod-edge/config.json",
        "etc/usepod-edge/config.example.json",
        "usr/share/doc/usepod-edge/config.example.md",
    ] {
        assert!(svc.root.join(f).is_file(), "install did not create {f}");
    }
    assert_eq!(
        std::fs::metadata(&svc.script).unwrap().mode() & 0o111,
        0o111,
        "the init script is executable"
    );
    assert_eq!(
        std::fs::metadata(&svc.state_dir).unwrap().mode() & 0o777,
        0o700,
        "state dir mode"
    );
    let init = std::fs::read_to_string(&svc.script).unwrap();
    assert!(
        init.contains("DAEMON=${DAEMON:-/usr/bin/usepod-edge}"),
        "the installed script runs the binary from PREFIX/bin"
    );

    // The shipped example config is valid and has no unknown keys.
    let v = Command::new(&svc.daemon)
        .args(["--config", svc.config.to_str().unwrap(), "validate"])
        .env("HOME", svc.root.as_os_str())
        .output()
        .unwrap();
    let vtext = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(v.status.success(), "example config invalid:\n{vtext}");
    assert!(
        !vtext.contains("unknown key"),
        "example config has unknown keys:\n{vtext}"
    );

    // Our config: the test coordinator; a second install keeps it.
    let coord = Coordinator::start_plain();
    let key_path = svc.state_dir.join("identity.key");
    let mut config = base_config(&coord.url(), None, &key_path);
    config["backends"] = json!([{"kind": "llamacpp",
                                 "url": format!("http://127.0.0.1:{}", refused_port())}]);
    svc.write_config(&config);
    let written = std::fs::read_to_string(&svc.config).unwrap();
    let again = install_into(&svc.root);
    assert_eq!(again.code, Some(0), "second install: {}", again.text);
    assert_eq!(
        std::fs::read_to_string(&svc.config).unwrap(),
        written,
        "install overwrote an existing config"
    );
    assert!(again.text.contains("kept"), "{}", again.text);
    svc.write_config(&config);

    // The defaults file is read (and exported to the agent).
    std::fs::create_dir_all(svc.root.join("etc/default")).unwrap();
    std::fs::write(
        svc.root.join("etc/default/usepod-edge"),
        "LOG_LEVEL=debug\n",
    )
    .unwrap();

    // Not running yet.
    let st = svc.run("status");
    assert_eq!(st.code, Some(3), "status before start: {}", st.text);

    // start: a daemon under the service user that connects.
    let (pid, conn) = svc.start_and_connect(&coord, "start");
    assert!(alive(pid), "pidfile pid {pid} is not alive");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("read /proc/PID/exe");
    assert_eq!(
        exe,
        svc.daemon.canonicalize().unwrap(),
        "the pidfile's pid is not our binary"
    );
    if let Some(uid) = id(&["-u", &svc.user]) {
        let proc_uid = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
        assert_eq!(proc_uid.to_string(), uid, "runs as {}", svc.user);
    }
    let st = svc.run("status");
    assert_eq!(st.code, Some(0), "status while running: {}", st.text);
    assert!(st.text.contains("is running"), "{}", st.text);
    assert!(st.text.contains(&pid.to_string()), "{}", st.text);

    // A second start is a no-op.
    let again = svc.run("start");
    assert_eq!(again.code, Some(0), "{}", again.text);
    assert!(again.text.contains("already running"), "{}", again.text);
    assert_eq!(svc.pid(), Some(pid), "a second start replaced the pidfile");
    assert_eq!(
        coord.try_accept(Duration::from_millis(300)).map(|_| ()),
        None
    );

    // Logs reach the file, at the defaults file's level; the identity is in STATE_DIR.
    assert!(
        wait_until(S10, || svc.log().contains("DEBUG")),
        "no DEBUG lines in {}",
        svc.logfile.display()
    );
    assert!(key_path.is_file(), "identity key not created in STATE_DIR");

    // stop: the agent drains (1001 close), exits; pidfile gone; status 3.
    let out = svc.run("stop");
    assert_eq!(out.code, Some(0), "stop: {}", out.text);
    assert!(!alive(pid), "pid {pid} still running after stop");
    assert!(!svc.pidfile.exists(), "pidfile left after stop");
    assert!(conn.wait_closed(S10), "the connection did not end");
    assert_eq!(
        conn.peer_close().flatten().map(|(code, _)| code),
        Some(1001),
        "a stop closes the session with 1001 (going away)"
    );
    let st = svc.run("status");
    assert_eq!(st.code, Some(3), "status after stop: {}", st.text);
    assert!(st.text.contains("not running"), "{}", st.text);
    let out = svc.run("stop");
    assert_eq!(out.code, Some(0), "stop when stopped: {}", out.text);

    // restart from stopped starts; reload applies a changed config to the same process
    // on the same connection, and says what changed.
    let (pid1, c1) = svc.start_and_connect(&coord, "restart");
    config["limits"]["max_concurrent"] = json!(3);
    svc.write_config(&config);
    let out = svc.run("reload");
    assert_eq!(out.code, Some(0), "reload: {}", out.text);
    assert!(
        out.text.contains("limits.max_concurrent: 8 -> 3"),
        "{}",
        out.text
    );
    assert_eq!(svc.pid(), Some(pid1), "reload replaced the agent");
    assert!(alive(pid1));
    assert_eq!(
        coord.try_accept(Duration::from_millis(300)).map(|_| ()),
        None
    );
    assert!(c1.ended().is_none(), "reload dropped the session");
    let out = svc.run("stop");
    assert_eq!(out.code, Some(0), "stop: {}", out.text);
    assert!(!alive(pid1));

    // A bad config is refused at start with LSB 6 and the reason; nothing keeps running.
    config["limits"]["max_concurrent"] = json!(0);
    svc.write_config(&config);
    let out = svc.run("start");
    assert_eq!(out.code, Some(6), "start with a bad config: {}", out.text);
    assert!(out.text.contains("max_concurrent"), "{}", out.text);
    assert!(!svc.pidfile.exists(), "pidfile after a refused start");
    assert_eq!(svc.run("status").code, Some(3));
}
