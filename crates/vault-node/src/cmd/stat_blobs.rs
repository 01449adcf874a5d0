//! `StatBlobs{ids}` -> `Stats{entries}`: for each id, in order, the size
//! and time the index holds (`None`: no such blob). At most
//! [`wire::MAX_BATCH`] ids (checked by the decoder); no file is touched.

use wire::{BlobId, Response};

use super::{internal, Ctx};

pub(crate) async fn run(ctx: &Ctx<'_>, ids: &[BlobId]) -> Result<Response, Response> {
    let (user, _) = ctx.user()?;
    let entries = ctx
        .node
        .blobs
        .stat_many(&user, ids)
        .await
        .map_err(|e| internal("looking up the blobs", &e))?;
    Ok(Response::Stats { entries })
}
