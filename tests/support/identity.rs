//! usepod-agent identity files, written and read independently of the agent's own code
//! (docs/protocol.md, "Identity file").

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

pub const BEGIN: &str = "-----BEGIN USEPOD AGENT KEY-----";
pub const END: &str = "-----END USEPOD AGENT KEY-----";

/// The ed25519 public key of a 32-byte seed.
pub fn public_from_seed(seed: [u8; 32]) -> [u8; 32] {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
    *kp.pk
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// An identity file as usepod-agent writes it.
pub fn usepod_identity_text(seed: [u8; 32], provider_id: Option<&str>) -> String {
    let mut s = format!(
        "{BEGIN}\nversion: 1\ncreated: 2026-11-22T05:31:50.498567669+00:00\nsecret: {}\npublic: {}\n",
        b64(&seed),
        b64(&public_from_seed(seed))
    );
    if let Some(p) = provider_id {
        s.push_str(&format!("provider_id: {p}\n"));
    }
    s.push_str(END);
    s.push('\n');
    s
}

/// Write an identity file as the agent and usepod-agent keep one: mode 0600 from its
/// first byte, in a directory created 0700 when missing. The agent refuses a key file
/// that group or others may read, as ssh does.
pub fn write_identity_file(path: &Path, text: &str) {
    write_identity_file_mode(path, text, 0o600);
}

/// Like [`write_identity_file`] with another mode, for the tests of that refusal.
pub fn write_identity_file_mode(path: &Path, text: &str, mode: u32) {
    let dir = path.parent().expect("identity path has a directory");
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    // The umask may have taken bits away, never added them; set exactly what was asked.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

#[derive(Debug, Clone)]
pub struct ParsedIdentity {
    pub fields: BTreeMap<String, String>,
    pub secret: [u8; 32],
    pub public: [u8; 32],
    pub provider_id: Option<String>,
}

/// Parse a usepod identity file strictly enough to check what the agent wrote; panics
/// with the reason when the text does not follow the format.
pub fn parse_identity(text: &str) -> ParsedIdentity {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let first = lines.iter().position(|l| !l.trim().is_empty());
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let (Some(first), Some(last)) = (first, last) else {
        panic!("identity file is empty");
    };
    assert_eq!(
        lines[first], BEGIN,
        "identity file must start with {BEGIN}:\n{text}"
    );
    assert_eq!(
        lines[last], END,
        "identity file must end with {END}:\n{text}"
    );
    let mut fields = BTreeMap::new();
    for l in &lines[first + 1..last] {
        if l.trim().is_empty() {
            continue;
        }
        let (k, v) = l
            .split_once(':')
            .unwrap_or_else(|| panic!("identity line without `key: value`: {l:?}"));
        fields.insert(k.trim().to_string(), v.trim().to_string());
    }
    assert_eq!(
        fields.get("version").map(String::as_str),
        Some("1"),
        "version must be 1"
    );
    let created = fields.get("created").expect("created is required");
    assert!(
        created.len() >= 20 && created.contains('T'),
        "created must be an RFC 3339 time: {created:?}"
    );
    let decode32 = |k: &str| -> [u8; 32] {
        let v = fields.get(k).unwrap_or_else(|| panic!("`{k}` is required"));
        assert_eq!(
            v.len(),
            44,
            "`{k}` must be padded standard base64 of 32 bytes"
        );
        let b = B64
            .decode(v)
            .unwrap_or_else(|e| panic!("`{k}` is not base64: {e}"));
        b.try_into()
            .unwrap_or_else(|_| panic!("`{k}` must decode to 32 bytes"))
    };
    let secret = decode32("secret");
    let public = decode32("public");
    assert_eq!(
        public_from_seed(secret),
        public,
        "`public` must be the public key of `secret`"
    );
    let provider_id = fields.get("provider_id").cloned();
    ParsedIdentity {
        fields,
        secret,
        public,
        provider_id,
    }
}
