//! One ledger line: how a job ended and what it should earn.

use crate::discovery::Target;
use crate::protocol::Outbound;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// `outcome` of a job answered with job_done.
pub const DONE: &str = "done";
/// `outcome` of a job that ended without a terminal frame reaching the
/// session: job_cancel, the session ending, or a shutdown cutting it.
pub const CANCELLED: &str = "cancelled";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// `llamacpp`, `ollama`, `vllm`, `lmstudio`.
    pub kind: String,
    /// Without any query string (the only place a URL here could carry a credential:
    /// user info is refused when the config is read).
    pub url: String,
}

impl Backend {
    pub fn of(target: &Target) -> Backend {
        let url = target.url.to_string();
        Backend {
            kind: target.kind.as_str().to_owned(),
            url: url.split('?').next().unwrap_or_default().to_owned(),
        }
    }
}

/// One ledger line, as written and as read back: the same type both ways, so
/// the reader accepts exactly what the writer produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When the job ended, RFC 3339 in UTC.
    pub time: String,
    pub job_id: String,
    pub model: String,
    pub backend: Backend,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub duration_ms: u64,
    /// The prices advertised for this model, USDC micro-units per 1M tokens.
    pub input_per_1m: u64,
    pub output_per_1m: u64,
    /// What the job should earn, USDC micro-units; see [`expected_micro_usdc`].
    pub expected_micro_usdc: u64,
    /// [`DONE`], [`CANCELLED`] or the job_error's error_code.
    pub outcome: String,
}

/// What a job earns at these prices: `floor((in * in_price + out * out_price) / 10^6)`,
/// rounded once for the whole job (never per token kind, which could lose a micro-unit
/// twice), exact in 128 bits (each product fits; their sum saturates) and capped
/// at u64::MAX.
pub fn expected_micro_usdc(input: u64, output: u64, input_per_1m: u64, output_per_1m: u64) -> u64 {
    let total = (u128::from(input) * u128::from(input_per_1m))
        .saturating_add(u128::from(output) * u128::from(output_per_1m));
    u64::try_from(total / 1_000_000).unwrap_or(u64::MAX)
}

/// `micro` USDC micro-units as a decimal USDC amount with 6 decimals.
pub fn usdc(micro: u64) -> String {
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// How a job that reached a worker ended, as its ledger line says it.
pub struct Finished<'a> {
    pub job_id: &'a str,
    pub model: &'a str,
    pub backend: Backend,
    /// The terminal frame the job produced (None: it was stopped).
    pub terminal: Option<&'a Outbound>,
    /// Whether that frame went to the session; a job_done that did not is not paid.
    pub delivered: bool,
    /// Since the job was received; used when the frame has no duration of its own.
    pub elapsed_ms: u64,
    pub prices: (u64, u64),
    pub at: SystemTime,
}

impl Finished<'_> {
    /// Pure: the line for this job. Only a delivered job_done earns anything: the
    /// coordinator bills the tokens job_done reports, and nothing else.
    pub fn entry(&self) -> Entry {
        let (input_per_1m, output_per_1m) = self.prices;
        let (input, output, duration_ms, outcome) = match self.terminal {
            Some(Outbound::JobDone {
                tokens,
                duration_ms,
                ..
            }) => (
                tokens.input,
                tokens.output,
                u64::from(*duration_ms),
                if self.delivered { DONE } else { CANCELLED },
            ),
            Some(Outbound::JobError {
                error_code,
                tokens_emitted,
                ..
            }) => (0, *tokens_emitted, self.elapsed_ms, error_code.as_str()),
            _ => (0, 0, self.elapsed_ms, CANCELLED),
        };
        let expected = if outcome == DONE {
            expected_micro_usdc(input, output, input_per_1m, output_per_1m)
        } else {
            0
        };
        Entry {
            time: crate::clock::rfc3339(self.at),
            job_id: self.job_id.to_owned(),
            model: self.model.to_owned(),
            backend: self.backend.clone(),
            input_tokens: input,
            output_tokens: output,
            duration_ms,
            input_per_1m,
            output_per_1m,
            expected_micro_usdc: expected,
            outcome: outcome.to_owned(),
        }
    }
}
