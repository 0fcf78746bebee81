//! Running one job against its backend and relaying the stream.

use super::request::{anthropic_body, classify_http, classify_status, openai_body};
use super::Work;
use crate::backend::anthropic::{request_to_openai, StreamTranslator};
use crate::backend::http::{self, HttpError, Request, Response};
use crate::backend::sse::{parse_events, EventSplitter, StreamStats};
use crate::config::Config;
use crate::discovery::{mark_no_messages, Discovery};
use crate::metrics::{Metrics, Sample};
use crate::protocol::{ErrorCode, JobFormat, Outbound, Tokens};
use crate::session::Outgoing;
use crossbeam_channel::SendTimeoutError;
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Largest single SSE event accepted from a backend (an endless line must not
/// exhaust memory).
pub const MAX_EVENT_BYTES: usize = 1 << 20;
const READ_BUF: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub max_request_bytes: usize,
}

impl JobLimits {
    pub fn from_config(c: &Config) -> JobLimits {
        JobLimits {
            connect: c.limits.backend_connect_timeout,
            first_byte: c.limits.first_byte_timeout,
            idle: c.limits.idle_timeout,
            max_request_bytes: c.limits.max_request_bytes,
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
enum Failure {
    /// Cancelled or its session ended: nothing may be sent.
    Stopped,
    Error(ErrorCode, String),
}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Failure {
        match e {
            HttpError::Cancelled => Failure::Stopped,
            other => {
                let (code, message) = classify_http(&other);
                Failure::Error(code, message)
            }
        }
    }
}

fn internal(message: impl Into<String>) -> Failure {
    Failure::Error(ErrorCode::Internal, message.into())
}

/// Queues a frame of this job; waits while the outbound queue is full (the
/// coordinator pushes back) but gives up once the job is cancelled.
pub fn send_frame(w: &Work, frame: Outbound) -> bool {
    let mut msg = Outgoing::Job(w.cancel.clone(), frame.to_text());
    loop {
        if w.cancel.is_cancelled() {
            return false;
        }
        match w.tx.send_timeout(msg, Duration::from_millis(50)) {
            Ok(()) => return true,
            Err(SendTimeoutError::Timeout(m)) => msg = m,
            Err(SendTimeoutError::Disconnected(_)) => return false,
        }
    }
}

/// Runs the job, records how it went, and returns its terminal frame (None
/// when it was stopped).
pub fn execute(
    w: &Work,
    limits: &JobLimits,
    discovery: &Discovery,
    metrics: &Metrics,
) -> Option<Outbound> {
    let mut p = Progress::default();
    let id = &w.job.job_id;
    let result = relay(w, limits, &mut p);
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
        Err(Failure::Error(code, message)) => {
            if code == ErrorCode::BackendUnreachable {
                discovery.refresh();
            }
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

fn relay(w: &Work, limits: &JobLimits, p: &mut Progress) -> Result<(), Failure> {
    let target = &w.route.target;
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
    loop {
        let (path, body, translator) = match plan {
            Plan::OpenAi => (
                "/v1/chat/completions",
                Value::Object(openai_body(w.job.request.clone(), &w.job.model_id)),
                None,
            ),
            Plan::AnthropicNative => (
                "/v1/messages",
                Value::Object(anthropic_body(w.job.request.clone(), &w.job.model_id)),
                None,
            ),
            Plan::AnthropicTranslated => {
                let original = Value::Object(w.job.request.clone());
                let body = request_to_openai(&original, &w.job.model_id).map_err(|e| {
                    internal(format!("cannot translate the Anthropic request: {e}"))
                })?;
                let model = original
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or(&w.job.model_id);
                let msg_id = format!("msg_{}", w.job.job_id.replace('-', ""));
                (
                    "/v1/chat/completions",
                    body,
                    Some(StreamTranslator::new(model, &msg_id)),
                )
            }
        };
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| internal(format!("cannot encode the request: {e}")))?;
        if bytes.len() > limits.max_request_bytes {
            return Err(internal(format!(
                "request body is {} bytes, over this agent's limit of {} (limits.max_request_bytes)",
                bytes.len(),
                limits.max_request_bytes
            )));
        }
        let auth = target.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Accept", "text/event-stream"),
        ];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let req = Request {
            method: "POST",
            path,
            headers: &headers,
            body: Some(&bytes),
        };
        let http_limits = http::Limits {
            connect: limits.connect,
            first_byte: limits.first_byte,
            idle: limits.idle,
            deadline,
        };
        let mut resp = http::send(&target.url, &req, http_limits, &w.cancel)?;
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
            return Err(Failure::Error(code, message));
        }
        if fell_back {
            mark_no_messages(target);
        }
        return stream(w, &mut resp, translator, p);
    }
}

/// Relays the SSE body as job_chunk frames cut on event boundaries, each sent
/// as soon as it is complete.
fn stream(
    w: &Work,
    resp: &mut Response,
    mut translator: Option<StreamTranslator>,
    p: &mut Progress,
) -> Result<(), Failure> {
    let mut splitter = EventSplitter::new(MAX_EVENT_BYTES);
    let mut buf = vec![0u8; READ_BUF];
    let forward = |ready: Vec<u8>, p: &mut Progress, translator: &mut Option<StreamTranslator>| {
        if ready.is_empty() {
            return true;
        }
        let events = parse_events(&ready);
        for ev in &events {
            p.stats.observe(ev);
        }
        let out = match translator {
            Some(t) => events
                .iter()
                .flat_map(|e| t.on_openai_data(&e.data))
                .collect(),
            None => ready,
        };
        if out.is_empty() {
            return true;
        }
        p.first_chunk.get_or_insert_with(Instant::now);
        send_frame(w, Outbound::job_chunk(&w.job.job_id, &out))
    };
    let started = Instant::now();
    loop {
        let n = resp.read_body(&mut buf)?;
        if n == 0 {
            break;
        }
        let ready = splitter
            .push(&buf[..n])
            .map_err(|e| internal(format!("backend stream refused: {e}")))?;
        if !forward(ready, p, &mut translator) {
            return Err(Failure::Stopped);
        }
    }
    let rest = splitter.take_rest();
    if !forward(rest, p, &mut translator) {
        return Err(Failure::Stopped);
    }
    // Only a stream that really ended is finished as a message: after EOF without
    // [DONE] the translator must not invent content_block_stop/message_stop (the
    // client would read a broken stream as a complete, `end_turn` answer).
    if let Some(t) = translator.as_mut().filter(|_| p.stats.done) {
        let tail = t.finish();
        if !tail.is_empty() && !send_frame(w, Outbound::job_chunk(&w.job.job_id, &tail)) {
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
