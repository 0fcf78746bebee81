//! Everything the threads of a running agent share, and the agent's side of
//! the session's interfaces (session::Jobs, Offer, Status): the session sees
//! those, never this struct.

use crate::config::{Config, Reloaded};
use crate::discovery::Discovery;
use crate::hardware_snapshot::HardwareSnapshot;
use crate::host::Host;
use crate::identity::Identity;
use crate::jobs::Jobs;
use crate::lock::lock;
use crate::outgoing::{Outbox, Outgoing};
use crate::protocol::{HeartbeatStats, JobRequest, ModelOffer, OfferLimits, Outbound};
use crate::session::{self, Change, Parts};
use crossbeam_channel::{Receiver, Sender};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How long capabilities wait for the first discovery round before going out
/// with what is known; later rounds re-send them.
pub const FIRST_ROUND_WAIT: Duration = Duration::from_millis(500);

/// Why the upkeep thread (src/upkeep.rs) should look now instead of at its next
/// interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Read the config file again (SIGHUP, `usepod-edge reload`).
    Reload,
    /// The operator changed something the gate reads (SIGUSR2 from `pause`/`resume`).
    Look,
}

pub struct Agent {
    /// The config the agent started with. What a reload cannot change (the
    /// coordinator, the identity) is read here; everything else from [`Agent::live`].
    pub config: Config,
    /// Where the config came from, for a reload to read again.
    pub config_path: PathBuf,
    live: Mutex<Arc<Config>>,
    wake: (Sender<Wake>, Receiver<Wake>),
    /// Fires when a reload changed what capabilities offer.
    offer_changed: (Sender<()>, Receiver<()>),
    reloaded: Mutex<Option<Reloaded>>,
    /// The process as the agent sees it (src/host.rs).
    pub host: Host,
    identity: Mutex<Identity>,
    pub tls: Arc<rustls::ClientConfig>,
    pub discovery: Arc<Discovery>,
    pub jobs: Jobs,
    /// The operator's reasons not to take jobs (src/gate/).
    pub gate: crate::gate::Gate,
    hardware: HardwareSnapshot,
    /// Set once a shutdown began: no reconnects, no new jobs.
    stopping: AtomicBool,
    /// The live session's outbound queue, for the shutdown to close it.
    session: Mutex<Option<Sender<Outgoing>>>,
    link: Mutex<Link>,
}

/// The coordinator connection as the state file reports it.
#[derive(Debug, Clone)]
pub struct Link {
    /// `connecting`, `connected`, `reconnecting` or `stopping`.
    pub state: &'static str,
    pub since: SystemTime,
    pub detail: String,
    /// Set while connection attempts fail for a reason only the operator can
    /// remove: the failure and what to check (src/supervisor.rs).
    pub config_problem: Option<String>,
}

impl Agent {
    pub fn new(
        config: Config,
        config_path: PathBuf,
        identity: Identity,
        tls: Arc<rustls::ClientConfig>,
        host: Host,
    ) -> Agent {
        let discovery = Arc::new(Discovery::new(&config));
        let jobs = Jobs::new(&config, Arc::clone(&discovery));
        Agent {
            live: Mutex::new(Arc::new(config.clone())),
            config,
            config_path,
            wake: crossbeam_channel::bounded(8),
            offer_changed: crossbeam_channel::bounded(1),
            reloaded: Mutex::new(None),
            identity: Mutex::new(identity),
            tls,
            discovery,
            jobs,
            gate: crate::gate::Gate::default(),
            hardware: HardwareSnapshot::start(host.root.clone()),
            host,
            stopping: AtomicBool::new(false),
            session: Mutex::new(None),
            link: Mutex::new(Link {
                state: "connecting",
                since: SystemTime::now(),
                detail: String::new(),
                config_problem: None,
            }),
        }
    }

    /// The config as reloaded last: what the agent runs with now.
    pub fn live(&self) -> Arc<Config> {
        Arc::clone(&lock(&self.live))
    }

    /// Installs a reloaded config for every later reader.
    pub fn set_live(&self, config: Config) {
        *lock(&self.live) = Arc::new(config);
    }

    /// Asks the upkeep thread to look now; a full queue means it will anyway.
    pub fn wake(&self, why: Wake) {
        let _ = self.wake.0.try_send(why);
    }

    pub fn wakes(&self) -> Receiver<Wake> {
        self.wake.1.clone()
    }

    /// Capabilities go out again (a reload changed what they say).
    pub fn offer_changed(&self) {
        let _ = self.offer_changed.0.try_send(());
    }

    pub fn set_reloaded(&self, r: Reloaded) {
        *lock(&self.reloaded) = Some(r);
    }

    /// The last reload, for the state file.
    pub fn reloaded(&self) -> Option<Reloaded> {
        lock(&self.reloaded).clone()
    }

