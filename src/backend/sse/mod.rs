//! Server-sent events: cutting a backend's byte stream on event boundaries, parsing the
//! events, and counting the tokens a streamed completion reports.
//!
//! Everything here is pure so it can be fuzzed and unit-tested without a backend.

mod parse;
mod shapes;
mod split;
mod stats;

pub use parse::{parse_events, EventParser, SseEvent};
pub use split::{EventSplitter, SseError};
pub use stats::{StreamStats, Usage};

#[cfg(test)]
mod tests;
