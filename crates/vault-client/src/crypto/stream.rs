//! The STREAM construction (Hoang, Reyhanitabar, Rogaway and Vizár, as used
//! by age) over ChaCha20-Poly1305 (RFC 8439).
//!
//! A plaintext is cut into [`CHUNK_LEN`]-byte chunks; the last chunk holds
//! the remainder (possibly a full chunk, or empty only when the whole
//! plaintext is empty). Chunk `i` is sealed under the nonce
//!
//! ```text
//! nonce = i as 11-byte big-endian counter || flag    (flag = 0x01 on the last chunk, else 0x00)
//! ```
//!
//! with the caller's associated data on every chunk, which binds user, file,
//! version and part index. Reordered, dropped, truncated, spliced or appended
//! chunks therefore fail to open, and a stream that ends without a valid
//! last-flagged chunk is rejected by [`Decryptor::finish`].
//!
//! Every failure is the single opaque [`CryptoError`]: callers never learn
//! which check failed.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk (64 KiB). Every chunk but the last is exactly
/// this long.
pub const CHUNK_LEN: usize = 64 * 1024;

/// Poly1305 tag bytes appended to every chunk.
pub const TAG_LEN: usize = 16;

/// Ciphertext bytes of a full chunk.
pub const CT_CHUNK_LEN: usize = CHUNK_LEN + TAG_LEN;

/// Bytes of the big-endian chunk counter in the nonce.
const COUNTER_LEN: usize = 11;

/// One past the largest counter value an 11-byte counter can hold.
const COUNTER_LIMIT: u128 = 1 << (8 * COUNTER_LEN);

/// The nonce's flag byte on the last chunk.
const LAST_FLAG: u8 = 0x01;

/// Any failure of the stream: a bad tag, a truncated, reordered or
/// over-long stream, a misuse of the chunk API, or an exhausted counter.
///
/// Deliberately opaque, so nothing learns which check failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("decryption failed")]
pub struct CryptoError;

/// A 256-bit ChaCha20-Poly1305 key for one stream (in Vault: a per-file key).
///
/// Zeroed on drop; its `Debug` output never shows the bytes.
pub struct StreamKey(Zeroizing<[u8; 32]>);

impl StreamKey {
    /// Wraps 32 key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        StreamKey(Zeroizing::new(bytes))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.0[..]))
    }

    /// The key bytes, for tests comparing keys.
    #[cfg(test)]
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        *self.0
    }
}

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey([redacted])")
    }
}

/// The chunk counter: refuses to go past 2^88 - 1 instead of wrapping.
#[derive(Debug, Clone, Copy)]
struct Counter(u128);

impl Counter {
    /// The nonce for the current counter value, or an error once the counter
    /// is exhausted.
    fn nonce(self, last: bool) -> Result<Nonce, CryptoError> {
        if self.0 >= COUNTER_LIMIT {
            return Err(CryptoError);
        }
        let mut nonce = [0u8; COUNTER_LEN + 1];
        nonce[..COUNTER_LEN].copy_from_slice(&self.0.to_be_bytes()[16 - COUNTER_LEN..]);
        nonce[COUNTER_LEN] = if last { LAST_FLAG } else { 0 };
        Ok(Nonce::from(nonce))
    }

    /// Moves to the next chunk. Called only after [`Counter::nonce`]
    /// succeeded, so the value stays at most 2^88 and never overflows.
    fn advance(&mut self) {
        self.0 += 1;
    }

    fn is_first(self) -> bool {
        self.0 == 0
    }
}

/// Encrypts a plaintext chunk by chunk, in place.
pub struct Encryptor {
    cipher: ChaCha20Poly1305,
    ad: Box<[u8]>,
    counter: Counter,
    finished: bool,
}

impl Encryptor {
    /// Starts a stream under `key`; every chunk is bound to `ad`.
    pub fn new(key: &StreamKey, ad: &[u8]) -> Self {
        Encryptor {
            cipher: key.cipher(),
            ad: ad.into(),
            counter: Counter(0),
            finished: false,
        }
    }

