//! The buffers one job thread relays with, kept from event to event and from job to
//! job, so relaying allocates nothing per event once they have grown.

use crate::backend::sse::{EventParser, EventSplitter};

/// One backend read; rustls records and most bursts fit.
const READ_BUF: usize = 16 * 1024;

/// Above this a buffer is given back after its job: one huge event should not keep
/// a thread's memory high for the life of the process.
const KEEP_BYTES: usize = 64 * 1024;

pub struct Buffers {
    /// What one read from the backend returns.
    pub read: Vec<u8>,
    pub splitter: EventSplitter,
    pub parser: EventParser,
    /// The `job_chunk` frame's text.
    pub frame: Vec<u8>,
}

impl Buffers {
    /// Empty until the first job, so idle threads hold no buffer.
    pub fn new(max_event_bytes: usize) -> Buffers {
        Buffers {
            read: Vec::new(),
            splitter: EventSplitter::new(max_event_bytes),
            parser: EventParser::default(),
            frame: Vec::new(),
        }
    }

    /// Ready for a new stream: the read buffer sized, the splitter empty.
    pub fn start(&mut self) {
        self.read.resize(READ_BUF, 0);
        self.splitter.reset();
    }

    /// After a job: what grew past [`KEEP_BYTES`] is freed.
    pub fn trim(&mut self) {
        if self.frame.capacity() > KEEP_BYTES {
            self.frame = Vec::new();
        }
        self.splitter.trim(KEEP_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_survive_jobs_unless_they_grew_too_big() {
        let mut b = Buffers::new(1 << 20);
        b.start();
        assert_eq!(b.read.len(), READ_BUF);
        b.frame.extend_from_slice(&[0; 1000]);
        let ptr = b.frame.as_ptr();
        b.trim();
        b.start();
        assert_eq!(b.frame.as_ptr(), ptr, "a small frame buffer is kept");
        b.frame.resize(KEEP_BYTES + 1, 0);
        b.trim();
        assert_eq!(b.frame.capacity(), 0);
    }
}
