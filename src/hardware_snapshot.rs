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

#[derive(Clone)]
pub struct HardwareSnapshot {
    root: PathBuf,
    describe: fn(&Path) -> Value,
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
        HardwareSnapshot::start_with(root, crate::hardware::describe)
    }

    fn start_with(root: PathBuf, describe: fn(&Path) -> Value) -> HardwareSnapshot {
        let s = HardwareSnapshot {
            root,
            describe,
            shared: Arc::default(),
        };
        s.refresh_in_background(&mut s.lock());
        s
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refresh_in_background(&self, st: &mut State) {
        if st.refreshing {
            return;
        }
        st.refreshing = true;
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("hardware".into())
            .spawn(move || {
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
        let (st, _) = self
            .shared
            .ready
            .wait_timeout_while(st, wait, |s| s.refreshing && s.stale())
            .unwrap_or_else(|p| p.into_inner());
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

    #[test]
    fn a_stale_description_is_taken_again_and_served_meanwhile() {
        fn slow(_: &Path) -> Value {
            std::thread::sleep(Duration::from_millis(300));
            serde_json::json!({"n": 1})
        }
        let snap = HardwareSnapshot::start_with(PathBuf::from("/"), slow);
        let first = snap.latest(Duration::from_secs(5)).expect("described");
        snap.lock().taken = None; // as if older than MAX_AGE
        assert_eq!(
            snap.latest(Duration::ZERO),
            Some(first),
            "stale value served"
        );
        assert!(snap.lock().refreshing, "and taken again");
        assert!(snap.latest(Duration::from_secs(5)).is_some());
        assert!(!snap.lock().stale(), "refreshed");
    }

    #[test]
    fn a_panicking_description_does_not_wedge_later_ones() {
        fn broken(_: &Path) -> Value {
            panic!("describe failed");
        }
        let snap = HardwareSnapshot::start_with(PathBuf::from("/"), broken);
        assert_eq!(snap.latest(Duration::from_secs(5)), None);
        let st = snap.lock();
        let st = snap
            .shared
            .ready
            .wait_timeout_while(st, Duration::from_secs(5), |s| s.refreshing)
            .unwrap()
            .0;
        assert!(!st.refreshing, "the refresh ended with its thread");
        drop(st);
        // The next request tries again.
        assert_eq!(snap.latest(Duration::ZERO), None);
        assert!(snap.lock().refreshing);
    }
}
