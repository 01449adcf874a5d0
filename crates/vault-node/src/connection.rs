//! One client connection: takes its bidirectional streams as they come and
//! runs each request in a task of its own (`handler`), until the
//! connection closes or the node shuts down.

use std::sync::{Arc, Mutex};

use quinn::{Connection, VarInt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::LoginState;
use crate::handler;
use crate::state::Shared;

/// Serves one client connection, whose login state is `login`, until it
/// closes or the node shuts down.
pub(crate) async fn serve(
    node: Arc<Shared>,
    conn: Connection,
    login: Arc<Mutex<LoginState>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = conn.remote_address();
    let mut tasks = JoinSet::new();
    let mut shutting = *shutdown.borrow();
    tracing::debug!(%peer, "connection open");
    loop {
        if shutting && tasks.is_empty() {
            break;
        }
        tokio::select! {
            changed = shutdown.changed(), if !shutting => {
                // A dropped sender also means shutdown.
                shutting = changed.is_err() || *shutdown.borrow();
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(%peer, "request handler panicked");
                    }
                }
            }
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let (node, login) = (node.clone(), login.clone());
                    tasks.spawn(handler::run(node, login, send, recv, shutting));
                }
                Err(e) => {
                    tracing::debug!(%peer, reason = %e, "connection closed");
                    break;
                }
            },
        }
    }
    // In-flight requests finish (the server aborts this task, and with it
    // the JoinSet and every upload's temp-file guard, after the grace time).
    while tasks.join_next().await.is_some() {}
    if shutting {
        conn.close(VarInt::from_u32(0), b"shutdown");
    }
}
