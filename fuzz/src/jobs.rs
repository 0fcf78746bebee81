//! `crate::jobs::policy` as in the agent.

#[path = "../../src/jobs/policy.rs"]
pub mod policy;
