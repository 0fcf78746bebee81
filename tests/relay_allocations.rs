//! Issue 12: relaying an event allocates nothing once the job thread's buffers have grown.
//! Checks the pure part of the relay path (SSE splitting, parsing and counting, the
//! `job_chunk` text) with a counting allocator, which src/ cannot hold (it forbids
//! `unsafe`); `make bench` measures the whole agent the same way (benches/alloc_count).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use usepod_edge::backend::sse::{EventParser, EventSplitter, StreamStats};
use usepod_edge::protocol::Outbound;

thread_local! {
    /// This thread's allocations: the test harness's other threads do not count.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call is passed unchanged to the system allocator; counting touches only a
// const-initialized thread-local without destructor, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Events as vLLM, llama.cpp and OpenAI stream them (the bench backend's shape first).
const EVENTS: &[&str] = &[
    r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1763800000,"model":"m","choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}],"t":123}"#,
    r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"é\n"}}],"created":1,"id":"x","model":"m","system_fingerprint":"b1","object":"chat.completion.chunk"}"#,
    r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,"choices":[{"index":0,"delta":{"reasoning_content":"hm"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
];

#[test]
fn relaying_an_event_allocates_nothing_in_steady_state() {
    let mut splitter = EventSplitter::new(1 << 20);
    let mut parser = EventParser::default();
    let mut stats = StreamStats::default();
    let mut frame = Vec::new();
    let mut wire = Vec::new();
    let mut relay = |sse: &[u8], stats: &mut StreamStats| {
        // As the backend delivers it: cut mid-event, so the splitter keeps a tail.
        let (a, b) = sse.split_at(sse.len() / 2);
        for piece in [a, b] {
            let ready = splitter.push_ready(piece).unwrap();
            parser.each(ready, |event, data| stats.observe_data(event, data));
            if !ready.is_empty() {
                Outbound::write_job_chunk(
                    &mut frame,
                    "0b9e4c1e-7c0a-4d8e-9d1b-2f6f2b1a3c4d",
                    ready,
                );
            }
        }
    };
    for e in EVENTS {
        wire.clear();
        wire.extend_from_slice(b"data: ");
        wire.extend_from_slice(e.as_bytes());
        wire.extend_from_slice(b"\n\n");
        // The first time grows the buffers; the second must not allocate.
        relay(&wire, &mut stats);
        let before = allocs();
        relay(&wire, &mut stats);
        assert_eq!(allocs() - before, 0, "allocated relaying {e}");
    }
    assert_eq!(stats.content_events, 2 * EVENTS.len() as u64);
}
