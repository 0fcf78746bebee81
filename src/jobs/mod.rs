//! Jobs: admission (slots), a fixed pool of worker threads, cancel.

mod backend_error;
mod buffers;
mod choice;
pub mod policy;
mod queue;
mod registry;
mod run;
mod work;

use crate::cancel::Cancel;
use crate::config::Config;
use crate::discovery::{Discovery, Member, Target};
use crate::ledger::Ledger;
use crate::metrics::{Metrics, Sample};
use crate::outgoing::Outbox;
use crate::protocol::{ErrorCode, JobRequest, Outbound};
use crossbeam_channel::{bounded, Receiver, Sender};
use queue::WorkQueue;
use registry::{Refusal, Registry, Seat};
use run::JobLimits;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use work::Work;

pub struct Jobs {
    registry: Arc<Registry>,
    queue: Arc<WorkQueue<Work>>,
    pub metrics: Arc<Metrics>,
    pub ledger: Arc<Ledger>,
    /// What a worker thread needs; reloadable parts are read per job.
    shared: Arc<Shared>,
    /// Worker threads started so far. They start when a job finds every one busy, up
    /// to `max_concurrent`, so an idle agent holds none; one that lowering
    /// `max_concurrent` left over waits idle.
    workers: std::sync::Mutex<usize>,
    /// Set by a shutdown: new jobs are refused with out_of_capacity.
    closed: AtomicBool,
    /// Set by the admission gate (src/gate/) while the operator's rules say no:
    /// new jobs are refused with this reason; running ones go on.
    held: std::sync::Mutex<Option<String>>,
    /// Fires (coalesced) when backends leave or rejoin their pools for local use.
    aside_tx: Sender<()>,
    aside_rx: Receiver<()>,
}

/// The seats of a pool's members, keyed by URL as the registry counts them.
fn seats<'a>(members: &[Member], keys: &'a [String]) -> Vec<Seat<'a>> {
    keys.iter()
        .zip(members)
        .map(|(key, m)| Seat {
            key,
            slots: m.slots,
        })
        .collect()
}

fn keys(members: &[Member]) -> Vec<String> {
    members.iter().map(|m| m.target.url.to_string()).collect()
}

/// Moves a job whose member failed before streaming to another member of the model's
/// pool as discovery sees it now; the member to try, or None when none has a free slot.
fn reroute(registry: &Registry, discovery: &Discovery, w: &Work) -> Option<Arc<Target>> {
    let snapshot = discovery.snapshot();
    let route = snapshot.routes.get(&w.job.model_id)?;
    let keys = keys(&route.members);
    let seat = registry.reroute(&w.job.job_id, w.ticket, &seats(&route.members, &keys))?;
    Some(Arc::clone(&route.members[seat].target))
}

/// What every worker thread shares.
struct Shared {
    queue: Arc<WorkQueue<Work>>,
    registry: Arc<Registry>,
    discovery: Arc<Discovery>,
    metrics: Arc<Metrics>,
    ledger: Arc<Ledger>,
    limits: std::sync::Mutex<Arc<JobLimits>>,
}

impl Shared {
    fn limits(&self) -> Arc<JobLimits> {
        Arc::clone(&crate::lock::lock(&self.limits))
    }
}

/// The worker thread's body: one job after another until the queue closes.
fn work(shared: &Shared) {
    let mut bufs = buffers::Buffers::new(run::MAX_EVENT_BYTES);
    let another = |w: &Work| reroute(&shared.registry, &shared.discovery, w);
    while let Some(mut w) = shared.queue.pop() {
        let limits = shared.limits();
        // The binary aborts on panic (Cargo.toml), so there is no
        // unwinding to catch here: a panicking job ends the process.
        let terminal = run::execute(
            &mut w,
            &limits,
            &shared.discovery,
            &shared.metrics,
            &mut bufs,
            &another,
        );
        // The slot is freed before the terminal frame goes out, so
        // the coordinator's next job never finds it still taken.
        let delivered = shared.registry.finish(&w.job.job_id, w.ticket)
            && terminal
                .clone()
                .is_some_and(|frame| run::send_frame(&w, frame));
        shared
            .ledger
            .record_job(&w.job, &w.member, w.received, terminal.as_ref(), delivered);
    }
}

