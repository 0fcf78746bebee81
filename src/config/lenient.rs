//! The lenient reader under the config: serde reads the file straight from
//! the text, and a value of the wrong JSON type is kept, not fatal, so that the
//! checks, which know the key's path, can name it (serde's own message names
//! only a line and column). A setting is `Opt<T>`: absent or null is None, a
//! wrong value is `Typed::Wrong`. Sections and lists of them are `Obj` and
//! `List`, which say only whether the value was an object or an array.
//!
//! The binary has a size budget, and generic code is copied per type: every
//! setting is read by one visitor (`Leaf`'s) and converted after, and
//! sections are declared with `json_fields!` (see there why not the derive).

use crate::json_fields::Fields;
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

/// A setting: absent or null is None.
pub(super) type Opt<T> = Option<Typed<T>>;
/// A section of settings: absent or null is None.
pub(super) type Section<T> = Option<Obj<T>>;
/// The keys of an object that its type does not know: warnings, not errors, so a
/// config written for a newer agent still starts an older one.
pub(super) type Unknown = BTreeSet<String>;

/// Objects keyed by name (prices keyed by model id): every key is one.
impl<V: DeserializeOwned> Fields for BTreeMap<String, V> {
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        self.insert(key.to_owned(), map.next_value()?);
        Ok(true)
    }
}

/// A setting of type `T`, or the JSON text of what stood there instead (quoted
/// back in the error).
pub(super) enum Typed<T> {
    Ok(T),
    Wrong(String),
}

/// `T` read from a JSON object, with the keys `T` does not have; or `Wrong`:
/// something else stood there.
pub(super) enum Obj<T> {
    Ok(T, Unknown),
    Wrong,
}

/// A JSON array, or `Wrong`: something else stood there.
pub(super) enum List<T> {
    Ok(Vec<T>),
    Wrong,
}

/// A setting's value before its type is checked: a JSON scalar, a list of them,
/// or an object kept as text (no setting is an object; it is only quoted back).
pub(super) enum Leaf {
    Null,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Leaf>),
    Object(String),
}

impl Leaf {
    /// As compact JSON, printed the way the walker this replaced printed a
    /// `serde_json::Value` (object keys sorted, a repeated key's last value
    /// kept), so errors quoting a wrong value read as they did.
    fn shown(&self) -> String {
        match self {
            Leaf::Null => "null".into(),
            Leaf::Bool(b) => b.to_string(),
            Leaf::Uint(n) => n.to_string(),
            Leaf::Int(n) => n.to_string(),
            Leaf::Float(n) => json_text(n),
            Leaf::Str(s) => json_text(s),
            Leaf::List(items) => {
                let items: Vec<String> = items.iter().map(Leaf::shown).collect();
                format!("[{}]", items.join(","))
            }
            Leaf::Object(text) => text.clone(),
        }
    }
}

/// A value as compact JSON text.
fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl<'de> Deserialize<'de> for Leaf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LeafVisitor)
    }
}

struct LeafVisitor;

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Leaf;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Leaf, E> {
        Ok(Leaf::Bool(b))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Leaf, E> {
        Ok(Leaf::Uint(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Leaf, E> {
        Ok(Leaf::Int(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Leaf, E> {
        Ok(Leaf::Float(n))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Leaf, E> {
        Ok(Leaf::Str(s.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Leaf, E> {
        Ok(Leaf::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Leaf::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Leaf>()? {
            entries.insert(key, value);
        }
        let entries: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{}:{}", json_text(k), v.shown()))
            .collect();
        Ok(Leaf::Object(format!("{{{}}}", entries.join(","))))
    }
}

/// The settings' types: which leaves make one (the leaf back if it does not).
pub(super) trait FromLeaf: Sized {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf>;
}

impl FromLeaf for String {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::Str(s) => Ok(s),
            other => Err(other),
        }
    }
}

impl FromLeaf for bool {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::Bool(b) => Ok(b),
            other => Err(other),
        }
    }
}

/// Negative numbers and fractions are the wrong type, not a range problem.
impl FromLeaf for u64 {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::Uint(n) => Ok(n),
            other => Err(other),
        }
    }
}

/// Any number: seconds may be fractional (and their range is checked later).
impl FromLeaf for f64 {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::Uint(n) => Ok(n as f64),
            Leaf::Int(n) => Ok(n as f64),
            Leaf::Float(n) => Ok(n),
            other => Err(other),
        }
    }
}

/// A list whose items are checked one by one (`models[2]` can be named).
impl<T: FromLeaf> FromLeaf for Vec<Typed<T>> {
    fn from_leaf(leaf: Leaf) -> Result<Self, Leaf> {
        match leaf {
            Leaf::List(items) => Ok(items.into_iter().map(Typed::from).collect()),
            other => Err(other),
        }
    }
}

impl<T: FromLeaf> From<Leaf> for Typed<T> {
    fn from(leaf: Leaf) -> Self {
        match T::from_leaf(leaf) {
            Ok(t) => Typed::Ok(t),
            Err(leaf) => Typed::Wrong(leaf.shown()),
        }
    }
}

impl<'de, T: FromLeaf> Deserialize<'de> for Typed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Leaf::deserialize(d).map(Typed::from)
    }
}

/// What `Obj` and `List` take from an object or an array; from anything else
/// (the default for the one they do not take), `wrong()`. The rest of a value
/// that is not taken is read as any value is, so that bad JSON inside it is
/// still reported as such.
trait Container<'de>: Sized {
    fn wrong() -> Self;

    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        skip_map(map).map(|()| Self::wrong())
    }

    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error> {
        skip_seq(seq).map(|()| Self::wrong())
    }
}

// Out of line: one copy each, not one per section type.
#[inline(never)]
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<String, Leaf>()?.is_some() {}
    Ok(())
}

#[inline(never)]
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Leaf>()?.is_some() {}
    Ok(())
}

impl<'de, T: Fields> Container<'de> for Obj<T> {
    fn wrong() -> Self {
        Obj::Wrong
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut t = T::default();
        let mut unknown = Unknown::new();
        while let Some(key) = map.next_key::<String>()? {
            if !t.read(&key, &mut map)? {
                map.next_value::<Leaf>()?;
                unknown.insert(key);
            }
        }
        Ok(Obj::Ok(t, unknown))
    }
}

impl<'de, T: Deserialize<'de>> Container<'de> for List<T> {
    fn wrong() -> Self {
        List::Wrong
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(List::Ok(items))
    }
}

impl<'de, T: Fields> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContainerVisitor(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContainerVisitor(PhantomData))
    }
}

struct ContainerVisitor<C>(PhantomData<C>);

impl<'de, C: Container<'de>> Visitor<'de> for ContainerVisitor<C> {
    type Value = C;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_unit<E: de::Error>(self) -> Result<C, E> {
        Ok(C::wrong())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<C, A::Error> {
        C::from_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<C, A::Error> {
        C::from_map(map)
    }
}
