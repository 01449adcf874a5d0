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
    /// Chunks to read past without opening them: another copy delivered
    /// them (a GET taking over). The chunks after are bound to their place
    /// by the counter all the same.
    pub from_chunk: u64,
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
    expected: u64,
    /// Blob bytes read so far, header and skipped chunks included.
    received: u64,
    silence: Option<Duration>,
    /// The current chunk: plaintext once opened.
    buf: Vec<u8>,
    /// The current chunk's ciphertext, when kept.
    cipher: Option<Vec<u8>>,
    /// The last chunk opened: only the end of the stream may follow.
    done: bool,
    /// Plaintext bytes the copy holds, by the manifest.
    plain_len: u64,
    /// Plaintext bytes opened so far, skipped chunks included.
    plain: u64,
}

impl PartReader {
    /// Asks `s` for the copy of the part `keys` names, whose plaintext is
    /// `plain_len` bytes: checks the length and the header, and reads past
    /// the chunks `options` skips.
    pub(crate) async fn open(
        s: &Session,
        keys: &PartKeys,
        plain_len: u64,
        options: ReadOptions,
    ) -> Result<Self, PartError> {
        let expected = part_blob_len(plain_len);
        let dl = within(options.silence, s.get(&keys.id))
            .await?
            .ok_or(PartError::Missing)?;
        if dl.len != expected {
            dl.cancel();
            return Err(PartError::WrongSize);
        }
        let mut reader = PartReader {
            dl,
            dec: Decryptor::with_counter(&keys.key, &keys.ad, options.from_chunk.into()),
            expected,
            received: 0,
            silence: options.silence,
            buf: Vec::with_capacity(CT_CHUNK_LEN),
            cipher: options
                .keep_ciphertext
                .then(|| Vec::with_capacity(CT_CHUNK_LEN)),
            done: false,
            plain_len,
            plain: options.from_chunk * CHUNK_LEN as u64,
        };
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
        let skip = HEADER_LEN as u64 + options.from_chunk * CT_CHUNK_LEN as u64;
        if skip >= expected && options.from_chunk > 0 {
            return Err(PartError::WrongSize);
        }
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
            return match within(self.silence, self.dl.next_chunk(1)).await? {
                None if self.plain == self.plain_len => Ok(None),
                None => Err(PartError::WrongSize),
                Some(_) => Err(NetError::Protocol("blob longer than announced".into()).into()),
            };
        }
        self.buf.clear();
        let last = loop {
            let piece = self.read(CT_CHUNK_LEN - self.buf.len()).await?;
            self.buf.extend_from_slice(&piece);
            let last = self.received == self.expected;
            if self.buf.len() == CT_CHUNK_LEN || last {
                break last;
            }
        };
        if let Some(cipher) = &mut self.cipher {
            cipher.clear();
            cipher.extend_from_slice(&self.buf);
        }
        self.dec
            .open_chunk(&mut self.buf, last)
            .map_err(|_| PartError::Auth)?;
        self.done = last;
        self.plain += self.buf.len() as u64;
        // Decryption is the CPU-heavy part: let the connections' drivers
        // run between chunks, or a busy client misses its own keep-alives.
        tokio::task::yield_now().await;
        Ok(Some(&self.buf))
    }

    /// Whether the last chunk was opened (only the end of the stream
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
