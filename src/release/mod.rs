//! Signed releases: what a release file must be before `upgrade` installs it.
//! The signature file (`signature.rs`), SHA-256 (`sha256`), the ELF header's
//! machine (`elf.rs`) and release versions (`version.rs`). Pure: no I/O but
//! reading this process's own binary for the test hook in `version.rs`.

pub mod elf;
pub mod signature;
pub mod version;

use rustls::SupportedCipherSuite;

/// SHA-256 of `bytes`, from the TLS stack's own provider (ring), so hashing
/// costs no crate and almost no code.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let SupportedCipherSuite::Tls13(s) =
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
    {
        out.copy_from_slice(s.common.hash_provider.hash(bytes).as_ref());
    }
    out
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_the_fips_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
