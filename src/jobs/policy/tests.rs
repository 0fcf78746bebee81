use super::*;
use serde_json::{json, Value};

const N: u32 = 1000;

fn policy() -> RequestPolicy {
    RequestPolicy::new(N)
}

/// The shaped body and the dropped fields, or the refusal.
fn shape_with(d: Dialect, raw: &str, p: &RequestPolicy) -> Result<(Value, Vec<String>), Refusal> {
    apply(d, raw, "m", p).map(|s| {
        let body: Value = serde_json::from_slice(&s.body).expect("body is JSON");
        (body, s.dropped)
    })
}

/// The body the backend gets for `request` under the default policy.
fn openai(request: Value) -> Value {
    shape_with(Dialect::OpenAi, &request.to_string(), &policy())
        .unwrap()
        .0
}

fn anthropic(request: Value) -> Value {
    shape_with(Dialect::Anthropic, &request.to_string(), &policy())
        .unwrap()
        .0
}

fn refused(d: Dialect, request: Value) -> String {
    refused_with(d, request, &policy())
}

fn refused_with(d: Dialect, request: Value, p: &RequestPolicy) -> String {
    match shape_with(d, &request.to_string(), p) {
        Ok((body, _)) => panic!("not refused; body {body}"),
        Err(r) => r.reason().to_owned(),
    }
}

fn passes_with(d: Dialect, request: Value, p: &RequestPolicy) {
    if let Err(reason) = shape_with(d, &request.to_string(), p) {
        panic!("refused: {reason}");
    }
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// `request` plus what the policy forces, for exact comparisons.
fn with_forced(d: Dialect, mut request: Value) -> Value {
    let o = request.as_object_mut().unwrap();
    o.insert("model".into(), json!("m"));
    o.insert("stream".into(), json!(true));
    if d == Dialect::OpenAi {
        o.insert("stream_options".into(), json!({"include_usage": true}));
    }
    request
}

// ---- forced fields ------------------------------------------------------------

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

// ---- output length ------------------------------------------------------------

fn max_tokens(d: Dialect, value: Value) -> Value {
    let body = match d {
        Dialect::OpenAi => openai(json!({"messages": [], "max_tokens": value})),
        Dialect::Anthropic => anthropic(json!({"messages": [], "max_tokens": value})),
    };
    body["max_tokens"].clone()
}

#[test]
fn max_tokens_clamp_in_both_dialects() {
    for d in [Dialect::OpenAi, Dialect::Anthropic] {
        assert_eq!(max_tokens(d, json!(10)), json!(10), "{d:?} within");
        assert_eq!(max_tokens(d, json!(N)), json!(N), "{d:?} at N");
        assert_eq!(max_tokens(d, json!(N + 1)), json!(N), "{d:?} over");
        assert_eq!(max_tokens(d, json!(u64::MAX)), json!(N), "{d:?} u64::MAX");
        assert_eq!(max_tokens(d, json!(-1)), json!(N), "{d:?} -1");
        assert_eq!(max_tokens(d, json!(i64::MIN)), json!(N), "{d:?} i64::MIN");
        assert_eq!(max_tokens(d, json!(0)), json!(1), "{d:?} 0");
        assert_eq!(max_tokens(d, json!(null)), json!(N), "{d:?} null is absent");
    }
}

#[test]
fn max_tokens_beyond_u64_and_minus_zero() {
    let raw = r#"{"messages":[],"max_tokens":100000000000000000000000000000}"#;
    let (body, _) = shape_with(Dialect::OpenAi, raw, &policy()).unwrap();
    assert_eq!(body["max_tokens"], json!(N));
    let raw = r#"{"messages":[],"max_tokens":-0}"#;
    let (body, _) = shape_with(Dialect::Anthropic, raw, &policy()).unwrap();
    assert_eq!(body["max_tokens"], json!(1));
}

#[test]
fn max_tokens_that_is_not_an_integer_is_refused() {
    for d in [Dialect::OpenAi, Dialect::Anthropic] {
        let reason = refused(d, json!({"messages": [], "max_tokens": 5.0}));
        assert_eq!(reason, "`max_tokens` must be an integer (got 5.0)");
        let reason = refused(d, json!({"messages": [], "max_tokens": "100"}));
        assert_eq!(reason, "`max_tokens` must be an integer (got \"100\")");
        let reason = refused(d, json!({"messages": [], "max_tokens": [1]}));
        assert_eq!(reason, "`max_tokens` must be an integer (got an array)");
    }
    let raw = r#"{"messages":[],"max_tokens":1e3}"#;
    let reason = shape_with(Dialect::OpenAi, raw, &policy()).unwrap_err();
    assert_eq!(reason, "`max_tokens` must be an integer (got 1e3)");
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "max_completion_tokens": true}),
    );
    assert_eq!(
        reason,
        "`max_completion_tokens` must be an integer (got true)"
    );
}

#[test]
fn openai_max_completion_tokens() {
    // Alone: clamped, and no max_tokens added.
    let body = openai(json!({"messages": [], "max_completion_tokens": 99999}));
    assert_eq!(
        body,
        with_forced(
            Dialect::OpenAi,
            json!({"messages": [], "max_completion_tokens": N})
        )
    );
    // Both: each clamped on its own.
    let body = openai(json!({"messages": [], "max_tokens": -1, "max_completion_tokens": 0}));
    assert_eq!(
        body,
        with_forced(
            Dialect::OpenAi,
            json!({"messages": [], "max_tokens": N, "max_completion_tokens": 1})
        )
    );
    // A null one is absent: the other stands alone.
    let body = openai(json!({"messages": [], "max_tokens": null, "max_completion_tokens": 3}));
    assert_eq!(
        body,
        with_forced(
            Dialect::OpenAi,
            json!({"messages": [], "max_completion_tokens": 3})
        )
    );
}

