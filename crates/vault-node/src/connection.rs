//! The only code that reads and writes QUIC streams.
//!
//! Each bidirectional stream carries one request: a bounded frame (read
//! with [`wire::decode_frame_header`] first, then exactly the announced
//! body), bulk bytes for `PutBlob`, then FIN. The handlers in `cmd` see a
//! typed [`Request`] and, for uploads, a [`BulkIn`] that yields exactly the
//! announced number of bytes; they return a [`Reply`] that this module
//! writes back, streaming blob contents from disk in bounded chunks.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wire::{
    decode_frame_header, decode_request, encode_response, DecodeError, ErrorCode, Request,
    Response, FRAME_PREFIX_LEN,
};

use crate::auth::LoginState;
use crate::cmd::{self, Ctx, Reply};
use crate::state::Shared;

/// Time a client has to send a whole request frame.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause tolerated inside bulk data, either direction.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Time given to the peer to acknowledge a finished response.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest piece of an upload taken from quinn at once.
const READ_CHUNK: usize = 256 * 1024;
/// Buffer for streaming a blob from disk.
const FILE_BUF: usize = 128 * 1024;
/// Stream error code for a response abandoned half-way.
const ABORTED: VarInt = VarInt::from_u32(1);

/// Serves one client connection, whose login state is `login`, until it
/// closes or the node shuts down.
pub(crate) async fn serve(
    node: Arc<Shared>,
    conn: Connection,
    login: Arc<Mutex<LoginState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = conn.remote_address();
    let mut tasks = JoinSet::new();
    let mut shutting = *shutdown.borrow();
    tracing::debug!(%peer, "connection open");
    loop {
        if shutting && tasks.is_empty() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed(), if !shutting => {
                // A dropped sender also means shutdown.
                shutting = changed.is_err() || *shutdown.borrow();
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(%peer, "request handler panicked");
                    }
                }
            }
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let (node, login) = (node.clone(), login.clone());
                    tasks.spawn(handle_stream(node, login, send, recv, shutting));
                }
                Err(e) => {
                    tracing::debug!(%peer, reason = %e, "connection closed");
                    break;
                }
            },
        }
    }
    // In-flight requests finish (the server aborts this task, and with it
    // the JoinSet and every upload's temp-file guard, after the grace time).
    while tasks.join_next().await.is_some() {}
    if shutting {
        conn.close(VarInt::from_u32(0), b"shutdown");
    }
}

/// A bad frame, answered (best effort) with this response.
enum FrameError {
    /// The stream or connection went away: nobody to answer.
    Gone,
    /// Answer with this error.
    Bad(Response),
}

async fn handle_stream(
    node: Arc<Shared>,
    login: Arc<Mutex<LoginState>>,
    mut send: SendStream,
    mut recv: RecvStream,
    shutting: bool,
) {
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut recv)).await {
        Ok(Ok(req)) => req,
        Ok(Err(FrameError::Gone)) => return,
        Ok(Err(FrameError::Bad(resp))) => {
            let _ = recv.stop(VarInt::from_u32(0));
            return write_reply(&mut send, Reply::Message(resp)).await;
        }
        Err(_) => {
            let _ = recv.stop(VarInt::from_u32(0));
            let resp = Response::error(ErrorCode::BadRequest, "request frame timed out");
            return write_reply(&mut send, Reply::Message(resp)).await;
        }
    };
    let reply = if shutting {
        Reply::Message(Response::error(
            ErrorCode::ShuttingDown,
            "node is shutting down",
        ))
    } else {
        let len = match &request {
            Request::PutBlob { len, .. } => *len,
            _ => 0,
        };
        let ctx = Ctx {
            node: &node,
            login: &login,
        };
        cmd::dispatch(&ctx, request, BulkIn::new(&mut recv, len)).await
    };
    // Whatever the client still sends is of no interest now.
    let _ = recv.stop(VarInt::from_u32(0));
    write_reply(&mut send, reply).await;
}

async fn read_request(recv: &mut RecvStream) -> Result<Request, FrameError> {
    let bad = |e: DecodeError| {
        let code = match e {
            DecodeError::TooLarge(_) => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        };
        FrameError::Bad(Response::error(code, e.to_string()))
    };
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    read_exact(recv, &mut prefix).await?;
    let len = decode_frame_header(&prefix).map_err(bad)?;
    let mut body = vec![0u8; len];
    read_exact(recv, &mut body).await?;
    decode_request(&body).map_err(bad)
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), FrameError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Bad(Response::error(
            ErrorCode::BadRequest,
            DecodeError::Truncated.to_string(),
        )),
        quinn::ReadExactError::ReadError(_) => FrameError::Gone,
    })
}

async fn write_reply(send: &mut SendStream, reply: Reply) {
    let result = match reply {
        Reply::Message(resp) => send.write_all(&encode_response(&resp)).await.map_err(drop),
        Reply::Blob { file, len } => send_blob(send, file, len).await,
    };
    if result.is_err() {
        let _ = send.reset(ABORTED);
        return;
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stopped()).await;
}

async fn send_blob(send: &mut SendStream, mut file: tokio::fs::File, len: u64) -> Result<(), ()> {
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
    fn new(recv: &'a mut RecvStream, len: u64) -> Self {
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

    /// Tells the client to stop sending: the upload is refused.
    pub(crate) fn refuse(&mut self) {
        let _ = self.recv.stop(VarInt::from_u32(0));
    }
}
