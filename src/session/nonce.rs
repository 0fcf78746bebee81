//! The auth_challenge's nonce: which ones the agent's key signs.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::error::Error;
use std::fmt;

/// Nonce lengths that are signed, in decoded bytes: the signature covers the raw
/// decoded nonce (docs/protocol.md, "Handshake"), so that is what is measured, not
/// the base64 text. The coordinator sends 32; anything far from that is a peer
/// trying to have our key sign a message of its choosing.
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// The nonce to sign, or why this challenge is not answered.
pub fn challenge_nonce(nonce_b64: &str) -> Result<Vec<u8>, NonceError> {
    // Base64 of 64 bytes is 88 characters; longer text is refused undecoded.
    if nonce_b64.len() > 4 * NONCE_BYTES.end().div_ceil(3) {
        return Err(NonceError::TooLong {
            chars: nonce_b64.len(),
        });
    }
    let nonce = B64
        .decode(nonce_b64.as_bytes())
        .map_err(|e| NonceError::Undecodable(Some(e)))?;
    if nonce.is_empty() {
        return Err(NonceError::Undecodable(None));
    }
    if !NONCE_BYTES.contains(&nonce.len()) {
        return Err(NonceError::Length { bytes: nonce.len() });
    }
    Ok(nonce)
}

/// Why an auth_challenge's nonce is not signed.
#[derive(Debug)]
pub enum NonceError {
    /// More base64 text than the longest nonce signed; not decoded.
    TooLong { chars: usize },
    /// Empty, or not standard base64.
    Undecodable(Option<base64::DecodeError>),
    /// Decoded, to a length outside the signed range.
    Length { bytes: usize },
}

impl fmt::Display for NonceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signed = NONCE_BYTES;
        match self {
            NonceError::TooLong { chars } => write!(
                f,
                "auth_challenge nonce of {chars} base64 characters is longer than {} bytes; not signed",
                signed.end()
            ),
            NonceError::Undecodable(_) => {
                f.write_str("auth_challenge nonce missing or not standard base64")
            }
            NonceError::Length { bytes } => write!(
                f,
                "auth_challenge nonce is {bytes} bytes, outside {}-{}; not signed",
                signed.start(),
                signed.end()
            ),
        }
    }
}

impl Error for NonceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            NonceError::Undecodable(Some(e)) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nonces_of_16_to_64_decoded_bytes_are_signed() {
        for n in [16, 32, 64] {
            assert_eq!(challenge_nonce(&B64.encode(vec![7u8; n])).unwrap().len(), n);
        }
        for n in [1, 8, 15, 65, 100, 4096] {
            let e = challenge_nonce(&B64.encode(vec![7u8; n])).unwrap_err();
            assert!(e.to_string().contains("not signed"), "{n}: {e}");
        }
        // Bytes, not characters: 16 bytes are 24 base64 characters, 64 are 88.
        assert_eq!(B64.encode([0u8; 64]).len(), 88);
        assert!(challenge_nonce(&B64.encode([0u8; 12])).is_err()); // 16 characters
        assert!(challenge_nonce("")
            .unwrap_err()
            .to_string()
            .contains("missing"));
        assert!(challenge_nonce("%%%%")
            .unwrap_err()
            .to_string()
            .contains("base64"));
        // A megabyte of text is refused by its length, before any decoding.
        let huge = "A".repeat(1 << 20);
        assert!(challenge_nonce(&huge)
            .unwrap_err()
            .to_string()
            .contains("longer than 64"));
    }
}
