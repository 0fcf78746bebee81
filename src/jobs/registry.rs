//! Slot accounting: which jobs run, on which pool member, and the one place their
//! slots are freed.
//!
//! A job's slot lives in its registry entry. Whoever removes the entry (the job
//! finishing, a cancel, the session ending) frees the slot; removal happens
//! under one mutex, so a cancel racing a completion frees it exactly once. The
//! member a job runs on is picked under the same mutex (choice.rs), so two
//! admissions never take one member's last slot.

use super::choice;
use crate::cancel::Cancel;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

struct Entry {
    /// Distinguishes a re-used job_id from the job that used it before.
    ticket: u64,
    cancel: Cancel,
    /// (backend, model) the job runs on.
    on: (String, String),
}

/// Our own jobs on one (backend, model): running now, admitted since start.
pub type Usage = ((String, String), (u32, u64));

/// One pool member as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seat<'a> {
    /// The backend's URL, as the job's entry and the state file name it.
    pub key: &'a str,
    /// Its own limit (llama-server's total_slots); None: the agent's.
    pub slots: Option<u32>,
}

struct Inner {
    running: HashMap<String, Entry>,
    /// Our jobs running per backend: the slots of its own they take.
    busy: HashMap<String, u32>,
    /// Per (backend, model): (running, admitted in total). Local-first judges a
    /// backend's load against our own share of it.
    usage: HashMap<(String, String), (u32, u64)>,
    /// Per model, the member picked last, so tied members take turns.
    last: HashMap<String, String>,
    /// Backends out of their pools while the owner uses them (local first), and why.
    aside: BTreeMap<String, String>,
    next_ticket: u64,
}

impl Inner {
    fn remove(&mut self, job_id: &str) -> Option<Entry> {
        let e = self.running.remove(job_id)?;
        self.leave(&e.on);
        Some(e)
    }

    /// A job leaves `on`: one slot of that backend less.
    fn leave(&mut self, on: &(String, String)) {
        if let Some(n) = self.busy.get_mut(&on.0) {
            *n = n.saturating_sub(1);
        }
        if let Some(u) = self.usage.get_mut(on) {
            u.0 = u.0.saturating_sub(1);
        }
    }

    /// A job joins `backend` for `model`.
    fn join(&mut self, backend: &str, model: &str) -> (String, String) {
        *self.busy.entry(backend.to_owned()).or_insert(0) += 1;
        let on = (backend.to_owned(), model.to_owned());
        let u = self.usage.entry(on.clone()).or_insert((0, 0));
        u.0 += 1;
        u.1 += 1;
        self.last.insert(model.to_owned(), backend.to_owned());
        on
    }

    /// Free slots per seat (none for a backend out of its pool or in `skip`), and the
    /// seat picked last for `model`.
    fn free(&self, model: &str, seats: &[Seat], max: u32, skip: &str) -> (Vec<u32>, Option<usize>) {
        let free = seats
            .iter()
            .map(|s| {
                if s.key == skip || self.aside.contains_key(s.key) {
                    return 0;
                }
                let busy = self.busy.get(s.key).copied().unwrap_or(0);
                s.slots.unwrap_or(max).saturating_sub(busy)
            })
            .collect();
        let last = self
            .last
            .get(model)
            .and_then(|k| seats.iter().position(|s| s.key == k));
        (free, last)
    }
}

pub struct Registry {
    /// Reloadable: admission compares with it, nothing running is cut.
    max: std::sync::atomic::AtomicUsize,
    inner: Mutex<Inner>,
}

/// Why a job was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    /// Every member of the pool is running all its slots.
    BackendFull,
    /// Every member of the pool is out of it for local use.
    Aside,
    DuplicateId,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Full => "every slot is taken",
            Refusal::BackendFull => "the backends' slots are taken",
            Refusal::Aside => "the backends are in local use",
            Refusal::DuplicateId => "a job with this id is running",
        })
    }
}

impl std::error::Error for Refusal {}

/// An admitted job: its ticket and the seat it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub ticket: u64,
    pub seat: usize,
}

