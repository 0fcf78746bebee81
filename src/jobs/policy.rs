//! Request policy: what a paying client's job may ask of the operator's backend.
//!
//! Anyone who pays can send a job, so every byte of its `request` is hostile. [`apply`]
//! runs before any byte reaches a backend and either refuses the job or produces the one
//! body the backend will see: forced fields set, output length clamped, remote media and
//! server-side tools refused, tool schemas bounded, and every top-level field that is not
//! on the dialect's allow-list dropped (server extensions such as llama.cpp's `grammar` or
//! vLLM's `guided_json` included) unless the operator re-admits it.
//!
//! Memory stays near the size of the request whatever its shape: nothing client-controlled
//! becomes a `serde_json::Value` (a tree of a million tiny values costs ~30x their bytes).
//! The top level is read as borrowed `&RawValue`s, the parts the policy looks into are
//! walked entry by entry without being collected, and the body is written from the kept
//! raw text.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Request body dialect (the job frame's `format`).
pub use crate::protocol::JobFormat as Dialect;

/// Top-level fields of an OpenAI chat-completions body that reach the backend. The
/// forced ones are listed for completeness: their client values never pass.
const OPENAI_FIELDS: &[&str] = &[
    // Walked: entry count, total bytes, remote media in content parts.
    "messages",
    // Forced: the job's model, always streaming, usage always reported (it is what the
    // operator is paid by).
    "model",
    "stream",
    "stream_options",
    // Clamped to the operator's output bound.
    "max_tokens",
    "max_completion_tokens",
    // Must be 1: more choices multiply the work of a job priced as one.
    "n",
    "best_of",
    "logprobs",
    // Capped: each extra alternative costs a sort per generated token.
    "top_logprobs",
    // At most 300 entries (OpenAI's own limit); each is applied at every token.
    "logit_bias",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "temperature",
    "top_p",
    // Schema bounded and type restricted: a schema compiles into a grammar whose cost
    // grows with it.
    "response_format",
    // Functions only (no server-run tools); schemas bounded like response_format's.
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    // The deprecated form of tools, bounded the same way.
    "functions",
    "function_call",
    "user",
    "metadata",
    "store",
    "reasoning_effort",
    "service_tier",
    "modalities",
    "verbosity",
    "prediction",
];

/// Top-level fields of an Anthropic Messages body that reach the backend.
const ANTHROPIC_FIELDS: &[&str] = &[
    // Walked: entry count, total bytes (with `system`), remote media in blocks.
    "messages",
    "system",
    // Forced.
    "model",
    "stream",
    // Clamped.
    "max_tokens",
    "metadata",
    "stop_sequences",
    "temperature",
    "top_k",
    "top_p",
    // Client tools only (no type, or "custom"); a typed tool runs on the serving side
    // and can reach the network. Schemas bounded.
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
];

/// Names of dropped fields kept for the debug log; the rest are only counted.
const MAX_DROPPED_NAMES: usize = 32;
/// How far Anthropic blocks may nest inside one another (tool_result → document →
/// content source → image is 3).
const MAX_BLOCK_NESTING: usize = 4;
/// OpenAI's own limit on `logit_bias`.
const MAX_LOGIT_BIAS: usize = 300;
/// Characters of a client value quoted in a refusal.
const QUOTE_CHARS: usize = 40;
/// Characters of a dropped field's name kept for the log.
const DROPPED_NAME_CHARS: usize = 64;
/// A value read raw but not decodable (serde_json's own message may quote client text).
const MALFORMED: &str = "the request holds malformed JSON";

/// Operator limits for job requests.
#[derive(Debug, Clone)]
pub struct RequestPolicy {
    /// Upper bound for max_tokens / max_completion_tokens; the caller already resolved it
    /// as min(limits.max_output_tokens, the model's context window). Always >= 1 (0 is
    /// treated as 1).
    pub max_output_tokens: u32,
    /// Entries in `messages`.
    pub max_messages: usize,
    /// Raw JSON bytes of `messages` plus Anthropic `system`.
    pub max_prompt_bytes: usize,
    /// Raw JSON bytes of one tool schema or response_format schema.
    pub max_schema_bytes: usize,
    /// `{`/`[` nesting of one such schema.
    pub max_schema_depth: usize,
    /// Entries in `tools` (and, separately, in the deprecated `functions`).
    pub max_tools: usize,
    /// Cap for `top_logprobs`.
    pub max_top_logprobs: u32,
    /// `{`/`[` nesting of the whole request, so that no backend's parser meets a body
    /// deeper than this. Never below `max_schema_depth + 8`, so a schema at its own limit
    /// still fits inside `tools[i].function.parameters`.
    pub max_request_depth: usize,
    /// Lets content carry http(s) and other non-`data:` URLs, which the backend would
    /// fetch from the operator's network.
    pub allow_remote_media: bool,
    /// Top-level field names the operator allows through although the policy would drop
    /// them (server extensions such as "grammar", "cache_prompt", ...). Never overrides
    /// the forced fields (model, stream, stream_options.include_usage, max_tokens clamp,
    /// n/best_of): those are checked the same whichever list admitted them.
    pub allow_fields: Vec<String>,
}

impl RequestPolicy {
    /// The defaults: 1024 messages, 4 MiB of prompt, 64 KiB and 32 levels per schema,
    /// 128 tools, top_logprobs 20, request nesting 64, no remote media, no extra fields.
    pub fn new(max_output_tokens: u32) -> Self {
        RequestPolicy {
            max_output_tokens: max_output_tokens.max(1),
            max_messages: 1024,
            max_prompt_bytes: 4 << 20,
            max_schema_bytes: 64 << 10,
            max_schema_depth: 32,
            max_tools: 128,
            max_top_logprobs: 20,
            max_request_depth: 64,
            allow_remote_media: false,
            allow_fields: Vec::new(),
        }
    }
}

/// Why a job was refused. The reason names the field and the limit and quotes at most
/// 40 characters of any client value, escaped, so it is safe to log and to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    reason: String,
}

impl Refusal {
    fn new(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
        }
    }

    /// The reason alone, without the "refused by provider policy" prefix.
    #[cfg(test)]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused by provider policy: {}", self.reason)
    }
}

impl std::error::Error for Refusal {}

/// A request the policy let through, as the backend will receive it.
#[derive(Debug, Clone)]
pub struct Shaped {
    /// The JSON body to send to the backend.
    pub body: Vec<u8>,
    /// Top-level fields dropped, for a debug log: each name escaped and cut to 64
    /// characters; past 32 names one last entry says how many more there were.
    pub dropped: Vec<String>,
}

/// Applies the policy to one job request. `raw` is the job's `request` object as JSON
/// text, exactly as it arrived in the frame.
///
/// Forced, whatever the client sent: `model` = `model_id`, `stream` = true and, OpenAI,
/// `stream_options` = `{"include_usage": true}` (the operator is paid by the usage the
/// backend reports, so the client cannot turn it off).
///
/// Output length, OpenAI `max_tokens` and `max_completion_tokens`, Anthropic
/// `max_tokens` (N = `policy.max_output_tokens`):
/// - an integer above N becomes N, and so does a negative one (llama.cpp's and Ollama's
///   "no limit" idiom, -1);
/// - 0 becomes 1;
/// - null counts as absent (SDKs serialise unset optionals that way);
/// - anything else that is not an integer literal (1.0, 1e3, "10", ...) is refused;
/// - when absent, `max_tokens: N` is added (OpenAI: only when neither key is present).
///
/// `n` and `best_of` must be absent, null or 1. `top_logprobs` above the cap becomes
/// the cap; negative or non-integer is refused.
///
/// A top-level key that appears twice is refused when the policy would keep or force
/// it: backends disagree on which copy wins, and the one they pick must be the one that
/// was checked. Duplicates of dropped keys do not matter (neither copy is sent).
pub fn apply(
    dialect: Dialect,
    raw: &str,
    model_id: &str,
    policy: &RequestPolicy,
) -> Result<Shaped, Refusal> {
    let (mut fields, dropped) = top_level(dialect, raw, policy)?;

    let depth_limit = policy
        .max_request_depth
        .max(policy.max_schema_depth.saturating_add(8));
    let scanned = scan(raw.as_bytes());
    if scanned.depth > depth_limit {
        return Err(Refusal::new(format!(
            "the request nests {} levels deep, over the limit of {depth_limit}",
            scanned.depth
        )));
    }
    if scanned.unpaired_surrogate {
        return Err(Refusal::new(
            "the request holds a \\u escape of an unpaired UTF-16 surrogate",
        ));
    }

    check_prompt(dialect, &fields, policy)?;

    let n = policy.max_output_tokens.max(1);
    for field in fields.iter_mut().filter(|f| matches!(f.emit, Emit::Raw)) {
        field.emit = check_field(dialect, &field.name, field.value, n, policy)?;
    }

    Ok(Shaped {
        body: write_body(dialect, raw.len(), model_id, &fields, n),
        dropped,
    })
}

/// A top-level field the policy keeps or forces, in the order the client sent it.
struct Field<'a> {
    name: Cow<'a, str>,
    value: &'a RawValue,
    emit: Emit,
}

