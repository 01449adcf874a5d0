//! `Hello{user}` -> `Challenge{challenge, scheme}`.
//!
//! Every well-formed name gets a challenge, known or not (unknown names get
//! a decoy upgraded scheme), so `Hello` does not reveal who has an account.

use wire::{ErrorCode, Response};

use super::{internal, Ctx};
use crate::auth;

pub(crate) async fn run(ctx: &Ctx<'_>, user: &str) -> Result<Response, Response> {
    if ctx.login().user().is_some() {
        return Err(Response::error(ErrorCode::BadRequest, "already logged in"));
    }
    let user = wire::normalize_user(user)
        .ok_or_else(|| Response::error(ErrorCode::BadRequest, "invalid user name"))?;
    let node = ctx.node;
    let (scheme, _) = auth::resolve(&node.users, &node.records, &node.secret, &user)
        .await
        .map_err(|e| internal("reading the key record", &e))?;
    let challenge = auth::new_challenge().map_err(|e| internal("making a challenge", &e))?;
    ctx.login().challenged(user, challenge);
    Ok(Response::Challenge {
        challenge: challenge.to_vec(),
        scheme,
    })
}
