//! Background discovery: probes the backends in parallel, keeps the one route
//! table (model → its pool: the backends of the advertised kind that run its
//! jobs), and signals when the routes change.

use crate::backend::probe::{self, ModelInfo, Probe};
use crate::backend::BackendKind;
use crate::config::{BackendConfig, Config, Pricing};
use crate::endpoint::Endpoint;
use crate::lock::{lock, unpoisoned};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often backends are re-probed when nothing asks sooner.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Sooner while a backend is down or still loading its model, so it is
/// offered within seconds of coming up.
pub const REFRESH_WHILE_DOWN: Duration = Duration::from_secs(3);

/// A backend the agent may call; jobs reach nothing else.
pub struct Target {
    pub kind: BackendKind,
    pub url: Endpoint,
    pub allow: Option<Vec<String>>,
    pub api_key: Option<String>,
    /// Cleared when the backend answers 404 to `/v1/messages`.
    pub serves_messages: AtomicBool,
}

impl std::fmt::Debug for Target {
    // By hand so that the API key never reaches a log through a Route or Snapshot.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("allow", &self.allow)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("serves_messages", &self.serves_messages)
            .finish()
    }
}

impl Target {
    pub fn from_config(b: &BackendConfig) -> Target {
        Target {
            kind: b.kind,
            url: b.url.clone(),
            allow: b.models.clone(),
            api_key: b.api_key.as_deref().map(str::to_owned),
            serves_messages: AtomicBool::new(b.native_anthropic),
        }
    }

    fn allows(&self, model: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|a| a.iter().any(|m| m == model))
    }
}

/// One backend in a model's pool.
#[derive(Debug, Clone)]
pub struct Member {
    pub target: Arc<Target>,
    /// llama-server's total_slots: how many jobs it runs at once. None: no limit of
    /// its own (the agent's `limits.max_concurrent` bounds it).
    pub slots: Option<u32>,
}

/// Where a model's jobs go: its pool, every healthy backend of the best kind that
/// serves it. The kind is what capabilities advertise, so the backends that are
/// offered are the ones that run the jobs.
#[derive(Debug, Clone)]
pub struct Route {
    pub kind: BackendKind,
    /// In config order; never empty.
    pub members: Vec<Member>,
    /// The smallest window a member reports, so that a job fits whichever one runs it.
    pub context_window: Option<u32>,
}

impl Route {
    /// The `max_concurrent` capabilities offer for this pool: the slots of the members
    /// `usable` lets take jobs, summed (a member without a limit of its own counts as
    /// `max`), at most `max`. None when no member is usable: the model is withdrawn.
    pub fn capacity(&self, max: u32, usable: impl Fn(&Member) -> bool) -> Option<u32> {
        let mut total: Option<u32> = None;
        for m in self.members.iter().filter(|m| usable(m)) {
            let slots = m.slots.map_or(max, |s| s.min(max));
            total = Some(total.unwrap_or(0).saturating_add(slots));
        }
        total.map(|t| t.min(max))
    }
}

/// The smaller of two context windows, where either may be unknown.
fn smaller(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The latest discovery result.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Targets in config order with their last probe (None: not probed yet).
    pub backends: Vec<(Arc<Target>, Option<Probe>)>,
    pub routes: BTreeMap<String, Route>,
}

/// Builds the route table: per model, the pool of healthy backends with the best kind
/// priority (vllm < llamacpp < lmstudio < ollama), in config order; models with a zero
/// price or outside a backend's allow-list are left out.
pub fn route_table(
    backends: &[(Arc<Target>, Option<Probe>)],
    pricing: &Pricing,
) -> BTreeMap<String, Route> {
    let mut routes: BTreeMap<String, Route> = BTreeMap::new();
    for (target, probe) in backends {
        let Some(p) = probe.as_ref().filter(|p| p.healthy) else {
            continue;
        };
        for ModelInfo { id, context_window } in &p.models {
            let (input, output) = pricing.resolve(id);
            if input == 0 || output == 0 || !target.allows(id) {
                continue;
            }
            let member = Member {
                target: Arc::clone(target),
                slots: p.slots,
            };
            match routes.get_mut(id) {
                Some(r) if r.kind == target.kind => {
                    r.members.push(member);
                    r.context_window = smaller(r.context_window, *context_window);
                }
                Some(r) if r.kind < target.kind => {}
                _ => {
                    let pool = Route {
                        kind: target.kind,
                        members: vec![member],
                        context_window: *context_window,
                    };
                    routes.insert(id.clone(), pool);
                }
            }
        }
    }
    routes
}

