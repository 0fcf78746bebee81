//! Release tooling for whoever builds releases (`make dist`): `release-key
//! PATH` makes a signing key, `release-sign FILE...` writes `FILE.sig` for
//! each file (format: `release::signature`).
//!
//! The signing key is a file holding the key's 32-byte seed in standard
//! base64 on one line, named by `USEPOD_EDGE_SIGNING_KEY_FILE`, or that
//! base64 itself in `USEPOD_EDGE_SIGNING_KEY` (a CI secret). Never on the
//! command line, never in the repository, never logged.

use crate::release::signature;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const ENV_KEY_FILE: &str = "USEPOD_EDGE_SIGNING_KEY_FILE";
pub const ENV_KEY: &str = "USEPOD_EDGE_SIGNING_KEY";

/// Why signing could not be done.
#[derive(Debug)]
pub enum SignError {
    NoKey,
    /// The key file could not be read (its path).
    KeyFile(PathBuf, std::io::Error),
    /// The key is not base64 of a 32-byte seed (where it came from).
    BadKey(String),
    /// A file to sign or its signature (the path).
    File(PathBuf, std::io::Error),
    Usage(&'static str),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::NoKey => write!(
                f,
                "no signing key: set {ENV_KEY_FILE} (a file) or {ENV_KEY}"
            ),
            SignError::KeyFile(p, e) => {
                write!(f, "cannot read the signing key {}: {e}", p.display())
            }
            SignError::BadKey(from) => {
                write!(
                    f,
                    "the signing key in {from} is not base64 of a 32-byte ed25519 seed"
                )
            }
            SignError::File(p, e) => write!(f, "{}: {e}", p.display()),
            SignError::Usage(u) => f.write_str(u),
        }
    }
}

impl std::error::Error for SignError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignError::KeyFile(_, e) | SignError::File(_, e) => Some(e),
            _ => None,
        }
    }
}

fn report(r: Result<(), SignError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!(target: "usepod_edge", "{e}");
            ExitCode::FAILURE
        }
    }
}

/// `release-key PATH`: a new signing key (mode 0600, never over an existing
/// file); prints its public key for `RELEASE_KEYS` or `upgrade.trusted_keys`.
pub fn new_key(files: &[PathBuf]) -> ExitCode {
    report((|| {
        let [path] = files else {
            return Err(SignError::Usage(
                "release-key wants one PATH to write the new key to",
            ));
        };
        let seed = ed25519_compact::Seed::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| SignError::File(path.clone(), e))?;
        writeln!(f, "{}", signature::b64(seed.as_ref()))
            .and_then(|()| f.sync_all())
            .map_err(|e| SignError::File(path.clone(), e))?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(seed.as_ref());
        println!("wrote a new signing key to {}", path.display());
        println!("public key: {}", signature::public_of(&raw));
        Ok(())
    })())
}

fn signing_seed() -> Result<[u8; 32], SignError> {
    if let Some(path) = std::env::var_os(ENV_KEY_FILE).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let text =
            std::fs::read_to_string(&path).map_err(|e| SignError::KeyFile(path.clone(), e))?;
        return signature::b64_array(&text)
            .ok_or_else(|| SignError::BadKey(path.display().to_string()));
    }
    let text = std::env::var(ENV_KEY).map_err(|_| SignError::NoKey)?;
    signature::b64_array(&text).ok_or_else(|| SignError::BadKey(format!("${ENV_KEY}")))
}

/// `release-sign FILE...`: `FILE.sig` beside each file.
pub fn sign_files(files: &[PathBuf]) -> ExitCode {
    report((|| {
        if files.is_empty() {
            return Err(SignError::Usage("release-sign wants the FILEs to sign"));
        }
        let seed = signing_seed()?;
        for path in files {
            let bytes = std::fs::read(path).map_err(|e| SignError::File(path.clone(), e))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = signature::sign(&seed, &name, &bytes);
            let sig_path = sig_path(path);
            crate::atomic_file::write(&sig_path, text.as_bytes(), 0o644)
                .map_err(|e| SignError::File(sig_path.clone(), e))?;
            println!("{}", sig_path.display());
        }
        println!("signed with key {}", signature::public_of(&seed));
        Ok(())
    })())
}

fn sig_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}
