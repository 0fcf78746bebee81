//! Running one job against its backend and relaying the stream.

use super::backend_error::{classify_http, classify_status};
use super::buffers::Buffers;
use super::choice::{self, Failed};
use super::policy::{self, RequestPolicy};
use super::work::Work;
use crate::backend::anthropic::{request_to_openai, StreamTranslator};
use crate::backend::sse::{EventParser, StreamStats};
use crate::client::{self, HttpError, Phase, Request, Response};
use crate::config::Config;
use crate::discovery::{mark_no_messages, Discovery, Target};
use crate::metrics::{Metrics, Sample};
use crate::protocol::{ErrorCode, JobFormat, Outbound, Tokens};
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest single SSE event accepted from a backend (an endless line must not
/// exhaust memory).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Output bound when neither the operator nor the backend names one.
const FALLBACK_MAX_OUTPUT_TOKENS: u32 = 8192;

#[derive(Debug, Clone)]
pub struct JobLimits {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub max_request_bytes: usize,
    /// The policy with the operator's limits; its output bound is finished
    /// per job by [`JobLimits::policy_for`].
    policy: RequestPolicy,
    max_output_tokens: Option<u32>,
}

impl JobLimits {
    pub fn from_config(c: &Config) -> JobLimits {
        let l = &c.limits;
        let mut policy = RequestPolicy::new(FALLBACK_MAX_OUTPUT_TOKENS);
        policy.max_messages = l.max_messages;
        policy.max_prompt_bytes = l.max_prompt_bytes;
        policy.allow_remote_media = l.allow_remote_media;
        policy.allow_fields = l.allow_fields.clone();
        JobLimits {
            connect: l.backend_connect_timeout,
            first_byte: l.first_byte_timeout,
            idle: l.idle_timeout,
            max_request_bytes: l.max_request_bytes,
            policy,
            max_output_tokens: l.max_output_tokens,
        }
    }

    /// The policy for a job on a model with this context window: output is
    /// bounded by the operator's limit and by the window, whichever is lower.
    pub fn policy_for(&self, context_window: Option<u32>) -> RequestPolicy {
        let bound = match (self.max_output_tokens, context_window) {
            (Some(op), Some(ctx)) => op.min(ctx),
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => FALLBACK_MAX_OUTPUT_TOKENS,
        };
        RequestPolicy {
            max_output_tokens: bound.max(1),
            ..self.policy.clone()
        }
    }
}

/// What a job has streamed so far.
#[derive(Default)]
pub struct Progress {
    pub stats: StreamStats,
    pub first_chunk: Option<Instant>,
}

/// How a job ended without a job_done.
#[derive(Debug)]
enum Failure {
    /// Cancelled or its session ended: nothing may be sent.
    Stopped,
    /// The backend call failed; `Failed` says whether another pool member may be tried.
    Backend(Failed, ErrorCode, String),
    Error(ErrorCode, String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Stopped => f.write_str("stopped"),
            Failure::Backend(_, code, message) | Failure::Error(code, message) => {
                write!(f, "{}: {message}", code.as_str())
            }
        }
    }
}

impl std::error::Error for Failure {}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Failure {
        let how = match e {
            HttpError::Cancelled => return Failure::Stopped,
            HttpError::Unreachable(_) | HttpError::Timeout(Phase::Connect) => Failed::NoConnection,
            _ => Failed::Other,
        };
        let (code, message) = classify_http(&e);
        Failure::Backend(how, code, message)
    }
}

/// Finds another member of the job's pool for it (the registry moves its slot there).
pub type Reroute<'a> = &'a dyn Fn(&Work) -> Option<Arc<Target>>;

fn internal(message: impl Into<String>) -> Failure {
    Failure::Error(ErrorCode::Internal, message.into())
}

/// Sends a frame of this job on the connection from this thread (a slow coordinator
/// pushes back by blocking the write); false, nothing sent, once the job is cancelled
/// or the connection is gone.
pub fn send_frame(w: &Work, frame: Outbound) -> bool {
    w.out.send_job(&w.cancel, frame.to_text().as_bytes())
}

