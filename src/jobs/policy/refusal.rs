//! Why a job was refused, and how much of the client's text a refusal may quote.

use std::fmt;

/// Characters of a client value quoted in a refusal.
pub(super) const QUOTE_CHARS: usize = 40;

/// Why a job was refused. The reason names the field and the limit and quotes at most
/// 40 characters of any client value, escaped, so it is safe to log and to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    reason: String,
}

impl Refusal {
    pub(super) fn new(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
        }
    }

    /// The reason alone, without the "refused by provider policy" prefix.
    #[cfg(test)]
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Tests compare a refusal with the reason they expect.
#[cfg(test)]
impl PartialEq<&str> for Refusal {
    fn eq(&self, reason: &&str) -> bool {
        self.reason == *reason
    }
}

#[cfg(test)]
impl PartialEq<String> for Refusal {
    fn eq(&self, reason: &String) -> bool {
        self.reason == *reason
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused by provider policy: {}", self.reason)
    }
}

impl std::error::Error for Refusal {}
