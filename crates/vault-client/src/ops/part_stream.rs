//! Reading one stored copy of a part, the way GET, `check --verify` and
//! `repair` all do: the length the manifest implies, the storage-format
//! header, then the ciphertext chunks, each authenticated in order and the
//! last one flagged, then nothing more. Only authenticated chunks are
//! handed out, and the end is reported only after the last chunk opened,
//! so a truncated, extended or reordered copy never passes.

use std::future::Future;
use std::time::Duration;

use crate::crypto::format::{part_blob_len, HEADER_LEN, PART_HEADER};
use crate::crypto::keys::PartKeys;
use crate::crypto::stream::{Decryptor, CHUNK_LEN, CT_CHUNK_LEN};
use crate::net::{Download, NetError, Session};
use wire::ErrorCode;

/// Why reading a copy failed. Authentication failures are one opaque
/// variant.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PartError {
    /// The node sent nothing for the silence limit.
    #[error("sent nothing for {0:?}")]
    Silent(Duration),
    /// The node does not hold the copy.
    #[error("part missing")]
    Missing,
    /// The node holds a blob of another length than the manifest implies.
    #[error("part has the wrong size")]
    WrongSize,
    /// The blob does not start with the storage format 2 header.
    #[error("part is not in storage format 2")]
    NotFormat2,
    /// A chunk failed authentication.
    #[error("decryption failed")]
    Auth,
    /// The connection or the node's answer failed.
    #[error("{0}")]
    Net(#[from] NetError),
}

/// How to read a copy.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadOptions {
    /// The first chunk to read: another copy delivered the ones before
    /// (a GET taking over), or a range read starts here. Only the blob's
    /// bytes from this chunk on are asked for (a ranged read); the chunks
    /// read are bound to their place by the counter all the same.
    pub from_chunk: u64,
    /// Stop before this chunk (`None`: read to the end of the part). A
    /// read that stops before the part's last chunk never sees the end of
    /// the part: fine for a range read, each chunk being authenticated at
    /// its position.
    pub to_chunk: Option<u64>,
    /// Give up with [`PartError::Silent`] when the node sends nothing for
    /// this long.
    pub silence: Option<Duration>,
    /// Keep each chunk's ciphertext ([`PartReader::ciphertext`]), to
    /// forward it.
    pub keep_ciphertext: bool,
}

/// One copy of a part being read, chunk by chunk.
pub(crate) struct PartReader {
    dl: Download,
    dec: Decryptor,
    /// The blob's length, header included.
    blob_len: u64,
    /// Where in the blob this read stops (`blob_len` unless bounded).
    end: u64,
    /// Blob bytes read so far, counted from the blob's start (bytes not
    /// asked for included).
    received: u64,
    silence: Option<Duration>,
    /// The current chunk: plaintext once opened.
    buf: Vec<u8>,
    /// The current chunk's ciphertext, when kept.
    cipher: Option<Vec<u8>>,
    /// The last chunk of this read opened: only the end of the stream may
    /// follow.
    done: bool,
    /// Where in the part's plaintext this read stops.
    plain_end: u64,
    /// Plaintext bytes opened so far, counted from the part's start.
    plain: u64,
}

/// Number of chunks a part of `plain_len` bytes is sealed in.
pub(crate) fn part_chunks(plain_len: u64) -> u64 {
    plain_len.div_ceil(CHUNK_LEN as u64).max(1)
}

