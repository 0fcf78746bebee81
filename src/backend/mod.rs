//! Talking to the local inference servers.

pub mod answers;
pub mod anthropic;
pub mod busy;
mod kind;
pub mod probe;
pub mod sse;

pub use kind::{default_ports_text, BackendKind};
