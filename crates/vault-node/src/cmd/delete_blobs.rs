//! `DeleteBlobs{ids}` -> `BatchDeleted{missing}`: deletes each blob, in
//! order, and answers with the positions of the ids that were not there
//! (a repeated id: every time after the first). At most
//! [`wire::MAX_BATCH`] ids (checked by the decoder).
//!
//! Each removal is recorded in the index as it happens; the folder is
//! synced once for the batch, before the answer. On a storage failure the
//! answer is `Internal`, and the blobs before the failing one are deleted.

use wire::{BlobId, Response};

use super::{internal, Ctx};

pub(crate) async fn run(ctx: &Ctx<'_>, ids: &[BlobId]) -> Result<Response, Response> {
    let (user, _) = ctx.user()?;
    let missing = ctx
        .node
        .blobs
        .delete_many(&user, ids)
        .await
        .map_err(|e| internal("deleting the blobs", &e))?;
    Ok(Response::BatchDeleted { missing })
}
