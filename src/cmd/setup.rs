//! What every command needs first: logging at the asked level, and the config.

use super::codes::{EXIT_CONFIG, TARGET};
use crate::cli::{Cli, Command};
use crate::config::{self, Config, Overrides};
use crate::host::{Host, ENV_LOG};
use crate::logging::{self, LoggingError};
use std::path::PathBuf;
use std::process::ExitCode;

/// The level from `--log-level`, else `$USEPOD_EDGE_LOG`; else the config's, once read.
pub fn init_logging(flag: Option<&str>, host: &Host) -> Result<(), LoggingError> {
    logging::init(flag.or_else(|| host.env.raw(ENV_LOG)))
}

/// The config file named by flag or environment (explicit) or the default.
pub fn config_path(cli: &Cli) -> (PathBuf, bool) {
    match (&cli.config, std::env::var_os(config::ENV_CONFIG)) {
        (Some(p), _) => (p.clone(), true),
        (None, Some(p)) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (config::default_config_path(), false),
    }
}

/// The config, its warnings logged; a problem is logged and ends the command.
pub fn load_config(cli: &Cli) -> Result<Config, ExitCode> {
    let (path, mut explicit) = config_path(cli);
    // `pair` writes the config, so a missing one is expected there; with
    // --force a broken one is about to be replaced.
    if cli.command == Command::Pair {
        explicit = false;
        if cli.force && Config::load(&path, false, &Overrides::from_env()).is_err() {
            return Config::from_str(&path.display().to_string(), "{}", &Overrides::from_env())
                .map_err(|_| ExitCode::from(EXIT_CONFIG));
        }
    }
    match Config::load(&path, explicit, &Overrides::from_env()) {
        Ok(c) => {
            if c.source.is_none() {
                log::info!(target: TARGET, "no config file at {}; using defaults", path.display());
            }
            logging::follow_config(c.status.log_level);
            for w in &c.warnings {
                log::warn!(target: TARGET, "{w}");
            }
            Ok(c)
        }
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}
