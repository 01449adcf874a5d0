//! Batch requests: many small blobs per round trip, for trees of small
//! files. Every answer is checked against the request before it is used:
//! counts, order, prefixes and byte totals, so a node can neither make the
//! client read without bound nor slip in entries it did not ask for.

use std::ops::Range;
use std::time::Duration;

use quinn::RecvStream;
use wire::{
    BlobId, BlobStat, Expect, ListEntry, PutItem, Request, Response, MAX_BATCH, MAX_BATCH_BYTES,
};

use super::{conn_err, read_frame, send_bulk, unexpected, NetError, Session};

/// The slowest transfer a batch may run at before the node counts as too
/// slow (after the request timeout).
const MIN_RATE: u64 = 1 << 20;

/// A page of [`Session::list_data`].
#[derive(Debug, Default)]
pub struct DataPage {
    /// The entries, each with its contents if it was small enough.
    pub entries: Vec<(ListEntry, Option<Vec<u8>>)>,
    /// Whether more entries follow.
    pub more: bool,
}

/// A blob a batch could not store, by its position in the batch.
#[derive(Debug, Clone)]
pub struct PutFailure {
    /// Position in the batch.
    pub index: usize,
    /// The node's reason.
    pub error: NetError,
}

/// How large one batch may grow: at most `items` entries and at most
/// `bytes` bytes, except that the first entry always goes in (so an entry
/// larger than `bytes` goes alone, and every batch makes progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimit {
    /// Most entries in one batch.
    pub(crate) items: usize,
    /// Most bytes in one batch (of entries after the first).
    pub(crate) bytes: u64,
}

impl BatchLimit {
    /// A limit of `items` entries and `bytes` bytes.
    pub(crate) const fn new(items: usize, bytes: u64) -> BatchLimit {
        BatchLimit { items, bytes }
    }

    /// Whether an entry of `len` bytes joins a batch that holds `count`
    /// entries of `bytes` bytes so far.
    pub(crate) fn admits(self, count: usize, bytes: u64, len: u64) -> bool {
        count == 0 || (count < self.items && bytes.saturating_add(len) <= self.bytes)
    }

    /// Cuts `items` into consecutive batches, each as long as the limit
    /// admits, where `len` gives an item's size: the batches' position
    /// ranges, none empty, covering `items` in order.
    pub(crate) fn split<'a, T>(
        self,
        items: &'a [T],
        len: impl Fn(&T) -> u64 + 'a,
    ) -> impl Iterator<Item = Range<usize>> + 'a {
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= items.len() {
                return None;
            }
            let (mut end, mut bytes) = (start, 0u64);
            while let Some(item) = items.get(end) {
                let l = len(item);
                if !self.admits(end - start, bytes, l) {
                    break;
                }
                bytes = bytes.saturating_add(l);
                end += 1;
            }
            let batch = start..end;
            start = end;
            Some(batch)
        })
    }
}

/// One request of [`Session::put_blobs_batched`]: the positions it carried
/// and how it went.
#[derive(Debug)]
pub(crate) struct PutBatch {
    /// The positions in the caller's list.
    pub(crate) range: Range<usize>,
    /// Per position in `range`, in order: `None` where the blob was stored,
    /// the node's reason where it was not. `Err` when the request as a
    /// whole failed: then none of its blobs is known to be stored.
    pub(crate) result: Result<Vec<Option<NetError>>, NetError>,
}

/// Checks positions a node reports in a batch of `n`: each inside the
/// batch and named once, in order. A node repeating a position could
/// otherwise make one failure count many times (and a committed file look
/// refused everywhere, so its new parts would be removed).
fn positions(indices: impl Iterator<Item = u32>, n: usize) -> Result<(), NetError> {
    let mut next = 0usize;
    for i in indices {
        let i = i as usize;
        if i < next || i >= n {
            return Err(protocol(
                "blob positions outside the batch, repeated or out of order",
            ));
        }
        next = i + 1;
    }
    Ok(())
}

/// The total of lengths a node announced, refused when it overflows (the
/// caller then also refuses it for being more than asked for).
fn sum(mut lens: impl Iterator<Item = u64>) -> Result<u64, NetError> {
    lens.try_fold(0u64, u64::checked_add)
        .ok_or_else(|| protocol("announced lengths overflow"))
}

fn protocol(what: impl Into<String>) -> NetError {
    NetError::Protocol(what.into())
}

