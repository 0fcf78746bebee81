//! Reading JSON text without building a tree: kinds, integers, strings, walks.

use super::refusal::{Refusal, QUOTE_CHARS};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A value read raw but not decodable (serde_json's own message may quote client text).
const MALFORMED: &str = "the request holds malformed JSON";

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    pub(super) fn article(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// The kind of a JSON value from its first byte (the text is valid JSON, or fails later
/// when walked).
pub(super) fn kind(json: &str) -> Kind {
    match json.trim_start().as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'n') => Kind::Null,
        _ => Kind::Number,
    }
}

pub(super) enum Int {
    Negative,
    Small(u64),
    /// Above u64: only ever clamped.
    Huge,
}

/// A JSON integer literal, read from its text (so 1e400 or 2^70 never go through f64).
pub(super) fn integer(json: &str) -> Option<Int> {
    let t = json.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        let zero = digits.bytes().all(|b| b == b'0');
        return Some(if zero { Int::Small(0) } else { Int::Negative });
    }
    Some(digits.parse().map_or(Int::Huge, Int::Small))
}

/// A decoded JSON string, borrowed when it has no escapes.
pub(super) struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON string decoded, or None for another kind. Refused when it cannot be decoded
/// (an escaped lone surrogate passes the raw read): a string the policy must read and
/// cannot would otherwise be waved through, and some backends decode it anyway.
pub(super) fn string(json: &str) -> Result<Option<Cow<'_, str>>, Refusal> {
    if kind(json) != Kind::String {
        return Ok(None);
    }
    match serde_json::from_str::<Text<'_>>(json) {
        Ok(t) => Ok(Some(t.0)),
        Err(_) => Err(Refusal::new(MALFORMED)),
    }
}

/// A client value for a refusal: scalars quoted (cut and escaped), containers named.
pub(super) fn shown(value: &RawValue) -> String {
    let json = value.get();
    match kind(json) {
        Kind::String => match string(json) {
            Ok(Some(s)) => format!("\"{}\"", escape(&s, QUOTE_CHARS)),
            _ => Kind::String.article().to_owned(),
        },
        Kind::Number | Kind::Bool | Kind::Null => escape(json.trim(), QUOTE_CHARS),
        k => k.article().to_owned(),
    }
}

/// At most `max` characters of `s`, with quotes, backslashes, control and invisible
/// characters (bidi overrides, zero-width) escaped, and `…` when cut.
pub(super) fn escape(s: &str, max: usize) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len().min(max * 2) + 3);
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Where a refusal happened, rendered only when one does.
#[derive(Clone, Copy)]
pub(super) enum Place<'p> {
    Root(&'static str),
    Index(&'p Place<'p>, usize),
    Field(&'p Place<'p>, &'static str),
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Root(name) => f.write_str(name),
            Place::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Place::Field(parent, name) => write!(f, "{parent}.{name}"),
        }
    }
}

/// A walk stopped by the policy, or JSON serde_json would not read.
#[derive(Debug)]
pub(super) enum Walk {
    Refused(Refusal),
    Json(serde_json::Error),
}

impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Walk::Refused(r) => write!(f, "{r}"),
            Walk::Json(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Walk {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Walk::Refused(r) => Some(r),
            Walk::Json(e) => Some(e),
        }
    }
}

pub(super) fn malformed(w: Walk) -> Refusal {
    match w {
        Walk::Refused(r) => r,
        // Values were already read once as raw JSON; what fails now is a string escape
        // (a lone surrogate). serde_json's message is not quoted: it may hold client text.
        Walk::Json(_) => Refusal::new(MALFORMED),
    }
}

pub(super) fn finish_walk(
    result: Result<(), serde_json::Error>,
    refusal: Option<Refusal>,
) -> Result<(), Walk> {
    match (refusal, result) {
        (Some(r), _) => Err(Walk::Refused(r)),
        (None, Ok(())) => Ok(()),
        (None, Err(e)) => Err(Walk::Json(e)),
    }
}