/// What goes into the body for a field.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Emit {
    /// The client's raw value.
    Raw,
    /// A replacement integer.
    Number(u64),
    /// Nothing: forced fields (written separately) and nulls that mean "absent".
    Omit,
}

enum Class {
    Forced,
    Kept,
    Dropped,
}

fn classify(dialect: Dialect, name: &str, policy: &RequestPolicy) -> Class {
    let table = match dialect {
        Dialect::OpenAi => OPENAI_FIELDS,
        Dialect::Anthropic => ANTHROPIC_FIELDS,
    };
    match name {
        "model" | "stream" => Class::Forced,
        // Anthropic has no stream_options; its usage arrives with message_delta.
        "stream_options" if dialect == Dialect::OpenAi => Class::Forced,
        "stream_options" => Class::Dropped,
        _ if table.contains(&name) || policy.allow_fields.iter().any(|f| f == name) => Class::Kept,
        _ => Class::Dropped,
    }
}

/// Splits the top level into kept/forced fields (at most one of each name, so the list
/// is bounded by the allow-lists) and the names of dropped ones.
fn top_level<'a>(
    dialect: Dialect,
    raw: &'a str,
    policy: &RequestPolicy,
) -> Result<(Vec<Field<'a>>, Vec<String>), Refusal> {
    if raw.trim().is_empty() {
        return Err(Refusal::new("the request is empty"));
    }
    let got = kind(raw);
    if got != Kind::Object {
        return Err(Refusal::new(format!(
            "the request must be a JSON object (got {})",
            got.article()
        )));
    }
    let mut fields: Vec<Field<'a>> = Vec::new();
    let mut dropped = Vec::new();
    let mut more = 0usize;
    let walked = walk_map(raw, |name, value| {
        let emit = match classify(dialect, &name, policy) {
            Class::Forced => Emit::Omit,
            Class::Kept => Emit::Raw,
            Class::Dropped => {
                if dropped.len() < MAX_DROPPED_NAMES {
                    dropped.push(escape(&name, DROPPED_NAME_CHARS));
                } else {
                    more += 1;
                }
                return Ok(());
            }
        };
        if fields.iter().any(|f| f.name == name) {
            return Err(Refusal::new(format!(
                "`{}` appears more than once",
                escape(&name, QUOTE_CHARS)
            )));
        }
        fields.push(Field { name, value, emit });
        Ok(())
    });
    match walked {
        Ok(()) => {}
        Err(Walk::Refused(r)) => return Err(r),
        Err(Walk::Json(e)) => {
            return Err(Refusal::new(format!(
                "the request is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )))
        }
    }
    if more > 0 {
        dropped.push(format!("…({more} more)"));
    }
    Ok((fields, dropped))
}

fn find<'a>(fields: &[Field<'a>], name: &str) -> Option<&'a RawValue> {
    fields.iter().find(|f| f.name == name).map(|f| f.value)
}

