//! Every message of the coordinator protocol, both directions, and nothing else.
//!
//! The coordinator is not ours: field names and types here are the contract
//! (docs/protocol.md). Inbound parsing is tolerant of extra fields and never
//! panics; outbound shapes are pinned by golden JSON tests at the bottom.

use crate::json_fields::json_fields;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

/// Job deadline the coordinator implies when it sends none.
pub const DEFAULT_DEADLINE_MS: u64 = 60_000;

/// Request body dialect of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFormat {
    OpenAi,
    Anthropic,
}

/// Ceiling on a job's deadline: a coordinator (or a job) asking for more
/// would hold a slot and the GPU for longer than any real answer takes.
pub const MAX_DEADLINE_MS: u64 = 24 * 60 * 60 * 1000;

/// The job's `request` object, kept as the JSON text it arrived as: only the
/// request policy reads it, through typed structs, so no client-controlled
/// value is ever built into a generic JSON tree (which costs ~30x its bytes).
#[derive(Debug, Clone)]
pub struct RawRequest(Box<RawValue>);

impl RawRequest {
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawRequest {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// A well-formed `job` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    /// Lowercase hyphenated, as it must be echoed back.
    pub job_id: String,
    pub model_id: String,
    pub request: RawRequest,
    pub format: JobFormat,
    /// At most [`MAX_DEADLINE_MS`].
    pub deadline_ms: u64,
}

/// A server → agent message.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    AuthChallenge {
        nonce: String,
    },
    AuthOk {
        provider_id: Option<String>,
    },
    AuthFailed {
        reason: Option<String>,
    },
    Job(JobRequest),
    /// A `job` frame we cannot run; answered with `job_error` when `job_id` is known.
    MalformedJob {
        job_id: Option<String>,
        problem: String,
    },
    JobCancel {
        job_id: String,
    },
    ConfigUpdate,
    Unknown {
        kind: String,
    },
}

/// Why a text frame is not a message at all.
#[derive(Debug)]
pub enum ParseError {
    NotJson(serde_json::Error),
    NotAnObject,
    MissingType,
}

/// Equal when of the same kind (serde_json's errors have no equality; two
/// frames that fail alike are the same answer).
impl PartialEq for ParseError {
    fn eq(&self, other: &ParseError) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotJson(e) => write!(f, "not valid JSON ({e})"),
            ParseError::NotAnObject => f.write_str("not a JSON object"),
            ParseError::MissingType => f.write_str("no string \"type\" field"),
        }
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ParseError::NotJson(e) => Some(e),
            ParseError::NotAnObject | ParseError::MissingType => None,
        }
    }
}

/// Every field any inbound message has, each left as raw JSON borrowed from
/// the frame: unknown fields are skipped without being built, and each field
/// is decoded into its own small type only by the message that uses it.
/// A repeated field makes the frame invalid (serde refuses duplicates), so
/// nothing reads one copy while another part of the system reads the other.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    nonce: Option<&'a RawValue>,
    #[serde(borrow, default)]
    provider_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reason: Option<&'a RawValue>,
    #[serde(borrow, default)]
    job_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
    #[serde(borrow, default)]
    format: Option<&'a RawValue>,
    #[serde(borrow, default)]
    deadline_ms: Option<&'a RawValue>,
}

/// A field as a string, or None when it is absent, null or not a string.
fn string(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
}

/// Parses one inbound text frame.
pub fn parse_inbound(text: &str) -> Result<Inbound, ParseError> {
    // A struct also deserializes from a JSON array; messages are objects only.
    if !text.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Err(ParseError::NotAnObject),
            Err(e) => Err(ParseError::NotJson(e)),
        };
    }
    let env: Envelope = serde_json::from_str(text).map_err(ParseError::NotJson)?;
    let kind = string(env.kind).ok_or(ParseError::MissingType)?;
    Ok(match kind.as_str() {
        "auth_challenge" => Inbound::AuthChallenge {
            nonce: string(env.nonce).unwrap_or_default(),
        },
        "auth_ok" => Inbound::AuthOk {
            provider_id: string(env.provider_id),
        },
        "auth_failed" => Inbound::AuthFailed {
            reason: string(env.reason),
        },
        "job" => parse_job(&env),
        "job_cancel" => match string(env.job_id) {
            Some(id) => Inbound::JobCancel {
                job_id: normalize_job_id(&id).unwrap_or(id),
            },
            None => Inbound::Unknown {
                kind: "job_cancel without job_id".into(),
            },
        },
        "config_update" => Inbound::ConfigUpdate,
        _ => Inbound::Unknown { kind },
    })
}