#[test]
fn anthropic_max_tokens_added_when_absent() {
    let body = anthropic(json!({"messages": user("hi")}));
    assert_eq!(
        body,
        with_forced(
            Dialect::Anthropic,
            json!({"messages": user("hi"), "max_tokens": N})
        )
    );
}

#[test]
fn zero_max_output_tokens_in_the_policy_counts_as_one() {
    let mut p = policy();
    p.max_output_tokens = 0;
    let (body, _) = shape_with(Dialect::OpenAi, r#"{"messages":[]}"#, &p).unwrap();
    assert_eq!(body["max_tokens"], json!(1));
    assert_eq!(RequestPolicy::new(0).max_output_tokens, 1);
}

// ---- n, best_of, top_logprobs, logit_bias --------------------------------------

#[test]
fn n_and_best_of_must_be_one() {
    let body = openai(json!({"messages": [], "n": 1, "best_of": 1}));
    assert_eq!(
        body,
        with_forced(
            Dialect::OpenAi,
            json!({"messages": [], "n": 1, "best_of": 1, "max_tokens": N})
        )
    );
    let body = openai(json!({"messages": [], "n": null}));
    assert_eq!(
        body,
        with_forced(Dialect::OpenAi, json!({"messages": [], "max_tokens": N}))
    );
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "n": 4}));
    assert_eq!(reason, "`n` must be 1 (got 4)");
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "best_of": 2}));
    assert_eq!(reason, "`best_of` must be 1 (got 2)");
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "n": 0}));
    assert_eq!(reason, "`n` must be 1 (got 0)");
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "n": "1"}));
    assert_eq!(reason, "`n` must be 1 (got \"1\")");
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "n": 1.0}));
    assert_eq!(reason, "`n` must be 1 (got 1.0)");
}

#[test]
fn n_is_checked_even_when_an_operator_admits_it_for_anthropic() {
    let mut p = policy();
    p.allow_fields = vec!["n".into()];
    let reason = refused_with(Dialect::Anthropic, json!({"messages": [], "n": 3}), &p);
    assert_eq!(reason, "`n` must be 1 (got 3)");
}

#[test]
fn top_logprobs_is_capped() {
    let body = openai(json!({"messages": [], "logprobs": true, "top_logprobs": 50}));
    assert_eq!(
        body,
        with_forced(
            Dialect::OpenAi,
            json!({"messages": [], "logprobs": true, "top_logprobs": 20, "max_tokens": N})
        )
    );
    assert_eq!(
        openai(json!({"messages": [], "top_logprobs": 5}))["top_logprobs"],
        json!(5)
    );
    let raw = r#"{"messages":[],"top_logprobs":123456789012345678901234567890}"#;
    let (body, _) = shape_with(Dialect::OpenAi, raw, &policy()).unwrap();
    assert_eq!(body["top_logprobs"], json!(20));
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "top_logprobs": -1}));
    assert_eq!(
        reason,
        "`top_logprobs` must be a non-negative integer (got -1)"
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "top_logprobs": 2.5}),
    );
    assert_eq!(
        reason,
        "`top_logprobs` must be a non-negative integer (got 2.5)"
    );
}

#[test]
fn logit_bias_has_at_most_300_entries() {
    let map = |n: usize| -> Value {
        Value::Object((0..n).map(|i| (i.to_string(), json!(-100))).collect())
    };
    let body = openai(json!({"messages": [], "logit_bias": map(300)}));
    assert_eq!(body["logit_bias"], map(300));
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "logit_bias": map(301)}),
    );
    assert_eq!(reason, "`logit_bias` has more than 300 entries");
    let pairs = |n: usize| -> Value { (0..n).map(|i| json!([i, 1.5])).collect() };
    assert_eq!(
        openai(json!({"messages": [], "logit_bias": pairs(300)}))["logit_bias"],
        pairs(300)
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "logit_bias": pairs(301)}),
    );
    assert_eq!(reason, "`logit_bias` has more than 300 entries");
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "logit_bias": "x"}));
    assert_eq!(reason, "`logit_bias` must be an object (got a string)");
}

// ---- messages -----------------------------------------------------------------

#[test]
fn messages_must_be_an_array() {
    for d in [Dialect::OpenAi, Dialect::Anthropic] {
        assert_eq!(refused(d, json!({"model": "x"})), "`messages` is missing");
        assert_eq!(
            refused(d, json!({"messages": {"role": "user"}})),
            "`messages` must be an array (got an object)"
        );
        assert_eq!(
            refused(d, json!({"messages": null})),
            "`messages` must be an array (got null)"
        );
    }
}

#[test]
fn message_count_limit() {
    let mut p = policy();
    p.max_messages = 3;
    let three: Value = (0..3)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    let four: Value = (0..4)
        .map(|_| json!({"role": "user", "content": "x"}))
        .collect();
    for d in [Dialect::OpenAi, Dialect::Anthropic] {
        passes_with(d, json!({"messages": three}), &p);
        let reason = refused_with(d, json!({"messages": four}), &p);
        assert_eq!(reason, "`messages` has more than 3 entries");
    }
}

