//! Reed-Solomon erasure coding of encrypted chunks, each shard chunk
//! authenticated on its own (issue 19, `Redundancy rs K+M`).
//!
//! A file version is sealed as one STREAM ([`crate::crypto::stream`]: 64 KiB
//! plaintext chunks, each with its AEAD tag). Every ciphertext chunk of `c`
//! bytes is cut into K data shards of `s = even(ceil(c / K))` bytes (the
//! last one padded with zeros) and M parity shards of the same size are
//! computed from them (`reed-solomon-simd`, a systematic code over
//! GF(2^16): the data shards are the chunk's own bytes, so a reader holding
//! all K of them decodes nothing). Shard `i` of every chunk goes to the
//! same node, into one blob per shard:
//!
//! ```text
//! shard blob  "VLTs" 0x03 | chunk 0: s0 bytes | tag0 (16) | chunk 1: ... | ...
//! tag_j = BLAKE2b-MAC-128(shard key, "vault shard v3" | header | K | M | i
//!                         | j | last | shard bytes)
//! shard key = kdf(master key, "vault shard key v3", file_id)
//! ```
//!
//! Reed-Solomon corrects erasures, not errors: fed a wrong shard it decodes
//! a wrong chunk without noticing. So every shard chunk carries a tag, and
//! a shard whose tag fails is dropped before decoding, as if its node were
//! down; another shard takes its place. The tag binds:
//! - the file version (`file_id`, fresh per PUT, in the key): a shard of
//!   another file, or of an older version of this one, fails;
//! - the user (the key comes from the user's master key);
//! - the shard index and the scheme: a shard moved to another position, or
//!   read as part of another K+M, fails;
//! - the chunk index and the last-chunk flag: chunks reordered, repeated,
//!   or a shard blob cut short at a chunk boundary, fail.
//!
//! The decoded chunk is then opened by the STREAM AEAD as before, so even a
//! forged tag (which needs the key) could not produce a wrong plaintext.
//! Lengths are never taken from a node: every chunk's length follows from
//! the file size in the sealed manifest ([`Scheme::chunk_lens`]).

use std::fmt;

use blake2::digest::consts::U16;
use blake2::digest::Mac;
use blake2::Blake2bMac;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use zeroize::Zeroizing;

use crate::crypto::format::{HEADER_LEN, SHARD_HEADER};
use crate::crypto::stream::{CHUNK_LEN, CT_CHUNK_LEN, TAG_LEN};

/// Length of a shard chunk's tag.
pub const SHARD_TAG_LEN: usize = 16;

/// The most shards one file is coded into: a file's shards are on
/// distinct nodes, and a vault has at most 32 (the node sets are 32-bit
/// masks). It bounds what a manifest may announce.
pub const MAX_SHARDS: usize = 32;

/// What went wrong coding or decoding shards. Deliberately coarse: which
/// check failed is the client's business, never an answer to a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    /// K or M out of range.
    #[error("unsupported erasure scheme {k}+{m}: K and M must be at least 1 and K+M at most {MAX_SHARDS}")]
    Scheme {
        /// Data shards asked for.
        k: usize,
        /// Parity shards asked for.
        m: usize,
    },
    /// Fewer than K shard chunks passed their check.
    #[error("only {good} of the {needed} shards needed could be authenticated")]
    TooFewShards {
        /// Shards that passed.
        good: usize,
        /// K.
        needed: usize,
    },
    /// A chunk length or shard index that cannot belong to this file.
    #[error("shard chunk out of range")]
    Range,
}

/// A Reed-Solomon scheme: K data shards and M parity shards per chunk; any
/// K of the K+M shards rebuild it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Scheme {
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rs {}+{}", self.k, self.m)
    }
}

impl Scheme {
    /// A scheme of `k` data and `m` parity shards: both at least 1, at most
    /// [`MAX_SHARDS`] in all.
    pub fn new(k: usize, m: usize) -> Result<Self, ErasureError> {
        if k == 0 || m == 0 || k + m > MAX_SHARDS {
            return Err(ErasureError::Scheme { k, m });
        }
        Ok(Scheme {
            k: k as u8,
            m: m as u8,
        })
    }

