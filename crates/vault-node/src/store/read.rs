//! Reads: one blob ([`BlobStore::open`]), several
//! ([`BlobStore::open_many`]) or a listing page with the contents of its
//! small blobs ([`BlobStore::list_data`]).
//!
//! Each read looks blobs up in a read transaction of the user's database
//! (it never waits for the writer). An inline blob's bytes are copied out
//! of the database; a file blob's file is opened, and its length taken
//! from the open file, before anything is announced: blob files are never
//! written in place (a replacement is a new file), so an open file keeps
//! exactly the bytes it had and what is announced is what streams. A file
//! removed between the lookup and the open (its blob replaced or deleted
//! meanwhile) is looked up again; one the index still names on the next
//! lookup is lost, and the read fails (as does an inline entry without its
//! bytes, or with bytes of another length): damage is never served as an
//! empty or absent blob.
//!
//! Files held open for replies are bounded node-wide: a read takes one
//! permit of the store's `reply_files` semaphore per file blob before
//! opening anything (waiting at most `reply_files_wait`, else
//! [`FilesBusy`]), and each [`OpenBlob`] keeps its permit until it is
//! dropped; inline blobs take none. Each also carries the deadline of the
//! whole reply (`reply_deadline` after the blobs were opened), which
//! `bulk::send_bulk` enforces.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;
use std::sync::Arc;

use redb::ReadableDatabase;
use thiserror::Error;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use wire::{BlobId, ListEntry};

use super::db::{
    damaged, db_err, entry_in, file_name, inline_data, Entry, Place, UserDb, BLOBS, DATA,
};
use super::index::unix_secs;
use super::{blocking, page, BlobStore};

/// How often a read looks a blob up again when its file vanished between
/// the lookup and the open.
const REOPEN_TRIES: usize = 8;

/// Every permit for files held open for replies is taken: the read is
/// refused for now (`Busy`; see [`super::is_out_of_files`]).
#[derive(Debug, Error)]
#[error("the node holds too many files open for replies")]
pub struct FilesBusy;

/// The bytes of an opened blob: its open file, or its bytes copied out of
/// the database. Either stays readable if the blob is replaced or deleted.
#[derive(Debug)]
pub enum BlobReader {
    /// A blob file.
    File(File),
    /// An inline blob.
    Bytes(io::Cursor<Vec<u8>>),
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlobReader::File(f) => f.read(buf),
            BlobReader::Bytes(c) => c.read(buf),
        }
    }
}

impl BlobReader {
    /// Whether the bytes come from a file (and hold a place under the
    /// bound on files held open for replies).
    pub fn is_file(&self) -> bool {
        matches!(self, BlobReader::File(_))
    }
}

/// A blob opened for reading.
#[derive(Debug)]
pub struct OpenBlob {
    /// Its bytes.
    pub file: BlobReader,
    /// Its length when opened: what is to be streamed (counts down as
    /// it is read by `bulk`).
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
    /// Narrows the blob to at most `len` bytes (`None`: all) from `offset`
    /// on, for a ranged read: what streams from then on. `offset` is at
    /// most [`OpenBlob::len`] (the caller checks). Returns the new length.
    pub fn narrow(&mut self, offset: u64, len: Option<u64>) -> io::Result<u64> {
        let rest = self
            .len
            .checked_sub(offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset past the end"))?;
        match &mut self.file {
            BlobReader::File(f) => {
                f.seek(io::SeekFrom::Start(offset))?;
            }
            BlobReader::Bytes(c) => c.set_position(offset),
        }
        self.len = len.map_or(rest, |l| l.min(rest));
        Ok(self.len)
    }

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
    /// The contents of a blob carried with its entry.
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

/// A blob with a lease of no permit and a deadline of now: the caller
/// sets both.
fn blob(file: BlobReader, len: u64, modified: u64) -> OpenBlob {
    OpenBlob {
        file,
        len,
        modified,
        lease: Lease {
            _permit: None,
            reply_by: Instant::now(),
        },
    }
}

/// Opens the blob file at `path`: `None` if absent or not a file.
fn open_file(path: &Path) -> io::Result<Option<OpenBlob>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some(blob(
        BlobReader::File(file),
        meta.len(),
        unix_secs(&meta),
    )))
}

