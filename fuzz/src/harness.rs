//! One function per fuzz target: feed the input to the agent's parser and check what
//! must hold beyond "does not panic". `tests` replays every file under `seeds/<target>/`
//! and `regressions/<target>/` (inputs that once crashed a target are kept there).

use std::path::Path;
use usepod_edge::backend::anthropic::{request_to_openai, StreamTranslator};
use usepod_edge::backend::sse::{parse_events, EventSplitter, StreamStats};
use usepod_edge::config::{Config, Overrides};
use usepod_edge::identity::Identity;
use usepod_edge::jobs::policy::{apply, Dialect, RequestPolicy};
use usepod_edge::protocol::{normalize_job_id, parse_inbound};

/// An inbound WebSocket text frame (after auth and during the handshake).
pub fn inbound_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_inbound(text);
    if let Some(id) = normalize_job_id(text) {
        // A normalized id is stable.
        assert_eq!(normalize_job_id(&id).as_deref(), Some(id.as_str()));
    }
}

/// The SSE splitter fed in pieces (sizes taken from the first bytes) must produce the
/// same bytes as fed whole, every piece it emits ends on a line end, and nothing is lost
/// or invented: emitted + rest == input. Then events and usage are parsed.
pub fn sse(data: &[u8]) {
    let (sizes, body) = data.split_at(data.len().min(4));
    let max = 64 * 1024;
    let mut whole = EventSplitter::new(max);
    let Ok(whole_out) = whole.push(body) else {
        return;
    };
    let whole_rest = whole.take_rest();
    let mut pieces = EventSplitter::new(max);
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(sizes.get(i % sizes.len().max(1)).copied().unwrap_or(7)) % 61 + 1)
            .min(rest.len());
        let (piece, tail) = rest.split_at(n);
        let got = pieces
            .push(piece)
            .expect("a piece failed where the whole did not");
        if let Some(&last) = got.last() {
            assert!(last == b'\n' || last == b'\r', "emitted bytes end mid-line");
        }
        out.extend_from_slice(&got);
        rest = tail;
        i += 1;
    }
    assert_eq!(out, whole_out, "splitting depends on how the bytes arrived");
    assert_eq!(pieces.take_rest(), whole_rest);
    let mut all = whole_out.clone();
    all.extend_from_slice(&whole_rest);
    assert_eq!(all, body, "bytes lost or invented");
    let mut stats = StreamStats::default();
    for ev in parse_events(&whole_out) {
        stats.observe(&ev);
    }
    let _ = stats.output_tokens();
}

/// First byte picks the mode: the request translator on a JSON body, or the stream
/// translator on SSE data lines. Whatever the stream, finish() yields a well-formed
/// Anthropic event stream (every event has JSON data).
pub fn anthropic(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode % 2 == 0 {
        // The translator reads JSON text itself, so malformed text is fed too.
        if let Ok(out) = request_to_openai(text, "m") {
            let out: serde_json::Value =
                serde_json::from_slice(&out).expect("the translated request is not JSON");
            assert!(out.is_object());
            assert_eq!(out["stream"], true);
        }
        return;
    }
    let mut t = StreamTranslator::new("m", "msg_fuzz");
    let mut out = Vec::new();
    for line in text.split('\n') {
        out.extend(t.on_openai_data(line));
    }
    out.extend(t.finish());
    assert!(t.finish().is_empty(), "finish() emits twice");
    for ev in parse_events(&out) {
        serde_json::from_str::<serde_json::Value>(&ev.data)
            .unwrap_or_else(|e| panic!("translator emitted non-JSON data ({e}): {:?}", ev.data));
    }
}

/// An identity file: whatever parses renders back to a file that parses to the same key
/// and provider_id, unless the writer refuses it for a control character in a value.
pub fn identity(data: &[u8]) {
    let path = Path::new("/nonexistent/identity.key");
    if let Ok(id) = Identity::parse(path, data) {
        let Ok(text) = id.render() else {
            let shown = std::str::from_utf8(data).unwrap_or_default();
            assert!(
                shown
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\r'),
                "render refused a file without control characters"
            );
            return;
        };
        let again = Identity::parse(path, text.as_bytes()).expect("render → parse");
        assert_eq!(again.public_b64(), id.public_b64());
        assert_eq!(again.provider_id(), id.provider_id());
    }
}

