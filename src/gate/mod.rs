//! The admission gate: the operator's reasons not to take jobs (paused, outside the
//! serving schedule, local use, heat, battery power) combined into one decision.
//!
//! While any reason stands, new jobs are answered `out_of_capacity` with the reason,
//! the models are withdrawn (capabilities re-sent with none), running jobs finish and
//! the session stays up; when none is left the models are announced again. A monitor
//! thread re-reads the inputs on the status interval; each rule is a pure function in
//! its own module, and [`blocks`] is the pure combination.

pub mod control;
pub mod local;
pub mod sensors;
pub mod tz;

use crate::backend::answers::Slot;
use crate::backend::BackendKind;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::discovery::Discovery;
use crate::hardware::{Gpu, PowerMode};
use crate::jobs::Jobs;
use crate::json_fields::json_fields;
use crate::schedule;
use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;
use serde_json::Number;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// For tests: the filesystem root sensors are read under (a fixture tree) instead of `/`.
pub const ENV_TEST_ROOT: &str = "USEPOD_EDGE_TEST_ROOT";
/// For tests: the wall clock the gate sees starts at this Unix time (seconds) and runs on.
pub const ENV_TEST_NOW: &str = "USEPOD_EDGE_TEST_NOW";

/// The root sensors and the hardware description are read under.
pub fn root() -> PathBuf {
    std::env::var_os(ENV_TEST_ROOT)
        .filter(|r| !r.is_empty())
        .map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// The gate's wall clock: the system's, or (tests) one started at a given time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    fake: Option<(SystemTime, Instant)>,
}

impl Clock {
    pub fn from_env() -> Clock {
        let fake = std::env::var(ENV_TEST_NOW)
            .ok()
            .and_then(|v| crate::decimal::plain_decimal(v.trim()))
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| (UNIX_EPOCH + Duration::from_secs_f64(s), Instant::now()));
        Clock { fake }
    }

    /// (monotonic, wall): durations come from the first, dates from the second.
    pub fn now(&self) -> (Instant, SystemTime) {
        let mono = Instant::now();
        match self.fake {
            Some((wall0, mono0)) => (mono, wall0 + mono.saturating_duration_since(mono0)),
            None => (mono, SystemTime::now()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Paused,
    Schedule,
    LocalUse,
    Heat,
    Battery,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Paused => "paused",
            Reason::Schedule => "schedule",
            Reason::LocalUse => "local_use",
            Reason::Heat => "heat",
            Reason::Battery => "battery",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Reason::Paused => "the operator's pause",
            Reason::Schedule => "the serving schedule",
            Reason::LocalUse => "local use",
            Reason::Heat => "heat",
            Reason::Battery => "battery power",
        }
    }
}

/// One standing reason not to admit.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub reason: Reason,
    pub since: SystemTime,
    /// When it ends, where that is known (a schedule window; the end of a quiet spell).
    pub until: Option<SystemTime>,
    pub detail: String,
}

impl Block {
    /// The reason in a few words: all a refused job's message says, since the
    /// details (who uses the device, its temperature, its battery) are the
    /// operator's business, not the marketplace's.
    pub fn lead(&self) -> &'static str {
        match self.reason {
            Reason::Paused => "paused by the operator",
            Reason::Schedule => "outside the serving schedule",
            Reason::LocalUse => "the device is in local use",
            Reason::Heat => "too hot",
            Reason::Battery => "running on battery power",
        }
    }

    /// The reason with its details, for the log and `status`.
    pub fn text(&self) -> String {
        if self.detail.is_empty() {
            self.lead().to_string()
        } else {
            format!("{} ({})", self.lead(), self.detail)
        }
    }
}

/// Where the schedule stands at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleState {
    pub serving: bool,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// `serving Mon-Fri 22:00-07:00, now paused until 22:00`
    pub text: String,
}

fn wall_of(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        UNIX_EPOCH
    }
}

