//! What the rest of the agent sees of the gate: the decision in force, published by
//! the monitor, read by admission, capabilities and the state file.

use super::decision::{unix_of, Block};
use crate::clock::rfc3339;
use crate::hardware::PowerMode;
use crate::json_fields::json_fields;
use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

#[derive(Default)]
pub(super) struct Shared {
    pub(super) blocks: Vec<Block>,
    pub(super) schedule: Option<String>,
    pub(super) power_mode: Option<PowerMode>,
    /// Problems with the gate's own inputs (an ignored control file, an unknown zone).
    pub(super) notes: Vec<String>,
    /// Backends out of their pools while their owner uses them: URL, and why.
    pub(super) aside: std::collections::BTreeMap<String, String>,
}

json_fields! {
    /// The `serving` section of the state file, which `status`, `pause` and `resume` read.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    pub struct Serving {
        pub admitting: bool,
        pub blocks: Vec<BlockState>,
        /// Where the schedule stands, in words; None without a schedule.
        pub schedule: Option<String>,
        pub power_mode: Option<PowerMode>,
        /// Problems with the gate's own inputs.
        pub notes: Vec<String>,
    }
}

/// Nothing stands in the way: what a section without blocks means.
impl Default for Serving {
    fn default() -> Self {
        Serving {
            admitting: true,
            blocks: Vec::new(),
            schedule: None,
            power_mode: None,
            notes: Vec::new(),
        }
    }
}

json_fields! {
    /// A [`Block`] as the state file shows it.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct BlockState {
        /// A [`Reason`] as `Reason::as_str` spells it.
        pub reason: String,
        pub since: At,
        pub until: Option<At>,
        pub detail: String,
        /// What `status` shows: the reason in a few words and the detail.
        pub text: String,
    }
}

json_fields! {
    /// An instant, for people and for programs.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct At {
        pub at: String,
        pub unix: i64,
    }
}

/// What the rest of the agent sees of the gate.
pub struct Gate {
    shared: Mutex<Shared>,
    changed_tx: Sender<()>,
    changed_rx: Receiver<()>,
}

impl Default for Gate {
    fn default() -> Self {
        let (changed_tx, changed_rx) = bounded(1);
        Gate {
            shared: Mutex::default(),
            changed_tx,
            changed_rx,
        }
    }
}

impl Gate {
    pub(super) fn lock(&self) -> MutexGuard<'_, Shared> {
        crate::lock::lock(&self.shared)
    }

    pub fn admitting(&self) -> bool {
        self.lock().blocks.is_empty()
    }

    /// Fires (coalesced) when admission starts or stops, or its reasons change.
    pub fn changes(&self) -> Receiver<()> {
        self.changed_rx.clone()
    }

    /// The `serving` section of the state file.
    pub fn status(&self) -> Serving {
        let s = self.lock();
        let at = |t: SystemTime| At {
            at: rfc3339(t),
            unix: unix_of(t),
        };
        Serving {
            admitting: s.blocks.is_empty(),
            blocks: s
                .blocks
                .iter()
                .map(|b| BlockState {
                    reason: b.reason.as_str().to_owned(),
                    since: at(b.since),
                    until: b.until.map(at),
                    detail: b.detail.clone(),
                    text: b.text(),
                })
                .collect(),
            schedule: s.schedule.clone(),
            power_mode: s.power_mode.clone(),
            notes: s.notes.clone(),
        }
    }

    /// Installs a new decision; true when admission or its reasons changed.
    pub(super) fn publish(&self, new: Shared) -> bool {
        let mut s = self.lock();
        let reasons = |b: &[Block]| b.iter().map(|b| b.reason).collect::<Vec<_>>();
        let changed = reasons(&s.blocks) != reasons(&new.blocks);
        *s = new;
        drop(s);
        if changed {
            let _ = self.changed_tx.try_send(());
        }
        changed
    }
}
