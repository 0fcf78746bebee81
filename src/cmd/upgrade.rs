//! `usepod-edge upgrade --from PATH|URL [--sig PATH|URL] [--dry-run]
//! [--allow-downgrade]`: each step as it passes, then how it ended.

use super::codes::TARGET;
use crate::config::Config;
use crate::host::Host;
use crate::upgrade::{self, Args, Outcome, Upgrade};
use std::path::Path;
use std::process::ExitCode;

pub fn run(config: &Config, config_path: &Path, args: &Args, host: &Host) -> ExitCode {
    let request = Upgrade {
        config,
        config_path,
        args,
        host,
    };
    match upgrade::upgrade(&request, &mut |step| println!("{step}")) {
        Ok(o @ Outcome::RolledBack { .. }) => {
            log::error!(target: TARGET, "{o}");
            ExitCode::FAILURE
        }
        Ok(o) => {
            println!("{o}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!(target: TARGET, "upgrade refused: {e}");
            ExitCode::FAILURE
        }
    }
}
