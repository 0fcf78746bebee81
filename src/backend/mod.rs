//! Talking to the local inference servers.

pub mod http;
pub mod probe;
