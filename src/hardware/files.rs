//! Reading procfs, sysfs and device-tree files under the root, capped.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// procfs and sysfs files are a few KiB; the cap keeps a fixture gone wrong
/// or an odd kernel file from costing memory.
pub(super) const READ_CAP: u64 = 64 * 1024;

pub(super) fn read_capped(path: &Path) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)
        .ok()?
        .take(READ_CAP)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

pub fn read_text(path: &Path) -> Option<String> {
    read_capped(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// `/proc/device-tree` is a link to this sysfs directory; reading both
/// covers containers that mount only one of them.
pub(super) fn device_tree(root: &Path, name: &str) -> Option<Vec<u8>> {
    read_capped(&root.join("proc/device-tree").join(name))
        .or_else(|| read_capped(&root.join("sys/firmware/devicetree/base").join(name)))
}

/// Device-tree strings end in NUL and string lists are NUL-separated.
pub(super) fn nul_list(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .map(|part| String::from_utf8_lossy(part).trim().to_string())
        .filter(|part| !part.is_empty())
        .collect()
}
