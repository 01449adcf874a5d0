//! Requests and responses.
//!
//! Byte strings are CBOR byte strings (`serde_bytes`), never arrays of
//! integers. Lengths are checked by [`Request::validate`] /
//! [`Response::validate`], which the decoders call, so a message that
//! decodes is a message whose fields are in bounds.

use serde::{Deserialize, Serialize};

use crate::{
    normalize_user, BlobId, DecodeError, CHALLENGE_LEN, LOGIN_KEY_LEN, MAX_BATCH, MAX_BATCH_BYTES,
    MAX_ID_PREFIX_LEN, MAX_INLINE_LEN, MAX_LIST_DATA_BYTES, MAX_LIST_PAGE, MAX_SALT_LEN,
    MAX_USER_LEN, MAX_WRAPPED_KEY_LEN, MD5_LEN, MIN_SALT_LEN, SIGNATURE_LEN,
};

/// A request from a client to a node. One per QUIC stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Starts a login: asks which scheme the user logs in with and for a
    /// fresh challenge. Answered with [`Response::Challenge`] for every user
    /// name, known or not.
    Hello {
        /// User name (case-insensitive).
        user: String,
    },
    /// Proves the user's credential. Must follow `Hello` on the same
    /// connection; every later request acts as this user.
    Login {
        /// User name (case-insensitive), as in `Hello`.
        user: String,
        /// The proof of the password.
        proof: Proof,
    },
    /// Stores `len` bytes, which follow the frame on the stream, as blob `id`.
    /// Replaces an existing blob of that id atomically; with `expect`, only
    /// if the stored blob is still the one the writer read (else
    /// [`ErrorCode::Conflict`], and nothing changes).
    PutBlob {
        /// Blob to write.
        id: BlobId,
        /// Exact number of bulk bytes that follow.
        len: u64,
        /// The condition, checked atomically with the replacement.
        #[serde(default)]
        expect: Option<Expect>,
    },
    /// Reads blob `id`. Answered with [`Response::Blob`] and the bytes.
    GetBlob {
        /// Blob to read.
        id: BlobId,
    },
    /// Reads part of blob `id`: the bytes from `offset` on, at most `len`
    /// of them (`None`: to the end). Answered with [`Response::BlobRange`]
    /// (the blob's total length and how many bytes follow) and those bytes;
    /// an `offset` past the end of the blob is refused with
    /// [`ErrorCode::BadRequest`] (`offset` equal to the length gives no
    /// bytes). Nodes that predate it answer `BadRequest` too (an unknown
    /// request): a client may then fall back to [`Request::GetBlob`].
    GetBlobRange {
        /// Blob to read.
        id: BlobId,
        /// First byte to send.
        offset: u64,
        /// Most bytes to send (`None`: up to the end of the blob).
        len: Option<u64>,
    },
    /// Lists the user's blobs in id order, starting after `after`.
    List {
        /// Resume point: the last id of the previous page.
        after: Option<BlobId>,
        /// Page size, at most [`MAX_LIST_PAGE`].
        limit: u32,
        /// Only ids starting with this (at most [`crate::MAX_ID_PREFIX_LEN`]
        /// characters of the id alphabet).
        #[serde(default)]
        prefix: Option<String>,
    },
    /// Lists blobs whose id starts with `prefix`, in id order after
    /// `after`, with their contents: answered with
    /// [`Response::DataListing`] followed by the bytes of every entry whose
    /// length is at most `max_inline`, in order. The page ends after
    /// `max_entries` entries, or before the inline bytes would pass
    /// `max_bytes` (the first entry always comes).
    ListData {
        /// Resume point.
        after: Option<BlobId>,
        /// Id prefix (at most [`crate::MAX_ID_PREFIX_LEN`] characters).
        prefix: String,
        /// Most entries, at most [`crate::MAX_BATCH`].
        max_entries: u32,
        /// Most inline bytes, at most [`crate::MAX_LIST_DATA_BYTES`].
        max_bytes: u32,
        /// Largest blob carried inline, at most [`crate::MAX_INLINE_LEN`].
        max_inline: u32,
    },
    /// Reads several blobs: answered with [`Response::Blobs`] and the bytes
    /// of every blob found, in order. At most [`crate::MAX_BATCH`] ids and
    /// [`crate::MAX_BATCH_BYTES`] bytes in all.
    GetBlobs {
        /// Blobs to read.
        ids: Vec<BlobId>,
    },
    /// Stores several blobs, whose bytes follow the frame in order; each
    /// is stored atomically on its own. Answered with
    /// [`Response::BatchStored`].
    PutBlobs {
        /// Blob ids and exact lengths, at most [`crate::MAX_BATCH`] and
        /// [`crate::MAX_BATCH_BYTES`] bytes in all.
        items: Vec<PutItem>,
    },
    /// Deletes several blobs. Answered with [`Response::BatchDeleted`].
    DeleteBlobs {
        /// Blobs to delete, at most [`crate::MAX_BATCH`].
        ids: Vec<BlobId>,
    },
    /// Asks which of several blobs exist, with their sizes and times.
    /// Answered with [`Response::Stats`].
    StatBlobs {
        /// Blobs to look up, at most [`crate::MAX_BATCH`].
        ids: Vec<BlobId>,
    },
    /// Deletes blob `id`.
    Delete {
        /// Blob to delete.
        id: BlobId,
    },
    /// Asks for the node's name, version and (when logged in) usage.
    Status,
    /// Fetches the user's key record.
    GetRecord,
    /// Replaces the user's key record (and, with `login_key`, the login
    /// credential) if the stored record's generation is `expect_generation`
    /// (0 = no record yet) and, with `expect_record`, if the stored record's
    /// [`record_hash`] is that one. Only `expect_record` allows a record of
    /// the same generation to replace the stored one (two clients that
    /// created one vault at once converge on one record).
    PutRecord {
        /// Generation the client read; the write fails with `Conflict`
        /// otherwise.
        expect_generation: u64,
        /// The new record.
        record: UserRecord,
        /// [`record_hash`] of the record the client read.
        #[serde(default, with = "serde_bytes")]
        expect_record: Option<Vec<u8>>,
    },
}

