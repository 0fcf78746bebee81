//! The system's local time without a time-zone crate: TZif files (RFC 8536, versions 1
//! to 4) and POSIX TZ strings, which TZif footers use for every instant after the last
//! stored transition (zic's default `-b slim` files store none after the rules settle,
//! so the footer is what answers for today).
//!
//! Only UTC offsets are computed; leap seconds are ignored, as the system clock does.

use crate::clock::{civil_from_days, days_from_civil};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a time zone could not be read.
#[derive(Debug)]
pub enum TzError {
    /// TZif data or a TZ string that is not what it should be; says how.
    Malformed(String),
    /// A zone file that cannot be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A zone file whose contents are malformed.
    File { path: PathBuf, source: Box<TzError> },
    /// A `$TZ` value that names no zone file and is no TZ string either.
    Unknown {
        name: String,
        tzdir: PathBuf,
        posix: Box<TzError>,
    },
    /// The problem is with `$TZ`.
    Env(Box<TzError>),
}

impl fmt::Display for TzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TzError::Malformed(why) => f.write_str(why),
            TzError::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            TzError::File { path, source } => write!(f, "{}: {source}", path.display()),
            TzError::Unknown { name, tzdir, posix } => write!(
                f,
                "{name:?} is neither a zone under {} nor a TZ string ({posix})",
                tzdir.display()
            ),
            TzError::Env(e) => write!(f, "TZ: {e}"),
        }
    }
}

impl std::error::Error for TzError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TzError::Malformed(_) => None,
            TzError::Read { source, .. } => Some(source),
            TzError::File { source, .. } | TzError::Env(source) => Some(source.as_ref()),
            TzError::Unknown { posix, .. } => Some(posix.as_ref()),
        }
    }
}

// The parsers below say what is malformed in a sentence; `?` turns it into one.
impl From<&str> for TzError {
    fn from(why: &str) -> TzError {
        TzError::Malformed(why.to_owned())
    }
}

impl From<String> for TzError {
    fn from(why: String) -> TzError {
        TzError::Malformed(why)
    }
}

/// zoneinfo files are a few KiB; anything larger is not one.
const MAX_TZIF: u64 = 256 * 1024;
/// Where `$TZ` names such as `Europe/Berlin` are looked up (`$TZDIR` overrides it).
const ZONEINFO: &str = "/usr/share/zoneinfo";

#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalType {
    utoff: i32,
    abbr: String,
}