    /// Checks a scheme read from elsewhere (a manifest) as [`Scheme::new`] would.
    pub fn validate(self) -> Result<Self, ErasureError> {
        Scheme::new(self.k as usize, self.m as usize)
    }

    /// K.
    pub fn data(&self) -> usize {
        self.k as usize
    }

    /// K + M.
    pub fn shards(&self) -> usize {
        self.k as usize + self.m as usize
    }

    /// Bytes of each shard of a ciphertext chunk of `ct_chunk` bytes:
    /// `ceil(ct_chunk / K)` rounded up to even (the coder works on 16-bit
    /// symbols), at least 2.
    pub fn shard_len(&self, ct_chunk: usize) -> usize {
        let s = ct_chunk.div_ceil(self.data()).max(1);
        s + (s & 1)
    }

    /// The ciphertext chunk lengths of a plaintext of `plain_len` bytes,
    /// in order: full chunks, then the last (at least a tag; a 0-byte file
    /// is one tag-only chunk).
    pub fn chunk_lens(plain_len: u64) -> ChunkLens {
        let chunks = plain_len.div_ceil(CHUNK_LEN as u64).max(1);
        let last_plain = plain_len - (chunks - 1) * CHUNK_LEN as u64;
        ChunkLens {
            next: 0,
            chunks,
            last: last_plain as usize + TAG_LEN,
        }
    }

    /// Length of shard blob `i` of a file of `plain_len` bytes (the same for
    /// every `i`).
    pub fn shard_blob_len(&self, plain_len: u64) -> u64 {
        let lens = Scheme::chunk_lens(plain_len);
        let full = lens.chunks - 1;
        let per_full = (self.shard_len(CT_CHUNK_LEN) + SHARD_TAG_LEN) as u64;
        HEADER_LEN as u64
            + full.saturating_mul(per_full)
            + (self.shard_len(lens.last) + SHARD_TAG_LEN) as u64
    }

    /// Where chunk `j` starts in a shard blob (every chunk before it full).
    pub fn chunk_offset(&self, j: u64) -> u64 {
        HEADER_LEN as u64 + j * (self.shard_len(CT_CHUNK_LEN) + SHARD_TAG_LEN) as u64
    }
}

/// The ciphertext chunk lengths of one file: see [`Scheme::chunk_lens`].
#[derive(Debug, Clone)]
pub struct ChunkLens {
    next: u64,
    chunks: u64,
    last: usize,
}

impl ChunkLens {
    /// Number of chunks.
    pub fn total(&self) -> u64 {
        self.chunks
    }

    /// Chunk `j`'s ciphertext length and whether it is the last; `None`
    /// past the end.
    pub fn at(&self, j: u64) -> Option<(usize, bool)> {
        match j.cmp(&(self.chunks - 1)) {
            std::cmp::Ordering::Less => Some((CT_CHUNK_LEN, false)),
            std::cmp::Ordering::Equal => Some((self.last, true)),
            std::cmp::Ordering::Greater => None,
        }
    }
}

impl Iterator for ChunkLens {
    /// (chunk index, ciphertext length, last).
    type Item = (u64, usize, bool);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.chunks {
            return None;
        }
        let j = self.next;
        self.next += 1;
        let last = j + 1 == self.chunks;
        Some((j, if last { self.last } else { CT_CHUNK_LEN }, last))
    }
}

/// The key that authenticates every shard chunk of one file version.
#[derive(Clone)]
pub struct ShardKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardKey(<redacted>)")
    }
}

impl ShardKey {
    /// A shard key from its bytes (derived by
    /// [`crate::crypto::keys::MasterKey::sharded`]).
    pub fn new(bytes: [u8; 32]) -> Self {
        ShardKey(Zeroizing::new(bytes))
    }

