//! The bulk bytes around a request stream's frames, both ways: an upload's
//! bytes coming in after a `PutBlob` frame ([`BulkIn`]), and a blob's bytes
//! going out after its `Blob{len}` frame ([`send_blob`]). Both stop at a
//! pause longer than [`STALL_TIMEOUT`].
//!
//! With `handler`, the only code that reads and writes QUIC streams;
//! handlers in `cmd` get a [`BulkIn`] and never the stream under it.

use std::ops::Deref;
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use wire::{encode_response, Response};

/// Longest pause tolerated inside bulk data, either direction.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest piece of an upload taken from quinn at once.
const READ_CHUNK: usize = 256 * 1024;
/// Buffer for streaming a blob from disk.
const FILE_BUF: usize = 128 * 1024;

/// Why an upload's bytes did not arrive as announced.
#[derive(Debug, Error)]
pub(crate) enum BulkError {
    /// The stream ended, was reset or the connection was lost early.
    #[error("upload ended before the announced length")]
    Short,
    /// Bytes followed the announced length.
    #[error("upload is longer than announced")]
    TooMany,
    /// No data for too long.
    #[error("upload stalled")]
    Stalled,
}

/// A piece of an upload.
pub(crate) struct BulkChunk(quinn::Chunk);

impl Deref for BulkChunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0.bytes
    }
}

/// The bulk bytes that follow a request frame: exactly `remaining` bytes,
/// then FIN.
pub(crate) struct BulkIn<'a> {
    recv: &'a mut RecvStream,
    remaining: u64,
}

impl<'a> BulkIn<'a> {
    /// The `len` bytes announced by the request just read from `recv`.
    pub(crate) fn new(recv: &'a mut RecvStream, len: u64) -> Self {
        BulkIn {
            recv,
            remaining: len,
        }
    }

    /// The next piece; `None` once all announced bytes and the FIN arrived.
    pub(crate) async fn next(&mut self) -> Result<Option<BulkChunk>, BulkError> {
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .clamp(1, READ_CHUNK);
        let read = tokio::time::timeout(STALL_TIMEOUT, self.recv.read_chunk(max, true));
        match read.await {
            Err(_) => Err(BulkError::Stalled),
            Ok(Err(_)) => Err(BulkError::Short),
            Ok(Ok(None)) if self.remaining == 0 => Ok(None),
            Ok(Ok(None)) => Err(BulkError::Short),
            Ok(Ok(Some(_))) if self.remaining == 0 => Err(BulkError::TooMany),
            Ok(Ok(Some(chunk))) => {
                self.remaining -= chunk.bytes.len() as u64;
                Ok(Some(BulkChunk(chunk)))
            }
        }
    }
}

/// Writes `Blob{len}` and then `len` bytes of `file`, in bounded pieces.
/// `Err` if the file ended early, or the peer stalled or went away.
pub(crate) async fn send_blob(
    send: &mut SendStream,
    mut file: tokio::fs::File,
    len: u64,
) -> Result<(), ()> {
    let stall = |r: Result<Result<(), quinn::WriteError>, _>| match r {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    };
    let frame = encode_response(&Response::Blob { len });
    stall(tokio::time::timeout(STALL_TIMEOUT, send.write_all(&frame)).await)?;
    let mut buf = vec![
        0u8;
        FILE_BUF
            .min(usize::try_from(len).unwrap_or(FILE_BUF))
            .max(1)
    ];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => {
                tracing::error!("blob ended before its announced length");
                return Err(());
            }
            Ok(n) => n,
        };
        stall(tokio::time::timeout(STALL_TIMEOUT, send.write_all(&buf[..n])).await)?;
        left -= n as u64;
    }
    Ok(())
}