/// A time zone: transitions from a TZif file, then its footer rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// How the zone was named (`Europe/Berlin`, a path, a TZ string, `UTC`), for display.
    pub name: String,
    /// (UTC instant, index into `types`), ascending.
    transitions: Vec<(i64, usize)>,
    types: Vec<LocalType>,
    footer: Option<PosixTz>,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            transitions: Vec::new(),
            types: vec![LocalType {
                utoff: 0,
                abbr: "UTC".into(),
            }],
            footer: None,
        }
    }

    /// Seconds east of UTC at the UTC instant `t`, and the zone's abbreviation then.
    pub fn offset_at(&self, t: i64) -> (i32, &str) {
        let after_last = self.transitions.last().is_none_or(|&(at, _)| t >= at);
        if after_last {
            if let Some(f) = &self.footer {
                return f.offset_at(t);
            }
        }
        // Before the first transition, RFC 8536 says type 0 applies.
        let i = match self.transitions.partition_point(|&(at, _)| at <= t) {
            0 => 0,
            n => self.transitions[n - 1].1,
        };
        let lt = &self.types[i];
        (lt.utoff, &lt.abbr)
    }

    /// Local wall-clock seconds (since the local epoch) at the UTC instant `t`.
    pub fn to_local(&self, t: i64) -> i64 {
        t + i64::from(self.offset_at(t).0)
    }

    /// The UTC instant of a local wall-clock time. In a spring-forward gap the
    /// answer is an hour off the wall time (which does not exist); in the repeated
    /// autumn hour it is one of the two.
    pub fn to_utc(&self, local: i64) -> i64 {
        let guess = local - i64::from(self.offset_at(local).0);
        local - i64::from(self.offset_at(guess).0)
    }

    /// Parses a TZif file's bytes.
    pub fn from_tzif(name: &str, bytes: &[u8]) -> Result<Zone, TzError> {
        let v1 = Header::read(bytes, 0)?;
        let (header, at, time_size) = if v1.version >= 2 {
            let second = v1.block_len(4)?.checked_add(44).ok_or("sizes overflow")?;
            (Header::read(bytes, second)?, second + 44, 8)
        } else {
            (v1, 44, 4)
        };
        let mut r = Reader { bytes, at };
        let times: Vec<i64> = (0..header.timecnt)
            .map(|_| r.int(time_size))
            .collect::<Result<_, _>>()?;
        let idx: Vec<usize> = (0..header.timecnt)
            .map(|_| r.take(1).map(|b| usize::from(b[0])))
            .collect::<Result<_, _>>()?;
        let mut raw_types = Vec::with_capacity(header.typecnt);
        for _ in 0..header.typecnt {
            let utoff = r.int(4)? as i32;
            let b = r.take(2)?;
            raw_types.push((utoff, usize::from(b[1])));
        }
        let chars = r.take(header.charcnt)?;
        r.take(header.block_tail(time_size)?)?;
        if raw_types.is_empty() {
            return Err("no local time types".into());
        }
        if let Some(bad) = idx.iter().find(|&&i| i >= raw_types.len()) {
            return Err(format!("transition to local time type {bad}, which is not there").into());
        }
        if times.windows(2).any(|w| w[0] >= w[1]) {
            return Err("transition times are not ascending".into());
        }
        let types = raw_types
            .into_iter()
            .map(|(utoff, at)| {
                // ±25 h bounds any real offset; more is a corrupt file.
                if utoff.unsigned_abs() > 25 * 3600 {
                    return Err(format!("UTC offset {utoff} s is out of range").into());
                }
                let tail = chars.get(at..).ok_or("abbreviation index out of range")?;
                let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
                Ok(LocalType {
                    utoff,
                    abbr: String::from_utf8_lossy(&tail[..end]).into_owned(),
                })
            })
            .collect::<Result<Vec<_>, TzError>>()?;
        let footer = if header.version >= 2 {
            let rest = bytes.get(r.at..).unwrap_or_default();
            let text = rest
                .strip_prefix(b"\n")
                .and_then(|t| t.iter().position(|&c| c == b'\n').map(|end| &t[..end]))
                .ok_or("the footer is missing")?;
            let text = std::str::from_utf8(text).map_err(|_| "the footer is not text")?;
            // An empty footer means "no rule": the last type goes on.
            (!text.is_empty())
                .then(|| PosixTz::parse(text))
                .transpose()?
        } else {
            None
        };
        Ok(Zone {
            name: name.into(),
            transitions: times.into_iter().zip(idx).collect(),
            types,
            footer,
        })
    }

    /// A zone from a POSIX TZ string such as `CET-1CEST,M3.5.0,M10.5.0/3`.
    pub fn from_posix(text: &str) -> Result<Zone, TzError> {
        let tz = PosixTz::parse(text)?;
        Ok(Zone {
            name: text.into(),
            transitions: Vec::new(),
            types: vec![LocalType {
                utoff: tz.std.0,
                abbr: tz.std.1.clone(),
            }],
            footer: Some(tz),
        })
    }
}

struct Header {
    version: u8,
    isutcnt: usize,
    isstdcnt: usize,
    leapcnt: usize,
    timecnt: usize,
    typecnt: usize,
    charcnt: usize,
}

impl Header {
    fn read(bytes: &[u8], at: usize) -> Result<Header, TzError> {
        let h = bytes
            .get(at..at.checked_add(44).ok_or("sizes overflow")?)
            .ok_or("shorter than a TZif header")?;
        if &h[..4] != b"TZif" {
            return Err("not a TZif file (no TZif magic)".into());
        }
        let version = match h[4] {
            0 => 1,
            v @ b'2'..=b'4' => v - b'0',
            v => return Err(format!("unknown TZif version byte {v:#04x}").into()),
        };
        let n = |i: usize| {
            u32::from_be_bytes([h[20 + 4 * i], h[21 + 4 * i], h[22 + 4 * i], h[23 + 4 * i]])
                as usize
        };
        Ok(Header {
            version,
            isutcnt: n(0),
            isstdcnt: n(1),
            leapcnt: n(2),
            timecnt: n(3),
            typecnt: n(4),
            charcnt: n(5),
        })
    }