impl Jobs {
    /// Creates the pool of up to `limits.max_concurrent` threads (none started yet).
    pub fn new(config: &Config, discovery: Arc<Discovery>) -> Jobs {
        let max = config.limits.max_concurrent as usize;
        let (aside_tx, aside_rx) = bounded(1);
        let registry = Arc::new(Registry::new(max));
        // Every queued job holds a slot, so the queue never needs more room than the pool.
        let queue = Arc::new(WorkQueue::new(max));
        let metrics = Arc::new(Metrics::default());
        // Its writer is served by the agent's upkeep thread (src/upkeep.rs).
        let ledger = Arc::new(Ledger::new(&config.ledger, config.pricing.clone()));
        let shared = Arc::new(Shared {
            queue: Arc::clone(&queue),
            registry: Arc::clone(&registry),
            discovery,
            metrics: Arc::clone(&metrics),
            ledger: Arc::clone(&ledger),
            limits: std::sync::Mutex::new(Arc::new(JobLimits::from_config(config))),
        });
        Jobs {
            registry,
            queue,
            metrics,
            ledger,
            shared,
            workers: std::sync::Mutex::new(0),
            closed: AtomicBool::new(false),
            held: std::sync::Mutex::new(None),
            aside_tx,
            aside_rx,
        }
    }

    /// Starts one more worker thread, unless there are `max` already.
    fn add_worker(&self, max: usize) {
        let mut n = crate::lock::lock(&self.workers);
        if *n >= max {
            return;
        }
        let i = *n;
        let shared = Arc::clone(&self.shared);
        let spawned = crate::stack::thread(&format!("job-{i}")).spawn(move || work(&shared));
        match spawned {
            Ok(_) => *n += 1,
            // The job waits in the queue for a worker that finishes.
            Err(e) => log::error!("cannot start job thread {i}: {e}"),
        }
    }

    /// A reload's limits: a lower `max_concurrent` admits nothing new until running
    /// jobs fall under it (none is cut); a higher one lets more workers start.
    /// Timeouts and the request policy apply from the next job on.
    pub fn reconfigure(&self, config: &Config) {
        let max = config.limits.max_concurrent;
        self.queue.set_capacity(max as usize);
        self.registry.set_max(max as usize);
        *crate::lock::lock(&self.shared.limits) = Arc::new(JobLimits::from_config(config));
        self.ledger.reconfigure(&config.ledger, &config.pricing);
    }

