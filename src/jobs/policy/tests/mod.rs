//! Tests of the request policy, one file per topic; the helpers every topic uses are here.

mod allow_list;
mod forced;
mod input;
mod media;
mod messages;
mod output;
mod realistic;
mod refusals;
mod tools;

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

/// A conversation whose user message holds a text part and then `part`.
fn with_part(part: Value) -> Value {
    json!({"messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, part]},
    ]})
}

fn function_tool(name: &str, parameters: Value) -> Value {
    json!({"type": "function", "function": {"name": name, "parameters": parameters}})
}