/// How a user proves the password at login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proof {
    /// Legacy accounts: MD5 of the password (what classic `dfs.conf` stores).
    LegacyMd5(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Upgraded accounts: Ed25519 signature of [`crate::login_message`] with
    /// the key derived from the password.
    Signature(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Proofs are secrets (the MD5 one is password-equivalent): never log them.
        match self {
            Proof::LegacyMd5(_) => f.write_str("LegacyMd5(<redacted>)"),
            Proof::Signature(_) => f.write_str("Signature(<redacted>)"),
        }
    }
}

/// Argon2id cost and salt, as stored in a key record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Random salt.
    #[serde(with = "serde_bytes")]
    pub salt: Vec<u8>,
    /// Memory cost in KiB.
    pub m_kib: u32,
    /// Time cost (passes).
    pub t: u32,
    /// Parallelism (lanes).
    pub p: u32,
}

/// What a node keeps for a user besides blobs: the Argon2id salt and costs,
/// the vault master key wrapped under the password-derived key, and the
/// upgraded login verifier. Nodes cannot open the wrapped key.
///
/// Every field is authenticated by the wrap (the client binds them all into
/// its associated data), so a node can read `generation` and `login_key`
/// but cannot change any of them without the client noticing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Storage format ([`crate::STORAGE_FORMAT`]); records written before
    /// the field existed decode as format 1.
    #[serde(default = "format_one")]
    pub format: u16,
    /// Increases by one with every change (rotation).
    pub generation: u64,
    /// Argon2id parameters the key-encryption key and login key come from.
    pub kdf: KdfParams,
    /// Ed25519 public key the node checks upgraded logins against. `None`
    /// keeps the account's legacy login (before its first rotation).
    #[serde(with = "serde_bytes")]
    pub login_key: Option<Vec<u8>>,
    /// The master key sealed with the key-encryption key (nonce || ciphertext).
    #[serde(with = "serde_bytes")]
    pub wrapped_key: Vec<u8>,
}

fn format_one() -> u16 {
    1
}

/// How a user logs in, as a node announces it in [`Response::Challenge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthScheme {
    /// MD5 or plain-text entry from `dfs.conf`: send [`Proof::LegacyMd5`].
    Legacy,
    /// Argon2id-derived Ed25519 key: send [`Proof::Signature`].
    Upgraded(KdfParams),
}

