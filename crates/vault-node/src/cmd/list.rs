//! `List{after, limit}` -> `Listing{entries, more}`, the logged-in user's
//! blobs in id order.

use wire::{BlobId, Response};

use super::{internal, Ctx};

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    after: Option<BlobId>,
    limit: u32,
) -> Result<Response, Response> {
    let (user, _) = ctx.user()?;
    // The decoder already bounds `limit` to 1..=MAX_LIST_PAGE.
    let limit = limit.clamp(1, wire::MAX_LIST_PAGE) as usize;
    let (entries, more) = ctx
        .node
        .blobs
        .list(&user, after, limit)
        .await
        .map_err(|e| internal("listing", &e))?;
    Ok(Response::Listing { entries, more })
}
