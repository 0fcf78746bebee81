//! The input as a whole: memory bound, repeated keys, its JSON shape and nesting.

use super::*;

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
