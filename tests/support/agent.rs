//! The real `usepod-edge` binary as a child process, its config, and a per-test fixture
//! (temp dir + test CA + TLS coordinator + config) to start it against.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::coordinator::Coordinator;
use super::tls::TestCa;
use super::{refused_port, TempDir};

pub const BIN: &str = env!("CARGO_BIN_EXE_usepod-edge");
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The binary the tests start: `$USEPOD_EDGE_BIN` when set (a cross-built one from dist/,
/// say), else the one cargo built. `$USEPOD_EDGE_RUNNER` (e.g. `qemu-aarch64-static`), when
/// set, runs it; its pid is then the runner's, which passes signals to the binary.
pub fn bin_command() -> (Command, String) {
    bin_command_via(None)
}

/// Like [`bin_command`], with `wrapper` (a program that `exec`s its arguments, such as a
/// shell script setting limits first) in front of the runner and the binary. Passed in,
/// not put in the environment: tests in one binary run on parallel threads.
pub fn bin_command_via(wrapper: Option<&Path>) -> (Command, String) {
    let bin = std::env::var("USEPOD_EDGE_BIN").unwrap_or_else(|_| BIN.to_string());
    let mut argv: Vec<String> = Vec::new();
    if let Some(w) = wrapper {
        argv.push(w.display().to_string());
    }
    if let Ok(runner) = std::env::var("USEPOD_EDGE_RUNNER") {
        if !runner.is_empty() {
            argv.push(runner);
        }
    }
    argv.push(bin);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    (cmd, argv.join(" "))
}

/// Environment variables the agent reads; removed from every child so the developer's
/// environment cannot leak into a test.
pub const AGENT_ENV: &[&str] = &[
    "USEPOD_EDGE_CONFIG",
    "USEPOD_EDGE_COORDINATOR_URL",
    "USEPOD_EDGE_ENROLLMENT_CODE",
    "USEPOD_EDGE_LOG",
    "USEPOD_EDGE_KEY_PATH",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "USEPOD_EDGE_TEST_ROOT",
    "USEPOD_EDGE_TEST_NOW",
    "USEPOD_EDGE_TEST_TRAILER",
    "USEPOD_EDGE_SIGNING_KEY",
    "USEPOD_EDGE_SIGNING_KEY_FILE",
    "PROBATION_MAX_FAILURES",
    "RESPAWN_DELAY",
    "TZ",
    "TZDIR",
];

// ---------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------

/// A complete config: the given coordinator URL and CA file, the key path, one llamacpp
/// backend on a port where nothing listens, default prices, concurrency 8, and heartbeat
/// and ping intervals long enough (30 s) not to disturb tests that do not look at them.
/// The operator's guards read this machine's sensors, so they are set not to fire here
/// (a laptop on battery, a hot board, a GPU busy with something else); the tests of the
/// guards (tests/operator_control.rs) turn them on over fixture trees.
pub fn base_config(url: &str, ca_file: Option<&Path>, key_path: &Path) -> Value {
    let mut coordinator = json!({
        "url": url,
        "allow_insecure": false,
        "heartbeat_interval_s": 30,
        "ping_interval_s": 30,
    });
    if let Some(ca) = ca_file {
        coordinator["ca_file"] = json!(ca.to_str().expect("utf-8 path"));
    }
    json!({
        "coordinator": coordinator,
        "identity": {"key_path": key_path.to_str().expect("utf-8 path")},
        "backends": [
            {"kind": "llamacpp", "url": format!("http://127.0.0.1:{}", refused_port())}
        ],
        "pricing": {"default_input_per_1m": 500000, "default_output_per_1m": 1000000},
        "limits": {"max_concurrent": 8, "max_tokens_per_minute": null,
                   "allow_battery": true, "max_temp_c": 150},
        "local_first": {"enabled": false},
    })
}

/// Write `config` as `name` in `dir`; returns the path.
pub fn write_config(dir: &Path, name: &str, config: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(config).unwrap()).expect("write config");
    path
}

// ---------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------

/// Everything one agent test needs: its own temp dir, CA, TLS coordinator and config.
pub struct Setup {
    pub name: String,
    pub coord: Coordinator,
    pub ca: TestCa,
    pub ca_file: PathBuf,
    /// `identity.key` inside a subdirectory that does not exist yet.
    pub key_path: PathBuf,
    /// The config the next `spawn` writes; tests edit it freely.
    pub config: Value,
    // Last, so it is removed after everything that may use it.
    pub dir: TempDir,
}

