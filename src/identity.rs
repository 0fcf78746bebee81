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
use std::io::{self, Read as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    /// Someone but its owner could read or replace the key, or its owner is not
    /// the user running the agent; the file is left as it is.
    NotPrivate {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    /// A value would break the file's one-line `key: value` format.
    BadValue { path: PathBuf, key: String },
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
            IdentityError::NotPrivate { path, problem, fix } => write!(
                f,
                "identity file {} is not private: {problem}; it holds the secret key, so it must belong to the user running usepod-edge with mode 0600: {fix}",
                path.display()
            ),
            IdentityError::BadValue { path, key } => write!(
                f,
                "identity file {}: not written, the value of `{}` cannot go in it (a line break or control character, or a provider_id other than 1-128 of A-Z a-z 0-9 . _ : -)",
                path.display(),
                crate::untrusted::shown(key, 40)
            ),
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

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
        match read_private(path)? {
            Some(bytes) => Ok((Identity::parse(path, &bytes)?, false)),
            None => {
                let id = Identity::generate(path);
                id.save()?;
                Ok((id, true))
            }
        }
    }

    /// Loads an existing key file without creating one.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        match read_private(path)? {
            Some(bytes) => Identity::parse(path, &bytes),
            None => Err(IdentityError::Io {
                path: path.into(),
                action: "read it",
                source: io::ErrorKind::NotFound.into(),
            }),
        }
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
        // Line numbers as an editor shows them, for the errors.
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty());
        if lines.next().map(|(_, l)| l) != Some(BEGIN) {
            return Err(corrupt(format!("first line is not {BEGIN}")));
        }
        let (mut version, mut created, mut secret, mut public, mut provider_id) =
            (None, None, None, None, None);
        let mut extra = Vec::new();
        // A repeated key is refused rather than resolved: which copy wins is
        // exactly what an injected line would try to decide.
        let mut seen: Vec<(String, usize)> = Vec::new();
        let mut ended = false;
        for (n, line) in lines.by_ref() {
            if line == END {
                ended = true;
                break;
            }
            let (k, v) = line.split_once(':').ok_or_else(|| {
                corrupt(format!(
                    "line {n} is not `key: value`: {:?}",
                    crate::untrusted::shown(line, 60)
                ))
            })?;
            let (k, v) = (k.trim(), v.trim().to_owned());
            if let Some((_, first)) = seen.iter().find(|(key, _)| key == k) {
                return Err(corrupt(format!(
                    "duplicate key `{}` on line {n} (first on line {first})",
                    crate::untrusted::shown(k, 40)
                )));
            }
            seen.push((k.to_owned(), n));
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

    /// The file's text, in usepod-agent's format. Refuses any value that would
    /// end its line early: the reader would take what follows for more keys.
    pub fn render(&self) -> Result<String, IdentityError> {
        let secret = B64.encode(self.keypair.sk.seed().as_ref());
        let public = self.public_b64();
        let mut fields: Vec<(&str, &str)> = vec![
            ("version", "1"),
            ("created", &self.created),
            ("secret", &secret),
            ("public", &public),
        ];
        if let Some(p) = &self.provider_id {
            fields.push(("provider_id", p));
        }
        fields.extend(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut s = format!("{BEGIN}\n");
        for (k, v) in fields {
            if has_control(k) || has_control(v) {
                return Err(IdentityError::BadValue {
                    path: self.path.clone(),
                    key: k.to_owned(),
                });
            }
            s += &format!("{k}: {v}\n");
        }
        Ok(s + END + "\n")
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
        let text = self.render()?;
        crate::atomic_file::ensure_private_dir(&self.path)
            .map_err(io_err("create its directory"))?;
        crate::atomic_file::write(&self.path, text.as_bytes(), 0o600).map_err(io_err("write it"))
    }

    /// Records the provider_id the coordinator assigned; writes the file only when
    /// it changed. Callers check [`valid_provider_id`] first; anything else is
    /// refused here too, so no path can put it in the file.
    pub fn set_provider_id(&mut self, id: &str) -> Result<bool, IdentityError> {
        if !valid_provider_id(id) {
            return Err(IdentityError::BadValue {
                path: self.path.clone(),
                key: "provider_id".into(),
            });
        }
        if self.provider_id.as_deref() == Some(id) {
            return Ok(false);
        }
        let old = self.provider_id.replace(id.to_owned());
        if let Err(e) = self.save() {
            // Memory keeps the new id so this session can go on; the file keeps the old.
            log::debug!(
                "provider_id {id} kept in memory only (previously {:?})",
                old.as_deref().map(|o| crate::untrusted::shown(o, 140))
            );
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

/// Longest provider_id kept; usepod's are `prov-` and a short id.
pub const MAX_PROVIDER_ID: usize = 128;

/// Whether a provider_id may be stored: `[A-Za-z0-9._:-]{1,128}` (docs/protocol.md,
/// "Handshake"). Nothing else reaches the identity file, whoever sends it.
pub fn valid_provider_id(id: &str) -> bool {
    (1..=MAX_PROVIDER_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The key file's bytes, or None when there is none. It is checked on the
/// handle it is read from, so it cannot be swapped between check and read.
fn read_private(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: path.into(),
        action: "read it",
        source,
    };
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    let me = running_uid().map_err(|source| IdentityError::Io {
        path: path.into(),
        action: "tell which user runs usepod-edge to check its owner",
        source,
    })?;
    check_private(path, meta.uid(), meta.mode(), me)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err)?;
    Ok(Some(bytes))
}

/// The rule ssh applies to private keys: owned by the user who uses it, and no
/// access for group or others. Root may use a key owned by another user: it can
/// read any file anyway, and `sudo usepod-edge pair` on a service install reads
/// the key the service user owns (docs/operations.md, "Installing as a service").
fn check_private(path: &Path, owner: u32, mode: u32, me: u32) -> Result<(), IdentityError> {
    match not_private(path, owner, mode, me) {
        None => Ok(()),
        Some((problem, fix)) => Err(IdentityError::NotPrivate {
            path: path.into(),
            problem,
            fix,
        }),
    }
}

/// The same rule for any file that steers the agent (the pause control file too):
/// what is wrong and the command that fixes it, or None when the file is private.
pub(crate) fn not_private(path: &Path, owner: u32, mode: u32, me: u32) -> Option<(String, String)> {
    let p = path.display();
    if owner != me && me != 0 {
        return Some((
            format!(
                "it belongs to uid {owner} (mode {:04o}) but usepod-edge runs as uid {me}",
                mode & 0o7777
            ),
            format!("run `chown {me} {p}` as root, or start usepod-edge as uid {owner}"),
        ));
    }
    if mode & 0o077 != 0 {
        return Some((
            format!(
                "mode {:04o} (owner uid {owner}) lets group or others read or write it",
                mode & 0o7777
            ),
            format!("run `chmod 600 {p}`"),
        ));
    }
    None
}

/// The effective uid, without libc: /proc says it; where /proc is missing, the
/// owner of a file this process creates is it too.
pub(crate) fn running_uid() -> io::Result<u32> {
    let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok())
    });
    if let Some(uid) = from_proc {
        return Ok(uid);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let probe =
        std::env::temp_dir().join(format!(".usepod-edge-uid-{}-{nanos}", std::process::id()));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    let uid = file.metadata().map(|m| m.uid());
    let _ = fs::remove_file(&probe);
    uid
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
        assert_eq!(id.render().unwrap(), text);
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
        let good = Identity::generate(Path::new("k")).render().unwrap();
        let other = Identity::generate(Path::new("k")).render().unwrap();
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
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Identity::load_or_create(&path),
            Err(IdentityError::Corrupt { .. })
        ));
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
    fn provider_ids_are_a_small_safe_alphabet() {
        for ok in ["prov-1", "p", "prov_a.b:c-D9", &"a".repeat(128)] {
            assert!(valid_provider_id(ok), "{ok}");
        }
        for bad in [
            "",
            "p1\nsecret: AAAA",
            "p1\r",
            "p 1",
            "p\x1b[31m",
            "p/1",
            "prov-é",
            "p\u{2028}",
            &"a".repeat(129),
        ] {
            assert!(!valid_provider_id(bad), "{bad:?}");
        }
    }

    fn with_provider_id_line(line: &str) -> String {
        let good = Identity::generate(Path::new("k")).render().unwrap();
        good.replace("public:", &format!("{line}\npublic:"))
    }

    #[test]
    fn a_duplicate_key_is_refused_naming_file_key_and_line() {
        let text = with_provider_id_line("secret: AAAA");
        let e = Identity::parse(Path::new("/x/identity.key"), text.as_bytes()).unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.contains("/x/identity.key")
                && shown.contains("duplicate key `secret` on line 5 (first on line 4)"),
            "{shown}"
        );
        assert!(!shown.contains("AAAA"), "values are never shown: {shown}");
        // Unknown keys too, and blank lines do not shift the numbers.
        let text = with_provider_id_line("note: a\n\nnote: b");
        let e = Identity::parse(Path::new("k"), text.as_bytes()).unwrap_err();
        assert!(
            e.to_string()
                .contains("duplicate key `note` on line 7 (first on line 5)"),
            "{e}"
        );
    }

    #[test]
    fn the_writer_refuses_values_that_would_add_lines() {
        let dir = tmpdir("inject");
        let path = dir.join("identity.key");
        let (mut id, _) = Identity::load_or_create(&path).unwrap();
        let before = fs::read(&path).unwrap();
        // Past the validation (as a future caller might be): the writer still refuses.
        id.provider_id = Some("p1\nsecret: AAAA".into());
        assert!(matches!(id.save(), Err(IdentityError::BadValue { .. })));
        id.provider_id = None;
        id.extra.push(("note".into(), "a\x1b[2Jb".into()));
        let e = id.save().unwrap_err().to_string();
        assert!(
            e.contains("`note`") && e.contains(path.to_str().unwrap()),
            "{e}"
        );
        id.extra.clear();
        let e = id.set_provider_id("p1\nsecret: AAAA").unwrap_err();
        assert!(e.to_string().contains("`provider_id`"), "{e}");
        assert_eq!(id.provider_id(), None, "not kept in memory either");
        assert_eq!(fs::read(&path).unwrap(), before, "the file never changed");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_file_must_be_private_to_its_owner() {
        let p = Path::new("/x/identity.key");
        assert!(check_private(p, 1000, 0o100600, 1000).is_ok());
        assert!(check_private(p, 1000, 0o100400, 1000).is_ok());
        for mode in [0o100644, 0o100640, 0o100604, 0o100660, 0o100602] {
            let e = check_private(p, 1000, mode, 1000).unwrap_err().to_string();
            assert!(
                e.contains("/x/identity.key")
                    && e.contains(&format!("mode {:04o}", mode & 0o7777))
                    && e.contains("chmod 600 /x/identity.key"),
                "{e}"
            );
        }
        let e = check_private(p, 1001, 0o100600, 1000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("uid 1001") && e.contains("chown 1000 /x/identity.key"),
            "{e}"
        );
        // Root may use the service user's key, but not a loose one.
        assert!(check_private(p, 999, 0o100600, 0).is_ok());
        assert!(check_private(p, 999, 0o100644, 0).is_err());
    }

    #[test]
    fn loading_checks_the_mode_of_the_file_it_reads() {
        let dir = tmpdir("mode");
        let path = dir.join("identity.key");
        let (id, _) = Identity::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Identity::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(matches!(
            Identity::load_or_create(&path),
            Err(IdentityError::NotPrivate { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Identity::load(&path).unwrap().public_b64(), id.public_b64());
        assert_eq!(running_uid().unwrap(), fs::metadata(&path).unwrap().uid());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let id = Identity::generate(Path::new("k"));
        let seed = B64.encode(id.keypair.sk.seed().as_ref());
        assert!(!format!("{id:?}").contains(&seed));
    }
}
