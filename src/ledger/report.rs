//! `usepod-edge ledger`: reads the ledger and its rotated files, and sums them.

use super::writer::rotated;
use super::{usdc, Entry, Tally};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NS_PER_S: i128 = 1_000_000_000;
const NS_PER_DAY: i128 = 86_400 * NS_PER_S;
/// Skipped lines named one by one in the report; the rest are only counted.
const SKIPS_NAMED: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Model,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "day" => Some(GroupBy::Day),
            "model" => Some(GroupBy::Model),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            GroupBy::Day => "day",
            GroupBy::Model => "model",
        }
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm,
/// the inverse of the one in clock.rs).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD` as days since the epoch.
fn parse_date(b: &[u8]) -> Option<i64> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&b[..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Pure: an RFC 3339 time (`2026-11-22T05:31:50.498567669+00:00`, `...Z`) as
/// nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = parse_date(&b[..10])?;
    let (h, mi, sec) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    // 60: a leap second, which RFC 3339 allows.
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: i128 = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        // Finer than a nanosecond is cut, not rounded.
        for (i, d) in frac[..n].iter().enumerate().take(9) {
            nanos += i128::from(d - b'0') * 10i128.pow(8 - i as u32);
        }
        rest = &frac[n..];
    }
    let offset_s: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), hh @ .., b':', m1, m2] if hh.len() == 2 => {
            let (oh, om) = (digits(hh)?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(i128::from(secs) * NS_PER_S + nanos)
}

/// A `--since` value that is none of the forms it takes (the value, as shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinceError(String);

impl std::fmt::Display for SinceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--since wants a date (2026-11-22, UTC), an RFC 3339 time (2026-11-22T05:00:00Z) \
             or a span back from now (7d, 12h); got {:?}",
            self.0
        )
    }
}

impl std::error::Error for SinceError {}

/// Pure: `--since` as nanoseconds since the epoch. `YYYY-MM-DD` is that UTC
/// midnight; an RFC 3339 time is itself; `7d` or `12h` count back from `now`.
pub fn parse_since(s: &str, now_ns: i128) -> Result<i128, SinceError> {
    let b = s.as_bytes();
    let span = match b.split_last() {
        Some((b'd', n)) => digits(n).map(|n| i128::from(n) * NS_PER_DAY),
        Some((b'h', n)) => digits(n).map(|n| i128::from(n) * 3600 * NS_PER_S),
        _ => None,
    };
    if let Some(span) = span {
        return Ok(now_ns - span);
    }
    if let Some(days) = parse_date(b) {
        return Ok(i128::from(days) * NS_PER_DAY);
    }
    parse_time(s).ok_or_else(|| SinceError(crate::untrusted::shown(s, 64).to_string()))
}

/// Before 1970 reads as 1970: the ledger holds nothing older.
fn system_time(ns: i128) -> SystemTime {
    let ns = ns.max(0);
    let secs = u64::try_from(ns / NS_PER_S).unwrap_or(u64::MAX);
    let d = Duration::new(secs, (ns % NS_PER_S) as u32);
    UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
}

/// The UTC day of an instant, `YYYY-MM-DD`.
fn day_of(ns: i128) -> String {
    crate::clock::rfc3339(system_time(ns))[..10].to_owned()
}

/// Pure: what the lines add up to.
#[derive(Debug, Default)]
pub struct Summary {
    pub total: Tally,
    pub groups: BTreeMap<String, Tally>,
    /// Lines that are not ledger entries: a torn last line after a crash, or
    /// anything else that does not parse.
    pub skipped: u64,
    pub skips: Vec<(PathBuf, u64)>,
    pub files: Vec<PathBuf>,
}

