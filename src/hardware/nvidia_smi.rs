//! Discrete NVIDIA GPUs as nvidia-smi describes them.

use super::command::run_command;
use serde::Serialize;
use serde_json::Number;
use std::time::Duration;

/// Capabilities wait on this, so a wedged driver must not hold up the session
/// for long; a healthy nvidia-smi answers well inside it.
pub(super) const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=name,memory.total,memory.used,utilization.gpu,temperature.gpu",
    "--format=csv,noheader,nounits",
];

/// nvidia-smi's view of each GPU (name, memory, utilization, temperature), off Tegra;
/// `program` is `nvidia-smi` or a path to it.
pub fn nvidia_smi(program: &str) -> Vec<Gpu> {
    run_command(program, &NVIDIA_SMI_ARGS, NVIDIA_SMI_TIMEOUT)
        .map(|text| parse_nvidia_smi(&text))
        .unwrap_or_default()
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
pub(super) fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
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
pub(super) fn smi_number(value: &str) -> Option<Number> {
    if let Ok(n) = value.parse::<i64>() {
        return Some(n.into());
    }
    crate::decimal::plain_decimal(value).and_then(Number::from_f64)
}