    /// A stream whose next chunk uses counter value `counter`.
    #[cfg(test)]
    fn with_counter(key: &StreamKey, ad: &[u8], counter: u128) -> Self {
        let mut e = Self::new(key, ad);
        e.counter = Counter(counter);
        e
    }

    /// Encrypts one chunk in place (appends the tag).
    ///
    /// `buf.len()` must be [`CHUNK_LEN`] unless `last`; a last chunk holds
    /// 0..=[`CHUNK_LEN`] bytes, and may be empty only as the very first chunk
    /// (an empty plaintext). After `last` no more chunks are accepted. Any
    /// misuse, or an exhausted counter, is a [`CryptoError`] and leaves `buf`
    /// untouched. Give `buf` a capacity of [`CT_CHUNK_LEN`] and reuse it so
    /// sealing never allocates.
    pub fn seal_chunk(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<(), CryptoError> {
        if self.finished {
            return Err(CryptoError);
        }
        let len_ok = if last {
            buf.len() <= CHUNK_LEN && (!buf.is_empty() || self.counter.is_first())
        } else {
            buf.len() == CHUNK_LEN
        };
        if !len_ok {
            return Err(CryptoError);
        }
        let nonce = self.counter.nonce(last)?;
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce, &self.ad, buf)
            .map_err(|_| CryptoError)?;
        buf.extend_from_slice(&tag);
        self.counter.advance();
        self.finished = last;
        Ok(())
    }
}

/// Where a [`Decryptor`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// More chunks expected.
    Open,
    /// A valid last chunk was opened.
    Done,
    /// A chunk failed; every later call fails too.
    Failed,
}

/// Decrypts a ciphertext chunk by chunk, in place.
pub struct Decryptor {
    cipher: ChaCha20Poly1305,
    ad: Box<[u8]>,
    counter: Counter,
    state: State,
}

impl Decryptor {
    /// Starts opening a stream sealed under `key` and bound to `ad`.
    pub fn new(key: &StreamKey, ad: &[u8]) -> Self {
        Decryptor {
            cipher: key.cipher(),
            ad: ad.into(),
            counter: Counter(0),
            state: State::Open,
        }
    }

    /// A stream whose next chunk uses counter value `counter`: resumes a
    /// stream whose first `counter` chunks another decryptor opened (a
    /// GET taking over a part from the other copy). Those chunks are not
    /// checked again; the last-chunk flag and the counter still bind every
    /// chunk from here on to its place.
    pub(crate) fn with_counter(key: &StreamKey, ad: &[u8], counter: u128) -> Self {
        let mut d = Self::new(key, ad);
        d.counter = Counter(counter);
        d
    }