impl Registry {
    pub fn new(max: usize) -> Registry {
        Registry {
            max: std::sync::atomic::AtomicUsize::new(max),
            inner: Mutex::new(Inner {
                running: HashMap::new(),
                busy: HashMap::new(),
                usage: HashMap::new(),
                last: HashMap::new(),
                aside: BTreeMap::new(),
                next_ticket: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::lock::lock(&self.inner)
    }

    pub fn max(&self) -> usize {
        self.max.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, std::sync::atomic::Ordering::Relaxed);
    }

    fn max_u32(&self) -> u32 {
        u32::try_from(self.max()).unwrap_or(u32::MAX)
    }

    pub fn is_full(&self) -> bool {
        self.lock().running.len() >= self.max()
    }

    /// Takes a slot for `job_id` running `model` on one of `seats` (the model's pool),
    /// the one with the most free slots ([`choice::pick`]); the ticket identifies this
    /// admission.
    pub fn admit(
        &self,
        job_id: &str,
        cancel: Cancel,
        model: &str,
        seats: &[Seat],
    ) -> Result<Admitted, Refusal> {
        let mut g = self.lock();
        if g.running.len() >= self.max() {
            return Err(Refusal::Full);
        }
        if g.running.contains_key(job_id) {
            return Err(Refusal::DuplicateId);
        }
        let (free, last) = g.free(model, seats, self.max_u32(), "");
        let Some(seat) = choice::pick(&free, last) else {
            let all_aside = !seats.is_empty() && seats.iter().all(|s| g.aside.contains_key(s.key));
            return Err(if all_aside {
                Refusal::Aside
            } else {
                Refusal::BackendFull
            });
        };
        g.next_ticket += 1;
        let ticket = g.next_ticket;
        let on = g.join(seats[seat].key, model);
        let entry = Entry { ticket, cancel, on };
        g.running.insert(job_id.to_owned(), entry);
        Ok(Admitted { ticket, seat })
    }

    /// Moves a running job off the member it failed on to another of `seats` with a
    /// free slot; that seat, or None (no such member, or the job is no longer this
    /// admission's).
    pub fn reroute(&self, job_id: &str, ticket: u64, seats: &[Seat]) -> Option<usize> {
        let mut g = self.lock();
        let on = g
            .running
            .get(job_id)
            .filter(|e| e.ticket == ticket)?
            .on
            .clone();
        let (free, last) = g.free(&on.1, seats, self.max_u32(), &on.0);
        let seat = choice::pick(&free, last)?;
        g.leave(&on);
        let moved = g.join(seats[seat].key, &on.1);
        if let Some(e) = g.running.get_mut(job_id) {
            e.on = moved;
        }
        Some(seat)
    }

    /// The job ended by itself: frees its slot unless a cancel already did.
    pub fn finish(&self, job_id: &str, ticket: u64) -> bool {
        let mut g = self.lock();
        if g.running.get(job_id).is_some_and(|e| e.ticket == ticket) {
            g.remove(job_id);
            return true;
        }
        false
    }

    /// Stops a job and frees its slot at once; false for unknown or finished ids.
    pub fn cancel(&self, job_id: &str) -> bool {
        let entry = self.lock().remove(job_id);
        match entry {
            Some(e) => {
                e.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops every job; returns how many there were.
    pub fn cancel_all(&self) -> usize {
        let mut g = self.lock();
        g.busy.clear();
        for u in g.usage.values_mut() {
            u.0 = 0;
        }
        let all: Vec<Entry> = g.running.drain().map(|(_, e)| e).collect();
        drop(g);
        for e in &all {
            e.cancel.cancel();
        }
        all.len()
    }

    pub fn in_flight(&self) -> usize {
        self.lock().running.len()
    }

    /// Our jobs per (backend, model): running now and admitted since start.
    pub fn usage(&self) -> Vec<Usage> {
        self.lock()
            .usage
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Our jobs running now per backend, for `status` and the metrics.
    pub fn per_backend(&self) -> HashMap<String, u32> {
        self.lock().busy.clone()
    }

    /// Takes the named backends out of their pools (and puts back those not named);
    /// true when that changed which ones are out.
    pub fn set_aside(&self, aside: BTreeMap<String, String>) -> bool {
        let mut g = self.lock();
        let changed = !g.aside.keys().eq(aside.keys());
        g.aside = aside;
        changed
    }

    /// The backends out of their pools for local use, and why.
    pub fn aside(&self) -> BTreeMap<String, String> {
        self.lock().aside.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const ANY: &[Seat] = &[Seat {
        key: "b",
        slots: None,
    }];

    fn admit(r: &Registry, id: &str) -> Result<u64, Refusal> {
        r.admit(id, Cancel::default(), "m", ANY).map(|a| a.ticket)
    }

    fn seats<'a>(s: &[(&'a str, u32)]) -> Vec<Seat<'a>> {
        s.iter()
            .map(|&(key, n)| Seat {
                key,
                slots: Some(n),
            })
            .collect()
    }

    #[test]
    fn admits_up_to_max_and_refuses_duplicates() {
        let r = Registry::new(2);
        let a = admit(&r, "a").unwrap();
        assert_eq!(admit(&r, "a"), Err(Refusal::DuplicateId));
        admit(&r, "b").unwrap();
        assert_eq!(admit(&r, "c"), Err(Refusal::Full));
        assert!(r.finish("a", a));
        assert!(!r.finish("a", a), "a slot is freed once");
        admit(&r, "c").unwrap();
        assert_eq!(r.in_flight(), 2);
        assert_eq!(r.cancel_all(), 2);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn a_backend_limit_caps_its_jobs_and_frees_with_them() {
        let r = Registry::new(8);
        let llama = seats(&[("llama", 2)]);
        let go = |id: &str, s: &[Seat]| r.admit(id, Cancel::default(), "m", s);
        let a = go("a", &llama).unwrap();
        go("b", &llama).unwrap();
        assert_eq!(go("c", &llama), Err(Refusal::BackendFull));
        go("d", &seats(&[("other", 1)])).unwrap();
        go("e", ANY).unwrap();
        assert!(r.finish("a", a.ticket));
        go("c", &llama).unwrap();
        assert!(r.cancel("b"));
        assert_eq!(r.per_backend().get("llama"), Some(&1));
    }

    #[test]
    fn a_pool_fills_its_freest_member_first_and_takes_turns_on_ties() {
        let r = Registry::new(8);
        let pool = seats(&[("a", 2), ("b", 2)]);
        let mut on = Vec::new();
        for i in 0..4 {
            let got = r.admit(&format!("j{i}"), Cancel::default(), "m", &pool);
            on.push(pool[got.unwrap().seat].key);
        }
        assert_eq!(on, ["a", "b", "a", "b"]);
        assert_eq!(
            r.admit("j4", Cancel::default(), "m", &pool),
            Err(Refusal::BackendFull)
        );
        assert!(r.cancel("j1"));
        let next = r.admit("j5", Cancel::default(), "m", &pool).unwrap();
        assert_eq!(pool[next.seat].key, "b", "the member with the free slot");
        // Another model on the same backend takes its slots too.
        let busy = r.per_backend();
        assert_eq!((busy["a"], busy["b"]), (2, 2));
    }

    #[test]
    fn a_member_out_for_local_use_takes_no_new_job() {
        let r = Registry::new(8);
        let pool = seats(&[("a", 2), ("b", 2)]);
        let out = |keys: &[&str]| {
            keys.iter()
                .map(|k| (k.to_string(), "owner".to_string()))
                .collect()
        };
        assert!(r.set_aside(out(&["a"])));
        assert!(!r.set_aside(out(&["a"])), "no change");
        for i in 0..2 {
            let a = r.admit(&format!("j{i}"), Cancel::default(), "m", &pool);
            assert_eq!(pool[a.unwrap().seat].key, "b");
        }
        assert_eq!(
            r.admit("j2", Cancel::default(), "m", &pool),
            Err(Refusal::BackendFull)
        );
        assert!(r.set_aside(out(&["a", "b"])));
        assert_eq!(
            r.admit("j2", Cancel::default(), "m", &pool),
            Err(Refusal::Aside)
        );
        assert_eq!(r.aside().len(), 2);
        assert!(r.set_aside(BTreeMap::new()));
        let a = r.admit("j2", Cancel::default(), "m", &pool).unwrap();
        assert_eq!(pool[a.seat].key, "a");
    }

    #[test]
    fn a_rerouted_job_moves_its_slot_to_another_member_once_admitted() {
        let r = Registry::new(8);
        let pool = seats(&[("a", 1), ("b", 1)]);
        let a = r.admit("j", Cancel::default(), "m", &pool).unwrap();
        assert_eq!(pool[a.seat].key, "a");
        assert_eq!(r.reroute("j", a.ticket + 1, &pool), None, "stale ticket");
        assert_eq!(r.reroute("j", a.ticket, &pool), Some(1));
        let busy = r.per_backend();
        assert_eq!((busy["a"], busy["b"]), (0, 1));
        let usage: HashMap<_, _> = r.usage().into_iter().collect();
        assert_eq!(usage[&("a".into(), "m".into())], (0, 1));
        assert_eq!(usage[&("b".into(), "m".into())], (1, 1));
        // From b, a is free again; a third member would be needed to leave a.
        let k = r.admit("k", Cancel::default(), "m", &pool).unwrap();
        assert_eq!(pool[k.seat].key, "a");
        assert_eq!(r.reroute("k", k.ticket, &pool), None, "b is full");
        assert!(r.finish("j", a.ticket));
        assert_eq!(r.per_backend()["b"], 0, "freed on the member it moved to");
    }

    #[test]
    fn usage_counts_running_and_admitted_per_backend_and_model() {
        let r = Registry::new(8);
        let u1 = seats(&[("u1", 8)]);
        let a = r.admit("a", Cancel::default(), "m", &u1).unwrap();
        r.admit("b", Cancel::default(), "m", &u1).unwrap();
        r.admit("c", Cancel::default(), "n", &seats(&[("u2", 8)]))
            .unwrap();
        let get = |k: (&str, &str)| {
            r.usage()
                .into_iter()
                .find(|((b, m), _)| (b.as_str(), m.as_str()) == k)
                .map(|(_, v)| v)
        };
        assert_eq!(get(("u1", "m")), Some((2, 2)));
        assert!(r.finish("a", a.ticket));
        assert!(r.cancel("b"));
        assert_eq!(get(("u1", "m")), Some((0, 2)));
        assert_eq!(r.cancel_all(), 1);
        assert_eq!(get(("u2", "n")), Some((0, 1)));
    }

    #[test]
    fn a_stale_finish_does_not_free_a_reused_id() {
        let r = Registry::new(4);
        let old = admit(&r, "x").unwrap();
        assert!(r.cancel("x"));
        let _new = admit(&r, "x").unwrap();
        assert!(!r.finish("x", old));
        assert_eq!(r.in_flight(), 1);
    }

    #[test]
    fn cancel_racing_completion_frees_each_slot_exactly_once() {
        let pool = seats(&[("backend", 64)]);
        for _round in 0..50 {
            let r = Arc::new(Registry::new(64));
            let tickets: Vec<(String, u64, Cancel)> = (0..64)
                .map(|i| {
                    let id = format!("job-{i}");
                    let c = Cancel::default();
                    let t = r.admit(&id, c.clone(), "m", &pool).unwrap().ticket;
                    (id, t, c)
                })
                .collect();
            let freed = Arc::new(AtomicUsize::new(0));
            let tickets = Arc::new(tickets);
            let threads: Vec<_> = (0..4)
                .map(|k| {
                    let (r, freed, tickets) =
                        (Arc::clone(&r), Arc::clone(&freed), Arc::clone(&tickets));
                    std::thread::spawn(move || {
                        let mut by_cancel = Vec::new();
                        for (i, (id, t, _)) in tickets.iter().enumerate() {
                            let did = if k % 2 == 0 {
                                r.finish(id, *t)
                            } else {
                                r.cancel(id)
                            };
                            if did {
                                freed.fetch_add(1, Ordering::SeqCst);
                                if k % 2 == 1 {
                                    by_cancel.push(i);
                                }
                            }
                        }
                        by_cancel
                    })
                })
                .collect();
            let mut by_cancel = Vec::new();
            for t in threads {
                by_cancel.extend(t.join().unwrap());
            }
            assert_eq!(freed.load(Ordering::SeqCst), 64);
            assert_eq!(r.in_flight(), 0);
            assert_eq!(
                r.per_backend().get("backend"),
                Some(&0),
                "backend slots freed once each"
            );
            // A slot freed by cancel fired that job's token; one freed by its
            // own finish did not (nobody else touched it).
            for (i, (id, _, c)) in tickets.iter().enumerate() {
                assert_eq!(c.is_cancelled(), by_cancel.contains(&i), "{id}");
            }
        }
    }
}
