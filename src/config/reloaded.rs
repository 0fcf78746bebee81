//! How the last reload went, as the state file keeps it for `status` and `reload`.

use crate::json_fields::json_fields;
use serde::Serialize;

json_fields! {
    /// The `reload` section of the state file.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
    pub struct Reloaded {
        /// Counts reloads since start: `reload` waits for it to move.
        pub seq: u64,
        pub at: String,
        pub unix: u64,
        /// Taken up (whole), or refused (nothing changed).
        pub ok: bool,
        /// What changed and was applied, one line each (`key: before -> after`).
        pub changes: Vec<String>,
        /// What changed in the file but needs a restart, so was not applied.
        pub restart_needed: Vec<String>,
        /// Why it was refused.
        pub error: Option<String>,
    }
}