    pub fn stop_admitting(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Refuses new jobs with `why` (None admits again); nothing running is touched.
    pub fn hold(&self, why: Option<String>) {
        *crate::lock::lock(&self.held) = why;
    }

    /// Our own jobs per (backend, model), for the local-first rules.
    pub fn usage(&self) -> Vec<registry::Usage> {
        self.registry.usage()
    }

    /// Our own jobs running now per backend URL.
    pub fn per_backend(&self) -> HashMap<String, u32> {
        self.registry.per_backend()
    }

    /// Takes the backends named (by URL, with why) out of their pools while the owner
    /// uses them, and puts back the others; running jobs go on. True when that changed.
    pub fn set_aside(&self, aside: BTreeMap<String, String>) -> bool {
        let changed = self.registry.set_aside(aside);
        if changed {
            let _ = self.aside_tx.try_send(());
        }
        changed
    }

    /// The backends out of their pools for local use, by URL, and why.
    pub fn aside(&self) -> BTreeMap<String, String> {
        self.registry.aside()
    }

    /// Fires (coalesced) when a backend leaves or rejoins its pool for local use.
    pub fn aside_changes(&self) -> Receiver<()> {
        self.aside_rx.clone()
    }

    /// The job_error that refuses a job at admission, counted like any failure.
    fn refuse(&self, job_id: &str, code: ErrorCode, message: String) -> Option<Outbound> {
        log::info!(
            "job {job_id} refused ({}): {}",
            code.as_str(),
            crate::untrusted::shown(&message, 300)
        );
        self.metrics.record(Sample {
            at: Instant::now(),
            ttfb_ms: None,
            tokens_per_sec: None,
            error: Some(code),
        });
        Some(Outbound::job_error(job_id, code, message, 0))
    }

    /// Admits a job or answers at once with the frame that refuses it.
    pub fn submit(&self, discovery: &Discovery, job: JobRequest, out: &Outbox) -> Option<Outbound> {
        if self.closed.load(Ordering::SeqCst) {
            let why = "this agent is shutting down".to_owned();
            return self.refuse(&job.job_id, ErrorCode::OutOfCapacity, why);
        }
        let held = crate::lock::lock(&self.held).clone();
        if let Some(why) = held {
            return self.refuse(&job.job_id, ErrorCode::OutOfCapacity, why);
        }
        // Capacity is reported before an unknown model (docs/protocol.md, "Error codes").
        let snapshot = discovery.snapshot();
        let route = snapshot.routes.get(&job.model_id);
        let full = || format!("all {} slots are busy", self.registry.max());
        let Some(route) = route else {
            return if self.registry.is_full() {
                self.refuse(&job.job_id, ErrorCode::OutOfCapacity, full())
            } else {
                let why = format!("no backend here serves model {:?}", job.model_id);
                self.refuse(&job.job_id, ErrorCode::ModelNotLoaded, why)
            };
        };
        let cancel = Cancel::default();
        let keys = keys(&route.members);
        let seats = seats(&route.members, &keys);
        let admitted = self
            .registry
            .admit(&job.job_id, cancel.clone(), &job.model_id, &seats);
        let (ticket, member) = match admitted {
            Ok(a) => (a.ticket, &route.members[a.seat]),
            Err(Refusal::Full) => {
                return self.refuse(&job.job_id, ErrorCode::OutOfCapacity, full())
            }
            Err(Refusal::BackendFull) => {
                let why = match &route.members[..] {
                    [one] => format!(
                        "{} at {} is running all {} of its slots",
                        route.kind.as_str(),
                        one.target.url,
                        one.slots
                            .unwrap_or(u32::try_from(self.registry.max()).unwrap_or(u32::MAX))
                    ),
                    all => format!(
                        "the {} backends serving this model are running all their slots",
                        all.len()
                    ),
                };
                return self.refuse(&job.job_id, ErrorCode::OutOfCapacity, why);
            }
            Err(Refusal::Aside) => {
                let why = "the backends serving this model are in local use".to_owned();
                return self.refuse(&job.job_id, ErrorCode::OutOfCapacity, why);
            }
            Err(Refusal::DuplicateId) => {
                // Answering would look like the running job failed; it goes on.
                log::warn!("ignoring a second job frame for running job {}", job.job_id);
                return None;
            }
        };
        log::debug!(
            "job {} for {} → {} {}",
            job.job_id,
            crate::untrusted::shown(&job.model_id, 128),
            member.target.kind.as_str(),
            member.target.url
        );
        let work = Work {
            member: Arc::clone(&member.target),
            context_window: route.context_window,
            job,
            cancel,
            ticket,
            out: out.clone(),
            received: Instant::now(),
        };
        match self.queue.push(work) {
            Ok(true) => {}
            // Every worker is busy: one more, up to the pool's size.
            Ok(false) => self.add_worker(self.registry.max()),
            Err(w) => {
                // Only when the pool is shutting down, or a slot was freed by a
                // cancel whose job still occupies its worker.
                self.registry.finish(&w.job.job_id, w.ticket);
                return self.refuse(&w.job.job_id, ErrorCode::OutOfCapacity, full());
            }
        }
        None
    }

    /// job_cancel: the backend connection closes and the slot frees at once.
    pub fn cancel(&self, job_id: &str) {
        if self.registry.cancel(job_id) {
            // Not yet at a worker: dropped here, so its request memory goes now.
            self.queue.remove(job_id);
            log::info!("job {job_id} cancelled by the coordinator");
        } else {
            // Not necessarily a UUID: job_cancel ids are not validated.
            let job_id = crate::untrusted::job_id(job_id);
            log::debug!("job_cancel for unknown or finished job {job_id}");
        }
    }

    pub fn cancel_all(&self, why: &str) {
        let n = self.registry.cancel_all();
        self.queue.clear();
        if n > 0 {
            log::warn!("stopped {n} running job(s): {why}");
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.registry.in_flight() as u32
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.queue.close();
    }
}
