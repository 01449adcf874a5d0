//! What a hostile node says: the [`Lie`] trait and ready-made lies.
//!
//! The proxy ([`crate::testing::TestCluster::make_hostile`]) handles each
//! request in two steps. It asks [`Lie::on_request`] first: the lie either
//! lets the request through to the real node ([`Verdict::Forward`]) or
//! answers it itself ([`Verdict::Answer`]), and then the node never sees
//! it. A forwarded request's real answer goes through
//! [`Lie::on_response`], whose [`Reply`] is what the client receives. Both
//! methods default to the honest choice, so a lie overrides only what it
//! changes:
//!
//! ```
//! use vault_node::testing::{Lie, Reply, Verdict};
//! use wire::{Request, Response};
//!
//! /// Claims every upload was stored, and stores nothing.
//! struct BlackHole;
//!
//! impl Lie for BlackHole {
//!     fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
//!         match req {
//!             Request::PutBlob { .. } => Verdict::Answer(Reply::Send(Response::Stored, vec![])),
//!             _ => Verdict::Forward,
//!         }
//!     }
//! }
//! ```
//!
//! Lies are called synchronously from the proxy's tasks, possibly from
//! several streams at once: keep state behind a `Mutex` or atomics, and do
//! not block for long. A lie that panics loses only the stream it was
//! answering (the client sees it reset).
//!
//! The ready-made lies each count in `hits()` the answers they actually
//! changed, so a test can check that the attack it meant to stage happened.
//!
//! | lie | attack |
//! |---|---|
//! | [`FlipBlob`] | flips one bit in served blobs |
//! | [`TruncateBlob`] | serves blobs cut short |
//! | [`ServeInstead`] | serves other bytes (another blob, file or user) |
//! | [`ReplayBlob`] | keeps serving the first version it saw |
//! | [`ClaimScheme`] | announces a user as legacy or with other Argon2 costs |
//! | [`ForgeRecord`] | rewrites key records |
//! | [`StallOn`] | never answers (before or after the node did the work, or mid-blob) |
//! | [`FloodListing`] | endless full listing pages |
//! | [`SlowReplayListing`] | slow listing of fake early ids, then old copies kept |
//! | [`RawAnswer`] | exact bytes: oversized or malformed frames |
//! | [`ErrorText`] | error messages carrying, say, terminal escapes |

use std::sync::Arc;

use wire::{Request, Response};

mod answer;
mod blob;
mod listing;
mod login;

pub use answer::{ErrorText, FloodListing, RawAnswer, StallOn, FLOOD_ENTRY_LEN};
pub use blob::{FlipBlob, ReplayBlob, ServeInstead, TruncateBlob};
pub use listing::{SlowReplayListing, FAKE_ENTRY_LEN};
pub use login::{ClaimScheme, ForgeRecord};

/// A hostile node's behaviour, consulted by the proxy for every request.
pub trait Lie: Send + Sync + 'static {
    /// Before the request reaches the real node. `bulk` holds the upload
    /// bytes of a `PutBlob`, or of every item of a `PutBlobs` one after
    /// the other (empty for every other request).
    fn on_request(&self, req: &Request, bulk: &[u8]) -> Verdict {
        let _ = (req, bulk);
        Verdict::Forward
    }

    /// With the real node's answer to a forwarded request; `bulk` holds
    /// the bytes after a `Blob`, `Blobs` or `DataListing` frame, as many
    /// as the frame announces (empty for every other answer; see
    /// [`crate::testing::raw::response_bulk_len`]).
    fn on_response(&self, req: &Request, resp: Response, bulk: Vec<u8>) -> Reply {
        let _ = req;
        Reply::Send(resp, bulk)
    }
}

/// What to do with a request before the real node sees it.
#[derive(Debug)]
pub enum Verdict {
    /// Forward the request, byte for byte, to the real node.
    Forward,
    /// Do not forward it; answer the client with this.
    Answer(Reply),
}

