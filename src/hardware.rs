//! Hardware description for the capabilities `metadata`.
//!
//! Everything is read from files under a root path so tests can point it at a
//! fixture tree (tests/fixtures/), and everything is best-effort: a file that
//! is missing, unreadable or malformed leaves its field out. Nothing here
//! returns an error or panics, because a description with holes is still
//! worth sending and a broken one must never stop the agent from connecting.
//!
//! NVML is deliberately not linked: Jetson boards answer NOT_SUPPORTED for
//! load, temperature and memory, and a dlopen would tie the static binary to
//! the driver's library. sysfs covers Jetson; `nvidia-smi` covers discrete
//! GPUs.

use crate::json_fields::json_fields;
use serde::Serialize;
use serde_json::{json, Map, Number, Value};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// procfs and sysfs files are a few KiB; the cap keeps a fixture gone wrong
/// or an odd kernel file from costing memory.
const READ_CAP: u64 = 64 * 1024;

/// Capabilities wait on this, so a wedged driver must not hold up the session
/// for long; a healthy nvidia-smi answers well inside it.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(2);

const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=name,memory.total,memory.used,utilization.gpu,temperature.gpu",
    "--format=csv,noheader,nounits",
];

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

/// Offline Tegra sensors read -256 °C; nothing running an agent is colder
/// than -40 °C, so anything at or below it is not a reading.
const MIN_VALID_MILLI_C: i64 = -40_000;

/// Describes the machine whose filesystem is at `root`. `nvidia-smi` is run
/// only when `root` is `/`, since its answer is about this machine and not
/// about a fixture tree.
pub fn describe(root: &Path) -> Value {
    if root == Path::new("/") {
        describe_with(root, &|program, args| {
            run_command(program, args, NVIDIA_SMI_TIMEOUT)
        })
    } else {
        describe_with(root, &|_, _| None)
    }
}

/// [`describe`] with the command runner supplied, so the nvidia-smi path is
/// testable with captured output. The runner gets a program and its
/// arguments and returns stdout of a successful run.
pub fn describe_with(root: &Path, run: &dyn Fn(&str, &[&str]) -> Option<String>) -> Value {
    let cpuinfo = read_text(&root.join("proc/cpuinfo"))
        .map(|text| parse_cpuinfo(&text))
        .unwrap_or_default();
    let meminfo = read_text(&root.join("proc/meminfo"))
        .map(|text| parse_meminfo(&text))
        .unwrap_or_default();
    let dt_model = device_tree(root, "model")
        .map(|raw| nul_list(&raw))
        .and_then(|list| list.into_iter().next());

    let mut out = Map::new();

    let mut cpu = Map::new();
    if let Some(model) = cpu_model(&cpuinfo, dt_model.as_deref()) {
        cpu.insert("model".into(), json!(model));
    }
    let cores = read_text(&root.join("sys/devices/system/cpu/online"))
        .and_then(|text| parse_cpu_list(&text))
        .or((cpuinfo.processors > 0).then_some(cpuinfo.processors));
    if let Some(cores) = cores {
        cpu.insert("cores".into(), json!(cores));
    }
    insert_nonempty(&mut out, "cpu", cpu);

    let mut memory = Map::new();
    if let Some(kb) = meminfo.total_kb {
        memory.insert("total_mb".into(), json!(kb / 1024));
    }
    if let Some(kb) = meminfo.available_kb {
        memory.insert("available_mb".into(), json!(kb / 1024));
    }
    insert_nonempty(&mut out, "memory", memory);

    if let Some(jetson) = jetson(root, dt_model, &meminfo) {
        out.insert("jetson".into(), Value::Object(jetson));
    } else if let Some(text) = run("nvidia-smi", &NVIDIA_SMI_ARGS) {
        // Only off Tegra: on Jetson nvidia-smi is absent (JetPack 4/5) or
        // answers [N/A] for everything (JetPack 6), so sysfs is the source.
        let gpus = parse_nvidia_smi(&text);
        if !gpus.is_empty() {
            out.insert("gpus".into(), json!(gpus));
        }
    }

    Value::Object(out)
}

