//! What each backend kind answers to health, model-list and context-window
//! probes (docs/protocol.md, "Backends"), and telling kinds apart by those answers.

use super::BackendKind;
use crate::client::{json_call, HttpError};
use crate::endpoint::Endpoint;
use serde_json::{json, Value};
use std::time::Duration;

/// Budget for each probe call; a hung backend costs at most a few of these.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
const MAX_PROBE_BODY: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub id: String,
    pub context_window: Option<u32>,
}

/// One backend's state as last probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub healthy: bool,
    /// Why it is not healthy, for logs and `discover`.
    pub problem: Option<String>,
    pub models: Vec<ModelInfo>,
    /// llama-server's parallel slots.
    pub slots: Option<u32>,
}

impl Probe {
    fn down(problem: String) -> Probe {
        Probe {
            healthy: false,
            problem: Some(problem),
            models: Vec::new(),
            slots: None,
        }
    }
}

fn get(url: &Endpoint, path: &str, key: Option<&str>) -> Result<(u16, Option<Value>), HttpError> {
    json_call(url, "GET", path, None, key, PROBE_TIMEOUT, MAX_PROBE_BODY)
}

fn as_u32(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// Model ids (and vLLM's `max_model_len`) from an OpenAI `/v1/models` answer.
pub fn parse_openai_models(v: &Value) -> Vec<ModelInfo> {
    let mut out: Vec<ModelInfo> = v
        .get("data")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    Some(ModelInfo {
                        id: m.get("id")?.as_str()?.to_owned(),
                        context_window: as_u32(m.get("max_model_len")),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    out
}

/// LM Studio's `/api/v0/models`: the loaded context if loaded, else the maximum.
pub fn lmstudio_context(v: &Value, id: &str) -> Option<u32> {
    let m = v
        .get("data")?
        .as_array()?
        .iter()
        .find(|m| m.get("id").and_then(Value::as_str) == Some(id))?;
    as_u32(m.get("loaded_context_length")).or_else(|| as_u32(m.get("max_context_length")))
}

/// Ollama's `/api/show`: `model_info."<arch>.context_length"`.
pub fn ollama_context(v: &Value) -> Option<u32> {
    let info = v.get("model_info")?.as_object()?;
    let arch = info.get("general.architecture").and_then(Value::as_str);
    if let Some(n) = arch.and_then(|a| as_u32(info.get(&format!("{a}.context_length")))) {
        return Some(n);
    }
    info.iter()
        .find(|(k, _)| k.ends_with(".context_length"))
        .and_then(|(_, v)| as_u32(Some(v)))
}

/// llama-server's `/props`: (n_ctx, total_slots).
pub fn llamacpp_props(v: &Value) -> (Option<u32>, Option<u32>) {
    (
        as_u32(v.pointer("/default_generation_settings/n_ctx")).or_else(|| as_u32(v.get("n_ctx"))),
        as_u32(v.get("total_slots")),
    )
}

/// Why a probe's GET did not give what was asked; `Probe::problem` says it.
#[derive(Debug)]
enum ProbeError {
    Status {
        path: &'static str,
        status: u16,
    },
    Call {
        path: &'static str,
        source: HttpError,
    },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Status { path, status } => write!(f, "GET {path} answered {status}"),
            ProbeError::Call { path, source } => write!(f, "GET {path}: {source}"),
        }
    }
}

impl std::error::Error for ProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProbeError::Status { .. } => None,
            ProbeError::Call { source, .. } => Some(source),
        }
    }
}

fn models(url: &Endpoint, key: Option<&str>) -> Result<Vec<ModelInfo>, ProbeError> {
    let path = "/v1/models";
    match get(url, path, key) {
        Ok((200, Some(v))) => Ok(parse_openai_models(&v)),
        Ok((status, _)) => Err(ProbeError::Status { path, status }),
        Err(source) => Err(ProbeError::Call { path, source }),
    }
}

