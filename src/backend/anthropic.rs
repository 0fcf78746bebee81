//! Anthropic Messages jobs on backends that only speak OpenAI chat completions: the request
//! is translated forward, and the backend's stream is translated back into Anthropic events.
//!
//! Only tool-less conversations are translated. Tool calls would need the model's output
//! parsed back into `tool_use` blocks, which the backends do differently; refusing them is
//! better than silently answering without the tools the client offered.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Why an Anthropic request cannot be sent as chat completions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// The body is not a JSON object.
    NotAnObject,
    /// A required field is absent (or null).
    MissingField(&'static str),
    /// A field is present but has the wrong shape; the text names it and says what was expected.
    Invalid(String),
    /// Valid Anthropic, but nothing in chat completions can carry it (tools, documents, ...).
    Unsupported(String),
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::NotAnObject => {
                f.write_str("Anthropic request body is not a JSON object")
            }
            TranslateError::MissingField(field) => {
                write!(f, "Anthropic request has no `{field}`")
            }
            TranslateError::Invalid(what) => write!(f, "invalid Anthropic request: {what}"),
            TranslateError::Unsupported(what) => write!(
                f,
                "cannot translate Anthropic request to chat completions: {what}"
            ),
        }
    }
}

impl std::error::Error for TranslateError {}

fn invalid(what: String) -> TranslateError {
    TranslateError::Invalid(what)
}

/// A field counts as absent when null: SDKs serialise unset optionals that way.
fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

// The request side never builds the client's JSON into a `Value`: a request may be megabytes
// of tiny values, and a `Value` tree of those costs tens of times the text's size, which on a
// small device takes the memory the inference server needs. Instead the body is read through
// the small borrowed structs below (fields the translation does not read are skipped without
// being built, via `IgnoredAny`), every array is walked element by element rather than
// collected, and the output is written straight into one byte buffer. Null counts as absent
// throughout: `Option` fields deserialize a JSON null as `None`.

/// Whitespace as JSON defines it (not Unicode's).
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// The top-level fields the translation reads, each kept as the client's raw text (a slice
/// of the body), so they can be checked in a fixed order whatever order the keys came in and
/// numbers can be passed on exactly as written.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    tools: Option<&'a RawValue>,
    #[serde(borrow)]
    system: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    model: Option<Text<'a>>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    top_p: Option<&'a RawValue>,
    #[serde(borrow)]
    top_k: Option<&'a RawValue>,
    #[serde(borrow)]
    stop_sequences: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Option<Text<'a>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// Any content block; which fields matter depends on `type`.
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    text: Option<Text<'a>>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ImageSource<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    media_type: Option<Text<'a>>,
    #[serde(borrow)]
    data: Option<Text<'a>>,
    #[serde(borrow)]
    url: Option<Text<'a>>,
}

/// A field the translation wants as a string. A string is kept, borrowed from the body unless
/// it had escapes; any other value is skipped unbuilt and remembered only as "not a string",
/// so the caller can report the field rather than a parse error.
enum Text<'a> {
    Str(Cow<'a, str>),
    NotAString,
}

impl<'a> Text<'a> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Text::Str(text) => Some(text),
            Text::NotAString => None,
        }
    }

    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Text::Str(text) => Some(text),
            Text::NotAString => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor(PhantomData))
    }
}

struct TextVisitor<'a>(PhantomData<Text<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'a>, E> {
        Ok(Text::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'a>, E> {
        Ok(Text::Str(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'a>, E> {
        Ok(Text::Str(Cow::Owned(text)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text::NotAString)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text::NotAString)
    }
}

/// Where in the request something is. Rendered only when an error is reported, so the
/// translation allocates nothing per message or block to name them.
#[derive(Clone, Copy)]
enum At {
    System(usize),
    Message(usize),
    Block(usize, usize),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::System(index) => write!(f, "system[{index}]"),
            At::Message(index) => write!(f, "messages[{index}]"),
            At::Block(message, block) => write!(f, "messages[{message}].content[{block}]"),
        }
    }
}