fn unix_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Pure: the schedule at `now` in `zone`; None without a schedule.
pub fn schedule_state(
    windows: &[schedule::Window],
    zone: &tz::Zone,
    now: SystemTime,
) -> Option<ScheduleState> {
    if windows.is_empty() {
        return None;
    }
    let local_min = zone.to_local(unix_of(now)).div_euclid(60);
    let at = |m: i64| wall_of(zone.to_utc(m * 60));
    Some(ScheduleState {
        serving: schedule::serving_at(windows, local_min),
        since: schedule::last_change(windows, local_min).map(at),
        until: schedule::next_change(windows, local_min).map(at),
        text: schedule::explain(windows, local_min),
    })
}

/// Everything the gate decides on, as read at one instant.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub pause: Option<control::Pause>,
    pub schedule: Option<ScheduleState>,
    pub local: Option<local::Yield>,
    /// (since, detail)
    pub heat: Option<(SystemTime, String)>,
    pub battery: Option<(SystemTime, String)>,
    pub allow_battery: bool,
}

/// The one decision: every reason that stands, in a fixed order. Admitting iff empty.
pub fn blocks(i: &Inputs, now: SystemTime) -> Vec<Block> {
    let mut out = Vec::new();
    if let Some(p) = &i.pause {
        let detail = if p.drain { "drain requested" } else { "" };
        out.push(Block {
            reason: Reason::Paused,
            since: p.since,
            until: None,
            detail: format!(
                "{detail}{}`usepod-edge resume` to serve again",
                if detail.is_empty() { "" } else { "; " }
            ),
        });
    }
    if let Some(s) = i.schedule.as_ref().filter(|s| !s.serving) {
        out.push(Block {
            reason: Reason::Schedule,
            since: s.since.unwrap_or(now),
            until: s.until,
            detail: s.text.clone(),
        });
    }
    if let Some(y) = &i.local {
        out.push(Block {
            reason: Reason::LocalUse,
            since: y.since,
            until: y.until,
            detail: y.detail.clone(),
        });
    }
    if let Some((since, detail)) = &i.heat {
        out.push(Block {
            reason: Reason::Heat,
            since: *since,
            until: None,
            detail: detail.clone(),
        });
    }
    if let Some((since, detail)) = i.battery.as_ref().filter(|_| !i.allow_battery) {
        out.push(Block {
            reason: Reason::Battery,
            since: *since,
            until: None,
            detail: format!("{detail}; set limits.allow_battery to serve anyway"),
        });
    }
    out
}

/// The `out_of_capacity` message while `blocks` stand.
pub fn refusal(blocks: &[Block]) -> Option<String> {
    (!blocks.is_empty()).then(|| {
        let why: Vec<&str> = blocks.iter().map(Block::lead).collect();
        format!("not admitting jobs: {}", why.join("; "))
    })
}

#[derive(Default)]
struct Shared {
    blocks: Vec<Block>,
    schedule: Option<String>,
    power_mode: Option<PowerMode>,
    /// Problems with the gate's own inputs (an ignored control file, an unknown zone).
    notes: Vec<String>,
}

json_fields! {
    /// The `serving` section of the state file, which `status`, `pause` and `resume` read.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    pub struct Serving {
        pub admitting: bool,
        pub blocks: Vec<BlockState>,
        /// Where the schedule stands, in words; None without a schedule.
        pub schedule: Option<String>,
        pub power_mode: Option<PowerMode>,
        /// Problems with the gate's own inputs.
        pub notes: Vec<String>,
    }
}

/// Nothing stands in the way: what a section without blocks means.
impl Default for Serving {
    fn default() -> Self {
        Serving {
            admitting: true,
            blocks: Vec::new(),
            schedule: None,
            power_mode: None,
            notes: Vec::new(),
        }
    }
}

json_fields! {
    /// A [`Block`] as the state file shows it.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct BlockState {
        /// A [`Reason`] as `Reason::as_str` spells it.
        pub reason: String,
        pub since: At,
        pub until: Option<At>,
        pub detail: String,
        /// What `status` shows: the reason in a few words and the detail.
        pub text: String,
    }
}

json_fields! {
    /// An instant, for people and for programs.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct At {
        pub at: String,
        pub unix: i64,
    }
}

