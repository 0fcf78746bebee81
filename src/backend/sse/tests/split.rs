use super::XorShift;
use crate::backend::sse::{parse_events, EventSplitter, SseError, SseEvent, StreamStats};

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