#[test]
fn a_million_messages_are_refused_at_the_limit() {
    // The seq visitor stops at entry 1025: nothing is collected, nothing after that
    // entry is read into a message.
    let mut raw = String::with_capacity(3_000_100);
    raw.push_str(r#"{"messages":["#);
    for i in 0..1_000_001 {
        if i > 0 {
            raw.push(',');
        }
        raw.push_str("{}");
    }
    raw.push_str("]}");
    for d in [Dialect::OpenAi, Dialect::Anthropic] {
        let reason = shape_with(d, &raw, &policy()).unwrap_err();
        assert_eq!(reason, "`messages` has more than 1024 entries");
    }
}

#[test]
fn prompt_bytes_limit() {
    let mut p = policy();
    let messages = user(&"x".repeat(100));
    let size = messages.to_string().len();
    p.max_prompt_bytes = size;
    passes_with(Dialect::OpenAi, json!({"messages": messages}), &p);
    p.max_prompt_bytes = size - 1;
    let reason = refused_with(Dialect::OpenAi, json!({"messages": messages}), &p);
    assert_eq!(
        reason,
        format!(
            "`messages` is {size} bytes, over the {}-byte limit",
            size - 1
        )
    );
    // Anthropic counts the system prompt too.
    let system = json!("be brief");
    p.max_prompt_bytes = size + system.to_string().len();
    passes_with(
        Dialect::Anthropic,
        json!({"system": system, "messages": messages}),
        &p,
    );
    p.max_prompt_bytes -= 1;
    let reason = refused_with(
        Dialect::Anthropic,
        json!({"system": system, "messages": messages}),
        &p,
    );
    assert_eq!(
        reason,
        format!(
            "`messages` and `system` together are {} bytes, over the {}-byte limit",
            p.max_prompt_bytes + 1,
            p.max_prompt_bytes
        )
    );
}

// ---- remote media, OpenAI -----------------------------------------------------

fn with_part(part: Value) -> Value {
    json!({"messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, part]},
    ]})
}

#[test]
fn openai_remote_media_shapes_are_refused() {
    let cases = [
        (
            json!({"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}),
            "image_url",
        ),
        (
            json!({"type": "image_url", "image_url": {"url": "http://e.com/a.png", "detail": "low"}}),
            "image_url",
        ),
        (
            json!({"type": "image_url", "image_url": "https://e.com/a.png"}),
            "image_url",
        ),
        (
            json!({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}),
            "image_url",
        ),
        (
            json!({"type": "image_url", "image_url": {"url": "/etc/passwd"}}),
            "image_url",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"url": "https://e.com/a.wav"}}),
            "input_audio",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"data": "https://e.com/a.wav", "format": "wav"}}),
            "input_audio",
        ),
        (
            json!({"type": "input_audio", "input_audio": {"data": " HTTP://e.com/a.wav"}}),
            "input_audio",
        ),
        (
            json!({"type": "file", "file": {"url": "https://e.com/a.pdf"}}),
            "file",
        ),
        (
            json!({"type": "file", "file": {"file_url": "https://e.com/a.pdf"}}),
            "file",
        ),
        (
            json!({"type": "file", "file": {"file_data": "https://e.com/a.pdf", "filename": "a.pdf"}}),
            "file",
        ),
        (
            json!({"type": "video_url", "video_url": {"url": "https://e.com/v.mp4"}}),
            "video_url",
        ),
        (
            json!({"type": "audio_url", "audio_url": {"url": "s3://bucket/a.wav"}}),
            "audio_url",
        ),
        (
            json!({"type": "thing_url", "thing_url": "ftp://e.com/x"}),
            "thing_url",
        ),
        (
            json!({"type": "image", "url": "https://e.com/a.png"}),
            "url",
        ),
        (
            json!({"type": "image", "image": {"url": "https://e.com/a.png"}}),
            "image",
        ),
    ];
    for (part, key) in cases {
        let reason = refused(Dialect::OpenAi, with_part(part.clone()));
        assert_eq!(
            reason,
            format!(
                "remote media URL in messages[1].content[1] ({key}); only data: URLs are accepted"
            ),
            "{part}"
        );
    }
}

#[test]
fn openai_escaped_url_is_read_decoded() {
    let raw = r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"u\u0072l":"h\u0074tps:\/\/e.com"}}]}]}"#;
    let reason = shape_with(Dialect::OpenAi, raw, &policy()).unwrap_err();
    assert_eq!(
        reason,
        "remote media URL in messages[0].content[0] (image_url); only data: URLs are accepted"
    );
}

#[test]
fn openai_inline_media_and_urls_in_text_pass() {
    let parts = json!([
        {"type": "text", "text": "what is at https://e.com/a.png ?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": "DATA:image/png;base64,iVBORw0KGgo="},
        {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}},
        {"type": "refusal", "refusal": "no"},
    ]);
    let request = json!({"messages": [{"role": "user", "content": parts}], "max_tokens": 1});
    assert_eq!(
        openai(request.clone()),
        with_forced(Dialect::OpenAi, request)
    );
}

#[test]
fn openai_remote_media_allowed_by_the_operator() {
    let mut p = policy();
    p.allow_remote_media = true;
    let request =
        with_part(json!({"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}));
    passes_with(Dialect::OpenAi, request, &p);
}

#[test]
fn openai_content_as_a_single_object_is_checked() {
    let request = json!({"messages": [{"role": "user", "content": {"type": "image_url", "image_url": {"url": "https://e.com"}}}]});
    assert_eq!(
        refused(Dialect::OpenAi, request),
        "remote media URL in messages[0].content (image_url); only data: URLs are accepted"
    );
}

#[test]
fn openai_duplicate_content_keys_are_all_checked() {
    let raw = r#"{"messages":[{"role":"user","content":"hi","content":[{"type":"image_url","image_url":"https://e.com"}]}]}"#;
    assert!(shape_with(Dialect::OpenAi, raw, &policy())
        .unwrap_err()
        .reason()
        .starts_with("remote media URL in messages[0].content[0]"));
}

// ---- remote media, Anthropic --------------------------------------------------

fn with_block(block: Value) -> Value {
    json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, block]},
    ]})
}

const URL_SOURCE: &str = "only base64, text or content sources are accepted";

