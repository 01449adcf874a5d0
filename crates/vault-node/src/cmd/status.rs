//! `Status` -> the node's name and version, its per-user quota and free
//! disk space, and the logged-in user's usage (zero before login).

use wire::{NodeStatus, Response};

use super::{internal, Ctx};

pub(crate) async fn run(ctx: &Ctx<'_>) -> Result<Response, Response> {
    let (blobs, bytes) = match ctx.user() {
        Ok((user, _)) => ctx
            .node
            .blobs
            .usage(&user)
            .await
            .map_err(|e| internal("measuring usage", &e))?,
        Err(_) => (0, 0),
    };
    Ok(Response::Status(NodeStatus {
        name: ctx.node.name.clone(),
        version: crate::VERSION.to_string(),
        blobs,
        bytes,
        quota: ctx.node.quota,
        free_bytes: ctx.node.blobs.free_bytes().await,
    }))
}