impl Setup {
    pub fn new(name: &str) -> Setup {
        let dir = TempDir::new(name);
        let ca = TestCa::new();
        let ca_file = ca.write_ca_pem(dir.path());
        let coord = Coordinator::start_tls(&ca);
        let key_path = dir.join("state").join("identity.key");
        let config = base_config(&coord.url(), Some(&ca_file), &key_path);
        Setup {
            name: name.to_string(),
            coord,
            ca,
            ca_file,
            key_path,
            config,
            dir,
        }
    }

    /// Like `new`, but the coordinator speaks plain `ws://` on 127.0.0.1 (no ca_file).
    pub fn new_plain(name: &str) -> Setup {
        let mut s = Setup::new(name);
        s.coord = Coordinator::start_plain();
        s.config = base_config(&s.coord.url(), None, &s.key_path);
        s
    }

    /// Set a value by JSON pointer (`/coordinator/ping_interval_s`), creating objects.
    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Setup {
        set_pointer(&mut self.config, pointer, value);
        self
    }

    pub fn write_config(&self) -> PathBuf {
        write_config(self.dir.path(), "config.json", &self.config)
    }

    /// Write the config and start `usepod-edge --config PATH --log-level debug run`.
    pub fn spawn(&self) -> Agent {
        self.spawn_via(None)
    }

    /// [`Setup::spawn`] through `wrapper` (see [`bin_command_via`]).
    pub fn spawn_via(&self, wrapper: Option<&Path>) -> Agent {
        let path = self.write_config();
        Agent::spawn_via(
            &self.name,
            wrapper,
            &[
                "--config",
                path.to_str().unwrap(),
                "--log-level",
                "debug",
                "run",
            ],
            &[],
            self.dir.path(),
        )
    }

    /// Run a one-shot subcommand (`validate`, `identity`) with this setup's config.
    pub fn cli(&self, subcommand: &str) -> CliOutput {
        let path = self.write_config();
        run_cli(
            &["--config", path.to_str().unwrap(), subcommand],
            &[],
            self.dir.path(),
            Duration::from_secs(10),
        )
    }

    /// Spawn, accept the first connection and authenticate it.
    pub fn spawn_and_authenticate(
        &self,
        provider_id: Option<&str>,
    ) -> (
        Agent,
        super::coordinator::Conn,
        super::coordinator::AuthResponse,
    ) {
        let agent = self.spawn();
        let conn = self.coord.accept(Duration::from_secs(5));
        let auth = conn.authenticate(provider_id);
        (agent, conn, auth)
    }
}

