//! Lies about blob contents: bit flips, truncation, substitution, replay.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use wire::{encode_response, BlobId, Request, Response};

use super::{Lie, Reply, Verdict};

fn served_blob<'a>(req: &'a Request, resp: &Response, prefix: &str) -> Option<&'a BlobId> {
    match (req, resp) {
        (Request::GetBlob { id }, Response::Blob { .. }) if id.as_str().starts_with(prefix) => {
            Some(id)
        }
        _ => None,
    }
}

/// Flips one bit of every blob the node serves whose id starts with
/// `prefix`: byte `len / 2` (or the byte set with [`FlipBlob::at`]) is
/// XORed with `0x01`. The announced length is unchanged. A blob too short
/// to have that byte (an empty one, say) is served unchanged and not
/// counted in [`FlipBlob::hits`].
#[derive(Debug)]
pub struct FlipBlob {
    prefix: String,
    at: Option<usize>,
    hits: AtomicUsize,
}

impl FlipBlob {
    /// Flips the middle byte of blobs whose id starts with `prefix`.
    pub fn new(prefix: &str) -> Self {
        FlipBlob {
            prefix: prefix.into(),
            at: None,
            hits: AtomicUsize::new(0),
        }
    }

    /// Flips byte `offset` instead of the middle one.
    pub fn at(mut self, offset: usize) -> Self {
        self.at = Some(offset);
        self
    }

    /// Blobs served with a flipped bit so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Lie for FlipBlob {
    fn on_response(&self, req: &Request, resp: Response, mut bulk: Vec<u8>) -> Reply {
        if served_blob(req, &resp, &self.prefix).is_some() {
            let at = self.at.unwrap_or(bulk.len() / 2);
            if let Some(b) = bulk.get_mut(at) {
                *b ^= 0x01;
                self.hits.fetch_add(1, Ordering::SeqCst);
            }
        }
        Reply::Send(resp, bulk)
    }
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    Keep(usize),
    DropLast(usize),
}

/// Serves blobs whose id starts with `prefix` cut short. By default the
/// frame announces the shortened length, as a node whose file was
/// truncated would; with [`TruncateBlob::short_stream`] it announces the
/// real length and the stream ends (FIN) early, as a node dying mid-send
/// would. A blob already no longer than the cut is served unchanged and
/// not counted.
#[derive(Debug)]
pub struct TruncateBlob {
    prefix: String,
    cut: Cut,
    short_stream: bool,
    hits: AtomicUsize,
}

impl TruncateBlob {
    /// Keeps the first `keep` bytes.
    pub fn keep(prefix: &str, keep: usize) -> Self {
        Self::with(prefix, Cut::Keep(keep))
    }

    /// Drops the last `n` bytes.
    pub fn drop_last(prefix: &str, n: usize) -> Self {
        Self::with(prefix, Cut::DropLast(n))
    }

    fn with(prefix: &str, cut: Cut) -> Self {
        TruncateBlob {
            prefix: prefix.into(),
            cut,
            short_stream: false,
            hits: AtomicUsize::new(0),
        }
    }

    /// Announces the real length and ends the stream early instead.
    pub fn short_stream(mut self) -> Self {
        self.short_stream = true;
        self
    }

    /// Blobs served truncated so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Lie for TruncateBlob {
    fn on_response(&self, req: &Request, resp: Response, mut bulk: Vec<u8>) -> Reply {
        if served_blob(req, &resp, &self.prefix).is_none() {
            return Reply::Send(resp, bulk);
        }
        let keep = match self.cut {
            Cut::Keep(n) => n.min(bulk.len()),
            Cut::DropLast(n) => bulk.len().saturating_sub(n),
        };
        if keep == bulk.len() {
            return Reply::Send(resp, bulk);
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        bulk.truncate(keep);
        if self.short_stream {
            let mut bytes = encode_response(&resp);
            bytes.extend_from_slice(&bulk);
            Reply::Raw(bytes)
        } else {
            Reply::Send(Response::Blob { len: keep as u64 }, bulk)
        }
    }
}

type Source = Box<dyn Fn(&BlobId) -> Option<Vec<u8>> + Send + Sync>;

enum Instead {
    Bytes(Source),
    File(BlobId, PathBuf),
}

/// Answers `GetBlob` of chosen ids with other bytes (a `Blob` frame
/// announcing their length), without asking the node: another blob of the
/// same user, another user's blob read from the node's disk, or anything.
/// Other requests, and ids it has nothing for, are forwarded.
pub struct ServeInstead {
    source: Instead,
    hits: AtomicUsize,
}

impl std::fmt::Debug for ServeInstead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeInstead").finish_non_exhaustive()
    }
}