/// What the rest of the agent sees of the gate.
pub struct Gate {
    shared: Mutex<Shared>,
    changed_tx: Sender<()>,
    changed_rx: Receiver<()>,
}

impl Default for Gate {
    fn default() -> Self {
        let (changed_tx, changed_rx) = bounded(1);
        Gate {
            shared: Mutex::default(),
            changed_tx,
            changed_rx,
        }
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        crate::lock::lock(&self.shared)
    }

    pub fn admitting(&self) -> bool {
        self.lock().blocks.is_empty()
    }

    /// Fires (coalesced) when admission starts or stops, or its reasons change.
    pub fn changes(&self) -> Receiver<()> {
        self.changed_rx.clone()
    }

    /// The `serving` section of the state file.
    pub fn status(&self) -> Serving {
        let s = self.lock();
        let at = |t: SystemTime| At {
            at: rfc3339(t),
            unix: unix_of(t),
        };
        Serving {
            admitting: s.blocks.is_empty(),
            blocks: s
                .blocks
                .iter()
                .map(|b| BlockState {
                    reason: b.reason.as_str().to_owned(),
                    since: at(b.since),
                    until: b.until.map(at),
                    detail: b.detail.clone(),
                    text: b.text(),
                })
                .collect(),
            schedule: s.schedule.clone(),
            power_mode: s.power_mode.clone(),
            notes: s.notes.clone(),
        }
    }

    /// Installs a new decision; true when admission or its reasons changed.
    fn publish(&self, new: Shared) -> bool {
        let mut s = self.lock();
        let reasons = |b: &[Block]| b.iter().map(|b| b.reason).collect::<Vec<_>>();
        let changed = reasons(&s.blocks) != reasons(&new.blocks);
        *s = new;
        drop(s);
        if changed {
            let _ = self.changed_tx.try_send(());
        }
        changed
    }
}

/// How long a backend without the signal endpoint is left alone before asking again.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(300);
/// nvidia-smi starts the driver's library on every run (up to a second without
/// persistence mode): every third status interval, and at most every 15 s.
const SMI_EVERY_MAX: Duration = Duration::from_secs(15);
/// The zone is read again this often, so a `timedatectl set-timezone` needs no restart.
const ZONE_EVERY: Duration = Duration::from_secs(60);

/// The gate's reading side: sensors, the control file, the backends.
struct Monitor {
    clock: Clock,
    root: PathBuf,
    control: PathBuf,
    zone: tz::Found,
    zone_read: Instant,
    heat: Option<(SystemTime, String)>,
    battery: Option<(SystemTime, String)>,
    local: local::Tracker,
    /// Ollama's previous `/api/ps` and our jobs then, per backend URL.
    ollama: HashMap<String, (Vec<local::Loaded>, local::Ours)>,
    /// Ollama requests seen, held as busy for a while, per backend URL.
    ollama_holds: HashMap<String, local::Hold>,
    /// The GPU signal from the last nvidia-smi answer, standing until the next.
    smi_signal: local::Signal,
    /// Backends whose signal endpoint answered "no such thing", and since when.
    unsupported: HashMap<String, Instant>,
    smi_missing_until: Option<Instant>,
    /// The last nvidia-smi answer and when it was taken.
    smi: Option<(Instant, Vec<Gpu>)>,
    warned: Option<String>,
}

impl Monitor {
    fn new(config: &Config) -> Monitor {
        Monitor {
            clock: Clock::from_env(),
            root: root(),
            control: control::path(config),
            zone: tz::system(),
            zone_read: Instant::now(),
            heat: None,
            battery: None,
            local: local::Tracker::default(),
            ollama: HashMap::new(),
            ollama_holds: HashMap::new(),
            smi_signal: local::Signal::Unknown,
            unsupported: HashMap::new(),
            smi_missing_until: None,
            smi: None,
            warned: None,
        }
    }

