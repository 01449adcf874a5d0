//! Lies about the exchange itself: stalls, floods, raw bytes, error texts.

use std::sync::atomic::{AtomicUsize, Ordering};

use wire::{encode_response, BlobId, ErrorCode, ListEntry, Request, Response, MAX_LIST_PAGE};

use super::{Lie, Matcher, Reply, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Before,
    After,
    MidBlob(usize),
}

/// Never answers requests matching a predicate: the stream stays open
/// until the client gives up ([`Reply::Stall`]). Three moments:
/// [`StallOn::new`] before the node sees the request, [`StallOn::after_node`]
/// after the node did the work (an upload is stored but never confirmed),
/// and [`StallOn::mid_blob`] inside a served blob.
pub struct StallOn {
    matches: Matcher,
    stage: Stage,
    hits: AtomicUsize,
}

impl std::fmt::Debug for StallOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StallOn")
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl StallOn {
    /// Stalls matching requests without forwarding them.
    pub fn new(matches: impl Fn(&Request) -> bool + Send + Sync + 'static) -> Self {
        Self::with(Box::new(matches), Stage::Before)
    }

    /// Forwards matching requests, then withholds the node's answer.
    pub fn after_node(matches: impl Fn(&Request) -> bool + Send + Sync + 'static) -> Self {
        Self::with(Box::new(matches), Stage::After)
    }

    /// For `GetBlob` of ids starting with `prefix` answered with a `Blob`:
    /// sends the frame and the first `n` bytes (all of them if the blob is
    /// shorter, without FIN), then stalls.
    pub fn mid_blob(prefix: &str, n: usize) -> Self {
        Self::with(Box::new(super::when::get_blob(prefix)), Stage::MidBlob(n))
    }

    fn with(matches: Matcher, stage: Stage) -> Self {
        StallOn {
            matches,
            stage,
            hits: AtomicUsize::new(0),
        }
    }

    /// Requests stalled so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Lie for StallOn {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        if self.stage == Stage::Before && (self.matches)(req) {
            self.hits.fetch_add(1, Ordering::SeqCst);
            return Verdict::Answer(Reply::Stall);
        }
        Verdict::Forward
    }

    fn on_response(&self, req: &Request, resp: Response, mut bulk: Vec<u8>) -> Reply {
        if !(self.matches)(req) {
            return Reply::Send(resp, bulk);
        }
        match (self.stage, &resp) {
            (Stage::After, _) => {
                self.hits.fetch_add(1, Ordering::SeqCst);
                Reply::Stall
            }
            (Stage::MidBlob(n), Response::Blob { .. }) => {
                self.hits.fetch_add(1, Ordering::SeqCst);
                bulk.truncate(n);
                let mut bytes = encode_response(&resp);
                bytes.extend_from_slice(&bulk);
                Reply::StallAfter(bytes)
            }
            _ => Reply::Send(resp, bulk),
        }
    }
}

/// Stored length of every synthetic [`FloodListing`] entry.
pub const FLOOD_ENTRY_LEN: u64 = 1024;

/// Hex digits of a synthetic id's counter.
const COUNTER_DIGITS: usize = 64;

/// Answers every `List` and `ListData` itself, forever, whatever its
/// prefix: a full page (`limit` entries; for `ListData` `max_entries`, as
/// many as its byte budget allows, with zeros as contents when they fit
/// `max_inline`) of synthetic ids, each [`FLOOD_ENTRY_LEN`] bytes long,
/// modified at 0, and `more: true`.
///
/// Ids are `<base>-<64 hex digits>` and strictly increase, page after page,
/// all sorting after the request's `after`: with no `after` the base is the
/// one given to [`FloodListing::new`] and the counter starts at 0; an
/// `after` of that shape continues its base and counter; any other `after`
/// of at most 63 characters becomes the base itself (counter from 0). An
/// `after` that fits neither (longer, or the flood's last possible id)
/// gets an empty page, still with `more: true`.
#[derive(Debug)]
pub struct FloodListing {
    base: String,
    pages: AtomicUsize,
}

