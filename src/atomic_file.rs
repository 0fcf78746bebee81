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
    if file.metadata()?.uid() != 0 {
        return Ok(());
    }
    let d = fs::metadata(dir)?;
    let uid = (d.uid() != 0).then_some(d.uid());
    let gid = (d.gid() != 0).then_some(d.gid());
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, uid, gid)
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
    fn root_writing_into_another_owners_directory_hands_the_file_over() {
        let dir = std::env::temp_dir().join(format!("usepod-edge-owner-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let root = fs::metadata(&dir).unwrap().uid() == 0;
        if root {
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        }
        let path = dir.join("f.json");
        write(&path, b"x", 0o640).unwrap();
        let m = fs::metadata(&path).unwrap();
        let me = fs::metadata(&dir).unwrap();
        // As root the file follows the directory; otherwise it is simply ours.
        assert_eq!((m.uid(), m.gid()), (me.uid(), me.gid()), "root: {root}");
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
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
