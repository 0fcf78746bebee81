//! Why an Anthropic request cannot be translated.

use std::fmt;

/// Why an Anthropic request cannot be sent as chat completions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// The body is not a JSON object.
    NotAnObject,
    /// A required field is absent (or null).
    MissingField(&'static str),
    /// A field is present but has the wrong shape; the text names it and says what was expected.
    Invalid(String),
    /// Valid Anthropic, but nothing in chat completions can carry it (tools, documents, ...).
    Unsupported(String),
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::NotAnObject => {
                f.write_str("Anthropic request body is not a JSON object")
            }
            TranslateError::MissingField(field) => {
                write!(f, "Anthropic request has no `{field}`")
            }
            TranslateError::Invalid(what) => write!(f, "invalid Anthropic request: {what}"),
            TranslateError::Unsupported(what) => write!(
                f,
                "cannot translate Anthropic request to chat completions: {what}"
            ),
        }
    }
}

impl std::error::Error for TranslateError {}

pub(super) fn invalid(what: String) -> TranslateError {
    TranslateError::Invalid(what)
}
