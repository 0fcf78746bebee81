//! The operator stays in charge, end to end on the real binary: `pause`/`resume`, the
//! serving schedule (fixture time zone, fake clock), local first (fake backends with
//! foreign load, a Jetson GPU load file), the thermal and battery guards (fixture sysfs
//! trees). Each time the coordinator sees the models withdrawn (capabilities with none)
//! and restored, jobs meanwhile get `out_of_capacity` naming the reason, and a job
//! already running finishes.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::agent::{run_cli, Agent, CliOutput, Setup};
use support::coordinator::Conn;
use support::fake_backend::{FakeBackend, Kind};
use support::jobs::{chat_request, job, kind_str, new_job_id, offered_ids};
use support::{watchdog, TempDir};

const MODEL: &str = "gate-model";
const S10: Duration = Duration::from_secs(10);
const S20: Duration = Duration::from_secs(20);

/// An authenticated agent and every frame it sent, each taken at most once.
struct Gated {
    agent: Agent,
    conn: Conn,
    frames: Vec<(Value, bool)>,
    config: PathBuf,
    root: PathBuf,
    setup: Setup,
}

/// A setup whose gate ticks fast: status every 0.2 s, local first at 0.6 s busy and
/// 1 s idle; `start` points its sensors at a tree of the test's making.
fn setup(name: &str, fb: &FakeBackend) -> Setup {
    let mut s = Setup::new(name);
    s.set(
        "/backends",
        json!([{"kind": kind_str(fb.kind()), "url": fb.url()}]),
    );
    s.set("/status/interval_s", json!(0.2));
    s.set(
        "/local_first",
        json!({"enabled": true, "busy_s": 0.6, "idle_s": 1.0}),
    );
    s.set("/limits/max_temp_c", json!(85));
    s.set("/limits/resume_temp_c", json!(75));
    s.set("/limits/allow_battery", json!(false));
    s
}

/// Starts the agent with its sensors under `root` (USEPOD_EDGE_TEST_ROOT) and
/// authenticates it.
fn start(s: Setup, root: &Path, envs: &[(&str, &str)]) -> Gated {
    let config = s.write_config();
    let mut all: Vec<(&str, &str)> = vec![("USEPOD_EDGE_TEST_ROOT", root.to_str().unwrap())];
    all.extend_from_slice(envs);
    let agent = Agent::spawn(
        &s.name,
        &[
            "--config",
            config.to_str().unwrap(),
            "--log-level",
            "debug",
            "run",
        ],
        &all,
        s.dir.path(),
    );
    let conn = s.coord.accept(S10);
    conn.authenticate(Some("prov-gate"));
    Gated {
        agent,
        conn,
        frames: Vec::new(),
        config,
        root: root.to_path_buf(),
        setup: s,
    }
}

fn is_caps(v: &Value) -> bool {
    v["type"] == "capabilities"
}

fn no_models(v: &Value) -> bool {
    is_caps(v) && offered_ids(v).is_empty()
}

fn offers(v: &Value) -> bool {
    is_caps(v) && offered_ids(v).iter().any(|m| m == MODEL)
}

fn terminal_of<'a>(id: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |v: &Value| (v["type"] == "job_done" || v["type"] == "job_error") && v["job_id"] == id
}

impl Gated {
    /// The first frame not taken yet for which `pred` holds, waiting up to `timeout`.
    /// Capabilities are a state: taking one also takes every earlier one.
    fn wait(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        loop {
            if let Some(i) =
                (scanned..self.frames.len()).find(|&i| !self.frames[i].1 && pred(&self.frames[i].0))
            {
                let caps = is_caps(&self.frames[i].0);
                for (j, f) in self.frames.iter_mut().enumerate().take(i + 1) {
                    if j == i || (caps && is_caps(&f.0)) {
                        f.1 = true;
                    }
                }
                return self.frames[i].0.clone();
            }
            scanned = self.frames.len();
            let left = deadline.saturating_duration_since(Instant::now());
            match self.conn.recv_json(left) {
                Some(v) => self.frames.push((v, false)),
                None => panic!(
                    "no frame {what} within {timeout:?}; frames: {:#?}\n--- agent log ---\n{}",
                    self.frames.iter().map(|f| &f.0).collect::<Vec<_>>(),
                    self.agent.logs()
                ),
            }
        }
    }

