//! Talking to the local inference servers.

pub mod anthropic;
pub mod probe;
pub mod sse;
