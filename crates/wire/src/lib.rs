//! The Vault wire protocol: message types, framing and limits.
//!
//! This crate does no I/O. It turns typed requests and responses into bytes
//! and back, and says how many bytes a reader may accept. The node and the
//! client own the sockets.
//!
//! # Layout
//!
//! - [`frame`]: the frame header (protocol version + body length), the
//!   encoders and the bounded decoders.
//! - [`message`]: the request and response types carried in a frame.
//! - [`id`]: [`BlobId`], the only name a node ever sees for stored data.
//! - [`error`]: [`DecodeError`], everything that can be wrong with bytes
//!   received from a peer.
//! - [`kdf`]: the password-to-login-key formula (Argon2id, BLAKE2b,
//!   Ed25519) nodes and clients share, and its default costs.
//!
//! # The exchange
//!
//! Every request travels on its own bidirectional QUIC stream:
//!
//! ```text
//! client -> node:  frame(Request)  [bulk bytes, for PutBlob]  FIN
//! node -> client:  frame(Response) [bulk bytes, for Blob, BlobRange...] FIN
//! ```
//!
//! A frame is `version: u16 BE | length: u32 BE | CBOR body`, with the body
//! at most [`MAX_FRAME_BODY_LEN`] bytes. Bulk data (blob contents) is never
//! inside a CBOR value: its length is announced in the frame and the raw
//! bytes follow it on the stream.
#![forbid(unsafe_code)]

pub mod error;
pub mod frame;
pub mod id;
pub mod kdf;
pub mod message;

pub use error::DecodeError;
pub use frame::{
    decode_frame_header, decode_request, decode_response, encode_request, encode_response,
    FRAME_PREFIX_LEN,
};
pub use id::BlobId;
pub use message::*;

/// ALPN protocol identifier spoken by nodes and clients (TLS 1.3 over QUIC).
/// Version 2 goes with storage format 2; a version-1 peer fails the TLS
/// handshake instead of misreading anything.
pub const ALPN: &[u8] = b"vault/2";

/// Version number carried in every frame header.
pub const PROTOCOL_VERSION: u16 = 2;

/// Storage format of key records, manifests and parts written by this
/// release. Format 1 (Vault 0.1) is recognised and refused, never misread.
pub const STORAGE_FORMAT: u16 = 2;

/// Largest CBOR body a peer accepts in one frame (requests and responses).
pub const MAX_FRAME_BODY_LEN: usize = 64 * 1024;

/// Longest user name accepted anywhere.
pub const MAX_USER_LEN: usize = 64;

/// Most entries a node returns in one `List` page.
pub const MAX_LIST_PAGE: u32 = 256;

/// Most blobs named in one batch request (`GetBlobs`, `PutBlobs`,
/// `DeleteBlobs`, `StatBlobs`) or returned in one `ListData` page: their
/// ids fit in one frame.
pub const MAX_BATCH: usize = 512;

/// Most bulk bytes one batch request or answer carries (`PutBlobs`,
/// `GetBlobs`).
pub const MAX_BATCH_BYTES: u64 = 64 << 20;

/// Largest `max_bytes` of a `ListData` page.
pub const MAX_LIST_DATA_BYTES: u32 = 8 << 20;

/// Largest blob whose contents a `ListData` page carries inline.
pub const MAX_INLINE_LEN: u32 = 64 * 1024;

/// Longest id prefix a listing may filter on.
pub const MAX_ID_PREFIX_LEN: usize = 16;

/// Largest blob a node accepts unless configured otherwise (64 GiB).
pub const DEFAULT_MAX_BLOB_LEN: u64 = 64 << 30;

/// Length of the login challenge a node issues.
pub const CHALLENGE_LEN: usize = 32;

/// Length of an Ed25519 public key (the upgraded login verifier).
pub const LOGIN_KEY_LEN: usize = 32;

/// Length of an Ed25519 signature (the upgraded login proof).
pub const SIGNATURE_LEN: usize = 64;

/// Length of an MD5 digest (the legacy login proof).
pub const MD5_LEN: usize = 16;

/// Bounds on a salt stored in a key record.
pub const MIN_SALT_LEN: usize = 16;
/// See [`MIN_SALT_LEN`].
pub const MAX_SALT_LEN: usize = 64;

/// Largest wrapped master key accepted in a key record.
pub const MAX_WRAPPED_KEY_LEN: usize = 256;

/// Domain separation for the upgraded login signature.
pub const LOGIN_CONTEXT: &[u8] = b"vault login v1";

/// The exact bytes a client signs to log in to the node called `node`.
///
/// Binding the node name and a fresh per-connection challenge means a
/// signature shown to one node can neither be replayed to it later nor used
/// against another node.
pub fn login_message(node: &str, user: &str, challenge: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(LOGIN_CONTEXT.len() + node.len() + user.len() + 48);
    m.extend_from_slice(LOGIN_CONTEXT);
    for part in [node.as_bytes(), user.as_bytes(), challenge] {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part);
    }
    m
}

/// Normalises a user name: case-insensitive, so lower-case. Returns `None`
/// for names that are empty, too long or not plain printable ASCII without
/// path separators (such names could never be folder names on a node).
pub fn normalize_user(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_LEN
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
    ok.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_message_is_unambiguous() {
        assert_ne!(
            login_message("DFS1", "ab", b"c"),
            login_message("DFS1a", "b", b"c")
        );
    }

    #[test]
    fn user_names() {
        assert_eq!(normalize_user("Alice").as_deref(), Some("alice"));
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", ".hidden", "a\0", "é"] {
            assert_eq!(normalize_user(bad), None, "{bad:?}");
        }
        assert_eq!(normalize_user(&"a".repeat(65)), None);
    }
}
