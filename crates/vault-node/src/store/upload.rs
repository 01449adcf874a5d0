//! Uploads: one blob ([`PendingBlob`], for `PutBlob`) or a batch
//! ([`PutBatch`], for `PutBlobs`).
//!
//! Bytes are gathered in a buffer and written to a temp file under
//! `.tmp/` on blocking threads. A blob becomes visible only by a rename
//! after its bytes are synced, recorded in the index under its lock; the
//! folder is synced before the upload is reported stored (once per blob,
//! or once per batch). A temp file that is not renamed is removed, and
//! quota that no blob took is given back, whatever ends the upload.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use wire::{BlobId, PutItem};

use super::index::{self, BlobMeta, UserIndex};
use super::{blocking, is_no_space, lock, BlobStore, PutError, TMP_DIR};
use crate::fsutil::{random_hex, sync_dir, Synced, TempGuard};

/// Upload bytes gathered before one blocking write.
const WRITE_BUF: usize = 512 * 1024;

/// Blobs of a batch written and synced on blocking threads at once, while
/// the next ones arrive: parallel syncs cost little more than one.
const MAX_SYNCING: usize = 8;

/// Most buffered bytes those blobs hold between them, so a batch holds
/// about as much memory as one upload.
const MAX_SYNCING_BYTES: usize = WRITE_BUF;

/// Bytes of quota held by an upload; given back on drop unless settled.
#[derive(Debug)]
struct Reservation {
    index: Arc<Mutex<UserIndex>>,
    len: u64,
}

impl Reservation {
    /// Moves `len` of these bytes to a reservation of their own.
    fn split(&mut self, len: u64) -> Reservation {
        let len = len.min(self.len);
        self.len -= len;
        Reservation {
            index: self.index.clone(),
            len,
        }
    }

