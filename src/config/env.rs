//! Settings the environment gives, applied over the file.

use super::types::Secret;

/// Settings taken from the environment, applied over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub coordinator_url: Option<String>,
    pub enrollment_code: Option<Secret>,
    pub key_path: Option<String>,
}

pub const ENV_CONFIG: &str = "USEPOD_EDGE_CONFIG";
pub const ENV_COORDINATOR_URL: &str = "USEPOD_EDGE_COORDINATOR_URL";
pub const ENV_ENROLLMENT_CODE: &str = "USEPOD_EDGE_ENROLLMENT_CODE";
pub const ENV_KEY_PATH: &str = "USEPOD_EDGE_KEY_PATH";

impl Overrides {
    pub fn from_env() -> Overrides {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        Overrides {
            coordinator_url: var(ENV_COORDINATOR_URL),
            enrollment_code: var(ENV_ENROLLMENT_CODE).map(Secret::new),
            key_path: var(ENV_KEY_PATH),
        }
    }
}
