//! `crate::backend::{sse, anthropic}` as in the agent.

#[path = "../../src/backend/anthropic.rs"]
pub mod anthropic;
#[path = "../../src/backend/sse.rs"]
pub mod sse;
