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
    let depth = nesting_depth(raw.as_bytes());
    if depth > depth_limit {
        return Err(Refusal::new(format!(
            "the request nests {depth} levels deep, over the limit of {depth_limit}"
        )));
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
            "`messages` and `system` are"
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
            let Some(text) = string(value.get()) else {
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
    let mut tool_use = false;
    let mut url_field: Option<Cow<'_, str>> = None;
    each_entry(block.get(), |key, value| {
        match &*key {
            "type" => tool_use = string(value.get()).is_some_and(|t| t.ends_with("tool_use")),
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
        Some(key) if !tool_use => Err(remote_media(at, &key)),
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
                    remote || string(value.get()).is_some_and(|t| t.eq_ignore_ascii_case("url"))
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
                    if string(value.get()).as_deref() != Some("function") {
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
                "type" if string(value.get()).as_deref() != Some("custom") => {
                    return Err(Refusal::new(format!(
                        "{at} is a server tool (type {}); only client tools are accepted",
                        shown(value)
                    )));
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
                let ty = string(value.get());
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

/// Deepest `{`/`[` nesting of JSON text, counted on the bytes (brackets inside strings
/// skipped), so a deep value costs no tree and no recursion.
fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
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

fn string(json: &str) -> Option<Cow<'_, str>> {
    if kind(json) != Kind::String {
        return None;
    }
    serde_json::from_str::<Text<'_>>(json).ok().map(|t| t.0)
}

/// A client value for a refusal: scalars quoted (cut and escaped), containers named.
fn shown(value: &RawValue) -> String {
    let json = value.get();
    match kind(json) {
        Kind::String => match string(json) {
            Some(s) => format!("\"{}\"", escape(&s, QUOTE_CHARS)),
            None => Kind::String.article().to_owned(),
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
        Walk::Json(_) => Refusal::new("the request holds malformed JSON"),
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
