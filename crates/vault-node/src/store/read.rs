//! Reads: one blob ([`BlobStore::open`]), several
//! ([`BlobStore::open_many`]) or a listing page with the contents of its
//! small blobs ([`BlobStore::list_data`]).
//!
//! Every file is opened, and its length taken from the open file, before
//! anything is announced: blobs are only ever renamed over or removed,
//! never written in place, so an open file keeps exactly the bytes it had
//! and what is announced is what streams, whatever happens to the blob
//! meanwhile.
//!
//! Files held open for replies are bounded node-wide: a read takes one
//! permit of the store's `reply_files` semaphore per file before opening
//! anything (waiting at most `reply_files_wait`, else [`FilesBusy`]), and
//! each [`OpenBlob`] keeps its permit until it is dropped. Each also
//! carries the deadline of the whole reply (`reply_deadline` after the
//! files were opened), which `bulk::send_bulk` enforces.

use std::io;
use std::path::Path;

use thiserror::Error;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use wire::{BlobId, ListEntry};

use super::index::unix_secs;
use super::{blocking, lock, BlobStore};

/// Every permit for files held open for replies is taken: the read is
/// refused for now (`Busy`; see [`super::is_out_of_files`]).
#[derive(Debug, Error)]
#[error("the node holds too many files open for replies")]
pub struct FilesBusy;

/// A blob opened for reading.
#[derive(Debug)]
pub struct OpenBlob {
    /// The open file: its bytes stay readable if the blob is replaced or
    /// deleted.
    pub file: std::fs::File,
    /// Its length when opened: what is to be streamed.
    pub len: u64,
    /// Its modification time, seconds since the Unix epoch (0 if unknown).
    pub modified: u64,
    /// Its place under the node's bound on files held open for replies,
    /// and the reply's deadline.
    lease: Lease,
}

/// What an [`OpenBlob`] holds besides its file.
#[derive(Debug)]
struct Lease {
    /// Given back when the blob is dropped.
    _permit: Option<OwnedSemaphorePermit>,
    /// When the whole reply must have been sent.
    reply_by: Instant,
}

impl OpenBlob {
    /// When the whole reply carrying this blob must have been sent: the
    /// stream is reset after it.
    pub fn reply_by(&self) -> Instant {
        self.lease.reply_by
    }
}

/// Bounds of a [`BlobStore::list_data`] page.
#[derive(Debug, Clone, Copy)]
pub struct DataLimits {
    /// Most entries.
    pub max_entries: usize,
    /// Largest blob whose contents come with its entry.
    pub max_inline: u64,
    /// Most bytes of contents in all (the first entry always comes).
    pub max_bytes: u64,
}

/// One entry of a data listing.
#[derive(Debug)]
pub struct DataEntry {
    /// Id, length and time; for an inline blob, those of the open file.
    pub entry: ListEntry,
    /// The open file of a blob carried inline.
    pub data: Option<OpenBlob>,
}

/// A page of a data listing.
#[derive(Debug)]
pub struct DataPage {
    /// Entries in id order.
    pub entries: Vec<DataEntry>,
    /// Whether more entries follow the last one.
    pub more: bool,
}

/// Opens the blob file at `path`: `None` if absent or not a file. Its
/// lease has no permit and a deadline of now: the caller sets both.
/// Blocking.
fn open_file(path: &Path) -> io::Result<Option<OpenBlob>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some(OpenBlob {
        file,
        len: meta.len(),
        modified: unix_secs(&meta),
        lease: Lease {
            _permit: None,
            reply_by: Instant::now(),
        },
    }))
}

impl BlobStore {
    /// Opens blob `id` for reading; `None` if absent. Waits for a place
    /// under the node's bound on files held open for replies; an error
    /// ([`is_out_of_files`](super::is_out_of_files)) if none is free in
    /// time.
    pub async fn open(&self, user: &str, id: &BlobId) -> io::Result<Option<OpenBlob>> {
        let found = self.open_many(user, std::slice::from_ref(id)).await?;
        Ok(found.into_iter().next().flatten())
    }

