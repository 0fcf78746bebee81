use super::{data, ev};
use crate::backend::sse::{parse_events, StreamStats, Usage};

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