/// Opens `id` of `db` as it is now: `None` if absent; an error if the
/// index is damaged (an inline entry without its bytes, or of another
/// length; a file entry whose file is missing while the index still
/// names it). Blocking.
///
/// A file blob takes one of `permits` (its place under the bound on files
/// held open for replies) before its file is opened; with none left, the
/// error is [`NoPermit`] and nothing is opened.
fn open_current(
    db: &UserDb,
    id: &str,
    permits: &mut Option<OwnedSemaphorePermit>,
) -> io::Result<Option<OpenBlob>> {
    // The file the previous lookup named, found missing.
    let mut missing = None;
    for _ in 0..REOPEN_TRIES {
        let txn = db.db.begin_read().map_err(db_err)?;
        let Some(entry) = entry_in(&txn, id)? else {
            return Ok(None);
        };
        match entry.place {
            Place::Inline => {
                let data = txn.open_table(DATA).map_err(db_err)?;
                let bytes = inline_data(&data, id, &entry)?;
                let len = bytes.len() as u64;
                return Ok(Some(blob(
                    BlobReader::Bytes(io::Cursor::new(bytes)),
                    len,
                    entry.modified,
                )));
            }
            Place::File(n) => {
                let permit = take_permit(permits)?;
                if let Some(mut b) = open_file(&db.dir.join(file_name(id, n)))? {
                    b.modified = entry.modified;
                    b.lease._permit = Some(permit);
                    return Ok(Some(b));
                }
                give_back(permits, permit);
                // A file is removed only after the commit that made it
                // obsolete, so a later lookup no longer names it: named
                // twice, it is lost, not replaced.
                if missing == Some(n) {
                    return Err(damaged(id, "its file is missing"));
                }
                missing = Some(n);
                // Replaced or deleted since the lookup: look again.
            }
        }
    }
    Err(damaged(id, "its file keeps vanishing"))
}

/// A read found more file blobs than it took reply permits for (blobs
/// replaced meanwhile): it closes what it opened and tries again.
#[derive(Debug, Error)]
#[error("more files to open than reply permits taken")]
struct NoPermit;

/// One of `permits`, or [`NoPermit`].
fn take_permit(permits: &mut Option<OwnedSemaphorePermit>) -> io::Result<OwnedSemaphorePermit> {
    permits
        .as_mut()
        .and_then(|p| p.split(1))
        .ok_or_else(|| io::Error::other(NoPermit))
}

/// Puts an unused permit back with `permits`.
fn give_back(permits: &mut Option<OwnedSemaphorePermit>, permit: OwnedSemaphorePermit) {
    match permits {
        Some(p) => p.merge(permit),
        None => *permits = Some(permit),
    }
}