    fn withdrawn(&mut self, timeout: Duration) {
        self.wait("withdrawing the models", timeout, no_models);
    }

    fn offered(&mut self, timeout: Duration) {
        self.wait("offering the model", timeout, offers);
    }

    /// Whether a capabilities frame without models came, among the frames read so far.
    fn saw_withdrawal(&mut self) -> bool {
        while let Some(v) = self.conn.recv_json(Duration::ZERO) {
            self.frames.push((v, false));
        }
        self.frames.iter().any(|(v, taken)| !taken && no_models(v))
    }

    fn send_job(&self, id: &str) {
        self.conn.send_json(&job(id, MODEL, chat_request("go")));
    }

    fn outcome(&mut self, id: &str, timeout: Duration) -> Value {
        self.wait(&format!("ending job {id}"), timeout, terminal_of(id))
    }

    /// A job sent now must be refused at once with out_of_capacity naming `reason`,
    /// and nothing more: the details stay on the device.
    fn refused(&mut self, reason: &str) {
        let id = new_job_id();
        self.send_job(&id);
        let end = self.outcome(&id, Duration::from_secs(5));
        assert_eq!(end["type"], "job_error", "{end}");
        assert_eq!(end["error_code"], "out_of_capacity", "{end}");
        assert_eq!(
            end["message"],
            format!("not admitting jobs: {reason}"),
            "{end}"
        );
    }

    fn done(&mut self) {
        let id = new_job_id();
        self.send_job(&id);
        let end = self.outcome(&id, S10);
        assert_eq!(end["type"], "job_done", "{end}\n{}", self.agent.logs());
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        run_cli(&all, &[], self.setup.dir.path(), Duration::from_secs(30))
    }