/// One blob of a [`Request::PutBlobs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutItem {
    /// Blob to write.
    pub id: BlobId,
    /// Exact number of its bytes in the bulk data.
    pub len: u64,
    /// Store only if the stored blob is what the writer read (else the
    /// item fails with [`ErrorCode::Conflict`]).
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// The condition of a conditional write (as S3's `If-Match` /
/// `If-None-Match: *`): what the writer read, checked by the node under the
/// same lock as the replacement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// No blob of that id exists.
    Absent,
    /// The stored blob's [`content_hash`] is this.
    Hash(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Expect {
    /// The condition "the stored blob is exactly `bytes`" (`None`: absent).
    pub fn of(bytes: Option<&[u8]>) -> Self {
        match bytes {
            Some(b) => Expect::Hash(content_hash(b).to_vec()),
            None => Expect::Absent,
        }
    }

    /// Whether a stored blob whose hash is `stored` (`None`: absent)
    /// meets the condition.
    pub fn holds(&self, stored: Option<&[u8; CONTENT_HASH_LEN]>) -> bool {
        match (self, stored) {
            (Expect::Absent, None) => true,
            (Expect::Hash(want), Some(have)) => want.as_slice() == have.as_slice(),
            _ => false,
        }
    }

    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Expect::Hash(h) if h.len() != CONTENT_HASH_LEN => {
                Err(DecodeError::Invalid("expected hash length"))
            }
            _ => Ok(()),
        }
    }
}

/// Length of a [`content_hash`].
pub const CONTENT_HASH_LEN: usize = 32;

/// The hash conditional writes compare: BLAKE2b-256 of the stored bytes
/// (ciphertext; it says nothing a node does not already hold).
pub fn content_hash(bytes: &[u8]) -> [u8; CONTENT_HASH_LEN] {
    use blake2::digest::{consts::U32, Digest};
    let mut h = blake2::Blake2b::<U32>::new();
    h.update(b"vault blob v1");
    h.update(bytes);
    h.finalize().into()
}

/// The hash [`Request::PutRecord`]'s `expect_record` compares: the
/// [`content_hash`] of the record's CBOR encoding.
pub fn record_hash(record: &UserRecord) -> [u8; CONTENT_HASH_LEN] {
    let mut buf = Vec::new();
    ciborium::into_writer(record, &mut buf).expect("a record always encodes");
    content_hash(&buf)
}

/// A blob that a batch could not store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchFailure {
    /// Its position in the request.
    pub index: u32,
    /// Why.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// Size and modification time of a stored blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStat {
    /// Stored size in bytes.
    pub len: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified: u64,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// Blob id.
    pub id: BlobId,
    /// Stored size in bytes.
    pub len: u64,
    /// Last modification, seconds since the Unix epoch (0 if unknown).
    pub modified: u64,
}

/// A node's description of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name (`DFS1`...).
    pub name: String,
    /// Software version.
    pub version: String,
    /// Blobs held for the logged-in user (0 before login).
    pub blobs: u64,
    /// Bytes held for the logged-in user (0 before login).
    pub bytes: u64,
    /// The node's per-user quota in bytes, if it has one.
    pub quota: Option<u64>,
    /// Free space on the node's disk in bytes, if known.
    pub free_bytes: Option<u64>,
}

/// Machine-readable reason a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request could not be decoded or is not allowed here.
    BadRequest,
    /// Unknown user or wrong password (never says which).
    AuthFailed,
    /// Too many failed logins: retry after this many milliseconds.
    Throttled(u64),
    /// The request needs a logged-in connection.
    NotLoggedIn,
    /// No such blob or record.
    NotFound,
    /// The blob or frame is larger than the node accepts.
    TooLarge,
    /// A conditional write lost (the stored blob or record is not the one
    /// the writer read).
    Conflict,
    /// The node is at its limit of connections or streams.
    Busy,
    /// The node is shutting down.
    ShuttingDown,
    /// The write would take the user over the node's quota.
    QuotaExceeded,
    /// The node's disk is full.
    NoSpace,
    /// The node failed (disk full, I/O error).
    Internal,
}