#[test]
fn anthropic_url_sources_are_refused() {
    let cases = [
        json!({"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}}),
        json!({"type": "image", "source": {"type": "URL"}}),
        json!({"type": "document", "source": {"type": "url", "url": "https://e.com/a.pdf"}}),
        json!({"type": "image", "source": {"type": "base64", "url": "https://e.com/a.png"}}),
        json!({"type": "image", "source": {"type": "file", "file_url": "https://e.com/a.png"}}),
    ];
    for block in cases {
        let reason = refused(Dialect::Anthropic, with_block(block.clone()));
        assert_eq!(
            reason,
            format!("remote media URL in messages[2].content[1] (url source); {URL_SOURCE}"),
            "{block}"
        );
    }
}

#[test]
fn anthropic_nested_url_sources_are_refused() {
    let tool_result = json!({"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "text", "text": "here"},
        {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
    ]});
    assert_eq!(
        refused(Dialect::Anthropic, with_block(tool_result)),
        format!("remote media URL in messages[2].content[1].content[1] (url source); {URL_SOURCE}")
    );
    let document = json!({"type": "document", "source": {"type": "content", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
    ]}});
    assert_eq!(
        refused(Dialect::Anthropic, with_block(document)),
        format!("remote media URL in messages[2].content[1].source.content[0] (url source); {URL_SOURCE}")
    );
    let system = json!({"system": [
        {"type": "text", "text": "x"},
        {"type": "image", "source": {"type": "url", "url": "https://e.com"}},
    ], "messages": []});
    assert_eq!(
        refused(Dialect::Anthropic, system),
        format!("remote media URL in system[1] (url source); {URL_SOURCE}")
    );
}

#[test]
fn anthropic_openai_style_url_blocks_are_refused() {
    let block = json!({"type": "image_url", "image_url": {"url": "https://e.com/a.png"}});
    assert_eq!(
        refused(Dialect::Anthropic, with_block(block)),
        "remote media URL in messages[2].content[1] (image_url); only data: URLs are accepted"
    );
}

#[test]
fn anthropic_inline_sources_and_tool_arguments_pass() {
    let blocks = json!([
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "https://e.com is our site"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "x"}]}},
        {"type": "document", "source": {"type": "file", "file_id": "file_1"}, "citations": {"enabled": true}},
        {"type": "search_result", "source": "https://e.com/page", "title": "t", "content": [{"type": "text", "text": "x"}]},
        {"type": "text", "text": "see https://e.com", "cache_control": {"type": "ephemeral"}},
    ]);
    let tool_use = json!([
        {"type": "tool_use", "id": "t1", "name": "fetch", "input": {"url": "https://e.com"}},
    ]);
    let tool_result = json!([{"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
    ]}]);
    let request = json!({"messages": [
        {"role": "user", "content": blocks},
        {"role": "assistant", "content": tool_use},
        {"role": "user", "content": tool_result},
    ], "max_tokens": 9});
    assert_eq!(
        anthropic(request.clone()),
        with_forced(Dialect::Anthropic, request)
    );
}

#[test]
fn anthropic_tool_use_exemption_needs_every_type_to_agree() {
    for raw in [
        r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":"https://e.com","type":"tool_use"}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"tool_use","image_url":"https://e.com","type":"image_url"}]}]}"#,
    ] {
        assert_eq!(
            shape_with(Dialect::Anthropic, raw, &policy()).unwrap_err(),
            "remote media URL in messages[0].content[0] (image_url); only data: URLs are accepted",
            "{raw}"
        );
    }
}

#[test]
fn anthropic_remote_media_allowed_by_the_operator() {
    let mut p = policy();
    p.allow_remote_media = true;
    let block = json!({"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}});
    passes_with(Dialect::Anthropic, with_block(block.clone()), &p);
    passes_with(
        Dialect::Anthropic,
        json!({"system": [block], "messages": []}),
        &p,
    );
}

#[test]
fn anthropic_block_nesting_is_bounded() {
    let mut block = json!({"type": "text", "text": "x"});
    for _ in 0..5 {
        block = json!({"type": "tool_result", "content": [block]});
    }
    let reason = refused(
        Dialect::Anthropic,
        json!({"messages": [{"role": "user", "content": [block]}]}),
    );
    assert_eq!(
        reason,
        "messages[0].content[0].content[0].content[0].content[0].content[0] nests content blocks more than 4 levels deep"
    );
}

// ---- tools --------------------------------------------------------------------

fn function_tool(name: &str, parameters: Value) -> Value {
    json!({"type": "function", "function": {"name": name, "parameters": parameters}})
}

/// A schema of `depth` nested objects.
fn deep_schema(depth: usize) -> Value {
    let mut s = json!({"type": "string"});
    for _ in 1..depth {
        s = json!({"type": "object", "properties": {"a": s}});
    }
    s
}

#[test]
fn deep_schema_has_the_depth_it_says() {
    assert_eq!(nesting_depth(deep_schema(1).to_string().as_bytes()), 1);
    // Each level adds {"properties": {...}}: two brackets.
    assert_eq!(nesting_depth(deep_schema(3).to_string().as_bytes()), 5);
}

#[test]
fn openai_tool_count_and_type() {
    let mut p = policy();
    p.max_tools = 2;
    let tool = function_tool("f", json!({"type": "object"}));
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [tool, tool]}),
        &p,
    );
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [tool, tool, tool]}),
        &p,
    );
    assert_eq!(reason, "`tools` has more than 2 entries");

    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [tool, {"type": "web_search"}]}),
    );
    assert_eq!(
        reason,
        "tools[1].type must be \"function\" (got \"web_search\")"
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [{"function": {"name": "f"}}]}),
    );
    assert_eq!(reason, "tools[0] has no \"type\": \"function\"");
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "tools": ["f"]}));
    assert_eq!(reason, "tools[0] must be an object");
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "tools": {}}));
    assert_eq!(reason, "`tools` must be an array (got an object)");
    // A second `type` is checked as well as the first.
    let raw = r#"{"messages":[],"tools":[{"type":"function","type":"code_interpreter"}]}"#;
    assert_eq!(
        shape_with(Dialect::OpenAi, raw, &policy()).unwrap_err(),
        "tools[0].type must be \"function\" (got \"code_interpreter\")"
    );
    // null means no tools.
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": null}),
        &policy(),
    );
}

