//! The gate's reading side: a thread that reads sensors, the control file, the schedule
//! and the backends every status interval, decides (decision.rs) and applies the
//! decision to the jobs and the capabilities.

use super::decision::{blocks, refusal, schedule_state, Block, Inputs, Reason};
use super::shared::{Gate, Shared};
use super::{control, local, sensors, tz};
use crate::backend::busy::{self, Report};
use crate::config::Config;
use crate::discovery::Discovery;
use crate::hardware::Gpu;
use crate::host::{Clock, Host};
use crate::jobs::Jobs;
use serde_json::Number;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a backend without the signal endpoint is left alone before asking again.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(300);
/// nvidia-smi starts the driver's library on every run (up to a second without
/// persistence mode): every third status interval, and at most every 15 s.
const SMI_EVERY_MAX: Duration = Duration::from_secs(15);
/// The zone is read again this often, so a `timedatectl set-timezone` needs no restart.
const ZONE_EVERY: Duration = Duration::from_secs(60);

/// The gate's reading side: sensors, the control file, the backends.
pub struct Monitor {
    clock: Clock,
    root: PathBuf,
    control: PathBuf,
    zone: tz::Found,
    zone_read: Instant,
    heat: Option<(SystemTime, String)>,
    battery: Option<(SystemTime, String)>,
    /// Local first for the GPU-wide signal: it applies to the whole device.
    local: local::Tracker,
    /// Local first per backend URL: a yielded backend leaves its pools.
    members: HashMap<String, local::Tracker>,
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
    fn new(config: &Config, host: &Host) -> Monitor {
        Monitor {
            clock: host.clock,
            root: host.root.clone(),
            control: control::path(config),
            zone: tz::system(&host.env),
            zone_read: Instant::now(),
            heat: None,
            battery: None,
            local: local::Tracker::default(),
            members: HashMap::new(),
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
    fn tick(&mut self, agent: &Parts, full: bool) -> Shared {
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
            self.zone = tz::system(&agent.host.env);
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
        let lf = &config.local_first;
        if full && lf.enabled {
            let fresh = smi_fresh.then_some(smi.as_slice());
            let (backends, gpu) = self.local_signals(agent, jetson, fresh, mono);
            self.local.step(&gpu, mono, wall, lf.busy, lf.idle);
            for (url, signal) in backends {
                let t = self.members.entry(url).or_default();
                t.step(&signal, mono, wall, lf.busy, lf.idle);
            }
        }
        let (aside, local) = self.aside(agent, lf.enabled);
        let inputs = Inputs {
            pause,
            schedule: schedule.clone(),
            local,
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
            aside,
        }
    }

    /// The backends in a pool that local use takes out of it (by URL, with why), and
    /// whether the whole device steps aside ([`local::whole_device`]).
    fn aside(
        &self,
        agent: &Parts,
        enabled: bool,
    ) -> (BTreeMap<String, String>, Option<local::Yield>) {
        let snapshot = agent.discovery.snapshot();
        let in_pools: BTreeSet<String> = snapshot
            .routes
            .values()
            .flat_map(|r| r.members.iter().map(|m| m.target.url.to_string()))
            .collect();
        let yielded = |url: &String| {
            self.members
                .get(url)
                .and_then(local::Tracker::yielded)
                .filter(|_| enabled)
        };
        let members: Vec<Option<&local::Yield>> = in_pools.iter().map(yielded).collect();
        let whole = local::whole_device(self.local.yielded(), &members);
        let aside = in_pools
            .iter()
            .filter_map(|url| Some((url.clone(), yielded(url)?.detail.clone())))
            .collect();
        (aside, whole)
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

    /// One local-first sample: each backend's signal (by URL, saying who), and the
    /// GPU's. `smi`: a new nvidia-smi answer, when one was taken this tick.
    fn local_signals(
        &mut self,
        agent: &Parts,
        jetson: bool,
        smi: Option<&[Gpu]>,
        mono: Instant,
    ) -> (Vec<(String, local::Signal)>, local::Signal) {
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
            let Some(answer) = busy::ask(target.kind, &target.url, key) else {
                continue;
            };
            let signal = match answer {
                busy::Answer::Report(Report::Slots(slots)) => local::llamacpp(&slots, mine.running),
                busy::Answer::Report(Report::Metrics(t)) => local::vllm(&t, mine.running),
                busy::Answer::Report(Report::Loaded(running)) => match local::ollama_ps(running) {
                    Some(now) => {
                        let before = self.ollama.get(&url);
                        let s = local::ollama(before.map(|(l, o)| (l.as_slice(), o)), &now, &mine);
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
                busy::Answer::Missing(path) => self.mark_unsupported(url, &who, path),
                busy::Answer::Failed => local::Signal::Unknown,
            };
            // Its detail says which backend it is.
            signals.push((target.url.to_string(), local::combine(&[(who, signal)])));
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
        (signals, local::combine(&[("GPU".to_string(), gpu)]))
    }

    fn mark_unsupported(&mut self, url: String, who: &str, path: &str) -> local::Signal {
        log::info!("{who} has no {path}; local use there is judged from the GPU alone");
        self.unsupported.insert(url, Instant::now());
        local::Signal::Unknown
    }
}

/// Applies a decision: new jobs are held (or let in) and backends in local use leave
/// their pools first, then capabilities follow.
fn apply(agent: &Parts, new: Shared) {
    let before: Vec<Reason> = agent.gate.lock().blocks.iter().map(|b| b.reason).collect();
    agent.jobs.hold(refusal(&new.blocks));
    let was_aside = agent.jobs.aside();
    if agent.jobs.set_aside(new.aside.clone()) {
        for (url, why) in new
            .aside
            .iter()
            .filter(|(u, _)| !was_aside.contains_key(*u))
        {
            log::info!("{url} leaves its pools while its owner uses it: {why}");
        }
        for url in was_aside.keys().filter(|u| !new.aside.contains_key(*u)) {
            log::info!("{url} is back in its pools");
        }
    }
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

/// What the gate's monitor reads and acts on: the running agent's config as it is
/// now, its jobs and discovery, the gate itself, and the host it reads sensors and
/// time from. The agent's upkeep thread (src/upkeep.rs) lends them at each step, so
/// the gate does not depend on the agent.
pub struct Parts<'a> {
    pub config: &'a Config,
    pub host: &'a Host,
    pub gate: &'a Gate,
    pub jobs: &'a Jobs,
    pub discovery: &'a Discovery,
}

impl Monitor {
    /// The monitor, and the first decision taken and applied now (without asking
    /// the backends), so the first capabilities already obey it.
    pub fn start(agent: &Parts) -> Monitor {
        let mut monitor = Monitor::new(agent.config, agent.host);
        if let Some(w) = &monitor.zone.warning {
            if !agent.config.schedule.is_empty() {
                log::warn!("{w}");
            }
        }
        monitor.step(agent, false);
        monitor
    }

    /// Reads, decides and applies. `full` also asks the backends and nvidia-smi
    /// (a second or two at most); without, the local-first verdict stands as it was.
    pub fn step(&mut self, agent: &Parts, full: bool) {
        let next = self.tick(agent, full);
        apply(agent, next);
    }
}
