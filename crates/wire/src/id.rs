//! Blob identifiers: the only names a node sees.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DecodeError;

/// Longest blob id accepted.
pub const MAX_BLOB_ID_LEN: usize = 128;

/// A client-chosen blob name, validated before any path is built from it:
/// 1 to [`MAX_BLOB_ID_LEN`] characters from `[a-z0-9_-]`. That alphabet has
/// no separators, no dots and nothing non-ASCII, so an id is always a single
/// plain path component on every file system.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlobId(String);

impl BlobId {
    /// Validates `s` as a blob id.
    pub fn new(s: impl Into<String>) -> Result<Self, DecodeError> {
        let s = s.into();
        if Self::is_valid(&s) {
            Ok(BlobId(s))
        } else {
            Err(DecodeError::Invalid("blob id"))
        }
    }

    /// Whether `s` is a valid blob id.
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_BLOB_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    }

    /// The id as a string (also its file name on a node).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BlobId {
    type Error = DecodeError;
    fn try_from(s: String) -> Result<Self, DecodeError> {
        BlobId::new(s)
    }
}

impl From<BlobId> for String {
    fn from(id: BlobId) -> String {
        id.0
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        for ok in ["a", "m-0123abcd", "p_1", &"z".repeat(MAX_BLOB_ID_LEN)] {
            assert!(BlobId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_ids() {
        let long = "a".repeat(10_000);
        for bad in [
            "",
            ".",
            "..",
            "../../etc/passwd",
            "a/b",
            "/abs",
            "a\\b",
            "a\0b",
            "ünï",
            "UPPER",
            "a.b",
            " a",
            &long,
        ] {
            assert!(BlobId::new(bad).is_err(), "{bad:?}");
        }
    }
}
