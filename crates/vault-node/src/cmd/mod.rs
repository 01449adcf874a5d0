//! Request handlers, one file each. A handler's `run` gets a [`Ctx`] (the
//! node's [`Shared`] state and the connection's [`LoginState`]) and the
//! typed request's fields, and returns its answer or, as `Err`, the error
//! response to send instead; [`dispatch`] turns either into the [`Reply`]
//! that `handler` writes back. Handlers never see streams: an upload's
//! bytes come as a [`BulkIn`], and blob contents go out as open files in a
//! [`Reply::Bulk`].

mod delete;
mod delete_blobs;
mod get_blob;
mod get_blob_range;
mod get_blobs;
mod get_record;
mod hello;
mod list;
mod list_data;
mod login;
mod put_blob;
mod put_blobs;
mod put_record;
mod stat_blobs;
mod status;

use std::sync::{Mutex, MutexGuard};

use wire::{ErrorCode, Request, Response};

use crate::auth::{LoginMethod, LoginState};
use crate::bulk::BulkIn;
use crate::state::Shared;
use crate::store::OpenBlob;

/// What a handler works with.
pub(crate) struct Ctx<'a> {
    pub node: &'a Shared,
    pub login: &'a Mutex<LoginState>,
}

impl Ctx<'_> {
    /// The connection's login state (the lock is never held across awaits).
    pub fn login(&self) -> MutexGuard<'_, LoginState> {
        self.login.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The logged-in user, or the `NotLoggedIn` error to answer. A
    /// connection whose user's login key changed since it logged in (a
    /// rotation on another connection) is logged out here.
    pub fn user(&self) -> Result<(String, LoginMethod), Response> {
        let mut state = self.login();
        let Some((user, method)) = state.user().map(|(u, m)| (u.to_string(), m)) else {
            return Err(Response::error(ErrorCode::NotLoggedIn, "log in first"));
        };
        if state.epoch() != Some(self.node.records.epoch(&user)) {
            state.log_out();
            return Err(Response::error(
                ErrorCode::NotLoggedIn,
                "the account's credentials changed; log in again",
            ));
        }
        Ok((user, method))
    }
}

/// A handler's answer.
pub(crate) enum Reply {
    /// A response frame alone.
    Message(Response),
    /// A response frame, then the contents of each file in order, each
    /// exactly its `len` bytes (`Blob`, `BlobRange`, `Blobs`,
    /// `DataListing`).
    Bulk {
        /// The frame, announcing the lengths.
        head: Response,
        /// The files, opened before `head` was made.
        files: Vec<OpenBlob>,
    },
}

impl From<Response> for Reply {
    fn from(r: Response) -> Self {
        Reply::Message(r)
    }
}

/// The answer to a storage failure: details go to the log, not the client.
pub(crate) fn internal(what: &str, err: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %err, "{what} failed");
    Response::error(ErrorCode::Internal, format!("{what} failed on the node"))
}

/// [`internal`], except that running out of file handles (a passing
/// shortage, from opening many blobs at once) is `Busy`.
pub(crate) fn read_failed(what: &str, err: &std::io::Error) -> Response {
    if crate::store::is_out_of_files(err) {
        tracing::warn!(error = %err, "{what} failed: out of file handles");
        return Response::error(
            ErrorCode::Busy,
            format!("{what} failed: the node has too many files open; retry shortly"),
        );
    }
    internal(what, err)
}

/// Runs the handler for `req`. `bulk` holds the bytes of a `PutBlob` or a
/// `PutBlobs`.
pub(crate) async fn dispatch(ctx: &Ctx<'_>, req: Request, bulk: BulkIn<'_>) -> Reply {
    let peer = ctx.login().peer();
    tracing::debug!(%peer, request = kind(&req), "request");
    let answer = match req {
        Request::Hello { user } => hello::run(ctx, &user).await.map(Reply::from),
        Request::Login { user, proof } => login::run(ctx, &user, &proof).await.map(Reply::from),
        Request::PutBlob { id, len, expect } => put_blob::run(ctx, &id, len, expect.as_ref(), bulk)
            .await
            .map(Reply::from),
        Request::GetBlob { id } => get_blob::run(ctx, &id).await,
        Request::GetBlobRange { id, offset, len } => {
            get_blob_range::run(ctx, &id, offset, len).await
        }
        Request::List {
            after,
            limit,
            prefix,
        } => list::run(ctx, after, limit, prefix.as_deref())
            .await
            .map(Reply::from),
        Request::ListData {
            after,
            prefix,
            max_entries,
            max_bytes,
            max_inline,
        } => {
            let limits = list_data::Limits {
                max_entries,
                max_bytes,
                max_inline,
            };
            list_data::run(ctx, after, &prefix, limits).await
        }
        Request::GetBlobs { ids } => get_blobs::run(ctx, &ids).await,
        Request::PutBlobs { items } => put_blobs::run(ctx, &items, bulk).await.map(Reply::from),
        Request::DeleteBlobs { ids } => delete_blobs::run(ctx, &ids).await.map(Reply::from),
        Request::StatBlobs { ids } => stat_blobs::run(ctx, &ids).await.map(Reply::from),
        Request::Delete { id } => delete::run(ctx, &id).await.map(Reply::from),
        Request::Status => status::run(ctx).await.map(Reply::from),
        Request::GetRecord => get_record::run(ctx).await.map(Reply::from),
        Request::PutRecord {
            expect_generation,
            record,
            expect_record,
        } => put_record::run(ctx, expect_generation, &record, expect_record.as_deref())
            .await
            .map(Reply::from),
    };
    answer.unwrap_or_else(Reply::from)
}

/// A request's name for logs (never its fields).
fn kind(req: &Request) -> &'static str {
    match req {
        Request::Hello { .. } => "hello",
        Request::Login { .. } => "login",
        Request::PutBlob { .. } => "put-blob",
        Request::GetBlob { .. } => "get-blob",
        Request::GetBlobRange { .. } => "get-blob-range",
        Request::List { .. } => "list",
        Request::ListData { .. } => "list-data",
        Request::GetBlobs { .. } => "get-blobs",
        Request::PutBlobs { .. } => "put-blobs",
        Request::DeleteBlobs { .. } => "delete-blobs",
        Request::StatBlobs { .. } => "stat-blobs",
        Request::Delete { .. } => "delete",
        Request::Status => "status",
        Request::GetRecord => "get-record",
        Request::PutRecord { .. } => "put-record",
    }
}
