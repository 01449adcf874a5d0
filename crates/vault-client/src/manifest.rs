//! The per-file manifest: everything a node must not see (the name, a
//! relative path like `photos/2024/a.jpg`; the plaintext size, the content hash, the placement), sealed under the
//! master key and stored under an id derived from the name.
//!
//! A sealed manifest is `"VLTm" 0x02 | nonce (24) | XChaCha20-Poly1305
//! ciphertext`, with associated data binding the header, the user and the
//! manifest id, so a node can neither move a manifest to another name or
//! user nor pass off another format as this one.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use wire::BlobId;

use crate::crypto::format::{check_header, HeaderCheck, HEADER_LEN, MANIFEST_HEADER};
use crate::crypto::keys::{self, random_bytes, KeyError, MasterKey, FILE_ID_LEN};
use crate::placement::{part_ranges, placement_x, PARTS};

/// Longest file name a manifest holds, in bytes.
pub use crate::path::MAX_NAME_LEN;
/// Largest sealed manifest a client reads from a node.
pub const MAX_SEALED_LEN: usize = 16 * 1024;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The lengths a sealed manifest is padded to, so that a node learns
/// neither the length of a name nor which manifests are tombstones: a
/// name of up to about 400 bytes gives 512, the longest one 8 KiB.
pub const SEALED_SIZES: [usize; 5] = [512, 1024, 2048, 4096, 8192];

/// Why a stored manifest was not accepted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ManifestError {
    /// Not a format-2 manifest: written by Vault 0.1 (format 1), or damaged.
    #[error("not a storage format 2 manifest (Vault 0.1 wrote format 1)")]
    OtherFormat,
    /// Tampered with, moved, or not a manifest at all.
    #[error("decryption failed")]
    Decryption,
}

/// What the client knows about one version of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The file's name in the vault.
    pub name: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// MD5 of the contents (the placement contract's input).
    #[serde(with = "serde_bytes")]
    pub md5: Vec<u8>,
    /// Random id of this version; parts' keys and ids derive from it.
    #[serde(with = "serde_bytes")]
    pub file_id: Vec<u8>,
    /// Increases with every PUT or DELETE of the name.
    pub version: u64,
    /// A tombstone: the file was deleted while a node was unreachable.
    pub deleted: bool,
    /// Modification time of the source file, nanoseconds since the Unix
    /// epoch: with `size`, what an incremental PUT compares.
    pub mtime_ns: Option<u64>,
    /// What the gateway keeps beside the bytes (S3 metadata, folder
    /// markers). Absent from what Vault 0.2 and the command line write, so
    /// their manifests seal to the same bytes as before.
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
    /// Where an erasure-coded version's shards are (`Redundancy rs K+M`);
    /// `None`: the classic layout (four parts, the MD5 placement table).
    /// Absent from classic manifests, so theirs seal to the same bytes as
    /// Vault 0.2's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<Shards>,
}

/// The longest node name a manifest records, in bytes.
pub const MAX_NODE_NAME_LEN: usize = 64;

/// An erasure-coded version's scheme and where each shard went, recorded at
/// PUT: a GET reads exactly these nodes and never recomputes placement
/// from today's dfc.conf, so adding or removing nodes leaves every file
/// readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shards {
    /// K data and M parity shards per chunk.
    pub scheme: crate::erasure::Scheme,
    /// The id the data's keys and shard ids derive from: the file id of
    /// the PUT that stored it, kept when `repair --rebalance` records
    /// moved shards in a newer manifest version.
    #[serde(with = "serde_bytes")]
    pub data_id: Vec<u8>,
    /// The node (its dfc.conf name) holding shard `i`, for every shard.
    pub nodes: Vec<String>,
}

impl Shards {
    /// Within the bounds a reader accepts: a valid scheme, one distinct
    /// (case-insensitively) non-empty name per shard.
    pub fn well_formed(&self) -> bool {
        self.scheme.validate().is_ok()
            && self.data_id.len() == FILE_ID_LEN
            && self.nodes.len() == self.scheme.shards()
            && self.nodes.iter().enumerate().all(|(i, n)| {
                !n.is_empty()
                    && n.len() <= MAX_NODE_NAME_LEN
                    && !self.nodes[..i].iter().any(|o| o.eq_ignore_ascii_case(n))
            })
    }
}

