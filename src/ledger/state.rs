//! The ledger as the state file and the Prometheus textfile show it.

use super::tally::Tally;
use crate::json_fields::{self, Fields};
use serde::de::{Deserializer, MapAccess};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

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
