//! How each backend kind tells what it is working on, for local first (src/gate/local.rs
//! judges the answers): llama-server's slots, vLLM's metrics, Ollama's loaded models.
//! LM Studio reports nothing about requests in progress.

use crate::backend::answers::{Running, Slot};
use crate::backend::BackendKind;
use crate::endpoint::Endpoint;
use std::time::Duration;

/// What a backend said about its work.
pub enum Report {
    /// llama-server `GET /slots`.
    Slots(Vec<Slot>),
    /// vLLM `GET /metrics` (Prometheus text).
    Metrics(String),
    /// Ollama `GET /api/ps`.
    Loaded(Running),
}

pub enum Answer {
    Report(Report),
    /// 404/501 and the like at this path: the server has no such endpoint (or has it
    /// switched off).
    Missing(&'static str),
    Failed,
}

/// The path a kind is asked at; None for a kind with no such signal.
pub fn signal_path(kind: BackendKind) -> Option<&'static str> {
    match kind {
        BackendKind::LlamaCpp => Some("/slots"),
        BackendKind::Vllm => Some("/metrics"),
        BackendKind::Ollama => Some("/api/ps"),
        BackendKind::LmStudio => None,
    }
}

const SIGNAL_TIMEOUT: Duration = Duration::from_millis(1500);
const MAX_SIGNAL_BODY: usize = 1 << 20;

/// Asks one backend; None for a kind with no signal ([`signal_path`]).
pub fn ask(kind: BackendKind, url: &Endpoint, key: Option<&str>) -> Option<Answer> {
    let path = signal_path(kind)?;
    let answer = match kind {
        BackendKind::LlamaCpp => json(url, path, key).map(Report::Slots),
        BackendKind::Ollama => json(url, path, key).map(Report::Loaded),
        _ => text(url, path, key).map(Report::Metrics),
    };
    Some(match answer {
        Ok(r) => Answer::Report(r),
        Err(true) => Answer::Missing(path),
        Err(false) => Answer::Failed,
    })
}

fn missing(status: u16) -> bool {
    matches!(status, 404 | 405 | 501)
}

/// Err(true): no such endpoint; Err(false): no usable answer.
fn json<T: serde::de::DeserializeOwned>(
    url: &Endpoint,
    path: &str,
    key: Option<&str>,
) -> Result<T, bool> {
    match crate::client::json_call(url, "GET", path, None, key, SIGNAL_TIMEOUT, MAX_SIGNAL_BODY) {
        Ok((200, Ok(v))) => Ok(v),
        Ok((status, _)) => Err(missing(status)),
        Err(_) => Err(false),
    }
}

fn text(url: &Endpoint, path: &str, key: Option<&str>) -> Result<String, bool> {
    let req = crate::client::Request {
        method: "GET",
        path,
        headers: &[],
        api_key: key,
        body: None,
    };
    let limits = crate::client::Limits::quick(SIGNAL_TIMEOUT);
    let cancel = crate::cancel::Cancel::default();
    match crate::client::send(url, &req, limits, &cancel) {
        Ok(mut r) if r.status == 200 => r
            .read_to_end(MAX_SIGNAL_BODY)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|_| false),
        Ok(r) => Err(missing(r.status)),
        Err(_) => Err(false),
    }
}
