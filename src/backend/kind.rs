//! The kinds of local inference server the agent talks to.

use std::fmt::Write as _;

/// A backend server kind, in advertising priority order (best first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendKind {
    Vllm,
    LlamaCpp,
    LmStudio,
    Ollama,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Vllm,
        BackendKind::LlamaCpp,
        BackendKind::LmStudio,
        BackendKind::Ollama,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Vllm => "vllm",
            BackendKind::LlamaCpp => "llamacpp",
            BackendKind::LmStudio => "lmstudio",
            BackendKind::Ollama => "ollama",
        }
    }

    pub fn parse(s: &str) -> Option<BackendKind> {
        BackendKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn default_port(self) -> u16 {
        match self {
            BackendKind::Vllm => 8000,
            BackendKind::LlamaCpp => 8080,
            BackendKind::LmStudio => 1234,
            BackendKind::Ollama => 11434,
        }
    }
}

/// The ports discovery probes on 127.0.0.1 when no backend is configured,
/// as a list for messages: "8000, 8080, 1234, 11434".
pub fn default_ports_text() -> String {
    let mut out = String::new();
    for (i, k) in BackendKind::ALL.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}{}", k.default_port());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_ports_are_listed_in_priority_order() {
        for k in BackendKind::ALL {
            assert_eq!(BackendKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(BackendKind::parse("tgi"), None);
        assert_eq!(default_ports_text(), "8000, 8080, 1234, 11434");
    }
}
