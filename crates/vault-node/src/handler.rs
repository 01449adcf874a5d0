//! One request stream, start to end (mini-redis's `Handler`): read the
//! request frame, run its handler in `cmd`, write the reply, end the stream.
//!
//! Each bidirectional stream carries one request: a bounded frame (read
//! with [`wire::decode_frame_header`] first, then exactly the announced
//! body), bulk bytes for `PutBlob` and `PutBlobs`, then FIN. The handlers
//! see a typed [`Request`] and, for uploads, a [`BulkIn`] that yields
//! exactly the announced number of bytes; they return a [`Reply`] that
//! this module writes back, streaming blob contents from disk
//! ([`bulk::send_bulk`]).
//! With [`bulk`], the only code that reads and writes QUIC streams.
//!
//! A frame body is read as its bytes arrive, never allocated up front from
//! the announced length. Before the connection logs in, a frame may
//! announce at most [`PRE_LOGIN_MAX_FRAME`] bytes (a `Hello` or a `Login`
//! is far smaller); a longer one is answered `TooLarge` at once. After
//! login, each request takes a place in its user's cap of running requests
//! (see `admission`); over it, the request is answered `Busy` unrun.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{RecvStream, SendStream, VarInt};
use wire::{
    decode_frame_header, decode_request, encode_response, DecodeError, ErrorCode, Request,
    Response, FRAME_PREFIX_LEN,
};

use crate::auth::LoginState;
use crate::bulk::{self, BulkIn};
use crate::cmd::{self, Ctx, Reply};
use crate::state::Shared;

/// Time a client has to send a whole request frame.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time given to the peer to acknowledge a finished response.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Stream error code for a response abandoned half-way.
const ABORTED: VarInt = VarInt::from_u32(1);
/// Largest frame body accepted before the connection logged in.
pub(crate) const PRE_LOGIN_MAX_FRAME: usize = 1024;

/// A bad frame, answered (best effort) with this response.
enum FrameError {
    /// The stream or connection went away: nobody to answer.
    Gone,
    /// Answer with this error.
    Bad(Response),
}

/// Serves the request on one stream of a connection whose login state is
/// `login`. Once the node is `shutting` down, a new request is answered
/// `ShuttingDown` without being run.
pub(crate) async fn run(
    node: Arc<Shared>,
    login: Arc<Mutex<LoginState>>,
    mut send: SendStream,
    mut recv: RecvStream,
    shutting: bool,
) {
    let read = read_request(&mut recv, &login);
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
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
    // Held until the reply is written.
    let place = login.lock().unwrap_or_else(|p| p.into_inner()).request();
    let reply = if shutting {
        Reply::Message(Response::error(
            ErrorCode::ShuttingDown,
            "node is shutting down",
        ))
    } else if let Err(cap) = &place {
        Reply::Message(Response::error(
            ErrorCode::Busy,
            format!("too many requests running for this user (at most {cap}); retry shortly"),
        ))
    } else {
        let len = bulk_len(&request);
        let ctx = Ctx {
            node: &node,
            login: &login,
        };
        cmd::dispatch(&ctx, request, BulkIn::new(&mut recv, len)).await
    };
    // Whatever the client still sends is of no interest now (a refused
    // upload's bytes included).
    let _ = recv.stop(VarInt::from_u32(0));
    write_reply(&mut send, reply).await;
    drop(place);
}

/// The number of bulk bytes that follow `req`'s frame: a `PutBlob`'s
/// length, the sum of a `PutBlobs`' (bounded and checked for overflow by
/// the decoder), 0 for the others.
fn bulk_len(req: &Request) -> u64 {
    match req {
        Request::PutBlob { len, .. } => *len,
        Request::PutBlobs { items } => items.iter().fold(0u64, |t, i| t.saturating_add(i.len)),
        _ => 0,
    }
}

/// Reads one request frame, whose body may be at most
/// [`PRE_LOGIN_MAX_FRAME`] bytes unless the connection is logged in.
async fn read_request(
    recv: &mut RecvStream,
    login: &Mutex<LoginState>,
) -> Result<Request, FrameError> {
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
    let logged_in = login
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .user()
        .is_some();
    let max_body = if logged_in {
        wire::MAX_FRAME_BODY_LEN
    } else {
        PRE_LOGIN_MAX_FRAME
    };
    if len > max_body {
        return Err(FrameError::Bad(Response::error(
            ErrorCode::TooLarge,
            format!("frame of {len} bytes exceeds the limit of {max_body} bytes before login"),
        )));
    }
    let body = read_body(recv, len).await?;
    decode_request(&body).map_err(bad)
}

/// Reads exactly `len` bytes, growing the buffer as they arrive (an
/// announced length costs nothing until the bytes are sent).
async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::new();
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(FrameError::Bad(Response::error(
                    ErrorCode::BadRequest,
                    DecodeError::Truncated.to_string(),
                )))
            }
            Err(_) => return Err(FrameError::Gone),
        }
    }
    Ok(body)
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
        Reply::Bulk { head, files } => bulk::send_bulk(send, &head, files).await,
    };
    if result.is_err() {
        let _ = send.reset(ABORTED);
        return;
    }
    let _ = send.finish();
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stopped()).await;
}