/// Probes one backend of a known kind.
pub fn probe(kind: BackendKind, url: &Endpoint, key: Option<&str>) -> Probe {
    let health_path = match kind {
        BackendKind::Vllm | BackendKind::LlamaCpp => Some("/health"),
        BackendKind::Ollama => Some("/api/tags"),
        // LM Studio has no health route; the model list doubles as one.
        BackendKind::LmStudio => None,
    };
    if let Some(path) = health_path {
        match get(url, path, key) {
            Ok((200, _)) => {}
            Ok((503, _)) if kind == BackendKind::LlamaCpp => {
                return Probe::down("loading the model (503)".into())
            }
            Ok((status, _)) => return Probe::down(ProbeError::Status { path, status }.to_string()),
            Err(source) => return Probe::down(ProbeError::Call { path, source }.to_string()),
        }
    }
    let mut models = match models(url, key) {
        Ok(m) => m,
        Err(e) => return Probe::down(e.to_string()),
    };
    let mut slots = None;
    match kind {
        BackendKind::Vllm => {}
        BackendKind::LlamaCpp => {
            if let Ok((200, Some(v))) = get(url, "/props", key) {
                let (n_ctx, total_slots) = llamacpp_props(&v);
                slots = total_slots;
                for m in &mut models {
                    m.context_window = m.context_window.or(n_ctx);
                }
            }
        }
        BackendKind::LmStudio => {
            if let Ok((200, Some(v))) = get(url, "/api/v0/models", key) {
                for m in &mut models {
                    m.context_window = lmstudio_context(&v, &m.id);
                }
            }
        }
        BackendKind::Ollama => {
            for m in &mut models {
                let body = json!({ "model": m.id });
                if let Ok((200, Some(v))) = json_call(
                    url,
                    "POST",
                    "/api/show",
                    Some(&body),
                    key,
                    PROBE_TIMEOUT,
                    MAX_PROBE_BODY,
                ) {
                    m.context_window = ollama_context(&v);
                }
            }
        }
    }
    Probe {
        healthy: true,
        problem: None,
        models,
        slots,
    }
}

/// Which kind answers at `url`, judged by what it serves rather than its port.
pub fn identify(url: &Endpoint) -> Option<BackendKind> {
    if let Ok((200, Some(v))) = get(url, "/props", None) {
        if v.get("default_generation_settings").is_some() || v.get("total_slots").is_some() {
            return Some(BackendKind::LlamaCpp);
        }
    }
    if let Ok((200, Some(v))) = get(url, "/api/tags", None) {
        if v.get("models").is_some_and(Value::is_array) {
            return Some(BackendKind::Ollama);
        }
    }
    if let Ok((200, Some(v))) = get(url, "/api/v0/models", None) {
        if v.get("data").is_some_and(Value::is_array) {
            return Some(BackendKind::LmStudio);
        }
    }
    match get(url, "/v1/models", None) {
        Ok((200, Some(v))) if v.get("data").is_some_and(Value::is_array) => Some(BackendKind::Vllm),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kinds_shapes() {
        let v = json!({"object":"list","data":[{"id":"b","max_model_len":4096},{"id":"a"},{"id":"a"},{"x":1}]});
        assert_eq!(
            parse_openai_models(&v),
            vec![
                ModelInfo {
                    id: "a".into(),
                    context_window: None
                },
                ModelInfo {
                    id: "b".into(),
                    context_window: Some(4096)
                }
            ]
        );
        let lm = json!({"data":[{"id":"m","loaded_context_length":8192,"max_context_length":32768},{"id":"n","max_context_length":4096}]});
        assert_eq!(lmstudio_context(&lm, "m"), Some(8192));
        assert_eq!(lmstudio_context(&lm, "n"), Some(4096));
        assert_eq!(lmstudio_context(&lm, "z"), None);
        let ol =
            json!({"model_info":{"general.architecture":"llama","llama.context_length":131072}});
        assert_eq!(ollama_context(&ol), Some(131072));
        let ol = json!({"model_info":{"qwen2.context_length":32768}});
        assert_eq!(ollama_context(&ol), Some(32768));
        let props = json!({"default_generation_settings":{"n_ctx":4096},"total_slots":4});
        assert_eq!(llamacpp_props(&props), (Some(4096), Some(4)));
        assert_eq!(llamacpp_props(&json!({})), (None, None));
    }
}