    /// The bytes after the abbreviations: leap records, then the two indicator arrays.
    fn block_tail(&self, time_size: usize) -> Result<usize, TzError> {
        let leap = self
            .leapcnt
            .checked_mul(time_size + 4)
            .ok_or("sizes overflow")?;
        leap.checked_add(self.isstdcnt)
            .and_then(|n| n.checked_add(self.isutcnt))
            .ok_or_else(|| "sizes overflow".into())
    }

    /// The data block's length, header excluded.
    fn block_len(&self, time_size: usize) -> Result<usize, TzError> {
        let parts = [
            self.timecnt.checked_mul(time_size + 1),
            self.typecnt.checked_mul(6),
            Some(self.charcnt),
            Some(self.block_tail(time_size)?),
        ];
        parts
            .into_iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p?))
            .ok_or_else(|| "sizes overflow".into())
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TzError> {
        let end = self.at.checked_add(n).ok_or("sizes overflow")?;
        let s = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(s)
    }

    /// A big-endian signed integer of 4 or 8 bytes.
    fn int(&mut self, size: usize) -> Result<i64, TzError> {
        let b = self.take(size)?;
        Ok(if size == 4 {
            i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        })
    }
}

/// When a POSIX TZ rule switches: the day, and the local time of day in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Day {
    /// `Jn`: day 1..=365, February 29 never counted.
    Julian1(u16),
    /// `n`: day 0..=365, February 29 counted.
    Julian0(u16),
    /// `Mm.w.d`: weekday d (0 = Sunday) of week w (5 = the last) of month m.
    Month(u32, u32, u32),
}

/// (seconds east of UTC, abbreviation)
type Offset = (i32, String);
/// A switch: the day, and the local time of day in seconds.
type Switch = (Day, i32);

#[derive(Debug, Clone, PartialEq, Eq)]
struct PosixTz {
    std: Offset,
    /// Daylight time: its offset, when it starts and when it ends.
    dst: Option<(Offset, Switch, Switch)>,
}

impl PosixTz {
    fn parse(text: &str) -> Result<PosixTz, TzError> {
        let bad = |why: &str| format!("TZ string {text:?}: {why}");
        let mut p = Cursor(text.as_bytes());
        let std_abbr = p.abbr().ok_or_else(|| bad("no standard time name"))?;
        let std_off = -p.hms(24).ok_or_else(|| bad("no standard time offset"))?;
        if p.0.is_empty() {
            return Ok(PosixTz {
                std: (std_off, std_abbr),
                dst: None,
            });
        }
        let dst_abbr = p.abbr().ok_or_else(|| bad("no daylight time name"))?;
        let dst_off = if p.0.first().is_some_and(|&c| c != b',') {
            -p.hms(24).ok_or_else(|| bad("bad daylight time offset"))?
        } else {
            std_off + 3600
        };
        // Without rules, the US ones, as glibc and zic assume.
        let (start, end) = if p.eat(b',') {
            let start = p.rule().ok_or_else(|| bad("bad start rule"))?;
            if !p.eat(b',') {
                return Err(bad("no end rule").into());
            }
            (start, p.rule().ok_or_else(|| bad("bad end rule"))?)
        } else {
            ((Day::Month(3, 2, 0), 7200), (Day::Month(11, 1, 0), 7200))
        };
        if !p.0.is_empty() {
            return Err(bad("unexpected text at the end").into());
        }
        Ok(PosixTz {
            std: (std_off, std_abbr),
            dst: Some(((dst_off, dst_abbr), start, end)),
        })
    }

    fn offset_at(&self, t: i64) -> (i32, &str) {
        let Some(((dst_off, dst_abbr), start, end)) = &self.dst else {
            return (self.std.0, &self.std.1);
        };
        let std_off = self.std.0;
        // The year as standard time counts it; each switch is in the local time
        // in force just before it.
        let (year, _, _) = civil_from_days((t + i64::from(std_off)).div_euclid(86_400));
        let on = rule_local(year, *start) - i64::from(std_off);
        let off = rule_local(year, *end) - i64::from(*dst_off);
        let dst = if on < off {
            on <= t && t < off
        } else {
            // Southern hemisphere: daylight time spans the new year.
            !(off <= t && t < on)
        };
        if dst {
            (*dst_off, dst_abbr)
        } else {
            (std_off, &self.std.1)
        }
    }
}

