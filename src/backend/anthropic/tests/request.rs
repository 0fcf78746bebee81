use crate::backend::anthropic::{request_to_openai, TranslateError};
use serde_json::{json, Value};

// Values only here, to compare what was written with what was meant.
fn translate(body: Value) -> Value {
    let out = request_to_openai(&body.to_string(), "default-model").expect("translates");
    serde_json::from_slice(&out).expect("the output is JSON")
}

fn translate_err(body: Value) -> TranslateError {
    request_to_openai(&body.to_string(), "default-model").expect_err("must fail")
}

#[test]
fn string_content_and_sampling_parameters() {
    let out = translate(json!({
        "model": "llama-3.2-3b",
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stream": false,
        "metadata": {"user_id": "u1"},
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "Again"},
        ],
    }));
    assert_eq!(
        out,
        json!({
            "model": "llama-3.2-3b",
            "max_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi"},
                {"role": "user", "content": "Again"},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}

#[test]
fn model_defaults_to_model_id() {
    let messages = json!([{"role": "user", "content": "x"}]);
    for model in [json!(null), json!("")] {
        let out = translate(json!({"model": model, "messages": messages}));
        assert_eq!(out["model"], "default-model");
    }
    let out = translate(json!({"messages": messages}));
    assert_eq!(out["model"], "default-model");
    assert!(out.get("max_tokens").is_none());
}

#[test]
fn system_string_and_block_array() {
    let out = translate(json!({
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "x"}],
    }));
    assert_eq!(
        out["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    let out = translate(json!({
        "system": [
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be kind."},
        ],
        "messages": [{"role": "user", "content": "x"}],
    }));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": "Be brief.\nBe kind."},
            {"role": "user", "content": "x"},
        ])
    );
    let out = translate(json!({"system": "", "messages": [{"role": "user", "content": "x"}]}));
    assert_eq!(out["messages"].as_array().map(Vec::len), Some(1));
}

#[test]
fn text_blocks_are_joined() {
    let out = translate(json!({"messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "first"},
            {"type": "text", "text": "second"},
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "answer"},
        ]},
        {"role": "user", "content": []},
    ]}));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "first\nsecond"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": ""},
        ])
    );
}

#[test]
fn images_become_data_urls_in_order() {
    let out = translate(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "Be precise."},
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
            {"type": "text", "text": "Be precise."},
        ])
    );
}

#[test]
fn stop_sequences_become_stop() {
    let out = translate(json!({
        "stop_sequences": ["\n\nHuman:", "END"],
        "messages": [{"role": "user", "content": "x"}],
    }));
    assert_eq!(out["stop"], json!(["\n\nHuman:", "END"]));
    let out = translate(json!({
        "stop_sequences": [],
        "messages": [{"role": "user", "content": "x"}],
    }));
    assert!(out.get("stop").is_none());
}

#[test]
fn tool_blocks_are_unsupported() {
    let err = translate_err(json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        ]},
    ]}));
    assert!(
        matches!(&err, TranslateError::Unsupported(what) if what.contains("tool_use") && what.contains("messages[1].content[0]")),
        "{err:?}"
    );
    let err = translate_err(json!({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
    ]}]}));
    assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("tool_result")));
    assert!(err.to_string().contains("tool_result"), "{err}");
}

#[test]
fn tool_definitions_are_unsupported_unless_empty() {
    let messages = json!([{"role": "user", "content": "x"}]);
    let err = translate_err(json!({"tools": [{"name": "t"}], "messages": messages}));
    assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("tools")));
    translate(json!({"tools": [], "messages": messages}));
    translate(json!({"tools": null, "messages": messages}));
}

#[test]
fn other_blocks_are_unsupported() {
    let err = translate_err(json!({"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "data": "x"}},
    ]}]}));
    assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("document")));
    let err = translate_err(json!({
        "system": [{"type": "image", "source": {}}],
        "messages": [],
    }));
    assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("system[0]")));
    let err = translate_err(json!({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}},
    ]}]}));
    assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("file")));
}

