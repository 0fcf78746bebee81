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

use crate::json_string::push_json_string;
use serde_json::value::RawValue;
use std::borrow::Cow;

mod json;
mod limits;
mod media;
mod refusal;
mod tools;

use json::*;
use media::*;
use refusal::QUOTE_CHARS;
use tools::*;

pub use limits::RequestPolicy;
pub use refusal::Refusal;

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
    // At most 16 strings of at most 1 KiB: the backend tests each one at every token.
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
    // Bounded like OpenAI's `stop`.
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
/// OpenAI's own limit on `logit_bias`.
const MAX_LOGIT_BIAS: usize = 300;
/// Strings in `stop` / `stop_sequences` (OpenAI's own limit is 4; Anthropic sets none
/// that is documented), and the raw JSON bytes of each.
const MAX_STOP_SEQUENCES: usize = 16;
const MAX_STOP_BYTES: usize = 1024;
/// Characters of a dropped field's name kept for the log.
const DROPPED_NAME_CHARS: usize = 64;
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
        "stop" | "stop_sequences" => stop_strings(name, value),
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

#[cfg(test)]
mod tests;

/// `stop` / `stop_sequences`: a string or an array of at most [`MAX_STOP_SEQUENCES`]
/// strings, each at most [`MAX_STOP_BYTES`] of JSON text.
fn stop_strings(name: &str, value: &RawValue) -> Result<Emit, Refusal> {
    let one = |v: &RawValue| match kind(v.get()) {
        Kind::String if v.get().len() <= MAX_STOP_BYTES => Ok(()),
        Kind::String => Err(Refusal::new(format!(
            "a `{name}` string is {} bytes, over the limit of {MAX_STOP_BYTES}",
            v.get().len()
        ))),
        got => Err(Refusal::new(format!(
            "`{name}` must hold strings (got {})",
            got.article()
        ))),
    };
    match kind(value.get()) {
        Kind::Null => Ok(Emit::Omit),
        Kind::String => one(value).map(|()| Emit::Raw),
        Kind::Array => {
            let over = || {
                Refusal::new(format!(
                    "`{name}` has more than {MAX_STOP_SEQUENCES} entries"
                ))
            };
            each_element(value.get(), MAX_STOP_SEQUENCES, over, |_, v| one(v))?;
            Ok(Emit::Raw)
        }
        got => Err(Refusal::new(format!(
            "`{name}` must be a string or an array of strings (got {})",
            got.article()
        ))),
    }
}
