//! The CPU's model and core count, from cpuinfo and sysfs.

#[derive(Debug, Default, PartialEq)]
pub(super) struct CpuInfo {
    pub(super) model_name: Option<String>,
    pub(super) hardware: Option<String>,
    /// 32-bit ARM kernels name the core here instead of `model name`.
    pub(super) processor_label: Option<String>,
    /// Distinct (implementer, part) pairs in order of appearance; more than
    /// one on big.LITTLE boards.
    pub(super) parts: Vec<(u32, u32)>,
    pub(super) processors: usize,
}

pub(super) fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut implementer = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let first = |slot: &mut Option<String>| {
            if slot.is_none() && !value.is_empty() {
                *slot = Some(value.to_string());
            }
        };
        match key.trim() {
            "processor" => info.processors += 1,
            "model name" => first(&mut info.model_name),
            "Hardware" => first(&mut info.hardware),
            "Processor" => first(&mut info.processor_label),
            "CPU implementer" => implementer = parse_hex(value),
            "CPU part" => {
                if let (Some(imp), Some(part)) = (implementer, parse_hex(value)) {
                    if !info.parts.contains(&(imp, part)) {
                        info.parts.push((imp, part));
                    }
                }
            }
            _ => {}
        }
    }
    info
}

fn parse_hex(value: &str) -> Option<u32> {
    u32::from_str_radix(value.strip_prefix("0x")?, 16).ok()
}

/// A specific `model name` (x86) wins. L4T and other ARM kernels print a
/// generic `ARMv8 Processor rev 1 (v8l)`, so the core names from
/// `CPU part` come next; `Hardware` only after them because Raspberry Pi
/// kernels report `BCM2835` on every model. The board model is the last
/// resort.
pub(super) fn cpu_model(info: &CpuInfo, dt_model: Option<&str>) -> Option<String> {
    let generic = |model: &String| model.starts_with("ARMv") && model.contains("Processor");
    if let Some(model) = info.model_name.as_ref().filter(|m| !generic(m)) {
        return Some(model.clone());
    }
    let cores: Vec<String> = info
        .parts
        .iter()
        .filter_map(|&(imp, part)| arm_core_name(imp, part))
        .collect();
    if !cores.is_empty() {
        return Some(cores.join(" + "));
    }
    info.hardware
        .clone()
        .or_else(|| info.model_name.clone())
        .or_else(|| info.processor_label.clone())
        .or_else(|| dt_model.map(str::to_string))
}

/// MIDR implementer and part numbers, as util-linux lscpu names them. Only
/// cores that show up on edge boards and ARM servers.
fn arm_core_name(implementer: u32, part: u32) -> Option<String> {
    let (vendor, name) = match (implementer, part) {
        (0x41, 0xd03) => ("ARM", "Cortex-A53"),
        (0x41, 0xd04) => ("ARM", "Cortex-A35"),
        (0x41, 0xd05) => ("ARM", "Cortex-A55"),
        (0x41, 0xd07) => ("ARM", "Cortex-A57"),
        (0x41, 0xd08) => ("ARM", "Cortex-A72"),
        (0x41, 0xd09) => ("ARM", "Cortex-A73"),
        (0x41, 0xd0a) => ("ARM", "Cortex-A75"),
        (0x41, 0xd0b) => ("ARM", "Cortex-A76"),
        (0x41, 0xd0c) => ("ARM", "Neoverse-N1"),
        (0x41, 0xd0d) => ("ARM", "Cortex-A77"),
        (0x41, 0xd0e) => ("ARM", "Cortex-A76AE"),
        (0x41, 0xd40) => ("ARM", "Neoverse-V1"),
        (0x41, 0xd41) => ("ARM", "Cortex-A78"),
        (0x41, 0xd42) => ("ARM", "Cortex-A78AE"),
        (0x41, 0xd44) => ("ARM", "Cortex-X1"),
        (0x41, 0xd46) => ("ARM", "Cortex-A510"),
        (0x41, 0xd47) => ("ARM", "Cortex-A710"),
        (0x41, 0xd48) => ("ARM", "Cortex-X2"),
        (0x41, 0xd49) => ("ARM", "Neoverse-N2"),
        (0x41, 0xd4b) => ("ARM", "Cortex-A78C"),
        (0x41, 0xd4d) => ("ARM", "Cortex-A715"),
        (0x41, 0xd4e) => ("ARM", "Cortex-X3"),
        (0x41, 0xd4f) => ("ARM", "Neoverse-V2"),
        (0x41, 0xd80) => ("ARM", "Cortex-A520"),
        (0x41, 0xd81) => ("ARM", "Cortex-A720"),
        (0x4e, 0x000) => ("NVIDIA", "Denver"),
        (0x4e, 0x003) => ("NVIDIA", "Denver 2"),
        (0x4e, 0x004) => ("NVIDIA", "Carmel"),
        _ => return None,
    };
    Some(format!("{vendor} {name}"))
}

/// Counts a sysfs CPU list such as `0-3,6,8-11`. Used before counting
/// `processor` lines because a large host's cpuinfo outgrows the read cap.
pub(super) fn parse_cpu_list(text: &str) -> Option<usize> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut count = 0usize;
    for range in text.split(',') {
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse::<usize>().ok()?, hi.trim().parse().ok()?),
            None => {
                let cpu = range.trim().parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        count += hi.checked_sub(lo)? + 1;
    }
    Some(count)
}