impl FloodListing {
    /// Floods with ids `<base>-…` (`"p"` looks like parts, `"m"` like
    /// manifests). `base` must be a valid blob id of at most 63 characters.
    pub fn new(base: &str) -> Self {
        assert!(
            BlobId::is_valid(base) && base.len() < wire::id::MAX_BLOB_ID_LEN - COUNTER_DIGITS,
            "invalid flood base {base:?}"
        );
        FloodListing {
            base: base.into(),
            pages: AtomicUsize::new(0),
        }
    }

    /// Pages served so far.
    pub fn hits(&self) -> usize {
        self.pages.load(Ordering::SeqCst)
    }

    /// The base and first counter of the page after `after`, if any.
    fn start(&self, after: Option<&BlobId>) -> Option<(String, Vec<u8>)> {
        let zero = || vec![b'0'; COUNTER_DIGITS];
        let Some(after) = after else {
            return Some((self.base.clone(), zero()));
        };
        let s = after.as_str();
        if let Some((base, counter)) = s.rsplit_once('-') {
            let hex = counter.len() == COUNTER_DIGITS
                && counter
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if hex && !base.is_empty() {
                let mut next = counter.as_bytes().to_vec();
                if increment(&mut next) {
                    return Some((base.to_string(), next));
                }
            }
        }
        (s.len() < wire::id::MAX_BLOB_ID_LEN - COUNTER_DIGITS).then(|| (s.to_string(), zero()))
    }
}

/// Adds one to a lower-case hex number; false on overflow.
fn increment(hex: &mut [u8]) -> bool {
    for d in hex.iter_mut().rev() {
        match *d {
            b'f' => *d = b'0',
            b'9' => {
                *d = b'a';
                return true;
            }
            _ => {
                *d += 1;
                return true;
            }
        }
    }
    false
}

impl Lie for FloodListing {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        // `ListData` pages carry each entry's bytes (zeros) when they fit
        // its `max_inline`, and stop at its byte budget.
        let (after, count, inline) = match req {
            Request::List { after, limit, .. } => (after, (*limit).min(MAX_LIST_PAGE), None),
            Request::ListData {
                after,
                max_entries,
                max_bytes,
                max_inline,
                ..
            } => {
                let inline = FLOOD_ENTRY_LEN <= u64::from(*max_inline);
                let by_bytes = if inline {
                    (u64::from(*max_bytes) / FLOOD_ENTRY_LEN).max(1) as u32
                } else {
                    u32::MAX
                };
                let count = (*max_entries).min(wire::MAX_BATCH as u32).min(by_bytes);
                (after, count, Some(inline))
            }
            _ => return Verdict::Forward,
        };
        self.pages.fetch_add(1, Ordering::SeqCst);
        let mut entries = Vec::new();
        if let Some((base, mut counter)) = self.start(after.as_ref()) {
            for _ in 0..count {
                let id = format!("{base}-{}", String::from_utf8_lossy(&counter));
                let Ok(id) = BlobId::new(id) else { break };
                entries.push(ListEntry {
                    id,
                    len: FLOOD_ENTRY_LEN,
                    modified: 0,
                });
                if !increment(&mut counter) {
                    break;
                }
            }
        }
        let Some(inline) = inline else {
            let page = Response::Listing {
                entries,
                more: true,
            };
            return Verdict::Answer(Reply::Send(page, Vec::new()));
        };
        let bulk = if inline {
            vec![0u8; entries.len() * FLOOD_ENTRY_LEN as usize]
        } else {
            Vec::new()
        };
        let page = Response::DataListing {
            entries,
            more: true,
        };
        Verdict::Answer(Reply::Send(page, bulk))
    }
}

/// Answers requests matching a predicate with exactly the given bytes (then
/// FIN), without forwarding them: oversized frame headers
/// ([`crate::testing::raw::oversized_frame_header`]), unknown versions,
/// garbage CBOR, trailing bytes ([`crate::testing::raw::frame`] helps).
pub struct RawAnswer {
    matches: Matcher,
    bytes: Vec<u8>,
    hits: AtomicUsize,
}

