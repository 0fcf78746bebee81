//! The backend's OpenAI chat-completions stream written back as Anthropic Messages events.

use serde_json::{json, Map, Value};

/// Turns an OpenAI chat-completions SSE stream back into a valid Anthropic Messages event
/// stream: message_start, one text block (index 0), message_delta, message_stop.
#[derive(Debug, Clone)]
pub struct StreamTranslator {
    model: String,
    message_id: String,
    phase: Phase,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    text_deltas: u64,
    finish_reason: Option<String>,
    /// vLLM reports which stop string matched in `choices[0].stop_reason`; other backends
    /// say only "stop", which cannot be told apart from end of turn.
    matched_stop: Option<String>,
}

/// How far the Anthropic message has gone; each step's events are sent once, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing sent yet.
    Idle,
    /// `message_start` sent.
    Started,
    /// `content_block_start` sent for the one text block.
    InBlock,
    /// `message_stop` or an `error` sent: nothing follows.
    Done,
}

impl StreamTranslator {
    /// `message_id` like "msg_<something>" supplied by the caller; `model` echoed in
    /// message_start.
    pub fn new(model: &str, message_id: &str) -> Self {
        StreamTranslator {
            model: model.to_owned(),
            message_id: message_id.to_owned(),
            phase: Phase::Idle,
            input_tokens: None,
            output_tokens: None,
            text_deltas: 0,
            finish_reason: None,
            matched_stop: None,
        }
    }

    /// Feed one OpenAI event's `data` payload (a JSON chunk or "[DONE]"); returns Anthropic
    /// SSE bytes to send now. "[DONE]" finishes the message at once (see `finish`); a
    /// backend `{"error": ...}` chunk becomes an Anthropic `error` event that ends the
    /// stream. Anything after the end is ignored.
    pub fn on_openai_data(&mut self, data: &str) -> Vec<u8> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let data = data.trim();
        if data == "[DONE]" {
            return self.finish();
        }
        let mut out = Vec::new();
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(data) else {
            self.start(&mut out);
            return out;
        };
        if let Some(error) = present(&chunk, "error") {
            self.fail(error, &mut out);
            return out;
        }
        if let Some(usage) = chunk.get("usage").and_then(Value::as_object) {
            if let Some(input) = usage.get("prompt_tokens").and_then(Value::as_u64) {
                self.input_tokens = Some(input);
            }
            if let Some(output) = usage.get("completion_tokens").and_then(Value::as_u64) {
                self.output_tokens = Some(output);
            }
        }
        self.start(&mut out);
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.first());
        let Some(choice) = choice else {
            return out;
        };
        let text = choice
            .get("delta")
            .and_then(|delta| delta.get("content"))
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty());
        if let Some(text) = text {
            self.open_block(&mut out);
            self.text_deltas += 1;
            emit(
                &mut out,
                "content_block_delta",
                json!({
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                }),
            );
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
        if let Some(stop) = choice.get("stop_reason").and_then(Value::as_str) {
            self.matched_stop = Some(stop.to_owned());
        }
        out
    }

    /// End of stream (after [DONE] or EOF): emits what is still owed exactly once. A message
    /// that got no text still gets an empty text block, so clients always see content.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.open_block(&mut out);
        self.phase = Phase::Done;
        emit(
            &mut out,
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        );
        let (stop_reason, stop_sequence) = self.stop_reason();
        let mut usage = Map::new();
        usage.insert(
            "output_tokens".to_owned(),
            json!(self.output_tokens.unwrap_or(self.text_deltas)),
        );
        // message_start had to guess 0; the real count replaces it here when known.
        if let Some(input) = self.input_tokens {
            usage.insert("input_tokens".to_owned(), json!(input));
        }
        emit(
            &mut out,
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            }),
        );
        emit(&mut out, "message_stop", json!({"type": "message_stop"}));
        out
    }

    fn stop_reason(&self) -> (&'static str, Option<String>) {
        match self.finish_reason.as_deref() {
            Some("length") => ("max_tokens", None),
            Some("content_filter") => ("refusal", None),
            Some("stop") if self.matched_stop.is_some() => {
                ("stop_sequence", self.matched_stop.clone())
            }
            _ => ("end_turn", None),
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Started;
        emit(
            out,
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": self.message_id,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": self.model,
                    "stop_reason": null,
                    "stop_sequence": null,
                    // OpenAI reports usage only in the last chunk.
                    "usage": {"input_tokens": self.input_tokens.unwrap_or(0), "output_tokens": 0},
                },
            }),
        );
    }

    /// Starts the message first if need be.
    fn open_block(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        if self.phase != Phase::Started {
            return;
        }
        self.phase = Phase::InBlock;
        emit(
            out,
            "content_block_start",
            json!({
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }),
        );
    }

    /// As Anthropic's API does mid-stream: an `error` event and nothing after it, not even
    /// the stops still owed.
    fn fail(&mut self, error: &Value, out: &mut Vec<u8>) {
        self.phase = Phase::Done;
        let message = match error {
            Value::String(message) => message.clone(),
            other => other
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| other.to_string()),
        };
        emit(
            out,
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        );
    }
}

/// serde_json escapes every control character, so the payload is always one `data:` line.
fn emit(out: &mut Vec<u8>, name: &str, payload: Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(payload.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// A field counts as absent when null: SDKs serialise unset optionals that way.
fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}
