//! The log: lines on stderr with UTC times, at a level that `--log-level` or
//! `$USEPOD_EDGE_LOG` pins for the process, or else `status.log_level` from the config,
//! which a reload may change.

use std::sync::OnceLock;

/// The level pinned at start by the flag or the environment, if any.
static PINNED: OnceLock<Option<log::LevelFilter>> = OnceLock::new();

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

/// Installs the logger; `pinned` is the flag's or the environment's level text.
/// Until a config says otherwise ([`follow_config`]) the level is `pinned` or info.
pub fn init(pinned: Option<&str>) -> Result<(), LoggingError> {
    let pinned = pinned
        .map(|text| {
            text.parse::<log::LevelFilter>()
                .map_err(|_| LoggingError::Level(text.to_owned()))
        })
        .transpose()?;
    // The logger lets everything through; the global maximum is the one filter, so a
    // reload can move it.
    simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Trace)
        // Their debug output is about their internals, not about this agent.
        .with_module_level("rustls", log::LevelFilter::Info)
        .with_module_level("tungstenite", log::LevelFilter::Info)
        .with_utc_timestamps()
        .init()
        .map_err(LoggingError::Init)?;
    let _ = PINNED.set(pinned);
    log::set_max_level(pinned.unwrap_or(log::LevelFilter::Info));
    Ok(())
}

/// The config's level, unless the flag or the environment pinned one.
pub fn follow_config(level: Option<log::LevelFilter>) {
    if let Some(Some(_)) = PINNED.get() {
        return;
    }
    log::set_max_level(level.unwrap_or(log::LevelFilter::Info));
}