    /// The tag of shard `i`'s chunk `j` under `scheme`.
    fn tag(&self, scheme: Scheme, i: usize, j: u64, last: bool, bytes: &[u8]) -> [u8; 16] {
        let mut mac =
            <Blake2bMac<U16> as Mac>::new_from_slice(&self.0[..]).expect("32-byte key is valid");
        mac.update(b"vault shard v3");
        mac.update(&SHARD_HEADER);
        mac.update(&[scheme.k, scheme.m, i as u8]);
        mac.update(&j.to_be_bytes());
        mac.update(&[last as u8]);
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Whether `chunk` (shard bytes then tag) is shard `i`'s chunk `j` of
    /// a ciphertext chunk of `ct_len` bytes: length and tag, in constant
    /// time.
    pub fn verify(
        &self,
        scheme: Scheme,
        i: usize,
        j: u64,
        last: bool,
        ct_len: usize,
        chunk: &[u8],
    ) -> bool {
        let s = scheme.shard_len(ct_len);
        if i >= scheme.shards() || chunk.len() != s + SHARD_TAG_LEN {
            return false;
        }
        let (bytes, tag) = chunk.split_at(s);
        let want = self.tag(scheme, i, j, last, bytes);
        subtle::ConstantTimeEq::ct_eq(&want[..], tag).into()
    }
}

/// Codes ciphertext chunks into authenticated shard chunks. Keeps the
/// coder's working space between chunks.
pub struct ShardEncoder {
    scheme: Scheme,
    key: ShardKey,
    rs: Option<(usize, ReedSolomonEncoder)>,
    pad: Vec<u8>,
}

impl ShardEncoder {
    /// An encoder for one file version.
    pub fn new(scheme: Scheme, key: ShardKey) -> Self {
        ShardEncoder {
            scheme,
            key,
            rs: None,
            pad: Vec::new(),
        }
    }

    /// Appends to `out[i]`, for every shard `i`, shard `i`'s chunk `j` of
    /// the ciphertext chunk `ct` (bytes, then tag). `out` has K+M buffers.
    pub fn encode(
        &mut self,
        j: u64,
        last: bool,
        ct: &[u8],
        out: &mut [Vec<u8>],
    ) -> Result<(), ErasureError> {
        let scheme = self.scheme;
        if out.len() != scheme.shards() || ct.is_empty() || ct.len() > CT_CHUNK_LEN {
            return Err(ErasureError::Range);
        }
        let s = scheme.shard_len(ct.len());
        let k = scheme.data();
        for (t, buf) in out.iter_mut().enumerate().take(k) {
            let start = buf.len();
            let from = (t * s).min(ct.len());
            let to = ((t + 1) * s).min(ct.len());
            buf.extend_from_slice(&ct[from..to]);
            buf.resize(start + s, 0);
            let tag = self.key.tag(scheme, t, j, last, &buf[start..]);
            buf.extend_from_slice(&tag);
        }
        let rs = match &mut self.rs {
            Some((len, rs)) if *len == s => rs,
            slot => {
                let rs = match slot.take() {
                    Some((_, mut rs)) => {
                        rs.reset(k, scheme.m as usize, s)
                            .map_err(|_| ErasureError::Range)?;
                        rs
                    }
                    None => ReedSolomonEncoder::new(k, scheme.m as usize, s)
                        .map_err(|_| ErasureError::Range)?,
                };
                &mut slot.insert((s, rs)).1
            }
        };
        for buf in out.iter().take(k) {
            let start = buf.len() - s - SHARD_TAG_LEN;
            rs.add_original_shard(&buf[start..start + s])
                .map_err(|_| ErasureError::Range)?;
        }
        let result = rs.encode().map_err(|_| ErasureError::Range)?;
        self.pad.clear();
        for (r, shard) in result.recovery_iter().enumerate() {
            let i = k + r;
            let tag = self.key.tag(scheme, i, j, last, shard);
            out[i].extend_from_slice(shard);
            out[i].extend_from_slice(&tag);
        }
        Ok(())
    }
}

/// Rebuilds ciphertext chunks from any K authenticated shard chunks.
pub struct ShardDecoder {
    scheme: Scheme,
    key: ShardKey,
    rs: Option<ReedSolomonDecoder>,
}

/// What [`ShardDecoder::decode`] made of the shard chunks it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Shards whose chunk failed its check (wrong length or tag): their
    /// nodes hold a damaged or forged copy.
    pub bad: Vec<usize>,
    /// Whether parity had to be used (a data shard was missing or bad).
    pub reconstructed: bool,
}

