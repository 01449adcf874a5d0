//! `GetRecord` -> `Record(Option<UserRecord>)` of the logged-in user.

use wire::Response;

use super::{internal, Ctx};

pub(crate) async fn run(ctx: &Ctx<'_>) -> Result<Response, Response> {
    let (user, _) = ctx.user()?;
    let record = ctx
        .node
        .records
        .get(&user)
        .await
        .map_err(|e| internal("reading the key record", &e))?;
    Ok(Response::Record(record))
}
