//! What only a Jetson has: its board, SoC, L4T release, integrated GPU load,
//! thermal zones and power mode.

use super::files::{device_tree, nul_list, read_capped, read_text};
use super::memory::MemInfo;
use super::power_mode::power_mode;
use super::section::insert_nonempty;
use super::thermal::temperatures;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// devfreq `of_node` names of the integrated GPU (jtop's find_igpu, plus
/// btop's gb10b): the GPU device directory, and so its `load` file, moves
/// between L4T releases, while this lookup finds it on all of them.
const IGPU_NODE_NAMES: [&str; 5] = ["gpu", "gp10b", "gv11b", "ga10b", "gb10b"];

/// Where the nvgpu `load` file sits when devfreq is not (yet) registered:
/// devfreq appears late after boot on some boards.
const LOAD_FALLBACKS: [&str; 9] = [
    "sys/devices/platform/bus@0/gpu.0/load",
    "sys/devices/platform/gpu.0/load",
    "sys/devices/gpu.0/load",
    "sys/devices/platform/bus@0/17000000.gpu/load",
    "sys/devices/platform/17000000.ga10b/load",
    "sys/devices/platform/17000000.gv11b/load",
    "sys/devices/17000000.gv11b/load",
    "sys/devices/17000000.gp10b/load",
    "sys/devices/57000000.gpu/load",
];

/// The `jetson` section of the description; None off Jetson.
pub(super) fn describe(
    root: &Path,
    dt_model: Option<String>,
    meminfo: &MemInfo,
) -> Option<Map<String, Value>> {
    let release = read_text(&root.join("etc/nv_tegra_release"));
    let compatible = device_tree(root, "compatible")
        .map(|raw| nul_list(&raw))
        .unwrap_or_default();
    let soc = tegra_soc(&compatible);
    // Either signal alone is enough: containers may lack nv_tegra_release,
    // and a board with a stripped device tree still has the release file.
    if release.is_none() && soc.is_none() {
        return None;
    }

    let mut out = Map::new();
    if let Some(model) = dt_model {
        out.insert("model".into(), json!(model));
    }
    if let Some(soc) = soc {
        out.insert("soc".into(), json!(soc));
    }
    if let Some(l4t) = release.as_deref().and_then(parse_l4t) {
        out.insert("l4t".into(), json!(l4t));
    }
    // The GPU has no memory of its own: the `memory` figures are its budget.
    out.insert("unified_memory".into(), json!(true));
    if let Some(kb) = meminfo.nvmap_used_kb {
        out.insert("nvmap_used_mb".into(), json!(kb / 1024));
    }
    if let Some(permille) = gpu_load_permille(root) {
        out.insert("gpu_load_pct".into(), json!(f64::from(permille) / 10.0));
    }
    let temperatures = temperatures(root);
    insert_nonempty(&mut out, "temperatures_c", temperatures);
    if let Some(mode) = power_mode(root) {
        out.insert("power_mode".into(), mode.to_json());
    }
    Some(out)
}

/// Whether the tree at `root` is a Jetson's, by the same two signals as [`describe`](super::describe).
pub fn is_jetson(root: &Path) -> bool {
    root.join("etc/nv_tegra_release").exists()
        || device_tree(root, "compatible")
            .map(|raw| nul_list(&raw))
            .is_some_and(|c| tegra_soc(&c).is_some())
}

/// The first `nvidia,tegraNNN` entry: `compatible` is most-specific first,
/// so this is `tegra234` on Orin rather than the family `tegra23x`.
pub(super) fn tegra_soc(compatible: &[String]) -> Option<String> {
    compatible
        .iter()
        .find_map(|entry| entry.strip_prefix("nvidia,tegra"))
        .map(|rest| format!("tegra{rest}"))
}

/// `R36.4.7` from `# R36 (release), REVISION: 4.7, GCID: ...`. Only the
/// major and revision are trusted: DATE and the field count vary by release.
pub(super) fn parse_l4t(release: &str) -> Option<String> {
    let line = release.lines().next()?;
    let rest = line.trim().strip_prefix("# R")?;
    let (major, after) = rest.split_at(rest.find(|c: char| !c.is_ascii_digit())?);
    if !after.starts_with(' ') {
        return None;
    }
    let revision = rest
        .split(',')
        .find_map(|field| field.trim().strip_prefix("REVISION:"))?
        .trim();
    let all_digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if !all_digits(major) || !revision.split('.').all(all_digits) {
        return None;
    }
    Some(format!("R{major}.{revision}"))
}

pub fn gpu_load_permille(root: &Path) -> Option<u32> {
    igpu_dir(root)
        .and_then(|dir| read_text(&dir.join("load")))
        .and_then(|text| parse_load(&text))
        .or_else(|| {
            LOAD_FALLBACKS
                .iter()
                .find_map(|rel| read_text(&root.join(rel)).and_then(|text| parse_load(&text)))
        })
}

pub(super) fn igpu_dir(root: &Path) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join("sys/class/devfreq"))
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    entries.sort();
    entries.into_iter().find_map(|entry| {
        let device = entry.join("device");
        let name = read_capped(&device.join("of_node/name"))?;
        let name = nul_list(&name).into_iter().next()?;
        IGPU_NODE_NAMES.contains(&name.as_str()).then_some(device)
    })
}

/// nvgpu prints the load in per-mille (0..=1000).
pub(super) fn parse_load(text: &str) -> Option<u32> {
    text.trim()
        .parse()
        .ok()
        .filter(|&permille| permille <= 1000)
}
