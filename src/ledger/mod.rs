//! The earnings ledger: one JSON line per job that reached a worker, so the
//! operator can check on the device what the coordinator should pay.
//!
//! Jobs refused at admission (busy, unknown model, shutting down, paused) are
//! not recorded: they ran nothing and earn nothing, and a coordinator sending
//! a flood of them would otherwise rotate the real earnings out of the files.

pub mod report;
mod writer;

pub use report::GroupBy;
pub use writer::Ledger;

use crate::discovery::Target;
use crate::json_fields::{self, json_fields, Fields};
use crate::protocol::Outbound;
use serde::de::{Deserializer, MapAccess};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
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

json_fields! {
    /// Sums of ledger lines: for `usepod-edge ledger` and the running totals. Written
    /// as its fields plus `expected_usdc` (for people reading it), by
    /// [`Tally::serialize_fields`], wherever a tally is part of an object.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Tally {
        pub jobs: u64,
        pub done: u64,
        pub errors: u64,
        pub cancelled: u64,
        pub input_tokens: u64,
        pub output_tokens: u64,
        pub expected_micro_usdc: u64,
    }
}

impl Tally {
    pub fn add(&mut self, e: &Entry) {
        self.jobs += 1;
        match e.outcome.as_str() {
            DONE => self.done += 1,
            CANCELLED => self.cancelled += 1,
            _ => self.errors += 1,
        }
        self.input_tokens = self.input_tokens.saturating_add(e.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(e.output_tokens);
        self.expected_micro_usdc = self
            .expected_micro_usdc
            .saturating_add(e.expected_micro_usdc);
    }

    /// The tally's entries of an object being written. (Not `#[serde(flatten)]`: the
    /// state file also reads it back, and flatten costs serde's buffering machinery.)
    pub fn serialize_fields<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        m.serialize_entry("jobs", &self.jobs)?;
        m.serialize_entry("done", &self.done)?;
        m.serialize_entry("errors", &self.errors)?;
        m.serialize_entry("cancelled", &self.cancelled)?;
        m.serialize_entry("input_tokens", &self.input_tokens)?;
        m.serialize_entry("output_tokens", &self.output_tokens)?;
        m.serialize_entry("expected_micro_usdc", &self.expected_micro_usdc)?;
        m.serialize_entry("expected_usdc", &usdc(self.expected_micro_usdc))
    }
}

/// The `ledger` object of the state file: the [`Tally`] of what this process has
/// recorded since it started, where, and how many lines it could not write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    pub tally: Tally,
    pub path: String,
    pub lines_lost: u64,
}

impl Serialize for LedgerState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        self.tally.serialize_fields(&mut m)?;
        m.serialize_entry("path", &self.path)?;
        m.serialize_entry("lines_lost", &self.lines_lost)?;
        m.end()
    }
}

impl Fields for LedgerState {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "path" => json_fields::set(&mut self.path, map),
            "lines_lost" => json_fields::set(&mut self.lines_lost, map),
            _ => self.tally.read(key, map),
        }
    }
}

impl<'de> Deserialize<'de> for LedgerState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        json_fields::object(d)
    }
}