    /// Reads everything and decides. `full` also asks the backends and nvidia-smi,
    /// which may take a second or two; the first tick, before the session starts,
    /// does not wait on them.
    fn tick(&mut self, agent: &Host, full: bool) -> Shared {
        let config = &agent.config;
        let (mono, wall) = self.clock.now();
        let mut notes = Vec::new();
        let pause = match control::read(&self.control) {
            Ok(p) => {
                self.warned = None;
                p
            }
            Err(e) => {
                let e = e.to_string();
                // Once per problem, not on every tick; `status` keeps showing it.
                if self.warned.as_ref() != Some(&e) {
                    log::warn!("{e}");
                    self.warned = Some(e.clone());
                }
                notes.push(e);
                None
            }
        };
        if let Some(w) = &self.zone.warning {
            if !config.schedule.is_empty() {
                notes.push(w.clone());
            }
        }
        if !config.schedule.is_empty() && self.zone_read.elapsed() >= ZONE_EVERY {
            self.zone = tz::system();
            self.zone_read = Instant::now();
        }
        let schedule = schedule_state(&config.schedule, &self.zone.zone, wall);

        let jetson = crate::hardware::is_jetson(&self.root);
        // Off Tegra only: on a Jetson nvidia-smi is absent or answers [N/A].
        let every = (config.status.interval * 3).min(SMI_EVERY_MAX);
        let smi_fresh = full && !jetson && self.refresh_smi(mono, every);
        let smi = self
            .smi
            .as_ref()
            .map(|(_, g)| g.clone())
            .unwrap_or_default();
        self.step_heat(config, wall, jetson, &smi);
        self.battery = match sensors::on_battery(&sensors::read_supplies(&self.root)) {
            Some(d) => Some(
                self.battery
                    .take()
                    .map_or((wall, d.clone()), |(s, _)| (s, d)),
            ),
            None => None,
        };
        if full && config.local_first.enabled {
            let fresh = smi_fresh.then_some(smi.as_slice());
            let signal = self.local_signal(agent, jetson, fresh, mono);
            self.local.step(
                &signal,
                mono,
                wall,
                config.local_first.busy,
                config.local_first.idle,
            );
        }
        let inputs = Inputs {
            pause,
            schedule: schedule.clone(),
            local: self.local.yielded().cloned(),
            heat: self.heat.clone(),
            battery: self.battery.clone(),
            allow_battery: config.limits.allow_battery,
        };
        Shared {
            blocks: blocks(&inputs, wall),
            schedule: schedule.map(|s| s.text),
            power_mode: jetson
                .then(|| crate::hardware::power_mode(&self.root))
                .flatten(),
            notes,
        }
    }

    /// The nvidia-smi that describes the machine at the root: the one on `$PATH` for
    /// this machine, a fixture tree's own `usr/bin/nvidia-smi` (a script) for a tree.
    fn smi_program(&self) -> Option<String> {
        if self.root == Path::new("/") {
            return Some("nvidia-smi".into());
        }
        let own = self.root.join("usr/bin/nvidia-smi");
        own.is_file().then(|| own.display().to_string())
    }

    /// Runs nvidia-smi when its last answer is older than `every`; true when it did now.
    fn refresh_smi(&mut self, mono: Instant, every: Duration) -> bool {
        let Some(program) = self.smi_program() else {
            return false;
        };
        if self.smi_missing_until.is_some_and(|t| mono < t)
            || self
                .smi
                .as_ref()
                .is_some_and(|(at, _)| mono.saturating_duration_since(*at) < every)
        {
            return false;
        }
        let gpus = crate::hardware::nvidia_smi(&program);
        // No driver (or no nvidia-smi): do not spawn it on every tick.
        self.smi_missing_until = gpus.is_empty().then(|| mono + UNSUPPORTED_RETRY);
        self.smi = Some((mono, gpus));
        true
    }

