//! An Anthropic Messages request written as an OpenAI chat-completions body.

use super::body::{
    for_each_element, is_empty_array, object, starts_with, string, At, Block, ImageSource, Message,
    Request, Text, JSON_WHITESPACE,
};
use super::error::{invalid, TranslateError};
use crate::json_string::{push_json_escaped, push_json_string};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Anthropic Messages request → OpenAI chat-completions body, always streaming with usage.
///
/// `body` is the Anthropic Messages request as JSON text (another module has already applied
/// the provider's request policy to it: model forced, max_tokens clamped, fields
/// allow-listed, remote media refused). `model_id` is used when the body names no model.
/// Returns the OpenAI chat-completions body as JSON bytes.
pub fn request_to_openai(body: &str, model_id: &str) -> Result<Vec<u8>, TranslateError> {
    if !body.trim_start_matches(JSON_WHITESPACE).starts_with('{') {
        return Err(TranslateError::NotAnObject);
    }
    let request: Request = serde_json::from_str(body).map_err(|e| {
        if e.is_data() {
            // A repeated key.
            invalid(e.to_string())
        } else {
            invalid(format!("the body is not valid JSON: {e}"))
        }
    })?;

    if let Some(tools) = request.tools {
        if !is_empty_array(tools) {
            return Err(TranslateError::Unsupported(
                "`tools` (tool use is not supported by this backend)".to_owned(),
            ));
        }
    }

    // The output is about the size of the conversation; reserving that up front saves the
    // copies of a growing buffer.
    let conversation =
        request.system.map_or(0, |s| s.get().len()) + request.messages.map_or(0, |m| m.get().len());
    let mut out = Vec::with_capacity(conversation + 256);
    out.extend_from_slice(b"{\"messages\":[");
    let mut first = true;
    if let Some(system) = request.system {
        first = !push_system(&mut out, system)?;
    }
    let messages = request
        .messages
        .ok_or(TranslateError::MissingField("messages"))?;
    if !starts_with(messages, b'[') {
        return Err(invalid("`messages` must be an array".to_owned()));
    }
    for_each_element(messages, |index, message| {
        if !first {
            out.push(b',');
        }
        first = false;
        push_message(&mut out, index, message)
    })?;
    out.push(b']');

    let model = match &request.model {
        None => model_id,
        Some(Text::Str(model)) if model.is_empty() => model_id,
        Some(Text::Str(model)) => model,
        Some(Text::NotAString) => return Err(invalid("`model` must be a string".to_owned())),
    };
    out.extend_from_slice(b",\"model\":");
    push_json_string(&mut out, model);

    // Numbers go out exactly as the client wrote them: parsing one to f64 and printing it
    // again could change it. serde_json's Number only checks that it is one (and in range).
    let number = |raw: &RawValue| serde_json::from_str::<serde_json::Number>(raw.get()).ok();
    if let Some(max_tokens) = request.max_tokens {
        if number(max_tokens).and_then(|n| n.as_u64()).is_none() {
            return Err(invalid(
                "`max_tokens` must be a non-negative integer".to_owned(),
            ));
        }
        out.extend_from_slice(b",\"max_tokens\":");
        out.extend_from_slice(max_tokens.get().as_bytes());
    }
    for (key, value) in [
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("top_k", request.top_k),
    ] {
        if let Some(value) = value {
            if number(value).is_none() {
                return Err(invalid(format!("`{key}` must be a number")));
            }
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    if let Some(stops) = request.stop_sequences {
        let wrong = || invalid("`stop_sequences` must be an array of strings".to_owned());
        if !starts_with(stops, b'[') {
            return Err(wrong());
        }
        for_each_element(stops, |_, stop| match string(stop) {
            Some(_) => Ok(()),
            None => Err(wrong()),
        })?;
        if !is_empty_array(stops) {
            // Checked to be an array of strings, so it goes out as written.
            out.extend_from_slice(b",\"stop\":");
            out.extend_from_slice(stops.get().as_bytes());
        }
    }
    out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}}");
    Ok(out)
}

/// Appends the system message; false (and nothing appended) when the prompt is empty.
fn push_system(out: &mut Vec<u8>, system: &RawValue) -> Result<bool, TranslateError> {
    let mark = out.len();
    out.extend_from_slice(b"{\"role\":\"system\",\"content\":\"");
    let text_start = out.len();
    if starts_with(system, b'[') {
        for_each_element(system, |index, block| {
            let at = At::System(index);
            let block: Option<Block> = object(block, at)?;
            match block_kind(block.as_ref(), at)? {
                "text" => {
                    // Blocks are joined with newlines, as in the block arrays of messages.
                    if index > 0 {
                        out.extend_from_slice(b"\\n");
                    }
                    push_json_escaped(out, &block_text(block, at)?);
                    Ok(())
                }
                other => Err(TranslateError::Unsupported(format!(
                    "`{other}` block in {at}; the system prompt can only hold text"
                ))),
            }
        })?;
    } else {
        let text = string(system).ok_or_else(|| {
            invalid("`system` must be a string or an array of text blocks".to_owned())
        })?;
        push_json_escaped(out, &text);
    }
    // Only a lone empty text (or no text at all) joins to "": two blocks give at least "\n".
    if out.len() == text_start {
        out.truncate(mark);
        return Ok(false);
    }
    out.extend_from_slice(b"\"}");
    Ok(true)
}

