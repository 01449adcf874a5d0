//! `GetBlobs{ids}` -> `Blobs{lens}` + the bytes of every blob found, in
//! order, streamed from files opened before the answer was made (`None`
//! in `lens`: no such blob).
//!
//! At most [`wire::MAX_BATCH`] ids (checked by the decoder); blobs found
//! adding up to more than [`wire::MAX_BATCH_BYTES`] (by the index, before
//! any file is opened) are refused with `TooLarge`, nothing sent.

use wire::{BlobId, ErrorCode, Response, MAX_BATCH_BYTES};

use super::{read_failed, Ctx, Reply};

pub(crate) async fn run(ctx: &Ctx<'_>, ids: &[BlobId]) -> Result<Reply, Response> {
    let (user, _) = ctx.user()?;
    // Sized from the index before any file is opened.
    let stats = ctx
        .node
        .blobs
        .stat_many(&user, ids)
        .await
        .map_err(|e| read_failed("reading the blobs", &e))?;
    let total = stats
        .iter()
        .flatten()
        .fold(0u64, |t, b| t.saturating_add(b.len));
    if total > MAX_BATCH_BYTES {
        return Err(Response::error(
            ErrorCode::TooLarge,
            format!(
                "the blobs asked for hold {total} bytes, more than the {MAX_BATCH_BYTES} \
                 bytes one answer carries; ask for fewer at once"
            ),
        ));
    }
    let found = ctx
        .node
        .blobs
        .open_many(&user, ids)
        .await
        .map_err(|e| read_failed("reading the blobs", &e))?;
    let lens = found.iter().map(|b| b.as_ref().map(|b| b.len)).collect();
    Ok(Reply::Bulk {
        head: Response::Blobs { lens },
        files: found.into_iter().flatten().collect(),
    })
}
