//! Server-sent events: cutting a backend's byte stream on event boundaries, parsing the
//! events, and counting the tokens a streamed completion reports.
//!
//! Everything here is pure so it can be fuzzed and unit-tested without a backend.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
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
    /// [`EventSplitter::reset`], for the next), so relaying allocates nothing per event.
    pending: Vec<u8>,
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

/// One parsed event: `event:` name if any and the `data:` lines joined with "\n".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Parses complete events, reusing its buffers from one call (and one stream) to the
/// next, so counting a relayed stream allocates nothing per event.
#[derive(Debug, Default)]
pub struct EventParser {
    /// The fields of the event being parsed, until its blank line.
    event: String,
    has_event: bool,
    data: String,
    has_data: bool,
}

impl EventParser {
    /// Calls `f(event name, data)` for every event in `bytes` (lossy UTF-8), as
    /// [`parse_events`] returns them.
    pub fn each(&mut self, bytes: &[u8], mut f: impl FnMut(Option<&str>, &str)) {
        let text = String::from_utf8_lossy(bytes);
        let mut rest = text.strip_prefix('\u{feff}').unwrap_or(&text);
        while !rest.is_empty() {
            let (line, next) = match rest.find(['\r', '\n']) {
                Some(at) => {
                    let (line, terminator) = rest.split_at(at);
                    let next = terminator
                        .strip_prefix("\r\n")
                        .or_else(|| terminator.get(1..))
                        .unwrap_or("");
                    (line, next)
                }
                None => (rest, ""),
            };
            if line.is_empty() {
                self.dispatch(&mut f);
            } else {
                self.field(line);
            }
            rest = next;
        }
        self.dispatch(&mut f);
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
                self.has_event = !value.is_empty();
            }
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, f: &mut impl FnMut(Option<&str>, &str)) {
        if self.has_data {
            f(self.has_event.then_some(self.event.as_str()), &self.data);
        }
        self.data.clear();
        self.has_data = false;
        self.has_event = false;
    }
}

/// Parse complete events from bytes returned by `push` (lossy UTF-8). Events with no data
/// lines are skipped.
///
/// An event not closed by a blank line at the end of `bytes` is still returned: fed the
/// output of `take_rest`, this lets a stream cut short of its last blank line still count.
pub fn parse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut events = Vec::new();
    EventParser::default().each(bytes, |event, data| {
        events.push(SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        })
    });
    events
}

/// Token usage seen in a stream, from either OpenAI or Anthropic shapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

impl Usage {
    /// Later reports replace earlier ones key by key: Anthropic's message_delta carries the
    /// final output count, and may omit the input count message_start already gave.
    fn update(&mut self, usage: Option<&RawValue>, anthropic: bool) {
        let Some(usage) = usage.and_then(object::<UsageFields>) else {
            return;
        };
        let (input, output) = match anthropic {
            true => (usage.input_tokens, usage.output_tokens),
            false => (usage.prompt_tokens, usage.completion_tokens),
        };
        if let Some(input) = input.and_then(count) {
            self.input = Some(input);
        }
        if let Some(output) = output.and_then(count) {
            self.output = Some(output);
        }
    }
}

// The shapes read from each event, borrowed from its data: every field stays raw JSON
// until it is needed, and nothing is built for the fields skipped, so observing an event
// allocates nothing (a `serde_json::Value` tree cost a dozen allocations per event).

/// The top-level fields of either an OpenAI chunk or an Anthropic event.
#[derive(Deserialize)]
struct EventFields<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    /// Read in place rather than captured raw: see [`FirstObject`].
    #[serde(borrow, default)]
    choices: FirstObject<ChoiceFields<'a>>,
}

/// The token counts, under either vendor's names (each shape reads its own pair).
#[derive(Deserialize)]
struct UsageFields<'a> {
    #[serde(borrow, default)]
    input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    completion_tokens: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageFields<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceFields<'a> {
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

