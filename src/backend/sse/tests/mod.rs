//! Tests of the splitter, the parser and the stream accounting, one file each.

mod parse;
mod split;
mod stats;

use crate::backend::sse::SseEvent;

fn ev(event: Option<&str>, data: &str) -> SseEvent {
    SseEvent {
        event: event.map(str::to_owned),
        data: data.to_owned(),
    }
}

fn data(data: &str) -> SseEvent {
    ev(None, data)
}

/// Small deterministic generator so property tests need no extra crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