fn jetson(root: &Path, dt_model: Option<String>, meminfo: &MemInfo) -> Option<Map<String, Value>> {
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

/// Whether the tree at `root` is a Jetson's, by the same two signals as [`describe`].
pub fn is_jetson(root: &Path) -> bool {
    root.join("etc/nv_tegra_release").exists()
        || device_tree(root, "compatible")
            .map(|raw| nul_list(&raw))
            .is_some_and(|c| tegra_soc(&c).is_some())
}

json_fields! {
    /// A Jetson power mode (nvpmodel): its id and, when the config names it, its name.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
    pub struct PowerMode {
        pub id: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub name: Option<String>,
    }
}

impl PowerMode {
    /// As the capabilities' hardware description and the state file show it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The power mode nvpmodel set, from its files rather than `nvpmodel -q` (which some
/// releases run only as root): `/var/lib/nvpmodel/status` holds the mode last set
/// (`pmode:0002`, maybe followed by ` fmode:...`), and without it the board booted
/// into `/etc/nvpmodel.conf`'s `PM_CONFIG DEFAULT`. The name comes from that file's
/// `< POWER_MODEL ID=2 NAME=MAXN_SUPER >` line.
pub fn power_mode(root: &Path) -> Option<PowerMode> {
    let conf = read_text(&root.join("etc/nvpmodel.conf"));
    let id = read_text(&root.join("var/lib/nvpmodel/status"))
        .and_then(|s| parse_pmode(&s))
        .or_else(|| conf.as_deref().and_then(nvpmodel_default))?;
    let name = conf.as_deref().and_then(|c| nvpmodel_name(c, id));
    Some(PowerMode { id, name })
}

fn parse_pmode(status: &str) -> Option<u32> {
    status
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pmode:"))
        .and_then(|n| n.parse().ok())
}

/// `< KEY A=1 B=x >` lines of nvpmodel.conf whose KEY is `key`, as (name, value) pairs.
fn nvpmodel_lines<'a>(
    conf: &'a str,
    key: &'a str,
) -> impl Iterator<Item = Vec<(&'a str, &'a str)>> + 'a {
    conf.lines().filter_map(move |line| {
        let inner = line.trim().strip_prefix('<')?.strip_suffix('>')?;
        let mut words = inner.split_whitespace();
        (words.next()? == key).then(|| words.filter_map(|w| w.split_once('=')).collect())
    })
}

fn nvpmodel_name(conf: &str, id: u32) -> Option<String> {
    nvpmodel_lines(conf, "POWER_MODEL").find_map(|pairs| {
        let this = pairs
            .iter()
            .find(|(k, _)| *k == "ID")?
            .1
            .parse::<u32>()
            .ok()?;
        (this == id).then(|| {
            pairs
                .iter()
                .find(|(k, _)| *k == "NAME")
                .map(|(_, v)| v.to_string())
        })?
    })
}

fn nvpmodel_default(conf: &str) -> Option<u32> {
    nvpmodel_lines(conf, "PM_CONFIG")
        .find_map(|pairs| pairs.iter().find(|(k, _)| *k == "DEFAULT")?.1.parse().ok())
}

/// nvidia-smi's view of each GPU (name, memory, utilization, temperature), off Tegra;
/// `program` is `nvidia-smi` or a path to it.
pub fn nvidia_smi(program: &str) -> Vec<Gpu> {
    run_command(program, &NVIDIA_SMI_ARGS, NVIDIA_SMI_TIMEOUT)
        .map(|text| parse_nvidia_smi(&text))
        .unwrap_or_default()
}

fn insert_nonempty(out: &mut Map<String, Value>, key: &str, value: Map<String, Value>) {
    if !value.is_empty() {
        out.insert(key.into(), Value::Object(value));
    }
}

/// `/proc/device-tree` is a link to this sysfs directory; reading both
/// covers containers that mount only one of them.
fn device_tree(root: &Path, name: &str) -> Option<Vec<u8>> {
    read_capped(&root.join("proc/device-tree").join(name))
        .or_else(|| read_capped(&root.join("sys/firmware/devicetree/base").join(name)))
}

