//! Fields outside the allow-list are dropped, and reported as dropped.

use super::*;

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
