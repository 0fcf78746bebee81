//! Slot accounting: which jobs run, and the one place their slots are freed.
//!
//! A job's slot lives in its registry entry. Whoever removes the entry (the job
//! finishing, a cancel, the session ending) frees the slot; removal happens
//! under one mutex, so a cancel racing a completion frees it exactly once.

use crate::cancel::Cancel;
use std::collections::HashMap;
use std::sync::Mutex;

struct Entry {
    /// Distinguishes a re-used job_id from the job that used it before.
    ticket: u64,
    cancel: Cancel,
    /// The backend whose slot this job holds, when that backend has a limit.
    backend: Option<String>,
    /// (backend, model) the job runs on, for [`Registry::usage`].
    used: Option<(String, String)>,
}

/// Our own jobs on one (backend, model): running now, admitted since start.
pub type Usage = ((String, String), (u32, u64));

struct Inner {
    running: HashMap<String, Entry>,
    /// Jobs per limited backend (llama-server's total_slots).
    busy: HashMap<String, u32>,
    /// Per (backend, model): (running, admitted in total). Local-first judges a
    /// backend's load against our own share of it.
    usage: HashMap<(String, String), (u32, u64)>,
    next_ticket: u64,
}

impl Inner {
    fn remove(&mut self, job_id: &str) -> Option<Entry> {
        let e = self.running.remove(job_id)?;
        if let Some(b) = &e.backend {
            if let Some(n) = self.busy.get_mut(b) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(u) = e.used.as_ref().and_then(|k| self.usage.get_mut(k)) {
            u.0 = u.0.saturating_sub(1);
        }
        Some(e)
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
    /// The backend's own parallelism is used up.
    BackendFull,
    DuplicateId,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Full => "every slot is taken",
            Refusal::BackendFull => "the backend's slots are taken",
            Refusal::DuplicateId => "a job with this id is running",
        })
    }
}

impl std::error::Error for Refusal {}

/// A backend-side limit for one admission: (backend key, its slots).
pub type BackendLimit<'a> = Option<(&'a str, u32)>;

impl Registry {
    pub fn new(max: usize) -> Registry {
        Registry {
            max: std::sync::atomic::AtomicUsize::new(max),
            inner: Mutex::new(Inner {
                running: HashMap::new(),
                busy: HashMap::new(),
                usage: HashMap::new(),
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

    pub fn is_full(&self) -> bool {
        self.lock().running.len() >= self.max()
    }

    /// Takes a slot for `job_id` (and one of its backend's, if limited); the
    /// ticket identifies this admission. `used` names the (backend, model) it runs on.
    pub fn admit(
        &self,
        job_id: &str,
        cancel: Cancel,
        backend: BackendLimit,
        used: Option<(&str, &str)>,
    ) -> Result<u64, Refusal> {
        let mut g = self.lock();
        if g.running.len() >= self.max() {
            return Err(Refusal::Full);
        }
        if g.running.contains_key(job_id) {
            return Err(Refusal::DuplicateId);
        }
        if let Some((key, slots)) = backend {
            let n = g.busy.entry(key.to_owned()).or_insert(0);
            if *n >= slots {
                return Err(Refusal::BackendFull);
            }
            *n += 1;
        }
        g.next_ticket += 1;
        let ticket = g.next_ticket;
        let used = used.map(|(b, m)| (b.to_owned(), m.to_owned()));
        if let Some(k) = &used {
            let u = g.usage.entry(k.clone()).or_insert((0, 0));
            u.0 += 1;
            u.1 += 1;
        }
        let entry = Entry {
            ticket,
            cancel,
            backend: backend.map(|(k, _)| k.to_owned()),
            used,
        };
        g.running.insert(job_id.to_owned(), entry);
        Ok(ticket)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn admits_up_to_max_and_refuses_duplicates() {
        let r = Registry::new(2);
        let a = r.admit("a", Cancel::default(), None, None).unwrap();
        assert_eq!(
            r.admit("a", Cancel::default(), None, None),
            Err(Refusal::DuplicateId)
        );
        r.admit("b", Cancel::default(), None, None).unwrap();
        assert_eq!(
            r.admit("c", Cancel::default(), None, None),
            Err(Refusal::Full)
        );
        assert!(r.finish("a", a));
        assert!(!r.finish("a", a), "a slot is freed once");
        r.admit("c", Cancel::default(), None, None).unwrap();
        assert_eq!(r.in_flight(), 2);
        assert_eq!(r.cancel_all(), 2);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn a_backend_limit_caps_its_jobs_and_frees_with_them() {
        let r = Registry::new(8);
        let a = r
            .admit("a", Cancel::default(), Some(("llama", 2)), None)
            .unwrap();
        r.admit("b", Cancel::default(), Some(("llama", 2)), None)
            .unwrap();
        assert_eq!(
            r.admit("c", Cancel::default(), Some(("llama", 2)), None),
            Err(Refusal::BackendFull)
        );
        r.admit("d", Cancel::default(), Some(("other", 1)), None)
            .unwrap();
        r.admit("e", Cancel::default(), None, None).unwrap();
        assert!(r.finish("a", a));
        r.admit("c", Cancel::default(), Some(("llama", 2)), None)
            .unwrap();
        assert!(r.cancel("b"));
        assert_eq!(r.lock().busy.get("llama"), Some(&1));
    }

    #[test]
    fn usage_counts_running_and_admitted_per_backend_and_model() {
        let r = Registry::new(8);
        let a = r
            .admit("a", Cancel::default(), None, Some(("u1", "m")))
            .unwrap();
        r.admit("b", Cancel::default(), None, Some(("u1", "m")))
            .unwrap();
        r.admit("c", Cancel::default(), None, Some(("u2", "n")))
            .unwrap();
        let get = |k: (&str, &str)| {
            r.usage()
                .into_iter()
                .find(|((b, m), _)| (b.as_str(), m.as_str()) == k)
                .map(|(_, v)| v)
        };
        assert_eq!(get(("u1", "m")), Some((2, 2)));
        assert!(r.finish("a", a));
        assert!(r.cancel("b"));
        assert_eq!(get(("u1", "m")), Some((0, 2)));
        assert_eq!(r.cancel_all(), 1);
        assert_eq!(get(("u2", "n")), Some((0, 1)));
    }

    #[test]
    fn a_stale_finish_does_not_free_a_reused_id() {
        let r = Registry::new(4);
        let old = r.admit("x", Cancel::default(), None, None).unwrap();
        assert!(r.cancel("x"));
        let _new = r.admit("x", Cancel::default(), None, None).unwrap();
        assert!(!r.finish("x", old));
        assert_eq!(r.in_flight(), 1);
    }

    #[test]
    fn cancel_racing_completion_frees_each_slot_exactly_once() {
        for _round in 0..50 {
            let r = Arc::new(Registry::new(64));
            let tickets: Vec<(String, u64, Cancel)> = (0..64)
                .map(|i| {
                    let id = format!("job-{i}");
                    let c = Cancel::default();
                    let t = r
                        .admit(&id, c.clone(), Some(("backend", 64)), None)
                        .unwrap();
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
                r.lock().busy.get("backend"),
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
