//! Sums of ledger lines.

use super::entry::{usdc, Entry, CANCELLED, DONE};
use crate::json_fields::json_fields;
use serde::ser::SerializeMap;

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
