//! `usepod-edge upgrade` end to end, on the real binary, with the SysV service of `init/`
//! (installed into a scratch root and run through start-stop-daemon, as in
//! tests/service_sysv.rs) against a plain ws:// coordinator on 127.0.0.1:
//!
//! - a signed newer build is installed, the running agent drains (1001) and its supervisor
//!   starts the new binary, which connects and is confirmed; a tampered build, one signed by
//!   an untrusted key, one for another architecture and one that is not newer are refused
//!   first, each leaving the installed binary and the running agent as they were;
//! - a signed build that crashes at start is rolled back by the probation script after its
//!   failed starts, and the previous binary connects again.
//!
//! "A newer build": the binary cargo built with a test trailer appended (src/release/version.rs:
//! with USEPOD_EDGE_TEST_TRAILER=1 a binary reports the trailer's version, and `crash=run`
//! makes it panic as `run` starts). Appended bytes do not change what runs, and the signature
//! covers them like any other byte. Release keys are test keys added through
//! `upgrade.trusted_keys`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::agent::{base_config, AGENT_ENV, BIN, VERSION};
use support::coordinator::Coordinator;
use support::service::{alive, start_stop_daemon, Out, Service, S10};
use support::stub_http::StaticHttp;
use support::{wait_until, watchdog, TempDir};
use usepod_edge::release::{elf, signature};

const SEED: [u8; 32] = [42; 32];
const UNTRUSTED: [u8; 32] = [9; 32];
const NEW_VERSION: &str = "0.2.0";