    /// Decrypts one ciphertext chunk in place (strips the tag).
    ///
    /// Non-last chunks must be exactly [`CT_CHUNK_LEN`] bytes; the last one
    /// [`TAG_LEN`]..=[`CT_CHUNK_LEN`], and only the very first chunk may be
    /// an empty last chunk. On any failure `buf` is cleared and the
    /// decryptor refuses every later chunk.
    pub fn open_chunk(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<(), CryptoError> {
        let result = self.try_open(buf, last);
        if result.is_err() {
            buf.clear();
            self.state = State::Failed;
        }
        result
    }

    fn try_open(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<(), CryptoError> {
        if self.state != State::Open {
            return Err(CryptoError);
        }
        let len = buf.len();
        let len_ok = if last {
            (TAG_LEN..=CT_CHUNK_LEN).contains(&len) && (len > TAG_LEN || self.counter.is_first())
        } else {
            len == CT_CHUNK_LEN
        };
        if !len_ok {
            return Err(CryptoError);
        }
        let nonce = self.counter.nonce(last)?;
        let body_len = len - TAG_LEN;
        let tag = Tag::clone_from_slice(&buf[body_len..]);
        buf.truncate(body_len);
        self.cipher
            .decrypt_in_place_detached(&nonce, &self.ad, buf, &tag)
            .map_err(|_| CryptoError)?;
        self.counter.advance();
        if last {
            self.state = State::Done;
        }
        Ok(())
    }

    /// Call at the end of the input: fails unless a valid last chunk was
    /// opened (and nothing failed), so a truncated stream is never accepted.
    pub fn finish(self) -> Result<(), CryptoError> {
        match self.state {
            State::Done => Ok(()),
            State::Open | State::Failed => Err(CryptoError),
        }
    }
}

/// Number of chunks a plaintext of `plain_len` bytes is sealed in.
fn chunk_count(plain_len: u64) -> u64 {
    plain_len.div_ceil(CHUNK_LEN as u64).max(1)
}

/// Ciphertext length for a plaintext of `plain_len` bytes:
/// `plain_len + TAG_LEN * max(1, ceil(plain_len / CHUNK_LEN))`.
///
/// Saturates at `u64::MAX` for plaintexts within a few GiB of `u64::MAX`.
pub fn ciphertext_len(plain_len: u64) -> u64 {
    plain_len.saturating_add(chunk_count(plain_len).saturating_mul(TAG_LEN as u64))
}

/// The plaintext length that seals to exactly `ct_len` bytes, or `None` if
/// no plaintext length does (too short, a tag-only chunk after full chunks,
/// or a final piece shorter than a tag).
pub fn plaintext_len(ct_len: u64) -> Option<u64> {
    let full = ct_len / CT_CHUNK_LEN as u64;
    let rem = ct_len % CT_CHUNK_LEN as u64;
    let tag = TAG_LEN as u64;
    if rem == 0 {
        // Only full chunks, the last of them flagged; at least one.
        (full > 0).then_some(full * CHUNK_LEN as u64)
    } else if rem > tag || (rem == tag && full == 0) {
        Some(full * CHUNK_LEN as u64 + (rem - tag))
    } else {
        None
    }
}

/// Seals a whole plaintext at once (for small data and tests; streaming code
/// uses [`Encryptor`]).
pub fn seal_all(key: &StreamKey, ad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut enc = Encryptor::new(key, ad);
    let mut out =
        Vec::with_capacity(usize::try_from(ciphertext_len(plain.len() as u64)).unwrap_or(0));
    // Only as large as the biggest chunk: the buffer is zeroised (byte by
    // byte) when dropped, and a full chunk's worth for a 2 KiB part of a
    // small file was most of the cost of sealing it.
    let mut buf = Zeroizing::new(Vec::with_capacity(plain.len().min(CHUNK_LEN) + TAG_LEN));
    let mut chunks = plain.chunks(CHUNK_LEN).peekable();
    if chunks.peek().is_none() {
        seal_into(&mut enc, &mut buf, &[], true, &mut out);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        seal_into(&mut enc, &mut buf, chunk, last, &mut out);
    }
    out
}

fn seal_into(enc: &mut Encryptor, buf: &mut Vec<u8>, chunk: &[u8], last: bool, out: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(chunk);
    // The chunk lengths and order are right by construction and a slice
    // cannot hold 2^88 chunks, so sealing cannot fail.
    enc.seal_chunk(buf, last)
        .expect("seal_all feeds well-formed chunks");
    out.extend_from_slice(buf);
}

/// Opens a whole ciphertext at once: splits it in [`CT_CHUNK_LEN`] pieces,
/// the final piece being the last chunk.
pub fn open_all(key: &StreamKey, ad: &[u8], ct: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut dec = Decryptor::new(key, ad);
    let mut out = Vec::with_capacity(ct.len());
    let mut buf = Vec::with_capacity(CT_CHUNK_LEN);
    let mut pieces = ct.chunks(CT_CHUNK_LEN).peekable();
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        buf.clear();
        buf.extend_from_slice(piece);
        dec.open_chunk(&mut buf, last)?;
        out.extend_from_slice(&buf);
    }
    dec.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AD: &[u8] = b"vault part v1|alice|file-1|7|2";

    fn key() -> StreamKey {
        StreamKey::new([0x42; 32])
    }

    /// Deterministic, non-repeating test bytes.
    fn data(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    const SIZES: [usize; 11] = [
        0,
        1,
        3,
        4,
        5,
        CHUNK_LEN - 1,
        CHUNK_LEN,
        CHUNK_LEN + 1,
        2 * CHUNK_LEN,
        2 * CHUNK_LEN + 17,
        3 * 1024 * 1024 + 5,
    ];

    #[test]
    fn round_trips_at_the_boundaries() {
        for len in SIZES {
            let plain = data(len);
            let ct = seal_all(&key(), AD, &plain);
            assert_eq!(ct.len() as u64, ciphertext_len(len as u64), "len={len}");
            assert_eq!(
                plaintext_len(ct.len() as u64),
                Some(len as u64),
                "len={len}"
            );
            assert_eq!(open_all(&key(), AD, &ct).unwrap(), plain, "len={len}");
        }
    }

    #[test]
    fn chunk_layout() {
        // Empty plaintext: one empty last chunk.
        assert_eq!(seal_all(&key(), AD, &[]).len(), TAG_LEN);
        // Exact multiple: no extra empty chunk.
        assert_eq!(seal_all(&key(), AD, &data(CHUNK_LEN)).len(), CT_CHUNK_LEN);
        assert_eq!(
            seal_all(&key(), AD, &data(2 * CHUNK_LEN)).len(),
            2 * CT_CHUNK_LEN
        );
        assert_eq!(
            seal_all(&key(), AD, &data(CHUNK_LEN + 1)).len(),
            CT_CHUNK_LEN + 1 + TAG_LEN
        );
    }

    #[test]
    fn nonce_layout_matches_stream() {
        let n = Counter(0x0102).nonce(true).unwrap();
        let mut expected = [0u8; 12];
        expected[9] = 0x01;
        expected[10] = 0x02;
        expected[11] = 0x01;
        assert_eq!(n.as_slice(), &expected);
        let n = Counter(COUNTER_LIMIT - 1).nonce(false).unwrap();
        let mut expected = [0xffu8; 12];
        expected[11] = 0;
        assert_eq!(n.as_slice(), &expected);
        // Chunk 0 of a one-chunk stream is plain ChaCha20-Poly1305 under
        // nonce 00..00 01.
        let plain = b"hello";
        let ct = seal_all(&key(), AD, plain);
        let mut nonce = [0u8; 12];
        nonce[11] = 1;
        let mut buf = plain.to_vec();
        let tag = key()
            .cipher()
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), AD, &mut buf)
            .unwrap();
        buf.extend_from_slice(&tag);
        assert_eq!(ct, buf);
    }

