//! `PutRecord{expect_generation, record, expect_record}` -> `RecordStored`,
//! or `Conflict` when the stored generation is not `expect_generation`, the
//! new one does not increase, or (with `expect_record`) the stored record's
//! [`wire::record_hash`] is not `expect_record`. Only a write naming the
//! stored record's hash may replace it with one of the same generation
//! (clients that created one vault at once converge on one record).
//!
//! A connection that logged in with the legacy MD5 proof may write while
//! the stored record has no login key (a legacy client's first record, and
//! the rotation that upgrades it); once the record has a login key, only a
//! signature login may change it. A record with `login_key` upgrades the
//! account: from then on the MD5 proof is refused, and no record without a
//! login key is accepted. When the login key the node checks changes, the
//! user's other connections must log in again; a first record carrying the
//! login key the users file already checks changes nothing, so clients
//! creating one upgraded vault at once do not log each other out.

use wire::{ErrorCode, Response, UserRecord};

use super::{internal, Ctx};
use crate::auth::LoginMethod;
use crate::records::RecordError;
use crate::users::Credential;

pub(crate) async fn run(
    ctx: &Ctx<'_>,
    expect: u64,
    record: &UserRecord,
    expect_record: Option<&[u8]>,
) -> Result<Response, Response> {
    let (user, method) = ctx.user()?;
    let legacy = method == LoginMethod::Legacy;
    // The login key the node checks while no record holds one: a first
    // record carrying it changes no credential and logs nobody out.
    let file_key = match ctx.node.users.get(&user).map(|e| &e.credential) {
        Some(Credential::Argon2id { login_key, .. }) => Some(*login_key),
        _ => None,
    };
    match ctx
        .node
        .records
        .put_if(
            &user,
            expect,
            expect_record,
            record,
            legacy,
            file_key.as_ref().map(|k| k.as_slice()),
        )
        .await
    {
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
