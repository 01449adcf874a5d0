//! `GetBlob{id}` -> `Blob{len}` + the bytes, streamed from disk.

use wire::{BlobId, ErrorCode, Response};

use super::{internal, Ctx, Reply};

pub(crate) async fn run(ctx: &Ctx<'_>, id: &BlobId) -> Reply {
    let user = match ctx.user() {
        Ok((user, _)) => user,
        Err(e) => return e.into(),
    };
    match ctx.node.blobs.open(&user, id).await {
        Ok(Some((file, len))) => Reply::Blob { file, len },
        Ok(None) => Response::error(ErrorCode::NotFound, format!("no blob {id}")).into(),
        Err(e) => internal("reading the blob", &e).into(),
    }
}
