//! The agent's ed25519 identity, stored in usepod-agent's key file format so an
//! operator's existing `identity.key` (and provider_id) keeps working.
//!
//! The file is never overwritten unless it parsed cleanly: a corrupt or
//! mismatched key is an error for a human to look at, not something to replace.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_compact::{KeyPair, Seed};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const BEGIN: &str = "-----BEGIN USEPOD AGENT KEY-----";
const END: &str = "-----END USEPOD AGENT KEY-----";

#[derive(Debug)]
pub enum IdentityError {
    /// The file or its directory could not be read or written.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The file exists but is not a valid key file; it is left untouched.
    Corrupt { path: PathBuf, problem: String },
    /// `public` does not match the key derived from `secret`.
    Mismatch { path: PathBuf },
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Io { path, action, source } => {
                write!(f, "identity file {}: cannot {action}: {source}", path.display())
            }
            IdentityError::Corrupt { path, problem } => write!(
                f,
                "identity file {} is corrupt: {problem} (left untouched; restore it from a backup, or move it away to create a new identity)",
                path.display()
            ),
            IdentityError::Mismatch { path } => write!(
                f,
                "identity file {}: the public key does not match the secret (left untouched; the file was edited or mixed up)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for IdentityError {}

pub struct Identity {
    path: PathBuf,
    keypair: KeyPair,
    created: String,
    provider_id: Option<String>,
    /// Lines we do not know, kept so a rewrite loses nothing.
    extra: Vec<(String, String)>,
}

impl fmt::Debug for Identity {
    // Hand-written so the secret can never reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("path", &self.path)
            .field("public", &self.public_b64())
            .field("provider_id", &self.provider_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the key file, or creates one when (and only when) none exists.
    pub fn load_or_create(path: &Path) -> Result<(Identity, bool), IdentityError> {
        match fs::read(path) {
            Ok(bytes) => Ok((Identity::parse(path, &bytes)?, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = Identity::generate(path);
                id.save()?;
                Ok((id, true))
            }
            Err(e) => Err(IdentityError::Io {
                path: path.into(),
                action: "read it",
                source: e,
            }),
        }
    }

    /// Loads an existing key file without creating one.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let bytes = fs::read(path).map_err(|e| IdentityError::Io {
            path: path.into(),
            action: "read it",
            source: e,
        })?;
        Identity::parse(path, &bytes)
    }

    pub fn generate(path: &Path) -> Identity {
        Identity {
            path: path.into(),
            keypair: KeyPair::from_seed(Seed::generate()),
            created: crate::clock::now_rfc3339(),
            provider_id: None,
            extra: Vec::new(),
        }
    }

    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Identity, IdentityError> {
        let corrupt = |problem: String| IdentityError::Corrupt {
            path: path.into(),
            problem,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text".into()))?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(BEGIN) {
            return Err(corrupt(format!("first line is not {BEGIN}")));
        }
        let (mut version, mut created, mut secret, mut public, mut provider_id) =
            (None, None, None, None, None);
        let mut extra = Vec::new();
        let mut ended = false;
        for line in lines.by_ref() {
            if line == END {
                ended = true;
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| corrupt(format!("line {line:?} is not `key: value`")))?;
            let (k, v) = (k.trim(), v.trim().to_owned());
            match k {
                "version" => version = Some(v),
                "created" => created = Some(v),
                "secret" => secret = Some(v),
                "public" => public = Some(v),
                "provider_id" => provider_id = Some(v).filter(|v| !v.is_empty()),
                _ => extra.push((k.to_owned(), v)),
            }
        }
        if !ended {
            return Err(corrupt(format!("no {END} line (truncated?)")));
        }
        let need =
            |v: Option<String>, name: &str| v.ok_or_else(|| corrupt(format!("missing `{name}:`")));
        let version = need(version, "version")?;
        if version != "1" {
            return Err(corrupt(format!(
                "unsupported version {version:?} (expected 1)"
            )));
        }
        let created = need(created, "created")?;
        let seed = decode32(&need(secret, "secret")?)
            .ok_or_else(|| corrupt("`secret` is not base64 of 32 bytes".into()))?;
        let public = decode32(&need(public, "public")?)
            .ok_or_else(|| corrupt("`public` is not base64 of 32 bytes".into()))?;
        let keypair = KeyPair::from_seed(Seed::new(seed));
        if *keypair.pk != public {
            return Err(IdentityError::Mismatch { path: path.into() });
        }
        Ok(Identity {
            path: path.into(),
            keypair,
            created,
            provider_id,
            extra,
        })
    }

    /// The file's text, in usepod-agent's format.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{BEGIN}\nversion: 1\ncreated: {}\nsecret: {}\npublic: {}\n",
            self.created,
            B64.encode(self.keypair.sk.seed().as_ref()),
            self.public_b64()
        );
        if let Some(p) = &self.provider_id {
            s += &format!("provider_id: {p}\n");
        }
        for (k, v) in &self.extra {
            s += &format!("{k}: {v}\n");
        }
        s + END + "\n"
    }

    /// Writes the file atomically with mode 0600, creating its directory 0700.
    pub fn save(&self) -> Result<(), IdentityError> {
        let io_err = |action: &'static str| {
            let path = self.path.clone();
            move |source| IdentityError::Io {
                path,
                action,
                source,
            }
        };
        crate::atomic_file::ensure_private_dir(&self.path)
            .map_err(io_err("create its directory"))?;
        crate::atomic_file::write(&self.path, self.render().as_bytes(), 0o600)
            .map_err(io_err("write it"))
    }

    /// Records the provider_id the coordinator assigned; writes the file only when it changed.
    pub fn set_provider_id(&mut self, id: &str) -> Result<bool, IdentityError> {
        if self.provider_id.as_deref() == Some(id) {
            return Ok(false);
        }
        let old = self.provider_id.replace(id.to_owned());
        if let Err(e) = self.save() {
            // Memory keeps the new id so this session can go on; the file keeps the old.
            log::debug!("provider_id {id} kept in memory only (previously {old:?})");
            return Err(e);
        }
        Ok(true)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn provider_id(&self) -> Option<&str> {
        self.provider_id.as_deref()
    }

    pub fn public_b64(&self) -> String {
        B64.encode(self.keypair.pk.as_ref())
    }

    /// Plain ed25519 over the message bytes, standard padded base64.
    pub fn sign_b64(&self, message: &[u8]) -> String {
        B64.encode(self.keypair.sk.sign(message, None).as_ref())
    }
}

