//! The cancel handle a job shares with whoever may stop it (job_cancel, the
//! deadline, the session ending). It knows nothing of HTTP: the call in
//! flight registers how it is stopped, and a cancel runs that at once.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Stop = Box<dyn FnOnce() + Send>;

/// Cheap to clone; all clones stop the same work.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    stop: Mutex<Option<Stop>>,
}

impl fmt::Debug for Cancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cancel({})", self.is_cancelled())
    }
}

impl Cancel {
    fn stop_slot(&self) -> std::sync::MutexGuard<'_, Option<Stop>> {
        crate::lock::lock(&self.inner.stop)
    }

    /// Stops the work; returns false if it was already cancelled.
    pub fn cancel(&self) -> bool {
        if self.inner.cancelled.swap(true, Ordering::SeqCst) {
            return false;
        }
        // Taken out before it runs: the stop may take locks of its own.
        let stop = self.stop_slot().take();
        if let Some(stop) = stop {
            stop();
        }
        true
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Registers how to stop the work now in flight, replacing an earlier
    /// registration (a job may make more than one call). Already cancelled:
    /// `stop` runs here and now, so a cancel that came first is never lost.
    pub fn on_cancel(&self, stop: impl FnOnce() + Send + 'static) {
        let mut slot = self.stop_slot();
        // Checked under the lock that `cancel` takes after setting the flag:
        // either it sees this registration, or this sees its flag.
        if self.is_cancelled() {
            drop(slot);
            stop();
        } else {
            *slot = Some(Box::new(stop));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Box<dyn FnOnce() + Send>) {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = Arc::clone(&n);
        (n, move || {
            let n = Arc::clone(&n2);
            Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            })
        })
    }

    #[test]
    fn the_registered_stop_runs_once_on_the_first_cancel() {
        let (ran, stop) = counter();
        let c = Cancel::default();
        c.on_cancel(stop());
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert!(c.clone().cancel());
        assert!(!c.cancel(), "a second cancel reports it was already done");
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert!(c.is_cancelled());
    }

    #[test]
    fn a_registration_after_the_cancel_stops_at_once() {
        let (ran, stop) = counter();
        let c = Cancel::default();
        c.cancel();
        c.on_cancel(stop());
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cancel_racing_a_registration_stops_exactly_once() {
        for _ in 0..200 {
            let (ran, stop) = counter();
            let c = Cancel::default();
            let c2 = c.clone();
            let t = std::thread::spawn(move || c2.cancel());
            c.on_cancel(stop());
            assert!(t.join().unwrap());
            assert_eq!(ran.load(Ordering::SeqCst), 1);
        }
    }
}
