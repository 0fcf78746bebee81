//! `release-key PATH` and `release-sign FILE...`: release tooling for whoever builds
//! releases (`make dist`).

use super::codes::TARGET;
use crate::host::Host;
use crate::upgrade::sign::{self, SignError};
use std::path::PathBuf;
use std::process::ExitCode;

fn failed(e: SignError) -> ExitCode {
    log::error!(target: TARGET, "{e}");
    ExitCode::FAILURE
}

/// `release-key PATH`: prints the new key's public half.
pub fn new_key(files: &[PathBuf]) -> ExitCode {
    let [path] = files else {
        return failed(SignError::Usage(
            "release-key wants one PATH to write the new key to",
        ));
    };
    match sign::new_key(path) {
        Ok(public) => {
            println!("wrote a new signing key to {}", path.display());
            println!("public key: {public}");
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

/// `release-sign FILE...`: prints each signature file and the key.
pub fn sign(files: &[PathBuf], host: &Host) -> ExitCode {
    match sign::sign_files(files, &host.env) {
        Ok(signed) => {
            for f in &signed.files {
                println!("{}", f.display());
            }
            println!("signed with key {}", signed.public_key);
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}