/// Reads exactly `len` bulk bytes, then the end of the stream.
async fn read_bulk(recv: &mut RecvStream, len: u64, stall: Duration) -> Result<Vec<u8>, NetError> {
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(16 << 20));
    while (out.len() as u64) < len {
        let want = usize::try_from(len - out.len() as u64).unwrap_or(usize::MAX);
        let chunk = tokio::time::timeout(stall, recv.read_chunk(want, true))
            .await
            .map_err(|_| NetError::Timeout)?
            .map_err(conn_err)?
            .ok_or_else(|| protocol("answer shorter than announced"))?;
        out.extend_from_slice(&chunk.bytes);
    }
    let tail = tokio::time::timeout(stall, recv.read_chunk(1, true))
        .await
        .map_err(|_| NetError::Timeout)?
        .map_err(conn_err)?;
    if tail.is_some() {
        return Err(protocol("answer longer than announced"));
    }
    Ok(out)
}

impl Session {
    /// Time a batch moving `bytes` may take.
    fn batch_deadline(&self, bytes: u64) -> Duration {
        self.limits.request + Duration::from_secs(bytes / MIN_RATE)
    }

    /// Sends `req` and `bulk`, then reads the answer frame and the bulk
    /// bytes `expect` says follow it (at most `max` of them).
    async fn exchange(
        &self,
        req: &Request,
        bulk: &[&[u8]],
        max: u64,
        expect: impl Fn(&Response) -> Result<u64, NetError>,
    ) -> Result<(Response, Vec<u8>), NetError> {
        let sent: u64 = bulk.iter().map(|b| b.len() as u64).sum();
        let deadline = self.batch_deadline(sent.saturating_add(max));
        let stall = self.limits.stall;
        let run = async {
            let (mut send, mut recv) = self.open(req).await?;
            for piece in bulk {
                send_bulk(&mut send, &mut recv, piece, self.limits).await?;
            }
            send.finish().map_err(conn_err)?;
            let resp = read_frame(&mut recv).await?;
            let len = expect(&resp)?;
            if len > max {
                return Err(protocol(format!(
                    "answer of {len} bytes is larger than asked for"
                )));
            }
            let bytes = read_bulk(&mut recv, len, stall).await?;
            Ok((resp, bytes))
        };
        tokio::time::timeout(deadline, run)
            .await
            .map_err(|_| NetError::Timeout)?
    }

