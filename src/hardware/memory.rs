//! Memory totals from meminfo.

#[derive(Debug, Default, PartialEq)]
pub(super) struct MemInfo {
    pub(super) total_kb: Option<u64>,
    pub(super) available_kb: Option<u64>,
    /// CPU/GPU shared buffers on Tegra kernels that export it.
    pub(super) nvmap_used_kb: Option<u64>,
}

pub(super) fn parse_meminfo(text: &str) -> MemInfo {
    let mut info = MemInfo::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key.trim() {
            "MemTotal" => &mut info.total_kb,
            "MemAvailable" => &mut info.available_kb,
            "NvMapMemUsed" => &mut info.nvmap_used_kb,
            _ => continue,
        };
        *slot = rest.split_whitespace().next().and_then(|n| n.parse().ok());
    }
    info
}