    #[test]
    fn lengths_invert() {
        let c = CHUNK_LEN as u64;
        let t = TAG_LEN as u64;
        let ct = CT_CHUNK_LEN as u64;
        for p in [
            0,
            1,
            2,
            c - 1,
            c,
            c + 1,
            2 * c,
            5 * c + 3,
            1 << 40,
            (1 << 40) + 1,
        ] {
            let n = ciphertext_len(p);
            assert_eq!(plaintext_len(n), Some(p), "p={p}");
        }
        for bad in [
            0,
            1,
            t - 1,
            ct + 1,
            ct + t - 1,
            ct + t,
            2 * ct + t,
            3 * ct + 5,
        ] {
            assert_eq!(plaintext_len(bad), None, "ct={bad}");
        }
        // Every ciphertext length that maps back maps back consistently.
        for n in 0..(3 * ct + 40) {
            if let Some(p) = plaintext_len(n) {
                assert_eq!(ciphertext_len(p), n, "ct={n}");
            }
        }
        assert_eq!(ciphertext_len(u64::MAX), u64::MAX);
        if let Some(p) = plaintext_len(u64::MAX) {
            assert_eq!(ciphertext_len(p), u64::MAX);
        }
    }

    fn multi() -> (Vec<u8>, Vec<u8>) {
        let plain = data(3 * CHUNK_LEN + 1000);
        let ct = seal_all(&key(), AD, &plain);
        (plain, ct)
    }

