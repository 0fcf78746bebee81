//! The detached signature of a release binary (`<binary>.sig`, beside
//! SHA256SUMS in dist/), and checking one against the keys this agent trusts.
//!
//! The file is text, one `name: value` per line after a fixed first line:
//!
//! ```text
//! usepod-edge release signature v1
//! file: usepod-edge-0.2.0-aarch64-unknown-linux-musl
//! sha256: <the binary's SHA-256, 64 lowercase hex digits>
//! key: <the signer's ed25519 public key, standard base64 of 32 bytes>
//! signature: <ed25519 signature, standard base64 of 64 bytes>
//! ```
//!
//! The signature is over the bytes `usepod-edge release signature v1\nsha256: <hex>\n`
//! (the first line and the sha256 line, each ending in a newline): the binary's
//! SHA-256 under a fixed prefix, so a signature over anything else never
//! passes. `file` is only informative and `key` only says which key to check
//! with: a key that is not trusted is refused whatever it signed. Unknown
//! lines are skipped, so later versions may add some.

use super::{hex, sha256};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_compact::{KeyPair, PublicKey, Seed, Signature};
use std::fmt;

pub const HEADER: &str = "usepod-edge release signature v1";

/// The project's release key: public half only, the secret never enters the
/// repository (docs/upgrades.md, "The checks": this one's secret was not kept, and the
/// maintainers' own key replaces it before a first signed release);
/// `upgrade.trusted_keys` in the config adds an operator's own.
pub const RELEASE_KEYS: &[&str] = &["KnofXt/1qPvXdYLXQQ7J30hDDLf0ZgnZVaoPVyYPTZU="];

/// Why a release's signature does not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// Not a signature file of this format; the text says what is wrong.
    Format(String),
    /// The binary is not the one that was signed.
    Tampered { signed: String, actual: String },
    /// Signed by a key this agent does not trust (its base64).
    Untrusted(String),
    /// The signature does not verify under the key it names.
    Invalid,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Format(what) => write!(f, "not a release signature: {what}"),
            SignatureError::Tampered { signed, actual } => write!(
                f,
                "the binary is not the one that was signed (its SHA-256 is {actual}, the signature is for {signed})"
            ),
            SignatureError::Untrusted(key) => write!(
                f,
                "signed by key {key}, which this agent does not trust (the release key is built in; add others under upgrade.trusted_keys)"
            ),
            SignatureError::Invalid => f.write_str("the signature does not verify"),
        }
    }
}

impl std::error::Error for SignatureError {}

/// A parsed signature file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    pub file: Option<String>,
    pub sha256: [u8; 32],
    pub key: [u8; 32],
    pub signature: [u8; 64],
}

/// The bytes that are signed for a binary whose SHA-256 is `digest`.
pub fn message(digest: &[u8; 32]) -> Vec<u8> {
    format!("{HEADER}\nsha256: {}\n", hex(digest)).into_bytes()
}

/// Standard base64 of exactly `N` bytes.
pub fn b64_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    B64.decode(text.trim()).ok()?.try_into().ok()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn parse(text: &str) -> Result<SignatureFile, SignatureError> {
    let bad = |what: &str| SignatureError::Format(what.to_owned());
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some(HEADER) {
        return Err(bad(&format!("the first line must be {HEADER:?}")));
    }
    let (mut file, mut digest, mut key, mut signature) = (None, None, None, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim() {
            "file" => file = Some(value.to_owned()),
            "sha256" => {
                digest = Some(unhex32(value).ok_or_else(|| bad("sha256 is not 64 hex digits"))?)
            }
            "key" => {
                key = Some(b64_array(value).ok_or_else(|| bad("key is not base64 of 32 bytes"))?)
            }
            "signature" => {
                signature = Some(
                    b64_array(value).ok_or_else(|| bad("signature is not base64 of 64 bytes"))?,
                )
            }
            _ => {}
        }
    }
    Ok(SignatureFile {
        file,
        sha256: digest.ok_or_else(|| bad("no sha256 line"))?,
        key: key.ok_or_else(|| bad("no key line"))?,
        signature: signature.ok_or_else(|| bad("no signature line"))?,
    })
}

/// The signature file for `bytes` (named `file_name` in it), signed with the
/// ed25519 key made from `seed`.
pub fn sign(seed: &[u8; 32], file_name: &str, bytes: &[u8]) -> String {
    let kp = KeyPair::from_seed(Seed::new(*seed));
    let digest = sha256(bytes);
    let sig = kp.sk.sign(message(&digest), None);
    format!(
        "{HEADER}\nfile: {file_name}\nsha256: {}\nkey: {}\nsignature: {}\n",
        hex(&digest),
        B64.encode(*kp.pk),
        B64.encode(*sig)
    )
}

