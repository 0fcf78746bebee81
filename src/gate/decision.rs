//! The gate's pure decision: each standing reason not to admit, in a fixed order, from
//! the inputs read at one instant.

use super::{control, local, tz};
use crate::schedule;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Paused,
    Schedule,
    LocalUse,
    Heat,
    Battery,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Paused => "paused",
            Reason::Schedule => "schedule",
            Reason::LocalUse => "local_use",
            Reason::Heat => "heat",
            Reason::Battery => "battery",
        }
    }

    /// The reason as the log says it stopped standing.
    pub fn noun(self) -> &'static str {
        match self {
            Reason::Paused => "the operator's pause",
            Reason::Schedule => "the serving schedule",
            Reason::LocalUse => "local use",
            Reason::Heat => "heat",
            Reason::Battery => "battery power",
        }
    }
}

/// One standing reason not to admit.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub reason: Reason,
    pub since: SystemTime,
    /// When it ends, where that is known (a schedule window; the end of a quiet spell).
    pub until: Option<SystemTime>,
    pub detail: String,
}

impl Block {
    /// The reason in a few words: all a refused job's message says, since the
    /// details (who uses the device, its temperature, its battery) are the
    /// operator's business, not the marketplace's.
    pub fn lead(&self) -> &'static str {
        match self.reason {
            Reason::Paused => "paused by the operator",
            Reason::Schedule => "outside the serving schedule",
            Reason::LocalUse => "the device is in local use",
            Reason::Heat => "too hot",
            Reason::Battery => "running on battery power",
        }
    }

    /// The reason with its details, for the log and `status`.
    pub fn text(&self) -> String {
        if self.detail.is_empty() {
            self.lead().to_string()
        } else {
            format!("{} ({})", self.lead(), self.detail)
        }
    }
}

/// Where the schedule stands at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleState {
    pub serving: bool,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// `serving Mon-Fri 22:00-07:00, now paused until 22:00`
    pub text: String,
}

pub fn wall_of(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        UNIX_EPOCH
    }
}

pub fn unix_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Pure: the schedule at `now` in `zone`; None without a schedule.
pub fn schedule_state(
    windows: &[schedule::Window],
    zone: &tz::Zone,
    now: SystemTime,
) -> Option<ScheduleState> {
    if windows.is_empty() {
        return None;
    }
    let local_min = zone.to_local(unix_of(now)).div_euclid(60);
    let at = |m: i64| wall_of(zone.to_utc(m * 60));
    Some(ScheduleState {
        serving: schedule::serving_at(windows, local_min),
        since: schedule::last_change(windows, local_min).map(at),
        until: schedule::next_change(windows, local_min).map(at),
        text: schedule::explain(windows, local_min),
    })
}

/// Everything the gate decides on, as read at one instant.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub pause: Option<control::Pause>,
    pub schedule: Option<ScheduleState>,
    pub local: Option<local::Yield>,
    /// (since, detail)
    pub heat: Option<(SystemTime, String)>,
    pub battery: Option<(SystemTime, String)>,
    pub allow_battery: bool,
}

/// The one decision: every reason that stands, in a fixed order. Admitting iff empty.
pub fn blocks(i: &Inputs, now: SystemTime) -> Vec<Block> {
    let mut out = Vec::new();
    if let Some(p) = &i.pause {
        let detail = if p.drain { "drain requested" } else { "" };
        out.push(Block {
            reason: Reason::Paused,
            since: p.since,
            until: None,
            detail: format!(
                "{detail}{}`usepod-edge resume` to serve again",
                if detail.is_empty() { "" } else { "; " }
            ),
        });
    }
    if let Some(s) = i.schedule.as_ref().filter(|s| !s.serving) {
        out.push(Block {
            reason: Reason::Schedule,
            since: s.since.unwrap_or(now),
            until: s.until,
            detail: s.text.clone(),
        });
    }
    if let Some(y) = &i.local {
        out.push(Block {
            reason: Reason::LocalUse,
            since: y.since,
            until: y.until,
            detail: y.detail.clone(),
        });
    }
    if let Some((since, detail)) = &i.heat {
        out.push(Block {
            reason: Reason::Heat,
            since: *since,
            until: None,
            detail: detail.clone(),
        });
    }
    if let Some((since, detail)) = i.battery.as_ref().filter(|_| !i.allow_battery) {
        out.push(Block {
            reason: Reason::Battery,
            since: *since,
            until: None,
            detail: format!("{detail}; set limits.allow_battery to serve anyway"),
        });
    }
    out
}