    #[test]
    fn truncation_is_detected() {
        let (_, ct) = multi();
        // Drop the last chunk: the remaining last piece is not flagged last.
        let cut = &ct[..3 * CT_CHUNK_LEN];
        assert_eq!(open_all(&key(), AD, cut), Err(CryptoError));
        let cut = &ct[..2 * CT_CHUNK_LEN];
        assert_eq!(open_all(&key(), AD, cut), Err(CryptoError));
        // Cut bytes off the end.
        for n in [1, 15, 16, 17, 1000, 1016, 1017] {
            assert_eq!(
                open_all(&key(), AD, &ct[..ct.len() - n]),
                Err(CryptoError),
                "n={n}"
            );
        }
        // A single-chunk stream cut short.
        let one = seal_all(&key(), AD, b"abc");
        for n in 1..=one.len() {
            assert_eq!(
                open_all(&key(), AD, &one[..one.len() - n]),
                Err(CryptoError)
            );
        }
        assert_eq!(open_all(&key(), AD, &[]), Err(CryptoError));
    }

    #[test]
    fn stream_without_last_chunk_fails_finish() {
        let plain = data(2 * CHUNK_LEN);
        let mut enc = Encryptor::new(&key(), AD);
        let mut ct = Vec::new();
        for chunk in plain.chunks(CHUNK_LEN) {
            let mut buf = chunk.to_vec();
            enc.seal_chunk(&mut buf, false).unwrap();
            ct.extend_from_slice(&buf);
        }
        // Chunk by chunk, every non-last chunk opens, but finish refuses.
        let mut dec = Decryptor::new(&key(), AD);
        for piece in ct.chunks(CT_CHUNK_LEN) {
            let mut buf = piece.to_vec();
            dec.open_chunk(&mut buf, false).unwrap();
        }
        assert_eq!(dec.finish(), Err(CryptoError));
        // Treating the final piece as last fails its tag.
        assert_eq!(open_all(&key(), AD, &ct), Err(CryptoError));
        // A decryptor that saw nothing cannot finish either.
        assert_eq!(Decryptor::new(&key(), AD).finish(), Err(CryptoError));
    }

    #[test]
    fn reordering_is_detected() {
        let (_, ct) = multi();
        let mut swapped = ct.clone();
        let (a, b) = swapped.split_at_mut(CT_CHUNK_LEN);
        a.swap_with_slice(&mut b[..CT_CHUNK_LEN]);
        assert_eq!(open_all(&key(), AD, &swapped), Err(CryptoError));
        // Splicing a chunk from another stream (same key and ad) fails too.
        let other = seal_all(
            &key(),
            AD,
            &data(3 * CHUNK_LEN + 1000)
                .iter()
                .map(|b| b ^ 1)
                .collect::<Vec<_>>(),
        );
        let mut spliced = ct.clone();
        spliced[CT_CHUNK_LEN..2 * CT_CHUNK_LEN].copy_from_slice(&other[..CT_CHUNK_LEN]);
        assert_eq!(open_all(&key(), AD, &spliced), Err(CryptoError));
    }

    #[test]
    fn wrong_ad_or_key_is_detected() {
        let (_, ct) = multi();
        assert_eq!(
            open_all(&key(), b"vault part v1|alice|file-1|7|3", &ct),
            Err(CryptoError)
        );
        assert_eq!(
            open_all(&key(), b"vault part v1|alice|file-2|7|2", &ct),
            Err(CryptoError)
        );
        assert_eq!(open_all(&key(), b"", &ct), Err(CryptoError));
        assert_eq!(
            open_all(&StreamKey::new([0x43; 32]), AD, &ct),
            Err(CryptoError)
        );
        let empty = seal_all(&key(), AD, &[]);
        assert_eq!(open_all(&key(), b"other", &empty), Err(CryptoError));
        assert_eq!(
            open_all(&StreamKey::new([0; 32]), AD, &empty),
            Err(CryptoError)
        );
    }