impl ShardDecoder {
    /// A decoder for one file version.
    pub fn new(scheme: Scheme, key: ShardKey) -> Self {
        ShardDecoder {
            scheme,
            key,
            rs: None,
        }
    }

    /// Whether shard `i`'s `chunk` is its chunk `j` (see [`ShardKey::verify`]).
    pub fn verify(&self, i: usize, j: u64, last: bool, ct_len: usize, chunk: &[u8]) -> bool {
        self.key.verify(self.scheme, i, j, last, ct_len, chunk)
    }

    /// Rebuilds ciphertext chunk `j` (`ct_len` bytes) into `out` (cleared
    /// first) from `shards`: (shard index, its chunk with tag), in any
    /// order, at most one per index. Chunks failing their check are
    /// listed in [`Decoded::bad`] and not used. With fewer than K good
    /// ones, `out` is left empty and the error says how many passed.
    pub fn decode(
        &mut self,
        j: u64,
        last: bool,
        ct_len: usize,
        shards: &[(usize, &[u8])],
        out: &mut Vec<u8>,
    ) -> Result<Decoded, ErasureError> {
        out.clear();
        let scheme = self.scheme;
        let (k, n) = (scheme.data(), scheme.shards());
        if ct_len == 0 || ct_len > CT_CHUNK_LEN {
            return Err(ErasureError::Range);
        }
        let s = scheme.shard_len(ct_len);
        let mut good: Vec<Option<&[u8]>> = vec![None; n];
        let mut seen = vec![false; n];
        let mut report = Decoded::default();
        for &(i, chunk) in shards {
            if i >= n || std::mem::replace(&mut seen[i], true) {
                return Err(ErasureError::Range);
            }
            if self.verify(i, j, last, ct_len, chunk) {
                good[i] = Some(&chunk[..s]);
            } else {
                report.bad.push(i);
            }
        }
        report.bad.sort_unstable();
        let count = good.iter().flatten().count();
        if count < k {
            return Err(ErasureError::TooFewShards {
                good: count,
                needed: k,
            });
        }
        if good[..k].iter().all(Option::is_some) {
            for shard in good[..k].iter().flatten() {
                out.extend_from_slice(shard);
            }
            out.truncate(ct_len);
            return Ok(report);
        }
        report.reconstructed = true;
        let rs = match &mut self.rs {
            Some(rs) => {
                rs.reset(k, scheme.m as usize, s)
                    .map_err(|_| ErasureError::Range)?;
                rs
            }
            slot => slot.insert(
                ReedSolomonDecoder::new(k, scheme.m as usize, s)
                    .map_err(|_| ErasureError::Range)?,
            ),
        };
        // Exactly K shards: more would only cost time.
        let mut fed = 0;
        for (i, shard) in good.iter().enumerate() {
            let Some(shard) = shard else { continue };
            if fed == k {
                break;
            }
            fed += 1;
            if i < k {
                rs.add_original_shard(i, shard)
            } else {
                rs.add_recovery_shard(i - k, shard)
            }
            .map_err(|_| ErasureError::Range)?;
        }
        let result = rs.decode().map_err(|_| ErasureError::Range)?;
        for (t, shard) in good.iter().enumerate().take(k) {
            match shard {
                Some(shard) => out.extend_from_slice(shard),
                None => {
                    out.extend_from_slice(result.restored_original(t).ok_or(ErasureError::Range)?)
                }
            }
        }
        out.truncate(ct_len);
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
