//! `GetBlob{id}` -> `Blob{len}` + the bytes, streamed from the file opened
//! before the answer was made.

use wire::{BlobId, ErrorCode, Response};

use super::{read_failed, Ctx, Reply};

pub(crate) async fn run(ctx: &Ctx<'_>, id: &BlobId) -> Result<Reply, Response> {
    let (user, _) = ctx.user()?;
    match ctx.node.blobs.open(&user, id).await {
        Ok(Some(blob)) => Ok(Reply::Bulk {
            head: Response::Blob { len: blob.len },
            files: vec![blob],
        }),
        Ok(None) => Err(Response::error(
            ErrorCode::NotFound,
            format!("no blob {id}"),
        )),
        Err(e) => Err(read_failed("reading the blob", &e)),
    }
}
