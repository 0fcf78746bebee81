use crate::backend::anthropic::StreamTranslator;
use crate::backend::sse::{parse_events, EventSplitter, SseEvent, StreamStats, Usage};
use serde_json::{json, Value};

/// Checks the order clients rely on and that each event's `type` matches its name.
fn assert_well_formed(events: &[SseEvent]) {
    let names: Vec<&str> = events
        .iter()
        .map(|e| e.event.as_deref().expect("every event is named"))
        .collect();
    for event in events {
        let payload: Value = serde_json::from_str(&event.data).expect("data is JSON");
        assert_eq!(payload["type"].as_str(), event.event.as_deref());
    }
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.get(1), Some(&"content_block_start"), "{names:?}");
    let n = names.len();
    assert!(n >= 5, "{names:?}");
    assert_eq!(
        names[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(
        names[2..n - 3]
            .iter()
            .all(|name| *name == "content_block_delta"),
        "{names:?}"
    );
}

/// Feeds an OpenAI SSE body through the splitter and translator, as the relay does,
/// and returns the Anthropic bytes.
fn run_stream(openai: &[u8], piece: usize) -> Vec<u8> {
    let mut splitter = EventSplitter::new(1 << 20);
    let mut translator = StreamTranslator::new("llama-3.2-3b", "msg_test1");
    let mut out = Vec::new();
    for chunk in openai.chunks(piece) {
        let complete = splitter.push(chunk).expect("frames");
        for event in parse_events(&complete) {
            out.extend(translator.on_openai_data(&event.data));
        }
    }
    for event in parse_events(&splitter.take_rest()) {
        out.extend(translator.on_openai_data(&event.data));
    }
    out.extend(translator.finish());
    out
}

const OPENAI_STREAM: &[u8] = br#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" Hello"},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" from"},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" tiny\n\"model\""},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}

data: [DONE]

"#;

#[test]
fn translated_stream_is_well_formed_and_carries_usage() {
    for piece in [1, 7, OPENAI_STREAM.len()] {
        let anthropic = run_stream(OPENAI_STREAM, piece);
        let events = parse_events(&anthropic);
        assert_well_formed(&events);

        let mut stats = StreamStats::default();
        for event in &events {
            stats.observe(event);
        }
        assert_eq!(
            stats.usage,
            Usage {
                input: Some(11),
                output: Some(4)
            }
        );
        assert_eq!(stats.content_events, 3);
        assert!(stats.done);
        assert_eq!(stats.finish_reason.as_deref(), Some("end_turn"));

        let text: String = events
            .iter()
            .filter(|e| e.event.as_deref() == Some("content_block_delta"))
            .filter_map(|e| {
                let payload: Value = serde_json::from_str(&e.data).ok()?;
                payload["delta"]["text"].as_str().map(str::to_owned)
            })
            .collect();
        assert_eq!(text, " Hello from tiny\n\"model\"");
    }
}

#[test]
fn exact_event_shapes() {
    let events = parse_events(&run_stream(OPENAI_STREAM, OPENAI_STREAM.len()));
    let payloads: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).expect("json"))
        .collect();
    assert_eq!(
        payloads[0],
        json!({"type": "message_start", "message": {
            "id": "msg_test1", "type": "message", "role": "assistant", "content": [],
            "model": "llama-3.2-3b", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }})
    );
    assert_eq!(
        payloads[1],
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        payloads[2],
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " Hello"}})
    );
    assert_eq!(
        payloads[5],
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        payloads[6],
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 4, "input_tokens": 11}})
    );
    assert_eq!(payloads[7], json!({"type": "message_stop"}));
    assert_eq!(payloads.len(), 8);
}