/// What the client receives on the request's stream.
#[derive(Debug)]
pub enum Reply {
    /// A frame holding this response, then these bytes, then FIN. Written
    /// as given: nothing makes a `Blob { len }` (or `Blobs`, or
    /// `DataListing`) agree with the bytes, and a
    /// response whose CBOR body exceeds [`wire::MAX_FRAME_BODY_LEN`] is
    /// still written, its header announcing the true length.
    Send(Response, Vec<u8>),
    /// Exactly these bytes, then FIN (malformed or oversized frames).
    Raw(Vec<u8>),
    /// Nothing, ever: the stream stays open until the client gives up on it
    /// (stops or resets it, or closes the connection) or the cluster stops.
    Stall,
    /// These bytes, then nothing more and no FIN, as [`Reply::Stall`].
    StallAfter(Vec<u8>),
    /// Reset the stream (error code 1) without writing anything.
    Reset,
}

/// The honest node: forwards everything unchanged (the default methods).
#[derive(Debug, Clone, Copy, Default)]
pub struct Honest;

impl Lie for Honest {}

/// Several lies at once. A request goes to each lie's `on_request` in
/// order and the first `Answer` is the verdict (later lies are not asked).
/// A forwarded request's answer goes through each lie's `on_response` in
/// order, each seeing the previous one's `Reply::Send`; any other reply
/// ends the chain and is what the client gets.
pub struct Chain(pub Vec<Arc<dyn Lie>>);

impl Lie for Chain {
    fn on_request(&self, req: &Request, bulk: &[u8]) -> Verdict {
        for lie in &self.0 {
            if let Verdict::Answer(reply) = lie.on_request(req, bulk) {
                return Verdict::Answer(reply);
            }
        }
        Verdict::Forward
    }

    fn on_response(&self, req: &Request, resp: Response, bulk: Vec<u8>) -> Reply {
        let mut reply = Reply::Send(resp, bulk);
        for lie in &self.0 {
            reply = match reply {
                Reply::Send(resp, bulk) => lie.on_response(req, resp, bulk),
                other => return other,
            };
        }
        reply
    }
}

/// A request predicate, as the ready-made lies take them.
pub type Matcher = Box<dyn Fn(&Request) -> bool + Send + Sync>;

/// Ready-made request predicates for the lies that take one.
///
/// Blob-id prefixes match the start of the id (`"p-"` for parts, `"m-"`
/// for manifests, `""` for every id).
pub mod when {
    use wire::Request;

    /// Every request.
    pub fn any() -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        |_| true
    }

    /// `GetBlob` of an id starting with `prefix`.
    pub fn get_blob(prefix: &str) -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        let prefix = prefix.to_string();
        move |r| matches!(r, Request::GetBlob { id } if id.as_str().starts_with(&prefix))
    }

    /// `PutBlob` of an id starting with `prefix`.
    pub fn put_blob(prefix: &str) -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        let prefix = prefix.to_string();
        move |r| matches!(r, Request::PutBlob { id, .. } if id.as_str().starts_with(&prefix))
    }

    /// `Delete` of an id starting with `prefix`.
    pub fn delete(prefix: &str) -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        let prefix = prefix.to_string();
        move |r| matches!(r, Request::Delete { id } if id.as_str().starts_with(&prefix))
    }

    /// Every `List`.
    pub fn list() -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        |r| matches!(r, Request::List { .. })
    }

    /// Every `Hello`.
    pub fn hello() -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        |r| matches!(r, Request::Hello { .. })
    }

    /// Every `Login`.
    pub fn login() -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        |r| matches!(r, Request::Login { .. })
    }

    /// Every `GetRecord`.
    pub fn get_record() -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        |r| matches!(r, Request::GetRecord)
    }

    /// Every `PutRecord`.
    pub fn put_record() -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        |r| matches!(r, Request::PutRecord { .. })
    }

    /// Every `Status`.
    pub fn status() -> impl Fn(&Request) -> bool + Send + Sync + 'static {
        |r| matches!(r, Request::Status)
    }
}