/// Runs the job on its member, or once more on another when the first failed before
/// anything was streamed ([`choice::try_another`]); records how it went and returns
/// its terminal frame (None when it was stopped).
pub fn execute(
    w: &mut Work,
    limits: &JobLimits,
    discovery: &Discovery,
    metrics: &Metrics,
    bufs: &mut Buffers,
    another: Reroute,
) -> Option<Outbound> {
    let mut p = Progress::default();
    let mut retried = false;
    let result = loop {
        match relay(w, limits, &mut p, bufs) {
            Err(Failure::Backend(how, code, message)) => {
                if code == ErrorCode::BackendUnreachable {
                    // So that a member that went down leaves its pool soon.
                    discovery.refresh();
                }
                let streamed = p.first_chunk.is_some();
                if choice::try_another(how, streamed, retried) {
                    if let Some(next) = another(w) {
                        log::info!(
                            "job {}: {} at {} failed ({}); trying {}",
                            w.job.job_id,
                            w.member.kind.as_str(),
                            w.member.url,
                            crate::untrusted::shown(&message, 200),
                            next.url
                        );
                        w.member = next;
                        retried = true;
                        continue;
                    }
                }
                break Err(Failure::Error(code, message));
            }
            other => break other,
        }
    };
    bufs.trim();
    let id = &w.job.job_id;
    let output = p.stats.output_tokens();
    let ttfb_ms = p
        .first_chunk
        .map(|t| u32::try_from(t.duration_since(w.received).as_millis()).unwrap_or(u32::MAX));
    match result {
        Ok(()) => {
            let tokens = Tokens::new(p.stats.usage.input.unwrap_or(0), output);
            let duration_ms = u32::try_from(w.received.elapsed().as_millis()).unwrap_or(u32::MAX);
            let generating = p
                .first_chunk
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or(0.0);
            metrics.record(Sample {
                at: Instant::now(),
                ttfb_ms,
                // Speed needs some time to mean anything; a 1-token answer has none.
                tokens_per_sec: (generating > 0.0 && output > 1)
                    .then(|| output as f64 / generating),
                error: None,
            });
            log::debug!(
                "job {id} done: {} in / {output} out tokens in {duration_ms} ms",
                tokens.input
            );
            Some(Outbound::JobDone {
                job_id: id.clone(),
                tokens,
                duration_ms,
            })
        }
        Err(Failure::Stopped) => {
            log::debug!("job {id} stopped");
            None
        }
        Err(Failure::Error(code, message) | Failure::Backend(_, code, message)) => {
            metrics.record(Sample {
                at: Instant::now(),
                ttfb_ms,
                tokens_per_sec: None,
                error: Some(code),
            });
            let shown = crate::untrusted::shown(&message, 400);
            log::warn!("job {id} failed ({}): {shown}", code.as_str());
            Some(Outbound::job_error(id, code, message, output))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Plan {
    OpenAi,
    AnthropicNative,
    AnthropicTranslated,
}

fn relay(
    w: &Work,
    limits: &JobLimits,
    p: &mut Progress,
    bufs: &mut Buffers,
) -> Result<(), Failure> {
    let target = &w.member;
    let mut plan = match w.job.format {
        JobFormat::OpenAi => Plan::OpenAi,
        JobFormat::Anthropic if target.serves_messages.load(Ordering::Relaxed) => {
            Plan::AnthropicNative
        }
        JobFormat::Anthropic => Plan::AnthropicTranslated,
    };
    let deadline = w
        .received
        .checked_add(Duration::from_millis(w.job.deadline_ms));
    let mut fell_back = false;
    // Every byte the backend receives is what the policy produced: the job's
    // own request never reaches it.
    let policy = limits.policy_for(w.context_window);
    let shaped = policy::apply(
        w.job.format,
        w.job.request.as_str(),
        &w.job.model_id,
        &policy,
    )
    .map_err(|refusal| internal(refusal.to_string()))?;
    if !shaped.dropped.is_empty() {
        log::debug!(
            "job {}: request fields dropped by policy: {}",
            w.job.job_id,
            shaped.dropped.join(", ")
        );
    }
    loop {
        let (path, body, translator) = match plan {
            Plan::OpenAi => ("/v1/chat/completions", Cow::Borrowed(&shaped.body), None),
            Plan::AnthropicNative => ("/v1/messages", Cow::Borrowed(&shaped.body), None),
            Plan::AnthropicTranslated => {
                // The policy wrote the body, so it is UTF-8 JSON.
                let text = std::str::from_utf8(&shaped.body)
                    .map_err(|e| internal(format!("policy output: {e}")))?;
                let body = request_to_openai(text, &w.job.model_id).map_err(|e| {
                    internal(format!("cannot translate the Anthropic request: {e}"))
                })?;
                let msg_id = format!("msg_{}", w.job.job_id.replace('-', ""));
                (
                    "/v1/chat/completions",
                    Cow::Owned(body),
                    Some(StreamTranslator::new(&w.job.model_id, &msg_id)),
                )
            }
        };
        let bytes = body;
        if bytes.len() > limits.max_request_bytes {
            return Err(internal(format!(
                "request body is {} bytes, over this agent's limit of {} (limits.max_request_bytes)",
                bytes.len(),
                limits.max_request_bytes
            )));
        }
        let req = Request {
            method: "POST",
            path,
            headers: &[
                ("Content-Type", "application/json"),
                ("Accept", "text/event-stream"),
            ],
            api_key: target.api_key.as_deref(),
            body: Some(&bytes[..]),
        };
        let call_limits = client::Limits {
            connect: limits.connect,
            first_byte: limits.first_byte,
            idle: limits.idle,
            deadline,
        };
        let mut resp = client::send(&target.url, &req, call_limits, &w.cancel)?;
        if !(200..300).contains(&resp.status) {
            if plan == Plan::AnthropicNative && matches!(resp.status, 404 | 405) {
                // Also what some backends answer for an unknown model: only a
                // translated request that then succeeds proves the route is missing.
                plan = Plan::AnthropicTranslated;
                fell_back = true;
                continue;
            }
            let body = resp.read_prefix(2048);
            let (code, message) = classify_status(resp.status, &body);
            return Err(Failure::Backend(Failed::Status(resp.status), code, message));
        }
        if fell_back {
            mark_no_messages(target);
        }
        return stream(w, &mut resp, translator, p, bufs);
    }
}

/// Relays the SSE body as job_chunk frames cut on event boundaries. Whatever one read
/// completed goes out at once in one frame: events that arrived together share it, and
/// none waits for another.
fn stream(
    w: &Work,
    resp: &mut Response,
    mut translator: Option<StreamTranslator>,
    p: &mut Progress,
    bufs: &mut Buffers,
) -> Result<(), Failure> {
    bufs.start();
    let Buffers {
        read,
        splitter,
        parser,
        frame,
    } = bufs;
    let started = Instant::now();
    loop {
        let n = resp.read_body(read)?;
        let ready = if n == 0 {
            splitter.rest()
        } else {
            splitter
                .push_ready(&read[..n])
                .map_err(|e| internal(format!("backend stream refused: {e}")))?
        };
        if !forward(w, ready, p, &mut translator, parser, frame) {
            return Err(Failure::Stopped);
        }
        if n == 0 {
            break;
        }
    }
    // Only a stream that really ended is finished as a message: after EOF without
    // [DONE] the translator must not invent content_block_stop/message_stop (the
    // client would read a broken stream as a complete, `end_turn` answer).
    if let Some(t) = translator.as_mut().filter(|_| p.stats.done) {
        let tail = t.finish();
        if !tail.is_empty() && !send_chunk(w, frame, &tail) {
            return Err(Failure::Stopped);
        }
    }
    if !p.stats.done {
        return Err(internal(format!(
            "backend stream ended after {:?} without its final event ([DONE] or message_stop)",
            started.elapsed()
        )));
    }
    Ok(())
}

/// Counts the complete events in `ready` and sends them (translated, for a translated
/// job) as one job_chunk; false when the job stopped.
fn forward(
    w: &Work,
    ready: &[u8],
    p: &mut Progress,
    translator: &mut Option<StreamTranslator>,
    parser: &mut EventParser,
    frame: &mut Vec<u8>,
) -> bool {
    if ready.is_empty() {
        return true;
    }
    let stats = &mut p.stats;
    let translated;
    let out = match translator {
        None => {
            parser.each(ready, |event, data| stats.observe_data(event, data));
            ready
        }
        Some(t) => {
            let mut out = Vec::new();
            parser.each(ready, |event, data| {
                stats.observe_data(event, data);
                out.extend(t.on_openai_data(data));
            });
            translated = out;
            &translated[..]
        }
    };
    if out.is_empty() {
        return true;
    }
    p.first_chunk.get_or_insert_with(Instant::now);
    send_chunk(w, frame, out)
}

/// One job_chunk of `sse`, built in the reused `frame` buffer.
fn send_chunk(w: &Work, frame: &mut Vec<u8>, sse: &[u8]) -> bool {
    Outbound::write_job_chunk(frame, &w.job.job_id, sse);
    w.out.send_job(&w.cancel, frame)
}
