//! Files replaced whole or not at all: a temp file in the same directory with
//! its final mode from the first byte, fsync, rename, fsync the directory.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates the file's directory (mode 0700) when missing.
pub fn ensure_private_dir(path: &Path) -> io::Result<()> {
    let dir = parent(path);
    if dir.exists() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// A file root writes into a directory someone else owns goes to that owner
/// (user unless root, and group): `sudo usepod-edge pair` into the service's
/// directories must leave files the service can read, as `make install` does.
fn take_dir_owner(file: &File, dir: &Path) -> io::Result<()> {
    let d = fs::metadata(dir)?;
    match new_owner(file.metadata()?.uid(), d.uid(), d.gid()) {
        (None, None) => Ok(()),
        (uid, gid) => std::os::unix::fs::fchown(file, uid, gid),
    }
}

/// The owner and group to give a file created by `writer_uid` in a directory owned by
/// `dir_uid:dir_gid`; `None` keeps that part as created. Only root hands files over
/// (nobody else could), and never to root.
fn new_owner(writer_uid: u32, dir_uid: u32, dir_gid: u32) -> (Option<u32>, Option<u32>) {
    if writer_uid != 0 {
        return (None, None);
    }
    (
        (dir_uid != 0).then_some(dir_uid),
        (dir_gid != 0).then_some(dir_gid),
    )
}

pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let attempt = || -> io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        take_dir_owner(&f, &dir)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    };
    attempt().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_root_hands_a_file_to_the_directorys_owner_and_never_to_root() {
        // (writer, dir owner, dir group) -> (new owner, new group)
        let cases = [
            ((0, 999, 998), (Some(999), Some(998))),
            ((0, 999, 0), (Some(999), None)),
            ((0, 0, 998), (None, Some(998))),
            ((0, 0, 0), (None, None)),
            ((1000, 999, 998), (None, None)),
            ((1000, 1000, 1000), (None, None)),
            ((1000, 0, 0), (None, None)),
        ];
        for ((writer, uid, gid), want) in cases {
            assert_eq!(
                new_owner(writer, uid, gid),
                want,
                "writer {writer}, directory {uid}:{gid}"
            );
        }
    }

    /// The handover for real, which takes root: CI runs as root, so there it always runs;
    /// elsewhere it says it was skipped.
    #[test]
    fn as_root_a_file_written_into_another_owners_directory_goes_to_that_owner() {
        let dir = std::env::temp_dir().join(format!("usepod-edge-owner-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        if fs::metadata(&dir).unwrap().uid() != 0 {
            fs::remove_dir_all(&dir).unwrap();
            assert!(
                !crate::host::ci(),
                "this test needs root, and CI runs the tests as root"
            );
            // Past libtest's capture, so the skip shows.
            let _ = writeln!(
                io::stdout(),
                "SKIPPED as_root_a_file_written_into_another_owners_directory_goes_to_that_owner: \
                 not root"
            );
            return;
        }
        std::os::unix::fs::chown(&dir, Some(65534), Some(65533)).unwrap();
        let path = dir.join("f.json");
        write(&path, b"x", 0o640).unwrap();
        let m = fs::metadata(&path).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65533));
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        // A replacement is handed over the same way.
        write(&path, b"y", 0o640).unwrap();
        let m = fs::metadata(&path).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), fs::read(&path).unwrap()),
            (65534, 65533, b"y".to_vec())
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replaces_whole_with_mode_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("usepod-edge-atomic-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("a/b.txt");
        ensure_private_dir(&path).unwrap();
        write(&path, b"one", 0o600).unwrap();
        write(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
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
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }
}