    fn state(&self) -> Value {
        let path = self.setup.key_path.with_file_name("state.json");
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// Waits until the state file's `serving` section satisfies `pred`.
    fn wait_state(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + S10;
        loop {
            let s = self.state();
            if pred(&s["serving"]) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "state never showed {what}: {s:#}\n{}",
                self.agent.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn block<'a>(serving: &'a Value, reason: &str) -> Option<&'a Value> {
    serving["blocks"]
        .as_array()?
        .iter()
        .find(|b| b["reason"] == reason)
}

/// Writes a sysfs-like file atomically, so the agent never reads half of it.
fn put(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn long_backend(kind: Kind, events: usize) -> FakeBackend {
    let fb = FakeBackend::start(kind, &[MODEL]);
    fb.set_reply(&[" tick"], (5, events as u64));
    fb.set_stream_len(events, Duration::from_millis(100));
    fb
}

// ---------------------------------------------------------------------------------------
// pause / resume
// ---------------------------------------------------------------------------------------

#[test]
fn pause_withdraws_refuses_and_lets_the_running_job_finish_then_resume_restores() {
    let _w = watchdog(Duration::from_secs(60), "pause_and_resume");
    let root = TempDir::new("gate-root-pause");
    let fb = long_backend(Kind::LlamaCpp, 25);
    let mut g = start(setup("pause", &fb), root.path(), &[]);
    g.offered(S10);

    let running = new_job_id();
    g.send_job(&running);
    g.wait("first chunk", S10, |v| {
        v["type"] == "job_chunk" && v["job_id"] == running
    });
    let out = g.cli(&["pause"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains("stopped taking jobs"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout.contains("1 job(s) still running"),
        "{}",
        out.describe()
    );
    g.withdrawn(S10);
    g.refused("paused by the operator");

    let status = g.cli(&["status"]);
    for needle in [
        "admitting jobs: no",
        "paused by the operator",
        "`usepod-edge resume` to serve again",
    ] {
        assert!(
            status.stdout.contains(needle),
            "{needle}: {}",
            status.describe()
        );
    }
    let state = g.state();
    let paused = block(&state["serving"], "paused").expect("a paused block");
    assert!(paused["since"]["unix"].as_u64().is_some(), "{paused}");
    assert_eq!(paused["until"], Value::Null);

    // Nothing running was cut: the job streams to its end.
    let end = g.outcome(&running, S20);
    assert_eq!(end["type"], "job_done", "{end}");
    assert!(fb.client_closes().is_empty(), "the backend saw the job cut");

    let out = g.cli(&["resume"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains("takes jobs again"),
        "{}",
        out.describe()
    );
    g.offered(S10);
    g.done();
    assert!(g
        .agent
        .has_log("not admitting new jobs: paused by the operator"));
    assert!(g.agent.has_log("admitting jobs again"));
}

#[test]
fn pause_drain_returns_once_nothing_runs_and_a_paused_agent_starts_paused() {
    let _w = watchdog(Duration::from_secs(60), "pause_drain");
    let root = TempDir::new("gate-root-drain");
    let fb = long_backend(Kind::LlamaCpp, 15);
    let mut g = start(setup("pause-drain", &fb), root.path(), &[]);
    g.offered(S10);
    let running = new_job_id();
    g.send_job(&running);
    g.wait("first chunk", S10, |v| {
        v["type"] == "job_chunk" && v["job_id"] == running
    });

    let out = g.cli(&["pause", "--drain"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains("drained: no job is running"),
        "{}",
        out.describe()
    );
    // The command returned only after the job had ended, and the job ended well.
    let end = g.outcome(&running, Duration::from_secs(1));
    assert_eq!(end["type"], "job_done", "{end}");
    assert_eq!(g.state()["jobs"]["in_flight"], 0);

    // The pause is in a file: a restarted agent starts paused, its first
    // capabilities already without models.
    let Gated {
        mut agent,
        setup,
        root,
        ..
    } = g;
    agent.kill();
    let mut g = start(setup, &root, &[]);
    let first = g.wait("first capabilities", S10, is_caps);
    assert!(offered_ids(&first).is_empty(), "{first}");
    g.refused("paused by the operator");
    let out = g.cli(&["resume"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    g.offered(S10);
    g.done();
}

#[test]
fn a_control_file_others_may_write_is_ignored_and_reported() {
    let _w = watchdog(Duration::from_secs(40), "control_file_mode");
    use std::os::unix::fs::PermissionsExt;
    let root = TempDir::new("gate-root-mode");
    let fb = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    let s = setup("control-mode", &fb);
    let control = s.key_path.with_file_name("control.json");
    std::fs::create_dir_all(control.parent().unwrap()).unwrap();
    std::fs::write(&control, r#"{"paused":true,"since_unix":1}"#).unwrap();
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut g = start(s, root.path(), &[]);
    g.offered(S10);
    g.done();
    assert!(
        g.agent.wait_for_log("ignored: mode 0666", S10),
        "{}",
        g.agent.logs()
    );
    let status = g.cli(&["status"]);
    assert!(
        status.stdout.contains("admitting jobs: yes"),
        "{}",
        status.describe()
    );
    assert!(status.stdout.contains("chmod 600"), "{}", status.describe());
    // The sensor root is a test hook: said at start and by every status, since on a
    // device it would turn the guards off.
    let hook = format!("test hook USEPOD_EDGE_TEST_ROOT={}", root.path().display());
    assert!(g.agent.has_log(&hook), "{}", g.agent.logs());
    assert!(
        status.stdout.contains(&format!("warning: {hook} is set")),
        "{}",
        status.describe()
    );
    // Made private, the same file pauses.
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o600)).unwrap();
    g.withdrawn(S10);
    g.refused("paused by the operator");
}

// ---------------------------------------------------------------------------------------
// serving windows
// ---------------------------------------------------------------------------------------

fn tz_fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tz")
        .join(name)
        .display()
        .to_string()
}

/// Monday 2026-06-01 21:59:52 at UTC+05:30, eight seconds before a 22:00 window.
const MONDAY_BEFORE_22: &str = "1780331392";
/// Tuesday 2026-06-02 06:59:54 at UTC+05:30, six seconds before the window ends.
const TUESDAY_BEFORE_07: &str = "1780363794";

fn scheduled(name: &str, fb: &FakeBackend) -> Setup {
    let mut s = setup(name, fb);
    s.set(
        "/schedule",
        json!([{"days": "Mon-Fri", "from": "22:00", "to": "07:00"}]),
    );
    s
}

#[test]
fn outside_the_window_the_agent_waits_with_its_session_up_and_serves_when_it_opens() {
    let _w = watchdog(Duration::from_secs(60), "schedule_opens");
    let root = TempDir::new("gate-root-sched");
    let fb = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    let s = scheduled("schedule-opens", &fb);
    let tz = tz_fixture("Test/Fixed");
    let env = [
        ("TZ", tz.as_str()),
        ("USEPOD_EDGE_TEST_NOW", MONDAY_BEFORE_22),
    ];

    // validate explains the schedule in words, in the zone and at the time given.
    let cfg = s.write_config();
    let v = run_cli(
        &["--config", cfg.to_str().unwrap(), "validate"],
        &env,
        s.dir.path(),
        S10,
    );
    assert_eq!(v.code, Some(0), "{}", v.describe());
    assert!(
        v.stdout
            .contains("schedule: serving Mon-Fri 22:00-07:00, now paused until 22:00"),
        "{}",
        v.describe()
    );
    assert!(v.stdout.contains("(+0530, UTC+05:30)"), "{}", v.describe());

    let mut g = start(s, root.path(), &env);
    let first = g.wait("first capabilities", S10, is_caps);
    assert!(offered_ids(&first).is_empty(), "{first}");
    g.refused("outside the serving schedule");
    let state = g.wait_state("a schedule block", |s| block(s, "schedule").is_some());
    let b = block(&state["serving"], "schedule").unwrap();
    // Until 22:00 local = 16:30 UTC; since Saturday 07:00 local = 01:30 UTC.
    assert_eq!(b["until"]["unix"], 1_780_331_400, "{b}");
    assert_eq!(b["since"]["unix"], 1_780_104_600, "{b}");
    // 22:00: the models come, on the same connection.
    g.offered(S20);
    g.done();
    assert_eq!(g.setup.coord.tcp_accepts(), 1, "the session stayed up");
}

#[test]
fn when_the_window_closes_the_running_job_finishes_and_new_ones_are_refused() {
    let _w = watchdog(Duration::from_secs(60), "schedule_closes");
    let root = TempDir::new("gate-root-close");
    let fb = long_backend(Kind::LlamaCpp, 90);
    let tz = tz_fixture("Test/Fixed");
    let env = [
        ("TZ", tz.as_str()),
        ("USEPOD_EDGE_TEST_NOW", TUESDAY_BEFORE_07),
    ];
    let mut g = start(scheduled("schedule-closes", &fb), root.path(), &env);
    g.offered(S10);
    let running = new_job_id();
    g.send_job(&running);
    g.wait("first chunk", S10, |v| {
        v["type"] == "job_chunk" && v["job_id"] == running
    });
    // 07:00 comes while the job streams (nine seconds of it).
    g.withdrawn(S20);
    assert!(
        g.frames.iter().all(|(v, _)| !terminal_of(&running)(v)),
        "the job ended before the window closed; the machine is too slow for this test"
    );
    g.refused("outside the serving schedule");
    let end = g.outcome(&running, S20);
    assert_eq!(end["type"], "job_done", "{end}");
    assert!(fb.client_closes().is_empty(), "the backend saw the job cut");
    let status = g.cli(&["status"]);
    assert!(
        status
            .stdout
            .contains("schedule: serving Mon-Fri 22:00-07:00, now paused until 22:00"),
        "{}",
        status.describe()
    );
}

// ---------------------------------------------------------------------------------------
// local first
// ---------------------------------------------------------------------------------------

/// Our own long job must not look like local use: it runs three times longer than
/// `busy_s` and nothing is withdrawn meanwhile.
fn own_job_is_not_local_use(g: &mut Gated) {
    let own = new_job_id();
    g.send_job(&own);
    let end = g.outcome(&own, S20);
    assert_eq!(end["type"], "job_done", "{end}");
    assert!(
        !g.saw_withdrawal(),
        "our own job was taken for local use\n{}",
        g.agent.logs()
    );
    assert!(!g.agent.has_log("not admitting"), "{}", g.agent.logs());
}

fn foreign_load_withdraws_until_quiet(kind: Kind) {
    let root = TempDir::new("gate-root-local");
    let fb = long_backend(kind, 20);
    let mut g = start(
        setup(&format!("local-{}", kind_str(kind)), &fb),
        root.path(),
        &[],
    );
    g.offered(S10);
    own_job_is_not_local_use(&mut g);

    fb.set_foreign_busy(2);
    g.withdrawn(S10);
    g.refused("the device is in local use");
    let state = g.wait_state("a local_use block", |s| block(s, "local_use").is_some());
    let detail = block(&state["serving"], "local_use").unwrap()["detail"].to_string();
    assert!(
        detail.contains(&fb.url()) && detail.contains("not ours"),
        "{detail}"
    );
    // Quiet for idle_s brings the models back; `until` says when meanwhile.
    fb.set_foreign_busy(0);
    g.wait_state("when local use ends", |s| {
        block(s, "local_use").is_some_and(|b| b["until"]["unix"].is_u64())
    });
    g.offered(S10);
    g.done();
}

#[test]
fn llama_server_slots_busy_with_foreign_requests_withdraw_until_quiet() {
    let _w = watchdog(Duration::from_secs(60), "local_llama");
    foreign_load_withdraws_until_quiet(Kind::LlamaCpp);
}

#[test]
fn vllm_requests_that_are_not_ours_withdraw_until_quiet() {
    let _w = watchdog(Duration::from_secs(60), "local_vllm");
    foreign_load_withdraws_until_quiet(Kind::Vllm);
}

#[test]
fn ollama_models_used_by_others_withdraw_until_quiet() {
    let _w = watchdog(Duration::from_secs(60), "local_ollama");
    let root = TempDir::new("gate-root-ollama");
    let fb = FakeBackend::start(Kind::Ollama, &[MODEL]);
    let mut g = start(setup("local-ollama", &fb), root.path(), &[]);
    g.offered(S10);
    // Our own jobs move the model's expiry too, for longer than busy_s.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        g.done();
    }
    assert!(
        !g.saw_withdrawal(),
        "our own jobs were taken for local use\n{}",
        g.agent.logs()
    );

    // Somebody else asks a model of their own, once: Ollama shows a request only as
    // the model's expiry moving, so one is held as busy_s of use.
    fb.touch_foreign("their-model:latest");
    g.withdrawn(S10);
    g.refused("the device is in local use");
    let state = g.wait_state("a local_use block", |s| block(s, "local_use").is_some());
    let detail = block(&state["serving"], "local_use").unwrap()["detail"].to_string();
    assert!(
        detail.contains("their-model:latest") && detail.contains(&fb.url()),
        "{detail}"
    );
    g.offered(S10);
    g.done();
}

#[test]
fn jetson_gpu_load_beyond_our_jobs_withdraws_until_quiet() {
    let _w = watchdog(Duration::from_secs(60), "local_gpu");
    let root = TempDir::new("gate-root-gpu");
    put(
        root.path(),
        "etc/nv_tegra_release",
        "# R36 (release), REVISION: 4.7, GCID: 42132812, BOARD: generic, EABI: aarch64, DATE: Thu Sep 18 22:54:44 UTC 2025\n",
    );
    put(root.path(), "sys/devices/platform/gpu.0/load", "0\n");
    let fb = long_backend(Kind::LlamaCpp, 20);
    let mut g = start(setup("local-gpu", &fb), root.path(), &[]);
    g.offered(S10);
    // While our job runs, a busy GPU is ours to explain: no withdrawal.
    let own = new_job_id();
    g.send_job(&own);
    g.wait("first chunk", S10, |v| {
        v["type"] == "job_chunk" && v["job_id"] == own
    });
    put(root.path(), "sys/devices/platform/gpu.0/load", "800\n");
    let end = g.outcome(&own, S20);
    assert_eq!(end["type"], "job_done", "{end}");
    assert!(
        !g.saw_withdrawal(),
        "our own job's GPU load was taken for local use"
    );
    // With nothing of ours running, the same load is somebody else's.
    g.withdrawn(S10);
    g.refused("the device is in local use");
    g.wait_state("the GPU's load", |s| {
        block(s, "local_use")
            .is_some_and(|b| b["detail"] == "GPU: GPU 80% busy with none of our jobs running")
    });
    put(root.path(), "sys/devices/platform/gpu.0/load", "20\n");
    g.offered(S10);
    g.done();
}

/// Off Tegra, nvidia-smi is both signals: its utilization for local first, its
/// temperature for the thermal guard. The tree's own `usr/bin/nvidia-smi` (a script
/// printing `smi.csv`) stands for the driver's.
#[test]
fn nvidia_smi_utilization_and_temperature_off_tegra() {
    let _w = watchdog(Duration::from_secs(60), "nvidia_smi");
    use std::os::unix::fs::PermissionsExt;
    let root = TempDir::new("gate-root-smi");
    let csv = |util: u32, temp: u32| {
        put(
            root.path(),
            "smi.csv",
            &format!("NVIDIA GeForce RTX 4090, 24564, 8192, {util}, {temp}\n"),
        );
    };
    csv(0, 50);
    put(
        root.path(),
        "usr/bin/nvidia-smi",
        "#!/bin/sh\nexec cat \"$(dirname \"$0\")/../../smi.csv\"\n",
    );
    let smi = root.join("usr/bin/nvidia-smi");
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fb = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    let mut g = start(setup("nvidia-smi", &fb), root.path(), &[]);
    g.offered(S10);
    csv(90, 50);
    g.withdrawn(S10);
    g.refused("the device is in local use");
    g.wait_state("the GPU's load", |s| {
        block(s, "local_use")
            .is_some_and(|b| b["detail"] == "GPU: GPU 90% busy with none of our jobs running")
    });
    csv(0, 50);
    g.offered(S10);
    csv(0, 91);
    g.withdrawn(S10);
    g.refused("too hot");
    g.wait_state("the GPU's temperature", |s| {
        block(s, "heat").is_some_and(|b| {
            b["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with("GPU 0 at 91.0 °C")
        })
    });
    csv(0, 60);
    g.offered(S10);
    g.done();
}

// ---------------------------------------------------------------------------------------
// heat and power
// ---------------------------------------------------------------------------------------

#[test]
fn above_the_limit_no_new_jobs_until_cool_and_the_running_job_finishes() {
    let _w = watchdog(Duration::from_secs(60), "heat");
    let root = TempDir::new("gate-root-heat");
    let zone = |i: u32, kind: &str, milli: u32| {
        put(
            root.path(),
            &format!("sys/class/thermal/thermal_zone{i}/type"),
            &format!("{kind}\n"),
        );
        put(
            root.path(),
            &format!("sys/class/thermal/thermal_zone{i}/temp"),
            &format!("{milli}\n"),
        );
    };
    zone(0, "cpu-thermal", 50_000);
    zone(1, "gpu-thermal", 60_000);
    // A board sensor far above the limit is not the silicon: it never stops jobs.
    zone(2, "Tboard_tegra", 99_000);
    let fb = long_backend(Kind::LlamaCpp, 25);
    let mut g = start(setup("heat", &fb), root.path(), &[]);
    g.offered(S10);
    let running = new_job_id();
    g.send_job(&running);
    g.wait("first chunk", S10, |v| {
        v["type"] == "job_chunk" && v["job_id"] == running
    });

    zone(1, "gpu-thermal", 90_500);
    g.withdrawn(S10);
    g.refused("too hot");
    let state = g.wait_state("a heat block", |s| block(s, "heat").is_some());
    assert_eq!(
        block(&state["serving"], "heat").unwrap()["detail"],
        "gpu at 90.5 °C; above 85 °C stops jobs, serving again at 75 °C or cooler"
    );
    // Cooling below the limit is not enough: 80 °C is above the resume point.
    zone(1, "gpu-thermal", 80_000);
    g.wait_state("80 °C", |s| {
        block(s, "heat").is_some_and(|b| b["detail"].as_str().unwrap_or("").contains("80.0 °C"))
    });
    g.refused("too hot");
    let end = g.outcome(&running, S20);
    assert_eq!(end["type"], "job_done", "{end}");
    zone(1, "gpu-thermal", 74_000);
    g.offered(S10);
    g.done();
}

#[test]
fn on_battery_no_jobs_until_external_power_returns() {
    let _w = watchdog(Duration::from_secs(60), "battery");
    let root = TempDir::new("gate-root-battery");
    put(root.path(), "sys/class/power_supply/AC/type", "Mains\n");
    put(root.path(), "sys/class/power_supply/AC/online", "0\n");
    put(root.path(), "sys/class/power_supply/BAT0/type", "Battery\n");
    put(
        root.path(),
        "sys/class/power_supply/BAT0/status",
        "Discharging\n",
    );
    let fb = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    let mut g = start(setup("battery", &fb), root.path(), &[]);
    let first = g.wait("first capabilities", S10, is_caps);
    assert!(offered_ids(&first).is_empty(), "{first}");
    g.refused("running on battery power");
    let status = g.cli(&["status"]);
    assert!(
        status
            .stdout
            .contains("running on battery power (BAT0 is discharging"),
        "{}",
        status.describe()
    );
    assert!(
        status.stdout.contains("limits.allow_battery"),
        "{}",
        status.describe()
    );
    put(root.path(), "sys/class/power_supply/AC/online", "1\n");
    g.offered(S10);
    g.done();
}

#[test]
fn allowed_on_battery_the_agent_serves() {
    let _w = watchdog(Duration::from_secs(40), "battery_allowed");
    let root = TempDir::new("gate-root-battery-ok");
    put(root.path(), "sys/class/power_supply/BAT0/type", "Battery\n");
    put(
        root.path(),
        "sys/class/power_supply/BAT0/status",
        "Discharging\n",
    );
    let fb = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    let mut s = setup("battery-allowed", &fb);
    s.set("/limits/allow_battery", json!(true));
    let mut g = start(s, root.path(), &[]);
    g.offered(S10);
    g.done();
}

#[test]
fn the_jetson_power_mode_is_in_status_and_the_hardware_metadata() {
    let _w = watchdog(Duration::from_secs(40), "power_mode");
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jetson-orin-nano-super-r36.4.7");
    let fb = FakeBackend::start(Kind::LlamaCpp, &[MODEL]);
    let mut g = start(setup("power-mode", &fb), &root, &[]);
    let caps = g.wait("capabilities with the hardware", S10, |v| {
        offers(v) && v["metadata"]["hardware"]["jetson"].is_object()
    });
    assert_eq!(
        caps["metadata"]["hardware"]["jetson"]["power_mode"],
        json!({"id": 2, "name": "MAXN_SUPER"}),
        "{caps}"
    );
    g.wait_state("the power mode", |s| s["power_mode"]["id"] == 2);
    let status = g.cli(&["status"]);
    assert!(
        status
            .stdout
            .contains("power mode: MAXN_SUPER (nvpmodel 2)"),
        "{}",
        status.describe()
    );
    assert!(
        status.stdout.contains("admitting jobs: yes"),
        "{}",
        status.describe()
    );
}
