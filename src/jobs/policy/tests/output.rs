//! How much output a job may ask for: max_tokens, n and best_of, log probabilities, logit bias, stop strings.

use super::*;

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
