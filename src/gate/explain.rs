//! `validate`'s account of the operator's rules: schedule and zone, local first, the
//! guards, the pause file.

use super::decision::{schedule_state, unix_of};
use super::{control, tz};
use crate::clock::rfc3339;
use crate::config::Config;
use crate::host::Host;

/// `validate`'s account of the operator's rules.
pub fn explain_config(config: &Config, host: &Host) -> Vec<String> {
    let mut out = Vec::new();
    let found = tz::system(&host.env);
    if config.schedule.is_empty() {
        out.push("schedule: none (serving at all hours)".to_string());
    } else {
        let wall = host.clock.wall();
        if let Some(s) = schedule_state(&config.schedule, &found.zone, wall) {
            out.push(format!("schedule: {}", s.text));
        }
        let (off, abbr) = found.zone.offset_at(unix_of(wall));
        out.push(format!(
            "schedule time zone: {} ({abbr}, UTC{}{:02}:{:02})",
            found.zone.name,
            if off < 0 { '-' } else { '+' },
            off.unsigned_abs() / 3600,
            off.unsigned_abs() % 3600 / 60
        ));
        if let Some(w) = found.warning {
            out.push(format!("warning: {w}"));
        }
    }
    let lf = &config.local_first;
    out.push(if lf.enabled {
        format!(
            "local first: on; foreign load for {}s stops jobs, {}s of quiet brings them back; GPU busy at {}%",
            lf.busy.as_secs_f64(),
            lf.idle.as_secs_f64(),
            lf.gpu_busy_pct
        )
    } else {
        "local first: off".to_string()
    });
    let l = &config.limits;
    out.push(format!(
        "thermal guard: no new jobs above {} °C, again at {} °C or cooler",
        l.max_temp_c, l.resume_temp_c
    ));
    out.push(format!(
        "on battery: {}",
        if l.allow_battery {
            "serving"
        } else {
            "not serving"
        }
    ));
    let path = control::path(config);
    out.push(match control::read(&path) {
        Ok(Some(p)) => format!(
            "pause: paused since {} ({})",
            rfc3339(p.since),
            path.display()
        ),
        Ok(None) => format!(
            "pause: not paused (`usepod-edge pause` writes {})",
            path.display()
        ),
        Err(e) => format!("pause: {e}"),
    });
    out
}
