//! `PutBlob{id, len, expect}` + exactly `len` bytes + FIN -> `Stored`.
//!
//! The bytes are buffered (in memory for a blob up to the node's
//! `--inline-max`, otherwise in a temp file, synced) and become the blob
//! only after they all arrived and the stream ended: the user's writer
//! then stores them in one index transaction (inline in the user's
//! database, or a new file `<id>.<n>` renamed into place first) and
//! answers once it is committed. Any other outcome (short, long, reset,
//! lost connection, node shutdown) leaves the old blob, if any, untouched
//! and no temp file behind.
//!
//! The announced length plus [`crate::store::BLOB_OVERHEAD`] is reserved
//! against the node's per-user quota, and a new id takes a place under the
//! per-user blob count cap, before any byte is read; an upload over either
//! is refused with `QuotaExceeded`, and one that fills the disk ends with
//! `NoSpace`.
//!
//! With `expect`, the blob is replaced only if the stored one is still
//! what the writer read (`Absent`: none; `Hash`: its
//! [`wire::content_hash`]), checked by the user's writer inside the
//! transaction that stores the blob; otherwise the answer is `Conflict` and nothing changed
//! (no temp file left, the quota given back). The condition is checked
//! once before the bytes are read as well, to refuse early. A `Hash`
//! condition naming a stored blob over [`crate::store::MAX_EXPECT_LEN`]
//! bytes is refused with `BadRequest`.

use wire::{BlobId, ErrorCode, Expect, Response};

use super::{internal, Ctx};
use crate::bulk::BulkIn;
use crate::store::PutError;

/// What a full disk cost.
const LOST: &str = "the blob was not stored";

/// On `Err`, the bytes not read yet are refused (`handler` stops the
/// stream before it answers).
pub(crate) async fn run(
    ctx: &Ctx<'_>,
    id: &BlobId,
    len: u64,
    expect: Option<&Expect>,
    mut bulk: BulkIn<'_>,
) -> Result<Response, Response> {
    let (user, _) = ctx.user()?;
    let max = ctx.node.max_blob_len;
    if len > max {
        return Err(Response::error(
            ErrorCode::TooLarge,
            format!("blob of {len} bytes exceeds this node's limit of {max} bytes"),
        ));
    }
    let blobs = &ctx.node.blobs;
    let mut pending = blobs
        .begin_put(&user, id, len, ctx.node.quota, expect)
        .await
        .map_err(|e| refused("creating the upload", &user, e, LOST))?;
    loop {
        match bulk.next().await {
            Ok(Some(chunk)) => pending
                .write(&chunk)
                .await
                .map_err(|e| refused("writing the upload", &user, e, LOST))?,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(%user, error = %e, received = pending.written(), "upload abandoned");
                return Err(Response::error(ErrorCode::BadRequest, e.to_string()));
            }
        }
    }
    pending
        .commit()
        .await
        .map_err(|e| refused("storing the upload", &user, e, LOST))?;
    Ok(Response::Stored)
}

/// The answer to a failed upload; `lost` says what a full disk cost.
pub(super) fn refused(what: &str, user: &str, e: PutError, lost: &str) -> Response {
    match e {
        PutError::Quota { .. } | PutError::TooManyBlobs { .. } => {
            tracing::info!(%user, error = %e, "upload refused");
            Response::error(ErrorCode::QuotaExceeded, e.to_string())
        }
        PutError::Conflict => {
            tracing::debug!(%user, "conditional upload lost");
            Response::error(ErrorCode::Conflict, e.to_string())
        }
        PutError::BadCondition(_) => Response::error(ErrorCode::BadRequest, e.to_string()),
        PutError::NoSpace(ref io) => {
            tracing::error!(%user, error = %io, "{what} failed: disk full");
            Response::error(
                ErrorCode::NoSpace,
                format!("the node's disk is full; {lost}"),
            )
        }
        PutError::Io(io) => internal(what, &io),
    }
}
