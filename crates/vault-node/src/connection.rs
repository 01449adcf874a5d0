//! One client connection, from admission to close.
//!
//! A connection that got no slot (see `admission`) is turned away with a
//! reason by [`refuse`]. An admitted one runs as a [`ConnTask`]: the
//! handshake, then its streams, each request in a task of its own
//! (`handler`), until the connection closes, is evicted, misses its login
//! deadline or the node shuts down.
//!
//! The node closes a connection with a QUIC application code and a reason
//! the client can print: 0 shutdown, [`BUSY`], [`EVICTED`],
//! [`LOGIN_TIMEOUT`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, VarInt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::admission::{Refusal, Slot};
use crate::auth::LoginState;
use crate::handler;
use crate::state::Shared;

/// Most connections being turned away (handshake + close) at once.
pub(crate) const MAX_REFUSING: usize = 16;
/// QUIC application close code for a node at its connection cap.
const BUSY: VarInt = VarInt::from_u32(2);
/// QUIC application close code for a connection evicted to make room.
const EVICTED: VarInt = VarInt::from_u32(3);
/// QUIC application close code for a connection that did not log in in time.
const LOGIN_TIMEOUT: VarInt = VarInt::from_u32(4);

/// One admitted connection: handshake, then requests until it closes,
/// is evicted, misses its login deadline or the node shuts down.
pub(crate) struct ConnTask {
    /// The node's shared state, for the handlers.
    pub node: Arc<Shared>,
    /// The connection's login state, also read by `admission`.
    pub login: Arc<Mutex<LoginState>>,
    /// Held until the task ends: the connection's place in the caps.
    pub slot: Slot,
    /// Time from the first packet to a login.
    pub login_timeout: Duration,
    /// Flips to `true` when the node shuts down.
    pub shutdown: watch::Receiver<bool>,
}

impl ConnTask {
    /// Runs the connection `incoming` to its end.
    pub(crate) async fn run(self, incoming: quinn::Incoming) {
        let peer = incoming.remote_address();
        let deadline = tokio::time::Instant::now() + self.login_timeout;
        // Dropping an unfinished handshake abandons it.
        let conn = tokio::select! {
            done = incoming => match done {
                Ok(conn) => conn,
                Err(e) => return tracing::debug!(%peer, error = %e, "handshake failed"),
            },
            () = self.slot.evicted() => return tracing::debug!(%peer, "evicted during the handshake"),
            () = tokio::time::sleep_until(deadline) => {
                return tracing::debug!(%peer, "handshake outlasted the login timeout");
            }
        };
        let serve = serve_streams(self.node, conn.clone(), self.login.clone(), self.shutdown);
        tokio::pin!(serve);
        let login_timer = tokio::time::sleep_until(deadline);
        tokio::pin!(login_timer);
        let (mut watching_login, mut closed) = (true, false);
        loop {
            tokio::select! {
                () = &mut serve => break,
                () = self.slot.evicted(), if !closed => {
                    closed = true;
                    conn.close(
                        EVICTED,
                        b"evicted: the node needed room for another connection; log in right after connecting",
                    );
                }
                () = &mut login_timer, if watching_login => {
                    watching_login = false;
                    let logged_in = self.login.lock().unwrap_or_else(|p| p.into_inner()).user().is_some();
                    if !logged_in && !closed {
                        closed = true;
                        tracing::info!(%peer, "closing a connection that did not log in in time");
                        let reason = format!(
                            "login timeout: no login within {:.1} s of connecting",
                            self.login_timeout.as_secs_f64()
                        );
                        conn.close(LOGIN_TIMEOUT, reason.as_bytes());
                    }
                }
            }
        }
    }
}

/// Turns a connection away when nothing can be evicted: completes the
/// handshake so the client sees why, then closes with a reason. Beyond a
/// few at once, the attempt is refused outright.
pub(crate) fn refuse(incoming: quinn::Incoming, why: Refusal, refusing: &Arc<Semaphore>) {
    let peer = incoming.remote_address();
    let reason: &'static [u8] = match why {
        Refusal::NodeFull => {
            tracing::warn!(%peer, "connection cap reached with every connection logged in; refusing a connection");
            b"node busy: too many connections"
        }
        Refusal::SourceFull => {
            tracing::warn!(%peer, "per-source cap reached with every connection logged in; refusing a connection");
            b"node busy: too many connections from your address"
        }
    };
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        incoming.refuse();
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), incoming).await {
            conn.close(BUSY, reason);
        }
    });
}

/// Serves one client connection, whose login state is `login`, until it
/// closes or the node shuts down.
async fn serve_streams(
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
                    // In the node's span: its log lines name the node.
                    let run = handler::run(node, login, send, recv, shutting);
                    tasks.spawn(tracing::Instrument::in_current_span(run));
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