#[test]
fn malformed_requests_say_what_is_wrong() {
    assert_eq!(translate_err(json!([1])), TranslateError::NotAnObject);
    assert_eq!(
        translate_err(json!({"model": "m"})),
        TranslateError::MissingField("messages")
    );
    assert_eq!(
        translate_err(json!({"messages": null})),
        TranslateError::MissingField("messages")
    );
    let cases = [
        (json!({"messages": "hi"}), "`messages`"),
        (json!({"messages": [1]}), "messages[0]"),
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            "messages[0].role",
        ),
        (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
        (
            json!({"messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image"}]}]}),
            "source",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
            "media_type",
        ),
        (json!({"system": 5, "messages": []}), "`system`"),
        (
            json!({"system": [{"type": "text"}], "messages": []}),
            "system[0]",
        ),
        (json!({"model": 5, "messages": []}), "`model`"),
        (json!({"max_tokens": -1, "messages": []}), "`max_tokens`"),
        (json!({"max_tokens": "9", "messages": []}), "`max_tokens`"),
        (
            json!({"temperature": "hot", "messages": []}),
            "`temperature`",
        ),
        (json!({"top_k": [], "messages": []}), "`top_k`"),
        (
            json!({"stop_sequences": "END", "messages": []}),
            "`stop_sequences`",
        ),
        (
            json!({"stop_sequences": [1], "messages": []}),
            "`stop_sequences`",
        ),
    ];
    for (body, needle) in cases {
        let err = translate_err(body.clone());
        assert!(
            matches!(&err, TranslateError::Invalid(what) if what.contains(needle)),
            "{body} gave {err:?}, expected mention of {needle}"
        );
    }
    assert_eq!(
        TranslateError::MissingField("messages").to_string(),
        "Anthropic request has no `messages`"
    );
}

fn translate_text(body: &str) -> Result<Vec<u8>, TranslateError> {
    request_to_openai(body, "default-model")
}