impl Summary {
    /// Adds line `n` (from 1) of `file`; an entry before `since` is left out.
    pub fn add_line(
        &mut self,
        file: &Path,
        n: u64,
        line: &[u8],
        since: Option<i128>,
        by: Option<GroupBy>,
    ) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let parsed = serde_json::from_slice::<Entry>(line)
            .ok()
            .and_then(|e| parse_time(&e.time).map(|t| (e, t)));
        let Some((e, t)) = parsed else {
            self.skipped += 1;
            if self.skips.len() < SKIPS_NAMED {
                self.skips.push((file.to_path_buf(), n));
            }
            return;
        };
        if since.is_some_and(|s| t < s) {
            return;
        }
        self.total.add(&e);
        match by {
            Some(GroupBy::Day) => self.groups.entry(day_of(t)).or_default().add(&e),
            Some(GroupBy::Model) => self.groups.entry(e.model.clone()).or_default().add(&e),
            None => {}
        }
    }

    /// Reads one ledger file line by line (it may be large; it is never held whole).
    pub fn read(
        &mut self,
        path: &Path,
        since: Option<i128>,
        by: Option<GroupBy>,
    ) -> io::Result<()> {
        let mut r = BufReader::new(std::fs::File::open(path)?);
        self.files.push(path.to_path_buf());
        let mut line = Vec::new();
        let mut n = 0;
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            n += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            self.add_line(path, n, text, since, by);
        }
    }
}

/// The ledger's files that exist, oldest first: `base.N` .. `base.1`, `base`.
pub fn ledger_files(base: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=10_000)
        .map(|n| rotated(base, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if base.exists() {
        files.push(base.to_path_buf());
    }
    files
}

fn tally_row(key: String, t: &Tally) -> Vec<String> {
    vec![
        key,
        t.jobs.to_string(),
        t.errors.to_string(),
        t.cancelled.to_string(),
        t.input_tokens.to_string(),
        t.output_tokens.to_string(),
        usdc(t.expected_micro_usdc),
    ]
}

/// Pure: the human report.
pub fn render_text(base: &Path, s: &Summary, since: Option<i128>, by: Option<GroupBy>) -> String {
    let mut out = String::new();
    let rotated = s
        .files
        .len()
        .saturating_sub(usize::from(s.files.last().is_some_and(|f| f == base)));
    let _ = write!(out, "ledger: {}", base.display());
    if rotated > 0 {
        let _ = write!(out, " and {rotated} rotated file(s)");
    }
    if s.files.is_empty() {
        let _ = write!(out, " (none yet: written when the first job finishes)");
    }
    out.push('\n');
    if let Some(t) = since {
        let _ = writeln!(out, "since: {}", crate::clock::rfc3339(system_time(t)));
    }
    let mut rows = vec![vec![
        by.map_or("", GroupBy::as_str).to_owned(),
        "jobs".into(),
        "errors".into(),
        "cancelled".into(),
        "tokens in".into(),
        "tokens out".into(),
        "expected USDC".into(),
    ]];
    for (k, t) in &s.groups {
        // Model ids come from backends and jobs: shown, never printed raw.
        rows.push(tally_row(crate::untrusted::shown(k, 64).to_string(), t));
    }
    rows.push(tally_row("total".into(), &s.total));
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = format!("{:<w$}", r[0], w = widths[0]);
        for (cell, w) in r.iter().zip(&widths).skip(1) {
            let _ = write!(line, "  {cell:>w$}");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if s.skipped > 0 {
        let named: Vec<String> = s
            .skips
            .iter()
            .map(|(f, n)| format!("{}:{n}", f.display()))
            .collect();
        let more = if s.skipped > named.len() as u64 {
            ", ..."
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "skipped {} unreadable line(s) (torn by a crash, or not a ledger entry): {}{more}",
            s.skipped,
            named.join(", ")
        );
    }
    out
}

/// One tally in the `--json` report: the total, or a group under its key.
#[derive(Debug)]
pub struct TallyJson<'a> {
    pub key: Option<&'a str>,
    pub tally: Tally,
}

impl Serialize for TallyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(key) = self.key {
            m.serialize_entry("key", key)?;
        }
        self.tally.serialize_fields(&mut m)?;
        m.end()
    }
}

/// A line that is not a ledger entry.
#[derive(Debug, Serialize)]
pub struct SkippedLine {
    pub file: String,
    pub line: u64,
}

