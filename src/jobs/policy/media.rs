//! Remote media: content parts and blocks that would make the backend fetch a URL.

use super::json::*;
use super::refusal::{Refusal, QUOTE_CHARS};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// How far Anthropic blocks may nest inside one another (tool_result → document →
/// content source → image is 3).
const MAX_BLOCK_NESTING: usize = 4;

/// OpenAI message content: a string, or parts of which none may carry a remote URL.
pub(super) fn openai_content(content: &RawValue, at: &Place<'_>) -> Result<(), Refusal> {
    match kind(content.get()) {
        Kind::Array => each_element(content.get(), usize::MAX, unlimited, |j, part| {
            openai_part(part, &Place::Index(at, j))
        }),
        // Not OpenAI's shape, but a lenient backend may read it as a single part.
        Kind::Object => openai_part(content, at),
        _ => Ok(()),
    }
}

pub(super) fn openai_part(part: &RawValue, at: &Place<'_>) -> Result<(), Refusal> {
    each_entry(part.get(), |key, value| {
        if carries_remote(&key, value, true)? {
            return Err(remote_media(at, &key));
        }
        Ok(())
    })
}

/// Whether a content part's field holds a URL the backend would fetch: a string under
/// `url` or `*_url` that is not a `data:` URL (file:// reads the server's own disk, so
/// every other scheme counts), or a `data`/`file_data` string that is a scheme://
/// URL instead of base64. `descend` looks one object level down
/// (`{"image_url": {"url": ...}}`, `{"file": {"file_data": ...}}`).
pub(super) fn carries_remote(key: &str, value: &RawValue, descend: bool) -> Result<bool, Refusal> {
    match kind(value.get()) {
        Kind::String => {
            let Some(text) = string(value.get())? else {
                return Ok(false);
            };
            Ok((is_url_key(key) && !is_data_url(&text))
                || ((key == "data" || key == "file_data") && is_scheme_url(&text)))
        }
        Kind::Object if descend => {
            let mut found = false;
            each_entry(value.get(), |k, v| {
                found = found || carries_remote(&k, v, false)?;
                Ok(())
            })?;
            Ok(found)
        }
        _ => Ok(false),
    }
}

pub(super) fn is_url_key(key: &str) -> bool {
    key == "url" || key.ends_with("_url")
}

pub(super) fn is_data_url(s: &str) -> bool {
    let s = s.trim_start();
    s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:"))
}

/// `scheme://...` (base64 has no `:`, so encoded data never looks like this).
pub(super) fn is_scheme_url(s: &str) -> bool {
    let s = s.trim_start().as_bytes();
    let scheme = s
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.'))
        .unwrap_or(s.len());
    scheme > 0 && s[0].is_ascii_alphabetic() && s[scheme..].starts_with(b"://")
}

pub(super) fn remote_media(at: &Place<'_>, key: &str) -> Refusal {
    Refusal::new(format!(
        "remote media URL in {at} ({}); only data: URLs are accepted",
        escape(key, QUOTE_CHARS)
    ))
}

/// Anthropic content (message content, or `system`): a string, or blocks.
pub(super) fn anthropic_content(
    content: &RawValue,
    at: &Place<'_>,
    depth: usize,
) -> Result<(), Refusal> {
    match kind(content.get()) {
        Kind::Array => each_element(content.get(), usize::MAX, unlimited, |j, block| {
            anthropic_block(block, &Place::Index(at, j), depth)
        }),
        Kind::Object => anthropic_block(content, at, depth),
        _ => Ok(()),
    }
}

/// An Anthropic block: its `source` may not be a URL, blocks nested under `content`
/// (tool_result, search_result) are checked the same, and OpenAI-style URL fields are
/// refused too since native `/v1/messages` endpoints convert blocks to their own parts.
/// Tool-use blocks are exempt from the last rule: their `input` holds call arguments,
/// which often name URLs nobody fetches for the model.
pub(super) fn anthropic_block(
    block: &RawValue,
    at: &Place<'_>,
    depth: usize,
) -> Result<(), Refusal> {
    if kind(block.get()) != Kind::Object {
        return Ok(());
    }
    if depth >= MAX_BLOCK_NESTING {
        return Err(Refusal::new(format!(
            "{at} nests content blocks more than {MAX_BLOCK_NESTING} levels deep"
        )));
    }
    // Exempt only when every `type` the block carries says tool use: backends disagree
    // on which of duplicate keys wins.
    let mut tool_use: Option<bool> = None;
    let mut url_field: Option<Cow<'_, str>> = None;
    each_entry(block.get(), |key, value| {
        match &*key {
            "type" => {
                let this = string(value.get())?.is_some_and(|t| t.ends_with("tool_use"));
                tool_use = Some(tool_use.unwrap_or(true) && this);
            }
            "source" if kind(value.get()) == Kind::Object => source(value, at, depth)?,
            "content" if kind(value.get()) == Kind::Array => {
                anthropic_content(value, &Place::Field(at, "content"), depth + 1)?
            }
            _ => {
                if url_field.is_none() && carries_remote(&key, value, true)? {
                    url_field = Some(key);
                }
            }
        }
        Ok(())
    })?;
    match url_field {
        Some(key) if tool_use != Some(true) => Err(remote_media(at, &key)),
        _ => Ok(()),
    }
}

/// An image/document `source`: `url` sources (or any with a URL field) refused;
/// base64, text, file and content sources pass, the last with its blocks checked.
pub(super) fn source(source: &RawValue, at: &Place<'_>, depth: usize) -> Result<(), Refusal> {
    let mut remote = false;
    each_entry(source.get(), |key, value| {
        match &*key {
            "type" => {
                remote =
                    remote || string(value.get())?.is_some_and(|t| t.eq_ignore_ascii_case("url"))
            }
            // Text sources hold the document in `data`, which may well start with a URL:
            // only URL-named fields count here.
            _ if is_url_key(&key) => remote = true,
            "content" => {
                let here = Place::Field(at, "source");
                anthropic_content(value, &Place::Field(&here, "content"), depth + 1)?
            }
            _ => {}
        }
        Ok(())
    })?;
    if remote {
        return Err(Refusal::new(format!(
            "remote media URL in {at} (url source); only base64, text or content sources are accepted"
        )));
    }
    Ok(())
}
