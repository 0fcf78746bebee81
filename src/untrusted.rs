//! Showing strings that come from outside (the coordinator, a job, a backend, a
//! pairing answer) in log lines, error messages and the state file.
//!
//! Such a string may hold a newline that forges a log line, a terminal escape
//! (`\x1b[...`) that rewrites what an operator sees, a bidi override that
//! reorders it, or megabytes that drown everything else. [`shown`] makes every
//! one of those visible and bounded; nothing the agent itself wrote is touched.

use std::fmt::{self, Write as _};

/// Longest a job id is shown; a well-formed one (a UUID) is 36.
pub const JOB_ID_CHARS: usize = 64;

/// `s` with control and invisible characters escaped, at most `max_chars`
/// characters in all; a cut string ends in `…(N bytes)`, N being its full length.
pub fn shown(s: &str, max_chars: usize) -> Shown<'_> {
    Shown { s, max_chars }
}

/// A job id as it may appear in a log line: at most [`JOB_ID_CHARS`] characters.
pub fn job_id(id: &str) -> Shown<'_> {
    shown(id, JOB_ID_CHARS)
}

/// The [`fmt::Display`] of [`shown`].
#[derive(Clone, Copy)]
pub struct Shown<'a> {
    s: &'a str,
    max_chars: usize,
}

/// Characters that are not control characters to Rust yet change how text reads:
/// line and paragraph separators (a line break to many viewers), bidi embeddings,
/// overrides and isolates ("Trojan Source"), zero-width characters and the BOM.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00ad}'
        | '\u{061c}'
        | '\u{180e}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}')
}

/// How `c` is written: itself, or a visible escape.
enum Piece {
    Plain(char),
    Short(&'static str),
    Hex(u32),
    Unicode(u32),
}

impl Piece {
    fn of(c: char) -> Piece {
        match c {
            '\n' => Piece::Short("\\n"),
            '\r' => Piece::Short("\\r"),
            '\t' => Piece::Short("\\t"),
            '\0' => Piece::Short("\\0"),
            c if (c as u32) < 0x80 && c.is_control() => Piece::Hex(c as u32),
            c if c.is_control() || invisible(c) => Piece::Unicode(c as u32),
            c => Piece::Plain(c),
        }
    }

    fn width(&self) -> usize {
        match self {
            Piece::Plain(_) => 1,
            Piece::Short(s) => s.len(),
            Piece::Hex(_) => 4,
            Piece::Unicode(u) => format!("{u:x}").len() + 4,
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Piece::Plain(c) => f.write_char(*c),
            Piece::Short(s) => f.write_str(s),
            Piece::Hex(u) => write!(f, "\\x{u:02x}"),
            Piece::Unicode(u) => write!(f, "\\u{{{u:x}}}"),
        }
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only as much of `s` is looked at as can be shown: a 16 MiB id costs
        // no more than a short one.
        let mut total = 0;
        let fits = self.s.chars().all(|c| {
            total += Piece::of(c).width();
            total <= self.max_chars
        });
        if fits {
            return self.s.chars().try_for_each(|c| Piece::of(c).write(f));
        }
        let marker = format!("…({} bytes)", self.s.len());
        let budget = self.max_chars.saturating_sub(marker.chars().count());
        let mut used = 0;
        for c in self.s.chars() {
            let piece = Piece::of(c);
            used += piece.width();
            if used > budget {
                break;
            }
            piece.write(f)?;
        }
        f.write_str(&marker)
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str, max: usize) -> String {
        shown(text, max).to_string()
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(s("prov-1 ok", 100), "prov-1 ok");
        assert_eq!(s("", 10), "");
        assert_eq!(s("héllo wörld", 100), "héllo wörld");
        // Already shown text stays as it is: wrapping twice is harmless.
        let once = s("a\nb\x1b[31m", 100);
        assert_eq!(s(&once, 100), once);
    }

    #[test]
    fn control_and_invisible_characters_become_visible_escapes() {
        assert_eq!(s("a\nb\r\tc\0", 100), "a\\nb\\r\\tc\\0");
        assert_eq!(s("\x1b[31mred", 100), "\\x1b[31mred");
        assert_eq!(s("\x7f\x08", 100), "\\x7f\\x08");
        assert_eq!(s("\u{85}", 100), "\\u{85}");
        assert_eq!(s("x\u{2028}y", 100), "x\\u{2028}y");
        assert_eq!(s("\u{202e}evil", 100), "\\u{202e}evil");
        assert_eq!(s("\u{200b}\u{feff}", 100), "\\u{200b}\\u{feff}");
        let out = s("line1\nline2\u{2029}x\x1b", 100);
        assert!(
            !out.chars().any(|c| c.is_control() || invisible(c)),
            "{out}"
        );
    }

    #[test]
    fn long_text_is_cut_with_its_full_length() {
        let long = "a".repeat(1000);
        let out = s(&long, 40);
        assert!(out.ends_with("…(1000 bytes)"), "{out}");
        assert!(out.chars().count() <= 40, "{out}");
        assert!(out.starts_with("aaaa"));
        // Exactly at the limit is not cut.
        assert_eq!(s(&"b".repeat(40), 40), "b".repeat(40));
        // Escapes count towards the limit and are never split.
        let out = s(&"\n".repeat(100), 30);
        assert!(out.chars().count() <= 30, "{out}");
        assert!(out.starts_with("\\n\\n") && !out.contains("\\…"), "{out}");
        // A limit smaller than the marker shows the marker alone.
        assert_eq!(s("abcdef", 2), "…(6 bytes)");
    }

    #[test]
    fn a_hostile_job_id_is_at_most_64_printable_chars() {
        let id = format!(
            "{}\n{}\x1b[31mINJECTED",
            "x".repeat(10),
            "y".repeat(200_000)
        );
        let out = job_id(&id).to_string();
        assert!(out.chars().count() <= JOB_ID_CHARS, "{out}");
        assert!(!out.chars().any(char::is_control), "{out}");
        assert!(out.starts_with("xxxxxxxxxx\\nyyy"), "{out}");
        assert!(out.ends_with(&format!("…({} bytes)", id.len())), "{out}");
        let uuid = "0b9e4c1e-7c0a-4d8e-9d1b-2f6f2b1a3c4d";
        assert_eq!(job_id(uuid).to_string(), uuid);
        assert_eq!(format!("{:?}", shown("a\nb", 10)), "\"a\\nb\"");
    }
}