    fn step_heat(&mut self, config: &Config, wall: SystemTime, jetson: bool, smi: &[Gpu]) {
        let mut readings: Vec<(String, f64)> = crate::hardware::thermal_readings(&self.root)
            .into_iter()
            .filter(|(k, _)| sensors::guarded_zone(k))
            .collect();
        if !jetson {
            for (i, g) in smi.iter().enumerate() {
                if let Some(t) = g.temperature_c.as_ref().and_then(Number::as_f64) {
                    readings.push((format!("GPU {i}"), t));
                }
            }
        }
        let hottest = sensors::hottest(&readings);
        let limits = &config.limits;
        let was_hot = self.heat.is_some();
        let hot = sensors::heat_step(
            was_hot,
            hottest.as_ref().map(|h| h.1),
            limits.max_temp_c,
            limits.resume_temp_c,
        );
        self.heat = match (hot, hottest) {
            (false, _) => None,
            (true, reading) => {
                let since = self.heat.as_ref().map_or(wall, |h| h.0);
                let now = reading
                    .map(|(k, t)| format!("{k} at {t:.1} °C; "))
                    .unwrap_or_default();
                Some((
                    since,
                    format!(
                        "{now}above {:.0} °C stops jobs, serving again at {:.0} °C or cooler",
                        limits.max_temp_c, limits.resume_temp_c
                    ),
                ))
            }
        };
    }

    /// One local-first sample over every source that has a signal.
    /// `smi`: a new nvidia-smi answer, when one was taken this tick.
    fn local_signal(
        &mut self,
        agent: &Host,
        jetson: bool,
        smi: Option<&[Gpu]>,
        mono: Instant,
    ) -> local::Signal {
        let lf = &agent.config.local_first;
        let mut ours: HashMap<String, local::Ours> = HashMap::new();
        for ((backend, model), (running, admitted)) in agent.jobs.usage() {
            let o = ours.entry(backend).or_default();
            o.running += running;
            o.models.insert(model, (running, admitted));
        }
        let snapshot = agent.discovery.snapshot();
        let mut signals = Vec::new();
        for (target, probe) in &snapshot.backends {
            if !probe.as_ref().is_some_and(|p| p.healthy) {
                continue;
            }
            let url = target.url.to_string();
            if self
                .unsupported
                .get(&url)
                .is_some_and(|t| t.elapsed() < UNSUPPORTED_RETRY)
            {
                continue;
            }
            let mine = ours.get(&url).cloned().unwrap_or_default();
            let who = format!("{} at {url}", target.kind.as_str());
            let key = target.api_key.as_deref();
            let signal = match target.kind {
                BackendKind::LlamaCpp => {
                    match probe_json::<Vec<Slot>>(&target.url, "/slots", key) {
                        Answer::Body(slots) => local::llamacpp(&slots, mine.running),
                        Answer::Missing => self.mark_unsupported(url, &who, "/slots"),
                        Answer::Failed => local::Signal::Unknown,
                    }
                }
                BackendKind::Vllm => match probe_text(&target.url, "/metrics", key) {
                    Answer::Body(t) => local::vllm(&t, mine.running),
                    Answer::Missing => self.mark_unsupported(url, &who, "/metrics"),
                    Answer::Failed => local::Signal::Unknown,
                },
                BackendKind::Ollama => match probe_json(&target.url, "/api/ps", key) {
                    Answer::Body(running) => match local::ollama_ps(running) {
                        Some(now) => {
                            let before = self.ollama.get(&url);
                            let s =
                                local::ollama(before.map(|(l, o)| (l.as_slice(), o)), &now, &mine);
                            self.ollama.insert(url.clone(), (now, mine));
                            // Held one status interval past busy_s, so that it spans a
                            // whole busy_s of looks.
                            let hold = lf.busy + agent.config.status.interval;
                            self.ollama_holds
                                .entry(url)
                                .or_default()
                                .apply(s, mono, hold)
                        }
                        None => local::Signal::Unknown,
                    },
                    Answer::Missing => self.mark_unsupported(url, &who, "/api/ps"),
                    Answer::Failed => local::Signal::Unknown,
                },
                // LM Studio reports nothing about requests in progress.
                BackendKind::LmStudio => continue,
            };
            signals.push((who, signal));
        }
        let running = agent.jobs.in_flight();
        let gpu = if jetson {
            let load = crate::hardware::gpu_load_permille(&self.root).map(|p| f64::from(p) / 10.0);
            local::gpu(load, running, lf.gpu_busy_pct)
        } else {
            // nvidia-smi is asked less often than the others: its last answer stands.
            if let Some(smi) = smi {
                let load = smi
                    .iter()
                    .filter_map(|g| g.utilization_pct.as_ref().and_then(Number::as_f64))
                    .reduce(f64::max);
                self.smi_signal = local::gpu(load, running, lf.gpu_busy_pct);
            }
            self.smi_signal.clone()
        };
        signals.push(("GPU".to_string(), gpu));
        local::combine(&signals)
    }

