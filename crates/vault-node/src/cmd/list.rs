//! `List{after, limit, prefix}` -> `Listing{entries, more}`, the logged-in
//! user's blobs in id order, only those whose id starts with `prefix` if
//! one is given. From the index: O(log n + limit), stopping at the first
//! id past the prefix.

use wire::{BlobId, Response};

use super::{internal, Ctx};

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    after: Option<BlobId>,
    limit: u32,
    prefix: Option<&str>,
) -> Result<Response, Response> {
    let (user, _) = ctx.user()?;
    // The decoder already bounds `limit` to 1..=MAX_LIST_PAGE and checks
    // the prefix (at most MAX_ID_PREFIX_LEN characters of the id alphabet).
    let limit = limit.clamp(1, wire::MAX_LIST_PAGE) as usize;
    let (entries, more) = ctx
        .node
        .blobs
        .list(&user, after, prefix.unwrap_or(""), limit)
        .await
        .map_err(|e| internal("listing", &e))?;
    Ok(Response::Listing { entries, more })
}
