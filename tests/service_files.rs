//! The systemd unit and the OpenRC script, as `init/install.sh` installs them, must load in
//! the tools of their init systems: `systemd-analyze verify` for the unit, `openrc-run` for
//! the script. (The SysV script is run for real in tests/service_sysv.rs.)
//!
//! Both tools print a warning and still exit 0 for a setting they ignore (a misspelt
//! hardening option, a bad value, a shell error inside `depend`), so anything they print
//! beyond what is expected fails here too. Each test also feeds its tool one broken copy
//! and requires a complaint, so a tool that stopped checking cannot pass silently.
//!
//! Without the tools the tests say SKIPPED locally and fail in CI, which installs them
//! (`.ci/run`: Debian packages `systemd` and `openrc`; neither becomes this machine's init).
//!
//! The OpenRC script is loaded, not started (starting needs OpenRC as this machine's init
//! for supervise-daemon's state); it runs under supervise-daemon, which respawns the agent
//! through the probation script (the script itself is run in tests/upgrade.rs).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::agent::BIN;
use support::{watchdog, TempDir};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name` on PATH or in the sbin directories (not always on a user's PATH).
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin", "/bin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `init/install.sh` for `init` into the scratch root `root` (PREFIX /usr/local).
fn install(root: &Path, init: &str) {
    let out = Command::new("sh")
        .arg(repo().join("init/install.sh"))
        .env("BIN", BIN)
        .env("DESTDIR", root)
        .env("PREFIX", "/usr/local")
        .env("INIT", init)
        .output()
        .expect("run init/install.sh");
    assert!(
        out.status.success(),
        "install.sh INIT={init} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What openrc-run says about its own setup rather than the script: its default functions
/// have no description, and as another user than root it cannot touch cgroups.
fn openrc_notice(line: &str) -> bool {
    line.ends_with(": no description") || line == " * No permission to apply cgroup settings"
}

/// The stderr lines that are about the script.
fn openrc_complaints(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !openrc_notice(l)).collect()
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("run the checker");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_systemd_unit_as_installed_passes_systemd_analyze_verify() {
    let _w = watchdog(Duration::from_secs(60), "systemd_unit_verify");
    let Some(analyze) = tool("systemd-analyze") else {
        support::skip_or_fail(
            "the_systemd_unit_as_installed_passes_systemd_analyze_verify",
            "no systemd-analyze (Debian: apt-get install systemd)",
        );
        return;
    };
    let dir = TempDir::new("systemd-unit");
    let root = dir.join("root");
    install(&root, "systemd");
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/usepod-edge.service"))
        .expect("install.sh put the unit in etc/systemd/system");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/usepod-edge --config")
            && unit.contains("ExecStartPre=+/usr/local/bin/usepod-edge-probation check /usr/local/bin/usepod-edge /var/lib/usepod-edge")
            && unit.contains("RestartForceExitStatus=75"),
        "the unit runs the binary from PREFIX/bin, the probation script first, and restarts \
         it after an upgrade's drain:\n{unit}"
    );
    // verify also checks that each Exec command exists on this machine: point the unit at
    // the binary install.sh put in the scratch root. Nothing else changes.
    let installed_bin = root.join("usr/local/bin/usepod-edge");
    let verify = |name: &str, text: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("usepod-edge.service");
        std::fs::write(
            &path,
            text.replace(
                "/usr/local/bin/usepod-edge",
                installed_bin.to_str().unwrap(),
            ),
        )
        .unwrap();
        run(Command::new(&analyze)
            .arg("verify")
            .arg("--man=no")
            .arg(&path))
    };

    let r = verify("as-installed", &unit);
    assert!(
        r.ok && r.stdout.is_empty() && r.stderr.is_empty(),
        "systemd-analyze verify must accept the unit without a word (ok: {}):\n{}{}",
        r.ok,
        r.stdout,
        r.stderr
    );

    // A misspelt option only draws a warning; this check must still see it.
    let broken = unit.replace("ProtectClock=yes", "ProtectClok=yes");
    assert_ne!(
        broken, unit,
        "the unit no longer has ProtectClock=yes: pick another"
    );
    let r = verify("broken", &broken);
    assert!(
        r.stderr.contains("Unknown key 'ProtectClok'"),
        "a misspelt option went unnoticed (ok: {}):\n{}{}",
        r.ok,
        r.stdout,
        r.stderr
    );
}

#[test]
fn the_openrc_script_as_installed_loads_in_openrc_run() {
    let _w = watchdog(Duration::from_secs(60), "openrc_script_load");
    let Some(openrc_run) = tool("openrc-run") else {
        support::skip_or_fail(
            "the_openrc_script_as_installed_loads_in_openrc_run",
            "no openrc-run (Debian: apt-get install openrc)",
        );
        return;
    };
    let dir = TempDir::new("openrc-script");
    let root = dir.join("root");
    install(&root, "openrc");
    let script_path = root.join("etc/init.d/usepod-edge");
    let script = std::fs::read_to_string(&script_path).expect("install.sh put the script in");
    assert!(
        script.starts_with("#!/sbin/openrc-run\n")
            && script.contains("daemon=\"/usr/local/bin/usepod-edge\"")
            && script.contains("probation=\"/usr/local/bin/usepod-edge-probation\"")
            && script.contains("\nsupervisor=supervise-daemon\n"),
        "an openrc-run script running the binary from PREFIX/bin under supervise-daemon, \
         through the probation script:\n{script}"
    );
    assert!(
        root.join("usr/local/bin/usepod-edge-probation").is_file(),
        "install.sh put the probation script beside the binary"
    );
    let syntax = run(Command::new("sh").arg("-n").arg(&script_path));
    assert!(
        syntax.ok && syntax.stderr.is_empty(),
        "sh -n:\n{}",
        syntax.stderr
    );

    // `depend` sources the whole script and runs its depend(): exactly the declared
    // dependencies, and no complaint on stderr.
    let depend = |path: &Path| run(Command::new(&openrc_run).arg(path).arg("depend"));
    let r = depend(&script_path);
    assert!(
        r.ok && openrc_complaints(&r.stderr).is_empty()
            && r.stdout == "need net\nuse dns logger\nafter firewall\n",
        "openrc-run depend (ok: {}):\n{}{}",
        r.ok,
        r.stdout,
        r.stderr
    );
    // `describe` reads the description.
    let r = run(Command::new(&openrc_run).arg(&script_path).arg("describe"));
    assert!(
        r.ok && r.stdout.starts_with(" * Use Pod provider agent\n")
            && openrc_complaints(&r.stderr).is_empty(),
        "openrc-run describe (ok: {}):\n{}{}",
        r.ok,
        r.stdout,
        r.stderr
    );

    // A typo in depend() and an unclosed `if` must both be caught.
    for (name, broken) in [
        ("typo", script.replace("    need net\n", "    nedd net\n")),
        (
            "syntax",
            format!("{script}\nstart_post() {{\n    if true; then\n}}\n"),
        ),
    ] {
        assert_ne!(broken, script, "{name}: the edit did not apply");
        let path = dir.join(format!("broken-{name}"));
        std::fs::write(&path, broken).unwrap();
        let r = depend(&path);
        assert!(
            !openrc_complaints(&r.stderr).is_empty(),
            "{name}: a broken script went unnoticed (ok: {}):\n{}",
            r.ok,
            r.stdout
        );
    }
}
