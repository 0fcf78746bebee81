//! What every command needs first: logging at the asked level, and the config.

use super::{EXIT_CONFIG, TARGET};
use crate::cli::{Cli, Command};
use crate::config::{self, Config, Overrides};
use crate::host::{Host, ENV_LOG};
use std::path::PathBuf;
use std::process::ExitCode;

/// Why logging could not be set up.
#[derive(Debug)]
pub enum LoggingError {
    /// Not a level name (the text given).
    Level(String),
    Init(log::SetLoggerError),
}

impl std::fmt::Display for LoggingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoggingError::Level(text) => write!(
                f,
                "unknown log level {text:?} (error, warn, info, debug, trace)"
            ),
            LoggingError::Init(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoggingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoggingError::Level(_) => None,
            LoggingError::Init(e) => Some(e),
        }
    }
}

/// The level from `--log-level`, else `$USEPOD_EDGE_LOG`, else info.
pub fn init_logging(flag: Option<&str>, host: &Host) -> Result<(), LoggingError> {
    let text = flag
        .or_else(|| host.env.raw(ENV_LOG))
        .unwrap_or("info")
        .to_owned();
    let level: log::LevelFilter = text
        .parse()
        .map_err(|_| LoggingError::Level(text.clone()))?;
    simple_logger::SimpleLogger::new()
        .with_level(level)
        // Their debug output is about their internals, not about this agent.
        .with_module_level("rustls", level.min(log::LevelFilter::Info))
        .with_module_level("tungstenite", level.min(log::LevelFilter::Info))
        .with_utc_timestamps()
        .init()
        .map_err(LoggingError::Init)
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