/// The `--json` report.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    pub path: String,
    pub files: Vec<String>,
    pub since: Option<String>,
    pub by: Option<&'static str>,
    pub total: TallyJson<'a>,
    pub groups: Vec<TallyJson<'a>>,
    pub skipped_lines: u64,
    pub skipped: Vec<SkippedLine>,
}

/// Pure: the `--json` report.
pub fn render_json<'a>(
    base: &Path,
    s: &'a Summary,
    since: Option<i128>,
    by: Option<GroupBy>,
) -> JsonReport<'a> {
    JsonReport {
        path: base.display().to_string(),
        files: s.files.iter().map(|f| f.display().to_string()).collect(),
        since: since.map(|t| crate::clock::rfc3339(system_time(t))),
        by: by.map(GroupBy::as_str),
        total: TallyJson {
            key: None,
            tally: s.total,
        },
        groups: s
            .groups
            .iter()
            .map(|(k, t)| TallyJson {
                key: Some(k),
                tally: *t,
            })
            .collect(),
        skipped_lines: s.skipped,
        skipped: s
            .skips
            .iter()
            .map(|(f, n)| SkippedLine {
                file: f.display().to_string(),
                line: *n,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: &str = "2026-11-22T05:31:50.498567669+00:00";
    const T0_NS: i128 = 1_795_325_510 * NS_PER_S + 498_567_669;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_time(T0), Some(T0_NS));
        assert_eq!(
            parse_time("2026-11-22T05:31:50Z"),
            Some(1_795_325_510 * NS_PER_S)
        );
        assert_eq!(
            parse_time("2026-11-22t07:31:50.5+02:00"),
            Some(1_795_325_510 * NS_PER_S + 500_000_000)
        );
        assert_eq!(
            parse_time("2026-11-21 23:31:50-06:00"),
            Some(1_795_325_510 * NS_PER_S)
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Some(-NS_PER_S));
        assert_eq!(
            parse_time("2000-02-29T00:00:00Z"),
            Some(951_782_400 * NS_PER_S)
        );
        // Cut, not rounded, past nanoseconds.
        assert_eq!(parse_time("1970-01-01T00:00:00.0000000019Z"), Some(1));
        // The writer's own output reads back to the instant it was made from.
        let t = UNIX_EPOCH + Duration::new(1_795_325_510, 7);
        assert_eq!(
            parse_time(&crate::clock::rfc3339(t)),
            Some(1_795_325_510 * NS_PER_S + 7)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T05:31:50",
            "2026-11-22T05:31:50+0000",
            "2026-11-22T05:31:50.Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T05:60:00Z",
            "2026-11-22T05:31:50Zjunk",
            "2026-11-22T05:31:50+24:00",
            "2026-1x-22T05:31:50Z",
            "2026-11-22T05:31:5é+00:00",
            "+026-11-22T05:31:50Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn since_forms() {
        let now = T0_NS;
        assert_eq!(parse_since("2026-11-22", now), Ok(1_795_305_600 * NS_PER_S));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * NS_PER_DAY));
        assert_eq!(parse_since("12h", now), Ok(now - 12 * 3600 * NS_PER_S));
        assert_eq!(parse_since("0d", now), Ok(now));
        assert_eq!(parse_since(T0, now), Ok(T0_NS));
        for bad in [
            "",
            "d",
            "7",
            "-7d",
            "7w",
            "yesterday",
            "2026-11-31",
            "99999999999d",
        ] {
            let e = parse_since(bad, now).unwrap_err().to_string();
            assert!(e.starts_with("--since wants a date"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(day_of(T0_NS), "2026-11-22");
        assert_eq!(day_of(0), "1970-01-01");
        // Past what u64 nanoseconds hold (2554).
        let far = parse_time("2999-01-01T00:00:00.5Z").unwrap();
        assert_eq!(
            crate::clock::rfc3339(system_time(far)),
            "2999-01-01T00:00:00.500000000+00:00"
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-1000, 0, 59, 365, 11_016, 20_779, 100_000] {
            let s = day_of(i128::from(days) * NS_PER_DAY);
            let b = s.as_bytes();
            assert_eq!(parse_date(b), Some(days.max(0)), "{s}");
        }
    }

    fn line(time: &str, model: &str, tin: u64, tout: u64, micro: u64, outcome: &str) -> String {
        serde_json::to_string(&Entry {
            time: time.into(),
            job_id: "j".into(),
            model: model.into(),
            backend: super::super::Backend {
                kind: "ollama".into(),
                url: "http://127.0.0.1:11434/".into(),
            },
            input_tokens: tin,
            output_tokens: tout,
            duration_ms: 1,
            input_per_1m: 1,
            output_per_1m: 1,
            expected_micro_usdc: micro,
            outcome: outcome.into(),
        })
        .unwrap()
    }

    fn summary(lines: &[String], since: Option<i128>, by: Option<GroupBy>) -> Summary {
        let mut s = Summary::default();
        for (i, l) in lines.iter().enumerate() {
            s.add_line(Path::new("f"), i as u64 + 1, l.as_bytes(), since, by);
        }
        s
    }

    fn sample() -> Vec<String> {
        vec![
            line("2026-11-21T10:00:00Z", "a", 10, 20, 5, "done"),
            line("2026-11-21T23:59:59.999Z", "b", 1, 2, 3, "done"),
            line("2026-11-22T00:00:00Z", "a", 100, 0, 0, "backend_timeout"),
            line("2026-11-22T01:00:00+02:00", "a", 0, 7, 0, "cancelled"),
            line("2026-11-22T05:00:00Z", "b", 1000, 2000, 1_000_000, "done"),
        ]
    }

    #[test]
    fn sums_and_groups() {
        let s = summary(&sample(), None, Some(GroupBy::Day));
        assert_eq!(
            s.total,
            Tally {
                jobs: 5,
                done: 3,
                errors: 1,
                cancelled: 1,
                input_tokens: 1111,
                output_tokens: 2029,
                expected_micro_usdc: 1_000_008,
            }
        );
        let days: Vec<(&str, u64, u64)> = s
            .groups
            .iter()
            .map(|(k, t)| (k.as_str(), t.jobs, t.expected_micro_usdc))
            .collect();
        // 01:00+02:00 is the 21st in UTC.
        assert_eq!(days, [("2026-11-21", 3, 8), ("2026-11-22", 2, 1_000_000)]);
        let s = summary(&sample(), None, Some(GroupBy::Model));
        let models: Vec<(&str, u64, u64)> = s
            .groups
            .iter()
            .map(|(k, t)| (k.as_str(), t.jobs, t.errors))
            .collect();
        assert_eq!(models, [("a", 3, 1), ("b", 2, 0)]);
        assert!(summary(&sample(), None, None).groups.is_empty());
    }

    #[test]
    fn since_leaves_older_lines_out() {
        let since = parse_time("2026-11-22T00:00:00Z");
        let s = summary(&sample(), since, None);
        assert_eq!((s.total.jobs, s.total.expected_micro_usdc), (2, 1_000_000));
        assert_eq!(s.skipped, 0);
    }

    #[test]
    fn torn_and_foreign_lines_are_skipped_and_named() {
        let mut lines = sample();
        let whole = lines[4].clone();
        lines.insert(2, "not json".into());
        lines.insert(3, String::new());
        lines.insert(4, line("yesterday", "a", 1, 1, 1, "done"));
        lines.push(whole[..whole.len() / 2].to_owned());
        let s = summary(&lines, None, None);
        assert_eq!(s.total.jobs, 5);
        assert_eq!(s.total.expected_micro_usdc, 1_000_008);
        assert_eq!(s.skipped, 3);
        let at: Vec<u64> = s.skips.iter().map(|(_, n)| *n).collect();
        assert_eq!(at, [3, 5, 9]);
    }

    #[test]
    fn reads_files_oldest_first_and_tolerates_a_torn_tail() {
        let d = std::env::temp_dir().join(format!("usepod-edge-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let base = d.join("ledger.jsonl");
        let l = sample();
        std::fs::write(rotated(&base, 2), format!("{}\n", l[0])).unwrap();
        std::fs::write(rotated(&base, 1), format!("{}\n{}\n", l[1], l[2])).unwrap();
        let torn = &l[4][..40];
        std::fs::write(&base, format!("{}\n{torn}", l[3])).unwrap();
        // Past a gap nothing is read: .4 is not part of this ledger.
        std::fs::write(rotated(&base, 4), format!("{}\n", l[4])).unwrap();
        let files = ledger_files(&base);
        assert_eq!(files, [rotated(&base, 2), rotated(&base, 1), base.clone()]);
        let mut s = Summary::default();
        for f in &files {
            s.read(f, None, None).unwrap();
        }
        assert_eq!((s.total.jobs, s.total.expected_micro_usdc), (4, 8));
        assert_eq!(s.skips, [(base.clone(), 2)]);
        assert!(ledger_files(&d.join("none.jsonl")).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_text_report() {
        let base = Path::new("/var/lib/usepod-edge/ledger.jsonl");
        let mut lines = sample();
        lines.push("{\"time\":".into());
        let mut s = summary(&lines, None, Some(GroupBy::Day));
        s.files = vec![rotated(base, 1), base.to_path_buf()];
        let text = render_text(
            base,
            &s,
            parse_time("2026-11-20T00:00:00Z"),
            Some(GroupBy::Day),
        );
        assert_eq!(
            text,
            "ledger: /var/lib/usepod-edge/ledger.jsonl and 1 rotated file(s)\n\
             since: 2026-11-20T00:00:00.000000000+00:00\n\
             day         jobs  errors  cancelled  tokens in  tokens out  expected USDC\n\
             2026-11-21     3       0          1         11          29       0.000008\n\
             2026-11-22     2       1          0       1100        2000       1.000000\n\
             total          5       1          1       1111        2029       1.000008\n\
             skipped 1 unreadable line(s) (torn by a crash, or not a ledger entry): f:6\n"
        );
        let empty = render_text(base, &Summary::default(), None, None);
        assert_eq!(
            empty.lines().collect::<Vec<_>>(),
            [
                "ledger: /var/lib/usepod-edge/ledger.jsonl (none yet: written when the first job finishes)",
                "       jobs  errors  cancelled  tokens in  tokens out  expected USDC",
                "total     0       0          0          0           0       0.000000",
            ]
        );
    }

    #[test]
    fn model_ids_are_shown_escaped() {
        let lines = vec![line(
            "2026-11-21T10:00:00Z",
            "evil\x1b[2J\nmodel",
            1,
            1,
            0,
            "done",
        )];
        let s = summary(&lines, None, Some(GroupBy::Model));
        let text = render_text(Path::new("l"), &s, None, Some(GroupBy::Model));
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("evil\\x1b[2J\\nmodel"), "{text}");
        let v = serde_json::to_value(render_json(Path::new("l"), &s, None, Some(GroupBy::Model)))
            .unwrap();
        assert_eq!(
            v["groups"][0]["key"], "evil\x1b[2J\nmodel",
            "JSON escapes it itself"
        );
    }

    #[test]
    fn the_json_report() {
        let s = summary(&sample(), None, Some(GroupBy::Model));
        let report = render_json(Path::new("/l.jsonl"), &s, Some(0), Some(GroupBy::Model));
        let v = serde_json::to_value(report).unwrap();
        assert_eq!(v["since"], "1970-01-01T00:00:00.000000000+00:00");
        assert_eq!(v["by"], "model");
        assert_eq!(v["total"]["expected_micro_usdc"], 1_000_008);
        assert_eq!(v["total"]["expected_usdc"], "1.000008");
        assert_eq!(v["groups"][1]["key"], "b");
        assert_eq!(v["groups"][1]["done"], 2);
        assert_eq!(v["skipped_lines"], 0);
        assert_eq!(v["total"].get("key"), None, "the total has no key");
        assert_eq!(v["files"], serde_json::json!([]));
    }
}
