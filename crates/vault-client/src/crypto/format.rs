//! Stored-object headers and lengths (storage format 2).
//!
//! Every object the client stores on a node starts with a five-byte header
//! naming its kind and storage format, and the header is part of the
//! associated data of the encryption that follows, so a node can neither
//! relabel an object nor pass off another kind or format as this one:
//!
//! ```text
//! part      "VLTp" 0x02 | STREAM ciphertext (64 KiB chunks + 16-byte tags)
//! manifest  "VLTm" 0x02 | XChaCha20-Poly1305 nonce (24) | ciphertext
//! ```
//!
//! Key records travel as [`wire::UserRecord`], whose `format` field plays
//! the same role. Vault 0.1 (format 1) wrote objects without a header; they
//! are recognised as "not format 2" and refused, never misread.

use super::stream::{ciphertext_len, plaintext_len};

/// Length of an object header.
pub const HEADER_LEN: usize = 5;

/// The storage format this build writes and reads.
pub const FORMAT: u8 = 2;

/// Header of a part blob.
pub const PART_HEADER: [u8; HEADER_LEN] = *b"VLTp\x02";

/// Header of a manifest blob.
pub const MANIFEST_HEADER: [u8; HEADER_LEN] = *b"VLTm\x02";

/// Header of a shard blob (storage format 3, erasure-coded files: see
/// [`crate::erasure`]).
pub const SHARD_HEADER: [u8; HEADER_LEN] = *b"VLTs\x03";

/// Prefix of shard ids (`p3-` and 64 hex digits): data blobs of format 3.
pub const SHARD_ID_PREFIX: &str = "p3-";

/// Prefix of format-2 manifest ids (`m2-` and 64 hex digits).
pub const MANIFEST_ID_PREFIX: &str = "m2-";

/// Prefix of format-2 part ids (`p2-` and 64 hex digits).
pub const PART_ID_PREFIX: &str = "p2-";

/// Whether `id` names an object Vault 0.1 (format 1) stored: `m-` or `p-`
/// and 64 hex digits.
pub fn is_format1_id(id: &str) -> bool {
    ["m-", "p-"].iter().any(|p| {
        id.strip_prefix(p)
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// Whether `id` is a format-2 manifest id.
pub fn is_manifest_id(id: &str) -> bool {
    id.strip_prefix(MANIFEST_ID_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Stored size of a part holding `plain_len` bytes of plaintext.
pub fn part_blob_len(plain_len: u64) -> u64 {
    ciphertext_len(plain_len).saturating_add(HEADER_LEN as u64)
}

/// The plaintext length a part blob of `blob_len` bytes holds, if any.
pub fn part_plain_len(blob_len: u64) -> Option<u64> {
    plaintext_len(blob_len.checked_sub(HEADER_LEN as u64)?)
}

/// What the first bytes of a stored object say about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderCheck {
    /// The expected header.
    Current,
    /// Not a format-2 object of this kind: format 1 (which had no header)
    /// or something damaged or forged.
    Other,
}

/// Checks that `bytes` start with `header`.
pub fn check_header(bytes: &[u8], header: &[u8; HEADER_LEN]) -> HeaderCheck {
    if bytes.get(..HEADER_LEN) == Some(&header[..]) {
        HeaderCheck::Current
    } else {
        HeaderCheck::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for n in [0u64, 1, 65_535, 65_536, 65_537, 1 << 30] {
            assert_eq!(part_plain_len(part_blob_len(n)), Some(n));
        }
        assert_eq!(part_plain_len(0), None);
        assert_eq!(part_plain_len(HEADER_LEN as u64), None);
    }

    #[test]
    fn ids_and_headers() {
        let hex = "ab".repeat(32);
        assert!(is_format1_id(&format!("m-{hex}")));
        assert!(is_format1_id(&format!("p-{hex}")));
        assert!(!is_format1_id(&format!("m2-{hex}")));
        assert!(is_manifest_id(&format!("m2-{hex}")));
        assert!(!is_manifest_id(&format!("m-{hex}")));
        assert_eq!(
            check_header(b"VLTp\x02rest", &PART_HEADER),
            HeaderCheck::Current
        );
        assert_eq!(
            check_header(b"VLTp\x01rest", &PART_HEADER),
            HeaderCheck::Other
        );
        assert_eq!(check_header(b"VLT", &PART_HEADER), HeaderCheck::Other);
        assert_eq!(check_header(b"VLTm\x02", &PART_HEADER), HeaderCheck::Other);
    }
}
