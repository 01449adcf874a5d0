//! Batch requests: many small blobs per round trip, for trees of small
//! files. Every answer is checked against the request before it is used:
//! counts, order, prefixes and byte totals, so a node can neither make the
//! client read without bound nor slip in entries it did not ask for.

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
