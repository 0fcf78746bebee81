//! usepod-edge: a Use Pod provider agent for edge GPUs, as a library; the
//! binary (src/main.rs) calls [`entry::main`], which hands each command to [`cmd`].
//! docs/design.md draws the layers: no module uses one that uses it back
//! (.ci/module-cycles checks that).
#![forbid(unsafe_code)]

pub mod agent;
pub mod atomic_file;
pub mod backend;
pub mod cancel;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod decimal;
pub mod discovery;
pub mod doctor;
pub mod endpoint;
pub mod entry;
pub mod gate;
pub mod hardware;
pub mod hardware_snapshot;
pub mod host;
pub mod identity;
pub mod jitter;
pub mod jobs;
pub mod json_fields;
pub mod json_string;
pub mod ledger;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod outgoing;
pub mod pair;
pub mod probation;
pub mod protocol;
pub mod reconnect;
pub mod release;
pub mod reload;
pub mod schedule;
pub mod session;
pub mod shutdown;
pub mod stack;
pub mod state;
pub mod supervisor;
pub mod untrusted;
pub mod upgrade;
pub mod upkeep;
