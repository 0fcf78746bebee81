//! The one error of the config layer.

use std::fmt;

/// A configuration problem, located precisely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file path, or the environment variable that was wrong.
    pub origin: String,
    /// Dotted key path such as `backends[1].kind`; empty for whole-file problems.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config error in {}: {}", self.origin, self.problem)
        } else {
            write!(
                f,
                "config error in {}: {}: {}",
                self.origin, self.key, self.problem
            )
        }
    }
}

impl std::error::Error for ConfigError {}