/// Calls `f` for each entry of the JSON object `json`, in order and duplicates
/// included, without collecting them.
pub(super) fn walk_map<'a>(
    json: &'a str,
    f: impl FnMut(Cow<'a, str>, &'a RawValue) -> Result<(), Refusal>,
) -> Result<(), Walk> {
    struct Entries<'r, F> {
        f: F,
        refusal: &'r mut Option<Refusal>,
    }
    impl<'de, F> Visitor<'de> for Entries<'_, F>
    where
        F: FnMut(Cow<'de, str>, &'de RawValue) -> Result<(), Refusal>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
            while let Some(Text(key)) = map.next_key()? {
                let value: &'de RawValue = map.next_value()?;
                if let Err(r) = (self.f)(key, value) {
                    *self.refusal = Some(r);
                    return Err(de::Error::custom("refused"));
                }
            }
            Ok(())
        }
    }
    let mut refusal = None;
    let mut de = serde_json::Deserializer::from_str(json);
    let result = de
        .deserialize_map(Entries {
            f,
            refusal: &mut refusal,
        })
        .and_then(|()| de.end());
    finish_walk(result, refusal)
}

/// [`walk_map`] for a value already read as raw JSON; anything but an object has no
/// entries.
pub(super) fn each_entry<'a>(
    json: &'a str,
    f: impl FnMut(Cow<'a, str>, &'a RawValue) -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    if kind(json) != Kind::Object {
        return Ok(());
    }
    walk_map(json, f).map_err(malformed)
}

pub(super) fn unlimited() -> Refusal {
    Refusal::new("unreachable: no limit")
}

/// Calls `f` for each element of the JSON array `json`, stopping with `over()` at
/// element `limit` + 1: the count is known without parsing the rest nor collecting.
/// Anything but an array has no elements.
pub(super) fn each_element<'a>(
    json: &'a str,
    limit: usize,
    over: impl FnOnce() -> Refusal,
    f: impl FnMut(usize, &'a RawValue) -> Result<(), Refusal>,
) -> Result<(), Refusal> {
    struct Elements<'r, O, F> {
        limit: usize,
        over: O,
        f: F,
        refusal: &'r mut Option<Refusal>,
    }
    impl<'de, O, F> Visitor<'de> for Elements<'_, O, F>
    where
        O: FnOnce() -> Refusal,
        F: FnMut(usize, &'de RawValue) -> Result<(), Refusal>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            while let Some(value) = seq.next_element::<&'de RawValue>()? {
                let step = if i == self.limit {
                    *self.refusal = Some((self.over)());
                    return Err(de::Error::custom("refused"));
                } else {
                    (self.f)(i, value)
                };
                if let Err(r) = step {
                    *self.refusal = Some(r);
                    return Err(de::Error::custom("refused"));
                }
                i += 1;
            }
            Ok(())
        }
    }
    if kind(json) != Kind::Array {
        return Ok(());
    }
    let mut refusal = None;
    let mut de = serde_json::Deserializer::from_str(json);
    let result = de
        .deserialize_seq(Elements {
            limit,
            over,
            f,
            refusal: &mut refusal,
        })
        .and_then(|()| de.end());
    finish_walk(result, refusal).map_err(malformed)
}

/// Deepest `{`/`[` nesting of JSON text.
pub(super) fn nesting_depth(json: &[u8]) -> usize {
    scan(json).depth
}

pub(super) struct Scan {
    /// Deepest `{`/`[` nesting.
    pub(super) depth: usize,
    /// A `\u` escape of a surrogate without its pair.
    pub(super) unpaired_surrogate: bool,
}

/// One pass over valid JSON text, on the bytes: a deep value costs no tree and no
/// recursion. serde_json's raw read lets unpaired surrogate escapes through (it does not
/// know yet whether the string will be decoded); strict parsers reject them and lenient
/// ones decode them, so the backend's reading would differ from the policy's.
pub(super) fn scan(json: &[u8]) -> Scan {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut in_string = false;
    // The previous string unit was a high surrogate escape: a low one must follow.
    let mut high = false;
    let mut unpaired = false;
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        i += 1;
        if !in_string {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
            continue;
        }
        let unit = match (b, json.get(i)) {
            (b'\\', Some(b'u')) => {
                let hex = json
                    .get(i + 1..i + 5)
                    .and_then(|h| std::str::from_utf8(h).ok());
                i += 5;
                hex.and_then(|h| u16::from_str_radix(h, 16).ok())
            }
            (b'\\', _) => {
                i += 1;
                None
            }
            (b'"', _) => {
                in_string = false;
                None
            }
            _ => None,
        };
        match unit {
            Some(0xd800..=0xdbff) => {
                unpaired |= high;
                high = true;
            }
            Some(0xdc00..=0xdfff) => {
                unpaired |= !high;
                high = false;
            }
            _ => {
                unpaired |= high;
                high = false;
            }
        }
    }
    Scan {
        depth: max,
        unpaired_surrogate: unpaired | high,
    }
}
