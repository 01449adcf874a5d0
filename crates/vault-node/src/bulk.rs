//! The bulk bytes around a request stream's frames, both ways: an
//! upload's bytes coming in after a `PutBlob` or `PutBlobs` frame
//! ([`BulkIn`]), and blob contents going out after a `Blob`, `Blobs` or
//! `DataListing` frame ([`send_bulk`]). Both stop at a pause longer than
//! [`STALL_TIMEOUT`]; a reply with files also stops at its deadline
//! ([`OpenBlob::reply_by`]), however steadily the reader trickles.
//!
//! With `handler`, the only code that reads and writes QUIC streams;
//! handlers in `cmd` get a [`BulkIn`] and never the stream under it.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::ops::Deref;
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use thiserror::Error;
use wire::{encode_response, Response};

use crate::store::OpenBlob;

/// Longest pause tolerated inside bulk data, either direction.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest piece of an upload taken from quinn at once.
const READ_CHUNK: usize = 256 * 1024;
/// Piece of blob contents read from disk at once (from one file or
/// several small ones).
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
        self.next_at_most(self.remaining).await
    }

    /// The next piece, at most `most` bytes long (for a batch, whose
    /// blobs' bytes follow one another); `None` once all announced bytes
    /// and the FIN arrived. With `most` at 0, reads as if it were 1.
    pub(crate) async fn next_at_most(&mut self, most: u64) -> Result<Option<BulkChunk>, BulkError> {
        let max = usize::try_from(most.min(self.remaining))
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

/// Writes `head`, then the first `len` bytes of each file in order (see
/// [`OpenBlob`]), read in pieces of at most [`FILE_BUF`] on blocking
/// threads, the next piece read while the last one is sent. `Err` if a
/// file ended early or failed, the peer stalled or went away, or the
/// reply was not sent whole by the earliest of the files' deadlines
/// ([`OpenBlob::reply_by`]); the files are closed when this returns.
pub(crate) async fn send_bulk(
    send: &mut SendStream,
    head: &Response,
    files: Vec<OpenBlob>,
) -> Result<(), ()> {
    let Some(deadline) = files.iter().map(OpenBlob::reply_by).min() else {
        return send_files(send, head, files).await;
    };
    match tokio::time::timeout_at(deadline, send_files(send, head, files)).await {
        Ok(sent) => sent,
        Err(_) => {
            tracing::info!("reply not taken by its deadline; stream reset");
            Err(())
        }
    }
}

async fn send_files(
    send: &mut SendStream,
    head: &Response,
    files: Vec<OpenBlob>,
) -> Result<(), ()> {
    write(send, &encode_response(head)).await?;
    let total = files.iter().fold(0u64, |t, f| t.saturating_add(f.len));
    if total == 0 {
        return Ok(());
    }
    let piece = usize::try_from(total).unwrap_or(FILE_BUF).min(FILE_BUF);
    let pieces = Pieces {
        files: files.into(),
        piece,
    };
    let mut spare = Vec::with_capacity(piece);
    let first = Vec::with_capacity(piece);
    let mut next = Some(tokio::task::spawn_blocking(move || pieces.fill(first)));
    while let Some(reading) = next.take() {
        let (pieces, buf) = match reading.await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading a blob to send failed");
                return Err(());
            }
            Err(_) => return Err(()),
        };
        if !pieces.done() {
            let spare = std::mem::take(&mut spare);
            next = Some(tokio::task::spawn_blocking(move || pieces.fill(spare)));
        }
        write(send, &buf).await?;
        spare = buf;
    }
    Ok(())
}

/// Writes `bytes`, giving up after [`STALL_TIMEOUT`].
async fn write(send: &mut SendStream, bytes: &[u8]) -> Result<(), ()> {
    match tokio::time::timeout(STALL_TIMEOUT, send.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// The bytes still to send of a reply's files, front first; each file's
/// `len` counts down as it is read.
struct Pieces {
    files: VecDeque<OpenBlob>,
    /// Bytes per piece.
    piece: usize,
}

impl Pieces {
    fn done(&self) -> bool {
        self.files.iter().all(|f| f.len == 0)
    }

    /// Fills `buf` with the next piece (across files as needed):
    /// blocking, for a blocking thread.
    fn fill(mut self, mut buf: Vec<u8>) -> io::Result<(Pieces, Vec<u8>)> {
        buf.clear();
        while buf.len() < self.piece {
            let Some(front) = self.files.front_mut() else {
                break;
            };
            if front.len == 0 {
                self.files.pop_front();
                continue;
            }
            let start = buf.len();
            let want = usize::try_from(front.len)
                .unwrap_or(usize::MAX)
                .min(self.piece - start);
            buf.resize(start + want, 0);
            let read = front.file.read(&mut buf[start..]);
            let n = match read {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob ended before its announced length",
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e),
            };
            buf.truncate(start + n);
            front.len -= n as u64;
        }
        Ok((self, buf))
    }
}