    pub fn lock_identity(&self) -> MutexGuard<'_, Identity> {
        lock(&self.identity)
    }

    /// Records the connection state; `since` moves only when the state changes.
    pub fn set_link(&self, state: &'static str, detail: impl Into<String>) {
        let mut l = lock(&self.link);
        if l.state != state {
            l.state = state;
            l.since = SystemTime::now();
        }
        l.detail = detail.into();
    }

    /// Records (Some) or clears (None) a problem only the operator can fix.
    pub fn set_config_problem(&self, problem: Option<String>) {
        lock(&self.link).config_problem = problem;
    }

    pub fn link(&self) -> Link {
        lock(&self.link).clone()
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Starts a shutdown: the current session goes on until `close_session`.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.set_link("stopping", "draining jobs");
        self.jobs.stop_admitting();
    }

    fn session_slot(&self) -> MutexGuard<'_, Option<Sender<Outgoing>>> {
        lock(&self.session)
    }

    pub fn has_session(&self) -> bool {
        self.session_slot().is_some()
    }

    /// Asks the live session, if any, to close with `code`; true if one was asked.
    pub fn close_session(&self, code: u16, reason: &str) -> bool {
        match self.session_slot().as_ref() {
            Some(tx) => tx.send(Outgoing::Close(code, reason.to_owned())).is_ok(),
            None => false,
        }
    }

    /// What capabilities offer: the models and the limits (metadata aside).
    pub fn offer(&self) -> (Vec<ModelOffer>, OfferLimits) {
        let config = self.live();
        let snapshot = self.discovery.snapshot();
        let max = config.limits.max_concurrent;
        // While the gate says no, capacity is withdrawn: the same message, no models.
        let none = std::collections::BTreeMap::new();
        let offered = if self.gate.admitting() {
            &snapshot.routes
        } else {
            &none
        };
        // A backend the owner is using is out of its pool; a model whose pool has no
        // member left is withdrawn.
        let aside = self.jobs.aside();
        let models = offered
            .iter()
            .filter_map(|(id, route)| {
                let usable = |m: &crate::discovery::Member| {
                    aside.is_empty() || !aside.contains_key(&m.target.url.to_string())
                };
                // llama-server runs at most total_slots requests at once, and
                // admission holds each member's jobs to that.
                let max_concurrent = route.capacity(max, usable)?;
                let (input_per_1m, output_per_1m) = config.pricing.resolve(id);
                Some(ModelOffer {
                    model_id: id.clone(),
                    input_per_1m,
                    output_per_1m,
                    max_concurrent,
                    backend: route.kind.as_str(),
                    context_window: route.context_window,
                })
            })
            .collect();
        let limits = OfferLimits {
            max_concurrent_total: max,
            max_tokens_per_minute: config.limits.max_tokens_per_minute,
        };
        (models, limits)
    }

    /// `hardware_wait`: how long the hardware description may still be waited for.
    fn capabilities_with(&self, hardware_wait: Duration) -> String {
        let (models, limits) = self.offer();
        Outbound::Capabilities {
            models,
            limits,
            metadata: {
                let mut m = serde_json::json!({
                    "agent_version": self.host.version,
                    "agent": "usepod-edge",
                });
                if let Some(h) = self.hardware.latest(hardware_wait) {
                    m["hardware"] = h;
                }
                m
            },
        }
        .to_text()
    }

    pub fn heartbeat_stats(&self) -> HeartbeatStats {
        self.jobs.metrics.heartbeat(self.jobs.in_flight())
    }

    /// What one session runs with; `max_inbound` follows the request size limit.
    pub fn session_parts(&self) -> Parts<'_> {
        Parts {
            coordinator: &self.config.coordinator,
            host: &self.host,
            tls: &self.tls,
            max_inbound: session::max_inbound_message(self.config.limits.max_request_bytes),
            identity: &self.identity,
            jobs: self,
            offer: self,
            status: self,
        }
    }
}

impl session::Jobs for Agent {
    fn submit(&self, job: JobRequest, out: &Outbox) -> Option<Outbound> {
        self.jobs.submit(&self.discovery, job, out)
    }

    fn cancel(&self, job_id: &str) {
        self.jobs.cancel(job_id)
    }

    fn cancel_all(&self, why: &str) {
        self.jobs.cancel_all(why)
    }
}

impl session::Offer for Agent {
    fn capabilities(&self) -> String {
        self.capabilities_with(Duration::ZERO)
    }

    /// Gives the first discovery round a short chance to finish.
    fn first_capabilities(&self) -> String {
        let started = Instant::now();
        self.discovery.wait_first_round(FIRST_ROUND_WAIT);
        self.capabilities_with(FIRST_ROUND_WAIT.saturating_sub(started.elapsed()))
    }

    fn heartbeat(&self) -> HeartbeatStats {
        self.heartbeat_stats()
    }

    fn changes(&self) -> Vec<Change<'_>> {
        vec![
            Change {
                signal: self.discovery.changes(),
                why: Box::new(|| "routable models changed".to_owned()),
            },
            Change {
                signal: self.offer_changed.1.clone(),
                why: Box::new(|| "the config was reloaded".to_owned()),
            },
            Change {
                signal: self.jobs.aside_changes(),
                why: Box::new(|| "backends left or rejoined their pools (local use)".to_owned()),
            },
            Change {
                signal: self.gate.changes(),
                why: Box::new(|| {
                    if self.gate.admitting() {
                        "admitting jobs again".to_owned()
                    } else {
                        "not admitting jobs (models withdrawn)".to_owned()
                    }
                }),
            },
        ]
    }
}

impl session::Status for Agent {
    fn authenticated(&self, detail: String) {
        self.set_config_problem(None);
        self.set_link("connected", detail);
        // A new binary on probation has now proved itself (src/probation.rs).
        let dir = crate::probation::dir(&self.config.key_path);
        match crate::probation::confirm(&dir, &self.host.version) {
            Ok(true) => log::info!("upgrade confirmed: this binary held an authenticated session"),
            Ok(false) => {}
            Err(e) => log::warn!(
                "cannot end this binary's probation in {}: {e}",
                dir.display()
            ),
        }
    }

    fn attach(&self, queue: Option<Sender<Outgoing>>) {
        *self.session_slot() = queue;
    }

    fn stopping(&self) -> bool {
        Agent::stopping(self)
    }
}