pub fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Ok(idx) = p.parse::<usize>() {
            let arr = cur.as_array_mut().expect("pointer index into a non-array");
            if last {
                arr[idx] = value;
                return;
            }
            cur = &mut arr[idx];
        } else {
            if !cur.is_object() {
                *cur = json!({});
            }
            let obj = cur.as_object_mut().unwrap();
            if last {
                obj.insert(p.to_string(), value);
                return;
            }
            cur = obj.entry(p.to_string()).or_insert_with(|| json!({}));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The agent process
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct LogBuf {
    lines: Vec<(Instant, String)>,
    closed_streams: usize,
}

/// A running agent. Its stdout and stderr lines are collected (stdout lines prefixed
/// `[stdout] `); dropping it kills the process and, when the test failed, prints them.
pub struct Agent {
    name: String,
    child: Child,
    logs: Arc<(Mutex<LogBuf>, Condvar)>,
    cursor: Mutex<usize>,
    pub started_at: Instant,
}

impl Agent {
    /// Start the binary with `args` and `envs` (on top of a cleaned environment with
    /// HOME set to `home`).
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)], home: &Path) -> Agent {
        Agent::spawn_via(name, None, args, envs, home)
    }

    /// [`Agent::spawn`] through `wrapper` (see [`bin_command_via`]).
    pub fn spawn_via(
        name: &str,
        wrapper: Option<&Path>,
        args: &[&str],
        envs: &[(&str, &str)],
        home: &Path,
    ) -> Agent {
        let (mut cmd, bin) = bin_command_via(wrapper);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in AGENT_ENV {
            cmd.env_remove(k);
        }
        cmd.env("HOME", home);
        cmd.env("NO_PROXY", "127.0.0.1,localhost");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        super::register_child(child.id());
        let logs: Arc<(Mutex<LogBuf>, Condvar)> = Arc::default();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        collect_lines(out, "[stdout] ", logs.clone());
        collect_lines(err, "", logs.clone());
        Agent {
            name: name.to_string(),
            child,
            logs,
            cursor: Mutex::new(0),
            started_at: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for a log line containing `needle`, searching from just after the previous
    /// match of any `wait_for_log*` call (so successive calls find successive lines).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_line(needle, timeout).is_some()
    }

    /// Like `wait_for_log`, returning the line and when it was read.
    pub fn wait_for_log_line(&self, needle: &str, timeout: Duration) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.logs;
        let mut cursor = self.cursor.lock().unwrap();
        let mut buf = lock.lock().unwrap();
        loop {
            if let Some(off) = buf.lines[*cursor..]
                .iter()
                .position(|(_, l)| l.contains(needle))
            {
                let idx = *cursor + off;
                *cursor = idx + 1;
                return Some(buf.lines[idx].clone());
            }
            let now = Instant::now();
            if now >= deadline || buf.closed_streams >= 2 {
                return None;
            }
            buf = cv.wait_timeout(buf, deadline - now).unwrap().0;
        }
    }

    /// Wait until the agent closed its stdout and stderr (it exited, normally): every line
    /// it wrote has been collected. False if that did not happen within `timeout`.
    pub fn wait_output_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.logs;
        let mut buf = lock.lock().unwrap();
        while buf.closed_streams < 2 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            buf = cv.wait_timeout(buf, deadline - now).unwrap().0;
        }
        true
    }

    /// Whether any line so far contains `needle` (ignores the cursor).
    pub fn has_log(&self, needle: &str) -> bool {
        self.count_logs(needle) > 0
    }

    pub fn count_logs(&self, needle: &str) -> usize {
        let buf = self.logs.0.lock().unwrap();
        buf.lines.iter().filter(|(_, l)| l.contains(needle)).count()
    }

    pub fn log_lines(&self) -> Vec<String> {
        let buf = self.logs.0.lock().unwrap();
        buf.lines.iter().map(|(_, l)| l.clone()).collect()
    }

    pub fn logs(&self) -> String {
        self.log_lines().join("\n")
    }

    /// `Some(status)` once the process exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal (`TERM`, `INT`, `KILL`) through kill(1).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        super::unregister_child(self.child.id());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- agent `{}` (pid {}) output -----\n{}\n----- end of agent output -----",
                self.name,
                self.child.id(),
                self.logs()
            );
        }
    }
}

fn collect_lines(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
    logs: Arc<(Mutex<LogBuf>, Condvar)>,
) {
    std::thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let line = format!("{prefix}{}", String::from_utf8_lossy(&line).trim_end());
            let (lock, cv) = &*logs;
            lock.lock().unwrap().lines.push((Instant::now(), line));
            cv.notify_all();
        }
        let (lock, cv) = &*logs;
        lock.lock().unwrap().closed_streams += 1;
        cv.notify_all();
    });
}

// ---------------------------------------------------------------------------------------
// One-shot commands
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct CliOutput {
    /// Exit code; `None` if it was killed by a signal or by the timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// Both streams, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "exit code {:?} (timed out: {})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.timed_out, self.stdout, self.stderr
        )
    }
}

/// Run the binary to completion (killed after `timeout`).
pub fn run_cli(args: &[&str], envs: &[(&str, &str)], home: &Path, timeout: Duration) -> CliOutput {
    let mut agent = Agent::spawn("cli", args, envs, home);
    let status = agent.wait_exit(timeout);
    let timed_out = status.is_none();
    if timed_out {
        agent.kill();
    }
    // Let the reader threads drain the pipes.
    {
        let (lock, cv) = &*agent.logs;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = lock.lock().unwrap();
        while buf.closed_streams < 2 && Instant::now() < deadline {
            buf = cv.wait_timeout(buf, Duration::from_millis(50)).unwrap().0;
        }
    }
    let lines = agent.log_lines();
    let mut stdout = String::new();
    let mut stderr = String::new();
    for l in lines {
        if let Some(rest) = l.strip_prefix("[stdout] ") {
            stdout.push_str(rest);
            stdout.push('\n');
        } else {
            stderr.push_str(&l);
            stderr.push('\n');
        }
    }
    CliOutput {
        code: status.and_then(|s| s.code()),
        timed_out,
        stdout,
        stderr,
    }
}