    #[test]
    fn flipped_bits_are_detected() {
        let plain = data(CHUNK_LEN + 40);
        let ct = seal_all(&key(), AD, &plain);
        // Every bit of the short tail chunk, and bits spread over the first.
        let positions = (0..ct.len()).step_by(997).chain(CT_CHUNK_LEN..ct.len());
        for pos in positions {
            for bit in [0, 3, 7] {
                let mut bad = ct.clone();
                bad[pos] ^= 1 << bit;
                assert_eq!(
                    open_all(&key(), AD, &bad),
                    Err(CryptoError),
                    "pos={pos} bit={bit}"
                );
            }
        }
        let empty = seal_all(&key(), AD, &[]);
        for pos in 0..empty.len() {
            let mut bad = empty.clone();
            bad[pos] ^= 0x80;
            assert_eq!(open_all(&key(), AD, &bad), Err(CryptoError));
        }
    }

    #[test]
    fn appended_data_is_detected() {
        for len in [0, 5, CHUNK_LEN, CHUNK_LEN + 5] {
            let ct = seal_all(&key(), AD, &data(len));
            for extra in [1, TAG_LEN, TAG_LEN + 1, CT_CHUNK_LEN] {
                let mut long = ct.clone();
                long.extend_from_slice(&data(extra));
                assert_eq!(
                    open_all(&key(), AD, &long),
                    Err(CryptoError),
                    "len={len} extra={extra}"
                );
            }
            // A whole valid stream appended.
            let mut twice = ct.clone();
            twice.extend_from_slice(&ct);
            assert_eq!(open_all(&key(), AD, &twice), Err(CryptoError), "len={len}");
        }
        // Chunk API: nothing is accepted after the last chunk.
        let ct = seal_all(&key(), AD, b"abc");
        let mut dec = Decryptor::new(&key(), AD);
        let mut buf = ct.clone();
        dec.open_chunk(&mut buf, true).unwrap();
        assert_eq!(buf, b"abc");
        let mut buf = ct.clone();
        assert_eq!(dec.open_chunk(&mut buf, true), Err(CryptoError));
        assert!(buf.is_empty());
        assert_eq!(dec.finish(), Err(CryptoError));
    }

    #[test]
    fn chunk_api_rejects_bad_lengths() {
        let mut enc = Encryptor::new(&key(), AD);
        let mut buf = vec![0u8; CHUNK_LEN - 1];
        assert_eq!(enc.seal_chunk(&mut buf, false), Err(CryptoError));
        assert_eq!(buf.len(), CHUNK_LEN - 1);
        let mut buf = vec![0u8; CHUNK_LEN + 1];
        assert_eq!(enc.seal_chunk(&mut buf, true), Err(CryptoError));
        // An empty last chunk is only valid as the first chunk.
        let mut buf = vec![0u8; CHUNK_LEN];
        enc.seal_chunk(&mut buf, false).unwrap();
        let mut empty = Vec::new();
        assert_eq!(enc.seal_chunk(&mut empty, true), Err(CryptoError));
        let mut buf = vec![1u8; 10];
        enc.seal_chunk(&mut buf, true).unwrap();
        let mut buf = vec![1u8; 10];
        assert_eq!(enc.seal_chunk(&mut buf, true), Err(CryptoError));

        // Decryptor: short and over-long pieces.
        for (len, last) in [
            (0, true),
            (TAG_LEN - 1, true),
            (CT_CHUNK_LEN + 1, true),
            (CT_CHUNK_LEN - 1, false),
            (CT_CHUNK_LEN + 1, false),
            (TAG_LEN, false),
        ] {
            let mut dec = Decryptor::new(&key(), AD);
            let mut buf = vec![0u8; len];
            assert_eq!(
                dec.open_chunk(&mut buf, last),
                Err(CryptoError),
                "len={len}"
            );
        }
        // A tag-only last chunk after a full chunk: the encryptor refuses to
        // make one, and the decryptor refuses it even with a genuine tag.
        let mut enc = Encryptor::with_counter(&key(), AD, 1);
        let mut empty = Vec::new();
        assert_eq!(enc.seal_chunk(&mut empty, true), Err(CryptoError));
        let nonce = Counter(1).nonce(true).unwrap();
        let tag = key()
            .cipher()
            .encrypt_in_place_detached(&nonce, AD, &mut empty)
            .unwrap();
        let mut stream = seal_all(&key(), AD, &data(2 * CHUNK_LEN));
        stream.truncate(CT_CHUNK_LEN);
        stream.extend_from_slice(&tag);
        assert_eq!(open_all(&key(), AD, &stream), Err(CryptoError));
    }

