//! PEM certificate files: `coordinator.ca_file` and `SSL_CERT_FILE`.

use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a certificate file gave no certificates; each names the file.
#[derive(Debug)]
pub enum CertError {
    /// The file could not be read (missing, a directory, not permitted).
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A PEM section in it is malformed.
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    /// It holds no CERTIFICATE section (a key, say, or not PEM at all).
    NoCertificate { path: PathBuf },
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            CertError::Pem { path, source } => {
                write!(f, "{} is not valid PEM: {source:?}", path.display())
            }
            CertError::NoCertificate { path } => {
                write!(f, "{} contains no PEM CERTIFICATE block", path.display())
            }
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertError::Read { source, .. } => Some(source),
            CertError::Pem { source, .. } => Some(source),
            CertError::NoCertificate { .. } => None,
        }
    }
}

/// The PEM certificates in a file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|source| CertError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}