struct State {
    snapshot: Arc<Snapshot>,
    /// Completed probe rounds.
    rounds: u64,
}

pub struct Discovery {
    state: Mutex<State>,
    round_done: Condvar,
    changed_tx: Sender<()>,
    changed_rx: Receiver<()>,
    refresh_tx: Sender<()>,
    refresh_rx: Receiver<()>,
    /// What a reload may change: the backends and the prices.
    settings: Mutex<Settings>,
}

struct Settings {
    pricing: Pricing,
    /// Configured targets; empty means "find them on the default ports".
    configured: Vec<Arc<Target>>,
}

fn targets_of(config: &Config) -> Vec<Arc<Target>> {
    config
        .backends
        .iter()
        .map(|b| Arc::new(Target::from_config(b)))
        .collect()
}

impl Discovery {
    pub fn new(config: &Config) -> Discovery {
        let (changed_tx, changed_rx) = bounded(1);
        let (refresh_tx, refresh_rx) = bounded(1);
        let configured = targets_of(config);
        Discovery {
            state: Mutex::new(State {
                snapshot: Arc::new(Snapshot {
                    backends: configured.iter().map(|t| (Arc::clone(t), None)).collect(),
                    routes: BTreeMap::new(),
                }),
                rounds: 0,
            }),
            round_done: Condvar::new(),
            changed_tx,
            changed_rx,
            refresh_tx,
            refresh_rx,
            settings: Mutex::new(Settings {
                pricing: config.pricing.clone(),
                configured,
            }),
        }
    }

    /// A reload's backends and prices: the routes are rebuilt at once from what is
    /// known (a gone backend takes no new job; its running jobs hold their target
    /// and finish), and a round probes the new set.
    pub fn reconfigure(&self, config: &Config) {
        let configured = targets_of(config);
        {
            let mut s = lock(&self.settings);
            s.pricing = config.pricing.clone();
            s.configured = configured.clone();
        }
        self.publish(self.last_known(&configured));
        self.refresh();
    }

    /// Each target with what the last round found of it (None for one not probed yet).
    fn last_known(&self, targets: &[Arc<Target>]) -> Vec<(Arc<Target>, Option<Probe>)> {
        let known = self.snapshot();
        targets
            .iter()
            .map(|t| {
                let probe = known.backends.iter().find_map(|(o, p)| {
                    (o.kind == t.kind && o.url == t.url)
                        .then(|| p.clone())
                        .flatten()
                });
                (Arc::clone(t), probe)
            })
            .collect()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&lock(&self.state).snapshot)
    }

    /// Fires (coalesced) whenever the routable model set changes.
    pub fn changes(&self) -> Receiver<()> {
        self.changed_rx.clone()
    }

    /// Asks for a probe round now (e.g. after a backend turned out unreachable).
    pub fn refresh(&self) {
        let _ = self.refresh_tx.try_send(());
    }

    /// Waits until the first probe round has finished or `timeout` passes.
    pub fn wait_first_round(&self, timeout: Duration) {
        let st = lock(&self.state);
        drop(
            self.round_done
                .wait_timeout_while(st, timeout, |s| s.rounds == 0),
        );
    }

    fn publish(&self, backends: Vec<(Arc<Target>, Option<Probe>)>) {
        let routes = route_table(&backends, &lock(&self.settings).pricing);
        let mut st = lock(&self.state);
        let changed = !same_offer(&st.snapshot.routes, &routes);
        st.snapshot = Arc::new(Snapshot { backends, routes });
        drop(st);
        if changed {
            let _ = self.changed_tx.try_send(());
        }
    }

    /// Probes every target in parallel; each result is published as soon as it
    /// is in, so one hung backend does not hide the others. Until its answer is in, a
    /// target keeps what the last round found: a round's first answers must not
    /// withdraw the models of the backends that answer later.
    pub fn round(&self) {
        let configured = lock(&self.settings).configured.clone();
        let targets = if configured.is_empty() {
            find_default_backends()
        } else {
            configured
        };
        let started = Instant::now();
        let results = Mutex::new(self.last_known(&targets));
        std::thread::scope(|s| {
            for (i, t) in targets.iter().enumerate() {
                let results = &results;
                // Like std's s.spawn, a thread that cannot start ends the process.
                let probe = crate::stack::thread("probe").spawn_scoped(s, move || {
                    let p = probe::probe(t.kind, &t.url, t.api_key.as_deref());
                    let snapshot = {
                        let mut r = lock(results);
                        log_probe(t, &p, r[i].1.as_ref() != Some(&p));
                        r[i].1 = Some(p);
                        r.clone()
                    };
                    self.publish(snapshot);
                });
                probe.expect("cannot start a probe thread");
            }
        });
        let final_set = unpoisoned(results.into_inner());
        self.publish(final_set);
        let mut st = lock(&self.state);
        st.rounds += 1;
        drop(st);
        self.round_done.notify_all();
        log::debug!("discovery round took {:?}", started.elapsed());
    }

    /// The discovery thread's body: a round now, then on request or periodically.
    pub fn run_forever(&self) {
        loop {
            self.round();
            let snap = self.snapshot();
            let all_up = !snap.backends.is_empty()
                && snap
                    .backends
                    .iter()
                    .all(|(_, p)| p.as_ref().is_some_and(|p| p.healthy));
            let wait = if all_up {
                REFRESH_EVERY
            } else {
                REFRESH_WHILE_DOWN
            };
            let _ = self.refresh_rx.recv_timeout(wait);
        }
    }
}

