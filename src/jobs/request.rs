//! Pure shaping of what is sent to a backend, and naming what went wrong.

use crate::backend::http::{HttpError, Phase};
use crate::protocol::ErrorCode;
use serde_json::{Map, Value};

/// OpenAI body rules (PROTOCOL.md): stream forced on, usage requested when the
/// client did not say, model filled in when absent.
pub fn openai_body(mut request: Map<String, Value>, model_id: &str) -> Map<String, Value> {
    request.insert("stream".into(), Value::Bool(true));
    let options = request
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !options.is_object() {
        *options = Value::Object(Map::new());
    }
    if let Value::Object(o) = options {
        o.entry("include_usage").or_insert(Value::Bool(true));
    }
    fill_model(&mut request, model_id);
    request
}

/// Anthropic bodies for a native `/v1/messages`: stream on, model filled in.
pub fn anthropic_body(mut request: Map<String, Value>, model_id: &str) -> Map<String, Value> {
    request.insert("stream".into(), Value::Bool(true));
    fill_model(&mut request, model_id);
    request
}

fn fill_model(request: &mut Map<String, Value>, model_id: &str) {
    let absent = request
        .get("model")
        .is_none_or(|m| m.as_str().is_none_or(str::is_empty));
    if absent {
        request.insert("model".into(), Value::String(model_id.to_owned()));
    }
}

/// Error code and message for a failed backend call.
pub fn classify_http(e: &HttpError) -> (ErrorCode, String) {
    let code = match e {
        HttpError::Unreachable(_) => ErrorCode::BackendUnreachable,
        HttpError::Timeout(_) => ErrorCode::BackendTimeout,
        _ => ErrorCode::Internal,
    };
    let message = match e {
        HttpError::Timeout(Phase::Deadline) => "job deadline exceeded".to_owned(),
        other => format!("backend: {other}"),
    };
    (code, message)
}

/// Error code and message for a non-2xx backend answer.
pub fn classify_status(status: u16, body: &[u8]) -> (ErrorCode, String) {
    let excerpt: String = String::from_utf8_lossy(body).chars().take(300).collect();
    let code = match status {
        401 | 403 => ErrorCode::AuthRejectedByBackend,
        _ => ErrorCode::Internal,
    };
    (
        code,
        format!("backend answered HTTP {status}: {}", excerpt.trim()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn openai_rules() {
        let b = openai_body(obj(json!({"messages":[],"stream":false})), "m");
        assert_eq!(
            Value::Object(b),
            json!({"messages":[],"stream":true,"stream_options":{"include_usage":true},"model":"m"})
        );
        let b = openai_body(
            obj(json!({"model":"x","stream_options":{"include_usage":false,"other":1}})),
            "m",
        );
        assert_eq!(b["model"], "x");
        assert_eq!(
            b["stream_options"],
            json!({"include_usage":false,"other":1})
        );
        let b = openai_body(obj(json!({"model":"","stream_options":null})), "m");
        assert_eq!(b["model"], "m");
        assert_eq!(b["stream_options"], json!({"include_usage":true}));
    }

    #[test]
    fn anthropic_rules() {
        let b = anthropic_body(obj(json!({"max_tokens":5})), "m");
        assert_eq!(
            Value::Object(b),
            json!({"max_tokens":5,"stream":true,"model":"m"})
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            classify_status(401, b"").0,
            ErrorCode::AuthRejectedByBackend
        );
        assert_eq!(
            classify_status(403, b"").0,
            ErrorCode::AuthRejectedByBackend
        );
        let (c, m) = classify_status(500, b"boom happened");
        assert_eq!(c, ErrorCode::Internal);
        assert!(m.contains("500") && m.contains("boom happened"));
        assert_eq!(
            classify_http(&HttpError::Unreachable("x".into())).0,
            ErrorCode::BackendUnreachable
        );
        assert_eq!(
            classify_http(&HttpError::Timeout(Phase::Idle)).0,
            ErrorCode::BackendTimeout
        );
        assert_eq!(
            classify_http(&HttpError::Malformed("x".into())).0,
            ErrorCode::Internal
        );
    }
}
