//! The tokens a streamed completion reports, counted as its events go by.

use super::parse::SseEvent;
use super::shapes::{
    count, nonempty_string, object, string, DeltaFields, EventFields, MessageFields, UsageFields,
};
use serde_json::value::RawValue;

/// Token usage seen in a stream, from either OpenAI or Anthropic shapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

impl Usage {
    /// Later reports replace earlier ones key by key: Anthropic's message_delta carries the
    /// final output count, and may omit the input count message_start already gave.
    fn update(&mut self, usage: Option<&RawValue>, anthropic: bool) {
        let Some(usage) = usage.and_then(object::<UsageFields>) else {
            return;
        };
        let (input, output) = match anthropic {
            true => (usage.input_tokens, usage.output_tokens),
            false => (usage.prompt_tokens, usage.completion_tokens),
        };
        if let Some(input) = input.and_then(count) {
            self.input = Some(input);
        }
        if let Some(output) = output.and_then(count) {
            self.output = Some(output);
        }
    }
}

/// Running accounting of a streamed response.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub usage: Usage,
    pub content_events: u64,
    pub done: bool,
    pub finish_reason: Option<String>,
}

impl StreamStats {
    /// Update from one event's data, in either the OpenAI chat-completions chunk shape or
    /// the Anthropic Messages event shape. Data that is not a JSON object is ignored.
    pub fn observe(&mut self, event: &SseEvent) {
        self.observe_data(event.event.as_deref(), &event.data);
    }

    /// [`StreamStats::observe`] for an event as [`EventParser::each`](super::EventParser::each) lends it.
    pub fn observe_data(&mut self, event: Option<&str>, data: &str) {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        if !data.starts_with('{') {
            return;
        }
        let Ok(fields) = serde_json::from_str::<EventFields>(data) else {
            return;
        };
        // Anthropic repeats the event name as `type`; the `event:` line is the fallback.
        let kind = string(fields.kind);
        match kind.as_deref().or(event) {
            Some("message_start") => {
                let message = fields.message.and_then(object::<MessageFields>);
                self.usage.update(message.and_then(|m| m.usage), true);
            }
            Some("message_delta") => {
                self.usage.update(fields.usage, true);
                let delta = fields.delta.and_then(object::<DeltaFields>);
                self.set_finish_reason(delta.and_then(|d| d.stop_reason));
            }
            Some("content_block_delta") => self.content_events += 1,
            Some("message_stop") => self.done = true,
            _ => self.observe_openai(&fields),
        }
    }

    fn observe_openai(&mut self, chunk: &EventFields) {
        self.usage.update(chunk.usage, false);
        let Some(choice) = &chunk.choices.0 else {
            return;
        };
        if let Some(delta) = choice.delta.and_then(object::<DeltaFields>) {
            if nonempty_string(delta.content)
                || nonempty_string(delta.reasoning_content)
                || nonempty_string(delta.reasoning)
            {
                self.content_events += 1;
            }
        }
        self.set_finish_reason(choice.finish_reason);
    }

    /// Stored when it is a string; allocates only when it changes (once a stream).
    fn set_finish_reason(&mut self, raw: Option<&RawValue>) {
        let Some(reason) = string(raw) else {
            return;
        };
        if self.finish_reason.as_deref() != Some(&*reason) {
            self.finish_reason = Some(reason.into_owned());
        }
    }

    /// Output tokens emitted so far: usage.output if known, else content_events (one token
    /// per delta is the best estimate).
    pub fn output_tokens(&self) -> u64 {
        self.usage.output.unwrap_or(self.content_events)
    }
}
