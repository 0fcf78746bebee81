//! Thermal zone readings, by zone type.

use super::files::read_text;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Offline Tegra sensors read -256 °C; nothing running an agent is colder
/// than -40 °C, so anything at or below it is not a reading.
const MIN_VALID_MILLI_C: i64 = -40_000;

pub(super) fn temperatures(root: &Path) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, celsius) in thermal_readings(root) {
        out.entry(key).or_insert(json!(celsius));
    }
    out
}

/// Every thermal zone that reads, in zone order, by key (`gpu`, `soc0`, `tj`, ...;
/// see [`zone_key`]). A key may repeat; the first zone of a key is the one described.
pub fn thermal_readings(root: &Path) -> Vec<(String, f64)> {
    let mut zones: Vec<(u32, PathBuf)> = std::fs::read_dir(root.join("sys/class/thermal"))
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let index = entry
                .file_name()
                .to_str()?
                .strip_prefix("thermal_zone")?
                .parse()
                .ok()?;
            Some((index, entry.path()))
        })
        .collect();
    zones.sort();
    let mut out = Vec::new();
    for (_, zone) in zones {
        let Some(key) = read_text(&zone.join("type")).and_then(|t| zone_key(&t)) else {
            continue;
        };
        // cv*-thermal reads fail with EAGAIN while the DLA/PVA is gated.
        if let Some(celsius) = read_text(&zone.join("temp")).and_then(|t| parse_millidegrees(&t)) {
            out.push((key, celsius));
        }
    }
    out
}

/// Zone types differ in case and suffix between L4T releases (`GPU-therm`
/// on R32/R35, `gpu-thermal` on R36+), so both map to `gpu`.
pub(super) fn zone_key(zone_type: &str) -> Option<String> {
    let lower = zone_type.trim().to_ascii_lowercase();
    let key = lower
        .strip_suffix("-thermal")
        .or_else(|| lower.strip_suffix("-therm"))
        .unwrap_or(&lower);
    // PMIC-Die only ever reports 100/120/140 °C thresholds, not a reading.
    if key.is_empty() || key == "pmic-die" {
        return None;
    }
    Some(key.to_string())
}

/// Millidegrees to °C with one decimal; more would be false precision.
pub(super) fn parse_millidegrees(text: &str) -> Option<f64> {
    let milli: i64 = text.trim().parse().ok()?;
    (milli > MIN_VALID_MILLI_C).then(|| (milli as f64 / 100.0).round() / 10.0)
}
