//! `PutRecord{expect_generation, record}` -> `RecordStored`, or `Conflict`
//! when the stored generation is not `expect_generation` or the new one
//! does not increase.
//!
//! A connection that logged in with the legacy MD5 proof may write while
//! the stored record has no login key (a legacy client's first record, and
//! the rotation that upgrades it); once the record has a login key, only a
//! signature login may change it. A record with `login_key` upgrades the
//! account: from then on the MD5 proof is refused, and no record without a
//! login key is accepted. When the login key changes, the user's other
//! connections must log in again.

use wire::{ErrorCode, Response, UserRecord};

use super::{internal, Ctx};
use crate::auth::LoginMethod;
use crate::records::RecordError;

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    expect: u64,
    record: &UserRecord,
    expect_record: Option<&[u8]>,
) -> Result<Response, Response> {
    let _ = expect_record; // same-generation replacement: being wired into records
    let (user, method) = ctx.user()?;
    let legacy = method == LoginMethod::Legacy;
    match ctx.node.records.put(&user, expect, record, legacy).await {
        Ok(epoch) => {
            // This connection made the change: it stays logged in; others
            // of the user log in again if the login key changed.
            ctx.login().set_epoch(epoch);
            tracing::info!(
                %user,
                generation = record.generation,
                upgraded = record.login_key.is_some(),
                "key record stored"
            );
            Ok(Response::RecordStored)
        }
        Err(e @ RecordError::Conflict { .. }) => {
            Err(Response::error(ErrorCode::Conflict, e.to_string()))
        }
        Err(e @ (RecordError::Upgraded | RecordError::Downgrade)) => {
            Err(Response::error(ErrorCode::AuthFailed, e.to_string()))
        }
        Err(e) => Err(internal("storing the key record", &e)),
    }
}