/// Lowercase hyphenated form of a UUID, or None when `id` is not one.
pub fn normalize_job_id(id: &str) -> Option<String> {
    uuid::Uuid::try_parse(id)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

fn parse_job(env: &Envelope) -> Inbound {
    let malformed =
        |job_id: Option<String>, problem: String| Inbound::MalformedJob { job_id, problem };
    let Some(raw_id) = string(env.job_id) else {
        return malformed(None, "job_id missing or not a string".into());
    };
    let Some(job_id) = normalize_job_id(&raw_id) else {
        return malformed(Some(raw_id), "job_id is not a UUID".into());
    };
    let model_id = match string(env.model_id) {
        Some(m) if !m.is_empty() => m,
        _ => {
            return malformed(
                Some(job_id),
                "model_id missing or not a non-empty string".into(),
            )
        }
    };
    let request = match env.request {
        Some(r) if r.get().starts_with('{') => RawRequest(r.to_owned()),
        Some(r) if r.get() != "null" => {
            return malformed(Some(job_id), "request is not a JSON object".into())
        }
        _ => return malformed(Some(job_id), "request missing".into()),
    };
    let format = match string(env.format).as_deref() {
        Some("anthropic") => JobFormat::Anthropic,
        _ => JobFormat::OpenAi,
    };
    let deadline_ms = match env.deadline_ms.map(RawValue::get) {
        None | Some("null") => DEFAULT_DEADLINE_MS,
        Some(v) => match serde_json::from_str::<u64>(v) {
            Ok(ms) => ms.min(MAX_DEADLINE_MS),
            Err(_) => {
                let shown: String = v.chars().take(40).collect();
                return malformed(
                    Some(job_id),
                    format!("deadline_ms is not a non-negative integer: {shown}"),
                );
            }
        },
    };
    Inbound::Job(JobRequest {
        job_id,
        model_id,
        request,
        format,
        deadline_ms,
    })
}

/// One model as offered in `capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelOffer {
    pub model_id: String,
    pub input_per_1m: u64,
    pub output_per_1m: u64,
    pub max_concurrent: u32,
    pub backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfferLimits {
    pub max_concurrent_total: u32,
    /// Serialized as `null` when absent: the coordinator expects the key.
    pub max_tokens_per_minute: Option<u64>,
}

/// Token counts under both key styles the coordinator reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Tokens {
    pub fn new(input: u64, output: u64) -> Self {
        Tokens {
            input,
            output,
            input_tokens: input,
            output_tokens: output,
        }
    }
}

/// The `error_code` values the coordinator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    OutOfCapacity,
    ModelNotLoaded,
    BackendTimeout,
    BackendUnreachable,
    AuthRejectedByBackend,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::OutOfCapacity => "out_of_capacity",
            ErrorCode::ModelNotLoaded => "model_not_loaded",
            ErrorCode::BackendTimeout => "backend_timeout",
            ErrorCode::BackendUnreachable => "backend_unreachable",
            ErrorCode::AuthRejectedByBackend => "auth_rejected_by_backend",
            ErrorCode::Internal => "internal",
        }
    }
}

json_fields! {
    /// Heartbeat statistics; field types in docs/protocol.md, "heartbeat". Also
    /// the `heartbeat` object of the state file, which `status` reads back.
    #[derive(Debug, Clone, PartialEq, Serialize, Default)]
    pub struct HeartbeatStats {
        pub queue_depth: u32,
        pub tokens_per_sec_p50: f64,
        pub p50_latency_ms: u32,
        pub p95_latency_ms: u32,
        pub error_rate_60s: f64,
        pub last_error_at: Option<String>,
        pub last_error_code: Option<String>,
    }
}