fn block_kind<'b>(block: Option<&'b Block>, at: At) -> Result<&'b str, TranslateError> {
    block
        .and_then(|b| b.kind.as_ref())
        .and_then(Text::as_str)
        .ok_or_else(|| invalid(format!("{at} is not a content block with a `type`")))
}

fn block_text(block: Option<Block<'_>>, at: At) -> Result<Cow<'_, str>, TranslateError> {
    block
        .and_then(|b| b.text)
        .and_then(Text::into_str)
        .ok_or_else(|| invalid(format!("{at} is a text block without a string `text`")))
}

fn push_message(out: &mut Vec<u8>, index: usize, message: &RawValue) -> Result<(), TranslateError> {
    let at = At::Message(index);
    let message: Message =
        object(message, at)?.ok_or_else(|| invalid(format!("{at} is not an object")))?;
    let role = match message.role.as_ref().and_then(Text::as_str) {
        Some("user") => "user",
        Some("assistant") => "assistant",
        _ => {
            return Err(invalid(format!(
                "{at}.role must be \"user\" or \"assistant\""
            )))
        }
    };
    out.extend_from_slice(b"{\"role\":\"");
    out.extend_from_slice(role.as_bytes());
    out.extend_from_slice(b"\",\"content\":");
    let wrong = || {
        invalid(format!(
            "{at}.content must be a string or an array of content blocks"
        ))
    };
    match message.content {
        Some(blocks) if starts_with(blocks, b'[') => push_blocks(out, index, blocks)?,
        Some(text) => push_json_string(out, &string(text).ok_or_else(wrong)?),
        None => return Err(wrong()),
    }
    out.push(b'}');
    Ok(())
}

/// A translated piece of message content.
enum Part<'a> {
    Text(Cow<'a, str>),
    /// A base64 image, as `data:<media_type>;base64,<data>`.
    Data {
        media_type: Cow<'a, str>,
        data: Cow<'a, str>,
    },
    Url(Cow<'a, str>),
}

/// Text-only content stays a plain string, which every backend's chat template accepts;
/// only content with images needs the parts array, and there the order is kept. Which of the
/// two it is shows only at the end, so the blocks are walked twice (checked and classified,
/// then written) rather than held in between.
fn push_blocks(out: &mut Vec<u8>, message: usize, blocks: &RawValue) -> Result<(), TranslateError> {
    let mut has_image = false;
    for_each_element(blocks, |index, block| {
        let part = translate_block(block, At::Block(message, index))?;
        has_image |= matches!(part, Some(Part::Data { .. } | Part::Url(_)));
        Ok(())
    })?;
    if !has_image {
        out.push(b'"');
        let mut first = true;
        for_each_element(blocks, |index, block| {
            if let Some(Part::Text(text)) = translate_block(block, At::Block(message, index))? {
                if !first {
                    out.extend_from_slice(b"\\n");
                }
                first = false;
                push_json_escaped(out, &text);
            }
            Ok(())
        })?;
        out.push(b'"');
        return Ok(());
    }
    out.push(b'[');
    let mut first = true;
    for_each_element(blocks, |index, block| {
        let Some(part) = translate_block(block, At::Block(message, index))? else {
            return Ok(());
        };
        if !first {
            out.push(b',');
        }
        first = false;
        match part {
            Part::Text(text) => {
                out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                push_json_string(out, &text);
            }
            Part::Data { media_type, data } => {
                out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:");
                push_json_escaped(out, &media_type);
                out.extend_from_slice(b";base64,");
                push_json_escaped(out, &data);
                out.extend_from_slice(b"\"}");
            }
            Part::Url(url) => {
                out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
                push_json_string(out, &url);
                out.push(b'}');
            }
        }
        out.push(b'}');
        Ok(())
    })?;
    out.push(b']');
    Ok(())
}

fn translate_block(block: &RawValue, at: At) -> Result<Option<Part<'_>>, TranslateError> {
    let block: Option<Block> = object(block, at)?;
    match block_kind(block.as_ref(), at)? {
        "text" => block_text(block, at).map(|text| Some(Part::Text(text))),
        "image" => image(block, at).map(Some),
        // Earlier turns' reasoning: chat completions has no place for it, and the model
        // does not need its own old thoughts to continue the conversation.
        "thinking" | "redacted_thinking" => Ok(None),
        kind @ ("tool_use" | "tool_result") => Err(TranslateError::Unsupported(format!(
            "`{kind}` block in {at} (tool use is not supported by this backend)"
        ))),
        other => Err(TranslateError::Unsupported(format!(
            "`{other}` block in {at}; only text and image blocks can be translated"
        ))),
    }
}

fn image<'a>(block: Option<Block<'a>>, at: At) -> Result<Part<'a>, TranslateError> {
    let source = match block.and_then(|b| b.source) {
        Some(source) => object::<ImageSource>(source, format_args!("{at}.source"))?,
        None => None,
    };
    let source =
        source.ok_or_else(|| invalid(format!("{at} is an image block without a `source`")))?;
    let field = |value: Option<Text<'a>>, name: &str| -> Result<Cow<'a, str>, TranslateError> {
        value
            .and_then(Text::into_str)
            .ok_or_else(|| invalid(format!("{at}.source has no string `{name}`")))
    };
    let kind = field(source.kind, "type")?;
    match &*kind {
        "base64" => Ok(Part::Data {
            media_type: field(source.media_type, "media_type")?,
            data: field(source.data, "data")?,
        }),
        "url" => Ok(Part::Url(field(source.url, "url")?)),
        other => Err(TranslateError::Unsupported(format!(
            "image source type `{other}` in {at}"
        ))),
    }
}
