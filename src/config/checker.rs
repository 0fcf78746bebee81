//! The step from a raw setting to a checked one, naming the key of each problem.

use super::error::ConfigError;
use super::lenient::{Obj, Opt, Section, Typed, Unknown};
use std::time::Duration;

/// Turns raw settings into checked ones, naming the key of each problem.
pub(super) struct Checker<'a> {
    pub(super) origin: &'a str,
    pub(super) warnings: Vec<String>,
}

impl Checker<'_> {
    pub(super) fn err(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.into(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    pub(super) fn unknown(&mut self, path: &str, keys: &Unknown) {
        for k in keys {
            self.warnings.push(format!(
                "{}: unknown key {} ignored",
                self.origin,
                join(path, k)
            ));
        }
    }

    /// The section at `path`, its defaults if absent; its unknown keys become warnings.
    pub(super) fn section<T: Default>(
        &mut self,
        s: &mut Section<T>,
        path: &str,
    ) -> Result<T, ConfigError> {
        match s.take() {
            None => Ok(T::default()),
            Some(Obj::Ok(t, unknown)) => {
                self.unknown(path, &unknown);
                Ok(t)
            }
            Some(Obj::Wrong) => Err(self.err(path, "must be an object")),
        }
    }

    /// A setting, or an error saying what it `must` be and what it was.
    pub(super) fn value<T>(
        &self,
        v: &mut Opt<T>,
        key: &str,
        must: &str,
    ) -> Result<Option<T>, ConfigError> {
        match v.take() {
            None => Ok(None),
            Some(Typed::Ok(t)) => Ok(Some(t)),
            Some(Typed::Wrong(got)) => Err(self.err(key, format!("must be {must}, got {got}"))),
        }
    }

    pub(super) fn string(
        &self,
        v: &mut Opt<String>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        self.value(v, key, "a string")
    }

    pub(super) fn boolean(
        &self,
        v: &mut Opt<bool>,
        key: &str,
    ) -> Result<Option<bool>, ConfigError> {
        self.value(v, key, "true or false")
    }

    pub(super) fn uint(&self, v: &mut Opt<u64>, key: &str) -> Result<Option<u64>, ConfigError> {
        self.value(v, key, "a non-negative integer")
    }

    /// An optional count within 1..=max.
    pub(super) fn positive(
        &self,
        v: &mut Opt<u64>,
        key: &str,
        max: u64,
    ) -> Result<Option<u64>, ConfigError> {
        match self.uint(v, key)? {
            Some(n) if n == 0 || n > max => {
                Err(self.err(key, format!("must be between 1 and {max}, got {n}")))
            }
            n => Ok(n),
        }
    }

    /// Seconds as a positive number (fractions allowed), bounded above.
    pub(super) fn seconds(
        &self,
        v: &mut Opt<f64>,
        key: &str,
        default: f64,
        max: f64,
    ) -> Result<Duration, ConfigError> {
        let v = self
            .value(v, key, "a number of seconds")?
            .unwrap_or(default);
        if !(v > 0.0 && v <= max) {
            return Err(self.err(
                key,
                format!("must be greater than 0 and at most {max}, got {v}"),
            ));
        }
        Ok(Duration::from_secs_f64(v))
    }

    /// A list of non-empty strings: `list` says what the whole must be, `item`
    /// what each element must be.
    pub(super) fn names(
        &self,
        v: &mut Opt<Vec<Typed<String>>>,
        key: &str,
        list: &str,
        item: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        match v.take() {
            None => Ok(None),
            Some(Typed::Wrong(_)) => Err(self.err(key, list)),
            Some(Typed::Ok(items)) => items
                .into_iter()
                .enumerate()
                .map(|(j, s)| match s {
                    Typed::Ok(s) if !s.is_empty() => Ok(s),
                    _ => Err(self.err(&format!("{key}[{j}]"), item)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}