/// `messages` present and an array; its bytes (with `system`) within the limit; then
/// its entries counted and walked for remote media.
fn check_prompt(
    dialect: Dialect,
    fields: &[Field<'_>],
    policy: &RequestPolicy,
) -> Result<(), Refusal> {
    let messages = find(fields, "messages").ok_or_else(|| Refusal::new("`messages` is missing"))?;
    let got = kind(messages.get());
    if got != Kind::Array {
        return Err(Refusal::new(format!(
            "`messages` must be an array (got {})",
            got.article()
        )));
    }
    let system = find(fields, "system");
    let bytes = messages.get().len() + system.map_or(0, |s| s.get().len());
    if bytes > policy.max_prompt_bytes {
        let what = if system.is_some() {
            "`messages` and `system` together are"
        } else {
            "`messages` is"
        };
        return Err(Refusal::new(format!(
            "{what} {bytes} bytes, over the {}-byte limit",
            policy.max_prompt_bytes
        )));
    }

    let root = Place::Root("messages");
    let over = || {
        Refusal::new(format!(
            "`messages` has more than {} entries",
            policy.max_messages
        ))
    };
    each_element(messages.get(), policy.max_messages, over, |i, message| {
        if policy.allow_remote_media {
            return Ok(());
        }
        let at = Place::Index(&root, i);
        each_entry(message.get(), |key, value| {
            if key != "content" {
                return Ok(());
            }
            let at = Place::Field(&at, "content");
            match dialect {
                Dialect::OpenAi => openai_content(value, &at),
                Dialect::Anthropic => anthropic_content(value, &at, 0),
            }
        })
    })?;

    if let (Some(system), false) = (system, policy.allow_remote_media) {
        anthropic_content(system, &Place::Root("system"), 0)?;
    }
    Ok(())
}

/// The checks of one kept field, by name: they apply in both dialects, so a field an
/// operator re-admits with `allow_fields` is bounded like its native counterpart.
fn check_field(
    dialect: Dialect,
    name: &str,
    value: &RawValue,
    n: u32,
    policy: &RequestPolicy,
) -> Result<Emit, Refusal> {
    match name {
        "max_tokens" | "max_completion_tokens" => clamp_output(name, value, n),
        "n" | "best_of" => match integer(value.get()) {
            _ if kind(value.get()) == Kind::Null => Ok(Emit::Omit),
            Some(Int::Small(1)) => Ok(Emit::Raw),
            _ => Err(Refusal::new(format!(
                "`{name}` must be 1 (got {})",
                shown(value)
            ))),
        },
        "top_logprobs" => {
            let cap = u64::from(policy.max_top_logprobs);
            match integer(value.get()) {
                Some(Int::Small(v)) => Ok(Emit::Number(v.min(cap))),
                Some(Int::Huge) => Ok(Emit::Number(cap)),
                _ if kind(value.get()) == Kind::Null => Ok(Emit::Omit),
                _ => Err(Refusal::new(format!(
                    "`top_logprobs` must be a non-negative integer (got {})",
                    shown(value)
                ))),
            }
        }
        "logit_bias" => {
            let over = || {
                Refusal::new(format!(
                    "`logit_bias` has more than {MAX_LOGIT_BIAS} entries"
                ))
            };
            match kind(value.get()) {
                Kind::Null => {}
                Kind::Object => {
                    let mut count = 0usize;
                    each_entry(value.get(), |_, _| {
                        count += 1;
                        if count > MAX_LOGIT_BIAS {
                            return Err(over());
                        }
                        Ok(())
                    })?;
                }
                // llama.cpp also takes [[token, bias], ...].
                Kind::Array => each_element(value.get(), MAX_LOGIT_BIAS, over, |_, _| Ok(()))?,
                got => {
                    return Err(Refusal::new(format!(
                        "`logit_bias` must be an object (got {})",
                        got.article()
                    )))
                }
            }
            Ok(Emit::Raw)
        }
        "tools" => {
            match dialect {
                Dialect::OpenAi => openai_tools(value, policy)?,
                Dialect::Anthropic => anthropic_tools(value, policy)?,
            }
            Ok(Emit::Raw)
        }
        "functions" => {
            functions(value, policy)?;
            Ok(Emit::Raw)
        }
        "response_format" => {
            response_format(value, policy)?;
            Ok(Emit::Raw)
        }
        _ => Ok(Emit::Raw),
    }
}

fn clamp_output(name: &str, value: &RawValue, n: u32) -> Result<Emit, Refusal> {
    let n = u64::from(n);
    match integer(value.get()) {
        Some(Int::Small(0)) => Ok(Emit::Number(1)),
        Some(Int::Small(v)) => Ok(Emit::Number(v.min(n))),
        Some(Int::Negative | Int::Huge) => Ok(Emit::Number(n)),
        None if kind(value.get()) == Kind::Null => Ok(Emit::Omit),
        None => Err(Refusal::new(format!(
            "`{name}` must be an integer (got {})",
            shown(value)
        ))),
    }
}

// ---- remote media -------------------------------------------------------------------

/// OpenAI message content: a string, or parts of which none may carry a remote URL.
fn openai_content(content: &RawValue, at: &Place<'_>) -> Result<(), Refusal> {
    match kind(content.get()) {
        Kind::Array => each_element(content.get(), usize::MAX, unlimited, |j, part| {
            openai_part(part, &Place::Index(at, j))
        }),
        // Not OpenAI's shape, but a lenient backend may read it as a single part.
        Kind::Object => openai_part(content, at),
        _ => Ok(()),
    }
}

fn openai_part(part: &RawValue, at: &Place<'_>) -> Result<(), Refusal> {
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
fn carries_remote(key: &str, value: &RawValue, descend: bool) -> Result<bool, Refusal> {
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

fn is_url_key(key: &str) -> bool {
    key == "url" || key.ends_with("_url")
}

fn is_data_url(s: &str) -> bool {
    let s = s.trim_start();
    s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:"))
}

/// `scheme://...` (base64 has no `:`, so encoded data never looks like this).
fn is_scheme_url(s: &str) -> bool {
    let s = s.trim_start().as_bytes();
    let scheme = s
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.'))
        .unwrap_or(s.len());
    scheme > 0 && s[0].is_ascii_alphabetic() && s[scheme..].starts_with(b"://")
}

fn remote_media(at: &Place<'_>, key: &str) -> Refusal {
    Refusal::new(format!(
        "remote media URL in {at} ({}); only data: URLs are accepted",
        escape(key, QUOTE_CHARS)
    ))
}

/// Anthropic content (message content, or `system`): a string, or blocks.
fn anthropic_content(content: &RawValue, at: &Place<'_>, depth: usize) -> Result<(), Refusal> {
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
fn anthropic_block(block: &RawValue, at: &Place<'_>, depth: usize) -> Result<(), Refusal> {
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
fn source(source: &RawValue, at: &Place<'_>, depth: usize) -> Result<(), Refusal> {
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

// ---- tools and schemas --------------------------------------------------------------

fn too_many(what: &'static str, max: usize) -> impl Fn() -> Refusal {
    move || Refusal::new(format!("`{what}` has more than {max} entries"))
}

/// Tools (and functions) arrays: null passes (some SDKs send it for "none"), anything
/// else but an array is refused.
fn tool_array(value: &RawValue, what: &'static str) -> Result<bool, Refusal> {
    match kind(value.get()) {
        Kind::Null => Ok(false),
        Kind::Array => Ok(true),
        got => Err(Refusal::new(format!(
            "`{what}` must be an array (got {})",
            got.article()
        ))),
    }
}

fn openai_tools(value: &RawValue, policy: &RequestPolicy) -> Result<(), Refusal> {
    if !tool_array(value, "tools")? {
        return Ok(());
    }
    let root = Place::Root("tools");
    let over = too_many("tools", policy.max_tools);
    each_element(value.get(), policy.max_tools, over, |i, tool| {
        let at = Place::Index(&root, i);
        if kind(tool.get()) != Kind::Object {
            return Err(Refusal::new(format!("{at} must be an object")));
        }
        let mut typed = false;
        each_entry(tool.get(), |key, value| {
            match &*key {
                "type" => {
                    if string(value.get())?.as_deref() != Some("function") {
                        return Err(Refusal::new(format!(
                            "{at}.type must be \"function\" (got {})",
                            shown(value)
                        )));
                    }
                    typed = true;
                }
                "function" => {
                    let function = Place::Field(&at, "function");
                    each_entry(value.get(), |key, value| {
                        if key == "parameters" {
                            schema(value, &Place::Field(&function, "parameters"), policy)?;
                        }
                        Ok(())
                    })?;
                }
                _ => {}
            }
            Ok(())
        })?;
        if !typed {
            return Err(Refusal::new(format!("{at} has no \"type\": \"function\"")));
        }
        Ok(())
    })
}

fn functions(value: &RawValue, policy: &RequestPolicy) -> Result<(), Refusal> {
    if !tool_array(value, "functions")? {
        return Ok(());
    }
    let root = Place::Root("functions");
    let over = too_many("functions", policy.max_tools);
    each_element(value.get(), policy.max_tools, over, |i, function| {
        let at = Place::Index(&root, i);
        each_entry(function.get(), |key, value| {
            if key == "parameters" {
                schema(value, &Place::Field(&at, "parameters"), policy)?;
            }
            Ok(())
        })
    })
}

fn anthropic_tools(value: &RawValue, policy: &RequestPolicy) -> Result<(), Refusal> {
    if !tool_array(value, "tools")? {
        return Ok(());
    }
    let root = Place::Root("tools");
    let over = too_many("tools", policy.max_tools);
    each_element(value.get(), policy.max_tools, over, |i, tool| {
        let at = Place::Index(&root, i);
        if kind(tool.get()) != Kind::Object {
            return Err(Refusal::new(format!("{at} must be an object")));
        }
        each_entry(tool.get(), |key, value| {
            match &*key {
                "type" => {
                    let custom = string(value.get())?.is_some_and(|t| t == "custom");
                    if !custom {
                        return Err(Refusal::new(format!(
                            "{at} is a server tool (type {}); only client tools are accepted",
                            shown(value)
                        )));
                    }
                }
                "input_schema" => schema(value, &Place::Field(&at, "input_schema"), policy)?,
                _ => {}
            }
            Ok(())
        })
    })
}

/// `response_format`: only the types every backend knows (other types, such as vLLM's
/// structural_tag, carry grammars this policy does not inspect); `json_schema.schema`
/// and llama.cpp's `schema` (with json_object) bounded.
fn response_format(value: &RawValue, policy: &RequestPolicy) -> Result<(), Refusal> {
    match kind(value.get()) {
        Kind::Null => return Ok(()),
        Kind::Object => {}
        got => {
            return Err(Refusal::new(format!(
                "`response_format` must be an object (got {})",
                got.article()
            )))
        }
    }
    let root = Place::Root("response_format");
    each_entry(value.get(), |key, value| {
        match &*key {
            "type" => {
                let ty = string(value.get())?;
                if !matches!(ty.as_deref(), Some("text" | "json_object" | "json_schema")) {
                    return Err(Refusal::new(format!(
                        "response_format.type must be \"text\", \"json_object\" or \"json_schema\" (got {})",
                        shown(value)
                    )));
                }
            }
            "schema" => schema(value, &Place::Field(&root, "schema"), policy)?,
            "json_schema" => {
                let at = Place::Field(&root, "json_schema");
                each_entry(value.get(), |key, value| {
                    if key == "schema" {
                        schema(value, &Place::Field(&at, "schema"), policy)?;
                    }
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(())
    })
}

/// A schema the backend compiles into a grammar: bytes first, so the depth scan reads
/// at most `max_schema_bytes`.
fn schema(value: &RawValue, at: &Place<'_>, policy: &RequestPolicy) -> Result<(), Refusal> {
    let bytes = value.get().len();
    if bytes > policy.max_schema_bytes {
        return Err(Refusal::new(format!(
            "{at} is {bytes} bytes, over the {}-byte limit",
            policy.max_schema_bytes
        )));
    }
    let depth = nesting_depth(value.get().as_bytes());
    if depth > policy.max_schema_depth {
        return Err(Refusal::new(format!(
            "{at} nests {depth} levels deep, over the limit of {}",
            policy.max_schema_depth
        )));
    }
    Ok(())
}

/// Deepest `{`/`[` nesting of JSON text.
fn nesting_depth(json: &[u8]) -> usize {
    scan(json).depth
}

struct Scan {
    /// Deepest `{`/`[` nesting.
    depth: usize,
    /// A `\u` escape of a surrogate without its pair.
    unpaired_surrogate: bool,
}

/// One pass over valid JSON text, on the bytes: a deep value costs no tree and no
/// recursion. serde_json's raw read lets unpaired surrogate escapes through (it does not
/// know yet whether the string will be decoded); strict parsers reject them and lenient
/// ones decode them, so the backend's reading would differ from the policy's.
fn scan(json: &[u8]) -> Scan {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut in_string = false;
    // The previous string unit was a high surrogate escape: a low one must follow.
    let mut high = false;
    let mut unpaired = false;
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        i += 1;
        if !in_string {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
            continue;
        }
        let unit = match (b, json.get(i)) {
            (b'\\', Some(b'u')) => {
                let hex = json
                    .get(i + 1..i + 5)
                    .and_then(|h| std::str::from_utf8(h).ok());
                i += 5;
                hex.and_then(|h| u16::from_str_radix(h, 16).ok())
            }
            (b'\\', _) => {
                i += 1;
                None
            }
            (b'"', _) => {
                in_string = false;
                None
            }
            _ => None,
        };
        match unit {
            Some(0xd800..=0xdbff) => {
                unpaired |= high;
                high = true;
            }
            Some(0xdc00..=0xdfff) => {
                unpaired |= !high;
                high = false;
            }
            _ => {
                unpaired |= high;
                high = false;
            }
        }
    }
    Scan {
        depth: max,
        unpaired_surrogate: unpaired | high,
    }
}

// ---- the body -----------------------------------------------------------------------

/// Forced fields first, then the kept ones in the client's order.
fn write_body(
    dialect: Dialect,
    size_hint: usize,
    model_id: &str,
    fields: &[Field<'_>],
    n: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_hint + model_id.len() + 96);
    out.extend_from_slice(b"{\"model\":");
    push_json_string(&mut out, model_id);
    out.extend_from_slice(b",\"stream\":true");
    if dialect == Dialect::OpenAi {
        out.extend_from_slice(b",\"stream_options\":{\"include_usage\":true}");
    }
    let mut has_limit = false;
    for field in fields {
        let number;
        let value = match field.emit {
            Emit::Omit => continue,
            Emit::Raw => field.value.get(),
            Emit::Number(v) => {
                number = v.to_string();
                number.as_str()
            }
        };
        has_limit |= match dialect {
            Dialect::OpenAi => field.name == "max_tokens" || field.name == "max_completion_tokens",
            Dialect::Anthropic => field.name == "max_tokens",
        };
        out.push(b',');
        push_json_string(&mut out, &field.name);
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
    }
    if !has_limit {
        out.extend_from_slice(format!(",\"max_tokens\":{n}").as_bytes());
    }
    out.push(b'}');
    out
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    // Bytes of multi-byte UTF-8 are all >= 0x80, so they never need escaping.
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

// ---- reading JSON without a tree ----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    fn article(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// The kind of a JSON value from its first byte (the text is valid JSON, or fails later
/// when walked).
fn kind(json: &str) -> Kind {
    match json.trim_start().as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'n') => Kind::Null,
        _ => Kind::Number,
    }
}

enum Int {
    Negative,
    Small(u64),
    /// Above u64: only ever clamped.
    Huge,
}

/// A JSON integer literal, read from its text (so 1e400 or 2^70 never go through f64).
fn integer(json: &str) -> Option<Int> {
    let t = json.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        let zero = digits.bytes().all(|b| b == b'0');
        return Some(if zero { Int::Small(0) } else { Int::Negative });
    }
    Some(digits.parse().map_or(Int::Huge, Int::Small))
}

/// A decoded JSON string, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON string decoded, or None for another kind. Refused when it cannot be decoded
/// (an escaped lone surrogate passes the raw read): a string the policy must read and
/// cannot would otherwise be waved through, and some backends decode it anyway.
fn string(json: &str) -> Result<Option<Cow<'_, str>>, Refusal> {
    if kind(json) != Kind::String {
        return Ok(None);
    }
    match serde_json::from_str::<Text<'_>>(json) {
        Ok(t) => Ok(Some(t.0)),
        Err(_) => Err(Refusal::new(MALFORMED)),
    }
}

/// A client value for a refusal: scalars quoted (cut and escaped), containers named.
fn shown(value: &RawValue) -> String {
    let json = value.get();
    match kind(json) {
        Kind::String => match string(json) {
            Ok(Some(s)) => format!("\"{}\"", escape(&s, QUOTE_CHARS)),
            _ => Kind::String.article().to_owned(),
        },
        Kind::Number | Kind::Bool | Kind::Null => escape(json.trim(), QUOTE_CHARS),
        k => k.article().to_owned(),
    }
}

/// At most `max` characters of `s`, with quotes, backslashes, control and invisible
/// characters (bidi overrides, zero-width) escaped, and `…` when cut.
fn escape(s: &str, max: usize) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len().min(max * 2) + 3);
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Where a refusal happened, rendered only when one does.
#[derive(Clone, Copy)]
enum Place<'p> {
    Root(&'static str),
    Index(&'p Place<'p>, usize),
    Field(&'p Place<'p>, &'static str),
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Root(name) => f.write_str(name),
            Place::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Place::Field(parent, name) => write!(f, "{parent}.{name}"),
        }
    }
}

/// A walk stopped by the policy, or JSON serde_json would not read.
enum Walk {
    Refused(Refusal),
    Json(serde_json::Error),
}

fn malformed(w: Walk) -> Refusal {
    match w {
        Walk::Refused(r) => r,
        // Values were already read once as raw JSON; what fails now is a string escape
        // (a lone surrogate). serde_json's message is not quoted: it may hold client text.
        Walk::Json(_) => Refusal::new(MALFORMED),
    }
}

fn finish_walk(
    result: Result<(), serde_json::Error>,
    refusal: Option<Refusal>,
) -> Result<(), Walk> {
    match (refusal, result) {
        (Some(r), _) => Err(Walk::Refused(r)),
        (None, Ok(())) => Ok(()),
        (None, Err(e)) => Err(Walk::Json(e)),
    }
}

/// Calls `f` for each entry of the JSON object `json`, in order and duplicates
/// included, without collecting them.
fn walk_map<'a>(
    json: &'a str,
    f: impl FnMut(Cow<'a, str>, &'a RawValue) -> Result<(), Refusal>,
) -> Result<(), Walk> {
    struct Entries<'r, F> {
        f: F,
        refusal: &'r mut Option<Refusal>,
    }
    impl<'de, F> Visitor<'de> for Entries<'_, F>
    where
        F: FnMut(Cow<'de, str>, &'de RawValue) -> Result<(), Refusal>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            while let Some(Text(key)) = map.next_key()? {
                let value: &'de RawValue = map.next_value()?;
                if let Err(r) = (self.f)(key, value) {
                    *self.refusal = Some(r);
                    return Err(de::Error::custom("refused"));
                }
            }
            Ok(())
        }
    }
    let mut refusal = None;
    let mut de = serde_json::Deserializer::from_str(json);
    let result = de
        .deserialize_map(Entries {
            f,
            refusal: &mut refusal,
        })
        .and_then(|()| de.end());
    finish_walk(result, refusal)
}