    fn mark_unsupported(&mut self, url: String, who: &str, path: &str) -> local::Signal {
        log::info!("{who} has no {path}; local use there is judged from the GPU alone");
        self.unsupported.insert(url, Instant::now());
        local::Signal::Unknown
    }
}

enum Answer<T> {
    Body(T),
    /// 404/501 and the like: the server has no such endpoint (or has it switched off).
    Missing,
    Failed,
}

const SIGNAL_TIMEOUT: Duration = Duration::from_millis(1500);
const MAX_SIGNAL_BODY: usize = 1 << 20;

fn probe_json<T: serde::de::DeserializeOwned>(
    url: &crate::endpoint::Endpoint,
    path: &str,
    key: Option<&str>,
) -> Answer<T> {
    match crate::client::json_call(url, "GET", path, None, key, SIGNAL_TIMEOUT, MAX_SIGNAL_BODY) {
        Ok((200, Ok(v))) => Answer::Body(v),
        Ok((404 | 405 | 501, _)) => Answer::Missing,
        _ => Answer::Failed,
    }
}

fn probe_text(url: &crate::endpoint::Endpoint, path: &str, key: Option<&str>) -> Answer<String> {
    let req = crate::client::Request {
        method: "GET",
        path,
        headers: &[],
        api_key: key,
        body: None,
    };
    let limits = crate::client::Limits::quick(SIGNAL_TIMEOUT);
    let cancel = crate::cancel::Cancel::default();
    match crate::client::send(url, &req, limits, &cancel) {
        Ok(mut r) if r.status == 200 => match r.read_to_end(MAX_SIGNAL_BODY) {
            Ok(b) => Answer::Body(String::from_utf8_lossy(&b).into_owned()),
            Err(_) => Answer::Failed,
        },
        Ok(r) if matches!(r.status, 404 | 405 | 501) => Answer::Missing,
        _ => Answer::Failed,
    }
}

/// Applies a decision: new jobs are held (or let in) first, then capabilities follow.
fn apply(agent: &Host, new: Shared) {
    let before: Vec<Reason> = agent.gate.lock().blocks.iter().map(|b| b.reason).collect();
    agent.jobs.hold(refusal(&new.blocks));
    let after: Vec<Block> = new.blocks.clone();
    if !agent.gate.publish(new) {
        return;
    }
    let running = agent.jobs.in_flight();
    for b in after.iter().filter(|b| !before.contains(&b.reason)) {
        log::info!(
            "not admitting new jobs: {}; {running} running job(s) finish; models withdrawn",
            b.text()
        );
    }
    for r in before
        .iter()
        .filter(|r| !after.iter().any(|b| b.reason == **r))
    {
        log::info!("{} no longer stops jobs", r.noun());
    }
    if after.is_empty() {
        log::info!("admitting jobs again; models announced");
    }
}

/// What the gate's monitor reads and acts on: the running agent's config, its
/// jobs and discovery, and the gate itself. The agent that holds the gate lends
/// them ([`Lend`]), so the gate does not depend on the agent.
pub struct Host<'a> {
    pub config: &'a Config,
    pub gate: &'a Gate,
    pub jobs: &'a Jobs,
    pub discovery: &'a Discovery,
}

/// An owner of the gate that lends the monitor thread its [`Host`].
pub trait Lend: Send + Sync + 'static {
    fn gate_host(&self) -> Host<'_>;
}

