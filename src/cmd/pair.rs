//! `usepod-edge pair [--api URL] [--force]`: pairs this device with an operator's
//! account and writes the config; the code to enter and each step are printed.

use super::codes::EXIT_CONFIG;
use crate::cli::Cli;
use crate::config::Config;
use crate::host::Host;
use crate::pair::{self, api_base, ws_url, Pairing};
use std::path::Path;
use std::process::ExitCode;

pub fn run(config_path: &Path, cli: &Cli, config: &Config, host: &Host) -> ExitCode {
    if config_path.exists() && !cli.force {
        eprintln!(
            "usepod-edge: {} already exists; pairing would replace it. Run `pair --force` to do so.",
            config_path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    // Without --api, pair with whatever coordinator the config names.
    let api = cli
        .api
        .clone()
        .unwrap_or_else(|| api_base(&config.coordinator.url));
    let ws = match ws_url(&api) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("usepod-edge: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let request = Pairing {
        config_path,
        api: &api,
        ws: &ws,
        config,
        host,
    };
    let shown = pair::pair(&request, &mut |p| {
        if p.is_warning() {
            eprintln!("usepod-edge: warning: {p}");
        } else {
            println!("{p}");
        }
    });
    match shown {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usepod-edge: pairing failed: {e}");
            ExitCode::FAILURE
        }
    }
}