impl ServeInstead {
    /// Serves `source(id)` when it is `Some`. Called once per `GetBlob`, at
    /// request time (so it can read a node's disk as it is then).
    pub fn new(source: impl Fn(&BlobId) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        Self::with(Instead::Bytes(Box::new(source)))
    }

    /// Serves `map[id]` for the ids in `map`.
    pub fn map(map: HashMap<BlobId, Vec<u8>>) -> Self {
        Self::new(move |id| map.get(id).cloned())
    }

    /// Serves the contents of `path`, read at request time, for `id`; if
    /// the file cannot be read then, the stream is reset (and not counted).
    /// For another user's blob, read it first with
    /// [`TestCluster::blob`](crate::testing::TestCluster::blob) and serve it
    /// with [`ServeInstead::map`]: blob files are the store's own business.
    pub fn file(id: BlobId, path: impl Into<PathBuf>) -> Self {
        Self::with(Instead::File(id, path.into()))
    }

    fn with(source: Instead) -> Self {
        ServeInstead {
            source,
            hits: AtomicUsize::new(0),
        }
    }

    /// Blobs served from the substitute so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Lie for ServeInstead {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        let Request::GetBlob { id } = req else {
            return Verdict::Forward;
        };
        let bytes = match &self.source {
            Instead::Bytes(source) => match source(id) {
                Some(bytes) => bytes,
                None => return Verdict::Forward,
            },
            Instead::File(want, _) if want != id => return Verdict::Forward,
            Instead::File(_, path) => match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "ServeInstead: cannot read the substitute");
                    return Verdict::Answer(Reply::Reset);
                }
            },
        };
        self.hits.fetch_add(1, Ordering::SeqCst);
        let len = bytes.len() as u64;
        Verdict::Answer(Reply::Send(Response::Blob { len }, bytes))
    }
}

/// Replays old data: remembers the first version of each blob whose id
/// starts with `prefix` that passes through it, uploaded (a `PutBlob`'s
/// bytes, whether or not the node then stores them) or served (a `Blob`
/// answer), and from then on answers every `GetBlob` of that id with the
/// remembered bytes without asking the node, even after the id was
/// overwritten or deleted. Later uploads are still forwarded (the node
/// stores them) but not remembered. Listings are not rewritten.
#[derive(Debug)]
pub struct ReplayBlob {
    prefix: String,
    seen: Mutex<HashMap<BlobId, Vec<u8>>>,
    hits: AtomicUsize,
}

impl ReplayBlob {
    /// Replays blobs whose id starts with `prefix` (`""`: every blob).
    pub fn new(prefix: &str) -> Self {
        ReplayBlob {
            prefix: prefix.into(),
            seen: Mutex::new(HashMap::new()),
            hits: AtomicUsize::new(0),
        }
    }

    /// `GetBlob` answers served from memory so far (whether or not the
    /// node's current bytes differ).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<BlobId, Vec<u8>>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Lie for ReplayBlob {
    fn on_request(&self, req: &Request, bulk: &[u8]) -> Verdict {
        match req {
            Request::PutBlob { id, .. } if id.as_str().starts_with(&self.prefix) => {
                self.seen()
                    .entry(id.clone())
                    .or_insert_with(|| bulk.to_vec());
                Verdict::Forward
            }
            Request::GetBlob { id } => match self.seen().get(id) {
                Some(old) => {
                    self.hits.fetch_add(1, Ordering::SeqCst);
                    let len = old.len() as u64;
                    Verdict::Answer(Reply::Send(Response::Blob { len }, old.clone()))
                }
                None => Verdict::Forward,
            },
            _ => Verdict::Forward,
        }
    }

    fn on_response(&self, req: &Request, resp: Response, bulk: Vec<u8>) -> Reply {
        if let Some(id) = served_blob(req, &resp, &self.prefix) {
            self.seen()
                .entry(id.clone())
                .or_insert_with(|| bulk.clone());
        }
        Reply::Send(resp, bulk)
    }
}