    #[test]
    fn failure_poisons_the_decryptor() {
        let ct = seal_all(&key(), AD, &data(2 * CHUNK_LEN));
        let mut dec = Decryptor::new(&key(), AD);
        let mut bad = ct[..CT_CHUNK_LEN].to_vec();
        bad[0] ^= 1;
        assert_eq!(dec.open_chunk(&mut bad, false), Err(CryptoError));
        assert!(bad.is_empty());
        // The genuine first chunk no longer helps.
        let mut good = ct[..CT_CHUNK_LEN].to_vec();
        assert_eq!(dec.open_chunk(&mut good, false), Err(CryptoError));
        assert_eq!(dec.finish(), Err(CryptoError));
    }

    #[test]
    fn streaming_with_a_reused_buffer() {
        let plain = data(5 * CHUNK_LEN + 123);
        let mut enc = Encryptor::new(&key(), AD);
        let mut buf = Vec::with_capacity(CT_CHUNK_LEN);
        let mut ct = Vec::new();
        let n = plain.chunks(CHUNK_LEN).count();
        for (i, chunk) in plain.chunks(CHUNK_LEN).enumerate() {
            buf.clear();
            buf.extend_from_slice(chunk);
            enc.seal_chunk(&mut buf, i + 1 == n).unwrap();
            assert_eq!(buf.capacity(), CT_CHUNK_LEN, "no reallocation");
            ct.extend_from_slice(&buf);
        }
        assert_eq!(ct, seal_all(&key(), AD, &plain));
        let mut dec = Decryptor::new(&key(), AD);
        let mut out = Vec::new();
        let n = ct.chunks(CT_CHUNK_LEN).count();
        for (i, piece) in ct.chunks(CT_CHUNK_LEN).enumerate() {
            buf.clear();
            buf.extend_from_slice(piece);
            dec.open_chunk(&mut buf, i + 1 == n).unwrap();
            assert_eq!(buf.capacity(), CT_CHUNK_LEN, "no reallocation");
            out.extend_from_slice(&buf);
        }
        dec.finish().unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn counter_refuses_to_overflow() {
        let limit = COUNTER_LIMIT;
        // The last usable counter value works, on both sides.
        let mut enc = Encryptor::with_counter(&key(), AD, limit - 2);
        let mut buf1 = data(CHUNK_LEN);
        enc.seal_chunk(&mut buf1, false).unwrap();
        let mut buf2 = data(7);
        enc.seal_chunk(&mut buf2, true).unwrap();
        let mut dec = Decryptor::with_counter(&key(), AD, limit - 2);
        dec.open_chunk(&mut buf1, false).unwrap();
        dec.open_chunk(&mut buf2, true).unwrap();
        dec.finish().unwrap();
        assert_eq!(buf2, data(7));

        // Past it: an error, never a wrapped nonce.
        let mut enc = Encryptor::with_counter(&key(), AD, limit - 1);
        let mut buf = data(CHUNK_LEN);
        enc.seal_chunk(&mut buf, false).unwrap();
        let mut next = data(CHUNK_LEN);
        assert_eq!(enc.seal_chunk(&mut next, false), Err(CryptoError));
        let mut next = data(3);
        assert_eq!(enc.seal_chunk(&mut next, true), Err(CryptoError));
        assert_eq!(next, data(3), "buffer untouched on refusal");

        let mut dec = Decryptor::with_counter(&key(), AD, limit - 1);
        dec.open_chunk(&mut buf, false).unwrap();
        let mut more = seal_all(&key(), AD, b"x");
        assert_eq!(dec.open_chunk(&mut more, true), Err(CryptoError));
        assert!(Counter(limit).nonce(false).is_err());
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = StreamKey::new([0xab; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        assert_eq!(CryptoError.to_string(), "decryption failed");
    }
}
