//! The JSON shapes read from each event, borrowed from its data: every field stays raw JSON
//! until it is needed, and nothing is built for the fields skipped, so observing an event
//! allocates nothing (a `serde_json::Value` tree cost a dozen allocations per event).

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The top-level fields of either an OpenAI chunk or an Anthropic event.
#[derive(Deserialize)]
pub(super) struct EventFields<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(super) kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) delta: Option<&'a RawValue>,
    /// Read in place rather than captured raw: see [`FirstObject`].
    #[serde(borrow, default)]
    pub(super) choices: FirstObject<ChoiceFields<'a>>,
}

/// The token counts, under either vendor's names (each shape reads its own pair).
#[derive(Deserialize)]
pub(super) struct UsageFields<'a> {
    #[serde(borrow, default)]
    pub(super) input_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) completion_tokens: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct MessageFields<'a> {
    #[serde(borrow, default)]
    pub(super) usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct ChoiceFields<'a> {
    #[serde(borrow, default)]
    pub(super) delta: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) finish_reason: Option<&'a RawValue>,
}

/// An OpenAI delta's generated text, any of its names (`reasoning` is the newer
/// vLLM/Ollama name for `reasoning_content`; thinking tokens are generated and billed like
/// any other); also Anthropic's `stop_reason` in a message_delta.
#[derive(Deserialize)]
pub(super) struct DeltaFields<'a> {
    #[serde(borrow, default)]
    pub(super) content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) reasoning_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) reasoning: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) stop_reason: Option<&'a RawValue>,
}

/// The first element of a JSON array when it is an object, read as `T`; any other value,
/// or a first element that is not an object, reads as None. Parsed in place: captured as a
/// `RawValue` first, `[{"delta":{..}}]` nests two deep, and serde_json skips such a value
/// with a stack it allocates afresh in every parse (two allocations per relayed event).
pub(super) struct FirstObject<T>(pub(super) Option<T>);

impl<T> Default for FirstObject<T> {
    fn default() -> Self {
        FirstObject(None)
    }
}

/// Reads one value for [`FirstObject`]: the array when `array`, else its element.
struct Shape<T> {
    array: bool,
    read: std::marker::PhantomData<T>,
}

/// Any scalar is not the shape looked for.
macro_rules! not_the_shape {
    ($($name:ident: $ty:ty),*) => {$(
        fn $name<E: serde::de::Error>(self, _: $ty) -> Result<Option<T>, E> {
            Ok(None)
        }
    )*};
}

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Shape<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    not_the_shape!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        let first = match self.array {
            true => seq.next_element_seed(Shape {
                array: false,
                read: self.read,
            })?,
            false => None,
        };
        serde::de::IgnoredAny.visit_seq(seq)?;
        Ok(first.flatten())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        if self.array {
            serde::de::IgnoredAny.visit_map(map)?;
            return Ok(None);
        }
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
    }
}

impl<'de, T: Deserialize<'de>> serde::de::DeserializeSeed<'de> for Shape<T> {
    type Value = Option<T>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for FirstObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let shape = Shape {
            array: true,
            read: std::marker::PhantomData,
        };
        d.deserialize_any(shape).map(FirstObject)
    }
}

/// `raw` read as `T` when it is a JSON object (a struct would also take an array).
pub(super) fn object<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// A JSON string, borrowed unless it has escapes.
pub(super) fn string(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let text = raw?.get();
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// A non-negative integer that fits u64, as `Value::as_u64` reads one.
pub(super) fn count(raw: &RawValue) -> Option<u64> {
    serde_json::from_str(raw.get()).ok()
}

/// A string other than "": what a delta emits when it emits text. Judged on the raw
/// text, which for any string but "" is longer than its two quotes.
pub(super) fn nonempty_string(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|r| r.get().starts_with('"') && r.get() != "\"\"")
}
