//! `Login{user, proof}` -> `LoggedIn`, or the same `AuthFailed` for an
//! unknown user and a wrong password.
//!
//! The login must follow a `Hello` for the same user on this connection;
//! each `Hello` allows one attempt. Throttled attempts are refused before
//! the proof is looked at; every other attempt is counted first and
//! forgiven on success (or when it used the user's previous credential).
//! A right proof for a user who already holds the per-user cap of
//! logged-in connections (see `admission`) is answered `Busy`, and the
//! connection stays logged out.

use std::time::Instant;

use wire::{ErrorCode, Proof, Response};

use super::{internal, Ctx};
use crate::auth::{self, Verdict};

/// The one message for every failed login.
pub(crate) const AUTH_FAILED: &str = "invalid username or password";

pub(crate) async fn run(ctx: &Ctx<'_>, user: &str, proof: &Proof) -> Result<Response, Response> {
    let node = ctx.node;
    let user = wire::normalize_user(user)
        .ok_or_else(|| Response::error(ErrorCode::BadRequest, "invalid user name"))?;
    let (peer, challenge) = {
        let mut state = ctx.login();
        if state.user().is_some() {
            return Err(Response::error(ErrorCode::BadRequest, "already logged in"));
        }
        let challenge = state.take_challenge(&user).ok_or_else(|| {
            Response::error(
                ErrorCode::BadRequest,
                "login must follow a hello for the same user on this connection",
            )
        })?;
        (state.peer(), challenge)
    };
    let ip = peer.ip();
    // The attempt is counted before the proof is looked at, atomically, so
    // parallel guesses cannot all slip through.
    let attempt = node
        .throttle
        .begin(ip, &user, Instant::now())
        .map_err(|wait| {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            tracing::info!(%user, %peer, retry_after_ms = ms, "login throttled");
            Response::error(
                ErrorCode::Throttled(ms),
                format!("too many failed logins; retry in {} s", ms.div_ceil(1000)),
            )
        })?;
    // Read before the credentials: a rotation racing this login leaves the
    // connection on the old epoch, and so logged out at its first request.
    let epoch = node.records.epoch(&user);
    let creds = match auth::resolve(&node.users, &node.records, &node.secret, &user).await {
        Ok((_, creds)) => creds,
        Err(e) => {
            attempt.stale();
            return Err(internal("reading the key record", &e));
        }
    };
    match auth::verify(&creds, proof, &node.name, &user, &challenge) {
        Verdict::Valid(method) => {
            attempt.succeeded();
            if let Err(full) = ctx.login().logged_in(user.clone(), method, epoch) {
                tracing::warn!(%user, %peer, cap = full.cap, "login refused: user at the connection cap");
                return Err(Response::error(
                    ErrorCode::Busy,
                    format!(
                        "too many connections logged in as this user (at most {}); close one and retry",
                        full.cap
                    ),
                ));
            }
            tracing::info!(%user, %peer, ?method, "logged in");
            Ok(Response::LoggedIn)
        }
        Verdict::Stale => {
            attempt.stale();
            tracing::info!(%user, %peer, "login with a previous credential");
            Err(Response::error(ErrorCode::AuthFailed, AUTH_FAILED))
        }
        Verdict::Invalid => {
            attempt.failed();
            tracing::info!(%user, %peer, "failed login");
            Err(Response::error(ErrorCode::AuthFailed, AUTH_FAILED))
        }
    }
}
