//! `PutBlobs{items}` + each item's bytes, in order, + FIN ->
//! `BatchStored{failed}`.
//!
//! An item with `expect` is stored only if the stored blob is still what
//! the writer read, checked by the user's writer inside the transaction
//! that stores it (as `PutBlob` does); otherwise it alone fails, listed in
//! `failed` with code `Conflict`, and the other items still commit.
//!
//! Each blob is stored as `PutBlob` stores one (buffered in memory up to
//! the node's `--inline-max`, otherwise in a synced temp file); the whole
//! batch goes to the user's writer as one job, committed in one index
//! transaction (with whatever other writes are queued: one fsync for the
//! lot; larger blobs renamed to new `<id>.<n>` files and the folder
//! synced before the commit), and answered only once committed, so every
//! blob reported stored is durable.
//!
//! Before any byte is read, an item over the node's blob limit refuses the
//! batch with `TooLarge`, and the batch's total charge (each blob's length
//! plus [`crate::store::BLOB_OVERHEAD`]) is reserved against the user's
//! quota, and its new ids under the per-user blob count cap, all or
//! nothing: `QuotaExceeded` otherwise. At most
//! [`wire::MAX_BATCH`] items and [`wire::MAX_BATCH_BYTES`] bytes in all
//! (checked by the decoder).
//!
//! Nothing reaches the writer before every byte and the FIN arrived: a
//! stream that ends short, runs long, is reset or lost (or a node shutdown)
//! leaves no blob of the batch and no temp file behind, and the answer, if
//! the client is still there, is an error. A full disk answers `NoSpace`:
//! while the bytes arrive, with nothing stored; when the writer stores
//! the batch, a failed commit stores none of it. A blob that fails on its
//! own (its file could not be put in place, or another I/O error) is left
//! out and listed in `failed`; the rest are stored.

use wire::{BatchFailure, ErrorCode, PutItem, Response};

use super::put_blob::refused;
use super::Ctx;
use crate::bulk::{BulkError, BulkIn};
use crate::store::PutError;

/// What a full disk cost.
const LOST: &str = "the batch was not stored, or not all of it";

/// On `Err`, the bytes not read yet are refused (`handler` stops the
/// stream before it answers).
pub(crate) async fn run(
    ctx: &Ctx<'_>,
    items: &[PutItem],
    mut bulk: BulkIn<'_>,
) -> Result<Response, Response> {
    let (user, _) = ctx.user()?;
    let max = ctx.node.max_blob_len;
    if let Some((i, item)) = items.iter().enumerate().find(|(_, it)| it.len > max) {
        return Err(Response::error(
            ErrorCode::TooLarge,
            format!(
                "blob {i} of the batch ({}, {} bytes) exceeds this node's limit of {max} bytes; \
                 nothing was stored",
                item.id, item.len
            ),
        ));
    }
    let mut batch = ctx
        .node
        .blobs
        .begin_batch(&user, items, ctx.node.quota)
        .await
        .map_err(|e| refused("creating the upload", &user, e, LOST))?;
    let abandoned = |e: BulkError| {
        tracing::info!(%user, error = %e, "batch upload abandoned");
        Response::error(ErrorCode::BadRequest, format!("{e}; nothing was stored"))
    };
    for item in items {
        batch
            .start(&item.id, item.len)
            .await
            .map_err(|e| refused("writing the upload", &user, e, LOST))?;
        let mut left = item.len;
        while left > 0 {
            let chunk = match bulk.next_at_most(left).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Err(abandoned(BulkError::Short)),
                Err(e) => return Err(abandoned(e)),
            };
            left = left.saturating_sub(chunk.len() as u64);
            batch
                .write(&chunk)
                .await
                .map_err(|e| refused("writing the upload", &user, e, LOST))?;
        }
    }
    match bulk.next().await {
        Ok(None) => {}
        Ok(Some(_)) => return Err(abandoned(BulkError::TooMany)),
        Err(e) => return Err(abandoned(e)),
    }
    let failed = batch
        .commit()
        .await
        .map_err(|e| refused("storing the upload", &user, e, LOST))?;
    let failed = failed
        .into_iter()
        .map(|(index, e)| match e {
            PutError::Conflict => BatchFailure {
                index,
                code: ErrorCode::Conflict,
                message: e.to_string(),
            },
            e => {
                tracing::error!(%user, index, error = %e, "storing a blob of a batch failed");
                BatchFailure {
                    index,
                    code: ErrorCode::Internal,
                    message: "storing this blob failed on the node".into(),
                }
            }
        })
        .collect();
    Ok(Response::BatchStored { failed })
}