/// The Prometheus counters for the `ledger` object of the state file.
pub fn prometheus(ledger: &LedgerState) -> String {
    let mut out = String::new();
    let t = &ledger.tally;
    for (name, value, help) in [
        ("jobs", t.jobs, "jobs recorded in the earnings ledger"),
        ("errors", t.errors, "ledger jobs answered with job_error"),
        (
            "cancelled",
            t.cancelled,
            "ledger jobs stopped without an answer",
        ),
        (
            "input_tokens",
            t.input_tokens,
            "input tokens of ledger jobs",
        ),
        (
            "output_tokens",
            t.output_tokens,
            "output tokens of ledger jobs",
        ),
        (
            "expected_micro_usdc",
            t.expected_micro_usdc,
            "expected earnings, USDC micro-units",
        ),
        (
            "lines_lost",
            ledger.lines_lost,
            "ledger lines that could not be written",
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP usepod_edge_ledger_{name}_total {help} since start\n\
             # TYPE usepod_edge_ledger_{name}_total counter\n\
             usepod_edge_ledger_{name}_total {value}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, Tokens};
    use std::time::{Duration, UNIX_EPOCH};

    fn backend() -> Backend {
        Backend {
            kind: "llamacpp".into(),
            url: "http://127.0.0.1:8080/".into(),
        }
    }

    fn finished<'a>(terminal: Option<&'a Outbound>, delivered: bool) -> Finished<'a> {
        Finished {
            job_id: "0b9e6f1c-6a43-4c8e-9d6e-3f2a1b0c9d8e",
            model: "m\n1",
            backend: backend(),
            terminal,
            delivered,
            elapsed_ms: 77,
            prices: (500_000, 1_000_000),
            at: UNIX_EPOCH + Duration::new(1_795_325_510, 5),
        }
    }

    #[test]
    fn earnings_round_down_once_per_job() {
        assert_eq!(expected_micro_usdc(0, 0, 500_000, 1_000_000), 0);
        // 1 token at $0.50/1M is 0.5 micro: rounded down.
        assert_eq!(expected_micro_usdc(1, 0, 500_000, 1_000_000), 0);
        // 0.5 + 0.5 = 1: the sum is rounded, not each half.
        assert_eq!(expected_micro_usdc(1, 1, 500_000, 500_000), 1);
        assert_eq!(expected_micro_usdc(12, 5, 500_000, 1_000_000), 11);
        assert_eq!(expected_micro_usdc(1_000_000, 1_000_000, 3, 7), 10);
        assert_eq!(expected_micro_usdc(999_999, 0, 1, 0), 0);
        // No overflow on the way: each product fits in u128, their sum saturates.
        assert_eq!(
            expected_micro_usdc(u64::MAX, u64::MAX, u64::MAX, u64::MAX),
            u64::MAX
        );
        assert_eq!(
            expected_micro_usdc(u64::MAX, 0, 1_000_000, 0),
            u64::MAX,
            "exactly representable"
        );
    }

    #[test]
    fn usdc_has_six_decimals() {
        assert_eq!(usdc(0), "0.000000");
        assert_eq!(usdc(11), "0.000011");
        assert_eq!(usdc(1_500_000), "1.500000");
        assert_eq!(usdc(123_456_789), "123.456789");
    }

    #[test]
    fn a_line_round_trips_in_its_exact_shape() {
        let done = Outbound::JobDone {
            job_id: "x".into(),
            tokens: Tokens::new(12, 5),
            duration_ms: 1401,
        };
        let e = finished(Some(&done), true).entry();
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"time":"2026-11-22T05:31:50.000000005+00:00","job_id":"0b9e6f1c-6a43-4c8e-9d6e-3f2a1b0c9d8e","model":"m\n1","backend":{"kind":"llamacpp","url":"http://127.0.0.1:8080/"},"input_tokens":12,"output_tokens":5,"duration_ms":1401,"input_per_1m":500000,"output_per_1m":1000000,"expected_micro_usdc":11,"outcome":"done"}"#
        );
        assert!(!text.contains('\n'), "one line whatever the model id holds");
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), e);
        // Fields a later version adds do not make old readers skip the line.
        let newer = text.replacen('{', r#"{"v":2,"#, 1);
        assert_eq!(serde_json::from_str::<Entry>(&newer).unwrap(), e);
        // A line missing a field is not a ledger entry.
        let partial = text.replace(r#","outcome":"done""#, "");
        assert!(serde_json::from_str::<Entry>(&partial).is_err());
    }

    #[test]
    fn outcomes_and_who_earns() {
        let done = Outbound::JobDone {
            job_id: "x".into(),
            tokens: Tokens::new(12, 5),
            duration_ms: 9,
        };
        let e = finished(Some(&done), false).entry();
        assert_eq!(
            (e.outcome.as_str(), e.expected_micro_usdc, e.output_tokens),
            (CANCELLED, 0, 5),
            "a job_done that never went out is not paid"
        );
        let err = Outbound::job_error("x", ErrorCode::BackendTimeout, "slow", 4);
        let e = finished(Some(&err), true).entry();
        assert_eq!(
            (
                e.outcome.as_str(),
                e.input_tokens,
                e.output_tokens,
                e.duration_ms,
                e.expected_micro_usdc
            ),
            ("backend_timeout", 0, 4, 77, 0)
        );
        let e = finished(None, false).entry();
        assert_eq!(
            (e.outcome.as_str(), e.output_tokens, e.duration_ms),
            (CANCELLED, 0, 77)
        );
        assert_eq!((e.input_per_1m, e.output_per_1m), (500_000, 1_000_000));
    }

    #[test]
    fn tally_sorts_outcomes() {
        let done = Outbound::JobDone {
            job_id: "x".into(),
            tokens: Tokens::new(12, 5),
            duration_ms: 9,
        };
        let err = Outbound::job_error("x", ErrorCode::Internal, "bug", 2);
        let mut t = Tally::default();
        t.add(&finished(Some(&done), true).entry());
        t.add(&finished(Some(&done), true).entry());
        t.add(&finished(Some(&err), true).entry());
        t.add(&finished(None, false).entry());
        assert_eq!(
            t,
            Tally {
                jobs: 4,
                done: 2,
                errors: 1,
                cancelled: 1,
                input_tokens: 24,
                output_tokens: 12,
                expected_micro_usdc: 22,
            }
        );
        assert_eq!(usdc(t.expected_micro_usdc), "0.000022");
    }

    #[test]
    fn prometheus_counters() {
        let t = prometheus(&LedgerState {
            tally: Tally {
                jobs: 4,
                errors: 1,
                input_tokens: 24,
                output_tokens: 12,
                expected_micro_usdc: 22,
                ..Tally::default()
            },
            ..LedgerState::default()
        });
        for line in [
            "# TYPE usepod_edge_ledger_jobs_total counter",
            "usepod_edge_ledger_jobs_total 4",
            "usepod_edge_ledger_errors_total 1",
            "usepod_edge_ledger_cancelled_total 0",
            "usepod_edge_ledger_input_tokens_total 24",
            "usepod_edge_ledger_output_tokens_total 12",
            "usepod_edge_ledger_expected_micro_usdc_total 22",
            "usepod_edge_ledger_lines_lost_total 0",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn backend_url_loses_its_query() {
        let target = Target {
            kind: crate::backend::BackendKind::Vllm,
            url: crate::endpoint::Endpoint::parse("http://127.0.0.1:8000/base?key=secret").unwrap(),
            allow: None,
            api_key: Some("sk".into()),
            serves_messages: Default::default(),
        };
        assert_eq!(
            Backend::of(&target),
            Backend {
                kind: "vllm".into(),
                url: "http://127.0.0.1:8000/base".into()
            }
        );
    }
}
