//! Release tooling for whoever builds releases (`make dist`): `release-key
//! PATH` makes a signing key, `release-sign FILE...` writes `FILE.sig` for
//! each file (format: `release::signature`).
//!
//! The signing key is a file holding the key's 32-byte seed in standard
//! base64 on one line, named by `USEPOD_EDGE_SIGNING_KEY_FILE`, or that
//! base64 itself in `USEPOD_EDGE_SIGNING_KEY` (a CI secret). Never on the
//! command line, never in the repository, never logged.

use crate::host::{Env, ENV_SIGNING_KEY as ENV_KEY, ENV_SIGNING_KEY_FILE as ENV_KEY_FILE};
use crate::release::signature;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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

/// A new signing key at `path` (mode 0600, never over an existing file); its public
/// key, for `RELEASE_KEYS` or `upgrade.trusted_keys`.
pub fn new_key(path: &Path) -> Result<String, SignError> {
    let seed = ed25519_compact::Seed::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SignError::File(path.to_owned(), e))?;
    writeln!(f, "{}", signature::b64(seed.as_ref()))
        .and_then(|()| f.sync_all())
        .map_err(|e| SignError::File(path.to_owned(), e))?;
    let mut raw = [0u8; 32];
    raw.copy_from_slice(seed.as_ref());
    Ok(signature::public_of(&raw))
}

fn signing_seed(env: &Env) -> Result<[u8; 32], SignError> {
    if let Some(path) = env.path(ENV_KEY_FILE) {
        let text =
            std::fs::read_to_string(&path).map_err(|e| SignError::KeyFile(path.clone(), e))?;
        return signature::b64_array(&text)
            .ok_or_else(|| SignError::BadKey(path.display().to_string()));
    }
    let text = env.get(ENV_KEY).ok_or(SignError::NoKey)?;
    signature::b64_array(text).ok_or_else(|| SignError::BadKey(format!("${ENV_KEY}")))
}

/// What signing wrote: the signature files, and the public key they verify with.
#[derive(Debug)]
pub struct Signed {
    pub files: Vec<PathBuf>,
    pub public_key: String,
}

/// `FILE.sig` beside each file, with the key the environment names.
pub fn sign_files(files: &[PathBuf], env: &Env) -> Result<Signed, SignError> {
    if files.is_empty() {
        return Err(SignError::Usage("release-sign wants the FILEs to sign"));
    }
    let seed = signing_seed(env)?;
    let mut written = Vec::new();
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
        written.push(sig_path);
    }
    Ok(Signed {
        files: written,
        public_key: signature::public_of(&seed),
    })
}

fn sig_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}
