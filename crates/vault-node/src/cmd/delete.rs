//! `Delete{id}` -> `Deleted`, or `NotFound`.

use wire::{BlobId, ErrorCode, Response};

use super::{internal, Ctx};

pub(crate) async fn run(ctx: &Ctx<'_>, id: &BlobId) -> Result<Response, Response> {
    let (user, _) = ctx.user()?;
    match ctx.node.blobs.delete(&user, id).await {
        Ok(true) => Ok(Response::Deleted),
        Ok(false) => Err(Response::error(
            ErrorCode::NotFound,
            format!("no blob {id}"),
        )),
        Err(e) => Err(internal("deleting the blob", &e)),
    }
}