/// An OpenAI delta's generated text, any of its names (`reasoning` is the newer
/// vLLM/Ollama name for `reasoning_content`; thinking tokens are generated and billed like
/// any other); also Anthropic's `stop_reason` in a message_delta.
#[derive(Deserialize)]
struct DeltaFields<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stop_reason: Option<&'a RawValue>,
}

/// The first element of a JSON array when it is an object, read as `T`; any other value,
/// or a first element that is not an object, reads as None. Parsed in place: captured as a
/// `RawValue` first, `[{"delta":{..}}]` nests two deep, and serde_json skips such a value
/// with a stack it allocates afresh in every parse (two allocations per relayed event).
struct FirstObject<T>(Option<T>);

impl<T> Default for FirstObject<T> {
    fn default() -> Self {
        FirstObject(None)
    }
}

/// Reads one value for [`FirstObject`]: the array when `array`, else its element.
struct Shape<T> {
    array: bool,
    read: std::marker::PhantomData<T>,
}

/// Any scalar is not the shape looked for.
macro_rules! not_the_shape {
    ($($name:ident: $ty:ty),*) => {$(
        fn $name<E: serde::de::Error>(self, _: $ty) -> Result<Option<T>, E> {
            Ok(None)
        }
    )*};
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Shape<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    not_the_shape!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        let first = match self.array {
            true => seq.next_element_seed(Shape {
                array: false,
                read: self.read,
            })?,
            false => None,
        };
        serde::de::IgnoredAny.visit_seq(seq)?;
        Ok(first.flatten())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        if self.array {
            serde::de::IgnoredAny.visit_map(map)?;
            return Ok(None);
        }
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for Shape<T> {
    type Value = Option<T>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for FirstObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shape = Shape {
            array: true,
            read: std::marker::PhantomData,
        };
        d.deserialize_any(shape).map(FirstObject)
    }
}

/// `raw` read as `T` when it is a JSON object (a struct would also take an array).
fn object<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// A JSON string, borrowed unless it has escapes.
fn string(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let text = raw?.get();
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// A non-negative integer that fits u64, as `Value::as_u64` reads one.
fn count(raw: &RawValue) -> Option<u64> {
    serde_json::from_str(raw.get()).ok()
}

/// A string other than "": what a delta emits when it emits text. Judged on the raw
/// text, which for any string but "" is longer than its two quotes.
fn nonempty_string(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|r| r.get().starts_with('"') && r.get() != "\"\"")
}

/// Running accounting of a streamed response.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub usage: Usage,
    pub content_events: u64,
    pub done: bool,
    pub finish_reason: Option<String>,
}

impl StreamStats {
    /// Update from one event's data, in either the OpenAI chat-completions chunk shape or
    /// the Anthropic Messages event shape. Data that is not a JSON object is ignored.
    pub fn observe(&mut self, event: &SseEvent) {
        self.observe_data(event.event.as_deref(), &event.data);
    }

    /// [`StreamStats::observe`] for an event as [`EventParser::each`] lends it.
    pub fn observe_data(&mut self, event: Option<&str>, data: &str) {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        if !data.starts_with('{') {
            return;
        }
        let Ok(fields) = serde_json::from_str::<EventFields>(data) else {
            return;
        };
        // Anthropic repeats the event name as `type`; the `event:` line is the fallback.
        let kind = string(fields.kind);
        match kind.as_deref().or(event) {
            Some("message_start") => {
                let message = fields.message.and_then(object::<MessageFields>);
                self.usage.update(message.and_then(|m| m.usage), true);
            }
            Some("message_delta") => {
                self.usage.update(fields.usage, true);
                let delta = fields.delta.and_then(object::<DeltaFields>);
                self.set_finish_reason(delta.and_then(|d| d.stop_reason));
            }
            Some("content_block_delta") => self.content_events += 1,
            Some("message_stop") => self.done = true,
            _ => self.observe_openai(&fields),
        }
    }

