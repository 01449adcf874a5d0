//! Lies about listings that take time: a node that answers `ListData`
//! slowly, with fake early ids first, and serves old copies it kept.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wire::{BlobId, ListEntry, Request, Response};

use super::{Lie, Reply, Verdict};

/// Stored length of every fake id [`SlowReplayListing`] lists.
pub const FAKE_ENTRY_LEN: u64 = 48;

/// The rollback attack on a survey: the node keeps old copies of the blobs
/// under a prefix (`saved`: id to bytes, say every manifest as it was
/// before the last PUT) and
///
/// - answers every `ListData` of that prefix itself: first `fake_pages`
///   pages of fake ids that sort before every real one (`<prefix>` then 24
///   zeros and a counter; contents [`FAKE_ENTRY_LEN`] zero bytes, so they
///   never open), each answer held back for `delay`; then the saved copies
///   from `skip_to` on (none before it: the listing claims the node holds
///   nothing there), at once, page by page, as the request's bounds allow;
/// - answers `GetBlob` and `GetBlobs` of saved ids with the saved bytes
///   (ids not saved in a `GetBlobs` with some saved id: not found);
/// - forwards everything else (uploads reach the real node).
///
/// The hold-back blocks the proxy's task in
/// [`tokio::task::block_in_place`], so it needs the multi-threaded runtime
/// (`#[tokio::test(flavor = "multi_thread")]`). `hits()` counts the
/// listing pages answered.
#[derive(Debug)]
pub struct SlowReplayListing {
    prefix: String,
    saved: BTreeMap<BlobId, Vec<u8>>,
    skip_to: Option<BlobId>,
    fake_pages: usize,
    delay: Duration,
    pages: AtomicUsize,
    served: AtomicUsize,
}

impl SlowReplayListing {
    /// Replays `saved` (ids starting with `prefix`), listing it from
    /// `skip_to` on (all of it with `None`) after `fake_pages` slow pages
    /// of fake ids, each held back for `delay`.
    pub fn new(
        prefix: &str,
        saved: impl IntoIterator<Item = (BlobId, Vec<u8>)>,
        skip_to: Option<BlobId>,
        fake_pages: usize,
        delay: Duration,
    ) -> Self {
        SlowReplayListing {
            prefix: prefix.into(),
            saved: saved.into_iter().collect(),
            skip_to,
            fake_pages,
            delay,
            pages: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
        }
    }

    /// Listing pages answered so far.
    pub fn hits(&self) -> usize {
        self.pages.load(Ordering::SeqCst)
    }

    /// Saved copies served by `GetBlob` or `GetBlobs` so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    fn fake_base(&self) -> String {
        format!("{}{}", self.prefix, "0".repeat(24))
    }

    /// Fake id number `n`.
    fn fake(&self, n: usize) -> BlobId {
        BlobId::new(format!("{}{n:016x}", self.fake_base())).expect("a valid id")
    }

    /// The fake page after `after` (its first fake id's number), if the
    /// listing is still in its fake part.
    fn fake_start(&self, after: Option<&BlobId>) -> Option<usize> {
        let next = match after {
            None => 0,
            Some(a) => {
                let counter = a.as_str().strip_prefix(&self.fake_base())?;
                usize::from_str_radix(counter, 16).ok()? + 1
            }
        };
        Some(next)
    }

    fn listing(
        &self,
        after: Option<&BlobId>,
        max_entries: u32,
        max_bytes: u32,
        max_inline: u32,
    ) -> Reply {
        self.pages.fetch_add(1, Ordering::SeqCst);
        let count = (max_entries as usize).clamp(1, wire::MAX_BATCH);
        let mut entries = Vec::new();
        let mut bulk = Vec::new();
        let fake_done = self.fake_pages * count;
        match self.fake_start(after) {
            Some(first) if first < fake_done => {
                if !self.delay.is_zero() {
                    tokio::task::block_in_place(|| std::thread::sleep(self.delay));
                }
                for n in first..(first + count).min(fake_done) {
                    entries.push(ListEntry {
                        id: self.fake(n),
                        len: FAKE_ENTRY_LEN,
                        modified: 0,
                    });
                    if FAKE_ENTRY_LEN <= u64::from(max_inline) {
                        bulk.extend(std::iter::repeat_n(0u8, FAKE_ENTRY_LEN as usize));
                    }
                }
                let page = Response::DataListing {
                    entries,
                    more: true,
                };
                return Reply::Send(page, bulk);
            }
            _ => {}
        }
        // The saved copies from `skip_to` on, after `after`.
        let real_after = after.filter(|a| self.fake_start(Some(a)).is_none());
        let mut rest = self
            .saved
            .iter()
            .filter(|(id, _)| self.skip_to.as_ref().is_none_or(|s| *id >= s))
            .filter(|(id, _)| real_after.is_none_or(|a| *id > a))
            .peekable();
        while let Some((id, bytes)) = rest.peek() {
            let inline = bytes.len() as u64 <= u64::from(max_inline);
            let size = if inline { bytes.len() } else { 0 };
            if entries.len() == count
                || (!entries.is_empty() && bulk.len() + size > max_bytes as usize)
            {
                break;
            }
            entries.push(ListEntry {
                id: (*id).clone(),
                len: bytes.len() as u64,
                modified: 0,
            });
            if inline {
                bulk.extend_from_slice(bytes);
            }
            rest.next();
        }
        let more = rest.peek().is_some();
        Reply::Send(Response::DataListing { entries, more }, bulk)
    }
}