/// The `out_of_capacity` message while `blocks` stand.
pub fn refusal(blocks: &[Block]) -> Option<String> {
    (!blocks.is_empty()).then(|| {
        let why: Vec<&str> = blocks.iter().map(Block::lead).collect();
        format!("not admitting jobs: {}", why.join("; "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn no_reason_admits_and_every_reason_blocks_in_order() {
        let now = t(1_000);
        assert!(blocks(&Inputs::default(), now).is_empty());
        assert_eq!(refusal(&[]), None);
        let i = Inputs {
            pause: Some(control::Pause {
                since: t(10),
                drain: true,
            }),
            schedule: Some(ScheduleState {
                serving: false,
                since: Some(t(20)),
                until: Some(t(2_000)),
                text: "serving daily 22:00-07:00, now paused until 22:00".into(),
            }),
            local: Some(local::Yield {
                since: t(30),
                detail: "llamacpp at u: busy".into(),
                until: None,
            }),
            heat: Some((t(40), "gpu at 90.0 °C".into())),
            battery: Some((t(50), "BAT0 is discharging".into())),
            allow_battery: false,
        };
        let b = blocks(&i, now);
        let reasons: Vec<Reason> = b.iter().map(|b| b.reason).collect();
        assert_eq!(
            reasons,
            [
                Reason::Paused,
                Reason::Schedule,
                Reason::LocalUse,
                Reason::Heat,
                Reason::Battery
            ]
        );
        assert_eq!(b[1].until, Some(t(2_000)));
        assert_eq!(
            b[0].text(),
            "paused by the operator (drain requested; `usepod-edge resume` to serve again)"
        );
        assert_eq!(
            refusal(&b).unwrap(),
            "not admitting jobs: paused by the operator; outside the serving schedule; \
             the device is in local use; too hot; running on battery power"
        );
        assert_eq!(b[3].text(), "too hot (gpu at 90.0 °C)");
        // The operator may serve on battery; a schedule window that serves is no reason.
        let i = Inputs {
            allow_battery: true,
            schedule: Some(ScheduleState {
                serving: true,
                since: None,
                until: None,
                text: String::new(),
            }),
            battery: Some((t(50), "x".into())),
            ..Inputs::default()
        };
        assert!(blocks(&i, now).is_empty());
    }

    #[test]
    fn the_schedule_in_a_zone_with_dst() {
        let bytes = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tz/Test/DST-slim"),
        )
        .unwrap();
        let zone = tz::Zone::from_tzif("Test/DST", &bytes).unwrap();
        let w = vec![schedule::Window {
            days: schedule::parse_days(&["Mon-Fri"]).unwrap(),
            from: 22 * 60,
            to: 7 * 60,
        }];
        // Monday 2026-06-01 12:00 CEST (UTC+2) = 10:00 UTC.
        let day = crate::clock::days_from_civil(2026, 6, 1);
        let noon = t((day * 86_400 + 10 * 3600) as u64);
        let s = schedule_state(&w, &zone, noon).unwrap();
        assert!(!s.serving);
        assert_eq!(
            s.text,
            "serving Mon-Fri 22:00-07:00, now paused until 22:00"
        );
        assert_eq!(
            s.until,
            Some(t((day * 86_400 + 20 * 3600) as u64)),
            "22:00 CEST"
        );
        // Since Saturday 07:00 CEST.
        assert_eq!(s.since, Some(t(((day - 2) * 86_400 + 5 * 3600) as u64)));
        // Winter: Monday 2026-12-07 23:00 CET = 22:00 UTC, serving until Tue 07:00 CET.
        let day = crate::clock::days_from_civil(2026, 12, 7);
        let s = schedule_state(&w, &zone, t((day * 86_400 + 22 * 3600) as u64)).unwrap();
        assert!(s.serving);
        assert_eq!(s.until, Some(t(((day + 1) * 86_400 + 6 * 3600) as u64)));
        assert!(schedule_state(&[], &zone, noon).is_none());
    }
}