/// The JSON type of a raw value, told by its first byte: serde_json hands out raw values
/// already checked to be one well-formed JSON value, with no leading whitespace.
fn starts_with(raw: &RawValue, byte: u8) -> bool {
    raw.get().as_bytes().first() == Some(&byte)
}

fn is_empty_array(raw: &RawValue) -> bool {
    raw.get()
        .strip_prefix('[')
        .is_some_and(|rest| rest.trim_start_matches(JSON_WHITESPACE) == "]")
}

/// The string a raw value holds, or None when it is not a string.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !starts_with(raw, b'"') {
        return None;
    }
    serde_json::from_str::<Text>(raw.get())
        .ok()
        .and_then(Text::into_str)
}

/// Reads a raw value as one of the structs above; Ok(None) when it is not an object (serde's
/// derived structs would otherwise accept an array too). What can still fail here is a
/// repeated key: refused, since which copy wins would be a guess.
fn object<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    at: impl fmt::Display,
) -> Result<Option<T>, TranslateError> {
    if !starts_with(raw, b'{') {
        return Ok(None);
    }
    serde_json::from_str(raw.get())
        .map(Some)
        .map_err(|e| invalid(format!("{at}: {e}")))
}

/// Calls `each` with the index and raw text of every element of a JSON array, in order,
/// without collecting them; the first error `each` returns stops the walk and is returned.
fn for_each_element<'a>(
    array: &'a RawValue,
    mut each: impl FnMut(usize, &'a RawValue) -> Result<(), TranslateError>,
) -> Result<(), TranslateError> {
    let mut stopped = None;
    let mut deserializer = serde_json::Deserializer::from_str(array.get());
    let walked = deserializer.deserialize_seq(Elements {
        each: &mut each,
        stopped: &mut stopped,
    });
    if let Some(error) = stopped {
        return Err(error);
    }
    // Only reachable if `array` is not an array, which callers check first.
    walked.map_err(|e| invalid(format!("cannot read an array: {e}")))
}

struct Elements<'f, F> {
    each: &'f mut F,
    /// serde's error type cannot carry a TranslateError, so it waits here.
    stopped: &'f mut Option<TranslateError>,
}

impl<'de, F> Visitor<'de> for Elements<'_, F>
where
    F: FnMut(usize, &'de RawValue) -> Result<(), TranslateError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            if let Err(error) = (self.each)(index, element) {
                *self.stopped = Some(error);
                return Err(de::Error::custom("stopped"));
            }
            index += 1;
        }
        Ok(())
    }
}

