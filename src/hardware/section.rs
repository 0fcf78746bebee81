//! The description's sections: one with nothing in it is left out.

use serde_json::{Map, Value};

pub(super) fn insert_nonempty(out: &mut Map<String, Value>, key: &str, value: Map<String, Value>) {
    if !value.is_empty() {
        out.insert(key.into(), Value::Object(value));
    }
}