fn read_capped(path: &Path) -> Option<Vec<u8>> {
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

/// Device-tree strings end in NUL and string lists are NUL-separated.
fn nul_list(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .map(|part| String::from_utf8_lossy(part).trim().to_string())
        .filter(|part| !part.is_empty())
        .collect()
}

/// The first `nvidia,tegraNNN` entry: `compatible` is most-specific first,
/// so this is `tegra234` on Orin rather than the family `tegra23x`.
fn tegra_soc(compatible: &[String]) -> Option<String> {
    compatible
        .iter()
        .find_map(|entry| entry.strip_prefix("nvidia,tegra"))
        .map(|rest| format!("tegra{rest}"))
}

/// `R36.4.7` from `# R36 (release), REVISION: 4.7, GCID: ...`. Only the
/// major and revision are trusted: DATE and the field count vary by release.
fn parse_l4t(release: &str) -> Option<String> {
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

#[derive(Debug, Default, PartialEq)]
struct CpuInfo {
    model_name: Option<String>,
    hardware: Option<String>,
    /// 32-bit ARM kernels name the core here instead of `model name`.
    processor_label: Option<String>,
    /// Distinct (implementer, part) pairs in order of appearance; more than
    /// one on big.LITTLE boards.
    parts: Vec<(u32, u32)>,
    processors: usize,
}

fn parse_cpuinfo(text: &str) -> CpuInfo {
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
fn cpu_model(info: &CpuInfo, dt_model: Option<&str>) -> Option<String> {
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
fn parse_cpu_list(text: &str) -> Option<usize> {
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

#[derive(Debug, Default, PartialEq)]
struct MemInfo {
    total_kb: Option<u64>,
    available_kb: Option<u64>,
    /// CPU/GPU shared buffers on Tegra kernels that export it.
    nvmap_used_kb: Option<u64>,
}

fn parse_meminfo(text: &str) -> MemInfo {
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

fn igpu_dir(root: &Path) -> Option<PathBuf> {
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
fn parse_load(text: &str) -> Option<u32> {
    text.trim()
        .parse()
        .ok()
        .filter(|&permille| permille <= 1000)
}

fn temperatures(root: &Path) -> Map<String, Value> {
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
fn zone_key(zone_type: &str) -> Option<String> {
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
fn parse_millidegrees(text: &str) -> Option<f64> {
    let milli: i64 = text.trim().parse().ok()?;
    (milli > MIN_VALID_MILLI_C).then(|| (milli as f64 / 100.0).round() / 10.0)
}

/// One GPU as nvidia-smi describes it. Numbers keep the form nvidia-smi printed
/// (`8192`, `12.5`); a column it could not fill (`[N/A]`) is left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpu {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_total_mb: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_used_mb: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization_pct: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<Number>,
}

/// One [`Gpu`] per line of `nvidia-smi --query-gpu=name,memory.total,
/// memory.used,utilization.gpu,temperature.gpu --format=csv,noheader,nounits`.
fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    for line in text.lines() {
        // Split from the right so a comma in a GPU name cannot shift columns.
        let mut fields: Vec<&str> = line.rsplitn(5, ',').map(str::trim).collect();
        if fields.len() != 5 {
            continue;
        }
        fields.reverse();
        let name = fields[0];
        if name.is_empty() {
            continue;
        }
        gpus.push(Gpu {
            name: name.to_owned(),
            memory_total_mb: smi_number(fields[1]),
            memory_used_mb: smi_number(fields[2]),
            utilization_pct: smi_number(fields[3]),
            temperature_c: smi_number(fields[4]),
        });
    }
    gpus
}

/// An integer, or a plain decimal such as `12.5`; anything else (`[N/A]`) is None.
fn smi_number(value: &str) -> Option<Number> {
    if let Ok(n) = value.parse::<i64>() {
        return Some(n.into());
    }
    crate::decimal::plain_decimal(value).and_then(Number::from_f64)
}

/// Runs `program` and returns its stdout (capped) if it exits 0 within
/// `timeout`; a missing program, a failure or a hang all give `None`, and a
/// hung child is killed so it cannot pile up across reconnects.
fn run_command(program: &str, args: &[&str], timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    // Reading on a thread lets the wait below honour the deadline even if
    // the child never closes stdout.
    let (tx, rx) = mpsc::channel();
    let reader = thread::Builder::new()
        .name("nvidia-smi".into())
        .spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.take(READ_CAP).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    if reader.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    let output = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let output = output.ok()?;
                return status
                    .success()
                    .then(|| String::from_utf8_lossy(&output).into_owned());
            }
            Ok(None) if Instant::now() < deadline && output.is_ok() => {
                thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn no_commands(program: &str, _: &[&str]) -> Option<String> {
        panic!("{program} must not run for this tree")
    }

    #[test]
    fn smi_numbers_are_integers_or_plain_decimals() {
        assert_eq!(smi_number("45").map(Value::from), Some(json!(45)));
        assert_eq!(smi_number("12.5").map(Value::from), Some(json!(12.5)));
        assert_eq!(smi_number("-3.25").map(Value::from), Some(json!(-3.25)));
        assert_eq!(smi_number("0.05").map(Value::from), Some(json!(0.05)));
        for bad in [
            "[N/A]",
            "[Not Supported]",
            "",
            ".5",
            "5.",
            "1e3",
            "1.2.3",
            "nan",
            "-.5",
        ] {
            assert_eq!(smi_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn jetson_nano_r32() {
        let got = describe_with(&fixture("jetson-nano-r32.7.1"), &no_commands);
        assert_eq!(
            got,
            json!({
                "cpu": {"model": "ARM Cortex-A57", "cores": 4},
                "memory": {"total_mb": 3964, "available_mb": 3634},
                "jetson": {
                    "model": "NVIDIA Jetson Nano Developer Kit",
                    "soc": "tegra210",
                    "l4t": "R32.7.1",
                    "unified_memory": true,
                    "nvmap_used_mb": 786,
                    "gpu_load_pct": 0.0,
                    // PMIC-Die (a fake 100 °C) is left out.
                    "temperatures_c": {
                        "ao": 27.0, "cpu": 23.0, "gpu": 22.5, "pll": 20.5,
                        "thermal-fan-est": 22.5
                    }
                }
            })
        );
    }

    #[test]
    fn jetson_orin_nano_super_r36() {
        let got = describe_with(&fixture("jetson-orin-nano-super-r36.4.7"), &no_commands);
        assert_eq!(
            got,
            json!({
                "cpu": {"model": "ARM Cortex-A78AE", "cores": 6},
                "memory": {"total_mb": 7620, "available_mb": 5348},
                "jetson": {
                    "model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
                    "soc": "tegra234",
                    "l4t": "R36.4.7",
                    "unified_memory": true,
                    "gpu_load_pct": 4.0,
                    // cv0..cv2 have no readable temp (power-gated DLA/PVA).
                    "temperatures_c": {
                        "cpu": 54.9, "gpu": 55.5, "soc0": 56.2, "soc1": 56.7,
                        "soc2": 55.6, "tj": 56.7
                    },
                    "power_mode": {"id": 2, "name": "MAXN_SUPER"}
                }
            })
        );
    }

    #[test]
    fn jetson_agx_orin_r36_gated_gpu() {
        let got = describe_with(&fixture("jetson-agx-orin-64gb-r36.4.7"), &no_commands);
        assert_eq!(
            got["cpu"],
            json!({"model": "ARM Cortex-A78AE", "cores": 12})
        );
        // No MemAvailable in this meminfo: the field is simply absent.
        assert_eq!(got["memory"], json!({"total_mb": 62841}));
        let jetson = &got["jetson"];
        assert_eq!(jetson["model"], "NVIDIA Jetson AGX Orin Developer Kit");
        assert_eq!(jetson["soc"], "tegra234");
        assert_eq!(jetson["l4t"], "R36.4.7");
        assert_eq!(jetson["gpu_load_pct"], 12.0);
        // -256 °C is an offline sensor, not a reading.
        assert!(jetson["temperatures_c"].get("gpu").is_none());
        assert_eq!(jetson["temperatures_c"]["tj"], 56.7);
    }

    #[test]
    fn jetson_agx_orin_r35() {
        let got = describe_with(&fixture("jetson-agx-orin-32gb-r35.4.1"), &no_commands);
        assert_eq!(
            got,
            json!({
                "cpu": {"model": "ARM Cortex-A78AE", "cores": 8},
                "memory": {"total_mb": 30622, "available_mb": 29184},
                "jetson": {
                    "model": "Jetson AGX Orin Developer Kit",
                    "soc": "tegra234",
                    "l4t": "R35.4.1",
                    "unified_memory": true,
                    "gpu_load_pct": 0.0,
                    "temperatures_c": {
                        "cpu": 44.4, "soc0": 42.1, "soc1": 43.0, "soc2": 42.6,
                        "tj": 44.4, "tboard_tegra": 36.0, "tdiode_tegra": 35.8
                    }
                }
            })
        );
    }

    #[test]
    fn x86_host_without_nvidia() {
        let root = fixture("x86_64-no-nvidia");
        let got = describe_with(&root, &|_, _| None);
        assert_eq!(
            got,
            json!({
                "cpu": {"model": "AMD EPYC", "cores": 2},
                "memory": {"total_mb": 24103, "available_mb": 23137}
            })
        );
        // A fixture root never runs the real nvidia-smi.
        assert_eq!(describe(&root), got);
    }

    #[test]
    fn x86_host_with_nvidia_smi() {
        let got = describe_with(&fixture("x86_64-no-nvidia"), &|program, args| {
            assert_eq!(program, "nvidia-smi");
            assert_eq!(args, NVIDIA_SMI_ARGS);
            Some("NVIDIA GeForce RTX 4090, 24564, 8192, 87, 64\n".into())
        });
        assert_eq!(
            got["gpus"],
            json!([{
                "name": "NVIDIA GeForce RTX 4090",
                "memory_total_mb": 24564,
                "memory_used_mb": 8192,
                "utilization_pct": 87,
                "temperature_c": 64
            }])
        );
        assert!(got.get("jetson").is_none());
    }

    #[test]
    fn nvidia_smi_output() {
        // JetPack 6 Orin, and unified-memory GB10: [N/A] columns are dropped.
        assert_eq!(
            json!(parse_nvidia_smi(
                "Orin (nvgpu), [N/A], [N/A], [N/A], [N/A]\n"
            )),
            json!([{"name": "Orin (nvgpu)"}])
        );
        assert_eq!(
            json!(parse_nvidia_smi("NVIDIA GB10, [N/A], [N/A], 3, 41\n")),
            json!([{"name": "NVIDIA GB10", "utilization_pct": 3, "temperature_c": 41}])
        );
        let two = "NVIDIA A100-SXM4-80GB, 81920, 0, 0, 33\nNVIDIA A100-SXM4-80GB, 81920, 512, [Not Supported], 35\n";
        let gpus = parse_nvidia_smi(two);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].memory_used_mb, Some(512.into()));
        assert_eq!(gpus[1].utilization_pct, None);
        assert!(parse_nvidia_smi("").is_empty());
        assert!(parse_nvidia_smi("No devices were found\n").is_empty());
        // An empty answer adds no `gpus` key at all.
        let got = describe_with(&fixture("x86_64-no-nvidia"), &|_, _| Some(String::new()));
        assert!(got.get("gpus").is_none());
    }

    #[test]
    fn jetson_ignores_nvidia_smi() {
        let got = describe_with(&fixture("jetson-orin-nano-super-r36.4.7"), &|_, _| {
            Some("Orin (nvgpu), [N/A], [N/A], [N/A], [N/A]\n".into())
        });
        assert!(got.get("gpus").is_none());
    }

    #[test]
    fn missing_root_is_empty_not_an_error() {
        let got = describe_with(&fixture("does-not-exist"), &|_, _| None);
        assert_eq!(got, json!({}));
    }

    #[test]
    fn load_without_devfreq_uses_known_paths() {
        // glances' fixture layout: only platform/gpu.0/load, no devfreq class.
        let root = std::env::temp_dir().join(format!("usepod-hw-load-{}", std::process::id()));
        let dir = root.join("sys/devices/platform/gpu.0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("load"), "774\n").unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/nv_tegra_release"),
            "# R39 (release), REVISION: 2.0, GCID: 45755727, BOARD: generic, EABI: aarch64, DATE: Mon Jun  1 09:28:48 PM UTC 2026\n",
        )
        .unwrap();
        let got = describe_with(&root, &no_commands);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            got,
            json!({"jetson": {"l4t": "R39.2.0", "unified_memory": true, "gpu_load_pct": 77.4}})
        );
    }

    #[test]
    fn nvpmodel_power_mode() {
        let conf = "< POWER_MODEL ID=0 NAME=MAXN >\nX\n< POWER_MODEL ID=1 NAME=10W >\n< PM_CONFIG DEFAULT=1 >\n";
        assert_eq!(parse_pmode("pmode:0001\n"), Some(1));
        assert_eq!(parse_pmode("pmode:0002 fmode:quiet\n"), Some(2));
        assert_eq!(parse_pmode("mode 2"), None);
        assert_eq!(nvpmodel_name(conf, 1).as_deref(), Some("10W"));
        assert_eq!(nvpmodel_name(conf, 7), None);
        assert_eq!(nvpmodel_default(conf), Some(1));
        // Without a status file the board runs the config's default.
        let root = std::env::temp_dir().join(format!("usepod-hw-nvp-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/nvpmodel.conf"), conf).unwrap();
        let got = power_mode(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            got,
            Some(PowerMode {
                id: 1,
                name: Some("10W".into())
            })
        );
        assert_eq!(power_mode(&fixture("x86_64-no-nvidia")), None);
        assert!(is_jetson(&fixture("jetson-nano-r32.7.1")));
        assert!(!is_jetson(&fixture("x86_64-no-nvidia")));
    }

    #[test]
    fn igpu_found_through_devfreq() {
        // The of_node lookup, not the fallback list, finds each layout's GPU.
        let cases = [
            ("jetson-nano-r32.7.1", "57000000.gpu"),
            ("jetson-agx-orin-32gb-r35.4.1", "17000000.ga10b"),
            ("jetson-orin-nano-super-r36.4.7", "17000000.gpu"),
        ];
        for (tree, devfreq) in cases {
            let root = fixture(tree);
            assert_eq!(
                igpu_dir(&root),
                Some(root.join("sys/class/devfreq").join(devfreq).join("device")),
                "{tree}"
            );
        }
        assert_eq!(igpu_dir(&fixture("x86_64-no-nvidia")), None);
    }

    #[test]
    fn reads_are_capped() {
        let path = std::env::temp_dir().join(format!("usepod-hw-cap-{}", std::process::id()));
        std::fs::write(&path, vec![b'x'; 100 * 1024]).unwrap();
        let read = read_capped(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read.map(|bytes| bytes.len()), Some(64 * 1024));
    }

    #[test]
    fn l4t_release_lines() {
        let r32 = "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64, DATE: Fri Jun  9 04:25:08 UTC 2023\n";
        assert_eq!(parse_l4t(r32).as_deref(), Some("R32.7.4"));
        let r35 = "# R35 (release), REVISION: 2.1, GCID: 32413640, BOARD: t186ref, EABI: aarch64, DATE: x";
        assert_eq!(parse_l4t(r35).as_deref(), Some("R35.2.1"));
        assert_eq!(parse_l4t(""), None);
        assert_eq!(parse_l4t("# R36 (release), GCID: 1"), None);
        assert_eq!(parse_l4t("# R3x (release), REVISION: 4.7"), None);
        assert_eq!(parse_l4t("# R36 (release), REVISION: 4.x"), None);
    }

    #[test]
    fn device_tree_strings() {
        assert_eq!(nul_list(b"Jetson-AGX\0"), vec!["Jetson-AGX"]);
        let compatible = nul_list(
            b"nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0nvidia,tegra23x\0",
        );
        assert_eq!(tegra_soc(&compatible).as_deref(), Some("tegra234"));
        assert_eq!(
            tegra_soc(&nul_list(b"raspberrypi,4-model-b\0brcm,bcm2711\0")),
            None
        );
        // A tegra compatible alone marks a Jetson (no nv_tegra_release in a container).
        assert_eq!(
            tegra_soc(&nul_list(b"nvidia,jetson-cv\0nvidia,tegra210\0")).as_deref(),
            Some("tegra210")
        );
    }

    #[test]
    fn cpu_model_fallbacks() {
        let info = parse_cpuinfo("processor\t: 0\nHardware\t: BCM2835\nModel\t: Raspberry Pi\n");
        assert_eq!(cpu_model(&info, None).as_deref(), Some("BCM2835"));
        let big_little = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd05\n\nprocessor\t: 1\nCPU implementer\t: 0x41\nCPU part\t: 0xd05\n\nprocessor\t: 4\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n";
        let info = parse_cpuinfo(big_little);
        assert_eq!(info.processors, 3);
        assert_eq!(
            cpu_model(&info, None).as_deref(),
            Some("ARM Cortex-A55 + ARM Cortex-A76")
        );
        let carmel = "processor\t: 0\nmodel name\t: ARMv8 Processor rev 0 (v8l)\nCPU implementer\t: 0x4e\nCPU part\t: 0x004\n";
        assert_eq!(
            cpu_model(&parse_cpuinfo(carmel), None).as_deref(),
            Some("NVIDIA Carmel")
        );
        let unknown = "processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\nCPU implementer\t: 0x61\nCPU part\t: 0x022\n";
        assert_eq!(
            cpu_model(&parse_cpuinfo(unknown), None).as_deref(),
            Some("ARMv8 Processor rev 1 (v8l)")
        );
        let arm32 = "Processor\t: Cortex A57 Processor rev 1 (aarch64)\nprocessor\t: 0\n";
        assert_eq!(
            cpu_model(&parse_cpuinfo(arm32), None).as_deref(),
            Some("Cortex A57 Processor rev 1 (aarch64)")
        );
        assert_eq!(
            cpu_model(&CpuInfo::default(), Some("Jetson-AGX")).as_deref(),
            Some("Jetson-AGX")
        );
        assert_eq!(cpu_model(&CpuInfo::default(), None), None);
    }

    #[test]
    fn small_parsers() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0-3,6,8-11"), Some(9));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_load("1000\n"), Some(1000));
        assert_eq!(parse_load("1001\n"), None);
        assert_eq!(parse_load("\n"), None);
        assert_eq!(parse_millidegrees("-256000\n"), None);
        assert_eq!(parse_millidegrees("-39000\n"), Some(-39.0));
        assert_eq!(parse_millidegrees(""), None);
        assert_eq!(zone_key("GPU-therm").as_deref(), Some("gpu"));
        assert_eq!(zone_key("gpu-thermal\n").as_deref(), Some("gpu"));
        assert_eq!(zone_key("PMIC-Die"), None);
        assert_eq!(
            parse_meminfo("MemTotal:        4059136 kB\nMemAvailable: junk\n"),
            MemInfo {
                total_kb: Some(4059136),
                available_kb: None,
                nvmap_used_kb: None
            }
        );
    }

    #[test]
    fn subprocess_command_runner() {
        assert_eq!(
            run_command("sh", &["-c", "echo hi"], Duration::from_secs(5)).as_deref(),
            Some("hi\n")
        );
        assert_eq!(
            run_command("sh", &["-c", "echo hi; exit 3"], Duration::from_secs(5)),
            None
        );
        assert_eq!(
            run_command("/nonexistent/nvidia-smi", &[], Duration::from_secs(5)),
            None
        );
        let started = Instant::now();
        assert_eq!(
            run_command("sleep", &["10"], Duration::from_millis(200)),
            None
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // A child that closes stdout but keeps running still times out.
        let started = Instant::now();
        assert_eq!(
            run_command(
                "sh",
                &["-c", "exec >&-; sleep 10"],
                Duration::from_millis(200)
            ),
            None
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
