//! `usepod-edge ledger`: the earnings ledger summed, as text or JSON.

use super::codes::EXIT_CONFIG;
use crate::cli::LedgerArgs;
use crate::config::LedgerConfig;
use crate::ledger::report::{ledger_files, parse_since, render_json, render_text, Summary};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// `usepod-edge ledger [--since DATE] [--by day|model] [--json]`: 0 when every
/// file was read (skipped lines included), 1 when one could not be, 2 for a bad
/// `--since`.
pub fn run(cfg: &LedgerConfig, args: &LedgerArgs, as_json: bool) -> ExitCode {
    let by = args.by;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let since = match args
        .since
        .as_deref()
        .map(|s| parse_since(s, now))
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("usepod-edge: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut summary = Summary::default();
    for f in ledger_files(&cfg.path) {
        if let Err(e) = summary.read(&f, since, by) {
            eprintln!(
                "usepod-edge: cannot read the ledger file {}: {e}",
                f.display()
            );
            return ExitCode::FAILURE;
        }
    }
    if as_json {
        let report = render_json(&cfg.path, &summary, since, by);
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("usepod-edge: cannot write the ledger report as JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render_text(&cfg.path, &summary, since, by));
    }
    ExitCode::SUCCESS
}