/// Longest `Content-Type` a manifest keeps, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 256;
/// Most bytes of user metadata (`x-amz-meta-*` names and values together)
/// a manifest keeps: S3's own limit.
pub const MAX_USER_META_LEN: usize = 2048;
/// Longest stored ETag (the multipart form `md5hex-N`).
const MAX_ETAG_LEN: usize = 48;

/// The object metadata S3 clients set and read back, and folder markers.
/// Sealed inside the manifest like the name: nodes see none of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    /// `Content-Type`, as the uploader gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `x-amz-meta-*` pairs (names lower-case, without the prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user: Vec<(String, String)>,
    /// The standard headers an uploader set and a GET returns
    /// (`cache-control`, `content-disposition`, `content-encoding`,
    /// `content-language`, `expires`), lower-case names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The ETag when it is not the contents' MD5 (a multipart upload's
    /// `md5-of-md5s-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// An empty folder's marker (an S3 bucket made by `CreateBucket`): a
    /// file of no bytes that listings show as the folder `name/`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub folder: bool,
}

impl Extra {
    /// Nothing set: what command-line PUTs store.
    pub fn is_empty(&self) -> bool {
        *self == Extra::default()
    }

    /// Within the bounds a reader accepts.
    pub fn well_formed(&self) -> bool {
        self.content_type
            .as_ref()
            .is_none_or(|t| t.len() <= MAX_CONTENT_TYPE_LEN)
            && self
                .user
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
                <= MAX_USER_META_LEN
            && self.headers.len() <= 8
            && self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
                <= MAX_USER_META_LEN
            && self.etag.as_ref().is_none_or(|e| e.len() <= MAX_ETAG_LEN)
    }
}

impl Manifest {
    /// The placement value `x` (MD5 mod 4).
    pub fn placement(&self) -> usize {
        let mut d = [0u8; 16];
        d.copy_from_slice(&self.md5);
        placement_x(&d)
    }

    /// `(offset, len)` of each plaintext part.
    pub fn parts(&self) -> [(u64, u64); PARTS] {
        part_ranges(self.size)
    }

    /// A tombstone that supersedes `self`.
    pub fn tombstone(&self) -> Result<Manifest, KeyError> {
        Ok(Manifest {
            name: self.name.clone(),
            size: 0,
            md5: keys::md5_of(b"").to_vec(),
            file_id: random_bytes::<FILE_ID_LEN>()?.to_vec(),
            version: self.version + 1,
            deleted: true,
            mtime_ns: None,
            extra: Extra::default(),
            shards: None,
        })
    }

    fn well_formed(&self) -> bool {
        self.md5.len() == 16
            && self.file_id.len() == FILE_ID_LEN
            && crate::path::check_name(&self.name).is_ok()
            && self.version > 0
            && self.extra.well_formed()
            && !(self.extra.folder && self.size != 0)
            && self.shards.as_ref().is_none_or(Shards::well_formed)
    }

    /// The S3 ETag (without quotes): the stored one, or the MD5 in hex.
    pub fn etag(&self) -> String {
        self.extra
            .etag
            .clone()
            .unwrap_or_else(|| hex::encode(&self.md5))
    }

    /// An empty folder's marker.
    pub fn is_folder(&self) -> bool {
        self.extra.folder
    }

    /// Seals the manifest for `user` under id `id`.
    pub fn seal(&self, master: &MasterKey, user: &str, id: &BlobId) -> Result<Vec<u8>, KeyError> {
        self.seal_with_nonce(master, user, id, random_bytes()?)
    }

