//! The identity file (docs/protocol.md, "Identity file"): usepod-agent format, 0600 file
//! in a 0700 directory, reuse of an existing file, refusal of a corrupt one without
//! touching it, and the `identity` subcommand.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::agent::Setup;
use support::identity::{b64, parse_identity, public_from_seed, usepod_identity_text};
use support::watchdog;

const S5: Duration = Duration::from_secs(5);

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn dir_entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

fn write_identity(s: &Setup, text: &str) {
    support::identity::write_identity_file(&s.key_path, text);
}

#[test]
fn a_fresh_identity_is_written_in_usepod_format_0600_in_a_new_0700_dir() {
    let _w = watchdog(Duration::from_secs(15), "fresh_identity_modes_and_format");
    let mut s = Setup::new("freshid");
    // Two levels that do not exist yet.
    s.key_path = s.dir.join("var").join("keys").join("identity.key");
    let kp = s.key_path.to_str().unwrap().to_string();
    s.set("/identity/key_path", json!(kp));
    let (_agent, conn, auth) = s.spawn_and_authenticate(Some("prov-fresh"));
    conn.expect_capabilities(S5);

    let dir = s.key_path.parent().unwrap();
    assert_eq!(mode(&s.key_path), 0o600, "identity file mode");
    assert_eq!(
        mode(dir),
        0o700,
        "identity directory mode (created by the agent)"
    );
    // The status file (state.json, and its own temp file for an instant) may appear
    // beside the key at any moment; the check is that no identity temp file is left.
    let entries = dir_entries(dir);
    assert!(
        entries.contains(&"identity.key".to_string()),
        "identity file present: {entries:?}"
    );
    let unexpected: Vec<&String> = entries
        .iter()
        .filter(|e| *e != "identity.key" && !e.contains("state.json"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "no temp files left next to the identity file: {unexpected:?}"
    );
    let text = std::fs::read_to_string(&s.key_path).unwrap();
    let id = parse_identity(&text);
    assert_eq!(id.public, auth.pubkey, "file public key = key on the wire");
    assert_eq!(id.provider_id.as_deref(), Some("prov-fresh"));
}

#[test]
fn an_existing_usepod_agent_identity_is_reused_with_its_provider_id() {
    let _w = watchdog(Duration::from_secs(15), "existing_identity_reused");
    let mut s = Setup::new("existingid");
    let seed = [7u8; 32];
    // usepod-agent's format, plus a key the agent must ignore.
    let text = usepod_identity_text(seed, Some("prov-migrated")).replace(
        "version: 1\n",
        "version: 1\ncomment: moved from usepod-agent: keep me\n",
    );
    write_identity(&s, &text);
    s.set("/coordinator/enrollment_code", json!("SHOULD-NOT-BE-SENT"));
    let (agent, conn, auth) = s.spawn_and_authenticate(Some("prov-migrated"));
    assert_eq!(
        auth.pubkey,
        public_from_seed(seed),
        "the agent must sign with the key from the existing file"
    );
    assert_eq!(
        auth.enrollment_code, None,
        "provider_id is stored, so no enrollment_code: {}",
        auth.raw
    );
    conn.expect_capabilities(S5);
    assert!(agent.wait_for_log("authenticated as prov-migrated", S5));
    let id = parse_identity(&std::fs::read_to_string(&s.key_path).unwrap());
    assert_eq!(id.secret, seed);
    assert_eq!(id.provider_id.as_deref(), Some("prov-migrated"));
}

#[test]
fn the_identity_round_trips_across_restarts() {
    let _w = watchdog(Duration::from_secs(20), "identity_round_trip");
    let mut s = Setup::new("roundtrip");
    s.set("/coordinator/enrollment_code", json!("CODE-RT"));
    let (agent, conn, a1) = s.spawn_and_authenticate(Some("prov-rt"));
    assert_eq!(a1.enrollment_code.as_deref(), Some("CODE-RT"));
    conn.expect_capabilities(S5);
    drop(conn);
    drop(agent);
    let written = std::fs::read_to_string(&s.key_path).unwrap();
    let id = parse_identity(&written);
    assert_eq!(id.public, a1.pubkey);

    // A second process reads what the first wrote.
    let (_agent2, conn2, a2) = s.spawn_and_authenticate(Some("prov-rt"));
    assert_eq!(a2.pubkey, a1.pubkey, "same key after a restart");
    assert_eq!(a2.enrollment_code, None, "provider_id survived the restart");
    conn2.expect_capabilities(S5);

    // And the file is what usepod-agent would read: rebuild it from seed + provider_id
    // and compare the fields that matter.
    let rebuilt = parse_identity(&usepod_identity_text(id.secret, Some("prov-rt")));
    assert_eq!(rebuilt.public, id.public);
    assert_eq!(rebuilt.provider_id, id.provider_id);
}

#[test]
fn identity_command_prints_public_key_and_provider_id_never_the_secret() {
    let _w = watchdog(Duration::from_secs(15), "identity_command");
    let s = Setup::new("idcmd");
    let seed = [11u8; 32];
    write_identity(&s, &usepod_identity_text(seed, Some("prov-show")));
    let out = s.cli("identity");
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let public = b64(&public_from_seed(seed));
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim() == format!("public: {public}")),
        "expected a `public: {public}` line\n{}",
        out.describe()
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim() == "provider_id: prov-show"),
        "expected a `provider_id: prov-show` line\n{}",
        out.describe()
    );
    let secret = b64(&seed);
    assert!(
        !out.stdout.contains(&secret) && !out.stderr.contains(&secret),
        "the secret must never be printed\n{}",
        out.describe()
    );
}