/// A request of many tiny values (what would cost ~30x its size as a `Value` tree): an
/// unknown 2 MiB field of them is skipped without being built, and 10,000 short messages
/// are carried over one by one. The output is about the conversation's size: nothing of
/// the skipped field reaches it.
#[test]
fn large_requests_of_tiny_values_translate() {
    let mut body = String::from(r#"{"metadata":{"tags":["#);
    while body.len() < 2 << 20 {
        body.push_str("0,1,");
    }
    body.push_str(r#"{}]},"system":"Be brief.","messages":["#);
    let messages_start = body.len();
    for i in 0..10_000 {
        if i > 0 {
            body.push(',');
        }
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        body.push_str(&format!(r#"{{"role":"{role}","content":"m{i}"}}"#));
    }
    let messages_len = body.len() - messages_start;
    body.push_str(r#"],"max_tokens":16}"#);

    let out = translate_text(&body).expect("translates");
    assert!(
        out.len() < messages_len + 1024,
        "{} bytes out for {messages_len} bytes of messages",
        out.len()
    );
    let out: Value = serde_json::from_slice(&out).expect("JSON");
    let messages = out["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 10_001);
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(messages[1], json!({"role": "user", "content": "m0"}));
    assert_eq!(
        messages[10_000],
        json!({"role": "assistant", "content": "m9999"})
    );
    assert_eq!(out["max_tokens"], 16);
    assert!(out.get("metadata").is_none());
}

/// Nesting far past serde_json's recursion limit in skipped values: a `Value` tree cannot
/// even be built from this, the translation skips them (without recursing).
#[test]
fn deeply_nested_skipped_fields_do_not_matter() {
    let depth = 100_000;
    let array = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let object = format!("{}0{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let body = format!(
        r#"{{"metadata":{array},"messages":[
                {{"role":"user","content":"x","extra":{object}}},
                {{"role":"assistant","content":[
                    {{"type":"thinking","thinking":{object},"text":{array},"source":{array}}},
                    {{"type":"text","text":"y"}}
                ]}}
            ]}}"#
    );
    assert!(serde_json::from_str::<Value>(&body).is_err());
    let out: Value =
        serde_json::from_slice(&translate_text(&body).expect("translates")).expect("JSON");
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    );
    // Where a string was wanted, the deep value is reported as not one.
    let body = format!(r#"{{"model":{array},"messages":[]}}"#);
    let err = translate_text(&body).expect_err("model");
    assert!(
        matches!(&err, TranslateError::Invalid(what) if what.contains("`model`")),
        "{err:?}"
    );
}

#[test]
fn non_object_bodies_are_refused() {
    for body in ["[1]", " \n[]", "\"x\"", "null", "5", "true", "", "not json"] {
        assert_eq!(
            translate_text(body).expect_err(body),
            TranslateError::NotAnObject,
            "{body:?}"
        );
    }
    for body in [
        r#"{"messages":["#,
        r#"{"messages":[]} x"#,
        r#"{"messages":[],}"#,
    ] {
        let err = translate_text(body).expect_err(body);
        assert!(
            matches!(&err, TranslateError::Invalid(what) if what.contains("not valid JSON")),
            "{body:?} gave {err:?}"
        );
    }
}

#[test]
fn repeated_keys_are_refused() {
    let cases = [
        (r#"{"messages":[],"messages":[]}"#, "duplicate field"),
        (
            r#"{"messages":[{"role":"user","role":"assistant","content":"x"}]}"#,
            "messages[0]",
        ),
        (
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}"#,
            "messages[0].content[0]",
        ),
        (
            r#"{"system":[{"type":"text","type":"text","text":"a"}],"messages":[]}"#,
            "system[0]",
        ),
        (
            r#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"a","url":"b"}}]}]}"#,
            "messages[0].content[0].source",
        ),
    ];
    for (body, needle) in cases {
        let err = translate_text(body).expect_err(body);
        assert!(
            matches!(&err, TranslateError::Invalid(what) if what.contains(needle) && what.contains("duplicate")),
            "{body} gave {err:?}, expected mention of {needle}"
        );
    }
}

/// Numbers are passed on as the client wrote them, never through an f64.
#[test]
fn numbers_pass_through_as_written() {
    let body = r#"{"max_tokens": 256, "temperature": 1.0, "top_p": 0.90000000000000002,
            "top_k": 4E1, "messages": []}"#;
    let out = String::from_utf8(translate_text(body).expect("translates")).expect("UTF-8");
    for written in [
        r#""max_tokens":256"#,
        r#""temperature":1.0"#,
        r#""top_p":0.90000000000000002"#,
        r#""top_k":4E1"#,
    ] {
        assert!(out.contains(written), "{written} not in {out}");
    }
    let cases = [
        (r#"{"max_tokens": 1.0, "messages": []}"#, "`max_tokens`"),
        (r#"{"max_tokens": 1e2, "messages": []}"#, "`max_tokens`"),
        (
            r#"{"max_tokens": 18446744073709551616, "messages": []}"#,
            "`max_tokens`",
        ),
        (r#"{"temperature": 1e400, "messages": []}"#, "`temperature`"),
        (r#"{"top_p": true, "messages": []}"#, "`top_p`"),
        (r#"{"top_k": {}, "messages": []}"#, "`top_k`"),
    ];
    for (body, needle) in cases {
        let err = translate_text(body).expect_err(body);
        assert!(
            matches!(&err, TranslateError::Invalid(what) if what.contains(needle)),
            "{body} gave {err:?}"
        );
    }
    let out = translate(json!({"max_tokens": 0, "messages": []}));
    assert_eq!(out["max_tokens"], 0);
}

/// Strings are decoded from the client's escapes and written with the output's own; the
/// result means the same text.
#[test]
fn strings_survive_escaping() {
    let awkward: String = (0u8..0x20)
        .map(char::from)
        .chain("\"\\/ é 😀 \u{7f}\u{2028}".chars())
        .collect();
    let out = translate(json!({
        "model": awkward,
        "system": [{"type": "text", "text": awkward}, {"type": "text", "text": awkward}],
        "stop_sequences": [awkward],
        "messages": [
            {"role": "user", "content": awkward},
            {"role": "assistant", "content": [{"type": "text", "text": awkward}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": [
                {"type": "text", "text": awkward},
                {"type": "image", "source": {"type": "base64", "media_type": awkward, "data": "AA=="}},
                {"type": "image", "source": {"type": "url", "url": awkward}},
            ]},
        ],
    }));
    assert_eq!(out["model"], awkward.as_str());
    assert_eq!(out["stop"], json!([awkward]));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": format!("{awkward}\n{awkward}")},
            {"role": "user", "content": awkward},
            {"role": "assistant", "content": format!("{awkward}\nb")},
            {"role": "user", "content": [
                {"type": "text", "text": awkward},
                {"type": "image_url", "image_url": {"url": format!("data:{awkward};base64,AA==")}},
                {"type": "image_url", "image_url": {"url": awkward}},
            ]},
        ])
    );

    // Escapes the client chose, including for keys and the role, are read as what they mean.
    let body = r#"{"m\u0065ssages":[{"role":"\u0075ser","content":"\u0041\/\ud83d\ude00"}]}"#;
    let out: Value =
        serde_json::from_slice(&translate_text(body).expect("translates")).expect("JSON");
    assert_eq!(
        out["messages"],
        json!([{"role": "user", "content": "A/😀"}])
    );

    // A lone surrogate is not text.
    let err = translate_text(r#"{"messages":[{"role":"user","content":"\ud800"}]}"#)
        .expect_err("lone surrogate");
    assert!(
        matches!(&err, TranslateError::Invalid(what) if what.contains("messages[0].content")),
        "{err:?}"
    );
}
