//! `crate::jobs::policy` as in the agent.

#[path = "../../src/jobs/policy/mod.rs"]
pub mod policy;
