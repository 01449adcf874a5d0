//! Errors for bytes received from a peer.

use thiserror::Error;

/// Everything that can be wrong with a frame received from a peer. Decoding
/// never panics and never allocates more than the frame's bounded length.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame was written for a protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The frame announced a body larger than [`crate::MAX_FRAME_BODY_LEN`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u64),
    /// The input ended before the frame did.
    #[error("frame truncated")]
    Truncated,
    /// Bytes were left over after the frame body.
    #[error("trailing bytes after frame")]
    Trailing,
    /// The body is not valid CBOR for the expected message type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message decoded but a field is out of bounds (bad blob id, wrong
    /// key length, ...).
    #[error("invalid field: {0}")]
    Invalid(&'static str),
}