/// An agent → server message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outbound {
    AuthResponse {
        pubkey: String,
        signature: String,
        agent_version: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        enrollment_code: Option<String>,
    },
    Capabilities {
        models: Vec<ModelOffer>,
        limits: OfferLimits,
        metadata: Value,
    },
    Heartbeat(HeartbeatStats),
    JobChunk {
        job_id: String,
        /// Standard base64 of raw SSE bytes.
        data: String,
    },
    JobDone {
        job_id: String,
        tokens: Tokens,
        duration_ms: u32,
    },
    JobError {
        job_id: String,
        error_code: ErrorCode,
        message: String,
        tokens_emitted: u64,
    },
}

impl Outbound {
    /// The frame's JSON text.
    pub fn to_text(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_else(|e| {
            log::error!("cannot serialize outbound message: {e}");
            String::from("{}")
        })
    }

    pub fn job_chunk(job_id: &str, sse: &[u8]) -> Outbound {
        use base64::Engine as _;
        Outbound::JobChunk {
            job_id: job_id.to_owned(),
            data: base64::engine::general_purpose::STANDARD.encode(sse),
        }
    }

    /// The text of `Outbound::job_chunk(job_id, sse)`, written into `out` (cleared
    /// first) instead of a new String: a relay reuses one buffer for every frame.
    pub fn write_job_chunk(out: &mut Vec<u8>, job_id: &str, sse: &[u8]) {
        use base64::Engine as _;
        out.clear();
        out.extend_from_slice(br#"{"type":"job_chunk","job_id":"#);
        // Writing a &str into a Vec cannot fail; it escapes as serde would.
        let _ = serde_json::to_writer(&mut *out, job_id);
        out.extend_from_slice(br#","data":""#);
        let at = out.len();
        out.resize(at + base64::encoded_len(sse.len(), true).unwrap_or(0), 0);
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(sse, &mut out[at..])
            .unwrap_or(0);
        out.truncate(at + n);
        out.extend_from_slice(br#""}"#);
    }

    pub fn job_error(
        job_id: &str,
        error_code: ErrorCode,
        message: impl Into<String>,
        tokens_emitted: u64,
    ) -> Outbound {
        Outbound::JobError {
            job_id: job_id.to_owned(),
            error_code,
            message: message.into(),
            tokens_emitted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0b9e4c1e-7c0a-4d8e-9d1b-2f6f2b1a3c4d";

    fn golden(msg: &Outbound, expected: Value) {
        let got: Value = serde_json::from_str(&msg.to_text()).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn written_job_chunk_is_the_serialized_one_byte_for_byte() {
        let mut buf = Vec::new();
        for (id, sse) in [
            (ID, &b"data: x\n\n"[..]),
            (ID, &b""[..]),
            (ID, &b"\x00\xff\xfe data: {\"a\":\"\\u00e9\"}\r\n\r\n"[..]),
            // Not a UUID: still escaped as serde escapes it.
            ("a\"b\\c\u{1}", &b"ab"[..]),
        ] {
            Outbound::write_job_chunk(&mut buf, id, sse);
            assert_eq!(buf, Outbound::job_chunk(id, sse).to_text().into_bytes());
        }
    }

    #[test]
    fn job_chunk_buffer_is_reused_not_regrown() {
        let mut buf = Vec::new();
        Outbound::write_job_chunk(&mut buf, ID, &[b'x'; 600]);
        let (cap, ptr) = (buf.capacity(), buf.as_ptr());
        for n in [0, 10, 300, 600] {
            Outbound::write_job_chunk(&mut buf, ID, &vec![b'y'; n]);
            assert_eq!((buf.capacity(), buf.as_ptr()), (cap, ptr));
        }
    }

    #[test]
    fn auth_response_golden_with_and_without_code() {
        let mut m = Outbound::AuthResponse {
            pubkey: "P".into(),
            signature: "S".into(),
            agent_version: "0.1.0".into(),
            enrollment_code: Some("E".into()),
        };
        golden(
            &m,
            json!({"type":"auth_response","pubkey":"P","signature":"S","agent_version":"0.1.0","enrollment_code":"E"}),
        );
        if let Outbound::AuthResponse {
            enrollment_code, ..
        } = &mut m
        {
            *enrollment_code = None;
        }
        golden(
            &m,
            json!({"type":"auth_response","pubkey":"P","signature":"S","agent_version":"0.1.0"}),
        );
    }

    #[test]
    fn capabilities_golden() {
        let m = Outbound::Capabilities {
            models: vec![
                ModelOffer {
                    model_id: "a".into(),
                    input_per_1m: 500000,
                    output_per_1m: 1000000,
                    max_concurrent: 8,
                    backend: "llamacpp",
                    context_window: Some(8192),
                },
                ModelOffer {
                    model_id: "b".into(),
                    input_per_1m: 1,
                    output_per_1m: 2,
                    max_concurrent: 8,
                    backend: "ollama",
                    context_window: None,
                },
            ],
            limits: OfferLimits {
                max_concurrent_total: 8,
                max_tokens_per_minute: None,
            },
            metadata: json!({"agent_version":"0.1.0"}),
        };
        golden(
            &m,
            json!({"type":"capabilities",
                "models":[{"model_id":"a","input_per_1m":500000,"output_per_1m":1000000,"max_concurrent":8,"backend":"llamacpp","context_window":8192},
                          {"model_id":"b","input_per_1m":1,"output_per_1m":2,"max_concurrent":8,"backend":"ollama"}],
                "limits":{"max_concurrent_total":8,"max_tokens_per_minute":null},
                "metadata":{"agent_version":"0.1.0"}}),
        );
    }

    #[test]
    fn heartbeat_golden() {
        golden(
            &Outbound::Heartbeat(HeartbeatStats::default()),
            json!({"type":"heartbeat","queue_depth":0,"tokens_per_sec_p50":0.0,"p50_latency_ms":0,
                   "p95_latency_ms":0,"error_rate_60s":0.0,"last_error_at":null,"last_error_code":null}),
        );
    }

    #[test]
    fn job_result_goldens() {
        golden(
            &Outbound::job_chunk(ID, b"data: x\n\n"),
            json!({"type":"job_chunk","job_id":ID,"data":"ZGF0YTogeAoK"}),
        );
        golden(
            &Outbound::JobDone {
                job_id: ID.into(),
                tokens: Tokens::new(11, 3),
                duration_ms: 1401,
            },
            json!({"type":"job_done","job_id":ID,"tokens":{"input":11,"output":3,"input_tokens":11,"output_tokens":3},"duration_ms":1401}),
        );
        golden(
            &Outbound::job_error(ID, ErrorCode::BackendTimeout, "m", 4),
            json!({"type":"job_error","job_id":ID,"error_code":"backend_timeout","message":"m","tokens_emitted":4}),
        );
    }

    #[test]
    fn error_code_names_match_serde() {
        for c in [
            ErrorCode::OutOfCapacity,
            ErrorCode::ModelNotLoaded,
            ErrorCode::BackendTimeout,
            ErrorCode::BackendUnreachable,
            ErrorCode::AuthRejectedByBackend,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
        }
    }

    #[test]
    fn parses_handshake_messages() {
        assert_eq!(
            parse_inbound(r#"{"type":"auth_challenge","nonce":"AAAA","x":1}"#).unwrap(),
            Inbound::AuthChallenge {
                nonce: "AAAA".into()
            }
        );
        assert_eq!(
            parse_inbound(r#"{"type":"auth_ok"}"#).unwrap(),
            Inbound::AuthOk { provider_id: None }
        );
        assert_eq!(
            parse_inbound(r#"{"type":"auth_ok","provider_id":"prov-1"}"#).unwrap(),
            Inbound::AuthOk {
                provider_id: Some("prov-1".into())
            }
        );
        assert_eq!(
            parse_inbound(r#"{"type":"auth_failed","reason":"no"}"#).unwrap(),
            Inbound::AuthFailed {
                reason: Some("no".into())
            }
        );
    }

    #[test]
    fn parses_job_with_defaults_and_big_deadline() {
        let upper = ID.to_uppercase();
        let text = format!(
            r#"{{"type":"job","job_id":"{upper}","model_id":"m","request":{{"messages":[]}}}}"#
        );
        let Inbound::Job(job) = parse_inbound(&text).unwrap() else {
            panic!("not a job")
        };
        assert_eq!(job.job_id, ID);
        assert_eq!(job.format, JobFormat::OpenAi);
        assert_eq!(job.deadline_ms, DEFAULT_DEADLINE_MS);

        let text = format!(
            r#"{{"type":"job","job_id":"{ID}","model_id":"m","request":{{}},"format":"anthropic","deadline_ms":4294967301}}"#
        );
        let Inbound::Job(job) = parse_inbound(&text).unwrap() else {
            panic!("not a job")
        };
        assert_eq!(job.format, JobFormat::Anthropic);
        assert_eq!(job.deadline_ms, MAX_DEADLINE_MS, "clamped to 24 h");
        assert_eq!(job.request.as_str(), "{}");

        let text = format!(
            r#"{{"type":"job","job_id":"{ID}","model_id":"m","request": {{ "a" : [1, 2] }} ,"deadline_ms":90000}}"#
        );
        let Inbound::Job(job) = parse_inbound(&text).unwrap() else {
            panic!("not a job")
        };
        assert_eq!(job.deadline_ms, 90_000);
        assert_eq!(job.request.as_str(), r#"{ "a" : [1, 2] }"#, "kept as sent");
    }

    #[test]
    fn malformed_jobs_keep_their_id() {
        let cases = [
            (
                format!(r#"{{"type":"job","job_id":"{ID}","request":{{}}}}"#),
                "model_id",
            ),
            (
                format!(r#"{{"type":"job","job_id":"{ID}","model_id":"m"}}"#),
                "request missing",
            ),
            (
                format!(r#"{{"type":"job","job_id":"{ID}","model_id":"m","request":[1]}}"#),
                "request is not",
            ),
            (
                format!(
                    r#"{{"type":"job","job_id":"{ID}","model_id":"m","request":{{}},"deadline_ms":-1}}"#
                ),
                "deadline_ms",
            ),
        ];
        for (text, needle) in cases {
            match parse_inbound(&text).unwrap() {
                Inbound::MalformedJob { job_id, problem } => {
                    assert_eq!(job_id.as_deref(), Some(ID));
                    assert!(problem.contains(needle), "{problem}");
                }
                other => panic!("{other:?}"),
            }
        }
        match parse_inbound(r#"{"type":"job","job_id":"nope","model_id":"m","request":{}}"#)
            .unwrap()
        {
            Inbound::MalformedJob { job_id, .. } => assert_eq!(job_id.as_deref(), Some("nope")),
            other => panic!("{other:?}"),
        }
        match parse_inbound(r#"{"type":"job","model_id":"m"}"#).unwrap() {
            Inbound::MalformedJob { job_id, .. } => assert_eq!(job_id, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_non_messages_without_panicking() {
        assert!(matches!(parse_inbound("{"), Err(ParseError::NotJson(_))));
        assert_eq!(parse_inbound("[]"), Err(ParseError::NotAnObject));
        assert_eq!(parse_inbound(" 7"), Err(ParseError::NotAnObject));
        assert!(matches!(parse_inbound("[1,"), Err(ParseError::NotJson(_))));
        assert_eq!(parse_inbound(r#"{"x":1}"#), Err(ParseError::MissingType));
        // A repeated field is refused rather than read one way here and
        // another way elsewhere.
        assert!(matches!(
            parse_inbound(r#"{"type":"auth_ok","provider_id":"a","provider_id":"b"}"#),
            Err(ParseError::NotJson(e)) if e.to_string().contains("duplicate field `provider_id`")
        ));
        assert_eq!(parse_inbound(r#"{"type":7}"#), Err(ParseError::MissingType));
        assert_eq!(
            parse_inbound(r#"{"type":"config_update","x":{}}"#).unwrap(),
            Inbound::ConfigUpdate
        );
        assert_eq!(
            parse_inbound(r#"{"type":"wat"}"#).unwrap(),
            Inbound::Unknown { kind: "wat".into() }
        );
    }
}
