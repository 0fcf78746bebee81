//! Heat and power: the board's sensors read from a filesystem root (a fixture tree in
//! tests), and the pure rules that turn a reading into "stop admitting".

use crate::hardware::read_text;
use std::path::Path;

/// Thermal zone keys (as `hardware::thermal_readings` names them) that sit on the SoC
/// or the GPU: Tegra's `GPU-therm`/`gpu-thermal`, `CPU`, `SOC0..2`, `CV0..2`, `AUX`,
/// `BCPU`/`MCPU` (TX2) and `tj` (the junction maximum), and the `cpu-thermal`,
/// `soc-thermal`, `gpu-thermal` zones of other ARM boards. Board, diode, PLL,
/// always-on, fan-estimate, PMIC (a fixed fake reading) and x86 zones are left out:
/// they are not the silicon the jobs heat, or (x86 `x86_pkg_temp`, `acpitz`) they
/// are a desktop CPU whose own throttling is not this guard's business.
const GUARDED_PREFIXES: [&str; 8] = ["gpu", "cpu", "bcpu", "mcpu", "soc", "tj", "cv", "aux"];

pub fn guarded_zone(key: &str) -> bool {
    GUARDED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The hottest reading among `readings`, with its name.
pub fn hottest(readings: &[(String, f64)]) -> Option<(String, f64)> {
    readings
        .iter()
        .cloned()
        .fold(None, |best: Option<(String, f64)>, r| match best {
            Some(b) if b.1 >= r.1 => Some(b),
            _ => Some(r),
        })
}

/// Thermal guard with hysteresis: hot once a reading is above `max`, and hot until one
/// is `resume` or cooler. Without a reading nothing changes: a sensor that stops
/// answering does not end a guard it started.
pub fn heat_step(hot: bool, reading: Option<f64>, max: f64, resume: f64) -> bool {
    match reading {
        None => hot,
        Some(t) if hot => t > resume,
        Some(t) => t > max,
    }
}

/// One `/sys/class/power_supply/<name>` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Supply {
    pub name: String,
    /// `Mains`, `Battery`, `USB`, `UPS`, `Wireless`, ...
    pub kind: String,
    pub online: Option<bool>,
    /// Batteries: `Charging`, `Discharging`, `Full`, `Not charging`, `Unknown`.
    pub status: Option<String>,
    /// `Device` for a peripheral's battery (a mouse): not what powers the board.
    pub scope: Option<String>,
}

pub fn read_supplies(root: &Path) -> Vec<Supply> {
    let Ok(dir) = std::fs::read_dir(root.join("sys/class/power_supply")) else {
        return Vec::new();
    };
    let mut out: Vec<Supply> = dir
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            let field = |f: &str| read_text(&p.join(f)).map(|t| t.trim().to_string());
            Supply {
                name: e.file_name().to_string_lossy().into_owned(),
                kind: field("type").unwrap_or_default(),
                online: field("online").map(|o| o == "1"),
                status: field("status"),
                scope: field("scope"),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Whether the board runs from a battery: a system battery is discharging and no
/// external supply (mains, USB, wireless) is online. A board with no battery, or
/// whose supply the kernel does not describe, is not on battery; a battery that
/// discharges while the charger is plugged in (a laptop under load) is not either.
/// Some(what says so) when on battery.
pub fn on_battery(supplies: &[Supply]) -> Option<String> {
    let system = |s: &&Supply| s.scope.as_deref() != Some("Device");
    let external_online = supplies
        .iter()
        .filter(system)
        .any(|s| s.kind != "Battery" && s.online == Some(true));
    if external_online {
        return None;
    }
    supplies
        .iter()
        .filter(system)
        .find(|s| s.kind == "Battery" && s.status.as_deref() == Some("Discharging"))
        .map(|s| format!("{} is discharging and no external power is online", s.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_zones_are_the_silicon() {
        for k in [
            "gpu", "cpu", "soc0", "soc", "tj", "cv1", "aux", "bcpu", "mcpu",
        ] {
            assert!(guarded_zone(k), "{k}");
        }
        for k in [
            "ao",
            "pll",
            "tboard_tegra",
            "tdiode_tegra",
            "thermal-fan-est",
            "x86_pkg_temp",
            "acpitz",
            "iwlwifi_1",
        ] {
            assert!(!guarded_zone(k), "{k}");
        }
        let r = vec![
            ("cpu".to_string(), 50.0),
            ("gpu".into(), 71.5),
            ("tj".into(), 71.5),
        ];
        assert_eq!(hottest(&r), Some(("gpu".into(), 71.5)));
        assert_eq!(hottest(&[]), None);
    }

    #[test]
    fn heat_has_hysteresis() {
        let (max, resume) = (85.0, 75.0);
        assert!(
            !heat_step(false, Some(85.0), max, resume),
            "at the limit is not above it"
        );
        assert!(heat_step(false, Some(85.1), max, resume));
        assert!(
            heat_step(true, Some(80.0), max, resume),
            "cooling, not yet cool"
        );
        assert!(heat_step(true, Some(75.1), max, resume));
        assert!(
            !heat_step(true, Some(75.0), max, resume),
            "resume at or below"
        );
        assert!(
            heat_step(true, None, max, resume),
            "no reading keeps a guard"
        );
        assert!(!heat_step(false, None, max, resume));
    }

    fn supply(name: &str, kind: &str, online: Option<bool>, status: Option<&str>) -> Supply {
        Supply {
            name: name.into(),
            kind: kind.into(),
            online,
            status: status.map(String::from),
            scope: None,
        }
    }

    #[test]
    fn battery_rule() {
        let bat = supply("BAT0", "Battery", None, Some("Discharging"));
        let ac_off = supply("AC", "Mains", Some(false), None);
        let ac_on = supply("AC", "Mains", Some(true), None);
        assert_eq!(
            on_battery(&[ac_off.clone(), bat.clone()]).as_deref(),
            Some("BAT0 is discharging and no external power is online")
        );
        assert!(on_battery(std::slice::from_ref(&bat)).is_some());
        assert_eq!(
            on_battery(&[ac_on, bat.clone()]),
            None,
            "plugged in, discharging under load"
        );
        let usb = supply("usb", "USB", Some(true), None);
        assert_eq!(on_battery(&[usb, bat.clone()]), None);
        let charging = supply("BAT0", "Battery", None, Some("Charging"));
        assert_eq!(on_battery(&[ac_off.clone(), charging]), None);
        assert_eq!(on_battery(&[ac_off]), None, "no battery at all");
        assert_eq!(on_battery(&[]), None);
        let mouse = Supply {
            scope: Some("Device".into()),
            ..supply("hidpp_battery_0", "Battery", None, Some("Discharging"))
        };
        assert_eq!(on_battery(&[mouse]), None, "a peripheral's battery");
    }

    #[test]
    fn supplies_read_from_a_tree() {
        let root = std::env::temp_dir().join(format!("usepod-gate-psu-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, files) in [
            ("AC", vec![("type", "Mains\n"), ("online", "0\n")]),
            (
                "BAT0",
                vec![("type", "Battery\n"), ("status", "Discharging\n")],
            ),
        ] {
            let d = root.join("sys/class/power_supply").join(name);
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in files {
                std::fs::write(d.join(f), v).unwrap();
            }
        }
        let got = read_supplies(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            got,
            vec![
                supply("AC", "Mains", Some(false), None),
                supply("BAT0", "Battery", None, Some("Discharging"))
            ]
        );
        assert!(on_battery(&got).is_some());
        assert!(read_supplies(Path::new("/nonexistent")).is_empty());
    }
}
