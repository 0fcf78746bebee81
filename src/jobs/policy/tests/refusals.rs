//! What a refusal says.

use super::*;

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
