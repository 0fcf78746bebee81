//! Structs read from JSON objects field by field: the config's sections and the
//! state file.
//!
//! Not `#[derive(Deserialize)]`: per struct, the derive generates a visitor for
//! field names, a sequence form and checks for repeated and missing fields, and
//! for the two dozen structs of the config and the state file that came to about
//! 55 KB of a binary with a size budget (docs/building.md, "Binary size").
//! [`json_fields!`] generates only the step from a key to its field; serde_json
//! still does all the parsing, and serde's derive still writes these structs.
//! A repeated key's last value wins, as in most JSON readers.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// A struct read from a JSON object by field name.
pub trait Fields: Default {
    /// Reads `key`'s value into its field; false, the value left unread, when
    /// there is no such field.
    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
}

/// Declares a struct, its [`Fields`] (one per field, under the field's name)
/// and a `Deserialize` from a JSON object: fields that are not there keep their
/// `Default`, keys that are not fields are skipped.
macro_rules! json_fields {
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fm:meta])* $fvis:vis $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$m])*
        $vis struct $name {
            $($(#[$fm])* $fvis $field: $ty,)*
        }

        impl $crate::json_fields::Fields for $name {
            fn read<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Result<bool, A::Error> {
                match key {
                    $(stringify!($field) => $crate::json_fields::set(&mut self.$field, map),)*
                    _ => Ok(false),
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::json_fields::object(d)
            }
        }
    };
}
pub(crate) use json_fields;

/// A field's value, replacing an earlier one. Out of line, so that there is one
/// copy per field type rather than one per field.
#[inline(never)]
pub fn set<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    field: &mut T,
    map: &mut A,
) -> Result<bool, A::Error> {
    *field = map.next_value()?;
    Ok(true)
}

/// `T` from a JSON object (see [`json_fields!`]).
pub fn object<'de, T: Fields, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(ObjectVisitor(PhantomData))
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Fields> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut t = T::default();
        while let Some(key) = map.next_key::<String>()? {
            if !t.read(&key, &mut map)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    json_fields! {
        #[derive(Debug, Default, PartialEq, Serialize)]
        struct Point {
            x: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            label: Option<String>,
        }
    }

    #[test]
    fn reads_known_keys_keeps_defaults_and_skips_the_rest() {
        let p: Point = serde_json::from_str(r#"{"x":1,"x":2,"other":[{"deep":1}]}"#).unwrap();
        assert_eq!(p, Point { x: 2, label: None });
        let p: Point = serde_json::from_str(r#"{"label":"a"}"#).unwrap();
        assert_eq!((p.x, p.label.as_deref()), (0, Some("a")));
        assert!(serde_json::from_str::<Point>(r#"{"x":"one"}"#).is_err());
        assert!(serde_json::from_str::<Point>("[1]").is_err());
        assert_eq!(
            serde_json::to_string(&Point { x: 3, label: None }).unwrap(),
            r#"{"x":3}"#
        );
    }
}