#[test]
fn openai_tool_schema_bounds() {
    let mut p = policy();
    let big = json!({"type": "object", "description": "x".repeat(70_000)});
    let size = big.to_string().len();
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("a", json!({})), function_tool("b", big.clone())]}),
        &p,
    );
    assert_eq!(
        reason,
        format!("tools[1].function.parameters is {size} bytes, over the 65536-byte limit")
    );
    p.max_schema_bytes = size;
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("b", big)]}),
        &p,
    );

    // deep_schema(17) nests 33 levels.
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("d", deep_schema(17))]}),
    );
    assert_eq!(
        reason,
        "tools[0].function.parameters nests 33 levels deep, over the limit of 32"
    );
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("d", deep_schema(16))]}),
        &policy(),
    );
}

#[test]
fn schema_depth_ignores_brackets_in_strings() {
    let tricky = json!({"description": "[[[[{{{{ \"quoted [ \\\" {", "enum": ["[", "{", "\\"]});
    assert_eq!(nesting_depth(tricky.to_string().as_bytes()), 2);
    let mut p = policy();
    p.max_schema_depth = 2;
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "tools": [function_tool("t", tricky)]}),
        &p,
    );
}

#[test]
fn openai_deprecated_functions_are_bounded() {
    let mut p = policy();
    p.max_schema_depth = 3;
    passes_with(
        Dialect::OpenAi,
        json!({"messages": [], "functions": [{"name": "f", "parameters": deep_schema(2)}], "function_call": "auto"}),
        &p,
    );
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "functions": [{"name": "f", "parameters": deep_schema(3)}]}),
        &p,
    );
    assert_eq!(
        reason,
        "functions[0].parameters nests 5 levels deep, over the limit of 3"
    );
    p.max_tools = 1;
    let f = json!({"name": "f"});
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "functions": [f, f]}),
        &p,
    );
    assert_eq!(reason, "`functions` has more than 1 entries");
}

#[test]
fn response_format_schema_is_bounded() {
    let mut p = policy();
    p.max_schema_bytes = 100;
    let big = json!({"type": "object", "description": "x".repeat(200)});
    let size = big.to_string().len();
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": big}}}),
        &p,
    );
    assert_eq!(
        reason,
        format!("response_format.json_schema.schema is {size} bytes, over the 100-byte limit")
    );
    // llama.cpp's json_object + schema form.
    let reason = refused_with(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": {"type": "json_object", "schema": big}}),
        &p,
    );
    assert_eq!(
        reason,
        format!("response_format.schema is {size} bytes, over the 100-byte limit")
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": {"type": "json_schema", "json_schema": {"schema": deep_schema(20)}}}),
    );
    assert_eq!(
        reason,
        "response_format.json_schema.schema nests 39 levels deep, over the limit of 32"
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": {"type": "structural_tag", "structures": []}}),
    );
    assert_eq!(
        reason,
        "response_format.type must be \"text\", \"json_object\" or \"json_schema\" (got \"structural_tag\")"
    );
    let reason = refused(
        Dialect::OpenAi,
        json!({"messages": [], "response_format": "json"}),
    );
    assert_eq!(reason, "`response_format` must be an object (got a string)");
    for ty in ["text", "json_object"] {
        passes_with(
            Dialect::OpenAi,
            json!({"messages": [], "response_format": {"type": ty}}),
            &policy(),
        );
    }
}

#[test]
fn anthropic_client_tools_pass_and_server_tools_are_refused() {
    let client =
        json!({"name": "get_weather", "description": "d", "input_schema": {"type": "object"}});
    let custom = json!({"type": "custom", "name": "c", "input_schema": {"type": "object"}});
    passes_with(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [client, custom]}),
        &policy(),
    );
    for ty in [
        "web_search_20250305",
        "web_fetch_20250910",
        "code_execution_20250825",
        "computer_20250124",
        "bash_20250124",
        "text_editor_20250728",
        "mcp_toolset",
    ] {
        let reason = refused(
            Dialect::Anthropic,
            json!({"messages": [], "tools": [client, {"type": ty, "name": "x"}]}),
        );
        assert_eq!(
            reason,
            format!("tools[1] is a server tool (type \"{ty}\"); only client tools are accepted")
        );
    }
    let reason = refused(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [{"type": null, "name": "x"}]}),
    );
    assert_eq!(
        reason,
        "tools[0] is a server tool (type null); only client tools are accepted"
    );
}

#[test]
fn anthropic_tool_schema_and_count_bounds() {
    let mut p = policy();
    p.max_schema_bytes = 50;
    let big = json!({"type": "object", "description": "x".repeat(60)});
    let size = big.to_string().len();
    let reason = refused_with(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [{"name": "t", "input_schema": big}]}),
        &p,
    );
    assert_eq!(
        reason,
        format!("tools[0].input_schema is {size} bytes, over the 50-byte limit")
    );
    let reason = refused(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [{"name": "t", "input_schema": deep_schema(17)}]}),
    );
    assert_eq!(
        reason,
        "tools[0].input_schema nests 33 levels deep, over the limit of 32"
    );
    p.max_tools = 1;
    let t = json!({"name": "t"});
    let reason = refused_with(
        Dialect::Anthropic,
        json!({"messages": [], "tools": [t, t]}),
        &p,
    );
    assert_eq!(reason, "`tools` has more than 1 entries");
}

// ---- realistic requests pass intact --------------------------------------------

#[test]
fn realistic_openai_request_passes_intact() {
    let request = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}},
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"url\":\"https://e.com\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        "tools": [function_tool("lookup", json!({
            "type": "object",
            "properties": {"url": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["url"],
        }))],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": true, "schema": {"type": "object"}}},
        "logprobs": true,
        "top_logprobs": 3,
        "logit_bias": {"50256": -100},
        "seed": 7,
        "stop": ["\n\n", "END"],
        "user": "u-1",
        "metadata": {"trace": "abc"},
        "temperature": 0.2,
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "presence_penalty": -0.1,
        "max_completion_tokens": 256,
        "n": 1,
        "store": false,
        "reasoning_effort": "low",
        "service_tier": "auto",
        "modalities": ["text"],
        "verbosity": "low",
        "prediction": {"type": "content", "content": "x"},
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let (body, dropped) = shape_with(Dialect::OpenAi, &request.to_string(), &policy()).unwrap();
    let mut expected = request;
    expected["model"] = json!("m");
    assert_eq!(body, expected);
    assert!(dropped.is_empty());
}

