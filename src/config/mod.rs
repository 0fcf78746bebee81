//! Configuration: the JSON file, then environment overrides, validated into a
//! [`Config`]. Every error names the file (or variable), the key and the problem.
//!
//! The file is read leniently (`lenient`, into the sections of `raw`) so that
//! a value of the wrong type is reported by the checks (`checks`, through
//! `checker`), which know its key.

mod certs;
mod checker;
mod checks;
mod env;
mod error;
mod lenient;
mod paths;
mod raw;
mod reloaded;
mod settings;
mod types;

pub use certs::{load_certs, CertError};
pub use env::{Overrides, ENV_CONFIG, ENV_COORDINATOR_URL, ENV_ENROLLMENT_CODE, ENV_KEY_PATH};
pub use error::ConfigError;
pub use paths::{default_config_path, SYSTEM_CONFIG_PATH, SYSTEM_KEY_PATH};
pub use reloaded::Reloaded;
pub use settings::{diff, keep_restart_only, needs_restart, settings, Change};
pub use types::*;

use std::path::{Path, PathBuf};

impl Config {
    /// Loads `path` (an explicitly named file must exist; the default path may be
    /// absent, meaning "defaults") and applies `over`.
    pub fn load(path: &Path, explicit: bool, over: &Overrides) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_str(&origin, &text, over),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => checks::build(
                &origin,
                None,
                raw::RawConfig::default(),
                &lenient::Unknown::new(),
                over,
            ),
            Err(e) => Err(ConfigError {
                origin,
                key: String::new(),
                problem: format!("cannot read file: {e}"),
            }),
        }
    }

    /// Parses config text (used by `load` and by tests and fuzzing).
    pub fn from_str(origin: &str, text: &str, over: &Overrides) -> Result<Config, ConfigError> {
        let (raw, unknown) = raw::parse(origin, text)?;
        checks::build(origin, Some(PathBuf::from(origin)), raw, &unknown, over)
    }
}

#[cfg(test)]
mod tests;