#[test]
fn wire_format_is_event_then_single_data_line() {
    let mut t = StreamTranslator::new("m", "msg_1");
    let bytes = t.on_openai_data(r#"{"choices":[{"delta":{"content":"a\r\nb"}}]}"#);
    let text = String::from_utf8(bytes).expect("utf-8");
    let blocks: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(blocks.len(), 3, "{text}");
    for block in blocks {
        let lines: Vec<&str> = block.split('\n').collect();
        assert_eq!(lines.len(), 2, "{block}");
        assert!(lines[0].starts_with("event: "));
        assert!(lines[1].starts_with("data: {"));
    }
}

#[test]
fn done_finishes_and_finish_is_idempotent() {
    let mut t = StreamTranslator::new("m", "msg_1");
    t.on_openai_data(r#"{"choices":[{"delta":{"content":"x"}}]}"#);
    let at_done = t.on_openai_data("[DONE]");
    assert!(!at_done.is_empty());
    assert!(t.finish().is_empty());
    assert!(t.finish().is_empty());
    assert!(t
        .on_openai_data(r#"{"choices":[{"delta":{"content":"late"}}]}"#)
        .is_empty());
}

#[test]
fn empty_stream_still_has_an_empty_text_block() {
    let mut t = StreamTranslator::new("m", "msg_1");
    let events = parse_events(&t.finish());
    assert_well_formed(&events);
    assert_eq!(events.len(), 5);
    let mut stats = StreamStats::default();
    events.iter().for_each(|e| stats.observe(e));
    assert_eq!(stats.output_tokens(), 0);
    assert_eq!(stats.usage.input, Some(0));
    assert!(stats.done);
}

#[test]
fn first_call_emits_message_start_even_without_text() {
    let mut t = StreamTranslator::new("m", "msg_1");
    let events = parse_events(
        &t.on_openai_data(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#),
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.as_deref(), Some("message_start"));
    assert!(t.on_openai_data("{}").is_empty());
    assert!(t.on_openai_data("not json").is_empty());
}

#[test]
fn finish_reasons_map_to_stop_reasons() {
    let cases = [
        (r#""stop""#, None, "end_turn", Value::Null),
        (r#""length""#, None, "max_tokens", Value::Null),
        (r#""content_filter""#, None, "refusal", Value::Null),
        (r#""tool_calls""#, None, "end_turn", Value::Null),
        ("null", None, "end_turn", Value::Null),
        (r#""stop""#, Some(r#""END""#), "stop_sequence", json!("END")),
        // vLLM gives a token id when a stop token, not a string, ended it.
        (r#""stop""#, Some("128009"), "end_turn", Value::Null),
    ];
    for (finish, stop_reason, expected, sequence) in cases {
        let mut t = StreamTranslator::new("m", "msg_1");
        let chunk = format!(
            r#"{{"choices":[{{"delta":{{}},"finish_reason":{finish},"stop_reason":{}}}]}}"#,
            stop_reason.unwrap_or("null")
        );
        t.on_openai_data(&chunk);
        let events = parse_events(&t.finish());
        let delta = events
            .iter()
            .find(|e| e.event.as_deref() == Some("message_delta"))
            .expect("message_delta");
        let payload: Value = serde_json::from_str(&delta.data).expect("json");
        assert_eq!(payload["delta"]["stop_reason"], expected, "{chunk}");
        assert_eq!(payload["delta"]["stop_sequence"], sequence, "{chunk}");
    }
}

#[test]
fn output_tokens_estimated_without_usage() {
    let mut t = StreamTranslator::new("m", "msg_1");
    let mut bytes = Vec::new();
    for word in ["a", "b", "c"] {
        bytes.extend(t.on_openai_data(&format!(
            r#"{{"choices":[{{"delta":{{"content":"{word}"}}}}]}}"#
        )));
    }
    bytes.extend(t.on_openai_data(r#"{"choices":[{"delta":{"reasoning_content":"hidden"}}]}"#));
    bytes.extend(t.finish());
    let events = parse_events(&bytes);
    assert_well_formed(&events);
    let mut stats = StreamStats::default();
    events.iter().for_each(|e| stats.observe(e));
    assert_eq!(stats.usage.output, Some(3));
    assert_eq!(stats.usage.input, Some(0));
    assert!(!String::from_utf8_lossy(&bytes).contains("hidden"));
}

#[test]
fn usage_known_before_start_goes_into_message_start() {
    let mut t = StreamTranslator::new("m", "msg_1");
    let events = parse_events(&t.on_openai_data(
        r#"{"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#,
    ));
    let start: Value = serde_json::from_str(&events[0].data).expect("json");
    assert_eq!(start["message"]["usage"]["input_tokens"], 9);
    assert_eq!(start["message"]["usage"]["output_tokens"], 0);
}

#[test]
fn backend_error_becomes_error_event_and_ends_stream() {
    let mut t = StreamTranslator::new("m", "msg_1");
    t.on_openai_data(r#"{"choices":[{"delta":{"content":"x"}}]}"#);
    let events = parse_events(&t.on_openai_data(
        r#"{"error":{"code":500,"message":"context exceeded","type":"server_error"}}"#,
    ));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.as_deref(), Some("error"));
    let payload: Value = serde_json::from_str(&events[0].data).expect("json");
    assert_eq!(
        payload,
        json!({"type": "error", "error": {"type": "api_error", "message": "context exceeded"}})
    );
    assert!(t.finish().is_empty());

    let mut t = StreamTranslator::new("m", "msg_1");
    let events = parse_events(&t.on_openai_data(r#"{"error":"boom"}"#));
    assert_eq!(events.len(), 1);
    assert!(events[0].data.contains("boom"));
}

#[test]
fn arbitrary_data_never_panics_and_stays_well_formed() {
    let samples = [
        "",
        "[DONE",
        "null",
        "[]",
        r#"{"choices":null}"#,
        r#"{"choices":[1]}"#,
        r#"{"choices":[{"delta":[]}]}"#,
        r#"{"choices":[{"delta":{"content":{}}}]}"#,
        r#"{"usage":{"prompt_tokens":-3,"completion_tokens":1e99}}"#,
        r#"{"choices":[{"finish_reason":5,"stop_reason":[]}]}"#,
        r#"{"error":null}"#,
        "\u{0}\u{feff}",
    ];
    let mut t = StreamTranslator::new("m\"odel", "msg_\n1");
    let mut bytes = Vec::new();
    for sample in samples {
        bytes.extend(t.on_openai_data(sample));
    }
    bytes.extend(t.finish());
    let events = parse_events(&bytes);
    assert_well_formed(&events);
    let start: Value = serde_json::from_str(&events[0].data).expect("json");
    assert_eq!(start["message"]["model"], "m\"odel");
    assert_eq!(start["message"]["id"], "msg_\n1");
}
