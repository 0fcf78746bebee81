//! Serving windows: `{days, from, to}` in local wall-clock time, parsed for the
//! config and judged as pure functions of a local time (minutes since the local epoch),
//! so the rules are tested without a clock or a zone.
//!
//! A window belongs to the day it starts on: `Mon-Fri 22:00-07:00` serves from Friday
//! 22:00 to Saturday 07:00, and not on Monday before 07:00 unless Sunday is listed.

pub const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MINUTES_PER_DAY: i64 = 1440;
/// Far enough to cross any weekly pattern and a DST change.
const SCAN_DAYS: i64 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after local midnight; `to` may be 1440 (24:00). `to < from` runs
    /// past midnight into the next day.
    pub from: u16,
    pub to: u16,
}

/// The weekday (Monday = 0) of a day counted from 1970-01-01, a Thursday.
pub fn weekday(day: i64) -> usize {
    (day + 3).rem_euclid(7) as usize
}

fn day_index(name: &str) -> Option<usize> {
    let lower = name.trim().to_ascii_lowercase();
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    FULL.iter()
        .position(|f| lower.len() >= 3 && f.starts_with(&lower))
}

/// Why a schedule's days or times cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    NoDay,
    UnknownDay(String),
    /// Not `HH:MM` in range; `end`: 24:00 was allowed.
    BadTime {
        text: String,
        end: bool,
    },
}

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScheduleError::NoDay => f.write_str("names no day"),
            ScheduleError::UnknownDay(d) => write!(
                f,
                "unknown day {d:?} (Mon..Sun, a range such as Mon-Fri, or daily)"
            ),
            ScheduleError::BadTime { text, end } => write!(
                f,
                "must be a time HH:MM (00:00 to {}), got {text:?}",
                if *end { "24:00" } else { "23:59" }
            ),
        }
    }
}

impl std::error::Error for ScheduleError {}

// The config reports a problem as the text after its key.
impl From<ScheduleError> for String {
    fn from(e: ScheduleError) -> String {
        e.to_string()
    }
}

