//! `PutBlob{id, len}` + exactly `len` bytes + FIN -> `Stored`.
//!
//! The bytes go to a temp file that becomes the blob only after they all
//! arrived, were synced and the stream ended; any other outcome (short,
//! long, reset, lost connection, node shutdown) leaves the old blob, if
//! any, untouched and no temp file behind.

use wire::{BlobId, ErrorCode, Response};

use super::{either, internal, Ctx};
use crate::connection::BulkIn;

pub(crate) async fn run(ctx: &Ctx<'_>, id: &BlobId, len: u64, mut bulk: BulkIn<'_>) -> Response {
    let result = put(ctx, id, len, &mut bulk).await;
    if result.is_err() {
        bulk.refuse();
    }
    either(result)
}

async fn put(
    ctx: &Ctx<'_>,
    id: &BlobId,
    len: u64,
    bulk: &mut BulkIn<'_>,
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
        .begin_put(&user, id)
        .await
        .map_err(|e| internal("creating the upload", &e))?;
    loop {
        match bulk.next().await {
            Ok(Some(chunk)) => pending
                .write(&chunk)
                .await
                .map_err(|e| internal("writing the upload", &e))?,
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
        .map_err(|e| internal("storing the upload", &e))?;
    Ok(Response::Stored)
}