/// Opens each of `ids` (see [`open_current`]) with `permits`; `Ok(Err(n))`
/// if they were too few: `n` of `ids` are file blobs now, and nothing
/// stays open. Blocking.
fn open_all(
    db: &UserDb,
    ids: &[BlobId],
    mut permits: Option<OwnedSemaphorePermit>,
) -> io::Result<Result<Vec<Option<OpenBlob>>, usize>> {
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        match open_current(db, id.as_str(), &mut permits) {
            Ok(b) => found.push(b),
            Err(e) if e.get_ref().is_some_and(|i| i.is::<NoPermit>()) => {
                drop(found);
                return Ok(Err(count_files(db, ids)?));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Ok(found))
}

/// How many of `ids` are file blobs now (each needs a reply permit).
fn count_files(db: &UserDb, ids: &[BlobId]) -> io::Result<usize> {
    let txn = db.db.begin_read().map_err(db_err)?;
    let blobs = txn.open_table(BLOBS).map_err(db_err)?;
    let mut n = 0;
    for id in ids {
        if let Some(v) = blobs.get(id.as_str()).map_err(db_err)? {
            if Entry::decode(v.value()).place != Place::Inline {
                n += 1;
            }
        }
    }
    Ok(n)
}

impl BlobStore {
    /// Opens blob `id` for reading; `None` if absent. A file blob waits
    /// for a place under the node's bound on files held open for replies;
    /// an error ([`is_out_of_files`](super::is_out_of_files)) if none is
    /// free in time.
    pub async fn open(&self, user: &str, id: &BlobId) -> io::Result<Option<OpenBlob>> {
        let found = self.open_many(user, std::slice::from_ref(id)).await?;
        Ok(found.into_iter().next().flatten())
    }

    /// Opens each of `ids` for reading, in order (`None`: absent), on one
    /// blocking thread, once one place per file blob among them under the
    /// node's bound on files held open for replies is free; an error
    /// ([`is_out_of_files`](super::is_out_of_files)) if they are not free
    /// within the wait, or if they are more than the bound.
    pub async fn open_many(&self, user: &str, ids: &[BlobId]) -> io::Result<Vec<Option<OpenBlob>>> {
        let db = self.db(user).await?;
        let ids: Arc<[BlobId]> = ids.into();
        let (db2, ids2) = (db.clone(), ids.clone());
        let mut files = blocking(move || count_files(&db2, &ids2)).await?;
        // Blobs replaced between the count and the opening may need more
        // permits: then everything is closed and the count taken again.
        // Every file is opened with its permit, so the bound is strict.
        for _ in 0..REOPEN_TRIES {
            let permits = self.reply_permits(files).await?;
            let (db2, ids2) = (db.clone(), ids.clone());
            match blocking(move || open_all(&db2, &ids2, permits)).await? {
                Ok(mut found) => {
                    let reply_by = Instant::now() + self.limits.reply_deadline;
                    for blob in found.iter_mut().flatten() {
                        blob.lease.reply_by = reply_by;
                    }
                    return Ok(found);
                }
                Err(now) => files = now,
            }
        }
        Err(io::Error::other(FilesBusy))
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
    /// after `after`, with the contents of those at most
    /// `limits.max_inline` bytes long.
    ///
    /// The page ends after `limits.max_entries` entries, or before the
    /// contents would pass `limits.max_bytes` (the first entry always
    /// comes). Entries come from one range scan of the index; inline
    /// contents from the database, file contents from their opened files
    /// (a blob deleted in between is left out, one replaced in between is
    /// listed as replaced); larger ones are listed as the index has them,
    /// as `List` does.
    pub async fn list_data(
        &self,
        user: &str,
        after: Option<BlobId>,
        prefix: &str,
        limits: DataLimits,
    ) -> io::Result<DataPage> {
        let db = self.db(user).await?;
        let prefix = prefix.to_string();
        let db2 = db.clone();
        // Candidates: the entries, cut where the byte budget (by the
        // index's lengths) would pass.
        let (candidates, more) = blocking(move || {
            let (mut candidates, mut more) =
                page(&db2, after.as_ref(), &prefix, limits.max_entries)?;
            // Entries without contents cost nothing; the first one with
            // contents always comes.
            let mut budget = 0u64;
            let mut cut = None;
            for (i, (_, e)) in candidates.iter().enumerate() {
                if e.len > limits.max_inline {
                    continue;
                }
                let next = budget.saturating_add(e.len);
                if next > limits.max_bytes && i > 0 {
                    cut = Some(i);
                    break;
                }
                budget = next;
            }
            if let Some(i) = cut {
                candidates.truncate(i);
                more = true;
            }
            Ok((candidates, more))
        })
        .await?;
        let small: Vec<BlobId> = candidates
            .iter()
            .filter(|(_, e)| e.len <= limits.max_inline)
            .map(|(id, _)| id.clone())
            .collect();
        let mut opened = self.open_many(user, &small).await?.into_iter();
        let mut page = DataPage {
            entries: Vec::new(),
            more,
        };
        let mut inline_bytes = 0u64;
        for (id, e) in candidates {
            if e.len > limits.max_inline {
                page.entries.push(DataEntry {
                    entry: ListEntry {
                        id,
                        len: e.len,
                        modified: e.modified,
                    },
                    data: None,
                });
                continue;
            }
            // Deleted since the scan: not listed.
            let Some(blob) = opened.next().flatten() else {
                continue;
            };
            let entry = ListEntry {
                id,
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
        Ok(page)
    }
}

#[cfg(test)]
mod permit_tests {
    use std::time::Duration;

    use super::*;
    use crate::store::StoreLimits;

    fn id(s: &str) -> BlobId {
        BlobId::new(s).unwrap()
    }

    async fn put(store: &BlobStore, name: &str, data: &[u8]) {
        let mut p = store
            .begin_put("alice", &id(name), data.len() as u64, None, None)
            .await
            .unwrap();
        p.write(data).await.unwrap();
        p.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_blob_that_became_a_file_since_the_count_waits_for_its_permit() {
        tokio::time::timeout(Duration::from_secs(60), async {
            let root = tempfile::tempdir().unwrap();
            let limits = StoreLimits {
                max_reply_files: 2,
                reply_files_wait: Duration::from_secs(30),
                ..Default::default()
            };
            let big = vec![1u8; 100 << 10];
            let store = BlobStore::with_limits(root.path(), limits);
            put(&store, "x", &big).await;
            put(&store, "y", b"small").await;
            // Every reply permit taken: the read counts one file (x),
            // then waits.
            let mut held = store
                .reply_files
                .clone()
                .acquire_many_owned(2)
                .await
                .unwrap();
            let reader = {
                let store = store.clone();
                tokio::spawn(async move { store.open_many("alice", &[id("x"), id("y")]).await })
            };
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            // Meanwhile y becomes a file blob.
            put(&store, "y", &big).await;
            drop(held.split(1));
            let mut taken = false;
            for _ in 0..1000 {
                if store.reply_files.available_permits() == 0 {
                    taken = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(taken, "the reader takes the permit given back");
            drop(held);
            let found = reader.await.unwrap().unwrap();
            let files: Vec<_> = found
                .iter()
                .flatten()
                .filter(|b| b.file.is_file())
                .collect();
            assert_eq!(files.len(), 2);
            for b in &files {
                assert!(
                    b.lease._permit.is_some(),
                    "a file opened for a reply holds its place under the bound"
                );
            }
            assert_eq!(store.reply_files.available_permits(), 0);
            drop(found);
            assert_eq!(store.reply_files.available_permits(), 2);
        })
        .await
        .unwrap();
    }
}
