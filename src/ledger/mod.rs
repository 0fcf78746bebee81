//! The earnings ledger: one JSON line per job that reached a worker, so the
//! operator can check on the device what the coordinator should pay.
//!
//! Jobs refused at admission (busy, unknown model, shutting down, paused) are
//! not recorded: they ran nothing and earn nothing, and a coordinator sending
//! a flood of them would otherwise rotate the real earnings out of the files.

mod entry;
pub mod report;
mod state;
mod tally;
mod writer;

pub use entry::{expected_micro_usdc, usdc, Backend, Entry, Finished, CANCELLED, DONE};
pub use report::GroupBy;
pub use state::{prometheus, LedgerState};
pub use tally::Tally;
pub use writer::{Ledger, Queued, Writer};

#[cfg(test)]
mod tests;
