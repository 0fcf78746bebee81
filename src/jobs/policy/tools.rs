//! Tools, functions and response formats: types restricted, schemas bounded.

use super::json::*;
use super::limits::RequestPolicy;
use super::refusal::Refusal;
use serde_json::value::RawValue;

pub(super) fn too_many(what: &'static str, max: usize) -> impl Fn() -> Refusal {
    move || Refusal::new(format!("`{what}` has more than {max} entries"))
}

/// Tools (and functions) arrays: null passes (some SDKs send it for "none"), anything
/// else but an array is refused.
pub(super) fn tool_array(value: &RawValue, what: &'static str) -> Result<bool, Refusal> {
    match kind(value.get()) {
        Kind::Null => Ok(false),
        Kind::Array => Ok(true),
        got => Err(Refusal::new(format!(
            "`{what}` must be an array (got {})",
            got.article()
        ))),
    }
}

pub(super) fn openai_tools(value: &RawValue, policy: &RequestPolicy) -> Result<(), Refusal> {
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
                    inner_schema(value, &Place::Field(&at, "function"), "parameters", policy)?
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

pub(super) fn functions(value: &RawValue, policy: &RequestPolicy) -> Result<(), Refusal> {
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

pub(super) fn anthropic_tools(value: &RawValue, policy: &RequestPolicy) -> Result<(), Refusal> {
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
pub(super) fn response_format(value: &RawValue, policy: &RequestPolicy) -> Result<(), Refusal> {
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
                inner_schema(value, &Place::Field(&root, "json_schema"), "schema", policy)?
            }
            _ => {}
        }
        Ok(())
    })
}

/// A schema the backend compiles into a grammar: bytes first, so the depth scan reads
/// at most `max_schema_bytes`.
pub(super) fn schema(
    value: &RawValue,
    at: &Place<'_>,
    policy: &RequestPolicy,
) -> Result<(), Refusal> {
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

/// The schema under `key` of the object `value` (every copy of a repeated key).
fn inner_schema(
    value: &RawValue,
    at: &Place<'_>,
    key: &'static str,
    policy: &RequestPolicy,
) -> Result<(), Refusal> {
    each_entry(value.get(), |k, v| {
        if k == key {
            schema(v, &Place::Field(at, key), policy)?;
        }
        Ok(())
    })
}
