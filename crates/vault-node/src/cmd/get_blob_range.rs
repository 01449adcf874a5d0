//! `GetBlobRange{id, offset, len}` -> `BlobRange{total, len}` + the bytes
//! `[offset, offset + len)` of the blob, streamed from the file (or the
//! inline bytes) opened before the answer was made. An offset past the end
//! is refused (`BadRequest`); one at the end gives no bytes.

use wire::{BlobId, ErrorCode, Response};

use super::{read_failed, Ctx, Reply};

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    id: &BlobId,
    offset: u64,
    len: Option<u64>,
) -> Result<Reply, Response> {
    let (user, _) = ctx.user()?;
    let mut blob = match ctx.node.blobs.open(&user, id).await {
        Ok(Some(blob)) => blob,
        Ok(None) => {
            return Err(Response::error(
                ErrorCode::NotFound,
                format!("no blob {id}"),
            ))
        }
        Err(e) => return Err(read_failed("reading the blob", &e)),
    };
    let total = blob.len;
    if offset > total {
        return Err(Response::error(
            ErrorCode::BadRequest,
            format!("offset {offset} is beyond the end of blob {id} ({total} bytes)"),
        ));
    }
    let len = blob
        .narrow(offset, len)
        .map_err(|e| read_failed("reading the blob", &e))?;
    Ok(Reply::Bulk {
        head: Response::BlobRange { total, len },
        files: vec![blob],
    })
}