/// Takes the first decision now (so the first capabilities already obey it), then
/// keeps deciding on a thread every status interval.
pub fn start(owner: Arc<impl Lend>) {
    let mut monitor = {
        let agent = owner.gate_host();
        let mut monitor = Monitor::new(agent.config);
        if let Some(w) = &monitor.zone.warning {
            if !agent.config.schedule.is_empty() {
                log::warn!("{w}");
            }
        }
        let first = monitor.tick(&agent, false);
        apply(&agent, first);
        monitor
    };
    let spawned = std::thread::Builder::new()
        .name("gate".into())
        .spawn(move || {
            let agent = owner.gate_host();
            loop {
                std::thread::sleep(agent.config.status.interval);
                let next = monitor.tick(&agent, true);
                apply(&agent, next);
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the admission gate: {e}; pause, schedule and guards are off");
    }
}

/// `validate`'s account of the operator's rules.
pub fn explain_config(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let found = tz::system();
    if config.schedule.is_empty() {
        out.push("schedule: none (serving at all hours)".to_string());
    } else {
        let (_, wall) = Clock::from_env().now();
        if let Some(s) = schedule_state(&config.schedule, &found.zone, wall) {
            out.push(format!("schedule: {}", s.text));
        }
        let (off, abbr) = found.zone.offset_at(unix_of(wall));
        out.push(format!(
            "schedule time zone: {} ({abbr}, UTC{}{:02}:{:02})",
            found.zone.name,
            if off < 0 { '-' } else { '+' },
            off.unsigned_abs() / 3600,
            off.unsigned_abs() % 3600 / 60
        ));
        if let Some(w) = found.warning {
            out.push(format!("warning: {w}"));
        }
    }
    let lf = &config.local_first;
    out.push(if lf.enabled {
        format!(
            "local first: on; foreign load for {}s stops jobs, {}s of quiet brings them back; GPU busy at {}%",
            lf.busy.as_secs_f64(),
            lf.idle.as_secs_f64(),
            lf.gpu_busy_pct
        )
    } else {
        "local first: off".to_string()
    });
    let l = &config.limits;
    out.push(format!(
        "thermal guard: no new jobs above {} °C, again at {} °C or cooler",
        l.max_temp_c, l.resume_temp_c
    ));
    out.push(format!(
        "on battery: {}",
        if l.allow_battery {
            "serving"
        } else {
            "not serving"
        }
    ));
    let path = control::path(config);
    out.push(match control::read(&path) {
        Ok(Some(p)) => format!(
            "pause: paused since {} ({})",
            rfc3339(p.since),
            path.display()
        ),
        Ok(None) => format!(
            "pause: not paused (`usepod-edge pause` writes {})",
            path.display()
        ),
        Err(e) => format!("pause: {e}"),
    });
    out
}

/// `status`'s lines for the `serving` section of a state file.
pub fn print_status(serving: &Serving, now_unix: u64) {
    let zone = tz::system().zone;
    let local = |unix: i64| {
        let now_local = zone.to_local(now_unix as i64).div_euclid(60);
        schedule::when_text(now_local, zone.to_local(unix).div_euclid(60))
    };
    if serving.admitting {
        println!("admitting jobs: yes");
    } else {
        println!("admitting jobs: no (models withdrawn; running jobs finish)");
    }
    for b in &serving.blocks {
        let since = b.since.unix;
        let text = if b.text.is_empty() { "?" } else { &b.text };
        let mut line = format!(
            "  {text} since {} ({} ago)",
            local(since),
            crate::clock::ago(now_unix, since.max(0) as u64)
        );
        if let Some(until) = b.until.as_ref().map(|u| u.unix) {
            line += &format!(
                ", until {} (in {})",
                local(until),
                crate::clock::ago(until.max(0) as u64, now_unix)
            );
        }
        println!("{line}");
    }
    if let Some(s) = &serving.schedule {
        println!("schedule: {s}");
    }
    if let Some(m) = &serving.power_mode {
        println!(
            "power mode: {} (nvpmodel {})",
            m.name.as_deref().unwrap_or("?"),
            m.id
        );
    }
    for n in &serving.notes {
        println!("warning: {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn no_reason_admits_and_every_reason_blocks_in_order() {
        let now = t(1_000);
        assert!(blocks(&Inputs::default(), now).is_empty());
        assert_eq!(refusal(&[]), None);
        let i = Inputs {
            pause: Some(control::Pause {
                since: t(10),
                drain: true,
            }),
            schedule: Some(ScheduleState {
                serving: false,
                since: Some(t(20)),
                until: Some(t(2_000)),
                text: "serving daily 22:00-07:00, now paused until 22:00".into(),
            }),
            local: Some(local::Yield {
                since: t(30),
                detail: "llamacpp at u: busy".into(),
                until: None,
            }),
            heat: Some((t(40), "gpu at 90.0 °C".into())),
            battery: Some((t(50), "BAT0 is discharging".into())),
            allow_battery: false,
        };
        let b = blocks(&i, now);
        let reasons: Vec<Reason> = b.iter().map(|b| b.reason).collect();
        assert_eq!(
            reasons,
            [
                Reason::Paused,
                Reason::Schedule,
                Reason::LocalUse,
                Reason::Heat,
                Reason::Battery
            ]
        );
        assert_eq!(b[1].until, Some(t(2_000)));
        assert_eq!(
            b[0].text(),
            "paused by the operator (drain requested; `usepod-edge resume` to serve again)"
        );
        assert_eq!(
            refusal(&b).unwrap(),
            "not admitting jobs: paused by the operator; outside the serving schedule; \
             the device is in local use; too hot; running on battery power"
        );
        assert_eq!(b[3].text(), "too hot (gpu at 90.0 °C)");
        // The operator may serve on battery; a schedule window that serves is no reason.
        let i = Inputs {
            allow_battery: true,
            schedule: Some(ScheduleState {
                serving: true,
                since: None,
                until: None,
                text: String::new(),
            }),
            battery: Some((t(50), "x".into())),
            ..Inputs::default()
        };
        assert!(blocks(&i, now).is_empty());
    }

    #[test]
    fn the_schedule_in_a_zone_with_dst() {
        let bytes = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tz/Test/DST-slim"),
        )
        .unwrap();
        let zone = tz::Zone::from_tzif("Test/DST", &bytes).unwrap();
        let w = vec![schedule::Window {
            days: schedule::parse_days(&["Mon-Fri"]).unwrap(),
            from: 22 * 60,
            to: 7 * 60,
        }];
        // Monday 2026-06-01 12:00 CEST (UTC+2) = 10:00 UTC.
        let day = crate::clock::days_from_civil(2026, 6, 1);
        let noon = t((day * 86_400 + 10 * 3600) as u64);
        let s = schedule_state(&w, &zone, noon).unwrap();
        assert!(!s.serving);
        assert_eq!(
            s.text,
            "serving Mon-Fri 22:00-07:00, now paused until 22:00"
        );
        assert_eq!(
            s.until,
            Some(t((day * 86_400 + 20 * 3600) as u64)),
            "22:00 CEST"
        );
        // Since Saturday 07:00 CEST.
        assert_eq!(s.since, Some(t(((day - 2) * 86_400 + 5 * 3600) as u64)));
        // Winter: Monday 2026-12-07 23:00 CET = 22:00 UTC, serving until Tue 07:00 CET.
        let day = crate::clock::days_from_civil(2026, 12, 7);
        let s = schedule_state(&w, &zone, t((day * 86_400 + 22 * 3600) as u64)).unwrap();
        assert!(s.serving);
        assert_eq!(s.until, Some(t(((day + 1) * 86_400 + 6 * 3600) as u64)));
        assert!(schedule_state(&[], &zone, noon).is_none());
    }

    #[test]
    fn a_fake_clock_runs_from_its_start() {
        let c = Clock {
            fake: Some((t(500), Instant::now())),
        };
        let (_, wall) = c.now();
        assert!(wall >= t(500) && wall < t(560));
    }
}