    /// The upload became blob `id`, `meta`, in `ix`: the (locked) index
    /// this reservation was taken from.
    fn settle(mut self, ix: &mut UserIndex, id: BlobId, meta: BlobMeta) {
        ix.committed(id, meta, self.len);
        self.len = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Never dropped unsettled while its index is locked (the lock is
        // not reentrant).
        if self.len > 0 {
            lock(&self.index).release(self.len);
        }
    }
}

/// A new temp file's path under `tmp_dir`.
fn temp_path(tmp_dir: &Path) -> io::Result<PathBuf> {
    Ok(tmp_dir.join(format!("{}.tmp", random_hex(16)?)))
}

fn create_new(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Bytes on their way to a temp file, removed on drop.
#[derive(Debug)]
struct TempWriter {
    /// `None` before a lazy writer's file exists, and while a write is in
    /// flight on a blocking thread.
    file: Option<File>,
    created: bool,
    /// Bytes not yet written: QUIC hands over packet-sized pieces, and one
    /// blocking write per piece would cost more than the copy.
    buf: Vec<u8>,
    guard: TempGuard,
    written: u64,
}

impl TempWriter {
    /// A writer for about `len` bytes whose file is created with the first
    /// write that reaches the disk.
    fn lazy(path: PathBuf, len: u64) -> TempWriter {
        let cap = usize::try_from(len).unwrap_or(WRITE_BUF).min(WRITE_BUF);
        TempWriter {
            file: None,
            created: false,
            buf: Vec::with_capacity(cap),
            guard: TempGuard::new(path),
            written: 0,
        }
    }

    /// A writer whose file exists from the start (an upload in progress
    /// shows in `.tmp/`).
    async fn create(path: PathBuf, len: u64) -> io::Result<TempWriter> {
        let mut w = TempWriter::lazy(path, len);
        let path = w.guard.path().to_path_buf();
        w.created = true;
        w.file = Some(blocking(move || create_new(&path)).await?);
        Ok(w)
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if self.buf.len() >= WRITE_BUF {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the buffered bytes on a blocking thread.
    async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self.open_file()?;
        let path = self.guard.path().to_path_buf();
        let buf = std::mem::take(&mut self.buf);
        let (file, mut buf) = blocking(move || {
            let mut file = file.map_or_else(|| create_new(&path), Ok)?;
            file.write_all(&buf)?;
            Ok((file, buf))
        })
        .await?;
        buf.clear();
        self.buf = buf;
        self.file = Some(file);
        Ok(())
    }

    /// The open file (`None`: to be created), or an error if an earlier
    /// write failed.
    fn open_file(&mut self) -> io::Result<Option<File>> {
        match self.file.take() {
            Some(f) => Ok(Some(f)),
            None if !self.created => {
                self.created = true;
                Ok(None)
            }
            None => Err(io::Error::other("an earlier write failed")),
        }
    }

    /// Writes what is buffered and syncs the file: blocking, for a
    /// blocking thread.
    fn finish(mut self) -> io::Result<Synced> {
        let mut file = match self.open_file()? {
            Some(f) => f,
            None => create_new(self.guard.path())?,
        };
        file.write_all(&self.buf)?;
        Synced::new(file, self.guard)
    }
}

/// Renames `synced` over `dir/id` and records it in the index, under the
/// index lock (so concurrent uploads of one id leave the index agreeing
/// with the folder). The folder still needs a sync.
fn publish(synced: Synced, dir: &Path, id: BlobId, reservation: Reservation) -> io::Result<()> {
    let meta = BlobMeta {
        len: synced.metadata().len(),
        modified: index::unix_secs(synced.metadata()),
    };
    let index = reservation.index.clone();
    let mut ix = lock(&index);
    match synced.rename(&dir.join(id.as_str())) {
        Ok(()) => {
            reservation.settle(&mut ix, id, meta);
            Ok(())
        }
        Err(e) => {
            drop(ix);
            drop(reservation);
            Err(e)
        }
    }
}

impl BlobStore {
    /// Starts an upload of `len` bytes as blob `id` for `user`, first
    /// reserving `len` bytes against `quota` (refused with
    /// [`PutError::Quota`] before anything is written).
    pub async fn begin_put(
        &self,
        user: &str,
        id: &BlobId,
        len: u64,
        quota: Option<u64>,
    ) -> Result<PendingBlob, PutError> {
        let dir = self.user_dir(user)?;
        let index = self.index(user).await?;
        lock(&index).reserve(id, len, quota)?;
        let reservation = Reservation { index, len };
        let tmp_dir = self.tmp_dir(&dir).await?;
        let writer = TempWriter::create(temp_path(&tmp_dir)?, len).await?;
        Ok(PendingBlob {
            writer,
            dir,
            id: id.clone(),
            reservation,
        })
    }

    /// The user folder's `.tmp`, made if missing, with the root synced so
    /// a user folder made here (the user's first upload) is durable.
    async fn tmp_dir(&self, dir: &Path) -> io::Result<PathBuf> {
        let tmp_dir = dir.join(TMP_DIR);
        if tokio::fs::metadata(&tmp_dir).await.is_err() {
            let (dir, tmp) = (dir.to_path_buf(), tmp_dir.clone());
            // Synced whenever `.tmp` was missing (rare: once per user
            // folder), so no upload is acknowledged before its folder is
            // durable, however two first uploads interleave.
            blocking(move || {
                std::fs::create_dir_all(&tmp)?;
                if let Some(root) = dir.parent() {
                    sync_dir(root)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(tmp_dir)
    }

    /// Starts a batch upload of `items` for `user`, first reserving their
    /// total length against `quota`, all or nothing (refused with
    /// [`PutError::Quota`] before anything is written).
    pub async fn begin_batch(
        &self,
        user: &str,
        items: &[PutItem],
        quota: Option<u64>,
    ) -> Result<PutBatch, PutError> {
        let dir = self.user_dir(user)?;
        let index = self.index(user).await?;
        let total = items.iter().fold(0u64, |t, i| t.saturating_add(i.len));
        lock(&index).reserve_many(items.iter().map(|i| (&i.id, i.len)), quota)?;
        let reservation = Reservation { index, len: total };
        let tmp_dir = self.tmp_dir(&dir).await?;
        Ok(PutBatch {
            dir,
            tmp_dir,
            reservation,
            next: 0,
            current: None,
            syncing: VecDeque::new(),
            ready: Vec::new(),
            failed: Vec::new(),
        })
    }
}

/// An upload in progress: bytes go to a temp file that is removed unless
/// [`PendingBlob::commit`] renames it into place.
#[derive(Debug)]
pub struct PendingBlob {
    writer: TempWriter,
    /// The user's folder.
    dir: PathBuf,
    id: BlobId,
    reservation: Reservation,
}

impl PendingBlob {
    /// Appends bytes to the upload.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), PutError> {
        Ok(self.writer.write(bytes).await?)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.written
    }

    /// Makes the upload durable and visible: `sync_all`, rename over the
    /// blob's name (recorded in the index under its lock), fsync the
    /// folder.
    pub async fn commit(self) -> Result<(), PutError> {
        let PendingBlob {
            writer,
            dir,
            id,
            reservation,
        } = self;
        blocking(move || {
            let synced = writer.finish()?;
            publish(synced, &dir, id, reservation)?;
            sync_dir(&dir)
        })
        .await
        .map_err(PutError::from)
    }
}

/// A batch upload (`PutBlobs`): its blobs arrive one after the other
/// ([`PutBatch::start`], [`PutBatch::write`], [`PutBatch::end`]); each is
/// written to a temp file and synced (several at once, on blocking
/// threads) as soon as its bytes are in, and none is renamed into place
/// before [`PutBatch::commit`], which renames them all and syncs the
/// folder once.
///
/// So an upload that ends early, long or never (the batch dropped)
/// leaves nothing behind: no blob of the batch, no temp file, no quota
/// held. A blob that fails on its own (an I/O error other than a full
/// disk) is dropped and reported by `commit`; a full disk fails the batch.
#[derive(Debug)]
pub struct PutBatch {
    /// The user's folder.
    dir: PathBuf,
    tmp_dir: PathBuf,
    /// Quota reserved for the batch and not yet handed to a blob.
    reservation: Reservation,
    /// Position in the batch of the next blob to start.
    next: u32,
    /// The blob being received.
    current: Option<Current>,
    /// Blobs being written and synced on blocking threads, oldest first.
    syncing: VecDeque<Syncing>,
    /// Blobs synced, waiting for the rename, in batch order.
    ready: Vec<Ready>,
    /// Blobs that failed on their own: position and error.
    failed: Vec<(u32, io::Error)>,
}

#[derive(Debug)]
struct Current {
    pos: u32,
    id: BlobId,
    /// `None` once the blob failed: its further bytes are dropped.
    writing: Option<(TempWriter, Reservation)>,
}

#[derive(Debug)]
struct Syncing {
    pos: u32,
    id: BlobId,
    /// Bytes it still had buffered.
    buffered: usize,
    reservation: Reservation,
    task: JoinHandle<io::Result<Synced>>,
}

#[derive(Debug)]
struct Ready {
    pos: u32,
    id: BlobId,
    reservation: Reservation,
    synced: Synced,
}

impl PutBatch {
    /// Starts the batch's next blob: `len` bytes as `id`. A blob still
    /// being received is ended first.
    pub async fn start(&mut self, id: &BlobId, len: u64) -> Result<(), PutError> {
        self.end().await?;
        let pos = self.next;
        self.next += 1;
        let reservation = self.reservation.split(len);
        let writing = match temp_path(&self.tmp_dir) {
            Ok(path) => Some((TempWriter::lazy(path, len), reservation)),
            Err(e) => {
                self.failed.push((pos, e));
                None
            }
        };
        self.current = Some(Current {
            pos,
            id: id.clone(),
            writing,
        });
        Ok(())
    }

    /// Appends bytes to the current blob. `Err` only for a full disk; any
    /// other failure drops this blob alone (and its further bytes).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), PutError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        let Some((writer, _)) = current.writing.as_mut() else {
            return Ok(());
        };
        if let Err(e) = writer.write(bytes).await {
            let pos = current.pos;
            current.writing = None;
            self.fail(pos, e)?;
        }
        Ok(())
    }

    /// The current blob's bytes are all in: its file is written and synced
    /// on a blocking thread while the next blob arrives.
    pub async fn end(&mut self) -> Result<(), PutError> {
        let Some(Current { pos, id, writing }) = self.current.take() else {
            return Ok(());
        };
        let Some((writer, reservation)) = writing else {
            return Ok(());
        };
        let buffered = writer.buf.len();
        while !self.syncing.is_empty()
            && (self.syncing.len() >= MAX_SYNCING
                || self.syncing_bytes() + buffered > MAX_SYNCING_BYTES)
        {
            self.wait_oldest().await?;
        }
        self.syncing.push_back(Syncing {
            pos,
            id,
            buffered,
            reservation,
            task: tokio::task::spawn_blocking(move || writer.finish()),
        });
        Ok(())
    }

    /// Stores every blob received in full: waits for their syncs, renames
    /// them into place in batch order (each recorded in the index), then
    /// syncs the folder once, so all are durable when this returns `Ok`.
    /// Returns the blobs that failed on their own, by position.
    ///
    /// On `Err` (a full disk, or the folder sync failing) the blobs renamed
    /// before the failure stay; the others are removed.
    pub async fn commit(mut self) -> Result<Vec<(u32, io::Error)>, PutError> {
        self.end().await?;
        while !self.syncing.is_empty() {
            self.wait_oldest().await?;
        }
        let dir = self.dir.clone();
        let ready = std::mem::take(&mut self.ready);
        let renamed = blocking(move || {
            let mut failed = Vec::new();
            let mut renamed_any = false;
            let mut full = None;
            for r in ready {
                match publish(r.synced, &dir, r.id, r.reservation) {
                    Ok(()) => renamed_any = true,
                    Err(e) if is_no_space(&e) => {
                        // The rest are dropped: temp files removed.
                        full = Some(e);
                        break;
                    }
                    Err(e) => failed.push((r.pos, e)),
                }
            }
            if renamed_any {
                sync_dir(&dir)?;
            }
            Ok((failed, full))
        })
        .await?;
        let (failed, full) = renamed;
        if let Some(e) = full {
            return Err(PutError::NoSpace(e));
        }
        self.failed.extend(failed);
        self.failed.sort_by_key(|(pos, _)| *pos);
        Ok(std::mem::take(&mut self.failed))
    }

    fn syncing_bytes(&self) -> usize {
        self.syncing.iter().map(|s| s.buffered).sum()
    }

    /// Waits for the oldest blob being synced: ready, or failed.
    async fn wait_oldest(&mut self) -> Result<(), PutError> {
        let Some(s) = self.syncing.pop_front() else {
            return Ok(());
        };
        let synced = match s.task.await {
            Ok(r) => r,
            Err(e) => Err(io::Error::other(format!("blocking task failed: {e}"))),
        };
        match synced {
            Ok(synced) => {
                self.ready.push(Ready {
                    pos: s.pos,
                    id: s.id,
                    reservation: s.reservation,
                    synced,
                });
                Ok(())
            }
            Err(e) => {
                drop(s.reservation);
                self.fail(s.pos, e)
            }
        }
    }

    /// Blob `pos` failed with `e`: the batch fails if the disk is full.
    fn fail(&mut self, pos: u32, e: io::Error) -> Result<(), PutError> {
        if is_no_space(&e) {
            return Err(PutError::NoSpace(e));
        }
        self.failed.push((pos, e));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
