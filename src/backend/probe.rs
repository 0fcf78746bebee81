//! What each backend kind answers to health, model-list and context-window
//! probes (docs/protocol.md, "Backends"), and telling kinds apart by those answers.

use super::answers::{ModelList, Props, Show, Tags};
use super::BackendKind;
use crate::client::{json_call, HttpError, JsonAnswer};
use crate::endpoint::Endpoint;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
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

fn get<T: DeserializeOwned>(
    url: &Endpoint,
    path: &str,
    key: Option<&str>,
) -> Result<JsonAnswer<T>, HttpError> {
    json_call(url, "GET", path, None, key, PROBE_TIMEOUT, MAX_PROBE_BODY)
}

/// A context length or slot count: zero and beyond u32 mean "not said".
fn positive_u32(n: Option<u64>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0)
}

/// Model ids (and vLLM's `max_model_len`) from an OpenAI `/v1/models` answer.
pub fn openai_models(list: &ModelList) -> Vec<ModelInfo> {
    let mut out: Vec<ModelInfo> = list
        .data
        .iter()
        .flatten()
        .filter_map(|m| {
            Some(ModelInfo {
                id: m.id.clone()?,
                context_window: positive_u32(m.max_model_len),
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    out
}

/// LM Studio's `/api/v0/models`: the loaded context if loaded, else the maximum.
pub fn lmstudio_context(list: &ModelList, id: &str) -> Option<u32> {
    let m = list
        .data
        .iter()
        .flatten()
        .find(|m| m.id.as_deref() == Some(id))?;
    positive_u32(m.loaded_context_length).or_else(|| positive_u32(m.max_context_length))
}

/// Ollama's `/api/show`: `model_info."<arch>.context_length"`, else any context length.
pub fn ollama_context(show: &Show) -> Option<u32> {
    let info = show.model_info.as_ref()?;
    let lengths = &info.context_lengths;
    let of_arch = info
        .architecture
        .as_deref()
        .and_then(|a| lengths.iter().find(|(arch, _)| arch == a));
    of_arch
        .or(lengths.first())
        .and_then(|(_, n)| positive_u32(Some(*n)))
}

/// llama-server's `/props`: (n_ctx, total_slots).
pub fn llamacpp_props(p: &Props) -> (Option<u32>, Option<u32>) {
    let settings = p.default_generation_settings.as_ref().and_then(|s| s.n_ctx);
    (
        positive_u32(settings).or(positive_u32(p.n_ctx)),
        positive_u32(p.total_slots),
    )
}

#[derive(Serialize)]
struct ShowRequest<'a> {
    model: &'a str,
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
    /// 200, with a body that is not the answer the kind gives.
    Unreadable {
        path: &'static str,
        source: serde_json::Error,
    },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Status { path, status } => write!(f, "GET {path} answered {status}"),
            ProbeError::Call { path, source } => write!(f, "GET {path}: {source}"),
            ProbeError::Unreadable { path, source } => {
                write!(f, "GET {path}: not the expected answer: {source}")
            }
        }
    }
}

impl std::error::Error for ProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProbeError::Status { .. } => None,
            ProbeError::Call { source, .. } => Some(source),
            ProbeError::Unreadable { source, .. } => Some(source),
        }
    }
}

fn models(url: &Endpoint, key: Option<&str>) -> Result<Vec<ModelInfo>, ProbeError> {
    let path = "/v1/models";
    match get::<ModelList>(url, path, key) {
        Ok((200, Ok(list))) => Ok(openai_models(&list)),
        Ok((200, Err(source))) => Err(ProbeError::Unreadable { path, source }),
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
        match get::<IgnoredAny>(url, path, key) {
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
            if let Ok((200, Ok(props))) = get::<Props>(url, "/props", key) {
                let (n_ctx, total_slots) = llamacpp_props(&props);
                slots = total_slots;
                for m in &mut models {
                    m.context_window = m.context_window.or(n_ctx);
                }
            }
        }
        BackendKind::LmStudio => {
            if let Ok((200, Ok(list))) = get::<ModelList>(url, "/api/v0/models", key) {
                for m in &mut models {
                    m.context_window = lmstudio_context(&list, &m.id);
                }
            }
        }
        BackendKind::Ollama => {
            for m in &mut models {
                let Ok(body) = serde_json::to_vec(&ShowRequest { model: &m.id }) else {
                    continue;
                };
                if let Ok((200, Ok(show))) = json_call::<Show>(
                    url,
                    "POST",
                    "/api/show",
                    Some(&body),
                    key,
                    PROBE_TIMEOUT,
                    MAX_PROBE_BODY,
                ) {
                    m.context_window = ollama_context(&show);
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
    if let Ok((200, Ok(p))) = get::<Props>(url, "/props", None) {
        if p.default_generation_settings.is_some() || p.total_slots.is_some() {
            return Some(BackendKind::LlamaCpp);
        }
    }
    if let Ok((200, Ok(Tags { models: Some(_) }))) = get(url, "/api/tags", None) {
        return Some(BackendKind::Ollama);
    }
    let lists = |path| {
        matches!(
            get::<ModelList>(url, path, None),
            Ok((200, Ok(ModelList { data: Some(_) })))
        )
    };
    if lists("/api/v0/models") {
        return Some(BackendKind::LmStudio);
    }
    lists("/v1/models").then_some(BackendKind::Vllm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: DeserializeOwned>(text: &str) -> T {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn parses_each_kinds_shapes() {
        let list = read(
            r#"{"object":"list","data":[{"id":"b","max_model_len":4096},{"id":"a"},{"id":"a"},{"x":1}]}"#,
        );
        assert_eq!(
            openai_models(&list),
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
        let zero = read(r#"{"data":[{"id":"z","max_model_len":0}]}"#);
        assert_eq!(openai_models(&zero)[0].context_window, None);
        let lm = read(
            r#"{"data":[{"id":"m","loaded_context_length":8192,"max_context_length":32768},{"id":"n","max_context_length":4096}]}"#,
        );
        assert_eq!(lmstudio_context(&lm, "m"), Some(8192));
        assert_eq!(lmstudio_context(&lm, "n"), Some(4096));
        assert_eq!(lmstudio_context(&lm, "z"), None);
        let ol = read(
            r#"{"model_info":{"clip.context_length":77,"general.architecture":"llama","llama.context_length":131072}}"#,
        );
        assert_eq!(ollama_context(&ol), Some(131072), "the architecture's own");
        let ol = read(r#"{"model_info":{"qwen2.context_length":32768}}"#);
        assert_eq!(ollama_context(&ol), Some(32768));
        assert_eq!(ollama_context(&read(r#"{"license":"x"}"#)), None);
        let props = read(r#"{"default_generation_settings":{"n_ctx":4096},"total_slots":4}"#);
        assert_eq!(llamacpp_props(&props), (Some(4096), Some(4)));
        assert_eq!(
            llamacpp_props(&read(r#"{"n_ctx":2048}"#)),
            (Some(2048), None)
        );
        assert_eq!(llamacpp_props(&read("{}")), (None, None));
    }
}