    /// [`Self::seal`] with a given nonce: for known-answer vectors only.
    #[doc(hidden)]
    pub fn seal_with_nonce(
        &self,
        master: &MasterKey,
        user: &str,
        id: &BlobId,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, KeyError> {
        let mut plain = Vec::new();
        ciborium::into_writer(self, &mut plain).expect("writing CBOR to a Vec cannot fail");
        // Zeros after the CBOR item, up to the next size class.
        let overhead = HEADER_LEN + NONCE_LEN + TAG_LEN;
        let class = SEALED_SIZES
            .iter()
            .copied()
            .find(|&c| c >= plain.len() + overhead)
            .unwrap_or(plain.len() + overhead);
        plain.resize(class - overhead, 0);
        let sealed = keys::seal_with_nonce(&master.manifest_key(), &ad(user, id), &plain, nonce)?;
        let mut out = MANIFEST_HEADER.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a sealed manifest read from a node. Fails on any tampering,
    /// on a manifest stored under another id or user, and on contents that
    /// are not a well-formed manifest, all as the one opaque
    /// [`ManifestError::Decryption`]; an object without the format-2 header
    /// is [`ManifestError::OtherFormat`].
    pub fn open(
        sealed: &[u8],
        master: &MasterKey,
        user: &str,
        id: &BlobId,
    ) -> Result<Manifest, ManifestError> {
        if check_header(sealed, &MANIFEST_HEADER) == HeaderCheck::Other {
            return Err(ManifestError::OtherFormat);
        }
        if sealed.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || sealed.len() > MAX_SEALED_LEN {
            return Err(ManifestError::Decryption);
        }
        let plain = keys::open(&master.manifest_key(), &ad(user, id), &sealed[HEADER_LEN..])
            .map_err(|_| ManifestError::Decryption)?;
        // One CBOR item, then only zero padding (none in Vault 0.2's).
        let mut rest: &[u8] = plain.as_slice();
        let m: Manifest =
            ciborium::from_reader(&mut rest).map_err(|_| ManifestError::Decryption)?;
        if rest.iter().any(|&b| b != 0) {
            return Err(ManifestError::Decryption);
        }
        if !m.well_formed() || master.manifest_id(&m.name) != *id {
            return Err(ManifestError::Decryption);
        }
        Ok(m)
    }
}

fn ad(user: &str, id: &BlobId) -> Vec<u8> {
    let mut ad = b"vault manifest v2".to_vec();
    ad.extend_from_slice(&MANIFEST_HEADER);
    let user = user.to_ascii_lowercase();
    ad.extend_from_slice(&(user.len() as u64).to_be_bytes());
    ad.extend_from_slice(user.as_bytes());
    ad.extend_from_slice(id.as_str().as_bytes());
    ad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(master: &MasterKey) -> (Manifest, BlobId) {
        let m = Manifest {
            name: "report.pdf".into(),
            size: 12345,
            md5: vec![1; 16],
            file_id: vec![2; 16],
            version: 1,
            deleted: false,
            mtime_ns: Some(1),
            extra: Extra::default(),
            shards: None,
        };
        let id = master.manifest_id(&m.name);
        (m, id)
    }

    #[test]
    fn seal_open_round_trip() {
        let master = MasterKey::generate().unwrap();
        let (m, id) = sample(&master);
        let sealed = m.seal(&master, "alice", &id).unwrap();
        assert!(sealed.starts_with(b"VLTm\x02"));
        assert!(!sealed.windows(10).any(|w| w == b"report.pdf"));
        assert_eq!(Manifest::open(&sealed, &master, "Alice", &id).unwrap(), m);
    }

    #[test]
    fn name_length_and_tombstones_do_not_show_in_the_sealed_length() {
        let master = MasterKey::generate().unwrap();
        let sealed_len = |m: &Manifest| {
            let id = master.manifest_id(&m.name);
            m.seal(&master, "alice", &id).unwrap().len()
        };
        let (mut m, _) = sample(&master);
        m.name = "a".into();
        let short = sealed_len(&m);
        m.name = "n".repeat(200);
        let long = sealed_len(&m);
        let tomb = sealed_len(&m.tombstone().unwrap());
        assert_eq!(short, long, "names of 1 and 200 bytes seal to one length");
        assert_eq!(long, tomb, "a tombstone seals to a manifest's length");
        assert!(SEALED_SIZES.contains(&short));
        m.name = "n".repeat(MAX_NAME_LEN);
        let longest = sealed_len(&m);
        assert!(SEALED_SIZES.contains(&longest) && longest <= MAX_SEALED_LEN);
    }

    #[test]
    fn unpadded_manifests_open_and_nonzero_padding_is_refused() {
        let master = MasterKey::generate().unwrap();
        let (m, id) = sample(&master);
        let seal_plain = |plain: &[u8]| {
            let mut out = MANIFEST_HEADER.to_vec();
            let sealed =
                keys::seal_with_nonce(&master.manifest_key(), &ad("alice", &id), plain, [9; 24]);
            out.extend_from_slice(&sealed.unwrap());
            out
        };
        let mut plain = Vec::new();
        ciborium::into_writer(&m, &mut plain).unwrap();
        // What Vault 0.2 sealed: the CBOR item alone.
        assert_eq!(
            Manifest::open(&seal_plain(&plain), &master, "alice", &id).unwrap(),
            m
        );
        let mut padded = plain.clone();
        padded.resize(400, 0);
        assert_eq!(
            Manifest::open(&seal_plain(&padded), &master, "alice", &id).unwrap(),
            m
        );
        padded[399] = 1;
        assert_eq!(
            Manifest::open(&seal_plain(&padded), &master, "alice", &id),
            Err(ManifestError::Decryption)
        );
    }

    #[test]
    fn moved_or_tampered_manifests_fail() {
        let master = MasterKey::generate().unwrap();
        let (m, id) = sample(&master);
        let sealed = m.seal(&master, "alice", &id).unwrap();
        let other_id = master.manifest_id("other.txt");
        let fails = |bytes: &[u8], user: &str, id: &BlobId| {
            Manifest::open(bytes, &master, user, id).is_err()
        };
        assert!(fails(&sealed, "alice", &other_id));
        assert!(fails(&sealed, "bob", &id));
        let other_master = MasterKey::generate().unwrap();
        assert!(Manifest::open(&sealed, &other_master, "alice", &id).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            let err = Manifest::open(&bad, &master, "alice", &id).unwrap_err();
            // Header bytes say "another format"; every other byte is opaque.
            if i < HEADER_LEN {
                assert_eq!(err, ManifestError::OtherFormat);
            } else {
                assert_eq!(err, ManifestError::Decryption);
            }
        }
        assert!(fails(&sealed[..sealed.len() - 1], "alice", &id));
        assert!(fails(&[], "alice", &id));
        assert!(fails(&vec![0; MAX_SEALED_LEN + 1], "alice", &id));
    }

    #[test]
    fn extra_metadata_round_trips_and_is_bounded() {
        let master = MasterKey::generate().unwrap();
        let (mut m, id) = sample(&master);
        let plain = m.seal(&master, "alice", &id).unwrap().len();
        m.extra = Extra {
            content_type: Some("text/plain".into()),
            user: vec![("mtime".into(), "1700000000.5".into())],
            etag: Some(format!("{}-3", "ab".repeat(16))),
            headers: vec![("cache-control".into(), "no-cache".into())],
            folder: false,
        };
        let sealed = m.seal(&master, "alice", &id).unwrap();
        assert_eq!(
            sealed.len(),
            plain,
            "small metadata stays in the size class"
        );
        assert!(!sealed.windows(10).any(|w| w == b"text/plain"));
        let back = Manifest::open(&sealed, &master, "alice", &id).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.etag(), format!("{}-3", "ab".repeat(16)));
        // Over S3's 2 KiB of user metadata: refused as any malformed field.
        m.extra.user = vec![("k".into(), "v".repeat(MAX_USER_META_LEN))];
        let sealed = m.seal(&master, "alice", &id).unwrap();
        assert_eq!(
            Manifest::open(&sealed, &master, "alice", &id),
            Err(ManifestError::Decryption)
        );
        // A folder marker holds no bytes.
        m.extra = Extra {
            folder: true,
            ..Extra::default()
        };
        let sealed = m.seal(&master, "alice", &id).unwrap();
        assert!(Manifest::open(&sealed, &master, "alice", &id).is_err());
        m.size = 0;
        let sealed = m.seal(&master, "alice", &id).unwrap();
        assert!(Manifest::open(&sealed, &master, "alice", &id)
            .unwrap()
            .is_folder());
    }

    #[test]
    fn format_one_manifests_are_recognised() {
        // Vault 0.1 stored `nonce || ciphertext` with no header.
        let master = MasterKey::generate().unwrap();
        let (_, id) = sample(&master);
        let v1 = [0x5au8; 24 + 60];
        assert_eq!(
            Manifest::open(&v1, &master, "alice", &id),
            Err(ManifestError::OtherFormat)
        );
    }
}
