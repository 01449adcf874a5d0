//! `Login{user, proof}` -> `LoggedIn`, or the same `AuthFailed` for an
//! unknown user and a wrong password.
//!
//! The login must follow a `Hello` for the same user on this connection;
//! each `Hello` allows one attempt. Throttled attempts are refused before
//! the proof is looked at.

use std::time::Instant;

use wire::{ErrorCode, Proof, Response};

use super::{either, internal, Ctx};
use crate::auth;

/// The one message for every failed login.
pub(crate) const AUTH_FAILED: &str = "invalid username or password";

pub(crate) async fn run(ctx: &Ctx<'_>, user: &str, proof: &Proof) -> Response {
    either(login(ctx, user, proof).await)
}

async fn login(ctx: &Ctx<'_>, user: &str, proof: &Proof) -> Result<Response, Response> {
    let node = ctx.node;
    let user = wire::normalize_user(user)
        .ok_or_else(|| Response::error(ErrorCode::BadRequest, "invalid user name"))?;
    let (peer, challenge) = {
        let mut session = ctx.session();
        if session.user().is_some() {
            return Err(Response::error(ErrorCode::BadRequest, "already logged in"));
        }
        let challenge = session.take_challenge(&user).ok_or_else(|| {
            Response::error(
                ErrorCode::BadRequest,
                "login must follow a hello for the same user on this connection",
            )
        })?;
        (session.peer(), challenge)
    };
    let ip = peer.ip();
    if let Err(wait) = node.throttle.check(ip, &user, Instant::now()) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        tracing::info!(%user, %peer, retry_after_ms = ms, "login throttled");
        return Err(Response::error(
            ErrorCode::Throttled(ms),
            format!("too many failed logins; retry in {} s", ms.div_ceil(1000)),
        ));
    }
    let (_, verifier) = auth::resolve(&node.users, &node.records, &node.secret, &user)
        .await
        .map_err(|e| internal("reading the key record", &e))?;
    match auth::verify(&verifier, proof, &node.name, &user, &challenge) {
        Some(method) => {
            node.throttle.success(ip, &user);
            tracing::info!(%user, %peer, ?method, "logged in");
            ctx.session().logged_in(user, method);
            Ok(Response::LoggedIn)
        }
        None => {
            node.throttle.failure(ip, &user, Instant::now());
            tracing::info!(%user, %peer, "failed login");
            Err(Response::error(ErrorCode::AuthFailed, AUTH_FAILED))
        }
    }
}
