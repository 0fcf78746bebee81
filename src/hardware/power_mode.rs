//! The Jetson power mode nvpmodel set, read from its files.

use super::files::read_text;
use crate::json_fields::json_fields;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

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

pub(super) fn parse_pmode(status: &str) -> Option<u32> {
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

pub(super) fn nvpmodel_name(conf: &str, id: u32) -> Option<String> {
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

pub(super) fn nvpmodel_default(conf: &str) -> Option<u32> {
    nvpmodel_lines(conf, "PM_CONFIG")
        .find_map(|pairs| pairs.iter().find(|(k, _)| *k == "DEFAULT")?.1.parse().ok())
}