    fn observe_openai(&mut self, chunk: &EventFields) {
        self.usage.update(chunk.usage, false);
        let Some(choice) = &chunk.choices.0 else {
            return;
        };
        if let Some(delta) = choice.delta.and_then(object::<DeltaFields>) {
            if nonempty_string(delta.content)
                || nonempty_string(delta.reasoning_content)
                || nonempty_string(delta.reasoning)
            {
                self.content_events += 1;
            }
        }
        self.set_finish_reason(choice.finish_reason);
    }

    /// Stored when it is a string; allocates only when it changes (once a stream).
    fn set_finish_reason(&mut self, raw: Option<&RawValue>) {
        let Some(reason) = string(raw) else {
            return;
        };
        if self.finish_reason.as_deref() != Some(&*reason) {
            self.finish_reason = Some(reason.into_owned());
        }
    }

    /// Output tokens emitted so far: usage.output if known, else content_events (one token
    /// per delta is the best estimate).
    pub fn output_tokens(&self) -> u64 {
        self.usage.output.unwrap_or(self.content_events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    fn data(data: &str) -> SseEvent {
        ev(None, data)
    }

    /// Feeds `input` in pieces of the given sizes (cycled) and returns every output.
    fn split_in_pieces(input: &[u8], sizes: &[usize]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut splitter = EventSplitter::new(usize::MAX);
        let mut outputs = Vec::new();
        let mut rest = input;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let size = (*sizes.next().unwrap()).clamp(1, rest.len());
            let (piece, tail) = rest.split_at(size);
            outputs.push(splitter.push(piece).unwrap());
            rest = tail;
        }
        (outputs, splitter.take_rest())
    }

    /// Reference for where the last event ends, written the obvious way over the whole
    /// input so it can check the incremental scanner.
    fn last_blank_line_end(input: &[u8]) -> usize {
        let (mut at, mut line_start, mut last) = (0, 0, 0);
        while at < input.len() {
            let end = match input[at] {
                b'\r' if input.get(at + 1) == Some(&b'\n') => at + 2,
                b'\r' | b'\n' => at + 1,
                _ => {
                    at += 1;
                    continue;
                }
            };
            if at == line_start {
                last = end;
            }
            at = end;
            line_start = end;
        }
        last
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

    #[test]
    fn splits_on_lf_boundaries() {
        let mut s = EventSplitter::new(1024);
        assert_eq!(s.push(b"data: a\n\ndata: b\n").unwrap(), b"data: a\n\n");
        assert_eq!(s.push(b"\ndata: c").unwrap(), b"data: b\n\n");
        assert_eq!(s.take_rest(), b"data: c");
        assert_eq!(s.take_rest(), b"");
    }

    #[test]
    fn returns_several_events_from_one_push_concatenated() {
        let mut s = EventSplitter::new(1024);
        let out = s.push(b"data: 1\n\ndata: 2\n\ndata: 3\n\nda").unwrap();
        assert_eq!(out, b"data: 1\n\ndata: 2\n\ndata: 3\n\n");
        assert_eq!(s.take_rest(), b"da");
    }

    #[test]
    fn nothing_complete_returns_empty() {
        let mut s = EventSplitter::new(1024);
        assert!(s.push(b"data: {\"a\":").unwrap().is_empty());
        assert!(s.push(b"1}\n").unwrap().is_empty());
        assert_eq!(s.push(b"\n").unwrap(), b"data: {\"a\":1}\n\n");
    }

    #[test]
    fn crlf_boundary_includes_final_lf() {
        let mut s = EventSplitter::new(1024);
        let out = s.push(b"event: x\r\ndata: a\r\n\r\ndata: b\r\n").unwrap();
        assert_eq!(out, b"event: x\r\ndata: a\r\n\r\n");
        assert_eq!(s.take_rest(), b"data: b\r\n");
    }

    #[test]
    fn crlf_boundary_split_before_last_lf() {
        let mut s = EventSplitter::new(1024);
        assert_eq!(s.push(b"data: a\r\n\r").unwrap(), b"data: a\r\n\r");
        // The LF completes the CRLF that ended the event; it must not open a new line.
        assert_eq!(s.push(b"\n").unwrap(), b"\n");
        assert!(s.push(b"data: b\r\n").unwrap().is_empty());
        assert_eq!(s.push(b"\r\n").unwrap(), b"data: b\r\n\r\n");
    }

    #[test]
    fn lf_after_ordinary_crlf_split_is_not_a_boundary() {
        let mut s = EventSplitter::new(1024);
        assert!(s.push(b"data: a\r").unwrap().is_empty());
        assert!(s.push(b"\n").unwrap().is_empty());
        assert!(s.push(b"data: b\r").unwrap().is_empty());
        assert_eq!(s.push(b"\n\r\n").unwrap(), b"data: a\r\ndata: b\r\n\r\n");
    }

    #[test]
    fn cr_only_and_mixed_terminators() {
        let mut s = EventSplitter::new(1024);
        assert_eq!(s.push(b"data: a\r\rdata: b").unwrap(), b"data: a\r\r");
        assert_eq!(s.push(b"\n\r").unwrap(), b"data: b\n\r");
        assert_eq!(s.push(b"data: c\r\n\n").unwrap(), b"data: c\r\n\n");
        assert_eq!(s.push(b"data: d\n\r\n").unwrap(), b"data: d\n\r\n");
        assert_eq!(s.take_rest(), b"");
    }

    #[test]
    fn comment_only_event_is_passed_through() {
        let mut s = EventSplitter::new(1024);
        assert_eq!(s.push(b": keep-alive\n\n").unwrap(), b": keep-alive\n\n");
    }

    #[test]
    fn limit_applies_to_incomplete_tail_only() {
        let mut s = EventSplitter::new(8);
        // Complete events of any size pass; only what is left over counts.
        let big = b"data: a long event over the limit\n\n12345678";
        assert_eq!(s.push(big).unwrap().len(), big.len() - 8);
        assert_eq!(
            s.push(b"9").unwrap_err(),
            SseError::EventTooLarge { limit: 8 }
        );
        // Once failed, it stays failed rather than framing from the middle of an event.
        assert!(s.push(b"\n\n").is_err());
        assert_eq!(s.take_rest(), b"");
    }

    #[test]
    fn endless_line_fails_fast_without_growing() {
        let mut s = EventSplitter::new(1000);
        let chunk = [b'x'; 300];
        let mut result = Ok(Vec::new());
        for _ in 0..10 {
            result = s.push(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseError::EventTooLarge { limit: 1000 }));
        assert!(s.pending.capacity() <= 2000);
    }

    #[test]
    fn lent_events_and_rest_match_the_copying_calls_and_reuse_one_buffer() {
        let stream = b"data: 1\n\ndata: 2\n\nda";
        let mut s = EventSplitter::new(1024);
        assert_eq!(s.push_ready(stream).unwrap(), b"data: 1\n\ndata: 2\n\n");
        assert_eq!(s.push_ready(b"ta: 3\n").unwrap(), b"");
        assert_eq!(s.push_ready(b"\n").unwrap(), b"data: 3\n\n");
        assert_eq!(s.rest(), b"");
        // The next stream, after a reset, starts clean in the same buffer.
        s.push_ready(b"data: half").unwrap();
        s.reset();
        let (cap, ptr) = (s.pending.capacity(), s.pending.as_ptr());
        assert_eq!(s.push_ready(b"data: a\n\ndata: b").unwrap(), b"data: a\n\n");
        assert_eq!(s.rest(), b"data: b");
        assert_eq!(s.rest(), b"");
        assert_eq!((s.pending.capacity(), s.pending.as_ptr()), (cap, ptr));
    }

    #[test]
    fn event_parser_reused_across_calls_gives_what_parse_events_gives() {
        let mut parser = EventParser::default();
        for bytes in [
            &b"event: a\ndata: 1\ndata: 2\n\n"[..],
            b"data: no name now\n\n",
            b"event: b\n\ndata: x\n\n",
            b"data: cut",
            b"\n\n",
        ] {
            let mut got = Vec::new();
            parser.each(bytes, |event, data| got.push(ev(event, data)));
            assert_eq!(got, parse_events(bytes), "{bytes:?}");
        }
    }

    #[test]
    fn escaped_strings_are_read_like_values() {
        let mut stats = StreamStats::default();
        stats.observe(&data(
            r#"{"type":"message_\u0073tart","message":{"usage":{"input_tokens":3}}}"#,
        ));
        stats.observe(&data(
            r#"{"choices":[{"delta":{"content":"\n"},"finish_reason":"st\u006fp"}]}"#,
        ));
        assert_eq!(stats.usage.input, Some(3));
        assert_eq!(stats.content_events, 1);
        assert_eq!(stats.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn only_the_first_choice_counts_and_usage_names_follow_the_shape() {
        let mut stats = StreamStats::default();
        stats.observe(&data(
            r#"{"choices":[{"delta":{}},{"delta":{"content":"x"}}],"usage":{"input_tokens":9}}"#,
        ));
        stats.observe(&data(
            r#"{"type":"message_delta","usage":{"prompt_tokens":9,"output_tokens":2}}"#,
        ));
        assert_eq!(stats.content_events, 0);
        assert_eq!(
            stats.usage,
            Usage {
                input: None,
                output: Some(2)
            }
        );
    }

    #[test]
    fn error_message_names_the_limit() {
        let text = SseError::EventTooLarge { limit: 4096 }.to_string();
        assert!(text.contains("4096"), "{text}");
    }

    #[test]
    fn byte_by_byte_push_of_a_large_event_is_linear() {
        // Quadratic rescanning would take minutes here.
        let mut s = EventSplitter::new(4 << 20);
        let mut event = b"data: ".to_vec();
        event.extend(std::iter::repeat_n(b'a', 2 << 20));
        event.extend_from_slice(b"\n\n");
        let mut out = Vec::new();
        for byte in &event {
            out.extend(s.push(std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(out, event);
    }

    #[test]
    fn any_chunking_preserves_bytes_and_events() {
        let atoms: [&[u8]; 9] = [
            b"data: x",
            b"data:y",
            b"event: e",
            b": c",
            b"\n",
            b"\r",
            b"\r\n",
            b"z",
            b"\xff",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..rng.below(30) {
                input.extend_from_slice(atoms[rng.below(atoms.len())]);
            }
            let sizes: Vec<usize> = (0..4).map(|_| 1 + rng.below(6)).collect();
            let (outputs, rest) = split_in_pieces(&input, &sizes);

            let mut joined: Vec<u8> = outputs.concat();
            for out in outputs.iter().filter(|o| !o.is_empty()) {
                assert!(matches!(out.last(), Some(b'\n' | b'\r')), "{out:?}");
            }
            // Each released chunk parses on its own into the events the whole stream holds.
            let per_chunk: Vec<SseEvent> = outputs.iter().flat_map(|o| parse_events(o)).collect();
            assert_eq!(per_chunk, parse_events(&joined), "input {input:?}");
            joined.extend_from_slice(&rest);
            assert_eq!(joined, input);
            // Chunking never moves the last cut, and that cut is the last blank line.
            let (whole, whole_rest) = split_in_pieces(&input, &[usize::MAX]);
            assert_eq!(whole_rest, rest);
            assert_eq!(whole.concat().len(), last_blank_line_end(&input));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = XorShift(42);
        for _ in 0..500 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut s = EventSplitter::new(rng.below(64));
            let mut stats = StreamStats::default();
            for piece in bytes.chunks(1 + rng.below(16)) {
                match s.push(piece) {
                    Ok(out) => parse_events(&out).iter().for_each(|e| stats.observe(e)),
                    Err(_) => break,
                }
            }
            parse_events(&s.take_rest())
                .iter()
                .for_each(|e| stats.observe(e));
            let _ = stats.output_tokens();
        }
    }

    #[test]
    fn parses_data_event_and_comments() {
        let events = parse_events(
            b": comment\nevent: message_start\nid: 7\nretry: 10\ndata: {\"a\":1}\n\ndata: x\n\n",
        );
        assert_eq!(
            events,
            vec![ev(Some("message_start"), "{\"a\":1}"), data("x")]
        );
    }

    #[test]
    fn joins_multiple_data_lines_and_strips_one_space() {
        let events = parse_events(b"data:  two spaces\ndata:none\ndata\ndata: \n\n");
        assert_eq!(events, vec![data(" two spaces\nnone\n\n")]);
    }

    #[test]
    fn skips_events_without_data_and_resets_event_name() {
        let events = parse_events(b"event: ping\n\n: hi\n\ndata: after\n\n\n\n");
        assert_eq!(events, vec![data("after")]);
    }

    #[test]
    fn empty_data_line_is_an_event_with_empty_data() {
        assert_eq!(parse_events(b"data:\n\n"), vec![data("")]);
        assert_eq!(parse_events(b"event:\ndata: a\n\n"), vec![data("a")]);
    }

    #[test]
    fn parses_crlf_cr_and_bom() {
        let events = parse_events(b"\xef\xbb\xbfdata: a\r\n\r\ndata: b\r\rdata: c\r\n\n");
        assert_eq!(events, vec![data("a"), data("b"), data("c")]);
    }

    #[test]
    fn field_names_are_exact() {
        let events = parse_events(b"Data: no\ndata : no\ndatum: no\ndata: yes\n\n");
        assert_eq!(events, vec![data("yes")]);
    }

    #[test]
    fn unterminated_trailing_event_is_kept() {
        assert_eq!(parse_events(b"data: [DONE]"), vec![data("[DONE]")]);
        assert_eq!(parse_events(b"data: a\n"), vec![data("a")]);
        assert!(parse_events(b"").is_empty());
        assert!(parse_events(b"\n\r\n").is_empty());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(parse_events(b"data: \xffok\n\n"), vec![data("\u{fffd}ok")]);
    }

    fn observe_all(stream: &[u8]) -> StreamStats {
        let mut stats = StreamStats::default();
        for event in parse_events(stream) {
            stats.observe(&event);
        }
        stats
    }

    #[test]
    fn openai_stream_with_usage() {
        let stream = br#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}

data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}

data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}

data: [DONE]

"#;
        let stats = observe_all(stream);
        assert_eq!(
            stats.usage,
            Usage {
                input: Some(11),
                output: Some(3)
            }
        );
        assert_eq!(stats.content_events, 2);
        assert!(stats.done);
        assert_eq!(stats.finish_reason.as_deref(), Some("stop"));
        assert_eq!(stats.output_tokens(), 3);
    }

    #[test]
    fn openai_stream_without_usage_estimates_from_deltas() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"reasoning\":\"hm\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"a\",\"reasoning_content\":\"b\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":null}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"\"}}]}\n\n";
        let stats = observe_all(stream);
        assert_eq!(stats.usage, Usage::default());
        assert_eq!(stats.content_events, 3);
        assert_eq!(stats.output_tokens(), 3);
        assert!(!stats.done);
        assert_eq!(stats.finish_reason, None);
    }

    #[test]
    fn openai_usage_keys_update_independently() {
        let mut stats = StreamStats::default();
        stats.observe(&data(r#"{"usage":{"prompt_tokens":5}}"#));
        stats.observe(&data(
            r#"{"usage":{"completion_tokens":7,"prompt_tokens":-1}}"#,
        ));
        stats.observe(&data(
            r#"{"usage":{"prompt_tokens":1.5,"completion_tokens":"9"}}"#,
        ));
        assert_eq!(
            stats.usage,
            Usage {
                input: Some(5),
                output: Some(7)
            }
        );
    }

    #[test]
    fn anthropic_stream() {
        let stream = br#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}

event: message_stop
data: {"type":"message_stop"}

"#;
        let stats = observe_all(stream);
        assert_eq!(
            stats.usage,
            Usage {
                input: Some(25),
                output: Some(15)
            }
        );
        assert_eq!(stats.content_events, 2);
        assert!(stats.done);
        assert_eq!(stats.finish_reason.as_deref(), Some("end_turn"));
        assert_eq!(stats.output_tokens(), 15);
    }

    #[test]
    fn anthropic_message_delta_input_replaces_start() {
        let mut stats = StreamStats::default();
        stats.observe(&data(
            r#"{"type":"message_start","message":{"usage":{"input_tokens":0,"output_tokens":0}}}"#,
        ));
        stats.observe(&data(
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":4,"input_tokens":12}}"#,
        ));
        assert_eq!(
            stats.usage,
            Usage {
                input: Some(12),
                output: Some(4)
            }
        );
        assert_eq!(stats.finish_reason.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn anthropic_type_falls_back_to_event_name() {
        let mut stats = StreamStats::default();
        stats.observe(&ev(Some("content_block_delta"), r#"{"index":0}"#));
        stats.observe(&ev(Some("message_stop"), "{}"));
        assert_eq!(stats.content_events, 1);
        assert!(stats.done);
    }

    #[test]
    fn ignores_non_json_and_odd_shapes() {
        let mut stats = StreamStats::default();
        for odd in [
            "",
            "not json",
            "[1,2]",
            "42",
            "null",
            r#"{"choices":"x"}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":[null]}"#,
            r#"{"choices":[{"delta":"text"}]}"#,
            r#"{"choices":[{"delta":{"content":5},"finish_reason":7}]}"#,
            r#"{"choices":[[{"delta":{"content":"x"}}]]}"#,
            r#"{"choices":{"delta":{"content":"x"}}}"#,
            r#"{"choices":[1,{"delta":{"content":"x"}}]}"#,
            r#"{"choices":true}"#,
            r#"{"choices":null}"#,
            r#"{"usage":[1]}"#,
            r#"{"type":"message_start"}"#,
            r#"{"type":"message_start","message":{"usage":null}}"#,
            r#"{"type":"message_delta","delta":null,"usage":"x"}"#,
            r#"{"type":7}"#,
            "[DONE",
        ] {
            stats.observe(&data(odd));
        }
        assert_eq!(stats.usage, Usage::default());
        assert_eq!(stats.content_events, 0);
        assert!(!stats.done);
        assert_eq!(stats.finish_reason, None);
        stats.observe(&data(" [DONE] "));
        assert!(stats.done);
    }

    #[test]
    fn usage_counts_beside_choices_of_any_shape() {
        let mut stats = StreamStats::default();
        for choices in [
            r#""x""#,
            "[]",
            "[null]",
            r#"[[{"delta":{}}]]"#,
            r#"{"a":[1]}"#,
            "-1.5",
        ] {
            stats.observe(&data(&format!(
                r#"{{"choices":{choices},"usage":{{"completion_tokens":4}}}}"#
            )));
            assert_eq!(stats.usage.output, Some(4), "{choices}");
            stats.usage.output = None;
        }
    }

    #[test]
    fn deeply_nested_json_does_not_overflow() {
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let mut stats = StreamStats::default();
        stats.observe(&data(&nested));
        let object = format!("{{\"choices\":{}", "[".repeat(50_000));
        stats.observe(&data(&object));
        assert_eq!(stats.content_events, 0);
    }
}