impl Lie for SlowReplayListing {
    fn on_request(&self, req: &Request, _bulk: &[u8]) -> Verdict {
        match req {
            Request::ListData {
                after,
                prefix,
                max_entries,
                max_bytes,
                max_inline,
            } if prefix.starts_with(&self.prefix) => {
                Verdict::Answer(self.listing(after.as_ref(), *max_entries, *max_bytes, *max_inline))
            }
            Request::GetBlob { id } => match self.saved.get(id) {
                Some(bytes) => {
                    self.served.fetch_add(1, Ordering::SeqCst);
                    let len = bytes.len() as u64;
                    Verdict::Answer(Reply::Send(Response::Blob { len }, bytes.clone()))
                }
                None => Verdict::Forward,
            },
            Request::GetBlobs { ids } if ids.iter().any(|id| self.saved.contains_key(id)) => {
                let mut lens = Vec::new();
                let mut bulk = Vec::new();
                for id in ids {
                    match self.saved.get(id) {
                        Some(bytes) => {
                            self.served.fetch_add(1, Ordering::SeqCst);
                            lens.push(Some(bytes.len() as u64));
                            bulk.extend_from_slice(bytes);
                        }
                        None => lens.push(None),
                    }
                }
                Verdict::Answer(Reply::Send(Response::Blobs { lens }, bulk))
            }
            _ => Verdict::Forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> BlobId {
        BlobId::new(s.to_string()).unwrap()
    }

    fn page(lie: &SlowReplayListing, after: Option<&str>) -> (Vec<String>, bool, usize) {
        let req = Request::ListData {
            after: after.map(id),
            prefix: "m2-".into(),
            max_entries: 2,
            max_bytes: 1 << 20,
            max_inline: 1024,
        };
        let Verdict::Answer(Reply::Send(Response::DataListing { entries, more }, bulk)) =
            lie.on_request(&req, &[])
        else {
            panic!("no listing");
        };
        let ids = entries.iter().map(|e| e.id.as_str().to_string()).collect();
        (ids, more, bulk.len())
    }

    #[test]
    fn fake_pages_first_then_the_saved_copies_from_skip_to() {
        let saved = [("m2-aa", 3), ("m2-bb", 4), ("m2-cc", 5), ("m2-dd", 6)]
            .map(|(s, n)| (id(s), vec![1u8; n]));
        let lie = SlowReplayListing::new("m2-", saved, Some(id("m2-bb")), 1, Duration::ZERO);
        let (first, more, bulk) = page(&lie, None);
        assert_eq!(first.len(), 2);
        assert!(more && bulk == 2 * FAKE_ENTRY_LEN as usize);
        assert!(first.iter().all(|f| f.as_str() < "m2-0001"), "{first:?}");
        let (second, more, bulk) = page(&lie, Some(&first[1]));
        assert_eq!(second, ["m2-bb", "m2-cc"]);
        assert!(more);
        assert_eq!(bulk, 9);
        let (third, more, _) = page(&lie, Some("m2-cc"));
        assert_eq!(third, ["m2-dd"]);
        assert!(!more);
        assert_eq!(lie.hits(), 3);
    }
}