/// A node's answer. One per stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Hello`.
    Challenge {
        /// Fresh random bytes to sign, valid for this connection.
        #[serde(with = "serde_bytes")]
        challenge: Vec<u8>,
        /// How this user logs in.
        scheme: AuthScheme,
    },
    /// Login accepted.
    LoggedIn,
    /// Blob stored durably.
    Stored,
    /// Blob follows: exactly `len` bytes after the frame.
    Blob {
        /// Number of bulk bytes that follow.
        len: u64,
    },
    /// Answer to `GetBlobRange`: exactly `len` bytes of the blob follow
    /// the frame, from the offset asked for.
    BlobRange {
        /// The whole blob's length (what the client checks against the
        /// length it expects).
        total: u64,
        /// Number of bulk bytes that follow (at most `total`).
        len: u64,
    },
    /// A page of the listing.
    Listing {
        /// Entries in id order.
        entries: Vec<ListEntry>,
        /// Whether more entries follow the last one.
        more: bool,
    },
    /// Blob deleted.
    Deleted,
    /// Answer to `Status`.
    Status(NodeStatus),
    /// A page of `ListData`: the entries, then the inline bytes.
    DataListing {
        /// Entries in id order.
        entries: Vec<ListEntry>,
        /// Whether more entries follow the last one.
        more: bool,
    },
    /// Answer to `GetBlobs`: each blob's length (`None`: not found); the
    /// bytes of those found follow, in order.
    Blobs {
        /// One per requested id.
        lens: Vec<Option<u64>>,
    },
    /// Answer to `PutBlobs`: every blob not listed here was stored.
    BatchStored {
        /// The blobs that failed.
        failed: Vec<BatchFailure>,
    },
    /// Answer to `DeleteBlobs`: the positions of ids that were not there.
    BatchDeleted {
        /// Positions in the request.
        missing: Vec<u32>,
    },
    /// Answer to `StatBlobs`: one per requested id (`None`: not found).
    Stats {
        /// In request order.
        entries: Vec<Option<BlobStat>>,
    },
    /// Answer to `GetRecord` (`None`: no record yet).
    Record(Option<UserRecord>),
    /// Key record stored.
    RecordStored,
    /// The request failed.
    Error {
        /// Reason.
        code: ErrorCode,
        /// Human-readable detail, never containing secrets.
        message: String,
    },
}

fn check_user(user: &str) -> Result<(), DecodeError> {
    if user.len() > MAX_USER_LEN || normalize_user(user).is_none() {
        return Err(DecodeError::Invalid("user name"));
    }
    Ok(())
}

fn check_prefix(prefix: &str) -> Result<(), DecodeError> {
    let ok = prefix.len() <= MAX_ID_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid("id prefix"))
    }
}

fn check_batch(n: usize) -> Result<(), DecodeError> {
    if n > MAX_BATCH {
        Err(DecodeError::Invalid("batch size"))
    } else {
        Ok(())
    }
}

impl KdfParams {
    fn validate(&self) -> Result<(), DecodeError> {
        if !(MIN_SALT_LEN..=MAX_SALT_LEN).contains(&self.salt.len()) {
            return Err(DecodeError::Invalid("salt length"));
        }
        Ok(())
    }
}

impl UserRecord {
    /// Checks field lengths.
    pub fn validate(&self) -> Result<(), DecodeError> {
        self.kdf.validate()?;
        if let Some(k) = &self.login_key {
            if k.len() != LOGIN_KEY_LEN {
                return Err(DecodeError::Invalid("login key length"));
            }
        }
        if self.wrapped_key.is_empty() || self.wrapped_key.len() > MAX_WRAPPED_KEY_LEN {
            return Err(DecodeError::Invalid("wrapped key length"));
        }
        Ok(())
    }
}