/// `Mon-Fri`, `Sat,Sun`, `Fri-Mon` (wraps), `daily`, or a list of those.
pub fn parse_days(items: &[&str]) -> Result<[bool; 7], ScheduleError> {
    let mut days = [false; 7];
    if items.is_empty() {
        return Err(ScheduleError::NoDay);
    }
    for item in items.iter().flat_map(|i| i.split(',')) {
        let item = item.trim();
        if matches!(item.to_ascii_lowercase().as_str(), "daily" | "all" | "*") {
            days = [true; 7];
            continue;
        }
        let unknown = |d: &str| ScheduleError::UnknownDay(d.to_owned());
        match item.split_once('-') {
            Some((a, b)) => {
                let a = day_index(a).ok_or_else(|| unknown(a))?;
                let b = day_index(b).ok_or_else(|| unknown(b))?;
                let mut d = a;
                loop {
                    days[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day_index(item).ok_or_else(|| unknown(item))?] = true,
        }
    }
    Ok(days)
}

/// `HH:MM` as minutes after midnight; `24:00` only where `end` allows it.
pub fn parse_time(text: &str, end: bool) -> Result<u16, ScheduleError> {
    let bad = || ScheduleError::BadTime {
        text: text.to_owned(),
        end,
    };
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let two = |s: &str| {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
    };
    let (h, m) = (two(h).ok_or_else(bad)?, two(m).ok_or_else(bad)?);
    let minutes = h * 60 + m;
    if m > 59 || minutes > 1440 || (minutes == 1440 && !end) {
        return Err(bad());
    }
    Ok(minutes)
}

impl Window {
    /// Whether this window covers local minute `minute` of day `day`.
    fn covers(&self, day: i64, minute: u16) -> bool {
        let today = self.days[weekday(day)];
        if self.from < self.to {
            today && (self.from..self.to).contains(&minute)
        } else {
            // Past midnight: tonight's start, or the tail of yesterday's window.
            (today && minute >= self.from) || (self.days[weekday(day - 1)] && minute < self.to)
        }
    }
}

/// Whether the schedule serves at local minute `t` (minutes since the local epoch).
pub fn serving_at(windows: &[Window], t: i64) -> bool {
    let day = t.div_euclid(MINUTES_PER_DAY);
    let minute = t.rem_euclid(MINUTES_PER_DAY) as u16;
    windows.iter().any(|w| w.covers(day, minute))
}

/// Every window edge within the scan range around day `day`, ascending.
fn edges(windows: &[Window], day: i64) -> Vec<i64> {
    let mut out: Vec<i64> = (day - SCAN_DAYS..=day + SCAN_DAYS)
        .flat_map(|d| {
            windows
                .iter()
                .flat_map(move |w| [w.from, w.to].map(|m| d * MINUTES_PER_DAY + i64::from(m)))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The next local minute after `t` at which serving starts or stops; None when it
/// never changes (every day all day).
pub fn next_change(windows: &[Window], t: i64) -> Option<i64> {
    let now = serving_at(windows, t);
    edges(windows, t.div_euclid(MINUTES_PER_DAY))
        .into_iter()
        .filter(|&e| e > t)
        .find(|&e| serving_at(windows, e) != now)
}

/// The local minute at or before `t` when the current state (serving or not) began.
pub fn last_change(windows: &[Window], t: i64) -> Option<i64> {
    let now = serving_at(windows, t);
    edges(windows, t.div_euclid(MINUTES_PER_DAY))
        .into_iter()
        .rev()
        .filter(|&e| e <= t)
        .find(|&e| serving_at(windows, e - 1) != now)
}

/// `Mon-Fri`, `Sat,Sun`, `Fri-Mon`, `daily`.
pub fn days_text(days: &[bool; 7]) -> String {
    if days.iter().all(|&d| d) {
        return "daily".into();
    }
    // Start after a gap so that a run across Sunday-Monday stays whole.
    let start = (0..7).find(|&i| !days[i]).map_or(0, |gap| (gap + 1) % 7);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for k in 0..7 {
        let d = (start + k) % 7;
        if !days[d] {
            continue;
        }
        match runs.last_mut() {
            Some((_, end)) if (*end + 1) % 7 == d => *end = d,
            _ => runs.push((d, d)),
        }
    }
    runs.iter()
        .flat_map(|&(a, b)| {
            let len = (b + 7 - a) % 7 + 1;
            match len {
                1 => vec![DAY_NAMES[a].to_string()],
                2 => vec![DAY_NAMES[a].to_string(), DAY_NAMES[b].to_string()],
                _ => vec![format!("{}-{}", DAY_NAMES[a], DAY_NAMES[b])],
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn hhmm(minute: i64) -> String {
    let m = minute.rem_euclid(MINUTES_PER_DAY + 1);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// `Mon-Fri 22:00-07:00 and Sat,Sun 00:00-24:00`.
pub fn describe(windows: &[Window]) -> String {
    windows
        .iter()
        .map(|w| {
            format!(
                "{} {}-{}",
                days_text(&w.days),
                hhmm(i64::from(w.from)),
                hhmm(i64::from(w.to))
            )
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// A local minute as the operator reads it next to `now`: `22:00` the same day,
/// else `Sat 07:00`.
pub fn when_text(now: i64, t: i64) -> String {
    let day = t.div_euclid(MINUTES_PER_DAY);
    let clock = hhmm(t.rem_euclid(MINUTES_PER_DAY));
    if day == now.div_euclid(MINUTES_PER_DAY) {
        clock
    } else {
        format!("{} {clock}", DAY_NAMES[weekday(day)])
    }
}

/// `serving Mon-Fri 22:00-07:00, now paused until 22:00`.
pub fn explain(windows: &[Window], now: i64) -> String {
    let state = if serving_at(windows, now) {
        "serving"
    } else {
        "paused"
    };
    let until = match next_change(windows, now) {
        Some(t) => format!(" until {}", when_text(now, t)),
        None => String::new(),
    };
    format!("serving {}, now {state}{until}", describe(windows))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local minute: day 0 is 1970-01-01 (Thursday); 2026-06-01 was a Monday.
    fn at(weekday_from_monday: i64, h: i64, m: i64) -> i64 {
        let monday = crate::clock::days_from_civil(2026, 6, 1);
        (monday + weekday_from_monday) * MINUTES_PER_DAY + h * 60 + m
    }

    fn w(days: &str, from: &str, to: &str) -> Window {
        Window {
            days: parse_days(&[days]).unwrap(),
            from: parse_time(from, false).unwrap(),
            to: parse_time(to, true).unwrap(),
        }
    }

    #[test]
    fn the_epoch_weekday_and_the_fixture_monday() {
        assert_eq!(weekday(0), 3, "1970-01-01 was a Thursday");
        assert_eq!(weekday(at(0, 0, 0) / MINUTES_PER_DAY), 0);
    }

    #[test]
    fn days_and_times_parse_strictly() {
        assert_eq!(
            parse_days(&["Mon-Fri"]).unwrap(),
            [true, true, true, true, true, false, false]
        );
        assert_eq!(
            parse_days(&["sat", "Sunday"]).unwrap(),
            [false, false, false, false, false, true, true]
        );
        assert_eq!(
            parse_days(&["Fri-Mon"]).unwrap(),
            [true, false, false, false, true, true, true]
        );
        assert_eq!(
            parse_days(&["Mon,Wed"]).unwrap(),
            [true, false, true, false, false, false, false]
        );
        assert_eq!(parse_days(&["daily"]).unwrap(), [true; 7]);
        assert!(parse_days(&["Mo"])
            .unwrap_err()
            .to_string()
            .contains("unknown day \"Mo\""));
        assert!(parse_days(&["Mon-Fry"]).is_err());
        assert!(parse_days(&[]).is_err());
        assert_eq!(parse_time("07:05", false), Ok(425));
        assert_eq!(parse_time("24:00", true), Ok(1440));
        for bad in [
            "24:00", "7:00", "07:60", "25:00", "0700", "", "07:00 ", "-1:00",
        ] {
            assert!(parse_time(bad, false).is_err(), "{bad:?}");
        }
        assert!(parse_time("24:01", true).is_err());
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_starts() {
        let s = [w("Mon-Fri", "22:00", "07:00")];
        assert!(
            !serving_at(&s, at(0, 6, 59)),
            "Monday early: Sunday is not listed"
        );
        assert!(!serving_at(&s, at(0, 21, 59)));
        assert!(serving_at(&s, at(0, 22, 0)));
        assert!(serving_at(&s, at(1, 6, 59)));
        assert!(!serving_at(&s, at(1, 7, 0)));
        assert!(
            serving_at(&s, at(5, 6, 59)),
            "Saturday morning ends Friday's window"
        );
        assert!(!serving_at(&s, at(5, 22, 0)));
        assert!(!serving_at(&s, at(6, 23, 0)));
    }

    #[test]
    fn next_and_last_changes() {
        let s = [w("Mon-Fri", "22:00", "07:00")];
        assert_eq!(next_change(&s, at(0, 12, 0)), Some(at(0, 22, 0)));
        assert_eq!(
            last_change(&s, at(0, 12, 0)),
            Some(at(-2, 7, 0)),
            "since Saturday 07:00"
        );
        assert_eq!(next_change(&s, at(0, 23, 0)), Some(at(1, 7, 0)));
        assert_eq!(last_change(&s, at(0, 23, 0)), Some(at(0, 22, 0)));
        assert_eq!(
            last_change(&s, at(0, 22, 0)),
            Some(at(0, 22, 0)),
            "at the edge itself"
        );
        assert_eq!(next_change(&s, at(4, 23, 0)), Some(at(5, 7, 0)));
        assert_eq!(
            next_change(&s, at(5, 12, 0)),
            Some(at(7, 22, 0)),
            "the weekend: next Monday"
        );
        // Overlapping and touching windows merge.
        let s = [
            w("daily", "08:00", "12:00"),
            w("daily", "12:00", "18:00"),
            w("Mon", "10:00", "13:00"),
        ];
        assert_eq!(next_change(&s, at(0, 9, 0)), Some(at(0, 18, 0)));
        assert_eq!(last_change(&s, at(0, 17, 0)), Some(at(0, 8, 0)));
        // Always serving: no change ever.
        let all = [w("daily", "00:00", "24:00")];
        assert!(serving_at(&all, at(3, 0, 0)));
        assert_eq!(next_change(&all, at(3, 0, 0)), None);
        assert_eq!(last_change(&all, at(3, 0, 0)), None);
    }

    #[test]
    fn explained_in_words() {
        let s = [w("Mon-Fri", "22:00", "07:00")];
        assert_eq!(
            explain(&s, at(0, 12, 0)),
            "serving Mon-Fri 22:00-07:00, now paused until 22:00"
        );
        assert_eq!(
            explain(&s, at(0, 23, 0)),
            "serving Mon-Fri 22:00-07:00, now serving until Tue 07:00"
        );
        assert_eq!(
            explain(&s, at(5, 12, 0)),
            "serving Mon-Fri 22:00-07:00, now paused until Mon 22:00"
        );
        let s = [
            w("Sat,Sun", "00:00", "24:00"),
            w("Fri-Mon", "18:00", "20:00"),
        ];
        assert_eq!(describe(&s), "Sat,Sun 00:00-24:00 and Fri-Mon 18:00-20:00");
        assert_eq!(
            days_text(&parse_days(&["Mon,Wed-Fri,Sun"]).unwrap()),
            "Wed-Fri,Sun,Mon"
        );
        assert_eq!(
            explain(&[w("daily", "00:00", "24:00")], at(0, 1, 0)),
            "serving daily 00:00-24:00, now serving"
        );
    }
}