#[test]
fn realistic_anthropic_request_passes_intact() {
    let request = json!({
        "model": "claude-sonnet-4-5",
        "system": [
            {"type": "text", "text": "You are helpful.", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "call the tool", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C", "is_error": false},
            ]},
        ],
        "tools": [{
            "name": "get_weather",
            "description": "Current weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "u-1"},
        "stop_sequences": ["END"],
        "temperature": 1,
        "top_k": 40,
        "top_p": 0.95,
        "max_tokens": 2048,
        "service_tier": "auto",
        "stream": true,
    });
    let (body, dropped) = shape_with(Dialect::Anthropic, &request.to_string(), &policy()).unwrap();
    let mut expected = request;
    expected["model"] = json!("m");
    expected["max_tokens"] = json!(N);
    assert_eq!(body, expected);
    assert!(dropped.is_empty());
}

// ---- allow-list ---------------------------------------------------------------

const EXTENSIONS: &[&str] = &[
    "grammar",
    "json_schema",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "guided_decoding_backend",
    "structured_outputs",
    "chat_template",
    "chat_template_kwargs",
    "id_slot",
    "n_probs",
    "cache_prompt",
    "ignore_eos",
    "mcp_servers",
    "container",
    "web_search_options",
    "unknown_field",
];

#[test]
fn server_extensions_are_dropped() {
    for d in [Dialect::OpenAi, Dialect::Anthropic] {
        let mut request = json!({"messages": [], "max_tokens": 3});
        for (i, name) in EXTENSIONS.iter().enumerate() {
            request[name] = json!({"x": i});
        }
        let (body, dropped) = shape_with(d, &request.to_string(), &policy()).unwrap();
        assert_eq!(
            body,
            with_forced(d, json!({"messages": [], "max_tokens": 3})),
            "{d:?}"
        );
        let mut dropped = dropped;
        dropped.sort();
        let mut expected: Vec<String> = EXTENSIONS.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(dropped, expected, "{d:?}");
    }
}

#[test]
fn fields_of_the_other_dialect_are_dropped() {
    let (body, dropped) = shape_with(
        Dialect::Anthropic,
        &json!({"messages": [], "max_tokens": 3, "n": 4, "logit_bias": {"1": 1}, "seed": 1})
            .to_string(),
        &policy(),
    )
    .unwrap();
    assert_eq!(
        body,
        with_forced(Dialect::Anthropic, json!({"messages": [], "max_tokens": 3}))
    );
    // json! sorts keys.
    assert_eq!(dropped, ["logit_bias", "n", "seed"]);
    let (body, dropped) = shape_with(
        Dialect::OpenAi,
        &json!({"messages": [], "max_tokens": 3, "top_k": 4, "thinking": {}, "stop_sequences": []})
            .to_string(),
        &policy(),
    )
    .unwrap();
    assert_eq!(
        body,
        with_forced(Dialect::OpenAi, json!({"messages": [], "max_tokens": 3}))
    );
    assert_eq!(dropped, ["stop_sequences", "thinking", "top_k"]);
}

#[test]
fn allow_fields_readmits_grammar_but_not_forced_fields() {
    let mut p = policy();
    p.allow_fields = vec![
        "grammar".into(),
        "cache_prompt".into(),
        "stream_options".into(),
    ];
    let request = json!({
        "messages": [], "grammar": "root ::= \"yes\"", "cache_prompt": true,
        "model": "other", "stream": false, "max_tokens": 5000, "id_slot": 1,
    });
    let (body, dropped) = shape_with(Dialect::OpenAi, &request.to_string(), &p).unwrap();
    assert_eq!(
        body,
        with_forced(
            Dialect::OpenAi,
            json!({"messages": [], "grammar": "root ::= \"yes\"", "cache_prompt": true, "max_tokens": N})
        )
    );
    assert_eq!(dropped, ["id_slot"]);
    // Anthropic never passes stream_options, even when named.
    let request =
        json!({"messages": [], "grammar": "g", "stream_options": {"include_usage": false}});
    let (body, dropped) = shape_with(Dialect::Anthropic, &request.to_string(), &p).unwrap();
    assert_eq!(
        body,
        with_forced(
            Dialect::Anthropic,
            json!({"messages": [], "grammar": "g", "max_tokens": N})
        )
    );
    assert_eq!(dropped, ["stream_options"]);
}

#[test]
fn dropped_names_are_escaped_cut_and_capped() {
    let long = "a".repeat(100);
    let raw = format!(r#"{{"messages":[],"{long}":1,"bad\u0007\u202ename":2,"gr\u0061mmar":3}}"#);
    let (body, dropped) = shape_with(Dialect::OpenAi, &raw, &policy()).unwrap();
    assert_eq!(
        body,
        with_forced(Dialect::OpenAi, json!({"messages": [], "max_tokens": N}))
    );
    assert_eq!(
        dropped,
        [
            format!("{}…", "a".repeat(64)),
            "bad\\u{7}\\u{202e}name".to_owned(),
            "grammar".to_owned()
        ]
    );

    let mut raw = String::from(r#"{"messages":[]"#);
    for i in 0..100 {
        raw.push_str(&format!(r#","x{i}":{i}"#));
    }
    raw.push('}');
    let (_, dropped) = shape_with(Dialect::OpenAi, &raw, &policy()).unwrap();
    assert_eq!(dropped.len(), 33);
    assert_eq!(dropped[31], "x31");
    assert_eq!(dropped[32], "…(68 more)");
}

// ---- memory bound -------------------------------------------------------------

/// 8 MiB of tiny values in one field: read as one borrowed RawValue (a Value tree
/// would cost ~30x), dropped without a copy, or copied once when admitted.
#[test]
fn eight_mib_of_tiny_values() {
    let count = 4 << 20;
    let mut raw = String::with_capacity(2 * count + 64);
    raw.push_str(r#"{"messages":[],"x":["#);
    for i in 0..count {
        raw.push_str(if i == 0 { "1" } else { ",1" });
    }
    raw.push_str("]}");
    assert!(raw.len() >= 8 << 20);

    let shaped = apply(Dialect::OpenAi, &raw, "m", &policy()).unwrap();
    assert_eq!(shaped.dropped, ["x"]);
    assert_eq!(
        String::from_utf8(shaped.body).unwrap(),
        format!(
            r#"{{"model":"m","stream":true,"stream_options":{{"include_usage":true}},"messages":[],"max_tokens":{N}}}"#
        )
    );

    let mut p = policy();
    p.allow_fields = vec!["x".into()];
    let shaped = apply(Dialect::Anthropic, &raw, "m", &p).unwrap();
    assert!(shaped.dropped.is_empty());
    let x_start = raw.find(r#""x":"#).unwrap();
    let x = &raw[x_start..raw.len() - 1];
    assert_eq!(
        String::from_utf8(shaped.body).unwrap(),
        format!(r#"{{"model":"m","stream":true,"messages":[],{x},"max_tokens":{N}}}"#)
    );
}

// ---- duplicates, shape of the input ---------------------------------------------

#[test]
fn duplicate_checked_keys_are_refused() {
    let cases = [
        (r#"{"messages":[],"model":"a","model":"b"}"#, "model"),
        (r#"{"messages":[],"stream":true,"stream":false}"#, "stream"),
        (
            r#"{"messages":[],"max_tokens":1,"max_tokens":99999}"#,
            "max_tokens",
        ),
        (
            r#"{"messages":[],"messages":[{"role":"user","content":"x"}]}"#,
            "messages",
        ),
        (
            r#"{"messages":[],"temperature":1,"temperature":2}"#,
            "temperature",
        ),
        (r#"{"messages":[],"mod\u0065l":"a","model":"b"}"#, "model"),
    ];
    for (raw, key) in cases {
        for d in [Dialect::OpenAi, Dialect::Anthropic] {
            assert_eq!(
                shape_with(d, raw, &policy()).unwrap_err(),
                format!("`{key}` appears more than once"),
                "{d:?} {raw}"
            );
        }
    }
    for (raw, key) in [
        (r#"{"messages":[],"n":1,"n":5}"#, "n"),
        (
            r#"{"messages":[],"stream_options":{},"stream_options":{}}"#,
            "stream_options",
        ),
    ] {
        assert_eq!(
            shape_with(Dialect::OpenAi, raw, &policy()).unwrap_err(),
            format!("`{key}` appears more than once"),
            "{raw}"
        );
    }
}

#[test]
fn duplicate_dropped_keys_are_dropped() {
    let raw = r#"{"messages":[],"grammar":"a","grammar":"b"}"#;
    let (body, dropped) = shape_with(Dialect::OpenAi, raw, &policy()).unwrap();
    assert_eq!(
        body,
        with_forced(Dialect::OpenAi, json!({"messages": [], "max_tokens": N}))
    );
    assert_eq!(dropped, ["grammar", "grammar"]);
}

#[test]
fn output_has_each_key_once() {
    let raw = r#"{"stream":false,"messages":[],"model":"x","max_tokens":5,"stream_options":{}}"#;
    let shaped = apply(Dialect::OpenAi, raw, "m", &policy()).unwrap();
    assert_eq!(
        String::from_utf8(shaped.body).unwrap(),
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[],"max_tokens":5}"#
    );
}

#[test]
fn input_must_be_a_json_object() {
    let cases = [
        ("[]", "the request must be a JSON object (got an array)"),
        ("\"x\"", "the request must be a JSON object (got a string)"),
        ("12", "the request must be a JSON object (got a number)"),
        ("null", "the request must be a JSON object (got null)"),
        ("", "the request is empty"),
        (" \n", "the request is empty"),
        ("{", "the request is not valid JSON (line 1, column 1)"),
        (
            "{\"messages\":[]} x",
            "the request is not valid JSON (line 1, column 17)",
        ),
        (
            "{\"messages\":[],}",
            "the request is not valid JSON (line 1, column 16)",
        ),
    ];
    for (raw, reason) in cases {
        for d in [Dialect::OpenAi, Dialect::Anthropic] {
            assert_eq!(
                shape_with(d, raw, &policy()).unwrap_err(),
                reason,
                "{raw:?}"
            );
        }
    }
}

#[test]
fn request_nesting_is_bounded() {
    let mut p = policy();
    p.max_request_depth = 10;
    p.max_schema_depth = 2;
    let deep = |levels: usize| -> String {
        format!(
            r#"{{"messages":[],"metadata":{}1{}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    assert!(shape_with(Dialect::OpenAi, &deep(9), &p).is_ok());
    assert_eq!(
        shape_with(Dialect::OpenAi, &deep(10), &p).unwrap_err(),
        "the request nests 11 levels deep, over the limit of 10"
    );
    // Never below the schema depth plus room for where schemas sit.
    p.max_schema_depth = 20;
    assert!(shape_with(Dialect::OpenAi, &deep(27), &p).is_ok());
    // Far deeper than serde_json's recursion limit: still an answer, no stack use.
    let raw = deep(1_000_000);
    assert_eq!(
        shape_with(Dialect::Anthropic, &raw, &policy()).unwrap_err(),
        "the request nests 1000001 levels deep, over the limit of 64"
    );
}

#[test]
fn unpaired_surrogate_escapes_are_refused() {
    // serde_json's raw read lets them through, and backends disagree on them.
    for raw in [
        r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://e.com/\udc00"}}]}]}"#,
        r#"{"messages":[],"tools":[{"type":"web_search\ud800"}]}"#,
        r#"{"messages":[{"\udc00":1}]}"#,
        r#"{"messages":[{"role":"user","content":"\udc00"}]}"#,
        r#"{"messages":[],"grammar":"x\uD83D"}"#,
        r#"{"messages":[],"grammar":"\ud83d\ud83d\ude00"}"#,
        r#"{"messages":[],"grammar":"\ud83d\n\ude00"}"#,
        r#"{"messages":[],"grammar":"\ud83dx"}"#,
    ] {
        for d in [Dialect::OpenAi, Dialect::Anthropic] {
            assert_eq!(
                shape_with(d, raw, &policy()).unwrap_err(),
                "the request holds a \\u escape of an unpaired UTF-16 surrogate",
                "{raw}"
            );
        }
    }
    // Pairs, escaped or not, are text like any other.
    let raw = r#"{"messages":[{"role":"user","content":"\ud83d\ude00 😀 \\ud800 \u0041"}]}"#;
    let (body, _) = shape_with(Dialect::OpenAi, raw, &policy()).unwrap();
    assert_eq!(body["messages"][0]["content"], "😀 😀 \\ud800 A");
    // A key serde_json has to decode fails the read itself.
    assert_eq!(
        shape_with(Dialect::OpenAi, r#"{"\udc00":1}"#, &policy()).unwrap_err(),
        "the request is not valid JSON (line 1, column 8)"
    );
}

// ---- refusal text -------------------------------------------------------------

#[test]
fn refusal_display_is_pinned() {
    let r = apply(Dialect::OpenAi, r#"{"messages":[],"n":4}"#, "m", &policy()).unwrap_err();
    assert_eq!(
        r.to_string(),
        "refused by provider policy: `n` must be 1 (got 4)"
    );
    let request = json!({"messages": [{}, {}, {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}},
    ]}]});
    let r = apply(Dialect::OpenAi, &request.to_string(), "m", &policy()).unwrap_err();
    assert_eq!(
        r.to_string(),
        "refused by provider policy: remote media URL in messages[2].content[0] (image_url); only data: URLs are accepted"
    );
    let mut tools = vec![function_tool("f", json!({})); 3];
    tools.push(function_tool(
        "g",
        json!({"description": "x".repeat(69_982)}),
    ));
    let request = json!({"messages": [], "tools": tools});
    let r = apply(Dialect::OpenAi, &request.to_string(), "m", &policy()).unwrap_err();
    assert_eq!(
        r.to_string(),
        "refused by provider policy: tools[3].function.parameters is 70000 bytes, over the 65536-byte limit"
    );
    let err: &dyn std::error::Error = &r;
    assert!(err.to_string().starts_with("refused by provider policy: "));
}

#[test]
fn refusals_quote_little_and_escaped() {
    let long = format!("\u{1b}[31m\n{}", "y".repeat(10_000));
    let reason = refused(Dialect::OpenAi, json!({"messages": [], "n": long}));
    assert_eq!(
        reason,
        format!(
            "`n` must be 1 (got \"\\u{{1b}}[31m\\u{{a}}{}…\")",
            "y".repeat(34)
        )
    );
    let raw = format!(r#"{{"messages":[],"n":{}}}"#, "9".repeat(10_000));
    let reason = shape_with(Dialect::OpenAi, &raw, &policy()).unwrap_err();
    assert_eq!(reason, format!("`n` must be 1 (got {}…)", "9".repeat(40)));
    let key = format!("evil\u{202e}{}_url", "k".repeat(100));
    let mut part = serde_json::Map::new();
    part.insert(key, json!("https://e.com"));
    let reason = refused(Dialect::OpenAi, with_part(Value::Object(part)));
    assert_eq!(
        reason,
        format!(
            "remote media URL in messages[1].content[1] (evil\\u{{202e}}{}…); only data: URLs are accepted",
            "k".repeat(35)
        )
    );
}

// ---- helpers ------------------------------------------------------------------

#[test]
fn url_classification() {
    assert!(is_data_url("data:image/png;base64,AA"));
    assert!(is_data_url("  DaTa:x"));
    assert!(!is_data_url("dat"));
    assert!(!is_data_url("https://e.com"));
    assert!(is_scheme_url("https://e.com"));
    assert!(is_scheme_url(" file:///etc"));
    assert!(is_scheme_url("s3+x.y-z://b"));
    assert!(!is_scheme_url("UklGRiQAAABXQVZF"));
    assert!(!is_scheme_url("://x"));
    assert!(!is_scheme_url("1a://x"));
    assert!(!is_scheme_url("data:audio/wav;base64,AA//"));
}

#[test]
fn stop_strings_are_bounded_in_both_dialects() {
    for (d, name) in [
        (Dialect::OpenAi, "stop"),
        (Dialect::Anthropic, "stop_sequences"),
    ] {
        let base = |value: Value| {
            let mut r = json!({"messages": [user("hi")]});
            r[name] = value;
            r
        };
        let sixteen: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
        passes_with(d, base(json!(sixteen)), &policy());
        passes_with(d, base(json!("END")), &policy());
        passes_with(d, base(json!("x".repeat(1022))), &policy());
        let mut seventeen = sixteen.clone();
        seventeen.push("s16".into());
        assert_eq!(
            refused(d, base(json!(seventeen))),
            format!("`{name}` has more than 16 entries")
        );
        assert_eq!(
            refused(d, base(json!(["a", "x".repeat(1023)]))),
            format!("a `{name}` string is 1025 bytes, over the limit of 1024")
        );
        assert_eq!(
            refused(d, base(json!(["a", 7]))),
            format!("`{name}` must hold strings (got a number)")
        );
        assert_eq!(
            refused(d, base(json!({"a": 1}))),
            format!("`{name}` must be a string or an array of strings (got an object)")
        );
        // null means absent, as for every optional.
        let (body, _) = shape_with(d, &base(Value::Null).to_string(), &policy()).unwrap();
        assert_eq!(body.get(name), None, "{body}");
    }
}
