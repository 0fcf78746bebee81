//! `usepod-edge identity`: the identity file, its public key and provider_id.

use super::codes::TARGET;
use crate::config::Config;
use crate::identity::Identity;
use crate::untrusted;
use std::process::ExitCode;

pub fn run(config: &Config) -> ExitCode {
    match Identity::load(&config.key_path) {
        Ok(id) => {
            println!("file: {}", id.path().display());
            println!("public: {}", id.public_b64());
            let pid = id
                .provider_id()
                .map(|p| untrusted::shown(p, 140).to_string());
            println!("provider_id: {}", pid.as_deref().unwrap_or("none"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!(target: TARGET, "{e}");
            ExitCode::FAILURE
        }
    }
}
