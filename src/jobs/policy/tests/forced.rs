//! The fields the policy forces (model, stream, usage) over what the client sent.

use super::*;

#[test]
fn openai_forced_fields_override_the_client() {
    let body = openai(json!({
        "model": "gpt-4o", "stream": false,
        "stream_options": {"include_usage": false, "continuous_usage_stats": true},
        "messages": user("hi"), "max_tokens": 5,
    }));
    assert_eq!(
        body,
        json!({
            "model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": user("hi"), "max_tokens": 5,
        })
    );
}

#[test]
fn openai_forced_fields_are_added_when_absent() {
    let body = openai(json!({"messages": user("hi")}));
    assert_eq!(
        body,
        json!({
            "model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": user("hi"), "max_tokens": N,
        })
    );
}

#[test]
fn anthropic_forced_fields_and_no_stream_options() {
    let (body, dropped) = shape_with(
        Dialect::Anthropic,
        &json!({
            "model": "claude", "stream": false, "stream_options": {"include_usage": false},
            "messages": user("hi"), "max_tokens": 7,
        })
        .to_string(),
        &policy(),
    )
    .unwrap();
    assert_eq!(
        body,
        json!({"model": "m", "stream": true, "messages": user("hi"), "max_tokens": 7})
    );
    assert_eq!(dropped, ["stream_options"]);
}

#[test]
fn model_id_is_written_as_a_json_string() {
    let raw = json!({"messages": []}).to_string();
    let shaped = apply(Dialect::OpenAi, &raw, "a\"b\\c\nd/é", &policy()).unwrap();
    let body: Value = serde_json::from_slice(&shaped.body).unwrap();
    assert_eq!(body["model"], "a\"b\\c\nd/é");
}
