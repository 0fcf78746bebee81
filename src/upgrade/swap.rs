//! Putting a new binary in place of the installed one: staged beside it (same
//! directory, so the final rename is atomic), the old one kept as `<bin>.prev`,
//! then one rename and an fsync of the directory.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn dir_of(bin: &Path) -> PathBuf {
    match bin.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sibling(bin: &Path, suffix: &str) -> PathBuf {
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir_of(bin).join(format!("{name}{suffix}"))
}

/// `<bin>.prev`: the binary an upgrade replaced, restored by a rollback.
pub fn prev_path(bin: &Path) -> PathBuf {
    sibling(bin, ".prev")
}

/// Where the new binary waits, beside `bin`, until it is checked and swapped in.
pub fn staged_path(bin: &Path) -> PathBuf {
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir_of(bin).join(format!(".{name}.new"))
}

/// Whether this process may create files beside `bin`: tried, not guessed
/// from modes (root, ACLs and read-only mounts all have their say).
pub fn check_writable(bin: &Path) -> io::Result<()> {
    let probe = dir_of(bin).join(format!(".usepod-edge.probe-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

/// How `bin` was installed, for the message when it cannot be replaced.
pub fn install_mode(bin: &Path) -> String {
    let init = if Path::new("/run/systemd/system").is_dir() {
        "systemd"
    } else if Path::new("/sbin/openrc-run").exists() {
        "OpenRC"
    } else {
        "SysV"
    };
    let owner = fs::metadata(bin).map(|m| m.uid()).unwrap_or(0);
    let me = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    if owner == 0 && me != 0 {
        format!(
            "a service install ({init}; `make install` puts the binary in /usr/local/bin, owned by root): run `sudo usepod-edge upgrade ...`"
        )
    } else {
        format!("the directory belongs to another user (uid {owner}; this is uid {me}): run the upgrade as that user or root")
    }
}

/// Writes `bytes` as the staged binary (mode 0755, fsynced).
pub fn stage(bin: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let staged = staged_path(bin);
    crate::atomic_file::write(&staged, bytes, 0o755)?;
    Ok(staged)
}

/// Swaps `staged` in as `bin`. With `keep_prev`, the installed binary becomes
/// `<bin>.prev` first (a hard link, replaced atomically); without, the
/// existing `.prev` stays (the last binary known to work).
pub fn swap(bin: &Path, staged: &Path, keep_prev: bool) -> io::Result<()> {
    if keep_prev {
        let tmp = sibling(bin, ".prev.tmp");
        let _ = fs::remove_file(&tmp);
        fs::hard_link(bin, &tmp)?;
        fs::rename(&tmp, prev_path(bin))?;
    }
    fs::rename(staged, bin)?;
    fs::File::open(dir_of(bin))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_keeping_the_previous_binary() {
        let dir = std::env::temp_dir().join(format!("usepod-edge-swap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("usepod-edge");
        fs::write(&bin, b"old").unwrap();
        check_writable(&bin).unwrap();
        let staged = stage(&bin, b"new").unwrap();
        assert_eq!(staged, dir.join(".usepod-edge.new"));
        swap(&bin, &staged, true).unwrap();
        assert_eq!(fs::read(&bin).unwrap(), b"new");
        assert_eq!(fs::read(prev_path(&bin)).unwrap(), b"old");
        // On probation, .prev stays the last binary known to work.
        let staged = stage(&bin, b"newer").unwrap();
        swap(&bin, &staged, false).unwrap();
        assert_eq!(fs::read(&bin).unwrap(), b"newer");
        assert_eq!(fs::read(prev_path(&bin)).unwrap(), b"old");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["usepod-edge", "usepod-edge.prev"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