impl PartReader {
    /// Asks `s` for the copy of the part `keys` names, whose plaintext is
    /// `plain_len` bytes: checks the length and, when reading from the
    /// start, the header.
    ///
    /// From a later chunk (`options.from_chunk > 0`) or up to a bound
    /// (`options.to_chunk`), only the blob's bytes of those chunks are
    /// asked for ([`Session::get_range`]); a node that does not know
    /// ranged reads is read whole, the chunks before `from_chunk` read
    /// past.
    pub(crate) async fn open(
        s: &Session,
        keys: &PartKeys,
        plain_len: u64,
        options: ReadOptions,
    ) -> Result<Self, PartError> {
        let blob_len = part_blob_len(plain_len);
        let chunks = part_chunks(plain_len);
        let from = options.from_chunk;
        let to = options.to_chunk.unwrap_or(chunks).min(chunks);
        if from >= to {
            // Nothing to read: the caller's bounds are wrong, or another
            // copy delivered the whole part.
            return Err(PartError::WrongSize);
        }
        // A chunk's place in the blob: after the header, `CT_CHUNK_LEN`
        // bytes each (the last one may be shorter).
        let at = |chunk: u64| (HEADER_LEN as u64 + chunk * CT_CHUNK_LEN as u64).min(blob_len);
        let start = if from == 0 { 0 } else { at(from) };
        let end = if to == chunks { blob_len } else { at(to) };
        let whole = start == 0 && end == blob_len;
        // Skipping the header (and the chunks before `from`) is safe: the
        // header is not secret and is bound into every chunk anyway (the
        // chunks' associated data starts with PART_HEADER, see
        // `crypto::keys::part_ad`), and each chunk's nonce is its counter
        // with the last-chunk flag (`crypto::stream`), so a chunk opens only
        // at its own position of this very part; nothing a node serves in
        // place of the bytes asked for can pass.
        let (dl, received) = if whole {
            (within(options.silence, s.get(&keys.id)).await?, 0)
        } else {
            let want = Some(end - start);
            match within(options.silence, s.get_range(&keys.id, start, want)).await {
                Ok(dl) => (dl, start),
                // A node from before ranged reads: read it whole.
                Err(PartError::Net(e)) if e.is_code(ErrorCode::BadRequest) => {
                    (within(options.silence, s.get(&keys.id)).await?, 0)
                }
                Err(e) => return Err(e),
            }
        };
        let dl = dl.ok_or(PartError::Missing)?;
        if dl.total != blob_len {
            dl.cancel();
            return Err(PartError::WrongSize);
        }
        let mut reader = PartReader {
            dl,
            dec: Decryptor::with_counter(&keys.key, &keys.ad, from.into()),
            blob_len,
            end,
            received,
            silence: options.silence,
            buf: Vec::with_capacity(CT_CHUNK_LEN),
            cipher: options
                .keep_ciphertext
                .then(|| Vec::with_capacity(CT_CHUNK_LEN)),
            done: false,
            plain_end: (to * CHUNK_LEN as u64).min(plain_len),
            plain: from * CHUNK_LEN as u64,
        };
        if reader.received == 0 {
            // The header is bound into every chunk's associated data too; a
            // wrong one is named rather than left to fail authentication.
            while reader.buf.len() < HEADER_LEN {
                let piece = reader.read(HEADER_LEN - reader.buf.len()).await?;
                reader.buf.extend_from_slice(&piece);
            }
            if reader.buf != PART_HEADER {
                reader.dl.cancel();
                return Err(PartError::NotFormat2);
            }
            reader.buf.clear();
        }
        // Read past what was not asked for (a node without ranged reads).
        let skip = at(from).max(HEADER_LEN as u64);
        while reader.received < skip {
            let want = (skip - reader.received).min(1 << 20) as usize;
            reader.read(want).await?;
        }
        Ok(reader)
    }

    /// The next chunk, authenticated: its plaintext, or `None` once the
    /// last chunk was opened and the stream ended there.
    pub(crate) async fn next(&mut self) -> Result<Option<&[u8]>, PartError> {
        if self.done {
            if self.end < self.blob_len && self.dl.len == self.blob_len {
                // A bounded read of a node without ranged reads: the rest
                // is not wanted (dropping the download stops it).
                return Ok(None);
            }
            return match within(self.silence, self.dl.next_chunk(1)).await? {
                None if self.plain == self.plain_end => Ok(None),
                None => Err(PartError::WrongSize),
                Some(_) => Err(NetError::Protocol("blob longer than announced".into()).into()),
            };
        }
        self.buf.clear();
        let at_end = loop {
            let piece = self.read(CT_CHUNK_LEN - self.buf.len()).await?;
            self.buf.extend_from_slice(&piece);
            let at_end = self.received == self.end;
            if self.buf.len() == CT_CHUNK_LEN || at_end {
                break at_end;
            }
        };
        // Only the part's own last chunk carries the last-chunk flag; a
        // read bounded before it ends on a full, unflagged chunk.
        let last = at_end && self.end == self.blob_len;
        if let Some(cipher) = &mut self.cipher {
            cipher.clear();
            cipher.extend_from_slice(&self.buf);
        }
        self.dec
            .open_chunk(&mut self.buf, last)
            .map_err(|_| PartError::Auth)?;
        self.done = at_end;
        self.plain += self.buf.len() as u64;
        // Decryption is the CPU-heavy part: let the connections' drivers
        // run between chunks, or a busy client misses its own keep-alives.
        tokio::task::yield_now().await;
        Ok(Some(&self.buf))
    }

    /// Whether the last chunk of this read was opened: the part's last
    /// one, or the one before `to_chunk` (only the end of the stream
    /// remains to be seen).
    pub(crate) fn opened_last(&self) -> bool {
        self.done
    }

    /// The ciphertext of the chunk [`PartReader::next`] returned last
    /// (with [`ReadOptions::keep_ciphertext`]).
    pub(crate) fn ciphertext(&self) -> &[u8] {
        self.cipher.as_deref().unwrap_or_default()
    }

    /// Stops reading early.
    pub(crate) fn cancel(self) {
        self.dl.cancel();
    }

    /// The next piece of the blob, at most `max` bytes; the blob ending
    /// here is an error (the caller knows more is due).
    async fn read(&mut self, max: usize) -> Result<bytes::Bytes, PartError> {
        let piece = within(self.silence, self.dl.next_chunk(max))
            .await?
            .ok_or(NetError::Protocol("blob shorter than announced".into()))?;
        self.received += piece.len() as u64;
        Ok(piece)
    }
}

/// `step`, given up as [`PartError::Silent`] after `silence` if that is set.
async fn within<T>(
    silence: Option<Duration>,
    step: impl Future<Output = Result<T, NetError>>,
) -> Result<T, PartError> {
    match silence {
        Some(limit) => tokio::time::timeout(limit, step)
            .await
            .map_err(|_| PartError::Silent(limit))?
            .map_err(PartError::from),
        None => step.await.map_err(PartError::from),
    }
}
