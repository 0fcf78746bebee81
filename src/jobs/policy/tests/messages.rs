//! The conversation's size: messages per job and prompt bytes.

use super::*;

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
