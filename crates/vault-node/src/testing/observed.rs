//! [`Observed`]: what reached a hostile proxy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use wire::{Proof, Request};

/// Everything that reached a hostile proxy, in arrival order.
///
/// Holds the decoded [`Request`] values themselves, so the proofs of
/// `Login` requests are there in full (their `Debug` output stays
/// redacted). Requests that did not decode are not recorded.
#[derive(Debug, Default)]
pub struct Observed {
    requests: Mutex<Vec<Request>>,
    connections: AtomicUsize,
}

impl Observed {
    fn list(&self) -> MutexGuard<'_, Vec<Request>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, req: &Request) {
        self.list().push(req.clone());
    }

    pub(crate) fn connected(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.list().clone()
    }

    /// The `(user, proof)` of every `Login` received so far.
    pub fn logins(&self) -> Vec<(String, Proof)> {
        self.list()
            .iter()
            .filter_map(|r| match r {
                Request::Login { user, proof } => Some((user.clone(), proof.clone())),
                _ => None,
            })
            .collect()
    }

    /// How many received requests match `pred`.
    pub fn count(&self, pred: impl Fn(&Request) -> bool) -> usize {
        self.list().iter().filter(|r| pred(r)).count()
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Forgets the requests recorded so far (not the connection count).
    pub fn clear(&self) {
        self.list().clear();
    }
}
