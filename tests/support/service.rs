//! The SysV init script installed by `init/install.sh` into a scratch root (DESTDIR) and run
//! through start-stop-daemon (tests/service_sysv.rs, tests/upgrade.rs). Its paths come from
//! the environment, so nothing outside the scratch root is touched. As root the agent runs as
//! `nobody`; otherwise as the caller.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::agent::{write_config, AGENT_ENV, BIN};
use super::coordinator::{Conn, Coordinator};
use super::TempDir;

pub const S10: Duration = Duration::from_secs(10);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn start_stop_daemon() -> Option<PathBuf> {
    ["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join("start-stop-daemon"))
        .find(|p| p.exists())
}

pub fn id(args: &[&str]) -> Option<String> {
    let out = Command::new("id").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub struct Out {
    pub code: Option<i32>,
    pub text: String,
}

/// The scratch root with the service installed, and how to run its init script.
pub struct Service {
    pub root: PathBuf,
    pub script: PathBuf,
    pub daemon: PathBuf,
    pub config: PathBuf,
    pub pidfile: PathBuf,
    pub logfile: PathBuf,
    pub state_dir: PathBuf,
    pub user: String,
    /// More environment for the init script (and through it the agent).
    pub env: Vec<(String, String)>,
    /// Last: removed after the agent is stopped.
    _dir: TempDir,
}

impl Service {
    pub fn install(name: &str) -> Service {
        let dir = TempDir::new(name);
        let root = dir.path().to_path_buf();
        // The agent runs as `nobody` when we are root: it must reach its files.
        chmod(&root, 0o755);
        let out = install_into(&root);
        assert_eq!(out.code, Some(0), "init/install.sh failed:\n{}", out.text);
        let user = if id(&["-u"]).as_deref() == Some("0") {
            if id(&["-u", "nobody"]).is_some() {
                "nobody".to_string()
            } else {
                "root".to_string()
            }
        } else {
            id(&["-un"]).expect("id -un")
        };
        Service {
            script: root.join("etc/init.d/usepod-edge"),
            daemon: root.join("usr/bin/usepod-edge"),
            config: root.join("etc/usepod-edge/config.json"),
            pidfile: root.join("run/usepod-edge.pid"),
            logfile: root.join("var/log/usepod-edge/usepod-edge.log"),
            state_dir: root.join("var/lib/usepod-edge"),
            user,
            env: Vec::new(),
            root,
            _dir: dir,
        }
    }

    pub fn write_config(&self, config: &serde_json::Value) {
        write_config(self.config.parent().unwrap(), "config.json", config);
        // install made the directory 0750 root:usepod-edge; the test's user is not in it.
        chmod(self.config.parent().unwrap(), 0o755);
        chmod(&self.config, 0o644);
    }

    /// Run the init script with `action`; killed after 90 s (the stop schedule is 45 + 5).
    pub fn run(&self, action: &str) -> Out {
        let mut cmd = Command::new("timeout");
        cmd.arg("90").arg(&self.script).arg(action);
        for k in AGENT_ENV {
            cmd.env_remove(k);
        }
        cmd.env("DEFAULTS_FILE", self.root.join("etc/default/usepod-edge"))
            .env("DAEMON", &self.daemon)
            .env("CONFIG", &self.config)
            .env("PIDFILE", &self.pidfile)
            .env("LOGFILE", &self.logfile)
            .env("STATE_DIR", &self.state_dir)
            .env("DAEMON_USER", &self.user)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = cmd.output().expect("run the init script");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Out {
            code: out.status.code(),
            text,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.logfile).unwrap_or_default()
    }

    /// `start`, then the agent's connection: authenticated, capabilities received.
    pub fn start_and_connect(&self, coord: &Coordinator, action: &str) -> (u32, Conn) {
        let out = self.run(action);
        assert_eq!(out.code, Some(0), "{action} failed:\n{}", out.text);
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("no pidfile after {action}:\n{}", out.text));
        super::register_child(pid);
        let Some(conn) = coord.try_accept(S10) else {
            panic!(
                "the agent started by `{action}` did not connect\n{}\n--- log ---\n{}",
                out.text,
                self.log()
            );
        };
        conn.authenticate(Some("prov-service"));
        conn.expect_capabilities(S10);
        (pid, conn)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A failed test must not leave the agent running.
        if let Some(pid) = self.pid() {
            if alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.logfile.display(), self.log());
        }
    }
}

pub fn install_into(root: &Path) -> Out {
    let out = Command::new("sh")
        .arg(repo().join("init/install.sh"))
        .env("BIN", BIN)
        .env("DESTDIR", root)
        .env("PREFIX", "/usr")
        .env("INIT", "sysv")
        .output()
        .expect("run init/install.sh");
    Out {
        code: out.status.code(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Running and not a zombie (an orphan nobody reaped yet counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}