impl std::fmt::Debug for RawAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAnswer")
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl RawAnswer {
    /// Answers matching requests with `bytes`.
    pub fn new(
        matches: impl Fn(&Request) -> bool + Send + Sync + 'static,
        bytes: impl Into<Vec<u8>>,
    ) -> Self {
        RawAnswer {
            matches: Box::new(matches),
            bytes: bytes.into(),
            hits: AtomicUsize::new(0),
        }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Lie for RawAnswer {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        if (self.matches)(req) {
            self.hits.fetch_add(1, Ordering::SeqCst);
            return Verdict::Answer(Reply::Raw(self.bytes.clone()));
        }
        Verdict::Forward
    }
}

/// Answers requests matching a predicate with `Response::Error` carrying
/// the given message (code [`ErrorCode::Internal`] unless
/// [`ErrorText::code`] says otherwise), without forwarding them. For
/// messages a client must not print raw: `"\x1b]0;pwned\x07"`, `"\x1b[2J"`.
pub struct ErrorText {
    matches: Matcher,
    code: ErrorCode,
    message: String,
    hits: AtomicUsize,
}

impl std::fmt::Debug for ErrorText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorText")
            .field("code", &self.code)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl ErrorText {
    /// Answers matching requests with `message`.
    pub fn new(
        matches: impl Fn(&Request) -> bool + Send + Sync + 'static,
        message: impl Into<String>,
    ) -> Self {
        ErrorText {
            matches: Box::new(matches),
            code: ErrorCode::Internal,
            message: message.into(),
            hits: AtomicUsize::new(0),
        }
    }

    /// Uses `code` instead of [`ErrorCode::Internal`].
    pub fn code(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Lie for ErrorText {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        if (self.matches)(req) {
            self.hits.fetch_add(1, Ordering::SeqCst);
            let resp = Response::error(self.code, self.message.clone());
            return Verdict::Answer(Reply::Send(resp, Vec::new()));
        }
        Verdict::Forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(after: Option<&str>, limit: u32) -> Vec<String> {
        let lie = FloodListing::new("p");
        let req = Request::List {
            after: after.map(|a| BlobId::new(a).unwrap()),
            limit,
            prefix: None,
        };
        let Verdict::Answer(Reply::Send(Response::Listing { entries, more }, _)) =
            lie.on_request(&req, &[])
        else {
            panic!("no listing");
        };
        assert!(more);
        entries
            .into_iter()
            .map(|e| e.id.as_str().to_string())
            .collect()
    }

    #[test]
    fn flood_ids_increase_past_after() {
        let first = list(None, 256);
        assert_eq!(first.len(), 256);
        assert_eq!(first[0], format!("p-{}", "0".repeat(64)));
        assert!(first.windows(2).all(|w| w[0] < w[1]));
        let second = list(Some(first.last().unwrap()), 3);
        assert_eq!(second.len(), 3);
        assert!(second[0] > first[255]);
        assert!(second[0].ends_with("100"), "{}", second[0]);
        let foreign = list(Some("m-abc"), 2);
        assert!(foreign[0].starts_with("m-abc-") && foreign[0].as_str() > "m-abc");
        assert!(list(Some(&"z".repeat(100)), 5).is_empty());
        let top = format!("p-{}", "f".repeat(64));
        assert!(
            list(Some(&top), 1).is_empty(),
            "nothing sorts after the last id"
        );
    }

    #[test]
    fn increment_carries() {
        let mut h = b"0f9".to_vec();
        assert!(increment(&mut h));
        assert_eq!(h, b"0fa");
        let mut h = b"0ff".to_vec();
        assert!(increment(&mut h));
        assert_eq!(h, b"100");
        let mut h = b"ff".to_vec();
        assert!(!increment(&mut h));
    }
}
