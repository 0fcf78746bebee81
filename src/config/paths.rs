//! Where the config and the identity live when nothing names them.

use std::path::{Path, PathBuf};

/// Where a service install keeps its config and state.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/usepod-edge/config.json";
pub const SYSTEM_KEY_PATH: &str = "/var/lib/usepod-edge/identity.key";

/// Where to look for the config when none is named: the user's file if it
/// exists, else the system one.
pub fn default_config_path() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME") {
        let user = Path::new(&home).join(".config/usepod-edge/config.json");
        if user.exists() {
            return user;
        }
    }
    PathBuf::from(SYSTEM_CONFIG_PATH)
}

pub(super) fn default_key_path(config_path: Option<&Path>) -> PathBuf {
    let system = config_path.is_some_and(|p| p.starts_with("/etc"));
    match std::env::var_os("HOME") {
        // usepod-agent's location, so an operator moving over keeps their identity.
        Some(home) if !system => Path::new(&home).join(".usepod-agent/identity.key"),
        _ => PathBuf::from(SYSTEM_KEY_PATH),
    }
}