/// A copy of the binary with the test trailer `words` appended, at `dir/name`.
fn build(dir: &Path, name: &str, words: &str) -> PathBuf {
    let mut bytes = std::fs::read(BIN).expect("read the binary");
    bytes.extend_from_slice(format!("\n#usepod-edge-test {words}\n").as_bytes());
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `path.sig`, signed with `seed` (the library's signer; `release-sign` is used once below).
fn sign(path: &Path, seed: &[u8; 32]) {
    let bytes = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    std::fs::write(
        format!("{}.sig", path.display()),
        signature::sign(seed, name, &bytes),
    )
    .unwrap();
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The installed binary run as the operator would (`usepod-edge --config ... ARGS`), with
/// the service's environment.
fn cli(svc: &Service, args: &[&str]) -> Command {
    let mut cmd = Command::new(&svc.daemon);
    for k in AGENT_ENV {
        cmd.env_remove(k);
    }
    cmd.envs(svc.env.iter().map(|(k, v)| (k, v)))
        .env("HOME", &svc.state_dir)
        .arg("--config")
        .arg(&svc.config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `upgrade --from FROM` run to its end (bounded).
fn upgrade(svc: &Service, from: &Path, extra: &[&str]) -> Out {
    let mut args = vec!["upgrade", "--from", from.to_str().unwrap()];
    args.extend_from_slice(extra);
    finish(cli(svc, &args).spawn().expect("run upgrade"), "upgrade")
}

/// Waits for a child's end, at most 60 s.
fn finish(child: std::process::Child, what: &str) -> Out {
    support::register_child(child.id());
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not finish in 60 s"))
        .expect("wait");
    Out {
        code: out.status.code(),
        text: text(&out),
    }
}

/// The service with the test coordinator's config, trusting the test key; started and
/// connected. None where start-stop-daemon is missing (skipped).
fn service(
    name: &str,
    env: &[(&str, &str)],
) -> Option<(Service, Coordinator, u32, support::coordinator::Conn)> {
    if start_stop_daemon().is_none() {
        support::skip_or_fail(
            name,
            "no start-stop-daemon on this machine (the SysV script needs it; Debian: dpkg)",
        );
        return None;
    }
    let mut svc = Service::install(name);
    svc.env
        .push(("USEPOD_EDGE_TEST_TRAILER".into(), "1".into()));
    for (k, v) in env {
        svc.env.push(((*k).into(), (*v).into()));
    }
    let coord = Coordinator::start_plain();
    let mut config = base_config(&coord.url(), None, &svc.state_dir.join("identity.key"));
    config["upgrade"] = json!({"trusted_keys": [signature::public_of(&SEED)]});
    svc.write_config(&config);
    let (pid, conn) = svc.start_and_connect(&coord, "start");
    Some((svc, coord, pid, conn))
}

fn status(svc: &Service) -> String {
    let out = cli(svc, &["status"]).output().unwrap();
    text(&out)
}

/// Whether `status` says the last upgrade, to the test's newer version, was confirmed.
fn confirmed(status: &str) -> bool {
    status.lines().any(|l| {
        l.starts_with(&format!("last upgrade: {VERSION} -> {NEW_VERSION} "))
            && l.ends_with(": confirmed")
    })
}

/// `stop` through the init script, which must succeed and end the agent at `pid`.
fn stop(svc: &Service, pid: u32) {
    let out = svc.run("stop");
    assert_eq!(out.code, Some(0), "stop: {}", out.text);
    assert!(!alive(pid), "the agent outlived stop");
}

#[test]
fn a_signed_newer_build_upgrades_and_bad_builds_are_refused() {
    let _w = watchdog(Duration::from_secs(180), "upgrade");
    let Some((svc, coord, pid, conn)) = service(
        "a_signed_newer_build_upgrades_and_bad_builds_are_refused",
        &[("RESPAWN_DELAY", "1")],
    ) else {
        return;
    };
    let work = TempDir::new("upgrade-builds");
    let installed = std::fs::read(&svc.daemon).unwrap();
    let prev = PathBuf::from(format!("{}.prev", svc.daemon.display()));

    // Each refused: says why, exit 1, the installed binary and the running agent untouched.
    let tampered = build(work.path(), "tampered", &format!("version={NEW_VERSION}"));
    sign(&tampered, &SEED);
    let mut bytes = std::fs::read(&tampered).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&tampered, bytes).unwrap();

    let wrong_key = build(work.path(), "wrong-key", &format!("version={NEW_VERSION}"));
    sign(&wrong_key, &UNTRUSTED);

    let other_arch = build(work.path(), "other-arch", &format!("version={NEW_VERSION}"));
    let mut bytes = std::fs::read(&other_arch).unwrap();
    let other = if elf::HERE == elf::EM_AARCH64 {
        elf::EM_X86_64
    } else {
        elf::EM_AARCH64
    };
    bytes[18..20].copy_from_slice(&other.to_le_bytes());
    std::fs::write(&other_arch, bytes).unwrap();
    sign(&other_arch, &SEED);

    let same = build(work.path(), "same", &format!("version={VERSION}"));
    sign(&same, &SEED);

    for (file, why) in [
        (&tampered, "is not the one that was signed"),
        (&wrong_key, "which this agent does not trust"),
        (
            &other_arch,
            &format!("the new binary is for {}", elf::name(other)),
        ),
        (&same, "not newer than the running"),
    ] {
        let out = upgrade(&svc, file, &[]);
        assert_eq!(out.code, Some(1), "{}: {}", file.display(), out.text);
        assert!(
            out.text.contains(why),
            "{}: want {why:?} in\n{}",
            file.display(),
            out.text
        );
        assert_eq!(
            std::fs::read(&svc.daemon).unwrap(),
            installed,
            "{}",
            file.display()
        );
        assert!(
            !prev.exists(),
            "{}: a .prev after a refusal",
            file.display()
        );
        assert_eq!(
            svc.pid(),
            Some(pid),
            "{}: the agent was restarted",
            file.display()
        );
    }
    assert!(alive(pid));
    assert!(
        !conn.wait_closed(Duration::from_millis(100)),
        "a refusal closed the session"
    );

    // The good build, signed by `release-sign` with the key in a file.
    let good = build(work.path(), "good", &format!("version={NEW_VERSION}"));
    let key_file = work.join("release.key");
    std::fs::write(&key_file, format!("{}\n", signature::b64(&SEED))).unwrap();
    let out = Command::new(BIN)
        .arg("release-sign")
        .arg(&good)
        .env("USEPOD_EDGE_SIGNING_KEY_FILE", &key_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "release-sign: {}", text(&out));

    // A dry run checks it all and changes nothing.
    let out = upgrade(&svc, &good, &["--dry-run"]);
    assert_eq!(out.code, Some(0), "dry run: {}", out.text);
    assert!(
        out.text.contains("dry run") && out.text.contains("signature: good"),
        "{}",
        out.text
    );
    assert_eq!(std::fs::read(&svc.daemon).unwrap(), installed);
    assert!(!prev.exists());
    assert_eq!(svc.pid(), Some(pid));

    // The upgrade: swap, the agent drains (1001) and exits 75, its supervisor starts the
    // new binary, which connects; once authenticated the upgrade is confirmed.
    let child = cli(&svc, &["upgrade", "--from", good.to_str().unwrap()])
        .spawn()
        .unwrap();
    assert!(
        conn.wait_closed(S10),
        "the old agent did not close its session"
    );
    assert_eq!(
        conn.peer_close().flatten().map(|(code, _)| code),
        Some(1001),
        "the old agent drains and closes with 1001"
    );
    let Some(conn2) = coord.try_accept(S10) else {
        panic!("the new binary did not connect\n{}", svc.log());
    };
    conn2.authenticate(Some("prov-service"));
    conn2.expect_capabilities(S10);
    let out = finish(child, "upgrade");
    assert_eq!(out.code, Some(0), "upgrade: {}", out.text);
    assert!(out.text.contains("upgrade confirmed"), "{}", out.text);
    let new_pid = svc.pid().expect("a pidfile");
    assert_ne!(new_pid, pid, "the agent was not restarted");
    assert!(alive(new_pid) && !alive(pid));
    assert_eq!(
        std::fs::read(&svc.daemon).unwrap(),
        std::fs::read(&good).unwrap()
    );
    assert_eq!(
        std::fs::read(&prev).unwrap(),
        installed,
        ".prev is the old binary"
    );
    assert!(
        svc.log().contains("SIGUSR1: restarting for an upgrade"),
        "{}",
        svc.log()
    );
    assert!(
        wait_until(S10, || status(&svc)
            .contains(&format!("usepod-edge {NEW_VERSION} running"))),
        "status:\n{}",
        status(&svc)
    );
    let st = status(&svc);
    assert!(confirmed(&st), "{st}");

    stop(&svc, new_pid);
}

#[test]
fn a_build_that_crashes_at_start_is_rolled_back() {
    let _w = watchdog(Duration::from_secs(180), "rollback");
    let Some((svc, coord, pid, conn)) = service(
        "a_build_that_crashes_at_start_is_rolled_back",
        &[("RESPAWN_DELAY", "0"), ("PROBATION_MAX_FAILURES", "2")],
    ) else {
        return;
    };
    let work = TempDir::new("upgrade-crash");
    let installed = std::fs::read(&svc.daemon).unwrap();
    let bad = build(
        work.path(),
        "bad",
        &format!("version={NEW_VERSION} crash=run"),
    );
    sign(&bad, &SEED);

    // It passes every check before the swap: --version, validate and identity do not crash.
    let child = cli(&svc, &["upgrade", "--from", bad.to_str().unwrap()])
        .spawn()
        .unwrap();
    assert!(
        conn.wait_closed(S10),
        "the old agent did not close its session"
    );
    // Two crashed starts, then the previous binary is put back and connects again.
    let Some(conn2) = coord.try_accept(Duration::from_secs(30)) else {
        panic!("the previous binary did not come back\n{}", svc.log());
    };
    conn2.authenticate(Some("prov-service"));
    conn2.expect_capabilities(S10);
    let out = finish(child, "upgrade");
    assert_eq!(out.code, Some(1), "upgrade: {}", out.text);
    assert!(out.text.contains("upgrade rolled back"), "{}", out.text);

    let log = svc.log();
    assert_eq!(
        log.matches("test hook: this build crashes").count(),
        2,
        "two failed starts before the rollback:\n{log}"
    );
    assert!(log.contains("restored the previous binary"), "{log}");
    assert_eq!(
        std::fs::read(&svc.daemon).unwrap(),
        installed,
        "the old binary is back"
    );
    assert_eq!(
        std::fs::read(format!("{}.failed", svc.daemon.display())).unwrap(),
        std::fs::read(&bad).unwrap(),
        "the failed binary is kept as .failed"
    );
    let now = svc.pid().expect("a pidfile");
    assert!(alive(now) && now != pid);
    assert_eq!(
        std::fs::read_link(format!("/proc/{now}/exe")).unwrap(),
        svc.daemon.canonicalize().unwrap()
    );
    assert!(
        wait_until(S10, || status(&svc)
            .contains(&format!("usepod-edge {VERSION} running"))),
        "status:\n{}",
        status(&svc)
    );
    let st = status(&svc);
    assert!(
        st.contains(&format!(
            "last upgrade: {VERSION} -> {NEW_VERSION} ROLLED BACK"
        )) && st.contains("2 failed start(s)"),
        "{st}"
    );
    let json = cli(&svc, &["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["upgrade"]["outcome"], "rolled-back", "{v}");
    assert_eq!(v["upgrade"]["failed_starts"], 2, "{v}");

    stop(&svc, now);
}

/// A crash is not an upgrade: the SysV supervisor starts a killed agent again.
#[test]
fn the_sysv_supervisor_starts_a_crashed_agent_again() {
    let _w = watchdog(Duration::from_secs(120), "respawn");
    let Some((svc, coord, pid, conn)) = service(
        "the_sysv_supervisor_starts_a_crashed_agent_again",
        &[("RESPAWN_DELAY", "0")],
    ) else {
        return;
    };
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(conn.wait_closed(S10));
    let Some(conn2) = coord.try_accept(S10) else {
        panic!(
            "the supervisor did not start the agent again\n{}",
            svc.log()
        );
    };
    conn2.authenticate(Some("prov-service"));
    let now = svc.pid().expect("a pidfile");
    assert!(alive(now) && now != pid);
    assert!(
        svc.log().contains("exited with status 137"),
        "{}",
        svc.log()
    );
    stop(&svc, now);
    assert_eq!(svc.run("status").code, Some(3));
}

#[test]
fn release_key_writes_a_private_key_and_prints_its_public_half() {
    let dir = TempDir::new("release-key");
    let path = dir.join("k");
    let out = Command::new(BIN)
        .arg("release-key")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let seed: [u8; 32] = signature::b64_array(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        text(&out).contains(&format!("public key: {}", signature::public_of(&seed))),
        "{}",
        text(&out)
    );
    // Never over an existing key.
    let again = Command::new(BIN)
        .arg("release-key")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let out = Command::new(BIN)
        .args(["release-sign", "/nonexistent"])
        .env_remove("USEPOD_EDGE_SIGNING_KEY")
        .env_remove("USEPOD_EDGE_SIGNING_KEY_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("no signing key"), "{}", text(&out));
}

#[test]
fn a_release_fetched_over_http_is_checked_like_a_file() {
    let _w = watchdog(Duration::from_secs(120), "upgrade_url");
    // No agent needs to run: a dry run stops before the swap and the restart.
    let mut svc = Service::install("upgrade_url");
    svc.env
        .push(("USEPOD_EDGE_TEST_TRAILER".into(), "1".into()));
    let coord = Coordinator::start_plain();
    let mut config = base_config(&coord.url(), None, &svc.state_dir.join("identity.key"));
    config["upgrade"] = json!({"trusted_keys": [signature::public_of(&SEED)]});
    svc.write_config(&config);
    // An identity, which the new binary must read as the old one does.
    support::identity::write_identity_file(
        &svc.state_dir.join("identity.key"),
        &support::identity::usepod_identity_text([5; 32], None),
    );
    let out = cli(&svc, &["identity"]).output().unwrap();
    assert!(out.status.success(), "identity: {}", text(&out));
    let installed = std::fs::read(&svc.daemon).unwrap();

    let work = TempDir::new("upgrade-url-builds");
    let good = build(work.path(), "good", &format!("version={NEW_VERSION}"));
    sign(&good, &SEED);
    let good_bytes = std::fs::read(&good).unwrap();
    let good_sig = std::fs::read(format!("{}.sig", good.display())).unwrap();
    let mut tampered = good_bytes.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x40;
    let files = StaticHttp::start(vec![
        ("GET", "/r/usepod-edge", 200, good_bytes),
        ("GET", "/r/usepod-edge.sig", 200, good_sig.clone()),
        ("GET", "/t/usepod-edge", 200, tampered),
        ("GET", "/t/usepod-edge.sig", 200, good_sig),
        ("GET", "/nosig/usepod-edge", 200, b"x".to_vec()),
    ]);
    let url = |path: &str| format!("{}{path}", files.url());

    let run = |from: &str| {
        let args = ["upgrade", "--from", from, "--dry-run"];
        finish(cli(&svc, &args).spawn().expect("run upgrade"), "upgrade")
    };
    let out2 = run(&url("/r/usepod-edge"));
    assert_eq!(out2.code, Some(0), "{}", out2.text);
    assert!(
        out2.text.contains("dry run")
            && out2.text.contains("signature: good")
            && out2.text.contains("accepts the config and the identity")
            && !out2.text.contains("not checked"),
        "{}",
        out2.text
    );
    assert_eq!(
        *files.requests.lock().unwrap(),
        ["GET /r/usepod-edge", "GET /r/usepod-edge.sig"],
        "the binary and `<url>.sig`, once each"
    );

    let out = run(&url("/t/usepod-edge"));
    assert_eq!(out.code, Some(1), "{}", out.text);
    assert!(
        out.text.contains("is not the one that was signed"),
        "{}",
        out.text
    );
    let out = run(&url("/nosig/usepod-edge"));
    assert_eq!(out.code, Some(1), "{}", out.text);
    assert!(out.text.contains("HTTP 404"), "{}", out.text);
    assert_eq!(std::fs::read(&svc.daemon).unwrap(), installed);
    assert!(!PathBuf::from(format!("{}.prev", svc.daemon.display())).exists());
}

/// A coordinator that cannot be reached is not the new binary's fault: it stays on
/// probation (no failed start, nothing restored) for as long as the coordinator is away,
/// and is confirmed once it authenticates.
#[test]
fn an_unreachable_coordinator_does_not_roll_an_upgrade_back() {
    let _w = watchdog(Duration::from_secs(150), "upgrade_unreachable");
    let Some((svc, coord, pid, conn)) = service(
        "an_unreachable_coordinator_does_not_roll_an_upgrade_back",
        &[("RESPAWN_DELAY", "0"), ("PROBATION_MAX_FAILURES", "1")],
    ) else {
        return;
    };
    let port = coord.port();
    drop(conn);
    drop(coord);
    let work = TempDir::new("upgrade-unreachable");
    let good = build(work.path(), "good", &format!("version={NEW_VERSION}"));
    sign(&good, &SEED);
    let child = cli(&svc, &["upgrade", "--from", good.to_str().unwrap()])
        .spawn()
        .unwrap();
    support::register_child(child.id());
    // The old agent drains and exits 75; the supervisor starts the new binary, which
    // keeps trying a coordinator that refuses every connection.
    assert!(
        wait_until(S10, || svc.pid().is_some_and(|p| p != pid && alive(p))),
        "the new binary did not start\n{}",
        svc.log()
    );
    let new_pid = svc.pid().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(svc.pid(), Some(new_pid), "it was restarted:\n{}", svc.log());
    assert!(alive(new_pid));
    assert_eq!(
        std::fs::read(&svc.daemon).unwrap(),
        std::fs::read(&good).unwrap(),
        "the new binary is still installed"
    );
    assert!(!svc.log().contains("restored the previous binary"));
    let st = status(&svc);
    assert!(!st.contains("ROLLED BACK"), "{st}");

    // The coordinator is back where it was: the new binary authenticates, and is confirmed.
    let coord = Coordinator::start_plain_on(port);
    let Some(conn) = coord.try_accept(Duration::from_secs(60)) else {
        panic!("the new binary did not reconnect\n{}", svc.log());
    };
    conn.authenticate(Some("prov-service"));
    conn.expect_capabilities(S10);
    let out = finish(child, "upgrade");
    assert_eq!(out.code, Some(0), "upgrade: {}", out.text);
    assert!(out.text.contains("upgrade confirmed"), "{}", out.text);
    assert!(
        wait_until(S10, || confirmed(&status(&svc))),
        "status:\n{}",
        status(&svc)
    );
    stop(&svc, new_pid);
}
