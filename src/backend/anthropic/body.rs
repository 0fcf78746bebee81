//! The client's request body, read without building it.
//!
//! The request side never builds the client's JSON into a `Value`: a request may be megabytes
//! of tiny values, and a `Value` tree of those costs tens of times the text's size, which on a
//! small device takes the memory the inference server needs. Instead the body is read through
//! the small borrowed structs below (fields the translation does not read are skipped without
//! being built, via `IgnoredAny`), every array is walked element by element rather than
//! collected, and the output is written straight into one byte buffer. Null counts as absent
//! throughout: `Option` fields deserialize a JSON null as `None`.

use super::error::{invalid, TranslateError};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Whitespace as JSON defines it (not Unicode's).
pub(super) const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// The top-level fields the translation reads, each kept as the client's raw text (a slice
/// of the body), so they can be checked in a fixed order whatever order the keys came in and
/// numbers can be passed on exactly as written.
#[derive(Deserialize)]
pub(super) struct Request<'a> {
    #[serde(borrow)]
    pub(super) tools: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) system: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) messages: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) model: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) top_p: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) top_k: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) stop_sequences: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct Message<'a> {
    #[serde(borrow)]
    pub(super) role: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) content: Option<&'a RawValue>,
}

/// Any content block; which fields matter depends on `type`.
#[derive(Deserialize)]
pub(super) struct Block<'a> {
    #[serde(borrow, rename = "type")]
    pub(super) kind: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) text: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) source: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct ImageSource<'a> {
    #[serde(borrow, rename = "type")]
    pub(super) kind: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) media_type: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) data: Option<Text<'a>>,
    #[serde(borrow)]
    pub(super) url: Option<Text<'a>>,
}

/// A field the translation wants as a string. A string is kept, borrowed from the body unless
/// it had escapes; any other value is skipped unbuilt and remembered only as "not a string",
/// so the caller can report the field rather than a parse error.
pub(super) enum Text<'a> {
    Str(Cow<'a, str>),
    NotAString,
}

impl<'a> Text<'a> {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Text::Str(text) => Some(text),
            Text::NotAString => None,
        }
    }

    pub(super) fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Text::Str(text) => Some(text),
            Text::NotAString => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor(PhantomData))
    }
}

struct TextVisitor<'a>(PhantomData<Text<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
    type Value = Text<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'a>, E> {
        Ok(Text::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'a>, E> {
        Ok(Text::Str(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'a>, E> {
        Ok(Text::Str(Cow::Owned(text)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
        Ok(Text::NotAString)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'a>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text::NotAString)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'a>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text::NotAString)
    }
}

/// Where in the request something is. Rendered only when an error is reported, so the
/// translation allocates nothing per message or block to name them.
#[derive(Clone, Copy)]
pub(super) enum At {
    System(usize),
    Message(usize),
    Block(usize, usize),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::System(index) => write!(f, "system[{index}]"),
            At::Message(index) => write!(f, "messages[{index}]"),
            At::Block(message, block) => write!(f, "messages[{message}].content[{block}]"),
        }
    }
}

/// The JSON type of a raw value, told by its first byte: serde_json hands out raw values
/// already checked to be one well-formed JSON value, with no leading whitespace.
pub(super) fn starts_with(raw: &RawValue, byte: u8) -> bool {
    raw.get().as_bytes().first() == Some(&byte)
}

pub(super) fn is_empty_array(raw: &RawValue) -> bool {
    raw.get()
        .strip_prefix('[')
        .is_some_and(|rest| rest.trim_start_matches(JSON_WHITESPACE) == "]")
}

/// The string a raw value holds, or None when it is not a string.
pub(super) fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !starts_with(raw, b'"') {
        return None;
    }
    serde_json::from_str::<Text>(raw.get())
        .ok()
        .and_then(Text::into_str)
}

/// Reads a raw value as one of the structs above; Ok(None) when it is not an object (serde's
/// derived structs would otherwise accept an array too). What can still fail here is a
/// repeated key: refused, since which copy wins would be a guess.
pub(super) fn object<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    at: impl fmt::Display,
) -> Result<Option<T>, TranslateError> {
    if !starts_with(raw, b'{') {
        return Ok(None);
    }
    serde_json::from_str(raw.get())
        .map(Some)
        .map_err(|e| invalid(format!("{at}: {e}")))
}

/// Calls `each` with the index and raw text of every element of a JSON array, in order,
/// without collecting them; the first error `each` returns stops the walk and is returned.
pub(super) fn for_each_element<'a>(
    array: &'a RawValue,
    mut each: impl FnMut(usize, &'a RawValue) -> Result<(), TranslateError>,
) -> Result<(), TranslateError> {
    let mut stopped = None;
    let mut deserializer = serde_json::Deserializer::from_str(array.get());
    let walked = deserializer.deserialize_seq(Elements {
        each: &mut each,
        stopped: &mut stopped,
    });
    if let Some(error) = stopped {
        return Err(error);
    }
    // Only reachable if `array` is not an array, which callers check first.
    walked.map_err(|e| invalid(format!("cannot read an array: {e}")))
}

struct Elements<'f, F> {
    each: &'f mut F,
    /// serde's error type cannot carry a TranslateError, so it waits here.
    stopped: &'f mut Option<TranslateError>,
}

impl<'de, F> Visitor<'de> for Elements<'_, F>
where
    F: FnMut(usize, &'de RawValue) -> Result<(), TranslateError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(element) = seq.next_element::<&'de RawValue>()? {
            if let Err(error) = (self.each)(index, element) {
                *self.stopped = Some(error);
                return Err(de::Error::custom("stopped"));
            }
            index += 1;
        }
        Ok(())
    }
}
