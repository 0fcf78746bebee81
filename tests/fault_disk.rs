//! Disk faults at identity persistence (issue 5, "Fault injection: disk"): a read-only
//! identity directory and a full disk when `auth_ok` brings a new provider_id. The agent
//! says clearly what failed (file, action, OS error), keeps the old file byte for byte,
//! leaves no temp file behind, and goes on with the new id in memory.
//!
//! How the faults are made without privileges beyond what the test already has:
//! - read-only: the directory is mode 0500. Root ignores modes, so when the tests run as
//!   root the agent is started as uid/gid 65534 (`setpriv`) owning that directory.
//! - full: the agent runs with RLIMIT_FSIZE 0 and SIGXFSZ ignored (`ulimit -f 0`), so
//!   every write into a regular file fails (EFBIG) the way a full disk fails it (ENOSPC):
//!   the temp file is created, the write fails, nothing may be renamed over the old file.
//!
//! Both go through a wrapper script handed to `support::agent::bin_command_via` (never
//! through the process environment, which the parallel tests share), in front of any
//! runner already set (qemu for cross-built binaries).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::agent::{Agent, Setup};
use support::identity::{public_from_seed, usepod_identity_text};
use support::watchdog;

const S5: Duration = Duration::from_secs(5);
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Start the agent through a shell wrapper that runs `prelude` first and then `exec`s
/// `prefix` + the usual runner (if any) + the binary.
fn spawn_wrapped(s: &Setup, prelude: &str, prefix: &str) -> Agent {
    let script = s.dir.join("runner.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\n{prelude}\nexec {prefix} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.spawn_via(Some(&script))
}

/// The directory's entries, less the status file the agent may be writing beside the key.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains("state.json"))
        .collect();
    v.sort();
    v
}

/// An existing identity with provider_id `prov-old`; returns (seed's public key, bytes).
fn existing_identity(s: &Setup) -> ([u8; 32], Vec<u8>) {
    let seed = [42u8; 32];
    let dir = s.key_path.parent().unwrap();
    let text = usepod_identity_text(seed, Some("prov-old"));
    support::identity::write_identity_file(&s.key_path, &text);
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    (public_from_seed(seed), text.into_bytes())
}

/// Make the identity directory read-only for the agent; returns the wrapper prefix that
/// starts the agent as its owner.
fn read_only_dir(s: &Setup) -> &'static str {
    let dir = s.key_path.parent().unwrap();
    let prefix = if is_root() {
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
        std::os::unix::fs::chown(&s.key_path, Some(NOBODY), Some(NOBODY)).ok();
        "setpriv --reuid=65534 --regid=65534 --clear-groups"
    } else {
        ""
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    prefix
}

fn restore_dir(s: &Setup) {
    let dir = s.key_path.parent().unwrap();
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

/// The agent authenticates with the old identity, is handed `prov-new`, cannot persist
/// it, logs why, keeps the old file untouched and carries on (capabilities, then a
/// reconnect with the same key and without the enrollment code).
fn persistence_fails(
    tag: &str,
    prelude: &str,
    fault: impl FnOnce(&Setup) -> &'static str,
    expect_os_error: &str,
    s: Setup,
) {
    let (public, before) = existing_identity(&s);
    let prefix = fault(&s);
    let dir = s.key_path.parent().unwrap().to_path_buf();
    let mut agent = spawn_wrapped(&s, prelude, prefix);
    let conn = s.coord.accept(S5);
    let auth = conn.authenticate(Some("prov-new"));
    assert_eq!(auth.pubkey, public, "{tag}: the existing key is used");
    assert_eq!(auth.enrollment_code, None, "{tag}: enrolled already");
    conn.expect_capabilities(S5);
    let line = agent
        .wait_for_log_line("ERROR [usepod_edge::session] identity file", S5)
        .map(|(_, l)| l)
        .unwrap_or_else(|| {
            panic!(
                "{tag}: no ERROR line about the failed write\n{}",
                agent.logs()
            )
        });
    let path = s.key_path.display().to_string();
    assert!(
        line.contains(&path) && line.contains(expect_os_error) && line.contains("prov-new"),
        "{tag}: the error names the file ({path}), the OS error ({expect_os_error}) and \
         the id kept in memory: {line}"
    );
    assert_eq!(
        std::fs::read(&s.key_path).unwrap(),
        before,
        "{tag}: the old identity file changed"
    );
    assert_eq!(
        entries(&dir),
        vec!["identity.key".to_string()],
        "{tag}: a temp file was left behind"
    );
    // Still the same agent on the next session: same key, provider_id kept in memory.
    conn.drop_tcp();
    let conn2 = s.coord.accept(support::FIRST_RECONNECT);
    let auth2 = conn2.authenticate(Some("prov-new"));
    assert_eq!(auth2.pubkey, public);
    assert_eq!(auth2.enrollment_code, None);
    conn2.expect_capabilities(S5);
    assert!(agent.is_running(), "{tag}: the agent exited");
    assert!(!agent.logs().contains("panicked"), "{}", agent.logs());
    drop(agent);
    restore_dir(&s);
}

#[test]
fn a_read_only_identity_dir_at_provider_id_persistence_is_a_clear_error_old_file_untouched() {
    let _w = watchdog(Duration::from_secs(20), "identity_read_only");
    let mut s = Setup::new("idreadonly");
    s.set("/coordinator/enrollment_code", json!("CODE"));
    persistence_fails("read-only", "", read_only_dir, "Permission denied", s);
}

#[test]
fn a_full_disk_at_provider_id_persistence_is_a_clear_error_old_file_untouched() {
    let _w = watchdog(Duration::from_secs(20), "identity_disk_full");
    let mut s = Setup::new("idfull");
    s.set("/coordinator/enrollment_code", json!("CODE"));
    persistence_fails(
        "full",
        "trap '' XFSZ\nulimit -f 0",
        |_| "",
        "File too large",
        s,
    );
}

#[test]
fn a_read_only_dir_without_an_identity_stops_the_agent_with_a_clear_error() {
    let _w = watchdog(Duration::from_secs(20), "identity_read_only_fresh");
    let s = Setup::new("idreadonlyfresh");
    let dir = s.key_path.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let prefix = read_only_dir(&s);
    let mut agent = spawn_wrapped(&s, "", prefix);
    let status = agent.wait_exit(S5);
    let logs = agent.logs();
    let status =
        status.unwrap_or_else(|| panic!("the agent kept running without an identity:\n{logs}"));
    assert!(!status.success(), "exit status {status:?}:\n{logs}");
    assert!(
        logs.contains(&s.key_path.display().to_string()) && logs.contains("Permission denied"),
        "the error names the file and the OS error:\n{logs}"
    );
    assert!(
        s.coord.try_accept(Duration::from_millis(200)).is_none(),
        "the agent connected without an identity"
    );
    assert!(
        entries(dir).is_empty(),
        "files were left: {:?}",
        entries(dir)
    );
    restore_dir(&s);
}
