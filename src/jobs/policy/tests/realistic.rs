//! Requests as real clients send them pass intact.

use super::*;

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
