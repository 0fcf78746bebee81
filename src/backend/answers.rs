//! What the local backends answer to the agent's own GETs (docs/protocol.md,
//! "Backends"), as types. Only the keys the agent reads are declared; everything else
//! in an answer is read past. A key that is there with the wrong type makes the answer
//! unreadable (the caller reports or skips it) rather than being guessed at.

use crate::json_fields::json_fields;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

json_fields! {
    /// An OpenAI-style model list: `/v1/models` (all kinds), LM Studio's `/api/v0/models`.
    #[derive(Debug, Default)]
    pub struct ModelList {
        pub data: Option<Vec<ModelEntry>>,
    }
}

json_fields! {
    /// One model of a [`ModelList`]; the lengths are vLLM's and LM Studio's.
    #[derive(Debug, Default)]
    pub struct ModelEntry {
        pub id: Option<String>,
        pub max_model_len: Option<u64>,
        pub loaded_context_length: Option<u64>,
        pub max_context_length: Option<u64>,
    }
}

json_fields! {
    /// llama-server's `/props`.
    #[derive(Debug, Default)]
    pub struct Props {
        pub default_generation_settings: Option<GenerationSettings>,
        /// Older builds put it at the top level.
        pub n_ctx: Option<u64>,
        pub total_slots: Option<u64>,
    }
}

json_fields! {
    #[derive(Debug, Default)]
    pub struct GenerationSettings {
        pub n_ctx: Option<u64>,
    }
}

json_fields! {
    /// Ollama's `/api/tags`: only whether `models` is a list (it tells Ollama apart).
    #[derive(Debug, Default)]
    pub struct Tags {
        pub models: Option<Vec<IgnoredAny>>,
    }
}

json_fields! {
    /// Ollama's `/api/show`.
    #[derive(Debug, Default)]
    pub struct Show {
        pub model_info: Option<ModelInfo>,
    }
}

/// Ollama's `model_info`: keys are per architecture (`llama.context_length`), so they
/// cannot be fields; only the architecture and the context lengths are kept.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModelInfo {
    pub architecture: Option<String>,
    /// `(<arch>, length)` for each `<arch>.context_length` key, in the answer's order.
    pub context_lengths: Vec<(String, u64)>,
}

impl<'de> Deserialize<'de> for ModelInfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelInfo;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of model facts")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModelInfo, A::Error> {
                let mut info = ModelInfo::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "general.architecture" {
                        info.architecture = map.next_value()?;
                    } else if let Some(arch) = key.strip_suffix(".context_length") {
                        let n = map.next_value()?;
                        info.context_lengths.push((arch.to_owned(), n));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(info)
            }
        }
        d.deserialize_map(V)
    }
}

json_fields! {
    /// One of llama-server's `/slots`.
    #[derive(Debug, Default)]
    pub struct Slot {
        pub is_processing: Option<bool>,
        /// Builds before `is_processing`: 1 is processing.
        pub state: Option<u64>,
    }
}

impl Slot {
    pub fn busy(&self) -> bool {
        self.is_processing == Some(true) || self.state == Some(1)
    }
}

json_fields! {
    /// Ollama's `/api/ps`.
    #[derive(Debug, Default)]
    pub struct Running {
        pub models: Option<Vec<RunningModel>>,
    }
}

json_fields! {
    #[derive(Debug, Default)]
    pub struct RunningModel {
        pub name: Option<String>,
        pub model: Option<String>,
        pub expires_at: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_info_keeps_the_architecture_and_the_lengths() {
        let show: Show = serde_json::from_str(
            r#"{"model_info":{"general.architecture":"llama","general.tags":[1,{"a":2}],
                "llama.context_length":131072,"llama.embedding_length":4096},"license":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            show.model_info,
            Some(ModelInfo {
                architecture: Some("llama".into()),
                context_lengths: vec![("llama".into(), 131072)],
            })
        );
        let wrong: Result<Show, _> =
            serde_json::from_str(r#"{"model_info":{"llama.context_length":"big"}}"#);
        assert!(wrong.is_err());
    }

    #[test]
    fn a_slot_is_busy_by_either_field() {
        let slots: Vec<Slot> = serde_json::from_str(
            r#"[{"id":0,"is_processing":true},{"id":1,"state":1},{"id":2,"state":0},{"id":3}]"#,
        )
        .unwrap();
        let busy: Vec<bool> = slots.iter().map(Slot::busy).collect();
        assert_eq!(busy, [true, true, false, false]);
    }

    #[test]
    fn a_wrong_type_makes_the_answer_unreadable() {
        assert!(serde_json::from_str::<ModelList>(r#"{"data":[{"id":7}]}"#).is_err());
        assert!(serde_json::from_str::<Tags>(r#"{"models":{}}"#).is_err());
        let tags: Tags = serde_json::from_str(r#"{"models":null}"#).unwrap();
        assert!(tags.models.is_none());
    }
}