    /// One page of the blobs whose id starts with `prefix`, after `after`,
    /// with the contents of those of at most `max_inline` bytes.
    pub async fn list_data(
        &self,
        after: Option<&BlobId>,
        prefix: &str,
        max_entries: u32,
        max_bytes: u32,
        max_inline: u32,
    ) -> Result<DataPage, NetError> {
        let req = Request::ListData {
            after: after.cloned(),
            prefix: prefix.to_string(),
            max_entries,
            max_bytes,
            max_inline,
        };
        let inline = |e: &ListEntry| e.len <= u64::from(max_inline);
        let limit = u64::from(max_bytes) + u64::from(max_inline);
        let (resp, bytes) = self
            .exchange(&req, &[], limit, |resp| match resp {
                Response::DataListing { entries, .. } => {
                    sum(entries.iter().filter(|e| inline(e)).map(|e| e.len))
                }
                other => Err(unexpected("DataListing", other)),
            })
            .await?;
        let Response::DataListing { entries, more } = resp else {
            unreachable!("checked by exchange")
        };
        if entries.len() > max_entries as usize {
            return Err(protocol("listing page longer than asked for"));
        }
        let mut last = after.cloned();
        let mut out = Vec::with_capacity(entries.len());
        let mut at = 0usize;
        for e in entries {
            if last.as_ref().is_some_and(|l| e.id <= *l) || !e.id.as_str().starts_with(prefix) {
                return Err(protocol("listing out of order or outside the prefix"));
            }
            last = Some(e.id.clone());
            let data = if inline(&e) {
                let n = usize::try_from(e.len)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - at);
                let piece = bytes[at..at + n].to_vec();
                at += n;
                Some(piece)
            } else {
                None
            };
            out.push((e, data));
        }
        if more && out.is_empty() {
            return Err(protocol("listing did not advance"));
        }
        Ok(DataPage { entries: out, more })
    }

    /// Reads several blobs (at most [`MAX_BATCH`], and at most `max_bytes`
    /// in all): one entry per id, `None` where the node has none.
    pub async fn get_blobs(
        &self,
        ids: &[BlobId],
        max_bytes: u64,
    ) -> Result<Vec<Option<Vec<u8>>>, NetError> {
        assert!(ids.len() <= MAX_BATCH, "callers split batches");
        let req = Request::GetBlobs { ids: ids.to_vec() };
        let n = ids.len();
        let (resp, bytes) = self
            .exchange(
                &req,
                &[],
                max_bytes.min(MAX_BATCH_BYTES),
                |resp| match resp {
                    Response::Blobs { lens } if lens.len() == n => {
                        sum(lens.iter().flatten().copied())
                    }
                    Response::Blobs { .. } => Err(protocol("answer for another number of blobs")),
                    other => Err(unexpected("Blobs", other)),
                },
            )
            .await?;
        let Response::Blobs { lens } = resp else {
            unreachable!("checked by exchange")
        };
        let mut at = 0usize;
        Ok(lens
            .into_iter()
            .map(|l| {
                l.map(|l| {
                    // `l` is within the bytes read: their total was checked.
                    let l = usize::try_from(l)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - at);
                    let piece = bytes[at..at + l].to_vec();
                    at += l;
                    piece
                })
            })
            .collect())
    }

    /// Stores several blobs (at most [`MAX_BATCH`] and [`MAX_BATCH_BYTES`]):
    /// the ones that failed, by position; every other one is stored.
    pub async fn put_blobs(&self, blobs: &[(BlobId, &[u8])]) -> Result<Vec<PutFailure>, NetError> {
        let items: Vec<(BlobId, &[u8], Option<Expect>)> =
            blobs.iter().map(|(id, b)| (id.clone(), *b, None)).collect();
        self.put_blobs_if(&items).await
    }

    /// [`Session::put_blobs`] where each blob may carry a condition (see
    /// [`Session::put_if`]); a blob whose condition fails is among the
    /// failures with code `Conflict`.
    pub async fn put_blobs_if(
        &self,
        blobs: &[(BlobId, &[u8], Option<Expect>)],
    ) -> Result<Vec<PutFailure>, NetError> {
        let items: Vec<PutItem> = blobs
            .iter()
            .map(|(id, b, expect)| PutItem {
                id: id.clone(),
                len: b.len() as u64,
                expect: expect.clone(),
            })
            .collect();
        let bulk: Vec<&[u8]> = blobs.iter().map(|(_, b, _)| *b).collect();
        let (resp, _) = self
            .exchange(&Request::PutBlobs { items }, &bulk, 0, |resp| match resp {
                Response::BatchStored { .. } => Ok(0),
                other => Err(unexpected("BatchStored", other)),
            })
            .await?;
        let Response::BatchStored { failed } = resp else {
            unreachable!("checked by exchange")
        };
        positions(failed.iter().map(|f| f.index), blobs.len())?;
        Ok(failed
            .into_iter()
            .map(|f| PutFailure {
                index: f.index as usize,
                error: NetError::Node {
                    code: f.code,
                    message: super::sanitize(&f.message),
                },
            })
            .collect())
    }

    /// Deletes several blobs (at most [`MAX_BATCH`]); returns how many
    /// were not there.
    pub async fn delete_blobs(&self, ids: &[BlobId]) -> Result<usize, NetError> {
        let n = ids.len();
        let (resp, _) = self
            .exchange(
                &Request::DeleteBlobs { ids: ids.to_vec() },
                &[],
                0,
                |resp| match resp {
                    Response::BatchDeleted { .. } => Ok(0),
                    other => Err(unexpected("BatchDeleted", other)),
                },
            )
            .await?;
        let Response::BatchDeleted { missing } = resp else {
            unreachable!("checked by exchange")
        };
        positions(missing.iter().copied(), n)?;
        Ok(missing.len())
    }

    /// [`Session::get_blobs`] over any number of `ids`, in requests of at
    /// most `per_request` (and [`MAX_BATCH`]), sent one after another;
    /// `max_bytes` gives the answer bound of the request carrying a range
    /// of `ids`. One entry per id, in order; the first failure ends it.
    pub(crate) async fn get_blobs_batched(
        &self,
        ids: &[BlobId],
        per_request: usize,
        max_bytes: impl Fn(Range<usize>) -> u64,
    ) -> Result<Vec<Option<Vec<u8>>>, NetError> {
        let limit = BatchLimit::new(per_request.min(MAX_BATCH), u64::MAX);
        let mut out = Vec::with_capacity(ids.len());
        for range in limit.split(ids, |_| 0) {
            let max = max_bytes(range.clone());
            out.extend(self.get_blobs(&ids[range], max).await?);
        }
        Ok(out)
    }

    /// [`Session::put_blobs_if`] over any number of blobs, in requests of
    /// at most [`MAX_BATCH`] blobs and `max_bytes` bytes (capped at
    /// [`MAX_BATCH_BYTES`]; a larger blob goes alone), sent one after
    /// another, each whatever became of the one before: each request's
    /// outcome, failures at the caller's positions.
    pub(crate) async fn put_blobs_batched(
        &self,
        blobs: &[(BlobId, &[u8], Option<Expect>)],
        max_bytes: u64,
    ) -> Vec<PutBatch> {
        let limit = BatchLimit::new(MAX_BATCH, max_bytes.min(MAX_BATCH_BYTES));
        let mut out = Vec::new();
        for range in limit.split(blobs, |(_, b, _)| b.len() as u64) {
            let result = self
                .put_blobs_if(&blobs[range.clone()])
                .await
                .map(|failed| {
                    let mut each = vec![None; range.len()];
                    for f in failed {
                        // Positions were checked to lie inside the request.
                        if let Some(slot) = each.get_mut(f.index) {
                            *slot = Some(f.error);
                        }
                    }
                    each
                });
            out.push(PutBatch { range, result });
        }
        out
    }

    /// Deletes any number of `ids`, in requests of at most [`MAX_BATCH`],
    /// best effort: every request is sent, whatever became of the one
    /// before. Returns why the requests that failed did.
    pub(crate) async fn delete_blobs_batched(&self, ids: &[BlobId]) -> Vec<NetError> {
        let mut failed = Vec::new();
        for chunk in ids.chunks(MAX_BATCH) {
            if let Err(e) = self.delete_blobs(chunk).await {
                failed.push(e);
            }
        }
        failed
    }

    /// Size and time of several blobs (at most [`MAX_BATCH`]), `None`
    /// where the node has none.
    pub async fn stat_blobs(&self, ids: &[BlobId]) -> Result<Vec<Option<BlobStat>>, NetError> {
        let n = ids.len();
        let resp = self.call(&Request::StatBlobs { ids: ids.to_vec() }).await?;
        match resp {
            Response::Stats { entries } if entries.len() == n => Ok(entries),
            Response::Stats { .. } => Err(protocol("answer for another number of blobs")),
            other => Err(unexpected("Stats", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(items: &[u64], limit: BatchLimit) -> Vec<Range<usize>> {
        limit.split(items, |&l| l).collect()
    }

    #[test]
    fn nothing_splits_into_no_batches() {
        assert!(split(&[], BatchLimit::new(4, 10)).is_empty());
    }

    #[test]
    fn an_item_larger_than_the_bytes_goes_alone() {
        assert_eq!(split(&[11], BatchLimit::new(4, 10)), vec![0..1]);
        assert_eq!(
            split(&[1, 11, 1], BatchLimit::new(4, 10)),
            vec![0..1, 1..2, 2..3]
        );
    }

    #[test]
    fn a_batch_fills_up_to_the_bytes_exactly() {
        assert_eq!(split(&[4, 6, 1], BatchLimit::new(4, 10)), vec![0..2, 2..3]);
        assert_eq!(split(&[4, 7, 3], BatchLimit::new(4, 10)), vec![0..1, 1..3]);
        assert_eq!(split(&[0, 0, 10, 0], BatchLimit::new(9, 10)), vec![0..4]);
    }

    #[test]
    fn a_batch_holds_at_most_the_count() {
        assert_eq!(
            split(&[1; 7], BatchLimit::new(3, 100)),
            vec![0..3, 3..6, 6..7]
        );
        assert_eq!(split(&[1; 6], BatchLimit::new(3, 100)), vec![0..3, 3..6]);
        // A count of nothing still moves: one item a batch.
        assert_eq!(split(&[1; 2], BatchLimit::new(0, 100)), vec![0..1, 1..2]);
    }

    #[test]
    fn the_bytes_cut_before_the_count_does() {
        assert_eq!(
            split(&[3, 3, 3, 3, 3], BatchLimit::new(4, 7)),
            vec![0..2, 2..4, 4..5]
        );
    }

    #[test]
    fn huge_lengths_do_not_overflow() {
        assert_eq!(
            split(&[u64::MAX - 1, 1, 1], BatchLimit::new(4, u64::MAX - 1)),
            vec![0..1, 1..3]
        );
        // A bound of `u64::MAX` bytes is no bound at all.
        assert_eq!(
            split(&[u64::MAX, u64::MAX], BatchLimit::new(4, u64::MAX)),
            vec![0..2]
        );
    }

    #[test]
    fn admits_agrees_with_split() {
        let limit = BatchLimit::new(2, 10);
        assert!(limit.admits(0, 0, 11), "the first item always goes in");
        assert!(limit.admits(1, 4, 6));
        assert!(!limit.admits(1, 4, 7));
        assert!(!limit.admits(2, 0, 0));
    }

    mod live {
        use vault_node::testing::{self, TestCluster};
        use wire::ErrorCode;
        use zeroize::Zeroizing;

        use super::super::*;
        use crate::config::ClientConfig;
        use crate::net::client_endpoint;
        use crate::vault::{OpenOptions, Vault};

        async fn open(c: &TestCluster) -> Vault {
            let cfg =
                ClientConfig::parse(&c.dfc_text("alice", None), &c.dir().join("dfc.conf")).unwrap();
            let endpoint = client_endpoint(c.ca_pem().as_bytes()).unwrap();
            let options = OpenOptions::default();
            let pw = Zeroizing::new("Crimson33".to_string());
            Vault::open_with(&endpoint, &cfg, &pw, &options)
                .await
                .unwrap()
        }

        fn id(i: usize) -> BlobId {
            BlobId::new(format!("t-batch-{i:04}")).unwrap()
        }

        #[tokio::test]
        async fn batched_requests_cover_any_number_of_blobs_at_the_callers_positions() {
            testing::timed(async {
                let c = TestCluster::start(&testing::users_text()).await.unwrap();
                let vault = open(&c).await;
                let s = vault.session(0).unwrap();
                let n = MAX_BATCH + 5;
                let ids: Vec<BlobId> = (0..n).map(id).collect();
                let bytes: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 1 + i % 7]).collect();
                // Blobs 3 and n - 2 (in the last request) are already there:
                // their "store only if absent" fails.
                let old = b"old".as_slice();
                s.put_blobs(&[(ids[3].clone(), old), (ids[n - 2].clone(), old)])
                    .await
                    .unwrap();
                let items: Vec<(BlobId, &[u8], Option<Expect>)> = ids
                    .iter()
                    .zip(&bytes)
                    .map(|(id, b)| (id.clone(), b.as_slice(), Some(Expect::Absent)))
                    .collect();
                let total: u64 = bytes.iter().map(|b| b.len() as u64).sum();
                let batches = s.put_blobs_batched(&items, total / 3).await;
                let ranges: Vec<Range<usize>> = batches.iter().map(|b| b.range.clone()).collect();
                let expected: Vec<Range<usize>> = BatchLimit::new(MAX_BATCH, total / 3)
                    .split(&items, |(_, b, _)| b.len() as u64)
                    .collect();
                assert!(ranges.len() >= 3, "{ranges:?}");
                assert_eq!(ranges, expected);
                let mut failed = Vec::new();
                for b in batches {
                    let each = b.result.unwrap();
                    assert_eq!(each.len(), b.range.len());
                    for (i, e) in b.range.zip(each) {
                        if let Some(e) = e {
                            assert!(e.is_code(ErrorCode::Conflict), "{e}");
                            failed.push(i);
                        }
                    }
                }
                assert_eq!(failed, vec![3, n - 2]);

                // Reads come back one per id, in order, over several requests.
                let mut asked = ids.clone();
                asked.push(id(9999));
                let got = s
                    .get_blobs_batched(&asked, 100, |r| r.len() as u64 * 8)
                    .await
                    .unwrap();
                assert_eq!(got.len(), n + 1);
                for (i, g) in got.iter().enumerate() {
                    let want = match i {
                        i if i == 3 || i == n - 2 => Some(b"old".to_vec()),
                        i if i == n => None,
                        i => Some(bytes[i].clone()),
                    };
                    assert_eq!(*g, want, "blob {i}");
                }
                // An answer bound too small fails the whole read.
                assert!(s.get_blobs_batched(&ids, 100, |_| 1).await.is_err());

                // Deletes go out in as many requests as needed.
                assert!(s.delete_blobs_batched(&asked).await.is_empty());
                let stats = s.stat_blobs(&ids[..MAX_BATCH]).await.unwrap();
                assert!(stats.iter().all(Option::is_none));
                let stats = s.stat_blobs(&ids[MAX_BATCH..]).await.unwrap();
                assert!(stats.iter().all(Option::is_none));
            })
            .await
        }
    }
}
