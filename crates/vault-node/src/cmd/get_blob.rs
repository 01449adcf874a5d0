//! `GetBlob{id}` -> `Blob{len}` + the bytes, streamed from disk.

use wire::{BlobId, ErrorCode, Response};

use super::{internal, Ctx, Reply};

pub(crate) async fn run(ctx: &Ctx<'_>, id: &BlobId) -> Result<Reply, Response> {
    let (user, _) = ctx.user()?;
    match ctx.node.blobs.open(&user, id).await {
        Ok(Some((file, len))) => Ok(Reply::Blob { file, len }),
        Ok(None) => Err(Response::error(
            ErrorCode::NotFound,
            format!("no blob {id}"),
        )),
        Err(e) => Err(internal("reading the blob", &e)),
    }
}