impl Request {
    /// Checks every field is in bounds (blob ids are checked on decode).
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Request::Hello { user } => check_user(user),
            Request::Login { user, proof } => {
                check_user(user)?;
                match proof {
                    Proof::LegacyMd5(d) if d.len() != MD5_LEN => {
                        Err(DecodeError::Invalid("md5 proof length"))
                    }
                    Proof::Signature(s) if s.len() != SIGNATURE_LEN => {
                        Err(DecodeError::Invalid("signature length"))
                    }
                    _ => Ok(()),
                }
            }
            Request::List { limit, prefix, .. } => {
                if *limit == 0 || *limit > MAX_LIST_PAGE {
                    return Err(DecodeError::Invalid("list limit"));
                }
                prefix.as_deref().map_or(Ok(()), check_prefix)
            }
            Request::ListData {
                prefix,
                max_entries,
                max_bytes,
                max_inline,
                ..
            } => {
                check_prefix(prefix)?;
                if *max_entries == 0 || *max_entries as usize > MAX_BATCH {
                    return Err(DecodeError::Invalid("list page size"));
                }
                if *max_bytes > MAX_LIST_DATA_BYTES || *max_inline > MAX_INLINE_LEN {
                    return Err(DecodeError::Invalid("list data bounds"));
                }
                Ok(())
            }
            Request::GetBlobs { ids }
            | Request::DeleteBlobs { ids }
            | Request::StatBlobs { ids } => check_batch(ids.len()),
            Request::PutBlob { expect, .. } => expect.as_ref().map_or(Ok(()), Expect::validate),
            Request::PutBlobs { items } => {
                check_batch(items.len())?;
                for i in items {
                    if let Some(e) = &i.expect {
                        e.validate()?;
                    }
                }
                let total = items
                    .iter()
                    .try_fold(0u64, |t, i| t.checked_add(i.len))
                    .ok_or(DecodeError::Invalid("batch length"))?;
                if total > MAX_BATCH_BYTES {
                    return Err(DecodeError::Invalid("batch length"));
                }
                Ok(())
            }
            Request::PutRecord {
                record,
                expect_record,
                ..
            } => {
                if expect_record
                    .as_ref()
                    .is_some_and(|h| h.len() != CONTENT_HASH_LEN)
                {
                    return Err(DecodeError::Invalid("expected record hash length"));
                }
                // Nodes store only current-format records.
                if record.format != crate::STORAGE_FORMAT {
                    return Err(DecodeError::Invalid("record format"));
                }
                record.validate()
            }
            _ => Ok(()),
        }
    }
}

impl Response {
    /// Checks every field is in bounds.
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Response::Challenge { challenge, scheme } => {
                if challenge.len() != CHALLENGE_LEN {
                    return Err(DecodeError::Invalid("challenge length"));
                }
                match scheme {
                    AuthScheme::Upgraded(k) => k.validate(),
                    AuthScheme::Legacy => Ok(()),
                }
            }
            Response::Listing { entries, .. } if entries.len() > MAX_LIST_PAGE as usize => {
                Err(DecodeError::Invalid("listing length"))
            }
            Response::DataListing { entries, .. } => check_batch(entries.len()),
            Response::Blobs { lens } => {
                check_batch(lens.len())?;
                let total = lens
                    .iter()
                    .flatten()
                    .try_fold(0u64, |t, l| t.checked_add(*l))
                    .ok_or(DecodeError::Invalid("batch length"))?;
                if total > MAX_BATCH_BYTES {
                    return Err(DecodeError::Invalid("batch length"));
                }
                Ok(())
            }
            Response::BlobRange { total, len } if len > total => {
                Err(DecodeError::Invalid("range longer than the blob"))
            }
            Response::BatchStored { failed } => check_batch(failed.len()),
            Response::BatchDeleted { missing } => check_batch(missing.len()),
            Response::Stats { entries } => check_batch(entries.len()),
            Response::Record(Some(r)) => r.validate(),
            _ => Ok(()),
        }
    }

    /// Shorthand for an error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::split_frame;
    use crate::{decode_request, decode_response, encode_request, encode_response};

    #[test]
    fn blob_range_round_trips_and_is_bounded() {
        let id = BlobId::new("p2-abc").unwrap();
        for len in [None, Some(0), Some(u64::MAX)] {
            let req = Request::GetBlobRange {
                id: id.clone(),
                offset: 7,
                len,
            };
            let frame = encode_request(&req);
            assert_eq!(decode_request(split_frame(&frame).unwrap()).unwrap(), req);
        }
        let ok = Response::BlobRange { total: 10, len: 3 };
        let frame = encode_response(&ok);
        assert_eq!(decode_response(split_frame(&frame).unwrap()).unwrap(), ok);
        // A node cannot announce more bytes than the blob holds.
        let bad = encode_response(&Response::BlobRange { total: 3, len: 4 });
        assert_eq!(
            decode_response(split_frame(&bad).unwrap()),
            Err(DecodeError::Invalid("range longer than the blob"))
        );
    }
}