#[test]
fn identity_command_without_provider_id_says_none() {
    let _w = watchdog(Duration::from_secs(15), "identity_command_none");
    let s = Setup::new("idcmdnone");
    write_identity(&s, &usepod_identity_text([12u8; 32], None));
    let out = s.cli("identity");
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("provider_id:"))
        .unwrap_or_else(|| panic!("no provider_id line\n{}", out.describe()));
    assert!(
        line.to_ascii_lowercase().contains("none"),
        "provider_id line must say none: {line:?}"
    );
}

// -- corrupt files -----------------------------------------------------------------------

fn valid_text() -> String {
    usepod_identity_text([21u8; 32], Some("prov-corrupt"))
}

/// A corrupt identity must stop the agent (non-zero exit, message naming the file) and
/// stay byte-for-byte and mtime-for-mtime as it was; the agent must not connect.
fn assert_refused_untouched(tag: &str, text: &str) {
    let s = Setup::new(tag);
    write_identity(&s, text);
    let old = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(&s.key_path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let before = std::fs::read(&s.key_path).unwrap();
    let dir = s.key_path.parent().unwrap().to_path_buf();
    let path_str = s.key_path.to_str().unwrap().to_string();

    for sub in ["run", "identity"] {
        let out = s.cli(sub);
        assert!(
            !out.timed_out,
            "{tag}/{sub}: the agent did not stop on a corrupt identity\n{}",
            out.describe()
        );
        assert!(
            matches!(out.code, Some(c) if c != 0),
            "{tag}/{sub}: expected a non-zero exit\n{}",
            out.describe()
        );
        assert!(
            out.stderr.contains(&path_str),
            "{tag}/{sub}: the error must name the file {path_str}\n{}",
            out.describe()
        );
        let after = std::fs::read(&s.key_path).expect("identity file must still exist");
        assert!(
            after == before,
            "{tag}/{sub}: the identity file was modified"
        );
        let mtime: SystemTime = std::fs::metadata(&s.key_path).unwrap().modified().unwrap();
        assert_eq!(mtime, old, "{tag}/{sub}: the identity file was rewritten");
        assert_eq!(
            dir_entries(&dir),
            vec!["identity.key".to_string()],
            "{tag}/{sub}: nothing may be written next to it"
        );
    }
    assert_eq!(
        s.coord.tcp_accepts(),
        0,
        "{tag}: the agent connected to the coordinator with a corrupt identity"
    );
}

#[test]
fn a_garbage_identity_file_is_refused_and_left_untouched() {
    let _w = watchdog(Duration::from_secs(30), "garbage_identity");
    assert_refused_untouched("garbage", "this is not a key file\n\u{1}\u{2}\n");
}

#[test]
fn an_empty_identity_file_is_refused_and_left_untouched() {
    let _w = watchdog(Duration::from_secs(30), "empty_identity");
    assert_refused_untouched("empty", "");
}

#[test]
fn a_truncated_identity_file_is_refused_and_left_untouched() {
    let _w = watchdog(Duration::from_secs(30), "truncated_identity");
    let full = valid_text();
    // Cut in the middle of the `secret:` line.
    let cut = full.find("secret: ").unwrap() + 20;
    assert_refused_untouched("truncated", &full[..cut]);
}

#[test]
fn a_mismatched_public_key_is_refused_and_left_untouched() {
    let _w = watchdog(Duration::from_secs(30), "mismatched_identity");
    let text = valid_text().replace(
        &b64(&public_from_seed([21u8; 32])),
        &b64(&public_from_seed([22u8; 32])),
    );
    assert_refused_untouched("mismatch", &text);
}

#[test]
fn an_unknown_identity_version_is_refused_and_left_untouched() {
    let _w = watchdog(Duration::from_secs(30), "version_identity");
    assert_refused_untouched(
        "version2",
        &valid_text().replace("version: 1", "version: 2"),
    );
}

#[test]
fn an_identity_without_a_secret_is_refused_and_left_untouched() {
    let _w = watchdog(Duration::from_secs(30), "nosecret_identity");
    let text: String = valid_text()
        .lines()
        .filter(|l| !l.starts_with("secret:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_refused_untouched("nosecret", &text);
}

#[test]
fn an_identity_with_a_short_secret_is_refused_and_left_untouched() {
    let _w = watchdog(Duration::from_secs(30), "shortsecret_identity");
    let text = valid_text().replace(&b64(&[21u8; 32]), &b64(&[21u8; 16]));
    assert_refused_untouched("shortsecret", &text);
}