/// Logs a probe result: at INFO when it changed since the last round, so the
/// periodic refresh stays quiet.
fn log_probe(t: &Target, p: &Probe, changed: bool) {
    let level = if changed {
        log::Level::Info
    } else {
        log::Level::Debug
    };
    if p.healthy {
        let slots = p.slots.map(|s| format!(", {s} slots")).unwrap_or_default();
        let ids: Vec<&str> = p.models.iter().map(|m| m.id.as_str()).collect();
        log::log!(
            level,
            "{} at {}: models {ids:?}{slots}",
            t.kind.as_str(),
            t.url
        );
    } else {
        let why = crate::untrusted::shown(p.problem.as_deref().unwrap_or("?"), 300);
        log::log!(level, "{} at {} unavailable: {why}", t.kind.as_str(), t.url);
    }
}

/// Whether two route tables route alike: each model to the same kind, window and
/// members with the same slots. The ticker re-sends capabilities only when their text
/// changes, so a signal here that changes nothing advertised costs nothing.
fn same_offer(a: &BTreeMap<String, Route>, b: &BTreeMap<String, Route>) -> bool {
    let same_member = |x: &Member, y: &Member| {
        x.target.kind == y.target.kind && x.target.url == y.target.url && x.slots == y.slots
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, ra), (kb, rb))| {
            ka == kb
                && ra.kind == rb.kind
                && ra.context_window == rb.context_window
                && ra.members.len() == rb.members.len()
                && ra
                    .members
                    .iter()
                    .zip(&rb.members)
                    .all(|(x, y)| same_member(x, y))
        })
}

/// With no backends configured: whatever answers on the default ports of
/// 127.0.0.1, identified by what it serves (vLLM and llama-server both like 8000/8080).
fn find_default_backends() -> Vec<Arc<Target>> {
    let ports: Vec<u16> = BackendKind::ALL.iter().map(|k| k.default_port()).collect();
    let found: Mutex<Vec<(usize, Arc<Target>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (i, port) in ports.iter().enumerate() {
            let found = &found;
            let probe = crate::stack::thread("probe").spawn_scoped(s, move || {
                let Ok(url) = Endpoint::parse(&format!("http://127.0.0.1:{port}")) else {
                    return;
                };
                if let Some(kind) = probe::identify(&url) {
                    let t = Arc::new(Target {
                        kind,
                        url,
                        allow: None,
                        api_key: None,
                        serves_messages: AtomicBool::new(true),
                    });
                    lock(found).push((i, t));
                }
            });
            probe.expect("cannot start a probe thread");
        }
    });
    let mut found = unpoisoned(found.into_inner());
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, t)| t).collect()
}