/// A config file (no environment overrides).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_str("fuzz.json", text, &Overrides::default());
}

/// A job request through the request policy, both dialects: whatever it gets, it
/// refuses with a short printable reason or returns a JSON object (each key once) with
/// the job's model, streaming on, and every output limit within 1..=N.
pub fn request_policy(data: &[u8]) {
    const N: u64 = 500;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut policy = RequestPolicy::new(N as u32);
    // Small limits so that short inputs reach them.
    policy.max_messages = 8;
    policy.max_tools = 4;
    policy.max_schema_bytes = 256;
    policy.max_schema_depth = 4;
    policy.max_top_logprobs = 3;
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let shaped = match apply(dialect, text, "fuzz-model", &policy) {
            Ok(s) => s,
            Err(refusal) => {
                let reason = refusal.to_string();
                assert!(reason.chars().count() < 400, "long refusal: {reason:?}");
                assert!(
                    !reason.chars().any(char::is_control),
                    "control char: {reason:?}"
                );
                continue;
            }
        };
        // Read raw, not as a Value: client values the policy passes through may be valid
        // JSON that a Value refuses (1e999 is out of f64 range).
        let body = std::str::from_utf8(&shaped.body).expect("the shaped body is UTF-8");
        let fields = top_level_entries(body);
        let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.get());
        for (i, (key, _)) in fields.iter().enumerate() {
            assert!(
                fields[..i].iter().all(|(k, _)| k != key),
                "{key:?} twice in the body"
            );
        }
        assert_eq!(get("model"), Some("\"fuzz-model\""));
        assert_eq!(get("stream"), Some("true"));
        match dialect {
            Dialect::OpenAi => assert_eq!(get("stream_options"), Some(r#"{"include_usage":true}"#)),
            Dialect::Anthropic => assert_eq!(get("stream_options"), None),
        }
        let mut limited = false;
        for key in ["max_tokens", "max_completion_tokens"] {
            if let Some(v) = get(key) {
                let v: u64 = v.parse().unwrap_or_else(|_| panic!("{key} is {v}"));
                assert!((1..=N).contains(&v), "{key} = {v}");
                limited = true;
            }
        }
        assert!(limited, "no output limit in {body}");
        for key in ["n", "best_of"] {
            if let Some(v) = get(key) {
                assert_eq!(v, "1", "{key}");
            }
        }
        if let Some(v) = get("top_logprobs") {
            assert!(v.parse::<u64>().is_ok_and(|v| v <= 3), "top_logprobs = {v}");
        }
        assert!(shaped.dropped.len() <= 33);
    }
}

/// The entries of a JSON object in order, duplicates kept; panics if `json` is not one.
fn top_level_entries(json: &str) -> Vec<(String, &serde_json::value::RawValue)> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, &'de RawValue)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let entries = de
        .deserialize_map(Entries)
        .unwrap_or_else(|e| panic!("the shaped body is not a JSON object ({e}): {json}"));
    de.end().expect("nothing after the body's object");
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(target: &str, f: fn(&[u8])) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).unwrap();
                f(&bytes);
                n += 1;
            }
        }
        eprintln!("{target}: replayed {n} inputs");
    }

    #[test]
    fn replay_inbound_frame() {
        replay("inbound_frame", inbound_frame);
    }
    #[test]
    fn replay_sse() {
        replay("sse", sse);
    }
    #[test]
    fn replay_anthropic() {
        replay("anthropic", anthropic);
    }
    #[test]
    fn replay_identity() {
        replay("identity", identity);
    }
    #[test]
    fn replay_config() {
        replay("config", config);
    }
    #[test]
    fn replay_request_policy() {
        replay("request_policy", request_policy);
    }
}
