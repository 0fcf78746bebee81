//! Cutting a backend's byte stream on event boundaries, without waiting for more bytes
//! than an event needs.

use std::fmt;

/// Error when a backend stream cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// More than `limit` bytes arrived without an event boundary: the backend is sending
    /// something that is not an event stream, or one event far larger than any completion
    /// chunk, and buffering it further would only exhaust memory.
    EventTooLarge { limit: usize },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::EventTooLarge { limit } => write!(
                f,
                "backend sent more than {limit} bytes without an SSE event boundary"
            ),
        }
    }
}

impl std::error::Error for SseError {}

/// Where the scanner stands between two bytes; kept across pushes so a boundary split
/// over two reads is still found without rescanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// At least one byte of the current line has been seen.
    MidLine,
    /// The previous byte ended a line (LF, or the LF of a CRLF).
    LineStart,
    /// The previous byte was a CR. An LF now is the second half of a CRLF, not a new
    /// line; `ended_event` remembers that the CR closed a blank line, so that LF still
    /// belongs to the event the CR completed.
    AfterCr { ended_event: bool },
}

/// Cuts a byte stream into complete SSE events (boundary = blank line: "\n\n", "\r\n\r\n",
/// also "\r\r" per the spec, mixed allowed).
///
/// An event ending in a CR whose LF has not arrived yet is released at the CR (a spec
/// parser dispatches there too, and relayed bytes must never wait for more); the LF, when
/// it comes, is then released on its own. Concatenating every output and `take_rest` always
/// gives back the input exactly.
#[derive(Debug, Clone)]
pub struct EventSplitter {
    max_event_bytes: usize,
    /// Bytes after the last boundary, all already scanned, behind the `released` bytes
    /// the previous push lent out. One buffer reused for the whole stream (and, through
    /// [`EventSplitter::reset`], for the next), so relaying allocates nothing per event
    /// (which the tests check, hence visible to them).
    pub(super) pending: Vec<u8>,
    /// How many leading bytes of `pending` the last push returned; dropped at the next.
    released: usize,
    state: LineState,
    /// Set once the limit was exceeded: the stream is mid-event at an unknown point, so
    /// nothing after it can be framed reliably.
    failed: bool,
}

impl EventSplitter {
    pub fn new(max_event_bytes: usize) -> Self {
        EventSplitter {
            max_event_bytes,
            pending: Vec::new(),
            released: 0,
            state: LineState::LineStart,
            failed: false,
        }
    }

    /// Append bytes just read from the backend; returns the bytes of every event completed
    /// by them (concatenated, exactly as received, ending right after a boundary), or an
    /// empty Vec when none is complete yet.
    ///
    /// Err when the incomplete tail exceeds `max_event_bytes`; the splitter then stays
    /// failed and every later push returns the same error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, SseError> {
        self.push_ready(bytes).map(<[u8]>::to_vec)
    }

    /// [`EventSplitter::push`] without a copy: the completed events are lent from the
    /// splitter's own buffer until the next call.
    pub fn push_ready(&mut self, bytes: &[u8]) -> Result<&[u8], SseError> {
        if self.failed {
            return Err(self.too_large());
        }
        self.drop_released();
        let base = self.pending.len();
        // Only the new bytes are scanned; `state` carries what the old ones left open.
        let mut cut = 0;
        for (offset, &byte) in bytes.iter().enumerate() {
            let after = base + offset + 1;
            self.state = match (byte, self.state) {
                (b'\n', LineState::AfterCr { ended_event }) => {
                    if ended_event {
                        cut = after;
                    }
                    LineState::LineStart
                }
                (b'\n', state) => {
                    if state == LineState::LineStart {
                        cut = after;
                    }
                    LineState::LineStart
                }
                (b'\r', state) => {
                    let blank = state != LineState::MidLine;
                    if blank {
                        cut = after;
                    }
                    LineState::AfterCr { ended_event: blank }
                }
                _ => LineState::MidLine,
            };
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() - cut > self.max_event_bytes {
            self.failed = true;
            self.pending = Vec::new();
            return Err(self.too_large());
        }
        self.released = cut;
        Ok(&self.pending[..cut])
    }

    /// Bytes received after the last boundary (a stream that ended without a final blank
    /// line). The splitter is then ready for a new stream.
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.rest().to_vec()
    }

    /// [`EventSplitter::take_rest`] without a copy, lent until the next call; the
    /// splitter keeps its buffer for the next stream.
    pub fn rest(&mut self) -> &[u8] {
        self.drop_released();
        self.state = LineState::LineStart;
        self.released = self.pending.len();
        &self.pending
    }

    /// Ready for a new stream, keeping the buffer (and its capacity).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.released = 0;
        self.state = LineState::LineStart;
        self.failed = false;
    }

    /// Frees the buffer when its capacity grew past `max` (after a stream of huge events).
    pub fn trim(&mut self, max: usize) {
        if self.pending.capacity() > max {
            self.pending = Vec::new();
            self.released = 0;
        }
    }

    fn drop_released(&mut self) {
        // Moves the short unfinished tail to the front; no allocation.
        self.pending.drain(..self.released);
        self.released = 0;
    }

    fn too_large(&self) -> SseError {
        SseError::EventTooLarge {
            limit: self.max_event_bytes,
        }
    }
}