fn decode32(s: &str) -> Option<[u8; 32]> {
    B64.decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("usepod-edge-id-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn creates_then_reloads_same_identity_with_modes() {
        let dir = tmpdir("create");
        let path = dir.join("sub/identity.key");
        let (id, created) = Identity::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let (again, created) = Identity::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.public_b64(), id.public_b64());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reads_usepod_agent_format_and_round_trips() {
        let seed = [7u8; 32];
        let kp = KeyPair::from_seed(Seed::new(seed));
        let text = format!(
            "{BEGIN}\nversion: 1\ncreated: 2026-11-22T05:31:50.498567669+00:00\nsecret: {}\npublic: {}\nprovider_id: prov-abc\nfuture: kept\n{END}\n",
            B64.encode(seed),
            B64.encode(kp.pk.as_ref())
        );
        let id = Identity::parse(Path::new("k"), text.as_bytes()).unwrap();
        assert_eq!(id.provider_id(), Some("prov-abc"));
        assert_eq!(id.render(), text);
        let sig = B64.decode(id.sign_b64(b"nonce")).unwrap();
        kp.pk
            .verify(
                b"nonce",
                &ed25519_compact::Signature::from_slice(&sig).unwrap(),
            )
            .unwrap();
        assert_eq!(id.sign_b64(b"x").len(), 88);
        assert_eq!(id.public_b64().len(), 44);
    }

    #[test]
    fn refuses_corrupt_truncated_and_mismatched_files() {
        let good = Identity::generate(Path::new("k")).render();
        let other = Identity::generate(Path::new("k")).render();
        let public_line = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("public:"))
                .unwrap()
                .to_owned()
        };
        let mismatched = good.replace(&public_line(&good), &public_line(&other));
        let cases: Vec<(String, &str)> = vec![
            (good[..good.len() / 2].to_owned(), "truncated"),
            (String::new(), "first line"),
            (good.replace("version: 1", "version: 2"), "version"),
            (good.replace("secret:", "secrets:"), "missing `secret:`"),
            (good.replace("public: ", "public: !!"), "`public`"),
        ];
        for (text, needle) in cases {
            let e = Identity::parse(Path::new("/x/identity.key"), text.as_bytes()).unwrap_err();
            let shown = e.to_string();
            assert!(
                shown.contains("/x/identity.key") && shown.contains(needle),
                "{shown}"
            );
        }
        assert!(matches!(
            Identity::parse(Path::new("k"), mismatched.as_bytes()),
            Err(IdentityError::Mismatch { .. })
        ));
        assert!(Identity::parse(Path::new("k"), &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn corrupt_file_is_never_replaced() {
        let dir = tmpdir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("identity.key");
        fs::write(&path, b"garbage").unwrap();
        assert!(Identity::load_or_create(&path).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"garbage");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn provider_id_is_persisted_once() {
        let dir = tmpdir("pid");
        let path = dir.join("identity.key");
        let (mut id, _) = Identity::load_or_create(&path).unwrap();
        assert!(id.set_provider_id("prov-1").unwrap());
        assert!(!id.set_provider_id("prov-1").unwrap());
        assert_eq!(Identity::load(&path).unwrap().provider_id(), Some("prov-1"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let id = Identity::generate(Path::new("k"));
        let seed = B64.encode(id.keypair.sk.seed().as_ref());
        assert!(!format!("{id:?}").contains(&seed));
    }
}
