//! Anthropic Messages jobs on backends that only speak OpenAI chat completions: the request
//! is translated forward, and the backend's stream is translated back into Anthropic events.
//!
//! Only tool-less conversations are translated. Tool calls would need the model's output
//! parsed back into `tool_use` blocks, which the backends do differently; refusing them is
//! better than silently answering without the tools the client offered.

mod body;
mod error;
mod request;
mod stream;

pub use error::TranslateError;
pub use request::request_to_openai;
pub use stream::StreamTranslator;

#[cfg(test)]
mod tests;