/// Standard base64, as keys are written.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The public key (base64) of the key made from `seed`.
pub fn public_of(seed: &[u8; 32]) -> String {
    B64.encode(*KeyPair::from_seed(Seed::new(*seed)).pk)
}

/// Checks that `text` is a signature of `bytes` by one of `trusted`; the
/// parsed file when it is.
pub fn verify(
    text: &str,
    bytes: &[u8],
    trusted: &[[u8; 32]],
) -> Result<SignatureFile, SignatureError> {
    let f = parse(text)?;
    let actual = sha256(bytes);
    if actual != f.sha256 {
        return Err(SignatureError::Tampered {
            signed: hex(&f.sha256),
            actual: hex(&actual),
        });
    }
    if !trusted.contains(&f.key) {
        return Err(SignatureError::Untrusted(B64.encode(f.key)));
    }
    let pk = PublicKey::new(f.key);
    pk.verify(message(&f.sha256), &Signature::new(f.signature))
        .map_err(|_| SignatureError::Invalid)?;
    Ok(f)
}

/// The built-in release keys, decoded.
pub fn release_keys() -> Vec<[u8; 32]> {
    RELEASE_KEYS.iter().filter_map(|k| b64_array(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [7; 32];
    const BINARY: &[u8] = b"\x7fELF a release binary";
    /// `sign(&SEED, "usepod-edge-test", BINARY)`, pinned (and checked once with
    /// Python's `cryptography`, an independent ed25519): the format and the
    /// signed bytes must not drift, or released signatures stop verifying.
    const SIGNED: &str = "usepod-edge release signature v1
file: usepod-edge-test
sha256: 7ee7fdc50413e716e8db39fe9d5af67b8ca6161a17cd3d1c1c442cbb2dfd4dc5
key: 6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=
signature: 3vB4VGPzi4JsgON+08u58dm5guhCBTgp1BGAxfygoZCk47Lv2ShVKSlJelFGA0zjoI4UB6/fDFzLWOwQ20TRDw==
";

    fn trusted() -> Vec<[u8; 32]> {
        vec![b64_array(&public_of(&SEED)).unwrap()]
    }

    #[test]
    fn signing_gives_the_pinned_file() {
        assert_eq!(sign(&SEED, "usepod-edge-test", BINARY), SIGNED);
    }

    #[test]
    fn the_pinned_file_verifies_and_says_what_it_signed() {
        let f = verify(SIGNED, BINARY, &trusted()).expect("verifies");
        assert_eq!(f.file.as_deref(), Some("usepod-edge-test"));
        assert_eq!(f.sha256, sha256(BINARY));
    }

    #[test]
    fn refuses_a_changed_binary_an_untrusted_key_and_a_forged_signature() {
        let mut changed = BINARY.to_vec();
        changed[5] ^= 1;
        assert!(matches!(
            verify(SIGNED, &changed, &trusted()),
            Err(SignatureError::Tampered { .. })
        ));
        let other = [9u8; 32];
        let err = verify(SIGNED, BINARY, &[b64_array(&public_of(&other)).unwrap()]).unwrap_err();
        assert_eq!(err, SignatureError::Untrusted(public_of(&SEED)));
        assert!(err.to_string().contains("upgrade.trusted_keys"));
        // Another key's signature under the trusted key's name.
        let forged = sign(&other, "usepod-edge-test", BINARY);
        let forged_sig = forged.lines().last().unwrap();
        let text = SIGNED.replace(SIGNED.lines().last().unwrap(), forged_sig);
        assert_eq!(
            verify(&text, BINARY, &trusted()),
            Err(SignatureError::Invalid)
        );
        // A signature over the digest without the prefix does not pass either.
        let kp = KeyPair::from_seed(Seed::new(SEED));
        let bare = kp.sk.sign(sha256(BINARY), None);
        let text = SIGNED.replace(
            SIGNED.lines().last().unwrap(),
            &format!("signature: {}", B64.encode(*bare)),
        );
        assert_eq!(
            verify(&text, BINARY, &trusted()),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn malformed_files_say_what_is_wrong() {
        let e = |t: &str| parse(t).unwrap_err().to_string();
        assert!(e("hello").contains("first line"));
        assert!(e(&SIGNED.replace("sha256: ", "sha256: 0")).contains("64 hex"));
        assert!(e(&SIGNED.replace("key: ", "key: x")).contains("key is not base64"));
        let no_sig: String = SIGNED.lines().take(4).map(|l| format!("{l}\n")).collect();
        assert!(e(&no_sig).contains("no signature line"));
        // Unknown lines are skipped.
        assert!(parse(&format!("{SIGNED}comment: later versions\n")).is_ok());
    }

    #[test]
    fn the_built_in_release_key_decodes() {
        assert_eq!(release_keys().len(), RELEASE_KEYS.len());
        assert!(!RELEASE_KEYS.is_empty());
    }
}
