//! The hardware description kept fresh off the session's path: capabilities
//! must go out within a second of auth_ok, and `nvidia-smi` alone may take two.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// GPU load and free memory move; a description older than this is taken
/// again the next time capabilities are built.
const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    value: Option<Value>,
    taken: Option<Instant>,
    refreshing: bool,
}

impl State {
    fn stale(&self) -> bool {
        self.taken.is_none_or(|t| t.elapsed() > MAX_AGE)
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

type Describe = Arc<dyn Fn(&Path) -> Value + Send + Sync>;

#[derive(Clone)]
pub struct HardwareSnapshot {
    root: PathBuf,
    describe: Describe,
    shared: Arc<Shared>,
}

/// Ends a refresh however its thread ends (a panic included), so a failed
/// description is retried next time instead of blocking every later one.
struct RefreshEnd<'a>(&'a HardwareSnapshot);

impl Drop for RefreshEnd<'_> {
    fn drop(&mut self) {
        self.0.lock().refreshing = false;
        self.0.shared.ready.notify_all();
    }
}

impl HardwareSnapshot {
    /// Starts the first description of the machine whose filesystem is at `root`.
    pub fn start(root: PathBuf) -> HardwareSnapshot {
        HardwareSnapshot::start_with(root, Arc::new(crate::hardware::describe))
    }

    fn start_with(root: PathBuf, describe: Describe) -> HardwareSnapshot {
        let s = HardwareSnapshot {
            root,
            describe,
            shared: Arc::default(),
        };
        s.refresh_in_background(&mut s.lock());
        s
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock::lock(&self.shared.state)
    }

    fn refresh_in_background(&self, st: &mut State) {
        if st.refreshing {
            return;
        }
        st.refreshing = true;
        let me = self.clone();
        let spawned = crate::stack::thread("hardware").spawn(move || {
            let _end = RefreshEnd(&me);
            let value = (me.describe)(&me.root);
            let mut st = me.lock();
            st.value = Some(value);
            st.taken = Some(Instant::now());
        });
        if let Err(e) = spawned {
            log::warn!("hardware description skipped: cannot start a thread: {e}");
            st.refreshing = false;
        }
    }

    /// The latest description. A missing or stale one is taken again, and
    /// waited for up to `wait`; past that the older one (or None) is returned.
    pub fn latest(&self, wait: Duration) -> Option<Value> {
        let mut st = self.lock();
        if st.stale() {
            self.refresh_in_background(&mut st);
        }
        let (st, _) = crate::lock::unpoisoned(self.shared.ready.wait_timeout_while(
            st,
            wait,
            |s| s.refreshing && s.stale(),
        ));
        st.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_description_is_waited_for_and_then_kept() {
        let root =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/x86_64-no-nvidia");
        let snap = HardwareSnapshot::start(root.clone());
        let first = snap.latest(Duration::from_secs(5)).expect("described");
        assert_eq!(first, crate::hardware::describe(&root));
        // Fresh, so no second thread is started and the same value comes back at once.
        assert!(!snap.lock().refreshing);
        assert_eq!(snap.latest(Duration::ZERO), Some(first));
        assert!(!snap.lock().refreshing);
    }

    /// Waits (bounded) until no refresh is running.
    fn settled(snap: &HardwareSnapshot) -> MutexGuard<'_, State> {
        let st = snap.lock();
        let (st, timeout) = snap
            .shared
            .ready
            .wait_timeout_while(st, Duration::from_secs(20), |s| s.refreshing)
            .unwrap();
        assert!(!timeout.timed_out(), "a refresh never ended");
        st
    }

    #[test]
    fn a_stale_description_is_taken_again_and_served_meanwhile() {
        // Each description waits for a permit, so the test decides when a
        // refresh ends instead of racing it.
        let (permit, permits) = crossbeam_channel::unbounded::<()>();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let gated: Describe = Arc::new(move |_| {
            permits
                .recv_timeout(Duration::from_secs(20))
                .expect("permit");
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            serde_json::json!({ "n": n })
        });
        let snap = HardwareSnapshot::start_with(PathBuf::from("/"), gated);
        assert_eq!(snap.latest(Duration::ZERO), None, "nothing described yet");
        permit.send(()).unwrap();
        let first = snap.latest(Duration::from_secs(20)).expect("described");
        assert_eq!(first, serde_json::json!({"n": 1}));
        drop(settled(&snap));
        snap.lock().taken = None; // as if older than MAX_AGE
        assert_eq!(
            snap.latest(Duration::ZERO),
            Some(first),
            "stale value served"
        );
        assert!(snap.lock().refreshing, "and taken again");
        permit.send(()).unwrap();
        assert_eq!(
            snap.latest(Duration::from_secs(20)),
            Some(serde_json::json!({"n": 2}))
        );
        assert!(!settled(&snap).stale(), "refreshed");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_panicking_description_does_not_wedge_later_ones() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let broken: Describe = Arc::new(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("describe failed");
        });
        let snap = HardwareSnapshot::start_with(PathBuf::from("/"), broken);
        assert_eq!(snap.latest(Duration::from_secs(5)), None);
        assert!(
            !settled(&snap).refreshing,
            "the refresh ended with its thread"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The next request tries again: a second description is started and
        // ends too, although it panics like the first.
        assert_eq!(snap.latest(Duration::ZERO), None);
        drop(settled(&snap));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