    /// Opens each of `ids` for reading, in order (`None`: absent), on one
    /// blocking thread, once one place per id under the node's bound on
    /// files held open for replies is free; an error
    /// ([`is_out_of_files`](super::is_out_of_files)) if they are not free
    /// within the wait, or if `ids` are more than the bound.
    pub async fn open_many(&self, user: &str, ids: &[BlobId]) -> io::Result<Vec<Option<OpenBlob>>> {
        let dir = self.user_dir(user)?;
        let mut permit = self.reply_permits(ids.len()).await?;
        let ids = ids.to_vec();
        let mut found = blocking(move || {
            ids.iter()
                .map(|id| open_file(&dir.join(id.as_str())))
                .collect::<io::Result<Vec<_>>>()
        })
        .await?;
        let reply_by = Instant::now() + self.limits.reply_deadline;
        for blob in found.iter_mut().flatten() {
            blob.lease = Lease {
                _permit: permit.as_mut().and_then(|p| p.split(1)),
                reply_by,
            };
        }
        Ok(found)
    }

    /// `n` permits for files held open for replies (`None` for 0),
    /// waiting at most `reply_files_wait`.
    async fn reply_permits(&self, n: usize) -> io::Result<Option<OwnedSemaphorePermit>> {
        if n == 0 {
            return Ok(None);
        }
        let busy = || io::Error::other(FilesBusy);
        if n > self.limits.max_reply_files {
            return Err(busy());
        }
        let n = u32::try_from(n).map_err(|_| busy())?;
        let acquire = self.reply_files.clone().acquire_many_owned(n);
        match tokio::time::timeout(self.limits.reply_files_wait, acquire).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(
                    files = n,
                    limit = self.limits.max_reply_files,
                    "no room to open files for a reply"
                );
                Err(busy())
            }
        }
    }

    /// A page of `user`'s blobs whose id starts with `prefix`, in id order
    /// after `after`, with the open files of those at most
    /// `limits.max_inline` bytes long.
    ///
    /// The page ends after `limits.max_entries` entries, or before the
    /// contents would pass `limits.max_bytes` (the first entry always
    /// comes). Candidates come from the index; small ones are then opened
    /// and listed as their open file is (a blob deleted in between is left
    /// out, one replaced in between is listed as replaced); larger ones are
    /// listed as the index has them, as `List` does.
    pub async fn list_data(
        &self,
        user: &str,
        after: Option<BlobId>,
        prefix: &str,
        limits: DataLimits,
    ) -> io::Result<DataPage> {
        let index = self.index(user).await?;
        let mut page = DataPage {
            entries: Vec::new(),
            more: false,
        };
        let mut inline_bytes = 0u64;
        let mut cursor = after;
        // Each round takes the candidates for the page's free places; a
        // round only repeats when candidates vanished, and then moves on.
        loop {
            let want = limits.max_entries.saturating_sub(page.entries.len());
            let (mut candidates, mut more) = lock(&index).page(cursor.as_ref(), prefix, want);
            // Open no more files than the byte budget can use, by the
            // index's lengths: up to the first that would pass it.
            let mut budget = inline_bytes;
            let usable = candidates
                .iter()
                .position(|c| {
                    if c.len > limits.max_inline {
                        return false;
                    }
                    budget = budget.saturating_add(c.len);
                    budget > limits.max_bytes
                })
                .map_or(candidates.len(), |i| i + 1);
            if usable < candidates.len() {
                candidates.truncate(usable);
                more = true;
            }
            let Some(last) = candidates.last() else {
                page.more = false;
                return Ok(page);
            };
            cursor = Some(last.id.clone());
            let small: Vec<BlobId> = candidates
                .iter()
                .filter(|c| c.len <= limits.max_inline)
                .map(|c| c.id.clone())
                .collect();
            let mut opened = self.open_many(user, &small).await?.into_iter();
            for candidate in candidates {
                if candidate.len > limits.max_inline {
                    page.entries.push(DataEntry {
                        entry: candidate,
                        data: None,
                    });
                    continue;
                }
                // Deleted since the index was read: not listed.
                let Some(blob) = opened.next().flatten() else {
                    continue;
                };
                let entry = ListEntry {
                    id: candidate.id,
                    len: blob.len,
                    modified: blob.modified,
                };
                if blob.len > limits.max_inline {
                    page.entries.push(DataEntry { entry, data: None });
                    continue;
                }
                let total = inline_bytes.saturating_add(blob.len);
                if total > limits.max_bytes && !page.entries.is_empty() {
                    page.more = true;
                    return Ok(page);
                }
                inline_bytes = total;
                page.entries.push(DataEntry {
                    entry,
                    data: Some(blob),
                });
            }
            if !more || page.entries.len() >= limits.max_entries {
                page.more = more;
                return Ok(page);
            }
        }
    }
}