/// Starts the discovery thread.
pub fn spawn(d: Arc<Discovery>) {
    let spawned = crate::stack::thread("discovery").spawn(move || d.run_forever());
    if let Err(e) = spawned {
        log::error!("cannot start the discovery thread: {e}");
    }
}

/// Marks messages as unsupported for this target (after a 404).
pub fn mark_no_messages(t: &Target) {
    if t.serves_messages.swap(false, Ordering::Relaxed) {
        log::info!(
            "{} at {} has no /v1/messages; translating Anthropic jobs",
            t.kind.as_str(),
            t.url
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: BackendKind, port: u16, allow: Option<&[&str]>) -> Arc<Target> {
        Arc::new(Target {
            kind,
            url: Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            api_key: None,
            serves_messages: AtomicBool::new(true),
        })
    }

    fn up(models: &[&str]) -> Option<Probe> {
        Some(Probe {
            healthy: true,
            problem: None,
            models: models
                .iter()
                .map(|m| ModelInfo {
                    id: m.to_string(),
                    context_window: Some(1),
                })
                .collect(),
            slots: None,
        })
    }

    fn pricing(free: &[&str]) -> Pricing {
        Pricing {
            default_input_per_1m: 1,
            default_output_per_1m: 1,
            models: free
                .iter()
                .map(|m| {
                    (
                        m.to_string(),
                        crate::config::ModelPrice {
                            input_per_1m: Some(0),
                            output_per_1m: None,
                        },
                    )
                })
                .collect(),
        }
    }

    fn member(kind: BackendKind, port: u16, slots: Option<u32>) -> Member {
        Member {
            target: target(kind, port, None),
            slots,
        }
    }

    fn with_slots(models: &[&str], slots: u32, ctx: u32) -> Option<Probe> {
        let mut p = up(models).unwrap();
        p.slots = Some(slots);
        for m in &mut p.models {
            m.context_window = Some(ctx);
        }
        Some(p)
    }

    #[test]
    fn an_offer_changes_with_kind_window_or_members_and_their_slots() {
        let route = |ports: &[(u16, Option<u32>)], ctx| Route {
            kind: BackendKind::LlamaCpp,
            members: ports
                .iter()
                .map(|&(p, s)| member(BackendKind::LlamaCpp, p, s))
                .collect(),
            context_window: ctx,
        };
        let table = |r: Route| BTreeMap::from([("m".to_string(), r)]);
        let base = table(route(&[(8080, Some(4))], Some(4096)));
        assert!(same_offer(
            &base,
            &table(route(&[(8080, Some(4))], Some(4096)))
        ));
        assert!(
            !same_offer(&base, &table(route(&[(8080, Some(2))], Some(4096)))),
            "slots"
        );
        assert!(
            !same_offer(&base, &table(route(&[(8080, Some(4))], Some(2048)))),
            "window"
        );
        assert!(
            !same_offer(&base, &table(route(&[(8081, Some(4))], Some(4096)))),
            "url"
        );
        assert!(
            !same_offer(
                &base,
                &table(route(&[(8080, Some(4)), (8081, Some(4))], Some(4096)))
            ),
            "a member more"
        );
        let mut vllm = route(&[(8080, Some(4))], Some(4096));
        vllm.kind = BackendKind::Vllm;
        assert!(!same_offer(&base, &table(vllm)), "kind");
        assert!(!same_offer(&base, &BTreeMap::new()), "model gone");
    }

    #[test]
    fn debug_output_never_shows_the_api_key() {
        let t = Target {
            api_key: Some("sk-hunter2".into()),
            ..Arc::into_inner(target(BackendKind::Vllm, 1, None)).unwrap()
        };
        let route = Route {
            kind: BackendKind::Vllm,
            members: vec![Member {
                target: Arc::new(t),
                slots: None,
            }],
            context_window: None,
        };
        let shown = format!("{route:?} {route:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    fn ports(r: &Route) -> Vec<u16> {
        r.members.iter().map(|m| m.target.url.port).collect()
    }

    #[test]
    fn best_kind_wins_and_its_backends_form_the_pool_in_config_order() {
        let backends = vec![
            (target(BackendKind::Ollama, 1, None), up(&["shared", "o"])),
            (
                target(BackendKind::LlamaCpp, 2, None),
                up(&["shared", "tie"]),
            ),
            (target(BackendKind::LlamaCpp, 3, None), up(&["tie"])),
            (target(BackendKind::Vllm, 4, None), None),
            (target(BackendKind::LmStudio, 5, None), up(&["tie"])),
        ];
        let r = route_table(&backends, &pricing(&[]));
        assert_eq!(ports(&r["shared"]), [2]);
        assert_eq!(r["shared"].kind, BackendKind::LlamaCpp);
        assert_eq!(
            ports(&r["tie"]),
            [2, 3],
            "both llama-servers, not LM Studio"
        );
        assert_eq!(ports(&r["o"]), [1]);
        assert_eq!(r.len(), 3);
        // A better kind listed later replaces the pool built so far.
        let later = vec![
            (target(BackendKind::Ollama, 1, None), up(&["m"])),
            (target(BackendKind::Ollama, 2, None), up(&["m"])),
            (target(BackendKind::Vllm, 3, None), up(&["m"])),
        ];
        let r = route_table(&later, &pricing(&[]));
        assert_eq!((r["m"].kind, ports(&r["m"])), (BackendKind::Vllm, vec![3]));
    }

    #[test]
    fn a_pool_keeps_each_members_slots_and_the_smallest_window() {
        let backends = vec![
            (
                target(BackendKind::LlamaCpp, 1, None),
                with_slots(&["m"], 2, 8192),
            ),
            (
                target(BackendKind::LlamaCpp, 2, None),
                with_slots(&["m"], 3, 4096),
            ),
        ];
        let r = &route_table(&backends, &pricing(&[]))["m"];
        let slots: Vec<_> = r.members.iter().map(|m| m.slots).collect();
        assert_eq!(slots, [Some(2), Some(3)]);
        assert_eq!(r.context_window, Some(4096));
        assert_eq!(smaller(None, Some(5)), Some(5));
        assert_eq!(smaller(Some(5), None), Some(5));
        assert_eq!(smaller(None, None), None);
    }

    #[test]
    fn a_pools_capacity_sums_its_usable_members_within_the_agents_limit() {
        let pool = Route {
            kind: BackendKind::LlamaCpp,
            members: vec![
                member(BackendKind::LlamaCpp, 1, Some(2)),
                member(BackendKind::LlamaCpp, 2, Some(2)),
            ],
            context_window: None,
        };
        assert_eq!(pool.capacity(8, |_| true), Some(4));
        assert_eq!(pool.capacity(3, |_| true), Some(3), "bounded by the agent");
        assert_eq!(pool.capacity(8, |m| m.target.url.port == 2), Some(2));
        assert_eq!(pool.capacity(8, |_| false), None, "withdrawn");
        // A member without a limit of its own counts as the agent's.
        let open = Route {
            members: vec![
                member(BackendKind::Vllm, 1, None),
                member(BackendKind::Vllm, 2, None),
            ],
            kind: BackendKind::Vllm,
            context_window: None,
        };
        assert_eq!(open.capacity(8, |_| true), Some(8));
        assert_eq!(
            Route {
                members: vec![member(BackendKind::LlamaCpp, 1, Some(20))],
                ..pool.clone()
            }
            .capacity(8, |_| true),
            Some(8)
        );
    }

    #[test]
    fn unhealthy_disallowed_and_free_models_are_not_routed() {
        let mut down = up(&["x"]).unwrap();
        down.healthy = false;
        let backends = vec![
            (target(BackendKind::Vllm, 1, None), Some(down)),
            (
                target(BackendKind::LlamaCpp, 2, Some(&["a"])),
                up(&["a", "b"]),
            ),
            (target(BackendKind::Ollama, 3, None), up(&["free"])),
        ];
        let r = route_table(&backends, &pricing(&["free"]));
        assert_eq!(r.keys().collect::<Vec<_>>(), vec!["a"]);
    }
}
