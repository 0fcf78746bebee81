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

mod command;
mod cpu;
mod files;
mod jetson;
mod memory;
mod nvidia_smi;
mod power_mode;
mod section;
mod thermal;

pub use files::read_text;
pub use jetson::{gpu_load_permille, is_jetson};
pub use nvidia_smi::{nvidia_smi, Gpu};
pub use power_mode::{power_mode, PowerMode};
pub use thermal::thermal_readings;

use command::run_command;
use cpu::{cpu_model, parse_cpu_list, parse_cpuinfo};
use files::{device_tree, nul_list};
use memory::parse_meminfo;
use nvidia_smi::{parse_nvidia_smi, NVIDIA_SMI_ARGS, NVIDIA_SMI_TIMEOUT};
use section::insert_nonempty;
use serde_json::{json, Map, Value};
use std::path::Path;

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

    if let Some(jetson) = jetson::describe(root, dt_model, &meminfo) {
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

#[cfg(test)]
mod tests;
