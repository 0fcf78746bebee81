//! The agent's pure modules, included by path so the fuzz targets (and the regression
//! replay in `harness`) call exactly the code the agent runs. The module tree mirrors the
//! agent's (`crate::backend::sse`, `crate::jobs::policy`, `crate::clock`, ...) so
//! `crate::` paths inside resolve.
#![allow(dead_code, unused_imports, clippy::all)]

#[path = "../../src/atomic_file.rs"]
pub mod atomic_file;
#[path = "../../src/clock.rs"]
pub mod clock;
#[path = "../../src/config.rs"]
pub mod config;
#[path = "../../src/endpoint.rs"]
pub mod endpoint;
#[path = "../../src/gate/schedule.rs"]
pub mod gate_schedule;
/// config.rs parses serving windows with `crate::gate::schedule`.
pub mod gate {
    pub use crate::gate_schedule as schedule;
}
#[path = "../../src/identity.rs"]
pub mod identity;
#[path = "../../src/protocol.rs"]
pub mod protocol;
#[path = "../../src/untrusted.rs"]
pub mod untrusted;

pub mod backend;
pub mod harness;
pub mod jobs;
