//! The hardware description kept fresh off the session's path: capabilities
//! must go out within a second of auth_ok, and `nvidia-smi` alone may take two.

use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// GPU load and free memory move; a description older than this is refreshed
/// (in the background) the next time capabilities are built.
const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    value: Option<Value>,
    taken: Option<Instant>,
    refreshing: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Clone)]
pub struct HardwareSnapshot {
    root: PathBuf,
    shared: Arc<Shared>,
}

impl HardwareSnapshot {
    /// Starts the first description of the machine whose filesystem is at `root`.
    pub fn start(root: PathBuf) -> HardwareSnapshot {
        let s = HardwareSnapshot {
            root,
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
                let value = crate::hardware::describe(&me.root);
                let mut st = me.lock();
                st.value = Some(value);
                st.taken = Some(Instant::now());
                st.refreshing = false;
                me.shared.ready.notify_all();
            });
        if let Err(e) = spawned {
            log::warn!("hardware description skipped: cannot start a thread: {e}");
            st.refreshing = false;
        }
    }

    /// The latest description (None until the first one is in, waiting at most
    /// `wait` for it); a stale one is returned as is and refreshed for next time.
    pub fn latest(&self, wait: Duration) -> Option<Value> {
        let st = self.lock();
        let (mut st, _) = self
            .shared
            .ready
            .wait_timeout_while(st, wait, |s| s.value.is_none() && s.refreshing)
            .unwrap_or_else(|p| p.into_inner());
        if st.taken.is_none_or(|t| t.elapsed() > MAX_AGE) {
            self.refresh_in_background(&mut st);
        }
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
    fn a_stale_description_is_served_and_refreshed() {
        let root = PathBuf::from("/nonexistent-usepod-edge-root");
        let snap = HardwareSnapshot::start(root);
        let first = snap.latest(Duration::from_secs(5)).expect("described");
        snap.lock().taken = Some(Instant::now() - MAX_AGE - Duration::from_secs(1));
        assert_eq!(
            snap.latest(Duration::ZERO),
            Some(first),
            "stale value served"
        );
        let st = snap.lock();
        let st = snap
            .shared
            .ready
            .wait_timeout_while(st, Duration::from_secs(5), |s| s.refreshing)
            .unwrap()
            .0;
        assert!(st.taken.unwrap().elapsed() < MAX_AGE, "refreshed");
    }
}
