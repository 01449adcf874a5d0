//! `Status` -> the node's name and version, its per-user quota and free
//! disk space, and the logged-in user's usage. Only after login: free
//! space and quota would otherwise tell anyone how much other users upload.

use wire::{NodeStatus, Response};

use super::{internal, Ctx};

pub(crate) async fn run(ctx: &Ctx<'_>) -> Result<Response, Response> {
    let (user, _) = ctx.user()?;
    let (blobs, bytes) = ctx
        .node
        .blobs
        .usage(&user)
        .await
        .map_err(|e| internal("measuring usage", &e))?;
    Ok(Response::Status(NodeStatus {
        name: ctx.node.name.clone(),
        version: crate::VERSION.to_string(),
        blobs,
        bytes,
        quota: ctx.node.quota,
        free_bytes: ctx.node.blobs.free_bytes().await,
    }))
}
