//! `usepod-edge doctor`: one line per check; the exit status says whether all passed.

use crate::config::Config;
use crate::doctor;
use crate::host::Host;
use std::process::ExitCode;

pub fn run(config: &Config, host: &Host) -> ExitCode {
    let checks = doctor::checks(config, host);
    for c in &checks {
        println!(
            "{} {:<16} {}",
            if c.ok { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        println!("all {} checks passed", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} checks failed", checks.len());
        ExitCode::FAILURE
    }
}