/// [`walk_map`] for a value already read as raw JSON; anything but an object has no
/// entries.
fn each_entry<'a>(
    json: &'a str,
    f: impl FnMut(Cow<'a, str>, &'a RawValue) -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    if kind(json) != Kind::Object {
        return Ok(());
    }
    walk_map(json, f).map_err(malformed)
}

fn unlimited() -> Refusal {
    Refusal::new("unreachable: no limit")
}

/// Calls `f` for each element of the JSON array `json`, stopping with `over()` at
/// element `limit` + 1: the count is known without parsing the rest nor collecting.
/// Anything but an array has no elements.
fn each_element<'a>(
    json: &'a str,
    limit: usize,
    over: impl FnOnce() -> Refusal,
    f: impl FnMut(usize, &'a RawValue) -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    struct Elements<'r, O, F> {
        limit: usize,
        over: O,
        f: F,
        refusal: &'r mut Option<Refusal>,
    }
    impl<'de, O, F> Visitor<'de> for Elements<'_, O, F>
    where
        O: FnOnce() -> Refusal,
        F: FnMut(usize, &'de RawValue) -> Result<(), Refusal>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            while let Some(value) = seq.next_element::<&'de RawValue>()? {
                let step = if i == self.limit {
                    *self.refusal = Some((self.over)());
                    return Err(de::Error::custom("refused"));
                } else {
                    (self.f)(i, value)
                };
                if let Err(r) = step {
                    *self.refusal = Some(r);
                    return Err(de::Error::custom("refused"));
                }
                i += 1;
            }
            Ok(())
        }
    }
    if kind(json) != Kind::Array {
        return Ok(());
    }
    let mut refusal = None;
    let mut de = serde_json::Deserializer::from_str(json);
    let result = de
        .deserialize_seq(Elements {
            limit,
            over,
            f,
            refusal: &mut refusal,
        })
        .and_then(|()| de.end());
    finish_walk(result, refusal).map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const N: u32 = 1000;

    fn policy() -> RequestPolicy {
        RequestPolicy::new(N)
    }

    fn shape_with(
        d: Dialect,
        raw: &str,
        p: &RequestPolicy,
    ) -> Result<(Value, Vec<String>), String> {
        match apply(d, raw, "m", p) {
            Ok(s) => {
                let body: Value = serde_json::from_slice(&s.body).expect("body is JSON");
                Ok((body, s.dropped))
            }
            Err(r) => Err(r.reason().to_owned()),
        }
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
            Err(reason) => reason,
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

    // ---- forced fields ------------------------------------------------------------

    #[test]
    fn openai_forced_fields_override_the_client() {
        let body = openai(json!({
            "model": "gpt-4o", "stream": false,
            "stream_options": {"include_usage": false, "continuous_usage_stats": true},
            "messages": user("hi"), "max_tokens": 5,
        }));
        assert_eq!(
            body,
            json!({
                "model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": user("hi"), "max_tokens": 5,
            })
        );
    }

    #[test]
    fn openai_forced_fields_are_added_when_absent() {
        let body = openai(json!({"messages": user("hi")}));
        assert_eq!(
            body,
            json!({
                "model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": user("hi"), "max_tokens": N,
            })
        );
    }

    #[test]
    fn anthropic_forced_fields_and_no_stream_options() {
        let (body, dropped) = shape_with(
            Dialect::Anthropic,
            &json!({
                "model": "claude", "stream": false, "stream_options": {"include_usage": false},
                "messages": user("hi"), "max_tokens": 7,
            })
            .to_string(),
            &policy(),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "stream": true, "messages": user("hi"), "max_tokens": 7})
        );
        assert_eq!(dropped, ["stream_options"]);
    }

    #[test]
    fn model_id_is_written_as_a_json_string() {
        let raw = json!({"messages": []}).to_string();
        let shaped = apply(Dialect::OpenAi, &raw, "a\"b\\c\nd/é", &policy()).unwrap();
        let body: Value = serde_json::from_slice(&shaped.body).unwrap();
        assert_eq!(body["model"], "a\"b\\c\nd/é");
    }

    // ---- output length ------------------------------------------------------------

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

    // ---- n, best_of, top_logprobs, logit_bias --------------------------------------

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

    // ---- messages -----------------------------------------------------------------

    #[test]
    fn messages_must_be_an_array() {
        for d in [Dialect::OpenAi, Dialect::Anthropic] {
            assert_eq!(refused(d, json!({"model": "x"})), "`messages` is missing");
            assert_eq!(
                refused(d, json!({"messages": {"role": "user"}})),
                "`messages` must be an array (got an object)"
            );
            assert_eq!(
                refused(d, json!({"messages": null})),
                "`messages` must be an array (got null)"
            );
        }
    }

    #[test]
    fn message_count_limit() {
        let mut p = policy();
        p.max_messages = 3;
        let three: Value = (0..3)
            .map(|_| json!({"role": "user", "content": "x"}))
            .collect();
        let four: Value = (0..4)
            .map(|_| json!({"role": "user", "content": "x"}))
            .collect();
        for d in [Dialect::OpenAi, Dialect::Anthropic] {
            passes_with(d, json!({"messages": three}), &p);
            let reason = refused_with(d, json!({"messages": four}), &p);
            assert_eq!(reason, "`messages` has more than 3 entries");
        }
    }

    #[test]
    fn a_million_messages_are_refused_at_the_limit() {
        // The seq visitor stops at entry 1025: nothing is collected, nothing after that
        // entry is read into a message.
        let mut raw = String::with_capacity(3_000_100);
        raw.push_str(r#"{"messages":["#);
        for i in 0..1_000_001 {
            if i > 0 {
                raw.push(',');
            }
            raw.push_str("{}");
        }
        raw.push_str("]}");
        for d in [Dialect::OpenAi, Dialect::Anthropic] {
            let reason = shape_with(d, &raw, &policy()).unwrap_err();
            assert_eq!(reason, "`messages` has more than 1024 entries");
        }
    }

    #[test]
    fn prompt_bytes_limit() {
        let mut p = policy();
        let messages = user(&"x".repeat(100));
        let size = messages.to_string().len();
        p.max_prompt_bytes = size;
        passes_with(Dialect::OpenAi, json!({"messages": messages}), &p);
        p.max_prompt_bytes = size - 1;
        let reason = refused_with(Dialect::OpenAi, json!({"messages": messages}), &p);
        assert_eq!(
            reason,
            format!(
                "`messages` is {size} bytes, over the {}-byte limit",
                size - 1
            )
        );
        // Anthropic counts the system prompt too.
        let system = json!("be brief");
        p.max_prompt_bytes = size + system.to_string().len();
        passes_with(
            Dialect::Anthropic,
            json!({"system": system, "messages": messages}),
            &p,
        );
        p.max_prompt_bytes -= 1;
        let reason = refused_with(
            Dialect::Anthropic,
            json!({"system": system, "messages": messages}),
            &p,
        );
        assert_eq!(
            reason,
            format!(
                "`messages` and `system` together are {} bytes, over the {}-byte limit",
                p.max_prompt_bytes + 1,
                p.max_prompt_bytes
            )
        );
    }

    // ---- remote media, OpenAI -----------------------------------------------------

    fn with_part(part: Value) -> Value {
        json!({"messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, part]},
        ]})
    }

    #[test]
    fn openai_remote_media_shapes_are_refused() {
        let cases = [
            (
                json!({"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}),
                "image_url",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "http://e.com/a.png", "detail": "low"}}),
                "image_url",
            ),
            (
                json!({"type": "image_url", "image_url": "https://e.com/a.png"}),
                "image_url",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}),
                "image_url",
            ),
            (
                json!({"type": "image_url", "image_url": {"url": "/etc/passwd"}}),
                "image_url",
            ),
            (
                json!({"type": "input_audio", "input_audio": {"url": "https://e.com/a.wav"}}),
                "input_audio",
            ),
            (
                json!({"type": "input_audio", "input_audio": {"data": "https://e.com/a.wav", "format": "wav"}}),
                "input_audio",
            ),
            (
                json!({"type": "input_audio", "input_audio": {"data": " HTTP://e.com/a.wav"}}),
                "input_audio",
            ),
            (
                json!({"type": "file", "file": {"url": "https://e.com/a.pdf"}}),
                "file",
            ),
            (
                json!({"type": "file", "file": {"file_url": "https://e.com/a.pdf"}}),
                "file",
            ),
            (
                json!({"type": "file", "file": {"file_data": "https://e.com/a.pdf", "filename": "a.pdf"}}),
                "file",
            ),
            (
                json!({"type": "video_url", "video_url": {"url": "https://e.com/v.mp4"}}),
                "video_url",
            ),
            (
                json!({"type": "audio_url", "audio_url": {"url": "s3://bucket/a.wav"}}),
                "audio_url",
            ),
            (
                json!({"type": "thing_url", "thing_url": "ftp://e.com/x"}),
                "thing_url",
            ),
            (
                json!({"type": "image", "url": "https://e.com/a.png"}),
                "url",
            ),
            (
                json!({"type": "image", "image": {"url": "https://e.com/a.png"}}),
                "image",
            ),
        ];
        for (part, key) in cases {
            let reason = refused(Dialect::OpenAi, with_part(part.clone()));
            assert_eq!(
                reason,
                format!("remote media URL in messages[1].content[1] ({key}); only data: URLs are accepted"),
                "{part}"
            );
        }
    }

    #[test]
    fn openai_escaped_url_is_read_decoded() {
        let raw = r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"u\u0072l":"h\u0074tps:\/\/e.com"}}]}]}"#;
        let reason = shape_with(Dialect::OpenAi, raw, &policy()).unwrap_err();
        assert_eq!(
            reason,
            "remote media URL in messages[0].content[0] (image_url); only data: URLs are accepted"
        );
    }

    #[test]
    fn openai_inline_media_and_urls_in_text_pass() {
        let parts = json!([
            {"type": "text", "text": "what is at https://e.com/a.png ?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": "DATA:image/png;base64,iVBORw0KGgo="},
            {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "file", "file": {"file_id": "file-abc"}},
            {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}},
            {"type": "refusal", "refusal": "no"},
        ]);
        let request = json!({"messages": [{"role": "user", "content": parts}], "max_tokens": 1});
        assert_eq!(
            openai(request.clone()),
            with_forced(Dialect::OpenAi, request)
        );
    }

    #[test]
    fn openai_remote_media_allowed_by_the_operator() {
        let mut p = policy();
        p.allow_remote_media = true;
        let request =
            with_part(json!({"type": "image_url", "image_url": {"url": "https://e.com/a.png"}}));
        passes_with(Dialect::OpenAi, request, &p);
    }

    #[test]
    fn openai_content_as_a_single_object_is_checked() {
        let request = json!({"messages": [{"role": "user", "content": {"type": "image_url", "image_url": {"url": "https://e.com"}}}]});
        assert_eq!(
            refused(Dialect::OpenAi, request),
            "remote media URL in messages[0].content (image_url); only data: URLs are accepted"
        );
    }

    #[test]
    fn openai_duplicate_content_keys_are_all_checked() {
        let raw = r#"{"messages":[{"role":"user","content":"hi","content":[{"type":"image_url","image_url":"https://e.com"}]}]}"#;
        assert!(shape_with(Dialect::OpenAi, raw, &policy())
            .unwrap_err()
            .starts_with("remote media URL in messages[0].content[0]"));
    }

    // ---- remote media, Anthropic --------------------------------------------------

    fn with_block(block: Value) -> Value {
        json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, block]},
        ]})
    }

    const URL_SOURCE: &str = "only base64, text or content sources are accepted";

    #[test]
    fn anthropic_url_sources_are_refused() {
        let cases = [
            json!({"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}}),
            json!({"type": "image", "source": {"type": "URL"}}),
            json!({"type": "document", "source": {"type": "url", "url": "https://e.com/a.pdf"}}),
            json!({"type": "image", "source": {"type": "base64", "url": "https://e.com/a.png"}}),
            json!({"type": "image", "source": {"type": "file", "file_url": "https://e.com/a.png"}}),
        ];
        for block in cases {
            let reason = refused(Dialect::Anthropic, with_block(block.clone()));
            assert_eq!(
                reason,
                format!("remote media URL in messages[2].content[1] (url source); {URL_SOURCE}"),
                "{block}"
            );
        }
    }

    #[test]
    fn anthropic_nested_url_sources_are_refused() {
        let tool_result = json!({"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "here"},
            {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
        ]});
        assert_eq!(
            refused(Dialect::Anthropic, with_block(tool_result)),
            format!(
                "remote media URL in messages[2].content[1].content[1] (url source); {URL_SOURCE}"
            )
        );
        let document = json!({"type": "document", "source": {"type": "content", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
        ]}});
        assert_eq!(
            refused(Dialect::Anthropic, with_block(document)),
            format!("remote media URL in messages[2].content[1].source.content[0] (url source); {URL_SOURCE}")
        );
        let system = json!({"system": [
            {"type": "text", "text": "x"},
            {"type": "image", "source": {"type": "url", "url": "https://e.com"}},
        ], "messages": []});
        assert_eq!(
            refused(Dialect::Anthropic, system),
            format!("remote media URL in system[1] (url source); {URL_SOURCE}")
        );
    }

    #[test]
    fn anthropic_openai_style_url_blocks_are_refused() {
        let block = json!({"type": "image_url", "image_url": {"url": "https://e.com/a.png"}});
        assert_eq!(
            refused(Dialect::Anthropic, with_block(block)),
            "remote media URL in messages[2].content[1] (image_url); only data: URLs are accepted"
        );
    }

    #[test]
    fn anthropic_inline_sources_and_tool_arguments_pass() {
        let blocks = json!([
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "https://e.com is our site"}},
            {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "x"}]}},
            {"type": "document", "source": {"type": "file", "file_id": "file_1"}, "citations": {"enabled": true}},
            {"type": "search_result", "source": "https://e.com/page", "title": "t", "content": [{"type": "text", "text": "x"}]},
            {"type": "text", "text": "see https://e.com", "cache_control": {"type": "ephemeral"}},
        ]);
        let tool_use = json!([
            {"type": "tool_use", "id": "t1", "name": "fetch", "input": {"url": "https://e.com"}},
        ]);
        let tool_result = json!([{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        ]}]);
        let request = json!({"messages": [
            {"role": "user", "content": blocks},
            {"role": "assistant", "content": tool_use},
            {"role": "user", "content": tool_result},
        ], "max_tokens": 9});
        assert_eq!(
            anthropic(request.clone()),
            with_forced(Dialect::Anthropic, request)
        );
    }

    #[test]
    fn anthropic_tool_use_exemption_needs_every_type_to_agree() {
        for raw in [
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":"https://e.com","type":"tool_use"}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"tool_use","image_url":"https://e.com","type":"image_url"}]}]}"#,
        ] {
            assert_eq!(
                shape_with(Dialect::Anthropic, raw, &policy()).unwrap_err(),
                "remote media URL in messages[0].content[0] (image_url); only data: URLs are accepted",
                "{raw}"
            );
        }
    }

    #[test]
    fn anthropic_remote_media_allowed_by_the_operator() {
        let mut p = policy();
        p.allow_remote_media = true;
        let block =
            json!({"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}});
        passes_with(Dialect::Anthropic, with_block(block.clone()), &p);
        passes_with(
            Dialect::Anthropic,
            json!({"system": [block], "messages": []}),
            &p,
        );
    }

    #[test]
    fn anthropic_block_nesting_is_bounded() {
        let mut block = json!({"type": "text", "text": "x"});
        for _ in 0..5 {
            block = json!({"type": "tool_result", "content": [block]});
        }
        let reason = refused(
            Dialect::Anthropic,
            json!({"messages": [{"role": "user", "content": [block]}]}),
        );
        assert_eq!(
            reason,
            "messages[0].content[0].content[0].content[0].content[0].content[0] nests content blocks more than 4 levels deep"
        );
    }

    // ---- tools --------------------------------------------------------------------

    fn function_tool(name: &str, parameters: Value) -> Value {
        json!({"type": "function", "function": {"name": name, "parameters": parameters}})
    }

    /// A schema of `depth` nested objects.
    fn deep_schema(depth: usize) -> Value {
        let mut s = json!({"type": "string"});
        for _ in 1..depth {
            s = json!({"type": "object", "properties": {"a": s}});
        }
        s
    }

    #[test]
    fn deep_schema_has_the_depth_it_says() {
        assert_eq!(nesting_depth(deep_schema(1).to_string().as_bytes()), 1);
        // Each level adds {"properties": {...}}: two brackets.
        assert_eq!(nesting_depth(deep_schema(3).to_string().as_bytes()), 5);
    }

    #[test]
    fn openai_tool_count_and_type() {
        let mut p = policy();
        p.max_tools = 2;
        let tool = function_tool("f", json!({"type": "object"}));
        passes_with(
            Dialect::OpenAi,
            json!({"messages": [], "tools": [tool, tool]}),
            &p,
        );
        let reason = refused_with(
            Dialect::OpenAi,
            json!({"messages": [], "tools": [tool, tool, tool]}),
            &p,
        );
        assert_eq!(reason, "`tools` has more than 2 entries");

        let reason = refused(
            Dialect::OpenAi,
            json!({"messages": [], "tools": [tool, {"type": "web_search"}]}),
        );
        assert_eq!(
            reason,
            "tools[1].type must be \"function\" (got \"web_search\")"
        );
        let reason = refused(
            Dialect::OpenAi,
            json!({"messages": [], "tools": [{"function": {"name": "f"}}]}),
        );
        assert_eq!(reason, "tools[0] has no \"type\": \"function\"");
        let reason = refused(Dialect::OpenAi, json!({"messages": [], "tools": ["f"]}));
        assert_eq!(reason, "tools[0] must be an object");
        let reason = refused(Dialect::OpenAi, json!({"messages": [], "tools": {}}));
        assert_eq!(reason, "`tools` must be an array (got an object)");
        // A second `type` is checked as well as the first.
        let raw = r#"{"messages":[],"tools":[{"type":"function","type":"code_interpreter"}]}"#;
        assert_eq!(
            shape_with(Dialect::OpenAi, raw, &policy()).unwrap_err(),
            "tools[0].type must be \"function\" (got \"code_interpreter\")"
        );
        // null means no tools.
        passes_with(
            Dialect::OpenAi,
            json!({"messages": [], "tools": null}),
            &policy(),
        );
    }

    #[test]
    fn openai_tool_schema_bounds() {
        let mut p = policy();
        let big = json!({"type": "object", "description": "x".repeat(70_000)});
        let size = big.to_string().len();
        let reason = refused_with(
            Dialect::OpenAi,
            json!({"messages": [], "tools": [function_tool("a", json!({})), function_tool("b", big.clone())]}),
            &p,
        );
        assert_eq!(
            reason,
            format!("tools[1].function.parameters is {size} bytes, over the 65536-byte limit")
        );
        p.max_schema_bytes = size;
        passes_with(
            Dialect::OpenAi,
            json!({"messages": [], "tools": [function_tool("b", big)]}),
            &p,
        );

        // deep_schema(17) nests 33 levels.
        let reason = refused(
            Dialect::OpenAi,
            json!({"messages": [], "tools": [function_tool("d", deep_schema(17))]}),
        );
        assert_eq!(
            reason,
            "tools[0].function.parameters nests 33 levels deep, over the limit of 32"
        );
        passes_with(
            Dialect::OpenAi,
            json!({"messages": [], "tools": [function_tool("d", deep_schema(16))]}),
            &policy(),
        );
    }

    #[test]
    fn schema_depth_ignores_brackets_in_strings() {
        let tricky = json!({"description": "[[[[{{{{ \"quoted [ \\\" {", "enum": ["[", "{", "\\"]});
        assert_eq!(nesting_depth(tricky.to_string().as_bytes()), 2);
        let mut p = policy();
        p.max_schema_depth = 2;
        passes_with(
            Dialect::OpenAi,
            json!({"messages": [], "tools": [function_tool("t", tricky)]}),
            &p,
        );
    }

    #[test]
    fn openai_deprecated_functions_are_bounded() {
        let mut p = policy();
        p.max_schema_depth = 3;
        passes_with(
            Dialect::OpenAi,
            json!({"messages": [], "functions": [{"name": "f", "parameters": deep_schema(2)}], "function_call": "auto"}),
            &p,
        );
        let reason = refused_with(
            Dialect::OpenAi,
            json!({"messages": [], "functions": [{"name": "f", "parameters": deep_schema(3)}]}),
            &p,
        );
        assert_eq!(
            reason,
            "functions[0].parameters nests 5 levels deep, over the limit of 3"
        );
        p.max_tools = 1;
        let f = json!({"name": "f"});
        let reason = refused_with(
            Dialect::OpenAi,
            json!({"messages": [], "functions": [f, f]}),
            &p,
        );
        assert_eq!(reason, "`functions` has more than 1 entries");
    }

    #[test]
    fn response_format_schema_is_bounded() {
        let mut p = policy();
        p.max_schema_bytes = 100;
        let big = json!({"type": "object", "description": "x".repeat(200)});
        let size = big.to_string().len();
        let reason = refused_with(
            Dialect::OpenAi,
            json!({"messages": [], "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": big}}}),
            &p,
        );
        assert_eq!(
            reason,
            format!("response_format.json_schema.schema is {size} bytes, over the 100-byte limit")
        );
        // llama.cpp's json_object + schema form.
        let reason = refused_with(
            Dialect::OpenAi,
            json!({"messages": [], "response_format": {"type": "json_object", "schema": big}}),
            &p,
        );
        assert_eq!(
            reason,
            format!("response_format.schema is {size} bytes, over the 100-byte limit")
        );
        let reason = refused(
            Dialect::OpenAi,
            json!({"messages": [], "response_format": {"type": "json_schema", "json_schema": {"schema": deep_schema(20)}}}),
        );
        assert_eq!(
            reason,
            "response_format.json_schema.schema nests 39 levels deep, over the limit of 32"
        );
        let reason = refused(
            Dialect::OpenAi,
            json!({"messages": [], "response_format": {"type": "structural_tag", "structures": []}}),
        );
        assert_eq!(
            reason,
            "response_format.type must be \"text\", \"json_object\" or \"json_schema\" (got \"structural_tag\")"
        );
        let reason = refused(
            Dialect::OpenAi,
            json!({"messages": [], "response_format": "json"}),
        );
        assert_eq!(reason, "`response_format` must be an object (got a string)");
        for ty in ["text", "json_object"] {
            passes_with(
                Dialect::OpenAi,
                json!({"messages": [], "response_format": {"type": ty}}),
                &policy(),
            );
        }
    }

    #[test]
    fn anthropic_client_tools_pass_and_server_tools_are_refused() {
        let client =
            json!({"name": "get_weather", "description": "d", "input_schema": {"type": "object"}});
        let custom = json!({"type": "custom", "name": "c", "input_schema": {"type": "object"}});
        passes_with(
            Dialect::Anthropic,
            json!({"messages": [], "tools": [client, custom]}),
            &policy(),
        );
        for ty in [
            "web_search_20250305",
            "web_fetch_20250910",
            "code_execution_20250825",
            "computer_20250124",
            "bash_20250124",
            "text_editor_20250728",
            "mcp_toolset",
        ] {
            let reason = refused(
                Dialect::Anthropic,
                json!({"messages": [], "tools": [client, {"type": ty, "name": "x"}]}),
            );
            assert_eq!(
                reason,
                format!(
                    "tools[1] is a server tool (type \"{ty}\"); only client tools are accepted"
                )
            );
        }
        let reason = refused(
            Dialect::Anthropic,
            json!({"messages": [], "tools": [{"type": null, "name": "x"}]}),
        );
        assert_eq!(
            reason,
            "tools[0] is a server tool (type null); only client tools are accepted"
        );
    }

    #[test]
    fn anthropic_tool_schema_and_count_bounds() {
        let mut p = policy();
        p.max_schema_bytes = 50;
        let big = json!({"type": "object", "description": "x".repeat(60)});
        let size = big.to_string().len();
        let reason = refused_with(
            Dialect::Anthropic,
            json!({"messages": [], "tools": [{"name": "t", "input_schema": big}]}),
            &p,
        );
        assert_eq!(
            reason,
            format!("tools[0].input_schema is {size} bytes, over the 50-byte limit")
        );
        let reason = refused(
            Dialect::Anthropic,
            json!({"messages": [], "tools": [{"name": "t", "input_schema": deep_schema(17)}]}),
        );
        assert_eq!(
            reason,
            "tools[0].input_schema nests 33 levels deep, over the limit of 32"
        );
        p.max_tools = 1;
        let t = json!({"name": "t"});
        let reason = refused_with(
            Dialect::Anthropic,
            json!({"messages": [], "tools": [t, t]}),
            &p,
        );
        assert_eq!(reason, "`tools` has more than 1 entries");
    }

    // ---- realistic requests pass intact --------------------------------------------

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
        let (body, dropped) =
            shape_with(Dialect::Anthropic, &request.to_string(), &policy()).unwrap();
        let mut expected = request;
        expected["model"] = json!("m");
        expected["max_tokens"] = json!(N);
        assert_eq!(body, expected);
        assert!(dropped.is_empty());
    }

    // ---- allow-list ---------------------------------------------------------------

    const EXTENSIONS: &[&str] = &[
        "grammar",
        "json_schema",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "guided_decoding_backend",
        "structured_outputs",
        "chat_template",
        "chat_template_kwargs",
        "id_slot",
        "n_probs",
        "cache_prompt",
        "ignore_eos",
        "mcp_servers",
        "container",
        "web_search_options",
        "unknown_field",
    ];

    #[test]
    fn server_extensions_are_dropped() {
        for d in [Dialect::OpenAi, Dialect::Anthropic] {
            let mut request = json!({"messages": [], "max_tokens": 3});
            for (i, name) in EXTENSIONS.iter().enumerate() {
                request[name] = json!({"x": i});
            }
            let (body, dropped) = shape_with(d, &request.to_string(), &policy()).unwrap();
            assert_eq!(
                body,
                with_forced(d, json!({"messages": [], "max_tokens": 3})),
                "{d:?}"
            );
            let mut dropped = dropped;
            dropped.sort();
            let mut expected: Vec<String> = EXTENSIONS.iter().map(|s| s.to_string()).collect();
            expected.sort();
            assert_eq!(dropped, expected, "{d:?}");
        }
    }

    #[test]
    fn fields_of_the_other_dialect_are_dropped() {
        let (body, dropped) = shape_with(
            Dialect::Anthropic,
            &json!({"messages": [], "max_tokens": 3, "n": 4, "logit_bias": {"1": 1}, "seed": 1})
                .to_string(),
            &policy(),
        )
        .unwrap();
        assert_eq!(
            body,
            with_forced(Dialect::Anthropic, json!({"messages": [], "max_tokens": 3}))
        );
        // json! sorts keys.
        assert_eq!(dropped, ["logit_bias", "n", "seed"]);
        let (body, dropped) = shape_with(
            Dialect::OpenAi,
            &json!({"messages": [], "max_tokens": 3, "top_k": 4, "thinking": {}, "stop_sequences": []}).to_string(),
            &policy(),
        )
        .unwrap();
        assert_eq!(
            body,
            with_forced(Dialect::OpenAi, json!({"messages": [], "max_tokens": 3}))
        );
        assert_eq!(dropped, ["stop_sequences", "thinking", "top_k"]);
    }

    #[test]
    fn allow_fields_readmits_grammar_but_not_forced_fields() {
        let mut p = policy();
        p.allow_fields = vec![
            "grammar".into(),
            "cache_prompt".into(),
            "stream_options".into(),
        ];
        let request = json!({
            "messages": [], "grammar": "root ::= \"yes\"", "cache_prompt": true,
            "model": "other", "stream": false, "max_tokens": 5000, "id_slot": 1,
        });
        let (body, dropped) = shape_with(Dialect::OpenAi, &request.to_string(), &p).unwrap();
        assert_eq!(
            body,
            with_forced(
                Dialect::OpenAi,
                json!({"messages": [], "grammar": "root ::= \"yes\"", "cache_prompt": true, "max_tokens": N})
            )
        );
        assert_eq!(dropped, ["id_slot"]);
        // Anthropic never passes stream_options, even when named.
        let request =
            json!({"messages": [], "grammar": "g", "stream_options": {"include_usage": false}});
        let (body, dropped) = shape_with(Dialect::Anthropic, &request.to_string(), &p).unwrap();
        assert_eq!(
            body,
            with_forced(
                Dialect::Anthropic,
                json!({"messages": [], "grammar": "g", "max_tokens": N})
            )
        );
        assert_eq!(dropped, ["stream_options"]);
    }

    #[test]
    fn dropped_names_are_escaped_cut_and_capped() {
        let long = "a".repeat(100);
        let raw =
            format!(r#"{{"messages":[],"{long}":1,"bad\u0007\u202ename":2,"gr\u0061mmar":3}}"#);
        let (body, dropped) = shape_with(Dialect::OpenAi, &raw, &policy()).unwrap();
        assert_eq!(
            body,
            with_forced(Dialect::OpenAi, json!({"messages": [], "max_tokens": N}))
        );
        assert_eq!(
            dropped,
            [
                format!("{}…", "a".repeat(64)),
                "bad\\u{7}\\u{202e}name".to_owned(),
                "grammar".to_owned()
            ]
        );

        let mut raw = String::from(r#"{"messages":[]"#);
        for i in 0..100 {
            raw.push_str(&format!(r#","x{i}":{i}"#));
        }
        raw.push('}');
        let (_, dropped) = shape_with(Dialect::OpenAi, &raw, &policy()).unwrap();
        assert_eq!(dropped.len(), 33);
        assert_eq!(dropped[31], "x31");
        assert_eq!(dropped[32], "…(68 more)");
    }

    // ---- memory bound -------------------------------------------------------------

    /// 8 MiB of tiny values in one field: read as one borrowed RawValue (a Value tree
    /// would cost ~30x), dropped without a copy, or copied once when admitted.
    #[test]
    fn eight_mib_of_tiny_values() {
        let count = 4 << 20;
        let mut raw = String::with_capacity(2 * count + 64);
        raw.push_str(r#"{"messages":[],"x":["#);
        for i in 0..count {
            raw.push_str(if i == 0 { "1" } else { ",1" });
        }
        raw.push_str("]}");
        assert!(raw.len() >= 8 << 20);

        let shaped = apply(Dialect::OpenAi, &raw, "m", &policy()).unwrap();
        assert_eq!(shaped.dropped, ["x"]);
        assert_eq!(
            String::from_utf8(shaped.body).unwrap(),
            format!(
                r#"{{"model":"m","stream":true,"stream_options":{{"include_usage":true}},"messages":[],"max_tokens":{N}}}"#
            )
        );

        let mut p = policy();
        p.allow_fields = vec!["x".into()];
        let shaped = apply(Dialect::Anthropic, &raw, "m", &p).unwrap();
        assert!(shaped.dropped.is_empty());
        let x_start = raw.find(r#""x":"#).unwrap();
        let x = &raw[x_start..raw.len() - 1];
        assert_eq!(
            String::from_utf8(shaped.body).unwrap(),
            format!(r#"{{"model":"m","stream":true,"messages":[],{x},"max_tokens":{N}}}"#)
        );
    }

    // ---- duplicates, shape of the input ---------------------------------------------

    #[test]
    fn duplicate_checked_keys_are_refused() {
        let cases = [
            (r#"{"messages":[],"model":"a","model":"b"}"#, "model"),
            (r#"{"messages":[],"stream":true,"stream":false}"#, "stream"),
            (
                r#"{"messages":[],"max_tokens":1,"max_tokens":99999}"#,
                "max_tokens",
            ),
            (
                r#"{"messages":[],"messages":[{"role":"user","content":"x"}]}"#,
                "messages",
            ),
            (
                r#"{"messages":[],"temperature":1,"temperature":2}"#,
                "temperature",
            ),
            (r#"{"messages":[],"mod\u0065l":"a","model":"b"}"#, "model"),
        ];
        for (raw, key) in cases {
            for d in [Dialect::OpenAi, Dialect::Anthropic] {
                assert_eq!(
                    shape_with(d, raw, &policy()).unwrap_err(),
                    format!("`{key}` appears more than once"),
                    "{d:?} {raw}"
                );
            }
        }
        for (raw, key) in [
            (r#"{"messages":[],"n":1,"n":5}"#, "n"),
            (
                r#"{"messages":[],"stream_options":{},"stream_options":{}}"#,
                "stream_options",
            ),
        ] {
            assert_eq!(
                shape_with(Dialect::OpenAi, raw, &policy()).unwrap_err(),
                format!("`{key}` appears more than once"),
                "{raw}"
            );
        }
    }

    #[test]
    fn duplicate_dropped_keys_are_dropped() {
        let raw = r#"{"messages":[],"grammar":"a","grammar":"b"}"#;
        let (body, dropped) = shape_with(Dialect::OpenAi, raw, &policy()).unwrap();
        assert_eq!(
            body,
            with_forced(Dialect::OpenAi, json!({"messages": [], "max_tokens": N}))
        );
        assert_eq!(dropped, ["grammar", "grammar"]);
    }

    #[test]
    fn output_has_each_key_once() {
        let raw =
            r#"{"stream":false,"messages":[],"model":"x","max_tokens":5,"stream_options":{}}"#;
        let shaped = apply(Dialect::OpenAi, raw, "m", &policy()).unwrap();
        assert_eq!(
            String::from_utf8(shaped.body).unwrap(),
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[],"max_tokens":5}"#
        );
    }

    #[test]
    fn input_must_be_a_json_object() {
        let cases = [
            ("[]", "the request must be a JSON object (got an array)"),
            ("\"x\"", "the request must be a JSON object (got a string)"),
            ("12", "the request must be a JSON object (got a number)"),
            ("null", "the request must be a JSON object (got null)"),
            ("", "the request is empty"),
            (" \n", "the request is empty"),
            ("{", "the request is not valid JSON (line 1, column 1)"),
            (
                "{\"messages\":[]} x",
                "the request is not valid JSON (line 1, column 17)",
            ),
            (
                "{\"messages\":[],}",
                "the request is not valid JSON (line 1, column 16)",
            ),
        ];
        for (raw, reason) in cases {
            for d in [Dialect::OpenAi, Dialect::Anthropic] {
                assert_eq!(
                    shape_with(d, raw, &policy()).unwrap_err(),
                    reason,
                    "{raw:?}"
                );
            }
        }
    }

    #[test]
    fn request_nesting_is_bounded() {
        let mut p = policy();
        p.max_request_depth = 10;
        p.max_schema_depth = 2;
        let deep = |levels: usize| -> String {
            format!(
                r#"{{"messages":[],"metadata":{}1{}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        assert!(shape_with(Dialect::OpenAi, &deep(9), &p).is_ok());
        assert_eq!(
            shape_with(Dialect::OpenAi, &deep(10), &p).unwrap_err(),
            "the request nests 11 levels deep, over the limit of 10"
        );
        // Never below the schema depth plus room for where schemas sit.
        p.max_schema_depth = 20;
        assert!(shape_with(Dialect::OpenAi, &deep(27), &p).is_ok());
        // Far deeper than serde_json's recursion limit: still an answer, no stack use.
        let raw = deep(1_000_000);
        assert_eq!(
            shape_with(Dialect::Anthropic, &raw, &policy()).unwrap_err(),
            "the request nests 1000001 levels deep, over the limit of 64"
        );
    }

    #[test]
    fn unpaired_surrogate_escapes_are_refused() {
        // serde_json's raw read lets them through, and backends disagree on them.
        for raw in [
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://e.com/\udc00"}}]}]}"#,
            r#"{"messages":[],"tools":[{"type":"web_search\ud800"}]}"#,
            r#"{"messages":[{"\udc00":1}]}"#,
            r#"{"messages":[{"role":"user","content":"\udc00"}]}"#,
            r#"{"messages":[],"grammar":"x\uD83D"}"#,
            r#"{"messages":[],"grammar":"\ud83d\ud83d\ude00"}"#,
            r#"{"messages":[],"grammar":"\ud83d\n\ude00"}"#,
            r#"{"messages":[],"grammar":"\ud83dx"}"#,
        ] {
            for d in [Dialect::OpenAi, Dialect::Anthropic] {
                assert_eq!(
                    shape_with(d, raw, &policy()).unwrap_err(),
                    "the request holds a \\u escape of an unpaired UTF-16 surrogate",
                    "{raw}"
                );
            }
        }
        // Pairs, escaped or not, are text like any other.
        let raw = r#"{"messages":[{"role":"user","content":"\ud83d\ude00 😀 \\ud800 \u0041"}]}"#;
        let (body, _) = shape_with(Dialect::OpenAi, raw, &policy()).unwrap();
        assert_eq!(body["messages"][0]["content"], "😀 😀 \\ud800 A");
        // A key serde_json has to decode fails the read itself.
        assert_eq!(
            shape_with(Dialect::OpenAi, r#"{"\udc00":1}"#, &policy()).unwrap_err(),
            "the request is not valid JSON (line 1, column 8)"
        );
    }

    // ---- refusal text -------------------------------------------------------------

    #[test]
    fn refusal_display_is_pinned() {
        let r = apply(Dialect::OpenAi, r#"{"messages":[],"n":4}"#, "m", &policy()).unwrap_err();
        assert_eq!(
            r.to_string(),
            "refused by provider policy: `n` must be 1 (got 4)"
        );
        let request = json!({"messages": [{}, {}, {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}},
        ]}]});
        let r = apply(Dialect::OpenAi, &request.to_string(), "m", &policy()).unwrap_err();
        assert_eq!(
            r.to_string(),
            "refused by provider policy: remote media URL in messages[2].content[0] (image_url); only data: URLs are accepted"
        );
        let mut tools = vec![function_tool("f", json!({})); 3];
        tools.push(function_tool(
            "g",
            json!({"description": "x".repeat(69_982)}),
        ));
        let request = json!({"messages": [], "tools": tools});
        let r = apply(Dialect::OpenAi, &request.to_string(), "m", &policy()).unwrap_err();
        assert_eq!(
            r.to_string(),
            "refused by provider policy: tools[3].function.parameters is 70000 bytes, over the 65536-byte limit"
        );
        let err: &dyn std::error::Error = &r;
        assert!(err.to_string().starts_with("refused by provider policy: "));
    }

    #[test]
    fn refusals_quote_little_and_escaped() {
        let long = format!("\u{1b}[31m\n{}", "y".repeat(10_000));
        let reason = refused(Dialect::OpenAi, json!({"messages": [], "n": long}));
        assert_eq!(
            reason,
            format!(
                "`n` must be 1 (got \"\\u{{1b}}[31m\\u{{a}}{}…\")",
                "y".repeat(34)
            )
        );
        let raw = format!(r#"{{"messages":[],"n":{}}}"#, "9".repeat(10_000));
        let reason = shape_with(Dialect::OpenAi, &raw, &policy()).unwrap_err();
        assert_eq!(reason, format!("`n` must be 1 (got {}…)", "9".repeat(40)));
        let key = format!("evil\u{202e}{}_url", "k".repeat(100));
        let mut part = serde_json::Map::new();
        part.insert(key, json!("https://e.com"));
        let reason = refused(Dialect::OpenAi, with_part(Value::Object(part)));
        assert_eq!(
            reason,
            format!(
                "remote media URL in messages[1].content[1] (evil\\u{{202e}}{}…); only data: URLs are accepted",
                "k".repeat(35)
            )
        );
    }

    // ---- helpers ------------------------------------------------------------------

    #[test]
    fn url_classification() {
        assert!(is_data_url("data:image/png;base64,AA"));
        assert!(is_data_url("  DaTa:x"));
        assert!(!is_data_url("dat"));
        assert!(!is_data_url("https://e.com"));
        assert!(is_scheme_url("https://e.com"));
        assert!(is_scheme_url(" file:///etc"));
        assert!(is_scheme_url("s3+x.y-z://b"));
        assert!(!is_scheme_url("UklGRiQAAABXQVZF"));
        assert!(!is_scheme_url("://x"));
        assert!(!is_scheme_url("1a://x"));
        assert!(!is_scheme_url("data:audio/wav;base64,AA//"));
    }
}