/// Appends `text` as the inside of a JSON string (no quotes), so pieces can be joined into
/// one string without building it first.
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn push_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    push_escaped(out, text);
    out.push(b'"');
}

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
    push_string(&mut out, model);

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
                    push_escaped(out, &block_text(block, at)?);
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
        push_escaped(out, &text);
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
        Some(text) => push_string(out, &string(text).ok_or_else(wrong)?),
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
                push_escaped(out, &text);
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
                push_string(out, &text);
            }
            Part::Data { media_type, data } => {
                out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:");
                push_escaped(out, &media_type);
                out.extend_from_slice(b";base64,");
                push_escaped(out, &data);
                out.extend_from_slice(b"\"}");
            }
            Part::Url(url) => {
                out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
                push_string(out, &url);
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

/// Turns an OpenAI chat-completions SSE stream back into a valid Anthropic Messages event
/// stream: message_start, one text block (index 0), message_delta, message_stop.
#[derive(Debug, Clone)]
pub struct StreamTranslator {
    model: String,
    message_id: String,
    started: bool,
    block_open: bool,
    finished: bool,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    text_deltas: u64,
    finish_reason: Option<String>,
    /// vLLM reports which stop string matched in `choices[0].stop_reason`; other backends
    /// say only "stop", which cannot be told apart from end of turn.
    matched_stop: Option<String>,
}

impl StreamTranslator {
    /// `message_id` like "msg_<something>" supplied by the caller; `model` echoed in
    /// message_start.
    pub fn new(model: &str, message_id: &str) -> Self {
        StreamTranslator {
            model: model.to_owned(),
            message_id: message_id.to_owned(),
            started: false,
            block_open: false,
            finished: false,
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
        if self.finished {
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
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.start(&mut out);
        self.open_block(&mut out);
        self.finished = true;
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
        if self.started {
            return;
        }
        self.started = true;
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

    fn open_block(&mut self, out: &mut Vec<u8>) {
        if self.block_open {
            return;
        }
        self.block_open = true;
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

    fn fail(&mut self, error: &Value, out: &mut Vec<u8>) {
        self.finished = true;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sse::{parse_events, EventSplitter, SseEvent, StreamStats, Usage};

    // Values only here, to compare what was written with what was meant.
    fn translate(body: Value) -> Value {
        let out = request_to_openai(&body.to_string(), "default-model").expect("translates");
        serde_json::from_slice(&out).expect("the output is JSON")
    }

    fn translate_err(body: Value) -> TranslateError {
        request_to_openai(&body.to_string(), "default-model").expect_err("must fail")
    }

    #[test]
    fn string_content_and_sampling_parameters() {
        let out = translate(json!({
            "model": "llama-3.2-3b",
            "max_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stream": false,
            "metadata": {"user_id": "u1"},
            "messages": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi"},
                {"role": "user", "content": "Again"},
            ],
        }));
        assert_eq!(
            out,
            json!({
                "model": "llama-3.2-3b",
                "max_tokens": 256,
                "temperature": 0.2,
                "top_p": 0.9,
                "top_k": 40,
                "messages": [
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi"},
                    {"role": "user", "content": "Again"},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }

    #[test]
    fn model_defaults_to_model_id() {
        let messages = json!([{"role": "user", "content": "x"}]);
        for model in [json!(null), json!("")] {
            let out = translate(json!({"model": model, "messages": messages}));
            assert_eq!(out["model"], "default-model");
        }
        let out = translate(json!({"messages": messages}));
        assert_eq!(out["model"], "default-model");
        assert!(out.get("max_tokens").is_none());
    }

    #[test]
    fn system_string_and_block_array() {
        let out = translate(json!({
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "x"}],
        }));
        assert_eq!(
            out["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        let out = translate(json!({
            "system": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be kind."},
            ],
            "messages": [{"role": "user", "content": "x"}],
        }));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "system", "content": "Be brief.\nBe kind."},
                {"role": "user", "content": "x"},
            ])
        );
        let out = translate(json!({"system": "", "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(out["messages"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn text_blocks_are_joined() {
        let out = translate(json!({"messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "first"},
                {"type": "text", "text": "second"},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "answer"},
            ]},
            {"role": "user", "content": []},
        ]}));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "first\nsecond"},
                {"role": "assistant", "content": "answer"},
                {"role": "user", "content": ""},
            ])
        );
    }

    #[test]
    fn images_become_data_urls_in_order() {
        let out = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            {"type": "text", "text": "Be precise."},
        ]}]}));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {"type": "text", "text": "Be precise."},
            ])
        );
    }

    #[test]
    fn stop_sequences_become_stop() {
        let out = translate(json!({
            "stop_sequences": ["\n\nHuman:", "END"],
            "messages": [{"role": "user", "content": "x"}],
        }));
        assert_eq!(out["stop"], json!(["\n\nHuman:", "END"]));
        let out = translate(json!({
            "stop_sequences": [],
            "messages": [{"role": "user", "content": "x"}],
        }));
        assert!(out.get("stop").is_none());
    }

    #[test]
    fn tool_blocks_are_unsupported() {
        let err = translate_err(json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            ]},
        ]}));
        assert!(
            matches!(&err, TranslateError::Unsupported(what) if what.contains("tool_use") && what.contains("messages[1].content[0]")),
            "{err:?}"
        );
        let err = translate_err(json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        ]}]}));
        assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("tool_result")));
        assert!(err.to_string().contains("tool_result"), "{err}");
    }

    #[test]
    fn tool_definitions_are_unsupported_unless_empty() {
        let messages = json!([{"role": "user", "content": "x"}]);
        let err = translate_err(json!({"tools": [{"name": "t"}], "messages": messages}));
        assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("tools")));
        translate(json!({"tools": [], "messages": messages}));
        translate(json!({"tools": null, "messages": messages}));
    }

    #[test]
    fn other_blocks_are_unsupported() {
        let err = translate_err(json!({"messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "data": "x"}},
        ]}]}));
        assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("document")));
        let err = translate_err(json!({
            "system": [{"type": "image", "source": {}}],
            "messages": [],
        }));
        assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("system[0]")));
        let err = translate_err(json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "f"}},
        ]}]}));
        assert!(matches!(&err, TranslateError::Unsupported(what) if what.contains("file")));
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        assert_eq!(translate_err(json!([1])), TranslateError::NotAnObject);
        assert_eq!(
            translate_err(json!({"model": "m"})),
            TranslateError::MissingField("messages")
        );
        assert_eq!(
            translate_err(json!({"messages": null})),
            TranslateError::MissingField("messages")
        );
        let cases = [
            (json!({"messages": "hi"}), "`messages`"),
            (json!({"messages": [1]}), "messages[0]"),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image"}]}]}),
                "source",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
                "media_type",
            ),
            (json!({"system": 5, "messages": []}), "`system`"),
            (
                json!({"system": [{"type": "text"}], "messages": []}),
                "system[0]",
            ),
            (json!({"model": 5, "messages": []}), "`model`"),
            (json!({"max_tokens": -1, "messages": []}), "`max_tokens`"),
            (json!({"max_tokens": "9", "messages": []}), "`max_tokens`"),
            (
                json!({"temperature": "hot", "messages": []}),
                "`temperature`",
            ),
            (json!({"top_k": [], "messages": []}), "`top_k`"),
            (
                json!({"stop_sequences": "END", "messages": []}),
                "`stop_sequences`",
            ),
            (
                json!({"stop_sequences": [1], "messages": []}),
                "`stop_sequences`",
            ),
        ];
        for (body, needle) in cases {
            let err = translate_err(body.clone());
            assert!(
                matches!(&err, TranslateError::Invalid(what) if what.contains(needle)),
                "{body} gave {err:?}, expected mention of {needle}"
            );
        }
        assert_eq!(
            TranslateError::MissingField("messages").to_string(),
            "Anthropic request has no `messages`"
        );
    }

    fn translate_text(body: &str) -> Result<Vec<u8>, TranslateError> {
        request_to_openai(body, "default-model")
    }

    /// A request of many tiny values (what would cost ~30x its size as a `Value` tree): an
    /// unknown 2 MiB field of them is skipped without being built, and 10,000 short messages
    /// are carried over one by one. The output is about the conversation's size: nothing of
    /// the skipped field reaches it.
    #[test]
    fn large_requests_of_tiny_values_translate() {
        let mut body = String::from(r#"{"metadata":{"tags":["#);
        while body.len() < 2 << 20 {
            body.push_str("0,1,");
        }
        body.push_str(r#"{}]},"system":"Be brief.","messages":["#);
        let messages_start = body.len();
        for i in 0..10_000 {
            if i > 0 {
                body.push(',');
            }
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            body.push_str(&format!(r#"{{"role":"{role}","content":"m{i}"}}"#));
        }
        let messages_len = body.len() - messages_start;
        body.push_str(r#"],"max_tokens":16}"#);

        let out = translate_text(&body).expect("translates");
        assert!(
            out.len() < messages_len + 1024,
            "{} bytes out for {messages_len} bytes of messages",
            out.len()
        );
        let out: Value = serde_json::from_slice(&out).expect("JSON");
        let messages = out["messages"].as_array().expect("messages");
        assert_eq!(messages.len(), 10_001);
        assert_eq!(
            messages[0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(messages[1], json!({"role": "user", "content": "m0"}));
        assert_eq!(
            messages[10_000],
            json!({"role": "assistant", "content": "m9999"})
        );
        assert_eq!(out["max_tokens"], 16);
        assert!(out.get("metadata").is_none());
    }

    /// Nesting far past serde_json's recursion limit in skipped values: a `Value` tree cannot
    /// even be built from this, the translation skips them (without recursing).
    #[test]
    fn deeply_nested_skipped_fields_do_not_matter() {
        let depth = 100_000;
        let array = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let object = format!("{}0{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let body = format!(
            r#"{{"metadata":{array},"messages":[
                {{"role":"user","content":"x","extra":{object}}},
                {{"role":"assistant","content":[
                    {{"type":"thinking","thinking":{object},"text":{array},"source":{array}}},
                    {{"type":"text","text":"y"}}
                ]}}
            ]}}"#
        );
        assert!(serde_json::from_str::<Value>(&body).is_err());
        let out: Value =
            serde_json::from_slice(&translate_text(&body).expect("translates")).expect("JSON");
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
        );
        // Where a string was wanted, the deep value is reported as not one.
        let body = format!(r#"{{"model":{array},"messages":[]}}"#);
        let err = translate_text(&body).expect_err("model");
        assert!(
            matches!(&err, TranslateError::Invalid(what) if what.contains("`model`")),
            "{err:?}"
        );
    }

    #[test]
    fn non_object_bodies_are_refused() {
        for body in ["[1]", " \n[]", "\"x\"", "null", "5", "true", "", "not json"] {
            assert_eq!(
                translate_text(body).expect_err(body),
                TranslateError::NotAnObject,
                "{body:?}"
            );
        }
        for body in [
            r#"{"messages":["#,
            r#"{"messages":[]} x"#,
            r#"{"messages":[],}"#,
        ] {
            let err = translate_text(body).expect_err(body);
            assert!(
                matches!(&err, TranslateError::Invalid(what) if what.contains("not valid JSON")),
                "{body:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn repeated_keys_are_refused() {
        let cases = [
            (r#"{"messages":[],"messages":[]}"#, "duplicate field"),
            (
                r#"{"messages":[{"role":"user","role":"assistant","content":"x"}]}"#,
                "messages[0]",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a","text":"b"}]}]}"#,
                "messages[0].content[0]",
            ),
            (
                r#"{"system":[{"type":"text","type":"text","text":"a"}],"messages":[]}"#,
                "system[0]",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"a","url":"b"}}]}]}"#,
                "messages[0].content[0].source",
            ),
        ];
        for (body, needle) in cases {
            let err = translate_text(body).expect_err(body);
            assert!(
                matches!(&err, TranslateError::Invalid(what) if what.contains(needle) && what.contains("duplicate")),
                "{body} gave {err:?}, expected mention of {needle}"
            );
        }
    }

    /// Numbers are passed on as the client wrote them, never through an f64.
    #[test]
    fn numbers_pass_through_as_written() {
        let body = r#"{"max_tokens": 256, "temperature": 1.0, "top_p": 0.90000000000000002,
            "top_k": 4E1, "messages": []}"#;
        let out = String::from_utf8(translate_text(body).expect("translates")).expect("UTF-8");
        for written in [
            r#""max_tokens":256"#,
            r#""temperature":1.0"#,
            r#""top_p":0.90000000000000002"#,
            r#""top_k":4E1"#,
        ] {
            assert!(out.contains(written), "{written} not in {out}");
        }
        let cases = [
            (r#"{"max_tokens": 1.0, "messages": []}"#, "`max_tokens`"),
            (r#"{"max_tokens": 1e2, "messages": []}"#, "`max_tokens`"),
            (
                r#"{"max_tokens": 18446744073709551616, "messages": []}"#,
                "`max_tokens`",
            ),
            (r#"{"temperature": 1e400, "messages": []}"#, "`temperature`"),
            (r#"{"top_p": true, "messages": []}"#, "`top_p`"),
            (r#"{"top_k": {}, "messages": []}"#, "`top_k`"),
        ];
        for (body, needle) in cases {
            let err = translate_text(body).expect_err(body);
            assert!(
                matches!(&err, TranslateError::Invalid(what) if what.contains(needle)),
                "{body} gave {err:?}"
            );
        }
        let out = translate(json!({"max_tokens": 0, "messages": []}));
        assert_eq!(out["max_tokens"], 0);
    }

    /// Strings are decoded from the client's escapes and written with the output's own; the
    /// result means the same text.
    #[test]
    fn strings_survive_escaping() {
        let awkward: String = (0u8..0x20)
            .map(char::from)
            .chain("\"\\/ é 😀 \u{7f}\u{2028}".chars())
            .collect();
        let out = translate(json!({
            "model": awkward,
            "system": [{"type": "text", "text": awkward}, {"type": "text", "text": awkward}],
            "stop_sequences": [awkward],
            "messages": [
                {"role": "user", "content": awkward},
                {"role": "assistant", "content": [{"type": "text", "text": awkward}, {"type": "text", "text": "b"}]},
                {"role": "user", "content": [
                    {"type": "text", "text": awkward},
                    {"type": "image", "source": {"type": "base64", "media_type": awkward, "data": "AA=="}},
                    {"type": "image", "source": {"type": "url", "url": awkward}},
                ]},
            ],
        }));
        assert_eq!(out["model"], awkward.as_str());
        assert_eq!(out["stop"], json!([awkward]));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "system", "content": format!("{awkward}\n{awkward}")},
                {"role": "user", "content": awkward},
                {"role": "assistant", "content": format!("{awkward}\nb")},
                {"role": "user", "content": [
                    {"type": "text", "text": awkward},
                    {"type": "image_url", "image_url": {"url": format!("data:{awkward};base64,AA==")}},
                    {"type": "image_url", "image_url": {"url": awkward}},
                ]},
            ])
        );

        // Escapes the client chose, including for keys and the role, are read as what they mean.
        let body = r#"{"m\u0065ssages":[{"role":"\u0075ser","content":"\u0041\/\ud83d\ude00"}]}"#;
        let out: Value =
            serde_json::from_slice(&translate_text(body).expect("translates")).expect("JSON");
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": "A/😀"}])
        );

        // A lone surrogate is not text.
        let err = translate_text(r#"{"messages":[{"role":"user","content":"\ud800"}]}"#)
            .expect_err("lone surrogate");
        assert!(
            matches!(&err, TranslateError::Invalid(what) if what.contains("messages[0].content")),
            "{err:?}"
        );
    }

    /// Checks the order clients rely on and that each event's `type` matches its name.
    fn assert_well_formed(events: &[SseEvent]) {
        let names: Vec<&str> = events
            .iter()
            .map(|e| e.event.as_deref().expect("every event is named"))
            .collect();
        for event in events {
            let payload: Value = serde_json::from_str(&event.data).expect("data is JSON");
            assert_eq!(payload["type"].as_str(), event.event.as_deref());
        }
        assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
        assert_eq!(names.get(1), Some(&"content_block_start"), "{names:?}");
        let n = names.len();
        assert!(n >= 5, "{names:?}");
        assert_eq!(
            names[n - 3..],
            ["content_block_stop", "message_delta", "message_stop"]
        );
        assert!(
            names[2..n - 3]
                .iter()
                .all(|name| *name == "content_block_delta"),
            "{names:?}"
        );
    }

    /// Feeds an OpenAI SSE body through the splitter and translator, as the relay does,
    /// and returns the Anthropic bytes.
    fn run_stream(openai: &[u8], piece: usize) -> Vec<u8> {
        let mut splitter = EventSplitter::new(1 << 20);
        let mut translator = StreamTranslator::new("llama-3.2-3b", "msg_test1");
        let mut out = Vec::new();
        for chunk in openai.chunks(piece) {
            let complete = splitter.push(chunk).expect("frames");
            for event in parse_events(&complete) {
                out.extend(translator.on_openai_data(&event.data));
            }
        }
        for event in parse_events(&splitter.take_rest()) {
            out.extend(translator.on_openai_data(&event.data));
        }
        out.extend(translator.finish());
        out
    }

    const OPENAI_STREAM: &[u8] = br#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" Hello"},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" from"},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" tiny\n\"model\""},"finish_reason":null}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}

data: [DONE]

"#;

    #[test]
    fn translated_stream_is_well_formed_and_carries_usage() {
        for piece in [1, 7, OPENAI_STREAM.len()] {
            let anthropic = run_stream(OPENAI_STREAM, piece);
            let events = parse_events(&anthropic);
            assert_well_formed(&events);

            let mut stats = StreamStats::default();
            for event in &events {
                stats.observe(event);
            }
            assert_eq!(
                stats.usage,
                Usage {
                    input: Some(11),
                    output: Some(4)
                }
            );
            assert_eq!(stats.content_events, 3);
            assert!(stats.done);
            assert_eq!(stats.finish_reason.as_deref(), Some("end_turn"));

            let text: String = events
                .iter()
                .filter(|e| e.event.as_deref() == Some("content_block_delta"))
                .filter_map(|e| {
                    let payload: Value = serde_json::from_str(&e.data).ok()?;
                    payload["delta"]["text"].as_str().map(str::to_owned)
                })
                .collect();
            assert_eq!(text, " Hello from tiny\n\"model\"");
        }
    }

    #[test]
    fn exact_event_shapes() {
        let events = parse_events(&run_stream(OPENAI_STREAM, OPENAI_STREAM.len()));
        let payloads: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str(&e.data).expect("json"))
            .collect();
        assert_eq!(
            payloads[0],
            json!({"type": "message_start", "message": {
                "id": "msg_test1", "type": "message", "role": "assistant", "content": [],
                "model": "llama-3.2-3b", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }})
        );
        assert_eq!(
            payloads[1],
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(
            payloads[2],
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " Hello"}})
        );
        assert_eq!(
            payloads[5],
            json!({"type": "content_block_stop", "index": 0})
        );
        assert_eq!(
            payloads[6],
            json!({"type": "message_delta",
                   "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": 4, "input_tokens": 11}})
        );
        assert_eq!(payloads[7], json!({"type": "message_stop"}));
        assert_eq!(payloads.len(), 8);
    }

    #[test]
    fn wire_format_is_event_then_single_data_line() {
        let mut t = StreamTranslator::new("m", "msg_1");
        let bytes = t.on_openai_data(r#"{"choices":[{"delta":{"content":"a\r\nb"}}]}"#);
        let text = String::from_utf8(bytes).expect("utf-8");
        let blocks: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(blocks.len(), 3, "{text}");
        for block in blocks {
            let lines: Vec<&str> = block.split('\n').collect();
            assert_eq!(lines.len(), 2, "{block}");
            assert!(lines[0].starts_with("event: "));
            assert!(lines[1].starts_with("data: {"));
        }
    }

    #[test]
    fn done_finishes_and_finish_is_idempotent() {
        let mut t = StreamTranslator::new("m", "msg_1");
        t.on_openai_data(r#"{"choices":[{"delta":{"content":"x"}}]}"#);
        let at_done = t.on_openai_data("[DONE]");
        assert!(!at_done.is_empty());
        assert!(t.finish().is_empty());
        assert!(t.finish().is_empty());
        assert!(t
            .on_openai_data(r#"{"choices":[{"delta":{"content":"late"}}]}"#)
            .is_empty());
    }

    #[test]
    fn empty_stream_still_has_an_empty_text_block() {
        let mut t = StreamTranslator::new("m", "msg_1");
        let events = parse_events(&t.finish());
        assert_well_formed(&events);
        assert_eq!(events.len(), 5);
        let mut stats = StreamStats::default();
        events.iter().for_each(|e| stats.observe(e));
        assert_eq!(stats.output_tokens(), 0);
        assert_eq!(stats.usage.input, Some(0));
        assert!(stats.done);
    }

    #[test]
    fn first_call_emits_message_start_even_without_text() {
        let mut t = StreamTranslator::new("m", "msg_1");
        let events = parse_events(
            &t.on_openai_data(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#),
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.as_deref(), Some("message_start"));
        assert!(t.on_openai_data("{}").is_empty());
        assert!(t.on_openai_data("not json").is_empty());
    }

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        let cases = [
            (r#""stop""#, None, "end_turn", Value::Null),
            (r#""length""#, None, "max_tokens", Value::Null),
            (r#""content_filter""#, None, "refusal", Value::Null),
            (r#""tool_calls""#, None, "end_turn", Value::Null),
            ("null", None, "end_turn", Value::Null),
            (r#""stop""#, Some(r#""END""#), "stop_sequence", json!("END")),
            // vLLM gives a token id when a stop token, not a string, ended it.
            (r#""stop""#, Some("128009"), "end_turn", Value::Null),
        ];
        for (finish, stop_reason, expected, sequence) in cases {
            let mut t = StreamTranslator::new("m", "msg_1");
            let chunk = format!(
                r#"{{"choices":[{{"delta":{{}},"finish_reason":{finish},"stop_reason":{}}}]}}"#,
                stop_reason.unwrap_or("null")
            );
            t.on_openai_data(&chunk);
            let events = parse_events(&t.finish());
            let delta = events
                .iter()
                .find(|e| e.event.as_deref() == Some("message_delta"))
                .expect("message_delta");
            let payload: Value = serde_json::from_str(&delta.data).expect("json");
            assert_eq!(payload["delta"]["stop_reason"], expected, "{chunk}");
            assert_eq!(payload["delta"]["stop_sequence"], sequence, "{chunk}");
        }
    }

    #[test]
    fn output_tokens_estimated_without_usage() {
        let mut t = StreamTranslator::new("m", "msg_1");
        let mut bytes = Vec::new();
        for word in ["a", "b", "c"] {
            bytes.extend(t.on_openai_data(&format!(
                r#"{{"choices":[{{"delta":{{"content":"{word}"}}}}]}}"#
            )));
        }
        bytes.extend(t.on_openai_data(r#"{"choices":[{"delta":{"reasoning_content":"hidden"}}]}"#));
        bytes.extend(t.finish());
        let events = parse_events(&bytes);
        assert_well_formed(&events);
        let mut stats = StreamStats::default();
        events.iter().for_each(|e| stats.observe(e));
        assert_eq!(stats.usage.output, Some(3));
        assert_eq!(stats.usage.input, Some(0));
        assert!(!String::from_utf8_lossy(&bytes).contains("hidden"));
    }

    #[test]
    fn usage_known_before_start_goes_into_message_start() {
        let mut t = StreamTranslator::new("m", "msg_1");
        let events = parse_events(&t.on_openai_data(
            r#"{"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#,
        ));
        let start: Value = serde_json::from_str(&events[0].data).expect("json");
        assert_eq!(start["message"]["usage"]["input_tokens"], 9);
        assert_eq!(start["message"]["usage"]["output_tokens"], 0);
    }

    #[test]
    fn backend_error_becomes_error_event_and_ends_stream() {
        let mut t = StreamTranslator::new("m", "msg_1");
        t.on_openai_data(r#"{"choices":[{"delta":{"content":"x"}}]}"#);
        let events = parse_events(&t.on_openai_data(
            r#"{"error":{"code":500,"message":"context exceeded","type":"server_error"}}"#,
        ));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.as_deref(), Some("error"));
        let payload: Value = serde_json::from_str(&events[0].data).expect("json");
        assert_eq!(
            payload,
            json!({"type": "error", "error": {"type": "api_error", "message": "context exceeded"}})
        );
        assert!(t.finish().is_empty());

        let mut t = StreamTranslator::new("m", "msg_1");
        let events = parse_events(&t.on_openai_data(r#"{"error":"boom"}"#));
        assert_eq!(events.len(), 1);
        assert!(events[0].data.contains("boom"));
    }

    #[test]
    fn arbitrary_data_never_panics_and_stays_well_formed() {
        let samples = [
            "",
            "[DONE",
            "null",
            "[]",
            r#"{"choices":null}"#,
            r#"{"choices":[1]}"#,
            r#"{"choices":[{"delta":[]}]}"#,
            r#"{"choices":[{"delta":{"content":{}}}]}"#,
            r#"{"usage":{"prompt_tokens":-3,"completion_tokens":1e99}}"#,
            r#"{"choices":[{"finish_reason":5,"stop_reason":[]}]}"#,
            r#"{"error":null}"#,
            "\u{0}\u{feff}",
        ];
        let mut t = StreamTranslator::new("m\"odel", "msg_\n1");
        let mut bytes = Vec::new();
        for sample in samples {
            bytes.extend(t.on_openai_data(sample));
        }
        bytes.extend(t.finish());
        let events = parse_events(&bytes);
        assert_well_formed(&events);
        let start: Value = serde_json::from_str(&events[0].data).expect("json");
        assert_eq!(start["message"]["model"], "m\"odel");
        assert_eq!(start["message"]["id"], "msg_\n1");
    }
}