/// Local seconds since the epoch at which a rule switches in `year`.
fn rule_local(year: i64, (day, secs): Switch) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let jan1 = days_from_civil(year, 1, 1);
    let days = match day {
        Day::Julian1(n) => jan1 + i64::from(n) - 1 + i64::from(leap && n >= 60),
        Day::Julian0(n) => jan1 + i64::from(n),
        Day::Month(m, w, d) => {
            let first = days_from_civil(year, m, 1);
            // 1970-01-01 was a Thursday (4 with Sunday = 0).
            let first_wd = (first + 4).rem_euclid(7) as u32;
            let mut day = 1 + (d + 7 - first_wd) % 7 + (w - 1) * 7;
            let (ny, nm) = if m == 12 {
                (year + 1, 1)
            } else {
                (year, m + 1)
            };
            let month_len = (days_from_civil(ny, nm, 1) - first) as u32;
            while day > month_len {
                day -= 7;
            }
            first + i64::from(day) - 1
        }
    };
    days * 86_400 + i64::from(secs)
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn eat(&mut self, c: u8) -> bool {
        if self.0.first() == Some(&c) {
            self.0 = &self.0[1..];
            return true;
        }
        false
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &[u8] {
        let n = self.0.iter().position(|&c| !f(c)).unwrap_or(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }

    /// `CET`, or a quoted `<+0530>`; at least three characters either way.
    fn abbr(&mut self) -> Option<String> {
        let s = if self.eat(b'<') {
            let s = self.take_while(|c| c != b'>').to_vec();
            if !self.eat(b'>') {
                return None;
            }
            s
        } else {
            self.take_while(|c| c.is_ascii_alphabetic()).to_vec()
        };
        (s.len() >= 3).then(|| String::from_utf8_lossy(&s).into_owned())
    }

    /// `[+-]h[:mm[:ss]]` as seconds, hours at most `max_h` (167 for rule times).
    fn hms(&mut self, max_h: i64) -> Option<i32> {
        let neg = self.eat(b'-');
        if !neg {
            self.eat(b'+');
        }
        let mut parts = [0i64; 3];
        for (i, part) in parts.iter_mut().enumerate() {
            if i > 0 && !self.eat(b':') {
                break;
            }
            let digits = self.take_while(|c| c.is_ascii_digit());
            if digits.is_empty() || digits.len() > 3 {
                return None;
            }
            *part = std::str::from_utf8(digits).ok()?.parse().ok()?;
        }
        if parts[0] > max_h || parts[1] > 59 || parts[2] > 59 {
            return None;
        }
        let s = parts[0] * 3600 + parts[1] * 60 + parts[2];
        i32::try_from(if neg { -s } else { s }).ok()
    }

    fn number(&mut self) -> Option<u32> {
        let digits = self.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() || digits.len() > 3 {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    fn rule(&mut self) -> Option<Switch> {
        let day = if self.eat(b'M') {
            let m = self.number()?;
            self.eat(b'.').then_some(())?;
            let w = self.number()?;
            self.eat(b'.').then_some(())?;
            let d = self.number()?;
            ((1..=12).contains(&m) && (1..=5).contains(&w) && d <= 6)
                .then_some(Day::Month(m, w, d))?
        } else if self.eat(b'J') {
            let n = self.number()?;
            (1..=365).contains(&n).then_some(Day::Julian1(n as u16))?
        } else {
            let n = self.number()?;
            (n <= 365).then_some(Day::Julian0(n as u16))?
        };
        // TZif v3 allows -167..=167 hours here.
        let time = if self.eat(b'/') { self.hms(167)? } else { 7200 };
        Some((day, time))
    }
}

/// How the local zone was found, for `validate` and the log.
#[derive(Debug, Clone)]
pub struct Found {
    pub zone: Zone,
    /// Set when the zone could not be read and UTC stands in.
    pub warning: Option<String>,
}

fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_TZIF)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

fn from_file(name: &str, path: &Path) -> Result<Zone, TzError> {
    let bytes = read_capped(path).map_err(|source| TzError::Read {
        path: path.to_owned(),
        source,
    })?;
    Zone::from_tzif(name, &bytes).map_err(|e| TzError::File {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// The zone a name from `$TZ` means: a zoneinfo file (`Europe/Berlin`, or a path),
/// else a POSIX TZ string.
fn named(value: &str, tzdir: &Path) -> Result<Zone, TzError> {
    let name = value.strip_prefix(':').unwrap_or(value);
    if name.starts_with('/') {
        return from_file(name, Path::new(name));
    }
    // `..` would climb out of the zoneinfo directory.
    let plain = !name.is_empty() && !name.split('/').any(|c| c == ".." || c.is_empty());
    if plain {
        let path = tzdir.join(name);
        if path.is_file() {
            return from_file(name, &path);
        }
    }
    Zone::from_posix(name).map_err(|posix| TzError::Unknown {
        name: name.to_owned(),
        tzdir: tzdir.to_owned(),
        posix: Box::new(posix),
    })
}

/// The name `/etc/localtime` stands for: the zone its symlink points into, else
/// `/etc/timezone` (Debian), else the file itself.
fn localtime_name(localtime: &Path) -> String {
    if let Ok(target) = std::fs::read_link(localtime) {
        let t = target.to_string_lossy();
        if let Some((_, zone)) = t.split_once("zoneinfo/") {
            return zone.to_string();
        }
    }
    std::fs::read_to_string("/etc/timezone")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && localtime == Path::new("/etc/localtime"))
        .unwrap_or_else(|| localtime.display().to_string())
}

/// The system's zone as the C library would pick it: `$TZ` (empty means UTC), else
/// `/etc/localtime`; UTC with a warning when neither can be read.
pub fn system(env: &crate::host::Env) -> Found {
    let tzdir = env.path("TZDIR").unwrap_or_else(|| PathBuf::from(ZONEINFO));
    lookup(env.raw("TZ"), Path::new("/etc/localtime"), &tzdir)
}

fn lookup(tz: Option<&str>, localtime: &Path, tzdir: &Path) -> Found {
    let result = match tz {
        Some("") => Ok(Zone::utc()),
        Some(v) => named(v, tzdir).map_err(|e| TzError::Env(Box::new(e))),
        None => from_file(&localtime_name(localtime), localtime),
    };
    match result {
        Ok(zone) => Found {
            zone,
            warning: None,
        },
        Err(e) => Found {
            zone: Zone::utc(),
            warning: Some(format!("local time zone unknown ({e}); using UTC")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tz")
            .join(name)
    }

    fn zone(name: &str) -> Zone {
        from_file(name, &fixture(name)).unwrap()
    }

    /// UTC instant of a UTC date and time.
    fn at(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60
    }

    #[test]
    fn a_fixed_offset_zone() {
        let z = zone("Test/Fixed");
        for t in [
            at(1900, 1, 1, 0, 0),
            at(2026, 7, 1, 12, 0),
            at(2100, 1, 1, 0, 0),
        ] {
            assert_eq!(z.offset_at(t), (19_800, "+0530"));
        }
        let t = at(2026, 7, 1, 20, 0);
        assert_eq!(z.to_local(t), at(2026, 7, 2, 1, 30));
        assert_eq!(z.to_utc(z.to_local(t)), t);
    }

    /// The EU rule (last Sunday of March and October, 01:00 UTC) in both file
    /// layouts: `-b fat` stores transitions to 2037, `-b slim` leaves them to the footer.
    #[test]
    fn dst_transitions_from_the_table_and_from_the_footer() {
        let fat = zone("Test/DST-fat");
        let slim = zone("Test/DST-slim");
        assert!(fat.transitions.len() > slim.transitions.len());
        for z in [&fat, &slim] {
            for (y, spring, autumn) in [
                (2026, 29, 25),
                (2027, 28, 31),
                (2030, 31, 27),
                (2045, 26, 29),
            ] {
                let s = at(y, 3, spring, 1, 0);
                let a = at(y, 10, autumn, 1, 0);
                assert_eq!(z.offset_at(s - 1), (3600, "CET"), "{y} before spring");
                assert_eq!(z.offset_at(s), (7200, "CEST"), "{y} spring");
                assert_eq!(z.offset_at(a - 1), (7200, "CEST"), "{y} before autumn");
                assert_eq!(z.offset_at(a), (3600, "CET"), "{y} autumn");
            }
        }
        // A wall time in the autumn's repeated hour and one in the spring gap.
        let local = at(2026, 10, 25, 2, 30);
        assert!([at(2026, 10, 25, 0, 30), at(2026, 10, 25, 1, 30)].contains(&slim.to_utc(local)));
        let gap = at(2026, 3, 29, 2, 30);
        assert_eq!(slim.to_local(slim.to_utc(gap)) - gap, 3600);
    }

    #[test]
    fn posix_strings() {
        let ny = Zone::from_posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(ny.offset_at(at(2026, 3, 8, 6, 59)), (-18_000, "EST"));
        assert_eq!(ny.offset_at(at(2026, 3, 8, 7, 0)), (-14_400, "EDT"));
        assert_eq!(ny.offset_at(at(2026, 11, 1, 5, 59)), (-14_400, "EDT"));
        assert_eq!(ny.offset_at(at(2026, 11, 1, 6, 0)), (-18_000, "EST"));
        // Southern hemisphere: daylight time over the new year.
        let syd = Zone::from_posix("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(syd.offset_at(at(2026, 1, 15, 0, 0)).0, 39_600);
        assert_eq!(syd.offset_at(at(2026, 7, 15, 0, 0)).0, 36_000);
        assert_eq!(syd.offset_at(at(2026, 4, 4, 15, 59)).0, 39_600);
        assert_eq!(syd.offset_at(at(2026, 4, 4, 16, 0)).0, 36_000);
        // Quoted names, minutes, and daylight time all year (as zic writes it).
        let ind = Zone::from_posix("<+0530>-5:30").unwrap();
        assert_eq!(ind.offset_at(0), (19_800, "+0530"));
        let all_year = Zone::from_posix("EST5EDT,0/0,J365/25").unwrap();
        assert_eq!(all_year.offset_at(at(2026, 6, 1, 0, 0)).0, -14_400);
        assert_eq!(Zone::from_posix("UTC0").unwrap().offset_at(5).0, 0);
        // A Julian day counts no February 29.
        assert_eq!(
            rule_local(2028, (Day::Julian1(60), 0)),
            at(2028, 3, 1, 0, 0)
        );
        assert_eq!(
            rule_local(2028, (Day::Julian0(59), 0)),
            at(2028, 2, 29, 0, 0)
        );
        for bad in [
            "",
            "C",
            "CET",
            "CET-1CEST,M3.5.0",
            "CET-1CEST,M13.5.0,M10.5.0",
            "<CET-1",
            "CET-1x",
            "CET-99",
        ] {
            assert!(Zone::from_posix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn broken_files_are_refused_not_trusted() {
        let good = std::fs::read(fixture("Test/DST-slim")).unwrap();
        assert!(Zone::from_tzif("x", b"").is_err());
        assert!(Zone::from_tzif(
            "x",
            b"TZjf2\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
        )
        .is_err());
        for cut in [10, 44, 60, good.len() - 1] {
            assert!(Zone::from_tzif("x", &good[..cut]).is_err(), "cut at {cut}");
        }
        // A count that claims more than the file holds.
        let mut huge = good.clone();
        huge[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Zone::from_tzif("x", &huge).is_err());
    }

    #[test]
    fn finding_the_system_zone() {
        let dir = fixture("");
        let lt = fixture("Test/Fixed");
        assert_eq!(lookup(None, &lt, &dir).zone.offset_at(0).0, 19_800);
        assert_eq!(
            lookup(Some("Test/DST-slim"), &lt, &dir).zone.name,
            "Test/DST-slim"
        );
        assert_eq!(
            lookup(Some(":Test/Fixed"), &lt, &dir).zone.offset_at(0).0,
            19_800
        );
        let abs = lt.display().to_string();
        assert_eq!(lookup(Some(&abs), &lt, &dir).zone.offset_at(0).0, 19_800);
        let posix = lookup(Some("JST-9"), &lt, &dir);
        assert!(posix.warning.is_none());
        assert_eq!(posix.zone.offset_at(0).0, 32_400);
        assert_eq!(lookup(Some(""), &lt, &dir).zone, Zone::utc());
        for bad in ["../tz/Test/Fixed", "No/Such/Zone"] {
            let f = lookup(Some(bad), &lt, &dir);
            assert_eq!(f.zone, Zone::utc(), "{bad}");
            assert!(f.warning.unwrap().contains("using UTC"));
        }
        let missing = lookup(None, &fixture("nope"), &dir);
        assert_eq!(missing.zone, Zone::utc());
        assert!(missing.warning.unwrap().contains("cannot read"));
    }
}
